"""history events written per statement on PostgreSQL

Revision ID: 0006_statement_history
Revises: 0005_step_history
Create Date: 2026-11-30

The history trigger of PostgreSQL ran once per row, with up to three single-row INSERTs
each; two statement-level triggers now write the same events with one INSERT ... SELECT
over the statement's transition tables (`ddl.POSTGRES_STATEMENT_HISTORY`). SQLite has no
statement-level triggers and keeps the row triggers of 0005.
"""

from __future__ import annotations

from alembic import op

from persistence import ddl

revision = "0006_statement_history"
down_revision = "0005_step_history"
branch_labels = None
depends_on = None

# the row trigger of 0001 and the function 0005 gave it
_ROW_TRIGGER_DROP = ddl.POSTGRES_HISTORY_TRIGGER_DROP[2:]
_ROW_TRIGGER = [ddl.POSTGRES_STEP_HISTORY_FUNCTION, ddl.POSTGRES_HISTORY_TRIGGER[1]]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _ROW_TRIGGER_DROP + ddl.POSTGRES_STATEMENT_HISTORY:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in ddl.POSTGRES_STATEMENT_HISTORY_DROP + _ROW_TRIGGER:
            op.execute(statement)
