"""The rewrite as a bisectable patch series on a git branch, ready to post.

Each step of rules/steps.toml becomes one commit whose tree is the rewrite of
the base with the rules in force up to that step.  Commits are made with a
private index (GIT_INDEX_FILE) and plumbing, so the user's checkout and
index are never touched; the branch is created from HEAD at the end.  Then
`git format-patch` writes the series with a cover letter.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from refactor.kernel.build import BuildResult, build_kvm, farm, work_dir
from refactor.index.indexer import build_index
from refactor.plan.rewrite import plan_rewrite
from refactor.rules import Rules, RulesError, Step, load_rules, load_steps, staged
from refactor.series.cover import (change_id, changelog, fill_cover, maintainers, previous_branch, previous_range,
                                   record)
from refactor.series.message import add_note, commit_message, note, step_body, subject_line
from refactor.series.gitops import (PrivateIndex, SeriesError, check_branch, delete_branch, git, identity,
                                    open_repo, prepare_outdir, remove_dir, scratch_dir, snapshot)


@dataclass
class PostOptions:
    """How the series is posted (format-patch): None for to/cc means get_maintainer.pl's answer."""

    subject_prefix: str | None = None
    to: list[str] | None = None
    cc: list[str] | None = None
    previous: str | None = None  # the branch of the previous version (re-roll)
    change_id: str | None = None


@dataclass
class StepResult:
    step: Step
    subject: str
    commit: str | None  # None: nothing to do for this tree
    files: list[str]
    rules: list[str]
    build: BuildResult | None = None
    verify: object | None = None  # the VERIFY library's result, when run


@dataclass
class SeriesResult:
    branch: str
    base: str
    steps: list[StepResult] = field(default_factory=list)
    patches: list[Path] = field(default_factory=list)
    humans: list = field(default_factory=list)
    head: str = ""  # the last commit (the branch's tip once created)
    config: str | None = None  # the --config built with, None without --build
    verify_report: object | None = None


def generate(repo_path: str | Path, names_spec: str, branch: str, outdir: str | Path | None,
             build: bool = False, reroll: int | None = None, progress=None, rules: Rules | None = None,
             jobs: int = 2, force: bool = False, post: PostOptions | None = None, config: str = "builtin",
             verify: int | None = None) -> SeriesResult:
    """The series on a new branch (and in outdir); `verify`: events per step for the VERIFY library."""
    rules = rules or load_rules()
    top, base = open_repo(Path(repo_path))
    name, email = identity(top)
    check_branch(top, branch)
    steps = load_steps(rules)
    names = rules.names(names_spec)
    # Checked before any work: a bad --outdir must not cost a whole series.
    out_path = prepare_outdir(outdir, force) if outdir is not None else None
    if build:
        from refactor.kernel.build import CONFIGS, BuildError, unclean_reason

        if config not in CONFIGS:
            raise SeriesError(f"unknown --config {config!r} (known: {', '.join(CONFIGS)})")
        unclean = unclean_reason(top)
        if unclean:
            raise BuildError(unclean)
    post = post or PostOptions()
    post.previous = previous_branch(top, reroll or 1, post.previous)
    post.change_id = change_id(top, branch, post.previous)
    snap = scratch_dir("kvm-refactor-head-")
    try:
        if progress:
            progress(0, len(steps), f"reading {base[:12]} from git", "start")
        result = _make_commits(top, base, snap, rules, steps, names_spec, names, branch,
                               config if build else None, progress, jobs, name, email)
    finally:
        remove_dir(snap)
    git(top, "update-ref", f"refs/heads/{branch}", result.head, "0" * 40)
    try:
        if verify:
            _verify(top, base, branch, names_spec, verify, result, progress)
        record(top, branch, post.change_id, reroll or 1, base)
        if out_path is not None:
            result.patches = format_patches(top, base, branch, out_path, reroll, result, names, post)
    except BaseException:
        delete_branch(top, branch, result.head)
        raise
    return result


def _verify(top: Path, base: str, branch: str, names_spec: str, events: int, result: SeriesResult,
            progress) -> None:
    """Every commit against the base, natively (refactor/verify); the report goes with its step."""
    from refactor.verify.check import verify_branch

    if progress:
        progress(len(result.steps), len(result.steps), f"verifying {branch} ({events} events a step)", "start")
    report = verify_branch(top, base, branch, names=names_spec, events=events)
    by_commit = {r.commit: r for r in report.steps if r.commit}
    for sr in result.steps:
        if sr.commit in by_commit:
            sr.verify = by_commit[sr.commit]
    result.verify_report = report


def build_dirs(top: Path, base: str, config: str = "builtin") -> tuple[Path, Path]:
    """Symlink farm and Kbuild output of a series: one per repository, base commit and --config."""
    key = hashlib.sha1(f"{top.resolve()}\0{base}\0{config}".encode()).hexdigest()[:12]
    return work_dir() / f"series-{key}-src", work_dir() / f"series-{key}-out"


