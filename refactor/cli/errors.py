"""The CLI's one error type, in a module of its own so that command modules need not
import each other (or the group in app.py) to raise it."""
from __future__ import annotations

import click


class UserError(click.ClickException):
    """A problem with the input: one line on stderr, exit 2, no traceback."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"kvm-refactor: error: {self.format_message()}", err=True)


def single_line(_ctx, param, value: str | None) -> str | None:
    """Option callback: a value that goes into a mail header (a subject prefix) must be one line
    of printable text, or it would start new headers or a body of its own."""
    if value is not None and (not value.isprintable() or not value.strip()):
        raise click.BadParameter(f"{value!r}: must be one line of printable text", param=param)
    return value
