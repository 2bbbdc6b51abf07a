"""`flowworker flower`: Flower for our Celery app, showing each task's flowworker identity."""

from __future__ import annotations

import importlib

import click

from flowworker.cli.reap import app_option, load_celery_app


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@app_option
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(app_spec: str, flower_args: tuple[str, ...]) -> None:
    """Run Flower (`celery flower`) with the flow execution, task name and idx of every task
    shown in its task views. Other arguments go to Flower, e.g. --port=5555
    --address=127.0.0.1 --basic-auth=user:password (see `celery flower --help`)."""
    try:
        importlib.import_module("flower.options")  # defines Flower's options
        from tornado.options import options
    except ImportError:
        raise click.UsageError(
            "Flower is not installed; install it with: pip install 'flowworker[flower]'"
        ) from None
    from flowworker.flower import format_task

    # Set before Flower parses its command line and config file: a `format_task` given
    # there (a user's own) still wins.
    options.format_task = format_task
    app = load_celery_app(app_spec)
    exit_code = app.start(["flower", *flower_args])
    if exit_code:
        raise SystemExit(exit_code)