def step_plans(tree: Path, names_spec: str, rules: Rules, steps: list[Step] | None = None, index=None):
    """(k, step, plan) for each step: the tree as the series makes it after steps 1..k.

    The index is read once with the whole refactor's rules: a stage's rules still
    keep the members a later step removes, so an index read with them would find
    the layout "unknown" and plan nothing.
    """
    steps = steps if steps is not None else load_steps(rules)
    index = index if index is not None else build_index(tree, rules)
    for k, step in enumerate(steps, 1):
        yield k, step, plan_rewrite(tree, names_spec, staged(rules, steps, k), index)


def _make_commits(top: Path, base: str, snap: Path, rules: Rules, steps: list[Step], names_spec: str, names,
                  branch: str, build: str | None, progress, jobs: int, name: str, email: str) -> SeriesResult:
    # The rewrite reads HEAD's blobs, never the working tree.
    modes = snapshot(top, base, snap)
    index = build_index(snap, rules)
    if index.layout not in ("old", "mixed"):
        raise SeriesError(f"{top}: layout is {index.layout}; there is nothing to move")
    result = SeriesResult(branch, base)
    result.head = base
    priv = PrivateIndex(top, base)
    touched: set[str] = set()
    parent = base
    parent_tree = git(top, "rev-parse", f"{base}^{{tree}}")
    previous_edits: set = set()
    farm_dir, out_dir = build_dirs(top, base, build or "builtin")
    result.config = build
    plans = step_plans(snap, names_spec, rules, steps, index)
    try:
        for k, step in enumerate(steps, 1):
            if progress:
                progress(k, len(steps), subject_line(step.subject, names), "start")
            _, _, plan = next(plans)
            if plan.humans:
                result.humans = plan.humans
                raise SeriesError(f"step {step.id}: {len(plan.humans)} sites need a human "
                                  f"(first: {plan.humans[0].file}:{plan.humans[0].line}: {plan.humans[0].why})")
            for rel in sorted(touched - set(plan.results)):
                priv.reset_file(base, rel)
            for rel, data in plan.results.items():
                priv.set_file(rel, data, modes.get(rel, "100644"))
            touched |= set(plan.results)
            subject = subject_line(step.subject, names)
            # The rules this step adds: edits the previous step's plan did not have.
            edits = {(e.file, e.start, e.end, e.new, e.rules) for e in plan.edits}
            rule_ids = sorted({r for e in edits - previous_edits for r in e[4]})
            previous_edits = edits
            body = step_body(step.body, step.when, rule_ids)
            tree, commit = priv.commit(parent, commit_message(subject, body, names, name, email))
            if tree == parent_tree:
                result.steps.append(StepResult(step, subject, None, [], []))
                if progress:
                    progress(k, len(steps), subject, "nothing to do for this tree")
                continue
            changed = priv.git("diff-tree", "--no-commit-id", "--name-only", "-r", parent, commit).split()
            sr = StepResult(step, subject, commit, changed, rule_ids)
            if build:
                if progress:
                    progress(k, len(steps), subject, "building")
                farm(top, farm_dir, plan.results)
                sr.build = build_kvm(farm_dir, out_dir, jobs, build)
            result.steps.append(sr)
            if progress:
                progress(k, len(steps), subject, "done" if sr.build is None else
                         (f"built ({sr.build.seconds:.0f} s)" if sr.build.ok else
                          f"build FAILED: {_first_error(sr.build)}"))
            parent, parent_tree = commit, tree
    finally:
        priv.close()
    result.head = parent
    return result


def format_patches(top: Path, base: str, branch: str, outdir: Path, reroll: int | None,
                   result: SeriesResult, names, post: "PostOptions | None" = None) -> list[Path]:
    post = post or PostOptions()
    args = ["--cover-letter", "-o", str(outdir), "--thread=shallow", f"--base={base}"]
    if reroll:
        args += ["-v", str(reroll)]
    if post.subject_prefix:
        args += [f"--subject-prefix={post.subject_prefix}"]
    to, cc = post.to, post.cc
    if to is None or cc is None:
        auto_to, auto_cc = maintainers(top, base, branch)
        to = auto_to if to is None else to
        cc = auto_cc if cc is None else cc
    args += [f"--to={t}" for t in to] + [f"--cc={c}" for c in cc]
    if post.previous:
        args += [f"--range-diff={previous_range(top, post.previous, base)}"]
    out = git(top, "format-patch", *args, f"{base}..{branch}")
    patches = [Path(p) if os.path.isabs(p) else top / p for p in out.split("\n") if p]
    made = [s for s in result.steps if s.commit]
    for path, sr in zip([p for p in patches if not p.name.endswith("0000-cover-letter.patch")], made):
        _rewrite_file(path, add_note(path.read_text(), note(sr.rules, sr.step.id)))
    cover = next((p for p in patches if p.name.endswith("0000-cover-letter.patch")), None)
    if cover is not None:
        log = changelog(top, base, post.previous, branch, reroll or 1) if post.previous else None
        _rewrite_file(cover, fill_cover(cover.read_text(), result, names, cid=post.change_id or "", log=log,
                                        reroll=reroll))
    return patches


def _first_error(build: BuildResult) -> str:
    if build.errors:
        e = build.errors[0]
        return f"{e.file}:{e.line}: {e.message}"
    return build.reason or (build.log_tail.splitlines() or [""])[-1]


def _rewrite_file(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


__all__ = ["SeriesError", "RulesError", "generate", "step_plans"]
