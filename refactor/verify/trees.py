"""The trees `verify` executes: the pristine tree, its rewrite, or each commit of a branch.

Nothing is written into the user's tree: a rewrite or a commit is a symlink
farm of the base tree (refactor.kernel.build.farm) whose changed files are
real files.  A branch's commits are read with git plumbing (`git diff
--name-status`, `git cat-file --batch`), so the checkout is not touched.
"""
from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from refactor.errors import VerifyError  # noqa: F401  (re-exported: bad input, exit 2)
from refactor.kernel.build import farm, work_dir


@dataclass
class Variant:
    """One tree to execute next to the pristine one."""

    name: str                       # "rewrite", or the commit's subject
    src: Path                       # the tree to build (a farm, or the base itself)
    commit: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)      # rel -> content differing from base
    originals: dict[str, bytes] = field(default_factory=dict)  # rel -> base content
    plan: object | None = None      # refactor.plan.rewrite.Plan when the variant is a rewrite
    deleted: set[str] = field(default_factory=set)             # rel deleted relative to base


def verify_root() -> Path:
    return work_dir().parent / "verify"


def _key(*parts: str) -> str:
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:12]


def make_farm(base: Path, label: str, files: dict[str, bytes], deleted: set[str] = frozenset()) -> Path:
    dest = verify_root() / f"{_key(str(base.resolve()), label)}-farm"
    # A farm is reused for many trees (steps, mutants): a file once written stays a real
    # file, with the base's content when this tree does not change it.  Relinked to the
    # base it would be older than the build's outputs, and Kbuild compares times.
    ever_path = dest / ".kvm-refactor-ever-written"
    ever = set(ever_path.read_text().split("\n")) - {""} if ever_path.exists() else set()
    files = dict(files)
    for rel in ever - set(files) - set(deleted):
        if (base / rel).is_file():
            files[rel] = (base / rel).read_bytes()
    out = farm(base, dest, files)
    ever_path.write_text("\n".join(sorted(ever | set(files))))
    marker = dest / ".kvm-refactor-deleted"
    before = set(marker.read_text().split("\n")) - {""} if marker.exists() else set()
    for rel in before - set(deleted):       # deleted by an earlier commit, present now
        if not (dest / rel).exists() and (base / rel).exists():
            (dest / rel).symlink_to(base.resolve() / rel)
    for rel in deleted:
        target = dest / rel
        if target.is_symlink() or target.exists():
            target.unlink()
    marker.write_text("\n".join(sorted(deleted)))
    return out


def check_tree(tree: Path) -> Path:
    tree = Path(tree)
    if not tree.is_dir():
        raise VerifyError(f"{tree}: no such directory")
    if not (tree / "Makefile").exists() or not (tree / "arch" / "x86" / "kvm").is_dir():
        raise VerifyError(f"{tree}: not a full kernel tree with arch/x86/kvm (get one with "
                          "`kvm-refactor fetch-tree VERSION --full`)")
    return tree


def rewrite_variant(tree: Path, names: str = "upstream", rules=None) -> Variant:
    """The one-shot rewrite of `tree` under `rules`, as a farm."""
    from refactor.frontend.source import TreeError
    from refactor.index.indexer import build_index
    from refactor.plan.rewrite import cached_plan, plan_rewrite
    from refactor.rules import RulesError

    try:
        if rules is None:
            plan = cached_plan(tree, names)
        else:
            plan = plan_rewrite(tree, names, rules, build_index(tree, rules))
    except (TreeError, RulesError) as exc:
        raise VerifyError(str(exc)) from None
    digest = hashlib.sha1()
    for rel in sorted(plan.results):
        digest.update(rel.encode() + b"\0" + plan.results[rel])
    label = "rewrite-" + digest.hexdigest()[:12]
    src = make_farm(tree, "rewrite", plan.results) if plan.results else tree
    return Variant(f"rewrite ({names})" if rules is None else f"rewrite {label[8:]}", src,
                   files=dict(plan.results), originals=dict(plan.originals), plan=plan)


# -- branches --------------------------------------------------------------------------------

def git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(["git", *args], cwd=repo, input=stdin, capture_output=True)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise VerifyError(f"{repo}: git {' '.join(args[:3])}: {msg[-1] if msg else 'failed'}")
    return proc.stdout


