"""API keys: created once, stored as a SHA-256 digest, checked in constant time.

A key reads ``fwk_<key id, 32 hex>_<secret, 43 url-safe characters>``. The id finds the row;
the secret (256 random bits) is compared by digest with `hmac.compare_digest`, so neither the
lookup nor the comparison tells an attacker how much of a guess was right. The plaintext
exists only in the return value of `create_api_key`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, select

from persistence.errors import InvalidReport, NotFound
from persistence.models import ApiKey, Base
from persistence.reports import SYSTEM_ACTOR, utcnow

_keys = Base.metadata.tables[ApiKey.__tablename__]

_KEY_FORMAT = re.compile(r"fwk_([0-9a-f]{32})_([A-Za-z0-9_-]{43})")
_INTEGRATION_MAX_LENGTH = 200


class UnknownApiKey(NotFound):
    pass


class InvalidPrincipal(InvalidReport):
    """A key's principal that would make `modified_by` ambiguous."""


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: uuid.UUID
    organization_id: uuid.UUID
    user_id: uuid.UUID | None
    integration: str | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None

    @property
    def principal(self) -> str:
        """What a change made with this key records as `modified_by`."""
        if self.user_id is not None:
            return str(self.user_id)
        return self.integration or SYSTEM_ACTOR


@dataclass(frozen=True, slots=True)
class NewApiKey:
    record: ApiKeyRecord
    #: the key itself; shown once, never stored
    plaintext: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _validate_integration(integration: str) -> str:
    if not 1 <= len(integration) <= _INTEGRATION_MAX_LENGTH or not integration.isprintable():
        raise InvalidPrincipal(
            f"an integration name is 1 to {_INTEGRATION_MAX_LENGTH} printable characters "
            f"(got {integration!r})"
        )
    try:
        uuid.UUID(integration)
    except ValueError:
        pass
    else:
        raise InvalidPrincipal(
            f"integration {integration!r} looks like a user id; use --user-id for a person"
        )
    if integration == SYSTEM_ACTOR:
        raise InvalidPrincipal(f"{SYSTEM_ACTOR!r} is the default principal; omit --integration")
    return integration


def create_api_key(
    connection: Connection,
    organization_id: uuid.UUID,
    *,
    user_id: uuid.UUID | None = None,
    integration: str | None = None,
) -> NewApiKey:
    """A new key for `organization_id`, acting as a person, an integration, or the system."""
    if user_id is not None and integration is not None:
        raise InvalidPrincipal("a key acts for a user or for an integration, not both")
    if integration is not None:
        _validate_integration(integration)
    key_id = uuid.uuid4()
    secret = secrets.token_urlsafe(32)
    record = ApiKeyRecord(
        id=key_id,
        organization_id=organization_id,
        user_id=user_id,
        integration=integration,
        created_at=utcnow(),
        revoked_at=None,
    )
    connection.execute(
        _keys.insert().values(
            id=key_id,
            organization_id=organization_id,
            secret_sha256=_digest(secret),
            user_id=user_id,
            integration=integration,
            created_at=record.created_at,
        )
    )
    return NewApiKey(record=record, plaintext=f"fwk_{key_id.hex}_{secret}")


_RECORD_COLUMNS = tuple(_keys.c[name] for name in ApiKeyRecord.__dataclass_fields__)


def fetch_api_key(connection: Connection, presented: str) -> ApiKeyRecord | None:
    """The live (not revoked) key `presented` is, or None for anything else."""
    match = _KEY_FORMAT.fullmatch(presented)
    if match is None:
        return None
    key_id, secret = uuid.UUID(match.group(1)), match.group(2)
    row = connection.execute(
        select(*_RECORD_COLUMNS, _keys.c.secret_sha256).where(_keys.c.id == key_id)
    ).first()
    # compare even when the row is missing, so a miss costs what a wrong secret costs
    stored = row.secret_sha256 if row is not None else "0" * 64
    if not hmac.compare_digest(stored, _digest(secret)) or row is None:
        return None
    record = ApiKeyRecord(*row[: len(_RECORD_COLUMNS)])
    return record if record.revoked_at is None else None


def fetch_api_keys(
    connection: Connection, organization_id: uuid.UUID | None = None
) -> list[ApiKeyRecord]:
    """Every key (revoked ones too), oldest first; only `organization_id`'s when given."""
    statement = select(*_RECORD_COLUMNS).order_by(_keys.c.created_at, _keys.c.id)
    if organization_id is not None:
        statement = statement.where(_keys.c.organization_id == organization_id)
    return [ApiKeyRecord(*row) for row in connection.execute(statement)]


def revoke_api_key(connection: Connection, key_id: uuid.UUID) -> ApiKeyRecord:
    """Mark the key revoked (kept for the audit trail); revoking twice keeps the first time."""
    connection.execute(
        _keys.update()
        .where(_keys.c.id == key_id, _keys.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    row = connection.execute(select(*_RECORD_COLUMNS).where(_keys.c.id == key_id)).first()
    if row is None:
        raise UnknownApiKey(f"no API key with id {key_id}")
    return ApiKeyRecord(*row)
