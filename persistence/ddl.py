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
        IF TG_OP = 'UPDATE' THEN
            IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
                RETURN NULL;
            END IF;
            previous := OLD.status;
        END IF;
        passed_queued := previous IS NULL AND NEW.status <> 'queued'
            AND NEW.queued_at IS NOT NULL;
        passed_running := (previous IS NULL OR previous = 'queued')
            AND NEW.finished_at IS NOT NULL AND NEW.started_at IS NOT NULL;
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

# Migration 0006: on PostgreSQL the same events, written per statement instead of per row.
# The worker upserts its reports in batches, and a report that folds in its steps has three
# events: a row trigger runs a single-row INSERT for each, one INSERT ... SELECT over the
# statement's transition tables writes them all (backend CPU per report of such a batch
# 10 to 16 % lower). The price is per statement: an upsert fires both triggers, so a
# statement of one report costs more than under the row trigger. Transition tables need a
# trigger per event; both call this function. The steps are those of
# POSTGRES_STEP_HISTORY_FUNCTION: queued = version - passed_queued - passed_running,
# running = version - 1, the new status = version. Old and new rows meet by id, which no
# update changes (the history's foreign key refuses it). The ORDER BY gives each task's
# events ids in version order: the history is read in id order.
_SELECT_STEP_EVENTS = (
    "SELECT changed.id, changed.organization_id, step.from_status, step.to_status,"
    " step.version, changed.modified_by, step.recorded_at"
)
_STEPS = "AS step (taken, from_status, to_status, version, recorded_at)"
POSTGRES_STATEMENT_HISTORY = [
    f"""
    CREATE FUNCTION flowworker_record_status_changes() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO task_execution_events ({_HISTORY_COLUMNS})
            {_SELECT_STEP_EVENTS}
            FROM (
                SELECT id, organization_id, status, version, modified_by, queued_at,
                       started_at, updated_at,
                       status <> 'queued' AND queued_at IS NOT NULL AS passed_queued,
                       finished_at IS NOT NULL AND started_at IS NOT NULL AS passed_running
                FROM new_rows
            ) AS changed
            CROSS JOIN LATERAL (VALUES
                (passed_queued, NULL, 'queued',
                 changed.version - passed_running::integer - 1, queued_at),
                (passed_running, CASE WHEN passed_queued THEN 'queued' END, 'running',
                 changed.version - 1, started_at),
                (true, CASE WHEN passed_running THEN 'running'
                            WHEN passed_queued THEN 'queued' END,
                 status, changed.version, updated_at)
            ) {_STEPS}
            WHERE step.taken
            ORDER BY changed.id, step.version;
        ELSE
            INSERT INTO task_execution_events ({_HISTORY_COLUMNS})
            {_SELECT_STEP_EVENTS}
            FROM (
                SELECT new_row.id, new_row.organization_id, new_row.status, new_row.version,
                       new_row.modified_by, new_row.started_at, new_row.updated_at,
                       old_row.status AS previous,
                       old_row.status = 'queued' AND new_row.finished_at IS NOT NULL
                           AND new_row.started_at IS NOT NULL AS passed_running
                FROM new_rows AS new_row JOIN old_rows AS old_row ON old_row.id = new_row.id
                WHERE new_row.status IS DISTINCT FROM old_row.status
            ) AS changed
            CROSS JOIN LATERAL (VALUES
                (passed_running, previous, 'running', changed.version - 1, started_at),
                (true, CASE WHEN passed_running THEN 'running' ELSE previous END,
                 status, changed.version, updated_at)
            ) {_STEPS}
            WHERE step.taken
            ORDER BY changed.id, step.version;
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER task_executions_status_history_insert AFTER INSERT ON task_executions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flowworker_record_status_changes()
    """,
    """
    CREATE TRIGGER task_executions_status_history_update AFTER UPDATE ON task_executions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flowworker_record_status_changes()
    """,
]

POSTGRES_STATEMENT_HISTORY_DROP = [
    "DROP TRIGGER IF EXISTS task_executions_status_history_update ON task_executions",
    "DROP TRIGGER IF EXISTS task_executions_status_history_insert ON task_executions",
    "DROP FUNCTION IF EXISTS flowworker_record_status_changes()",
]

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