def _blobs(repo: Path, specs: list[str]) -> list[bytes]:
    """Contents of `commit:path` objects, in one `git cat-file --batch`."""
    if not specs:
        return []
    out = git(repo, "cat-file", "--batch", stdin="".join(s + "\n" for s in specs).encode())
    blobs, pos = [], 0
    for spec in specs:
        nl = out.index(b"\n", pos)
        header = out[pos:nl].split()
        if len(header) < 3 or header[1] != b"blob":
            raise VerifyError(f"{repo}: {spec}: not a file")
        size = int(header[2])
        blobs.append(out[nl + 1:nl + 1 + size])
        pos = nl + 1 + size + 1
    return blobs


def _changes(repo: Path, a: str, b: str | None) -> tuple[list[str], set[str]]:
    """(paths b has with other content than a, paths a has and b lacks); b None: the
    working tree, compared as the files of `a` would have to be restored."""
    args = ["diff", "--no-renames", "--name-status", "-z", a] + ([b] if b else [])
    parts = git(repo, *args).split(b"\0")
    changed, missing = [], set()
    for status, path in zip(parts[0::2], parts[1::2]):
        rel = path.decode()
        if b is None:   # a -> worktree: "A" is a path base lacks, "D" one base has
            (missing.add(rel) if status.startswith(b"A") else changed.append(rel))
        else:
            (missing.add(rel) if status.startswith(b"D") else changed.append(rel))
    return changed, missing


def _git_dir_elsewhere(repo: Path) -> bool:
    """Whether git takes `repo` as the top of a work tree whose repository is kept
    elsewhere (GIT_DIR, core.worktree): the tests' clones of the shared full trees."""
    if not repo.is_dir():
        return False
    proc = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=repo, capture_output=True,
                          text=True)
    return proc.returncode == 0 and Path(proc.stdout.strip()).resolve() == repo.resolve()


def base_tree(repo: Path, base: str) -> tuple[Path, str]:
    """(a tree whose files are `base`'s, base sha): the checkout itself when it matches."""
    repo = Path(repo)
    if not (repo / ".git").exists() and not _git_dir_elsewhere(repo):
        raise VerifyError(f"{repo}: not a git repository (--branch needs one)")
    try:
        sha = git(repo, "rev-parse", "--verify", "-q", base + "^{commit}").decode().strip()
    except VerifyError:
        raise VerifyError(f"{repo}: no commit {base!r}") from None
    restore, extra = _changes(repo, sha, None)
    if not restore and not extra:
        return repo, sha
    files = dict(zip(restore, _blobs(repo, [f"{sha}:{p}" for p in restore])))
    return make_farm(repo, f"base-{sha}", files, extra), sha


def branch_variants(repo: Path, base: str, branch: str) -> tuple[Path, str, list[Variant]]:
    """(base tree, base sha, one Variant per commit of base..branch, oldest first)."""
    repo = Path(repo)
    tree, sha = base_tree(repo, base)
    try:
        commits = git(repo, "rev-list", "--reverse", "--first-parent", f"{sha}..{branch}").split()
    except VerifyError:
        raise VerifyError(f"{repo}: no branch {branch!r}") from None
    if not commits:
        raise VerifyError(f"{repo}: {branch} has no commits on top of {base}")
    variants = []
    for c in (c.decode() for c in commits):
        subject = git(repo, "log", "-1", "--format=%s", c).decode().strip()
        changed, deleted = _changes(repo, sha, c)
        files = dict(zip(changed, _blobs(repo, [f"{c}:{p}" for p in changed])))
        originals = {p: (tree / p).read_bytes() for p in changed if (tree / p).is_file()}
        variants.append(Variant(subject, tree, c, files, originals, deleted=deleted))
    return tree, sha, variants


def materialise(base: Path, variant: Variant, label: str, others: list[Variant] = ()) -> Path:
    """Turn the farm `label` into the tree of `variant`.

    Steps share one farm, materialised in turn right before each engine build
    (one `cp -as` and one Kbuild configuration per branch, not per step).  A
    file that another step changes is a real file here too, with the base's
    content: a file going back to the base would otherwise become a symlink
    to an older file, and Kbuild, which compares times, would keep the
    previous step's preprocessed output.
    """
    files = dict(variant.files)
    for other in others:
        for rel in set(other.files) | other.deleted:
            if rel not in files and rel not in variant.deleted and (base / rel).is_file():
                files[rel] = (base / rel).read_bytes()
    variant.src = make_farm(base, label, files, variant.deleted)
    return variant.src
