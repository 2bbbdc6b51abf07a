"""`flowworker db ...`: create, upgrade and inspect the database."""

from __future__ import annotations

import re

import click
from sqlalchemy import text

from flowworker.config import Settings
from persistence.database import create_database_engine
from persistence.ddl import postgres_grant_application_role
from persistence.schema import fetch_schema_revision, head_revision, upgrade_database

database_url_option = click.option(
    "--database-url",
    envvar="FLOWWORKER_DATABASE_URL",
    help="Database URL (default: $FLOWWORKER_DATABASE_URL, else sqlite:///flowworker.db).",
)


@click.group()
def db() -> None:
    """Create, upgrade and inspect the database."""


@db.command()
@database_url_option
@click.option("--revision", default="head", show_default=True)
def upgrade(database_url: str | None, revision: str) -> None:
    """Apply the schema migrations (safe to run on a current database)."""
    engine = create_database_engine(Settings.load(database_url=database_url).database_url)
    upgrade_database(engine, revision)
    click.echo(
        f"database {engine.url.render_as_string()} is at revision {fetch_schema_revision(engine)}"
    )


@db.command()
@database_url_option
def current(database_url: str | None) -> None:
    """Print the database's schema revision and the newest one this version knows."""
    engine = create_database_engine(Settings.load(database_url=database_url).database_url)
    click.echo(f"current: {fetch_schema_revision(engine) or 'none'}  head: {head_revision(engine)}")


@db.command()
@database_url_option
@click.argument("role")
@click.option("--password", help="Create the role with this password if it does not exist.")
def grant(database_url: str | None, role: str, password: str | None) -> None:
    """Give an application ROLE the rights it needs (PostgreSQL; RLS then applies to it)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role):
        raise click.BadParameter(
            "a role name is lowercase letters, digits and _", param_hint="ROLE"
        )
    engine = create_database_engine(Settings.load(database_url=database_url).database_url)
    if engine.dialect.name != "postgresql":
        raise click.UsageError("roles and row-level security exist only on PostgreSQL")
    with engine.begin() as connection:
        exists = connection.execute(
            text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}
        ).scalar()
        if not exists:
            # DDL takes no bind parameters: quote the password as a SQL string literal.
            login = (
                "LOGIN PASSWORD '{}'".format(password.replace("'", "''")) if password else "LOGIN"
            )
            connection.exec_driver_sql(f"CREATE ROLE {role} {login} NOSUPERUSER NOBYPASSRLS")
        for statement in postgres_grant_application_role(role):
            connection.execute(text(statement))
    click.echo(f"role {role} can now use flowworker; row-level security applies to it")
