"""The `flowworker` command. Each area of the CLI lives in its own module, loaded on use so
that `flowworker --help` stays fast and a missing optional dependency only affects its
own command."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click
from sqlalchemy.exc import OperationalError

from persistence.errors import FlowworkerError

# command name -> "module:attribute"; one line per area.
COMMANDS = {
    "cancel": "flowworker.cli.cancel:cancel",
    "db": "flowworker.cli.db:db",
    "demo": "flowworker.cli.demo:demo",
    "executions": "flowworker.cli.executions:executions",
    "flow-executions": "flowworker.cli.flow_executions:flow_executions",
    "flower": "flowworker.cli.flower:flower",
    "keys": "flowworker.cli.keys:keys",
    "purge": "flowworker.cli.purge:purge",
    "reap": "flowworker.cli.reap:reap",
    "rerun": "flowworker.cli.rerun:rerun",
    "run": "flowworker.cli.run:run",
    "serve": "flowworker.cli.serve:serve",
    "status": "flowworker.cli.status:status",
    "watch": "flowworker.cli.watch:watch",
    "worker": "flowworker.cli.worker:worker",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flowworker")
def cli() -> None:
    """Record, query and watch every Celery task execution of your workflows."""


def main(argv: list[str] | None = None) -> Any:
    """Entry point: known errors print one clear line and exit 1, never a traceback."""
    try:
        return cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OperationalError as exc:
        click.secho(f"error: cannot reach the database: {exc.orig}", fg="red", err=True)
        sys.exit(1)
    except FlowworkerError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
