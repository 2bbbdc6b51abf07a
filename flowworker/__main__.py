"""`python -m flowworker` is the `flowworker` command."""

from flowworker.cli import main

main()
