"""`kvm-refactor rewrite` and `kvm-refactor build-check`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from refactor.cli.guard import escape_controls

from refactor.cli.rules_option import rules_option


def _user_error(msg: str):
    from refactor.cli.errors import UserError

    return UserError(msg)


def _plan(tree: str, names: str):
    from refactor import cached_plan
    from refactor.errors import RulesError
    from refactor.errors import TreeError

    try:
        return cached_plan(tree, names)
    except (TreeError, RulesError) as exc:
        raise _user_error(str(exc)) from None


def refuse_dirty(tree: Path) -> None:
    """Never clobber work in progress: a git tree must be clean (and have a commit) to be edited."""
    from refactor.apply.inplace import check_git
    from refactor.errors import TreeError

    try:
        check_git(Path(tree), [])
    except TreeError as exc:
        raise _user_error(str(exc)) from None


def _refuse_nul(tree: str, plan) -> None:
    """A file with a NUL byte is read as binary (and diffs as binary): its diff would not apply."""
    from refactor.frontend.source import read_tree_file

    for rel in sorted(plan.results):
        on_disk = read_tree_file(tree, rel) or b""
        for data in (on_disk, plan.results[rel]):
            at = data.find(b"\0")
            if at >= 0:
                line = data.count(b"\n", 0, at) + 1
                raise _user_error(f"{Path(tree) / rel}:{line}: NUL byte in a source file; it is read as "
                                  "binary and its diff would not apply")


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
    from refactor.apply.inplace import recover, rewrite_in_place
    from refactor.errors import TreeError

    if in_place and fmt != "json":
        try:
            # An earlier run that was killed is finished or undone first (its journal says which).
            done = recover(Path(tree)) if Path(tree).is_dir() else None
        except TreeError as exc:
            raise _user_error(str(exc)) from None
        if done:
            click.echo(escape_controls(f"{tree}: an interrupted in-place rewrite was found and {done}"), err=True)
        if done != "completed":  # after completing, the changes git sees are that run's, checked by hash
            refuse_dirty(Path(tree))
    plan = _plan(tree, names)
    if fmt == "json":
        click.echo(json.dumps(plan.to_json(), indent=1))
    elif in_place:
        try:
            outcome = rewrite_in_place(Path(tree), plan.results, plan.originals)
        except TreeError as exc:
            raise _user_error(str(exc)) from None
        click.echo(escape_controls(f"rewrote {outcome.written} files in {tree}"), err=True)
    else:
        _refuse_nul(tree, plan)
        # Bytes, as the files hold them (a file need not be UTF-8): no encoding step can fail.
        sys.stdout.flush()
        sys.stdout.buffer.write(plan.diff().encode("utf-8", "surrogateescape"))
        sys.stdout.buffer.flush()
    for c in plan.comments:
        click.echo(escape_controls(f"{c['file']}:{c['line']}: note: comment names removed member {c['symbol']}"),
                   err=True)
    for s in plan.style:
        click.echo(escape_controls(f"{s['file']}:{s['line']}: note: line is {s['columns']} columns after the rewrite"),
                   err=True)
    if plan.humans:
        for h in plan.humans:
            click.echo(escape_controls(f"{h.file}:{h.line}: needs a human: {h.why}"), err=True)
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
            click.echo(escape_controls(f"{e.file}:{e.line}:{e.column}: error: {e.message}{where}"))
        if not result.ok and not result.errors:
            # Kbuild's own reason in one line (with the fix) when it names one.
            click.echo(result.reason or result.log_tail)
    sys.exit(0 if result.ok else 1)
