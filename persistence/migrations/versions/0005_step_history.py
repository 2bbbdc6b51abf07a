"""history events for the steps a report folds in

Revision ID: 0005_step_history
Revises: 0004_flow_tasks
Create Date: 2026-11-29

A report may say when its execution was queued and started (`TaskReport.steps`): the
recorder writes a task's queued, running and finished reports as one row write when they
meet in one batch. The history trigger then appends one event per status passed, so the
history and the version read the same as when each report was written on its own.
"""

from __future__ import annotations

from alembic import op

from persistence import ddl

revision = "0005_step_history"
down_revision = "0004_flow_tasks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(ddl.POSTGRES_STEP_HISTORY_FUNCTION)
    else:
        for statement in ddl.SQLITE_STEP_HISTORY_TRIGGER:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # the function of 0001, in place (the trigger that calls it stays)
        op.execute(
            ddl.POSTGRES_HISTORY_TRIGGER[0].replace(
                "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1
            )
        )
    else:
        for statement in ddl.SQLITE_HISTORY_TRIGGER_DROP[1:] + ddl.SQLITE_HISTORY_TRIGGER[:2]:
            op.execute(statement)
