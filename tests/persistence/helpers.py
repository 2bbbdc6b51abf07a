from __future__ import annotations

import uuid

from sqlalchemy import Engine

from persistence.database import transaction
from persistence.hierarchy import create_flow_execution, ensure_organization


def make_flow_execution(engine: Engine, organization: str = "acme") -> tuple[uuid.UUID, uuid.UUID]:
    """(organization_id, flow_execution_id) of a new flow execution."""
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, organization)
        return organization_id, create_flow_execution(connection, organization_id)
