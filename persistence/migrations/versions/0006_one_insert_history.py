"""history events of a row written by one INSERT on PostgreSQL

Revision ID: 0006_one_insert_history
Revises: 0005_step_history
Create Date: 2026-11-29

0005's history function ran one single-row INSERT per event, up to three for a report that
folds in its steps; the same events now go in by one INSERT ... SELECT
(`ddl.POSTGRES_ONE_INSERT_HISTORY_FUNCTION`). The trigger is unchanged; SQLite's row
triggers too.
"""

from __future__ import annotations

from alembic import op

from persistence import ddl

revision = "0006_one_insert_history"
down_revision = "0005_step_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(ddl.POSTGRES_ONE_INSERT_HISTORY_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(ddl.POSTGRES_STEP_HISTORY_FUNCTION)
