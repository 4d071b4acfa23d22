"""The rewrite as a bisectable patch series on a git branch, ready to post.

Each step of rules/steps.toml becomes one commit whose tree is the rewrite of
the base with the rules in force up to that step.  Commits are made with a
private index (GIT_INDEX_FILE) and plumbing, so the user's checkout and
index are never touched; the branch is created from HEAD at the end.  Then
`git format-patch` writes the series with a cover letter.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import git

from refactor.kernel.build import BuildResult, build_kvm, farm, work_dir
from refactor.index.indexer import build_index
from refactor.plan.rewrite import plan_rewrite
from refactor.rules import Rules, RulesError, Step, load_rules, load_steps, staged


class SeriesError(ValueError):
    """Something the user must fix first (dirty tree, no identity, branch exists...)."""


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


def _identity(repo: git.Repo) -> tuple[str, str]:
    reader = repo.config_reader()
    try:
        name = reader.get_value("user", "name")
        email = reader.get_value("user", "email")
    except Exception:  # configparser raises several kinds for a missing option
        raise SeriesError("git user.name and user.email must be set (git config user.name ...; "
                          "git config user.email ...): they sign off the series") from None
    return str(name), str(email)


def open_repo(path: Path) -> git.Repo:
    try:
        repo = git.Repo(path)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise SeriesError(f"{path}: not a git repository") from None
    if repo.bare:
        raise SeriesError(f"{path}: a bare repository has no tree to rewrite")
    if repo.is_dirty(untracked_files=False):
        raise SeriesError(f"{path}: the git tree has uncommitted changes; commit or stash them first")
    return repo


def _fill(text: str, rules: Rules, names) -> str:
    return text.replace("{gva}", names.gva).replace("{ngpa}", names.ngpa)


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


class _PrivateIndex:
    """Commits built with a temporary index: the checkout and its index stay as they were."""

    def __init__(self, repo: git.Repo, base: str):
        self.repo = repo
        fd, self.path = tempfile.mkstemp(prefix="kvm-refactor-index-")
        os.close(fd)
        os.unlink(self.path)
        self.env = {"GIT_INDEX_FILE": self.path}
        self.git("read-tree", base)

    def git(self, *args, stdin: bytes | None = None) -> str:
        env = dict(os.environ, **self.env)
        proc = subprocess.run(["git", *args], cwd=self.repo.working_tree_dir, env=env, input=stdin,
                              capture_output=True)
        if proc.returncode:
            raise SeriesError(f"git {args[0]} failed: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout.decode().strip()

    def set_file(self, rel: str, data: bytes, mode: str = "100644") -> None:
        blob = self.git("hash-object", "-w", "--stdin", stdin=data)
        self.git("update-index", "--add", "--cacheinfo", f"{mode},{blob},{rel}")

    def reset_file(self, base: str, rel: str) -> None:
        """Back to the base version (a later step undid an earlier change)."""
        mode, _kind, sha = self.git("ls-tree", base, "--", rel).split("\t")[0].split()
        self.git("update-index", "--add", "--cacheinfo", f"{mode},{sha},{rel}")

    def commit(self, parent: str, message: str) -> tuple[str, str]:
        tree = self.git("write-tree")
        return tree, self.git("commit-tree", tree, "-p", parent, "-F", "-", stdin=message.encode())

    def close(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)


def generate(repo_path: str | Path, names_spec: str, branch: str, outdir: str | Path | None,
             build: bool = False, reroll: int | None = None, progress=None, rules: Rules | None = None,
             jobs: int = 2) -> SeriesResult:
    rules = rules or load_rules()
    repo = open_repo(Path(repo_path))
    name, email = _identity(repo)
    if branch in [h.name for h in repo.heads]:
        raise SeriesError(f"branch {branch} already exists; pick another name or delete it")
    try:
        repo.git.check_ref_format("--branch", branch)
    except git.GitCommandError:
        raise SeriesError(f"{branch!r} is not a valid branch name") from None
    steps = load_steps(rules)
    names = rules.names(names_spec)
    root = Path(repo.working_tree_dir)
    base = repo.head.commit.hexsha
    index = build_index(root, rules)
    if index.layout not in ("old", "mixed"):
        raise SeriesError(f"{root}: layout is {index.layout}; there is nothing to move")
    result = SeriesResult(branch, base)
    priv = _PrivateIndex(repo, base)
    touched: set[str] = set()
    parent = base
    parent_tree = repo.head.commit.tree.hexsha
    previous_edits: set = set()
    farm_dir = work_dir() / f"series-{branch.replace('/', '_')}-src"
    out_dir = work_dir() / f"series-{branch.replace('/', '_')}-out"
    try:
        for k, step in enumerate(steps, 1):
            plan = plan_rewrite(root, names_spec, staged(rules, steps, k), index)
            if plan.humans:
                result.humans = plan.humans
                raise SeriesError(f"step {step.id}: {len(plan.humans)} sites need a human "
                                  f"(first: {plan.humans[0].file}:{plan.humans[0].line}: {plan.humans[0].why})")
            for rel in sorted(touched - set(plan.results)):
                priv.reset_file(base, rel)
            for rel, data in plan.results.items():
                mode = oct((root / rel).stat().st_mode & 0o777)
                priv.set_file(rel, data, "100755" if mode.endswith("755") else "100644")
            touched |= set(plan.results)
            subject = _fill(step.subject, rules, names)
            # The rules this step adds: edits the previous step's plan did not have.
            edits = {(e.file, e.start, e.end, e.new, e.rule) for e in plan.edits}
            rule_ids = sorted({r for e in edits - previous_edits for r in e[4].split(",")})
            previous_edits = edits
            tree, commit = priv.commit(parent, _message(subject, _fill(step.body, rules, names), rule_ids,
                                                        step, name, email))
            if tree == parent_tree:
                result.steps.append(StepResult(step, subject, None, [], []))
                if progress:
                    progress(k, len(steps), subject, "nothing to do for this tree")
                continue
            changed = priv.git("diff-tree", "--no-commit-id", "--name-only", "-r", parent, commit).split()
            sr = StepResult(step, subject, commit, changed, rule_ids)
            if build:
                farm(root, farm_dir, plan.results)
                sr.build = build_kvm(farm_dir, out_dir, jobs)
            result.steps.append(sr)
            if progress:
                progress(k, len(steps), subject, None if sr.build is None else
                         ("ok" if sr.build.ok else "FAILED"))
            parent, parent_tree = commit, tree
    finally:
        priv.close()
    repo.git.update_ref(f"refs/heads/{branch}", parent, "0" * 40)
    if outdir is not None:
        result.patches = format_patches(repo, base, branch, Path(outdir), reroll, result, names)
    return result


def format_patches(repo: git.Repo, base: str, branch: str, outdir: Path, reroll: int | None,
                   result: SeriesResult, names) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    args = ["--cover-letter", "-o", str(outdir), "--thread=shallow"]
    if reroll:
        args += ["-v", str(reroll)]
    out = repo.git.format_patch(*args, f"{base}..{branch}")
    patches = [Path(p) if os.path.isabs(p) else Path(repo.working_tree_dir) / p for p in out.split()]
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
