"""`kvm-refactor port`: patches across the layout change, with per-hunk analysis."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

from refactor.cli.errors import single_line
from refactor.cli.rules_option import rules_option


def _porter() -> tuple[str, str] | None:
    """The porter's identity from git config (the Signed-off-by a stable port carries)."""
    import subprocess

    try:
        name = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True).stdout.strip()
        email = subprocess.run(["git", "config", "user.email"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
    return (name, email) if name and email else None


def _slug(subject: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", subject).strip("-")[:52] or "patch"


def _refuse_dirty(trees: list[str]) -> None:
    """A git tree is ported at its HEAD but built from the files on disk: with local changes
    --build and --verify would test something the port never read."""
    from refactor.apply.inplace import check_git
    from refactor.cli.errors import UserError
    from refactor.errors import TreeError

    for tree in trees:
        try:
            check_git(Path(tree), [])
        except TreeError as exc:
            raise UserError(f"{exc} (the port reads HEAD; --build and --verify build the files "
                            "on disk)") from None


@click.command("port")
@rules_option
@click.argument("patches", nargs=-1, required=True)
@click.option("--onto", "targets", multiple=True, required=True,
              help="target kernel tree (directory or git repository, read at HEAD); repeatable")
@click.option("--names", default=None,
              help="walker names the patches use (preset or gva=X,ngpa=Y); default: read from the patches")
@click.option("--target-names", default=None,
              help="walker names of a new-layout target whose names match no preset")
@click.option("--outdir", default=None, help="write <version>/NNNN-subject.patch per target")
@click.option("--format", "fmt", type=click.Choice(["mbox", "text", "json"]), default="mbox",
              show_default=True, help="mbox: the ported mails; text: the analysis; json: everything")
@click.option("--subject-prefix", default=None, callback=single_line, help='e.g. "PATCH 6.12.y"')
@click.option("--build", is_flag=True,
              help="build KVM of each target with the ported patches applied (in a symlink farm)")
@click.option("--verify", "verify", is_flag=True,
              help="run the patched target, and the patched --source tree, on the native engine "
                   "(docs/port.md, \"Proof on the target\")")
@click.option("--source", "source", default=None, metavar="TREE",
              help="with --verify: the full tree the patches were written on")
@click.option("--events", type=click.IntRange(0), default=20_000, show_default=True,
              help="with --verify: fuzz events after the corpus")
@click.option("--seed", type=int, default=1, show_default=True, help="with --verify: fuzz seed")
@click.option("-j", "--jobs", type=click.IntRange(1), default=None,
              help="worker processes, one target each, and make -j for --build "
                   "(default: the number of cores)")
@click.option("--cluster", default=None, metavar="ADDRESS",
              help="port on a Dask scheduler, one target per unit (docs/cluster.md)")
def port_cmd(patches: tuple[str, ...], targets: tuple[str, ...], names: str | None, target_names: str | None,
             outdir: str | None, fmt: str, subject_prefix: str | None, build: bool, jobs: int | None,
             cluster: str | None, verify: bool = False, source: str | None = None,
             events: int = 20_000, seed: int = 1) -> None:
    """Port PATCHES (mails, an mbox, a git diff, or -) onto each --onto tree.

    A new-layout patch onto an old-layout tree is a backport, the reverse a
    forward port; on the same layout the patch is applied with analysis only.
    Each hunk is clean, translated (rule ids), relocated, or a conflict with
    a reason. Exit 0 when every hunk of every patch ported, 1 when some
    conflict (or --verify's native proof disagrees or never reaches the
    changed code), 2 on bad input. The trees are never written.
    """
    from refactor.cli.errors import UserError
    from refactor.errors import PatchError
    from refactor.errors import TreeError
    from refactor.kernel.build import BuildError
    from refactor.execute import ExecuteError, default_jobs
    from refactor.execute.port_matrix import run_port
    from refactor.port.engine import build_ported, read_inputs
    from refactor.progress import bar
    from refactor.port.output import analysis_text
    from refactor.errors import RulesError

    if source is not None and not verify:
        raise UserError("--source is the tree the native proof runs the original patches on: "
                        "it needs --verify")
    if build or verify:
        _refuse_dirty([*targets, *([source] if source else [])])
    stdin = sys.stdin.buffer.read() if "-" in patches else None
    try:
        mails = read_inputs(list(patches), stdin)
        with bar(len(targets), "port", unit="target") as step:
            report = run_port(mails, list(targets), names_spec=names, target_names=target_names,
                              porter=_porter(), subject_prefix=subject_prefix, jobs=jobs,
                              cluster=cluster, progress=step)
    except (PatchError, TreeError, RulesError, ExecuteError) as exc:
        raise UserError(str(exc)) from None
    failed_build = False
    if build:
        for tr in report.targets:
            if not tr.changed:
                continue
            click.echo(f"port: building KVM of {tr.target.root} with {len(tr.changed)} patched file(s)",
                       err=True)
            try:
                result = build_ported(tr, jobs or default_jobs())
            except BuildError as exc:
                raise UserError(str(exc)) from None
            failed_build |= not result.ok
            state = "ok" if result.ok else "FAILED"
            click.echo(f"port: build of {tr.target.version}: {state} ({result.seconds:.0f} s)", err=True)
            for e in result.errors[:10]:
                click.echo(f"{e.file}:{e.line}:{e.column}: {e.message}", err=True)
            if not result.ok and not result.errors:
                click.echo(result.reason or result.log_tail, err=True)

    proofs = _prove(report, mails, source, names, seed, events) if verify else {}

    if outdir:
        base = Path(outdir)
        if base.exists() and not base.is_dir():
            raise UserError(f"{outdir}: exists and is not a directory")
        for tr in report.targets:
            d = base / tr.target.version
            d.mkdir(parents=True, exist_ok=True)
            for k, pr in enumerate(tr.patches, 1):
                if pr.output:
                    (d / f"{k:04d}-{_slug(pr.mail.subject)}.patch").write_text(pr.output)
    if fmt == "json":
        data = report.to_json()
        for i, proof in proofs.items():
            data["targets"][i]["verify"] = proof if isinstance(proof, dict) else proof.as_dict()
        click.echo(json.dumps(data, indent=2))
    elif fmt == "text" or outdir or len(targets) > 1:
        click.echo(analysis_text(report), nl=False)
    else:
        for pr in report.targets[0].patches:
            if pr.output:
                click.echo(pr.output, nl=False)
        if report.conflicts:
            click.echo(analysis_text(report), nl=False, err=True)
    if any(isinstance(p, dict) and "error" in p for p in proofs.values()):
        sys.exit(2)
    if report.conflicts or failed_build or any(
            not isinstance(p, dict) and p.verdict in ("disagree", "unreached") for p in proofs.values()):
        sys.exit(1)


def _prove(report, mails, source: str | None, names: str | None, seed: int, events: int) -> dict:
    """The native proof per target (index -> Proof, or {"error"/"skipped": why}); each
    summary on standard error.  A tree the engine cannot build gets one line."""
    from refactor import VerifyError, port_source_files, prove_port

    out: dict = {}
    src_files = None
    for i, tr in enumerate(report.targets):
        name = tr.target.version
        if any(p.result == "conflict" for p in tr.patches):
            out[i] = {"skipped": "some patches conflict: nothing complete to execute"}
            click.echo(f"port: native proof of {name}: skipped, some patches conflict", err=True)
            continue
        if not tr.changed:
            out[i] = {"skipped": "the ported patches change nothing in the target"}
            click.echo(f"port: native proof of {name}: skipped, the patches change nothing", err=True)
            continue
        try:
            if source is not None and src_files is None:
                src_files = port_source_files(mails, Path(source), names)
            proof = prove_port(tr.target.root, tr.changed, None if source is None else Path(source),
                          src_files, seed=seed, events=events,
                          progress=lambda msg: click.echo(f"port: {msg}", err=True))
        except VerifyError as exc:
            out[i] = {"error": str(exc)}
            click.echo(f"port: native proof of {name}: not run: {exc}", err=True)
            continue
        out[i] = proof
        click.echo(proof.text(), err=True, nl=False)
    return out
