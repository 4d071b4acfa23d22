"""`kvm-refactor lint PATH...`: check kernel trees and patches (see docs/lint.md).

Exit status: 0 clean (warnings and notes allowed), 1 findings at error
severity, 2 bad input (one line naming the file and the reason).
"""
from __future__ import annotations

import json
import os
import stat
import sys
from collections import Counter
from pathlib import Path

import click

from refactor.cli.rules_option import rules_option

BASELINE_VERSION = 1
MAX_BASELINE_BYTES = 32 * 1024 * 1024


def _user_error(message: str):
    from refactor.cli.errors import UserError  # imported late: cli.py mounts this command

    return UserError(message)


def _read_patch(path: str) -> tuple[str, str]:
    from refactor import read_patch_file
    from refactor.errors import PatchError

    try:
        return read_patch_file(path, sys.stdin.buffer.read() if path == "-" else None)
    except PatchError as exc:
        raise _user_error(str(exc)) from None


BASELINE_TOOL = "kvm-refactor lint"


def _load_baseline(path: str) -> Counter:
    from refactor import __version__

    try:
        with open(path, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise _user_error(f"{path}: not a regular file")
            raw = fh.read(MAX_BASELINE_BYTES + 1)
        if len(raw) > MAX_BASELINE_BYTES:
            raise _user_error(f"{path}: larger than the {MAX_BASELINE_BYTES // (1024 * 1024)} MiB limit for a baseline")
        data = json.loads(raw.decode("utf-8"))
        tool, version, tool_version = data.get("tool"), data.get("version"), data.get("tool_version")
        entries = data["findings"]
        counts = Counter((e["rule"], e["file"], e["fingerprint"]) for e in entries)
    except FileNotFoundError:
        raise _user_error(f"{path}: no such baseline file") from None
    except RecursionError:
        raise _user_error(f"{path}: not a kvm-refactor lint baseline (JSON nested too deeply)") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _user_error(f"{path}: not a kvm-refactor lint baseline ({type(exc).__name__})") from None
    # A baseline of another tool or version would suppress findings it never saw.
    if tool != BASELINE_TOOL or version != BASELINE_VERSION:
        raise _user_error(f"{path}: baseline of {tool!r} format {version!r}, expected {BASELINE_TOOL!r} "
                          f"format {BASELINE_VERSION}")
    if tool_version != __version__:
        raise _user_error(f"{path}: baseline written by kvm-refactor {tool_version!r}, this is {__version__}: "
                          "record it again with --write-baseline")
    return counts


def _write_baseline(path: str, findings) -> None:
    entries = [{"rule": f.rule, "file": f.file, "fingerprint": f.fingerprint, "line": f.line,
                "message": f.message} for f in findings]
    from refactor import __version__

    data = {"tool": BASELINE_TOOL, "version": BASELINE_VERSION, "tool_version": __version__, "findings": entries}
    try:
        Path(path).write_text(json.dumps(data, indent=1) + "\n")
    except OSError as exc:
        raise _user_error(f"{path}: cannot write baseline: {exc.strerror}") from None


def _suppress(findings, baseline: Counter):
    left, kept, suppressed = Counter(baseline), [], 0
    for f in findings:
        key = (f.rule, f.file, f.fingerprint)
        if left[key] > 0:
            left[key] -= 1
            suppressed += 1
        else:
            kept.append(f)
    return kept, suppressed


def _text(inputs, suppressed: int) -> str:
    from refactor.cli.guard import escape_controls

    out = []
    for inp in inputs:
        current_patch = None
        for f in inp["findings"]:
            path = f.file if inp["kind"] == "patch" or inp["path"] in (".", "") else f"{inp['path'].rstrip('/')}/{f.file}"
            if f.patch and f.patch != current_patch:
                current_patch = f.patch
                out.append(escape_controls(f"{inp['path']}: In patch {f.patch!r}:"))
            # Names come from the input: a newline or an escape sequence in one must not forge output.
            out.append(escape_controls(f"{path}:{f.line}:{f.column}: {f.severity}: {f.message} [{f.rule}]"))
            out.append(escape_controls(f"    = help: {f.help}"))
    return "\n".join(out) + ("\n" if out else "")


def _summary(findings, suppressed: int) -> str:
    c = Counter(f.severity for f in findings)
    tail = f" ({suppressed} suppressed by the baseline)" if suppressed else ""
    return f"kvm-refactor lint: {c['error']} errors, {c['warning']} warnings, {c['note']} notes{tail}"


@click.command("lint")
@rules_option
@click.argument("paths", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default="text", show_default=True,
              help="text is compiler-style; sarif is SARIF 2.1.0 for code scanning")
@click.option("--baseline", "baseline", metavar="FILE", help="suppress the findings recorded in FILE")
@click.option("--write-baseline", "write_baseline", metavar="FILE",
              help="record the current findings in FILE and exit 0")
@click.option("--tree", "tree", metavar="DIR", type=click.Path(file_okay=False),
              help="patches: the tree they apply to (types, layout and walker names come from it)")
@click.option("--names", "names", metavar="SPEC",
              help="walker names: a preset of rules/names.toml or gva=NAME,ngpa=NAME (default: from the tree)")
@click.option("--no-cache", is_flag=True, help="ignore the index cache")
@click.option("--staged", is_flag=True,
              help="PATHs are files of the git work tree here: lint their staged diff against it, "
                   "or the files themselves when nothing is staged (the pre-commit hook)")
@click.option("--explain", "explain", metavar="RULE",
              help="print what RULE (e.g. KVM010) checks, why, an example and the fix, then exit")
@click.option("-j", "--jobs", type=click.IntRange(1), default=None,
              help="worker processes, one PATH each (default: the number of cores for trees)")
@click.option("--cluster", default=None, metavar="ADDRESS",
              help="lint the PATHs on a Dask scheduler (docs/cluster.md)")
def lint_cmd(paths, fmt, baseline, write_baseline, tree, names, no_cache, staged, explain, jobs,
             cluster) -> None:
    """Check kernel trees and patches for the kvm_pagewalk layout.

    PATH is a kernel tree (its layout is detected), a patch or mbox file
    (git format-patch or git diff output), or - for stdin.  A patch is judged
    on the lines it adds only.
    """
    from refactor.execute import ExecuteError
    from refactor.execute.lint_units import run_lint
    from refactor.progress import bar
    from refactor.lint.registry import load_lint_rules
    from refactor.errors import PatchError
    from refactor.errors import RulesError
    from refactor.lint.sarif import to_sarif
    from refactor.errors import TreeError

    if explain:
        from refactor.lint.docs import explain as explain_rule

        try:
            click.echo(explain_rule(explain), nl=False)
        except RulesError as exc:
            raise _user_error(str(exc)) from None
        return
    if not paths:
        raise click.UsageError("give at least one PATH (a tree, a patch, or -), or --explain RULE")
    try:
        lint = load_lint_rules()
        base_counts = _load_baseline(baseline) if baseline else Counter()
        tree_index = None
        if tree:
            from refactor import scan_tree

            tree_index = scan_tree(tree, lint.rules, use_cache=not no_cache)
        inputs = []
        if staged:
            from refactor.lint.staged import lint_staged

            res = lint_staged(list(paths), tree or ".", names=names, use_cache=not no_cache, lint=lint)
            for w in res.warnings:
                click.echo(f"kvm-refactor lint: warning: {w}", err=True)
            inputs.append({"path": tree or ".", "kind": "patch" if res.mode == "staged" else "tree",
                           "findings": res.findings})
            paths = ()
        # One unit per PATH (refactor/execute): trees on worker processes or --cluster.
        units = [("tree", path, None, None) if path != "-" and Path(path).is_dir()
                 else ("patch", path, *_read_patch(path)) for path in paths]
        with bar(len(units), "lint", unit="path") as step:
            results = run_lint(units, names=names, use_cache=not no_cache,
                               tree=tree if tree_index is not None else None, jobs=jobs,
                               cluster=cluster, progress=step)
        for (kind, path, _, _), r in zip(units, results):
            if "error" in r:
                raise r["error"]
            for w in r.get("warnings", ()):
                click.echo(f"kvm-refactor lint: warning: {path}: {w}", err=True)
            if kind == "tree":
                inputs.append({"path": path, "kind": "tree", "layout": r["layout"],
                               "version": r["version"], "findings": r["findings"]})
            else:
                inputs.append({"path": path, "kind": "patch", "findings": r["findings"]})
    except (TreeError, PatchError, RulesError, ExecuteError) as exc:
        raise _user_error(str(exc)) from None

    everything = [f for inp in inputs for f in inp["findings"]]
    if write_baseline:
        _write_baseline(write_baseline, everything)
        click.echo(f"kvm-refactor lint: wrote {len(everything)} findings to {write_baseline}", err=True)
        return
    suppressed = 0
    if base_counts:
        for inp in inputs:
            inp["findings"], n = _suppress(inp["findings"], base_counts)
            suppressed += n
    kept = [f for inp in inputs for f in inp["findings"]]
    if fmt == "sarif":
        uri = None
        if len(inputs) == 1 and inputs[0]["kind"] == "tree":
            uri = Path(inputs[0]["path"]).resolve().as_uri() + "/"
        click.echo(json.dumps(to_sarif(kept, lint, uri), indent=1))
    elif fmt == "json":
        doc = {"inputs": [{k: v for k, v in inp.items() if k != "findings"} | {"findings": len(inp["findings"])}
                          for inp in inputs],
               "findings": [f.to_json() | {"input": inp["path"]} for inp in inputs for f in inp["findings"]],
               "summary": dict(Counter(f.severity for f in kept)) | {"suppressed": suppressed}}
        click.echo(json.dumps(doc, indent=1))
    else:
        click.echo(_text(inputs, suppressed), nl=False)
        click.echo(_summary(kept, suppressed), err=True)
    if any(f.severity == "error" for f in kept):
        click.get_current_context().exit(1)
