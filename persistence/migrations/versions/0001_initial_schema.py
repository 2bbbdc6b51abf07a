"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Tables, constraints and indexes mirror persistence/models.py (tests/persistence/test_migrations.py
keeps them equal); the status-history trigger and, on PostgreSQL, row-level security come
from persistence/ddl.py.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from persistence import ddl

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON_VALUE = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)

# frozen here on purpose: a later change to ExecutionStatus needs its own migration
STATUS_KNOWN = (
    "status IN ('queued', 'running', 'completed', 'failed', 'cancelled', 'deleted', 'stale')"
)


# frozen too: the tenant tables this revision creates (later revisions add their own)
TENANT_TABLES = (
    "flows",
    "flow_executions",
    "task_executions",
    "task_execution_events",
    "task_index_counters",
)


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
        sa.UniqueConstraint("name", name=op.f("uq_organizations_name")),
    )
    op.create_table(
        "flows",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("definition", JSON_VALUE, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_flows_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flows")),
        sa.UniqueConstraint(
            "organization_id", "name", "version", name=op.f("uq_flows_organization_id_name_version")
        ),
    )
    op.create_index(op.f("ix_flows_organization_id"), "flows", ["organization_id"], unique=False)

    op.create_table(
        "flow_executions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("flow_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("inputs", JSON_VALUE, nullable=True),
        sa.Column("celery_root_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            STATUS_KNOWN,
            name=op.f("ck_flow_executions_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["flow_id"], ["flows.id"], name=op.f("fk_flow_executions_flow_id_flows")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_flow_executions_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_executions")),
    )
    op.create_index(
        op.f("ix_flow_executions_flow_id"), "flow_executions", ["flow_id"], unique=False
    )
    op.create_index(
        op.f("ix_flow_executions_organization_id_created_at"),
        "flow_executions",
        ["organization_id", "created_at"],
        unique=False,
    )

    op.create_table(
        "task_executions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("flow_execution_id", sa.Uuid(), nullable=False),
        sa.Column("task_name", sa.String(length=200), nullable=False),
        sa.Column("task_execution_idx", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("input", JSON_VALUE, nullable=True),
        sa.Column("output", JSON_VALUE, nullable=True),
        sa.Column("error", JSON_VALUE, nullable=True),
        sa.Column("modified_by", sa.String(length=200), server_default="system", nullable=False),
        sa.Column("celery_task_id", sa.String(length=255), nullable=True),
        sa.Column("attempt", sa.Integer(), server_default="0", nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.CheckConstraint(
            STATUS_KNOWN,
            name=op.f("ck_task_executions_status_known"),
        ),
        sa.CheckConstraint("attempt >= 0", name=op.f("ck_task_executions_attempt_non_negative")),
        sa.CheckConstraint(
            "length(task_name) BETWEEN 1 AND 200", name=op.f("ck_task_executions_task_name_length")
        ),
        sa.CheckConstraint(
            "task_execution_idx >= 0",
            name=op.f("ck_task_executions_task_execution_idx_non_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["flow_execution_id"],
            ["flow_executions.id"],
            name=op.f("fk_task_executions_flow_execution_id_flow_executions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_task_executions_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_executions")),
        sa.UniqueConstraint(
            "flow_execution_id",
            "task_name",
            "task_execution_idx",
            name=op.f("uq_task_executions_flow_execution_id_task_name_task_execution_idx"),
        ),
    )
    op.create_index(
        op.f("ix_task_executions_celery_task_id"),
        "task_executions",
        ["celery_task_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_task_executions_organization_id_created_at_id"),
        "task_executions",
        ["organization_id", "created_at", "id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_task_executions_organization_id_status_created_at_id"),
        "task_executions",
        ["organization_id", "status", "created_at", "id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_task_executions_organization_id_updated_at_id"),
        "task_executions",
        ["organization_id", "updated_at", "id"],
        unique=False,
    )

    op.create_table(
        "task_index_counters",
        sa.Column("flow_execution_id", sa.Uuid(), nullable=False),
        sa.Column("task_name", sa.String(length=200), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("next_idx", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_execution_id"],
            ["flow_executions.id"],
            name=op.f("fk_task_index_counters_flow_execution_id_flow_executions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_task_index_counters_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint(
            "flow_execution_id", "task_name", name=op.f("pk_task_index_counters")
        ),
    )
    op.create_table(
        "task_execution_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("task_execution_id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("modified_by", sa.String(length=200), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_task_execution_events_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["task_execution_id"],
            ["task_executions.id"],
            name=op.f("fk_task_execution_events_task_execution_id_task_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_execution_events")),
    )
    op.create_index(
        op.f("ix_task_execution_events_task_execution_id_id"),
        "task_execution_events",
        ["task_execution_id", "id"],
        unique=False,
    )

    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for statement in ddl.POSTGRES_HISTORY_TRIGGER + ddl.postgres_rls_policies(TENANT_TABLES):
            op.execute(statement)
    else:
        for statement in ddl.SQLITE_HISTORY_TRIGGER:
            op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for statement in (
            ddl.postgres_rls_policies_drop(TENANT_TABLES) + ddl.POSTGRES_HISTORY_TRIGGER_DROP
        ):
            op.execute(statement)
    else:
        for statement in ddl.SQLITE_HISTORY_TRIGGER_DROP:
            op.execute(statement)
    op.drop_index(
        op.f("ix_task_execution_events_task_execution_id_id"), table_name="task_execution_events"
    )

    op.drop_table("task_execution_events")
    op.drop_table("task_index_counters")
    op.drop_index(
        op.f("ix_task_executions_organization_id_updated_at_id"), table_name="task_executions"
    )
    op.drop_index(
        op.f("ix_task_executions_organization_id_status_created_at_id"),
        table_name="task_executions",
    )
    op.drop_index(
        op.f("ix_task_executions_organization_id_created_at_id"), table_name="task_executions"
    )
    op.drop_index(op.f("ix_task_executions_celery_task_id"), table_name="task_executions")

    op.drop_table("task_executions")
    op.drop_index(
        op.f("ix_flow_executions_organization_id_created_at"), table_name="flow_executions"
    )
    op.drop_index(op.f("ix_flow_executions_flow_id"), table_name="flow_executions")

    op.drop_table("flow_executions")
    op.drop_index(op.f("ix_flows_organization_id"), table_name="flows")

    op.drop_table("flows")
    op.drop_table("organizations")
