"""`flowworker keys ...`: API keys of the HTTP API (create, list, revoke)."""

from __future__ import annotations

import json
import uuid

import click
from rich.console import Console
from rich.table import Table

from flowworker.cli.db import database_url_option
from flowworker.config import Settings
from persistence.api_keys import create_api_key, fetch_api_keys, revoke_api_key
from persistence.database import create_database_engine, transaction
from persistence.errors import UnknownOrganization
from persistence.hierarchy import ensure_organization, fetch_organization_id


@click.group()
def keys() -> None:
    """Create, list and revoke API keys of the HTTP API."""


@keys.command()
@database_url_option
@click.option("--org", "organization", required=True, help="Organization name or id.")
@click.option("--user-id", type=click.UUID, help="The key acts for this person (user id).")
@click.option("--integration", help="The key acts for this service account (its name).")
@click.option("--create-org", is_flag=True, help="Create the organization if it is new.")
def create(
    database_url: str | None,
    organization: str,
    user_id: uuid.UUID | None,
    integration: str | None,
    create_org: bool,
) -> None:
    """Create a key and print it (only this once: it is stored hashed).

    Without --user-id or --integration the key acts as `system`, like a worker.
    """
    if user_id is not None and integration is not None:
        raise click.UsageError("give --user-id or --integration, not both")
    engine = create_database_engine(Settings.load(database_url=database_url).database_url)
    with transaction(engine) as connection:
        try:
            organization_id = fetch_organization_id(connection, organization)
        except UnknownOrganization:
            if not create_org:
                raise UnknownOrganization(
                    f"no organization named {organization!r}; add --create-org to create it"
                ) from None
            organization_id = ensure_organization(connection, organization)
        new = create_api_key(connection, organization_id, user_id=user_id, integration=integration)
    click.echo(new.plaintext)
    click.echo(
        f"key {new.record.id} for organization {organization_id} acting as "
        f"{new.record.principal!r}; store it now, it cannot be shown again",
        err=True,
    )


@keys.command(name="list")
@database_url_option
@click.option("--org", "organization", help="Only this organization's keys (name or id).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_keys(database_url: str | None, organization: str | None, as_json: bool) -> None:
    """List keys (never the keys themselves: only their ids and principals)."""
    engine = create_database_engine(Settings.load(database_url=database_url).database_url)
    with transaction(engine) as connection:
        organization_id = fetch_organization_id(connection, organization) if organization else None
        records = fetch_api_keys(connection, organization_id)
    if as_json:
        for record in records:
            click.echo(
                json.dumps(
                    {
                        "id": str(record.id),
                        "organization_id": str(record.organization_id),
                        "principal": record.principal,
                        "created_at": record.created_at.isoformat(),
                        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
                    }
                )
            )
        return
    table = Table("id", "organization", "acts as", "created", "revoked")
    for record in records:
        table.add_row(
            str(record.id),
            str(record.organization_id),
            record.principal,
            f"{record.created_at:%Y-%m-%d %H:%M:%S}",
            f"{record.revoked_at:%Y-%m-%d %H:%M:%S}" if record.revoked_at else "",
        )
    Console().print(table)


@keys.command()
@database_url_option
@click.argument("key_id", type=click.UUID)
def revoke(database_url: str | None, key_id: uuid.UUID) -> None:
    """Revoke the key KEY_ID (servers stop accepting it within a few seconds)."""
    engine = create_database_engine(Settings.load(database_url=database_url).database_url)
    with transaction(engine) as connection:
        record = revoke_api_key(connection, key_id)
    click.echo(f"key {record.id} revoked at {record.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
