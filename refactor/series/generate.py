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
from refactor.series.gitops import (PrivateIndex, SeriesError, check_branch, delete_branch, git, identity,
                                    open_repo, prepare_outdir, remove_dir, scratch_dir, snapshot)


@dataclass
class StepResult:
    step: Step
    subject: str
    commit: str | None  # None: nothing to do for this tree
    files: list[str]
    rules: list[str]
    build: BuildResult | None = None


@dataclass
class SeriesResult:
    branch: str
    base: str
    steps: list[StepResult] = field(default_factory=list)
    patches: list[Path] = field(default_factory=list)
    humans: list = field(default_factory=list)
    head: str = ""  # the last commit (the branch's tip once created)


def _message(subject: str, body: str, rule_ids: list[str], step: Step, name: str, email: str) -> str:
    trailer = f"Generated from step '{step.id}' of rules/steps.toml"
    if rule_ids:
        trailer += f"; rules applied: {', '.join(rule_ids)}"
    trailer += "."
    wrapped = _wrap(trailer, 72)
    return f"{subject}\n\n{body}\n\n{wrapped}\n\nSigned-off-by: {name} <{email}>\n"


def _wrap(text: str, width: int) -> str:
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    lines.append(cur)
    return "\n".join(lines)


def generate(repo_path: str | Path, names_spec: str, branch: str, outdir: str | Path | None,
             build: bool = False, reroll: int | None = None, progress=None, rules: Rules | None = None,
             jobs: int = 2, force: bool = False) -> SeriesResult:
    rules = rules or load_rules()
    top, base = open_repo(Path(repo_path))
    name, email = identity(top)
    check_branch(top, branch)
    steps = load_steps(rules)
    names = rules.names(names_spec)
    # Checked before any work: a bad --outdir must not cost a whole series.
    out_path = prepare_outdir(outdir, force) if outdir is not None else None
    snap = scratch_dir("kvm-refactor-head-")
    try:
        result = _make_commits(top, base, snap, rules, steps, names_spec, names, branch, build, progress,
                               jobs, name, email)
    finally:
        remove_dir(snap)
    git(top, "update-ref", f"refs/heads/{branch}", result.head, "0" * 40)
    try:
        if out_path is not None:
            result.patches = format_patches(top, base, branch, out_path, reroll, result, names)
    except BaseException:
        delete_branch(top, branch, result.head)
        raise
    return result


def build_dirs(top: Path, base: str) -> tuple[Path, Path]:
    """Symlink farm and Kbuild output of a series: one per repository and base commit."""
    key = hashlib.sha1(f"{top.resolve()}\0{base}".encode()).hexdigest()[:12]
    return work_dir() / f"series-{key}-src", work_dir() / f"series-{key}-out"


def _make_commits(top: Path, base: str, snap: Path, rules: Rules, steps: list[Step], names_spec: str, names,
                  branch: str, build: bool, progress, jobs: int, name: str, email: str) -> SeriesResult:
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
    farm_dir, out_dir = build_dirs(top, base)
    try:
        for k, step in enumerate(steps, 1):
            plan = plan_rewrite(snap, names_spec, staged(rules, steps, k), index)
            if plan.humans:
                result.humans = plan.humans
                raise SeriesError(f"step {step.id}: {len(plan.humans)} sites need a human "
                                  f"(first: {plan.humans[0].file}:{plan.humans[0].line}: {plan.humans[0].why})")
            for rel in sorted(touched - set(plan.results)):
                priv.reset_file(base, rel)
            for rel, data in plan.results.items():
                priv.set_file(rel, data, modes.get(rel, "100644"))
            touched |= set(plan.results)
            subject = names.fill(step.subject)
            # The rules this step adds: edits the previous step's plan did not have.
            edits = {(e.file, e.start, e.end, e.new, e.rules) for e in plan.edits}
            rule_ids = sorted({r for e in edits - previous_edits for r in e[4]})
            previous_edits = edits
            tree, commit = priv.commit(parent, _message(subject, names.fill(step.body), rule_ids,
                                                        step, name, email))
            if tree == parent_tree:
                result.steps.append(StepResult(step, subject, None, [], []))
                if progress:
                    progress(k, len(steps), subject, "nothing to do for this tree")
                continue
            changed = priv.git("diff-tree", "--no-commit-id", "--name-only", "-r", parent, commit).split()
            sr = StepResult(step, subject, commit, changed, rule_ids)
            if build:
                farm(top, farm_dir, plan.results)
                sr.build = build_kvm(farm_dir, out_dir, jobs)
            result.steps.append(sr)
            if progress:
                progress(k, len(steps), subject, None if sr.build is None else
                         ("ok" if sr.build.ok else "FAILED"))
            parent, parent_tree = commit, tree
    finally:
        priv.close()
    result.head = parent
    return result


def format_patches(top: Path, base: str, branch: str, outdir: Path, reroll: int | None,
                   result: SeriesResult, names) -> list[Path]:
    args = ["--cover-letter", "-o", str(outdir), "--thread=shallow"]
    if reroll:
        args += ["-v", str(reroll)]
    out = git(top, "format-patch", *args, f"{base}..{branch}")
    patches = [Path(p) if os.path.isabs(p) else top / p for p in out.split("\n") if p]
    cover = next((p for p in patches if p.name.endswith("0000-cover-letter.patch")), None)
    if cover is not None:
        _fill_cover(cover, result, names)
    return patches


def _fill_cover(cover: Path, result: SeriesResult, names) -> None:
    text = cover.read_text()
    made = [s for s in result.steps if s.commit]
    subject = f"KVM: x86/mmu: split struct kvm_pagewalk out of struct kvm_mmu ({names.gva}, {names.ngpa})"
    lines = [
        "struct kvm_mmu walks the guest's page tables, builds shadow/TDP page",
        "tables and checks the format of its SPTEs.  This series moves the first",
        "job to a new struct kvm_pagewalk, with two walkers in struct",
        f"kvm_vcpu_arch: {names.gva} (the CR0/CR3/CR4 page tables of the level",
        f"that runs, which walk_mmu used to point to) and {names.ngpa} (L1's",
        "EPT/NPT tables, the L2 GPA -> L1 GPA stage).  walk_mmu and nested_mmu",
        "go away; struct rsvd_bits_validate becomes struct kvm_page_format.",
        "",
        "Every patch is generated from declarative rules by kvm-refactor, one",
        "step of rules/steps.toml each; the last tree is the tool's one-shot",
        "rewrite.",
        "",
    ]
    skipped = [s for s in result.steps if not s.commit]
    if skipped:
        lines += ["Steps with nothing to do on this tree: " + ", ".join(s.step.id for s in skipped) + ".", ""]
    built = [s for s in made if s.build is not None]
    if built:
        lines.append("Validation: arch/x86/kvm/ built with Kbuild (defconfig, KVM, KVM_INTEL,")
        lines.append("KVM_AMD, CONFIG_WERROR as defconfig sets it) after each patch:")
        for i, s in enumerate(built, 1):
            state = "ok" if s.build.ok else f"FAILED: {s.build.errors[0].message if s.build.errors else ''}"
            lines.append(f"  {i}/{len(made)} {state} ({s.build.seconds:.0f} s)")
    else:
        lines.append("Validation: every step planned with no site left for a human; build each")
        lines.append("step with `kvm-refactor series --build` or `kvm-refactor build-check`.")
    text = text.replace("*** SUBJECT HERE ***", subject)
    text = text.replace("*** BLURB HERE ***", "\n".join(lines))
    tmp = cover.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, cover)


__all__ = ["SeriesError", "RulesError", "generate"]
