"""`kvm-refactor fetch-tree VERSION`: download and unpack Debian's linux-source-VERSION."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from refactor.kernel.fetch import FETCH_STEPS, FetchError, fetch_tree


def _show_progress() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


@click.command("fetch-tree")
@click.argument("version")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory to put the tree in (default: $KVM_REFACTOR_CACHE or ~/.cache/kvm-refactor/trees).",
)
@click.option("--full", is_flag=True, help="Extract the whole tree, not only the KVM subset.")
def fetch_tree_cmd(version: str, dest: Path | None, full: bool) -> None:
    """Fetch linux-source-VERSION (e.g. 6.1) from Debian and unpack it.

    Prints the package, the exact Debian version obtained, the suite it came
    from and the path of the tree root.  A tree fetched before is reused.
    """
    bar = None
    progress = None
    if _show_progress():
        from tqdm import tqdm

        bar = tqdm(
            total=len(FETCH_STEPS), desc="fetch-tree", file=sys.stderr, leave=False, bar_format="{desc} [{n}/{total}]"
        )

        def progress(step: str, message: str) -> None:
            done = FETCH_STEPS.index(step) if step in FETCH_STEPS else bar.n
            bar.n = done
            bar.set_description_str(message)
            bar.refresh()

    try:
        result = fetch_tree(version, dest=dest, full=full, progress=progress)
    except FetchError as exc:
        from refactor.cli.errors import UserError

        raise UserError(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()
    suffix = " (cached)" if result.cached else ""
    click.echo(result.describe() + suffix)
