"""Thin command-line layer over the library API (click).

Each command parses its arguments, calls one library function and renders the
result; errors the user can fix become a one-line message and exit 2.
"""
from __future__ import annotations

import sys

import click

from refactor.cli.rules_option import rules_option

from refactor import __version__
from refactor.cli.guard import GuardedGroup


from refactor.cli.errors import UserError  # noqa: E402,F401  (re-exported: its historic home)


@click.group(cls=GuardedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kvm-refactor")
def main() -> None:
    """Refactoring assistant for KVM x86's struct kvm_mmu -> struct kvm_pagewalk move."""


@main.command()
@rules_option
@click.argument("tree")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text groups references by function; json is the stable contract")
@click.option("--all", "include_text", is_flag=True, help="text: also list names in comments and strings")
@click.option("--no-cache", is_flag=True, help="ignore the content-hash cache")
def scan(tree: str, fmt: str, include_text: bool, no_cache: bool) -> None:
    """Index every reference the kvm_pagewalk move touches in TREE."""
    from refactor import scan_tree
    from refactor.progress import bar
    from refactor.index.report import scan_json, scan_text
    from refactor.errors import TreeError

    try:
        with bar(None, "scan") as step:
            index = scan_tree(tree, progress=step, use_cache=not no_cache)
    except TreeError as exc:
        raise UserError(str(exc)) from None
    click.echo(scan_json(index) if fmt == "json" else scan_text(_escaped(index), include_text), nl=False)


def _escaped(index):
    """Text output: names from the tree (a file called "x\\n1:1 ...") cannot forge lines."""
    from refactor.cli.guard import escape_controls

    index.tree = escape_controls(index.tree)
    for r in index.references:
        r.file, r.expression = escape_controls(r.file), escape_controls(r.expression)
        r.function = escape_controls(r.function) if r.function else r.function
    for u in index.unparsed:
        u["file"] = escape_controls(u["file"])
    return index


def _register_commands() -> None:
    # Commands that live in their own modules.
    from refactor.cli.fetch import fetch_tree_cmd
    from refactor.cli.rewrite import build_check_cmd, rewrite_cmd
    from refactor.cli.lint import lint_cmd
    from refactor.cli.series import series_cmd
    from refactor.cli.port import port_cmd
    from refactor.cli.verify import verify_cmd
    from refactor.cli.cache import cache_cmd

    main.add_command(fetch_tree_cmd)
    main.add_command(rewrite_cmd)
    main.add_command(build_check_cmd)
    main.add_command(series_cmd)
    main.add_command(port_cmd)
    main.add_command(lint_cmd)
    main.add_command(verify_cmd)
    main.add_command(cache_cmd)
    try:
        from emulator.cli import emulate
    except ModuleNotFoundError as exc:  # pragma: no cover - partial checkout
        if exc.name != "emulator.cli":
            raise
    else:
        main.add_command(emulate)


_register_commands()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
