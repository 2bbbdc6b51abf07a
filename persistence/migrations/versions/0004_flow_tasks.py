"""flow task lists and the flow engine's dispatch ledger

Revision ID: 0004_flow_tasks
Revises: 0003_api_keys
Create Date: 2026-11-29

Mirrors `persistence.models.FlowTask` and `FlowDispatch`. Both are tenant data: on
PostgreSQL they get the same row-level policy as the tables of 0001.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from persistence import ddl

revision = "0004_flow_tasks"
down_revision = "0003_api_keys"
branch_labels = None
depends_on = None

TENANT_TABLES = ("flow_tasks", "flow_dispatches")


def upgrade() -> None:
    op.create_table(
        "flow_tasks",
        sa.Column("flow_id", sa.Uuid(), nullable=False),
        sa.Column("task_name", sa.String(length=200), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_id"], ["flows.id"], name=op.f("fk_flow_tasks_flow_id_flows"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_flow_tasks_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("flow_id", "task_name", name=op.f("pk_flow_tasks")),
    )
    op.create_table(
        "flow_dispatches",
        sa.Column("flow_execution_id", sa.Uuid(), nullable=False),
        sa.Column("task_name", sa.String(length=200), nullable=False),
        sa.Column("task_execution_idx", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("superseded", sa.Boolean(), nullable=False),
        sa.Column("celery_task_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_execution_id"],
            ["flow_executions.id"],
            name=op.f("fk_flow_dispatches_flow_execution_id_flow_executions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_flow_dispatches_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint(
            "flow_execution_id", "task_name", "task_execution_idx", name=op.f("pk_flow_dispatches")
        ),
    )
    if op.get_bind().dialect.name == "postgresql":
        for statement in ddl.postgres_rls_policies(TENANT_TABLES):
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in ddl.postgres_rls_policies_drop(TENANT_TABLES):
            op.execute(statement)
    op.drop_table("flow_dispatches")
    op.drop_table("flow_tasks")
