"""Schema objects SQLAlchemy models cannot express: the history trigger and RLS policies.

Used by the migrations; kept here so that the SQL is written once, per backend.
"""

from __future__ import annotations

from collections.abc import Iterable

from persistence.models import TENANT_TABLES

ORGANIZATION_SETTING = "flowworker.organization_id"

_HISTORY_COLUMNS = (
    "task_execution_id, organization_id, from_status, to_status, version, modified_by, recorded_at"
)

POSTGRES_HISTORY_TRIGGER = [
    f"""
    CREATE FUNCTION flowworker_record_status_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
            INSERT INTO task_execution_events ({_HISTORY_COLUMNS})
            VALUES (NEW.id, NEW.organization_id,
                    CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
                    NEW.status, NEW.version, NEW.modified_by, NEW.updated_at);
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER task_executions_status_history
    AFTER INSERT OR UPDATE ON task_executions
    FOR EACH ROW EXECUTE FUNCTION flowworker_record_status_change()
    """,
    """
    CREATE FUNCTION flowworker_refuse_history_update() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'task_execution_events is append-only';
    END $$
    """,
    """
    CREATE TRIGGER task_execution_events_append_only
    BEFORE UPDATE ON task_execution_events
    FOR EACH ROW EXECUTE FUNCTION flowworker_refuse_history_update()
    """,
]

POSTGRES_HISTORY_TRIGGER_DROP = [
    "DROP TRIGGER IF EXISTS task_execution_events_append_only ON task_execution_events",
    "DROP FUNCTION IF EXISTS flowworker_refuse_history_update()",
    "DROP TRIGGER IF EXISTS task_executions_status_history ON task_executions",
    "DROP FUNCTION IF EXISTS flowworker_record_status_change()",
]

SQLITE_HISTORY_TRIGGER = [
    f"""
    CREATE TRIGGER task_executions_status_history_insert AFTER INSERT ON task_executions
    BEGIN
        INSERT INTO task_execution_events ({_HISTORY_COLUMNS})
        VALUES (NEW.id, NEW.organization_id, NULL, NEW.status, NEW.version, NEW.modified_by,
                NEW.updated_at);
    END
    """,
    f"""
    CREATE TRIGGER task_executions_status_history_update AFTER UPDATE ON task_executions
    WHEN NEW.status IS NOT OLD.status
    BEGIN
        INSERT INTO task_execution_events ({_HISTORY_COLUMNS})
        VALUES (NEW.id, NEW.organization_id, OLD.status, NEW.status, NEW.version,
                NEW.modified_by, NEW.updated_at);
    END
    """,
    """
    CREATE TRIGGER task_execution_events_append_only BEFORE UPDATE ON task_execution_events
    BEGIN
        SELECT RAISE(ABORT, 'task_execution_events is append-only');
    END
    """,
]

SQLITE_HISTORY_TRIGGER_DROP = [
    "DROP TRIGGER IF EXISTS task_execution_events_append_only",
    "DROP TRIGGER IF EXISTS task_executions_status_history_update",
    "DROP TRIGGER IF EXISTS task_executions_status_history_insert",
]

# the status a row leaves (none for a new one) and the steps its new status passes
_STEPS_PASSED = """\
        IF TG_OP = 'UPDATE' THEN
            IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
                RETURN NULL;
            END IF;
            previous := OLD.status;
        END IF;
        passed_queued := previous IS NULL AND NEW.status <> 'queued'
            AND NEW.queued_at IS NOT NULL;
        passed_running := (previous IS NULL OR previous = 'queued')
            AND NEW.finished_at IS NOT NULL AND NEW.started_at IS NOT NULL;"""

# Migration 0005: a report may fold in the steps it passed on the way (`TaskReport.steps`:
# a worker writes queued + running + completed as one row write). The history still gets
# one event per status, oldest first, numbered by version: `queued` when a new record
# starts past it and says when it was queued; `running` when a record that was new or
# queued finishes and says when it started. The upsert advances `version` by the same count.
POSTGRES_STEP_HISTORY_FUNCTION = f"""
    CREATE OR REPLACE FUNCTION flowworker_record_status_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        previous text;
        passed_queued boolean;
        passed_running boolean;
        step integer;
    BEGIN
{_STEPS_PASSED}
        step := NEW.version - passed_queued::integer - passed_running::integer;
        IF passed_queued THEN
            INSERT INTO task_execution_events ({_HISTORY_COLUMNS})
            VALUES (NEW.id, NEW.organization_id, NULL, 'queued', step, NEW.modified_by,
                    NEW.queued_at);
            previous := 'queued';
            step := step + 1;
        END IF;
        IF passed_running THEN
            INSERT INTO task_execution_events ({_HISTORY_COLUMNS})
            VALUES (NEW.id, NEW.organization_id, previous, 'running', step, NEW.modified_by,
                    NEW.started_at);
            previous := 'running';
        END IF;
        INSERT INTO task_execution_events ({_HISTORY_COLUMNS})
        VALUES (NEW.id, NEW.organization_id, previous, NEW.status, NEW.version,
                NEW.modified_by, NEW.updated_at);
        RETURN NULL;
    END $$
    """

_PASSED_QUEUED = "NEW.status <> 'queued' AND NEW.queued_at IS NOT NULL"
_PASSED_RUNNING = "NEW.finished_at IS NOT NULL AND NEW.started_at IS NOT NULL"

