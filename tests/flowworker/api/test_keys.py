"""API keys: stored hashed, one organization and one principal each, shown once, revocable."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select

from flowworker.cli import cli
from persistence.api_keys import (
    InvalidPrincipal,
    UnknownApiKey,
    create_api_key,
    fetch_api_key,
    fetch_api_keys,
    revoke_api_key,
)
from persistence.database import transaction
from persistence.hierarchy import ensure_organization
from persistence.models import ApiKey


def test_a_key_is_stored_only_as_a_digest_and_verifies(engine: Engine) -> None:
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, "acme")
        new = create_api_key(connection, organization_id, integration="ci-bot")
        stored = connection.execute(select(ApiKey.secret_sha256)).scalar_one()
        found = fetch_api_key(connection, new.plaintext)
    secret = new.plaintext[len(f"fwk_{new.record.id.hex}_") :]
    assert new.plaintext.startswith(f"fwk_{new.record.id.hex}_")
    assert stored == hashlib.sha256(secret.encode()).hexdigest()
    assert new.plaintext not in stored
    assert found == new.record
    assert found.principal == "ci-bot"


def test_wrong_malformed_and_revoked_keys_do_not_verify(engine: Engine) -> None:
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, "acme")
        new = create_api_key(connection, organization_id)
        prefix, secret = new.plaintext[:37], new.plaintext[37:]
        wrong_secret = prefix + "A" * len(secret)
        unknown_id = f"fwk_{uuid.uuid4().hex}_{secret}"
        for presented in (wrong_secret, unknown_id, "", "fwk_", new.plaintext + "x", "\x00"):
            assert fetch_api_key(connection, presented) is None
        revoked = revoke_api_key(connection, new.record.id)
        assert revoked.revoked_at is not None
        assert fetch_api_key(connection, new.plaintext) is None
        # revoking twice keeps the first time
        assert revoke_api_key(connection, new.record.id).revoked_at == revoked.revoked_at
        with pytest.raises(UnknownApiKey):
            revoke_api_key(connection, uuid.uuid4())


def test_principals(engine: Engine) -> None:
    user_id = uuid.uuid4()
    with transaction(engine) as connection:
        organization_id = ensure_organization(connection, "acme")
        person = create_api_key(connection, organization_id, user_id=user_id)
        system = create_api_key(connection, organization_id)
        for bad in ("", "system", str(uuid.uuid4()), "x" * 201, "tab\there"):
            with pytest.raises(InvalidPrincipal):
                create_api_key(connection, organization_id, integration=bad)
        with pytest.raises(InvalidPrincipal):
            create_api_key(connection, organization_id, user_id=user_id, integration="both")
        listed = fetch_api_keys(connection, organization_id)
    assert person.record.principal == str(user_id)
    assert system.record.principal == "system"
    assert [record.id for record in listed] == [person.record.id, system.record.id]


def test_keys_cli_creates_lists_and_revokes(postgres_url: str, pg_engine: Engine) -> None:
    runner = CliRunner()
    url = ["--database-url", postgres_url]
    unknown = runner.invoke(cli, ["keys", "create", "--org", "initech", *url])
    assert unknown.exit_code != 0
    created = runner.invoke(
        cli,
        ["keys", "create", "--org", "initech", "--create-org", "--integration", "etl", *url],
    )
    assert created.exit_code == 0, created.output
    plaintext = created.stdout.strip().splitlines()[0]
    with transaction(pg_engine) as connection:
        record = fetch_api_key(connection, plaintext)
    assert record is not None
    assert record.principal == "etl"
    listed = runner.invoke(cli, ["keys", "list", "--org", "initech", "--json", *url])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(row["id"], row["principal"], row["revoked_at"]) for row in rows] == [
        (str(record.id), "etl", None)
    ]
    assert plaintext not in listed.output
    revoked = runner.invoke(cli, ["keys", "revoke", str(record.id), *url])
    assert revoked.exit_code == 0, revoked.output
    with transaction(pg_engine) as connection:
        assert fetch_api_key(connection, plaintext) is None
