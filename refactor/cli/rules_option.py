"""`--rules FILE_OR_DIR`: the user's rules over the packaged rules/, for every command."""
from __future__ import annotations

import click


def _activate(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or ctx.resilient_parsing:
        return value
    from refactor.errors import RulesError
    from refactor.rules_overlay import activate

    try:
        activate(value)
    except RulesError as exc:
        from refactor.cli.errors import UserError

        raise UserError(str(exc)) from None
    return value


rules_option = click.option(
    "--rules", "rules_path", metavar="FILE_OR_DIR", default=None, expose_value=False, is_eager=True,
    callback=_activate, type=click.Path(exists=True, dir_okay=True),
    help="your rules over the packaged rules/ (same format; see docs/rules-overlay.md)")
