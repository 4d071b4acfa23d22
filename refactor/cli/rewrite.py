"""`kvm-refactor rewrite` and `kvm-refactor build-check`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from refactor.cli.rules_option import rules_option


def _user_error(msg: str):
    from refactor.cli.app import UserError

    return UserError(msg)


def _plan(tree: str, names: str):
    from refactor.plan.rewrite import cached_plan
    from refactor.rules import RulesError
    from refactor.frontend.source import TreeError

    try:
        return cached_plan(tree, names)
    except (TreeError, RulesError) as exc:
        raise _user_error(str(exc)) from None


def refuse_dirty(tree: Path) -> None:
    """Never clobber work in progress: a git tree must be clean to be edited."""
    import git

    try:
        repo = git.Repo(tree, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return
    if repo.is_dirty(untracked_files=False):
        raise _user_error(f"{tree}: the git tree has uncommitted changes; commit or stash them first")


@click.command("rewrite")
@rules_option
@click.argument("tree")
@click.option("--names", default="upstream", show_default=True,
              help="walker names: a preset from rules/names.toml (upstream, v1, cr3) or gva=NAME,ngpa=NAME")
@click.option("--format", "fmt", type=click.Choice(["diff", "json"]), default="diff", show_default=True)
@click.option("--in-place", is_flag=True, help="edit TREE's files (refused on a dirty git tree)")
def rewrite_cmd(tree: str, names: str, fmt: str, in_place: bool) -> None:
    """Move TREE from the old MMU layout to struct kvm_pagewalk.

    Prints a unified diff (applies with patch -p1 and git apply) unless
    --in-place. Exit 0: every site handled; 3: some sites need a human (listed
    on stderr with file:line and why); 2: bad input.
    """
    from refactor.apply.splice import write_atomic

    if in_place:
        refuse_dirty(Path(tree))
    plan = _plan(tree, names)
    if fmt == "json":
        click.echo(json.dumps(plan.to_json(), indent=1))
    elif in_place:
        for rel, data in plan.results.items():
            write_atomic(Path(tree) / rel, data)
        click.echo(f"rewrote {len(plan.results)} files in {tree}", err=True)
    else:
        sys.stdout.write(plan.diff())
    for c in plan.comments:
        click.echo(f"{c['file']}:{c['line']}: note: comment names removed member {c['symbol']}", err=True)
    for s in plan.style:
        click.echo(f"{s['file']}:{s['line']}: note: line is {s['columns']} columns after the rewrite", err=True)
    if plan.humans:
        for h in plan.humans:
            click.echo(f"{h.file}:{h.line}: needs a human: {h.why}", err=True)
        sys.exit(3)


@click.command("build-check")
@rules_option
@click.argument("tree")
@click.option("--rewrite", "names", default=None, metavar="NAMES",
              help="build the rewrite of TREE with these walker names (TREE itself is not touched)")
@click.option("-j", "--jobs", default=2, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def build_check_cmd(tree: str, names: str | None, jobs: int, fmt: str) -> None:
    """Configure (defconfig + KVM, KVM_INTEL, KVM_AMD) and build arch/x86/kvm/ of TREE.

    With --rewrite, the rewritten tree is built in a symlink farm and each
    compiler error is mapped to the rewrite site that caused it. Exit 0 when
    the build succeeds, 1 when it fails, 2 on bad input.
    """
    from refactor.kernel.build import BuildError, check_tree

    plan = _plan(tree, names) if names else None
    try:
        result = check_tree(Path(tree), plan, jobs)
    except BuildError as exc:
        raise _user_error(str(exc)) from None
    if fmt == "json":
        click.echo(json.dumps({"ok": result.ok, "seconds": round(result.seconds, 1), "command": result.command,
                               "errors": [e.__dict__ for e in result.errors]}, indent=1))
    else:
        click.echo(f"{'ok' if result.ok else 'FAILED'}: {result.command} ({result.seconds:.1f} s)")
        for e in result.errors[:20]:
            where = f" <- {e.site['rule']} at {e.site['file']}:{e.site['line']}" if e.site else ""
            click.echo(f"{e.file}:{e.line}:{e.column}: error: {e.message}{where}")
        if not result.ok and not result.errors:
            click.echo(result.log_tail)
    sys.exit(0 if result.ok else 1)
