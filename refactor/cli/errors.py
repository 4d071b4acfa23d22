"""The CLI's one error type, in a module of its own so that command modules need not
import each other (or the group in app.py) to raise it."""
from __future__ import annotations

import click


class UserError(click.ClickException):
    """A problem with the input: one line on stderr, exit 2, no traceback."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"kvm-refactor: error: {self.format_message()}", err=True)