SQLITE_STEP_HISTORY_TRIGGER = [
    *SQLITE_HISTORY_TRIGGER_DROP[1:],
    f"""
    CREATE TRIGGER task_executions_status_history_insert AFTER INSERT ON task_executions
    BEGIN
        INSERT INTO task_execution_events ({_HISTORY_COLUMNS})
        SELECT NEW.id, NEW.organization_id, NULL, 'queued',
               NEW.version - 1 - ({_PASSED_RUNNING}), NEW.modified_by, NEW.queued_at
        WHERE {_PASSED_QUEUED};
        INSERT INTO task_execution_events ({_HISTORY_COLUMNS})
        SELECT NEW.id, NEW.organization_id,
               CASE WHEN {_PASSED_QUEUED} THEN 'queued' END, 'running',
               NEW.version - 1, NEW.modified_by, NEW.started_at
        WHERE {_PASSED_RUNNING};
        INSERT INTO task_execution_events ({_HISTORY_COLUMNS})
        VALUES (NEW.id, NEW.organization_id,
                CASE WHEN {_PASSED_RUNNING} THEN 'running'
                     WHEN {_PASSED_QUEUED} THEN 'queued' END,
                NEW.status, NEW.version, NEW.modified_by, NEW.updated_at);
    END
    """,
    f"""
    CREATE TRIGGER task_executions_status_history_update AFTER UPDATE ON task_executions
    WHEN NEW.status IS NOT OLD.status
    BEGIN
        INSERT INTO task_execution_events ({_HISTORY_COLUMNS})
        SELECT NEW.id, NEW.organization_id, 'queued', 'running', NEW.version - 1,
               NEW.modified_by, NEW.started_at
        WHERE OLD.status = 'queued' AND {_PASSED_RUNNING};
        INSERT INTO task_execution_events ({_HISTORY_COLUMNS})
        VALUES (NEW.id, NEW.organization_id,
                CASE WHEN OLD.status = 'queued' AND {_PASSED_RUNNING} THEN 'running'
                     ELSE OLD.status END,
                NEW.status, NEW.version, NEW.modified_by, NEW.updated_at);
    END
    """,
]

# Migration 0006: on PostgreSQL the same events as 0005's function, with one INSERT per
# row instead of one per event. A worker's batch upserts reports that fold in their steps
# (three events each): one INSERT ... SELECT of up to three rows starts the executor once,
# where three single-row INSERTs started it three times (backend CPU per report of such a
# batch 195 -> 180 us, bench/README.md `## upsert`). A row with one event, such as every
# single-report upsert, keeps its plain INSERT. (Statement-level triggers over transition
# tables did a little better for batches, 175 us, but cost a statement of one report ~100
# us more: both fire for every upsert.) The steps are 0005's: queued = version -
# passed_queued - passed_running, running = version - 1, the new status = version; ORDER
# BY gives them ids in that order, the order the history is read in.
POSTGRES_ONE_INSERT_HISTORY_FUNCTION = f"""
    CREATE OR REPLACE FUNCTION flowworker_record_status_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        previous text;
        passed_queued boolean;
        passed_running boolean;
    BEGIN
{_STEPS_PASSED}
        IF NOT (passed_queued OR passed_running) THEN
            INSERT INTO task_execution_events ({_HISTORY_COLUMNS})
            VALUES (NEW.id, NEW.organization_id, previous, NEW.status, NEW.version,
                    NEW.modified_by, NEW.updated_at);
            RETURN NULL;
        END IF;
        INSERT INTO task_execution_events ({_HISTORY_COLUMNS})
        SELECT NEW.id, NEW.organization_id, step.from_status, step.to_status, step.version,
               NEW.modified_by, step.recorded_at
        FROM (VALUES
            (passed_queued, NULL, 'queued',
             NEW.version - passed_running::integer - 1, NEW.queued_at),
            (passed_running, CASE WHEN passed_queued THEN 'queued' ELSE previous END,
             'running', NEW.version - 1, NEW.started_at),
            (true, CASE WHEN passed_running THEN 'running'
                        WHEN passed_queued THEN 'queued' ELSE previous END,
             NEW.status, NEW.version, NEW.updated_at)
        ) AS step (taken, from_status, to_status, version, recorded_at)
        WHERE step.taken
        ORDER BY step.version;
        RETURN NULL;
    END $$
    """

# The application role sets `flowworker.organization_id` per transaction; a session that has
# not set it sees and writes nothing. Table owners (the migration role) are not subject to it.
_CURRENT_ORGANIZATION = f"NULLIF(current_setting('{ORGANIZATION_SETTING}', true), '')::uuid"


def postgres_rls_policies(tables: Iterable[str] = TENANT_TABLES) -> list[str]:
    statements = []
    for table in tables:
        statements += [
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"CREATE POLICY tenant_isolation ON {table} "
            f"USING (organization_id = {_CURRENT_ORGANIZATION}) "
            f"WITH CHECK (organization_id = {_CURRENT_ORGANIZATION})",
        ]
    return statements


def postgres_rls_policies_drop(tables: Iterable[str] = TENANT_TABLES) -> list[str]:
    statements = []
    for table in tables:
        statements += [
            f"DROP POLICY IF EXISTS tenant_isolation ON {table}",
            f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
        ]
    return statements


def postgres_grant_application_role(role: str) -> list[str]:
    """Grants for a login role that is neither superuser nor BYPASSRLS (see `db grant`)."""
    return [
        f"GRANT USAGE ON SCHEMA public TO {role}",
        # api_keys: read to authenticate a request, before its organization is known
        f"GRANT SELECT ON organizations, api_keys TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON flows, flow_executions, task_executions, "
        f"task_index_counters, flow_tasks, flow_dispatches TO {role}",
        # history: append and read only
        f"GRANT SELECT, INSERT ON task_execution_events TO {role}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}",
    ]
