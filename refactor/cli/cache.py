"""`kvm-refactor cache`: look after the native engine cache (emulator/native/cache.py)."""
from __future__ import annotations

from pathlib import Path

import click

from refactor.cli.errors import UserError


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


@click.group("cache")
def cache_cmd() -> None:
    """The native engine cache ($KVM_REFACTOR_CACHE/native, ~/.cache/kvm-refactor/native)."""


@cache_cmd.command("prune")
@click.option("--max-size", default=None, metavar="SIZE",
              help="also remove the least recently used entries until the cache fits SIZE "
                   "(e.g. 2G, 500M); default: no size limit")
@click.option("--max-age", type=float, default=None, metavar="DAYS",
              help="remove entries no build used for DAYS days (default 30; 0: no age limit)")
@click.option("--dry-run", is_flag=True, help="list what would be removed, remove nothing")
@click.option("--verbose", "-v", is_flag=True, help="name every entry removed (or that would be)")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="the native cache directory (default: that of `kvm-refactor emulate --engine native`)")
def prune_cmd(max_size: str | None, max_age: float | None, dry_run: bool, verbose: bool,
              cache_dir: Path | None) -> None:
    """Remove old native-engine builds from the cache.

    Entries no build used for --max-age days go, then, oldest first, what exceeds
    --max-size, and always what only an earlier layout of the cache holds.  Nothing
    another run is using goes: a running build is waited for, and entries used in the
    last hour or whose engine a process is running are kept.
    """
    from emulator.native.build import cache_root
    from emulator.native.cache import DEFAULT_MAX_AGE_DAYS, CacheError, prune

    try:
        cap = None if max_size is None else prune_size(max_size)
    except CacheError as exc:
        raise UserError(str(exc)) from None
    if max_age is not None and max_age < 0:
        raise UserError(f"--max-age {max_age:g}: negative")
    age = DEFAULT_MAX_AGE_DAYS if max_age is None else max_age
    root = cache_root(cache_dir)
    result = prune(root, age or None, cap or None, dry_run=dry_run, wait=False)
    if result is None:
        click.echo(f"waiting for the builds using {root} to finish...", err=True)
        result = prune(root, age or None, cap or None, dry_run=dry_run, wait=True)
    verb = "would remove" if dry_run else "removed"
    if verbose:
        for e in result.removed:
            click.echo(f"{verb} {e.describe(root)}  ({_size(e.size)}{', earlier layout' if e.stale else ''})")
    click.echo(f"{root}: {verb} {len(result.removed)} entries ({_size(result.removed_bytes)}), "
               f"kept {len(result.kept)} ({_size(result.kept_bytes)})")
    if result.in_use:
        click.echo(f"kept {len(result.in_use)} entries the limits would remove: in use "
                   f"(used in the last hour or running)", err=True)


def prune_size(text: str) -> int:
    from emulator.native.cache import parse_size

    return parse_size(text)
