"""`flowworker worker`: a Celery worker for our tasks app, recording everything."""

from __future__ import annotations

import click


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args: tuple[str, ...]) -> None:
    """Run `celery -A tasks worker` with our celeryconfig; extra arguments go to Celery
    (try `flowworker worker --help`)."""
    from tasks import app

    app.worker_main(["worker", *celery_args])
