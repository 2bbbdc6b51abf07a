"""SQLAlchemy 2.0 models: Organization -> Flow -> FlowExecution -> TaskExecution (+ events).

The schema itself is built by the Alembic migrations in `persistence/migrations`; a test
keeps these models and the migrations identical. Triggers and row-level-security policies
live only in the migrations (see `persistence/ddl.py`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from persistence.status import ExecutionStatus

TASK_NAME_MAX_LENGTH = 200

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("flowworker stores timezone-aware datetimes only")
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(dt.UTC).replace(tzinfo=None)
        return value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


#: JSON columns: JSONB on PostgreSQL; SQL NULL (not JSON null) for Python None.
JSONValue = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
EventId = BigInteger().with_variant(Integer(), "sqlite")


def _status_check(column: str) -> str:
    return f"{column} IN ({', '.join(repr(str(s)) for s in ExecutionStatus)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSONValue, Any: JSONValue}


class Organization(Base):
    """A tenant. This registry itself is not tenant data, so it has no row-level policy."""

    __tablename__ = "organizations"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class Flow(Base):
    """A stored flow definition; one row per (organization, name, version)."""

    __tablename__ = "flows"
    __table_args__ = (UniqueConstraint("organization_id", "name", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(50))
    definition: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class FlowExecution(Base):
    """One run of a flow, or an ad-hoc Celery workflow (then `flow_id` is NULL)."""

    __tablename__ = "flow_executions"
    __table_args__ = (
        CheckConstraint(_status_check("status"), name="status_known"),
        Index(None, "organization_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))
    flow_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("flows.id"), index=True)
    status: Mapped[ExecutionStatus] = mapped_column(String(16), default=ExecutionStatus.RUNNING)
    inputs: Mapped[Any | None]
    celery_root_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None]

    flow: Mapped[Flow | None] = relationship(lazy="raise")
    task_executions: Mapped[list[TaskExecution]] = relationship(
        back_populates="flow_execution", lazy="raise"
    )


class TaskExecution(Base):
    """One execution (attempt, loop iteration, re-run) of one task in a flow execution."""

    __tablename__ = "task_executions"
    __table_args__ = (
        UniqueConstraint("flow_execution_id", "task_name", "task_execution_idx"),
        CheckConstraint(
            f"length(task_name) BETWEEN 1 AND {TASK_NAME_MAX_LENGTH}", name="task_name_length"
        ),
        CheckConstraint("task_execution_idx >= 0", name="task_execution_idx_non_negative"),
        CheckConstraint("attempt >= 0", name="attempt_non_negative"),
        CheckConstraint(_status_check("status"), name="status_known"),
        # listing an organization's executions by status, newest first (and keyset paging)
        Index(None, "organization_id", "status", "created_at", "id"),
        Index(None, "organization_id", "created_at", "id"),
        Index(None, "organization_id", "updated_at", "id"),
        Index(None, "celery_task_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))
    flow_execution_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("flow_executions.id", ondelete="CASCADE")
    )
    task_name: Mapped[str] = mapped_column(String(TASK_NAME_MAX_LENGTH))
    task_execution_idx: Mapped[int]
    status: Mapped[ExecutionStatus] = mapped_column(String(16))
    input: Mapped[Any | None]
    output: Mapped[Any | None]
    error: Mapped[Any | None]
    modified_by: Mapped[str] = mapped_column(String(200), default="system", server_default="system")
    celery_task_id: Mapped[str | None] = mapped_column(String(255))
    attempt: Mapped[int] = mapped_column(default=0, server_default="0")
    worker: Mapped[str | None] = mapped_column(String(255))
    queued_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    #: bumped on every accepted change; notifications carry it so clients drop stale ones
    version: Mapped[int] = mapped_column(default=1, server_default="1")

    flow_execution: Mapped[FlowExecution] = relationship(
        back_populates="task_executions", lazy="raise"
    )


class TaskExecutionEvent(Base):
    """Append-only audit trail: one row per status a task execution entered.

    Written by a database trigger on `task_executions`, so no writer can skip it.
    """

    __tablename__ = "task_execution_events"
    __table_args__ = (Index(None, "task_execution_id", "id"),)

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    task_execution_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("task_executions.id", ondelete="CASCADE")
    )
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))
    from_status: Mapped[ExecutionStatus | None] = mapped_column(String(16))
    to_status: Mapped[ExecutionStatus] = mapped_column(String(16))
    version: Mapped[int]
    modified_by: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[dt.datetime]


class TaskIndexCounter(Base):
    """Next free task_execution_idx per (flow execution, task name), handed out atomically."""

    __tablename__ = "task_index_counters"

    flow_execution_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("flow_executions.id", ondelete="CASCADE"), primary_key=True
    )
    task_name: Mapped[str] = mapped_column(String(TASK_NAME_MAX_LENGTH), primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))
    next_idx: Mapped[int]


class FlowTask(Base):
    """A task name of a stored flow: the only names its flow executions may report."""

    __tablename__ = "flow_tasks"

    flow_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("flows.id", ondelete="CASCADE"), primary_key=True
    )
    task_name: Mapped[str] = mapped_column(String(TASK_NAME_MAX_LENGTH), primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))


class FlowDispatch(Base):
    """The flow engine's ledger: which loop iteration and which retry each execution it
    dispatched is. `superseded` rows belong to a run that a re-execution replaced."""

    __tablename__ = "flow_dispatches"

    flow_execution_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("flow_executions.id", ondelete="CASCADE"), primary_key=True
    )
    task_name: Mapped[str] = mapped_column(String(TASK_NAME_MAX_LENGTH), primary_key=True)
    task_execution_idx: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))
    iteration: Mapped[int]
    attempt: Mapped[int]
    superseded: Mapped[bool] = mapped_column(default=False)
    celery_task_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime]


TENANT_TABLES = (
    Flow.__tablename__,
    FlowExecution.__tablename__,
    TaskExecution.__tablename__,
    TaskExecutionEvent.__tablename__,
    TaskIndexCounter.__tablename__,
    FlowTask.__tablename__,
    FlowDispatch.__tablename__,
)


class ApiKey(Base):
    """A key of the HTTP API, bound to one organization and one principal.

    Only the SHA-256 of the key's secret is stored. This table is how a request finds its
    organization, so, like `organizations`, it has no row-level policy. The principal is a
    person (`user_id`), a service account (`integration`), or neither: the system (workers).
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("user_id IS NULL OR integration IS NULL", name="one_principal"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[uuid.UUID | None]
    integration: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]
