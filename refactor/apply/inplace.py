"""All-or-nothing `rewrite --in-place`: check every file, then write, then rename, with a journal.

1. Pre-checks, before anything is written: each target is a regular file
   inside the tree, reached through no symlink, readable and writable (its
   directory too, for the renames), still holding the bytes the plan was made
   from; in a git work tree the repository has a commit and every target is
   tracked (git is what restores them).
2. The journal (JOURNAL at the tree root) is written first, naming every
   temporary file; then each new content goes to `.NAME.kvm-refactor-new`
   beside its target (fsync), and each old file gets a hard link
   `.NAME.kvm-refactor-old`.
3. The journal is rewritten with state "commit": the commit point.
4. Each temporary file is renamed over its target (atomic per file),
   directories are fsynced, backups and the journal removed.

A run killed before the commit point leaves the old tree plus stray files
the journal names: the next run removes them (roll back).  A run killed
after it leaves a journal in state "commit": the next run finishes the
renames (roll forward).  Either way the tree is the old one or the new one.

KVM_REFACTOR_FAULT_AFTER_WRITES=K makes the process die (os._exit) right
after its K-th write; the tests use it to kill a run at every write point.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from refactor.errors import TreeError

JOURNAL = ".kvm-refactor-journal.json"
NEW_SUFFIX = ".kvm-refactor-new"
OLD_SUFFIX = ".kvm-refactor-old"
JOURNAL_VERSION = 1
FAULT_ENV = "KVM_REFACTOR_FAULT_AFTER_WRITES"


class _Faults:
    """Counts write points; dies after the K-th when the test hook asks for it."""

    def __init__(self) -> None:
        raw = os.environ.get(FAULT_ENV, "")
        self.limit = int(raw) if raw.isdigit() else None
        self.count = 0

    def point(self) -> None:
        self.count += 1
        if self.limit is not None and self.count >= self.limit:
            os._exit(137)  # as SIGKILL would: no cleanup, no finally blocks


@dataclass
class Target:
    rel: str
    path: Path
    new: bytes

    @property
    def tmp(self) -> Path:
        return self.path.with_name(f".{self.path.name}{NEW_SUFFIX}")

    @property
    def backup(self) -> Path:
        return self.path.with_name(f".{self.path.name}{OLD_SUFFIX}")


@dataclass
class Outcome:
    written: int
    recovered: str | None = None  # "rolled back" / "completed" when an interrupted run was found


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- git -----------------------------------------------------------------------------------

def _git(tree: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, env=env)


def _git_fatal(proc: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    fatal = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
    return (fatal or lines or [f"git exited {proc.returncode}"])[0]


def git_toplevel(tree: Path) -> Path | None:
    """The work tree `tree` is in, None when it is in none; TreeError when git refuses it."""
    proc = _git(tree, "rev-parse", "--show-toplevel")
    if proc.returncode == 0:
        return Path(proc.stdout.decode("utf-8", "surrogateescape").strip())
    msg = _git_fatal(proc)
    if "not a git repository" in msg:
        return None
    if "No such file" in msg or "cannot change to" in msg:
        raise TreeError(f"{tree}: not a directory")
    raise TreeError(f"{tree}: git refuses this repository: {msg}")


def check_git(tree: Path, rels: list[str], dirty_check: bool = True) -> None:
    """In a git work tree: a commit exists, nothing uncommitted, every target tracked."""
    top = git_toplevel(tree)
    if top is None:
        return
    if _git(tree, "rev-parse", "--verify", "-q", "HEAD").returncode != 0:
        raise TreeError(f"{tree}: the git repository has no commits: git could not restore the files; "
                        "commit the tree first")
    if dirty_check:
        st = _git(tree, "status", "--porcelain", "--untracked-files=no", "-z")
        if st.returncode != 0:
            raise TreeError(f"{tree}: git status failed: {_git_fatal(st)}")
        if st.stdout.strip(b"\0"):
            raise TreeError(f"{tree}: the git tree has uncommitted changes; commit or stash them first")
    if not rels:
        return
    prefix = Path(os.path.relpath(Path(tree).resolve(), top.resolve()))
    wanted = {(prefix / rel).as_posix().removeprefix("./"): rel for rel in rels}
    ls = _git(top, "ls-files", "-z", "--full-name", "--", *[f":(literal){p}" for p in wanted])
    if ls.returncode != 0:
        raise TreeError(f"{tree}: git ls-files failed: {_git_fatal(ls)}")
    tracked = set(ls.stdout.decode("utf-8", "surrogateescape").split("\0"))
    untracked = [rel for path, rel in wanted.items() if path not in tracked]
    if untracked:
        more = f" (and {len(untracked) - 1} more)" if len(untracked) > 1 else ""
        raise TreeError(f"{Path(tree) / untracked[0]}: not tracked by git{more}; git could not restore it, "
                        "so it is not rewritten in place")


# ---- pre-checks ----------------------------------------------------------------------------

def _through_symlink(root: Path, rel: str) -> Path | None:
    """The first component of root/rel that is a symlink, if any."""
    cur = root
    for part in Path(rel).parts:
        cur = cur / part
        if cur.is_symlink():
            return cur
    return None


def precheck(tree: Path, results: dict[str, bytes], originals: dict[str, bytes]) -> list[Target]:
    """Every reason the write could fail or damage something, found before the first write."""
    tree = Path(tree)
    real_root = tree.resolve()
    targets = []
    for rel in sorted(results):
        path = tree / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise TreeError(f"{rel}: not a path inside the tree")
        link = _through_symlink(tree, rel)
        if link is not None:
            raise TreeError(f"{link}: symbolic link on the way to {rel}; not rewritten in place "
                            f"(it points to {os.path.realpath(link)})")
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise TreeError(f"{path}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise TreeError(f"{path}: not a regular file")
        if not path.resolve().is_relative_to(real_root):
            raise TreeError(f"{path}: outside the tree")
        for what, p, mode in (("read", path, os.R_OK), ("write", path, os.W_OK),
                              ("write in the directory of", path.parent, os.W_OK | os.X_OK)):
            if not os.access(p, mode):
                raise TreeError(f"{path}: cannot {what} it (permissions or a read-only file system)")
        try:
            current = path.read_bytes()
        except OSError as exc:
            raise TreeError(f"{path}: cannot read: {exc.strerror}") from None
        if rel in originals and current != originals[rel]:
            at = current.find(b"\0")
            if at >= 0:
                line = current.count(b"\n", 0, at) + 1
                raise TreeError(f"{path}:{line}: NUL byte in a source file; "
                                "it is read as binary and not rewritten")
            raise TreeError(f"{path}: changed since it was read; run again")
        for p in (Target(rel, path, b"").tmp, Target(rel, path, b"").backup):
            if os.path.lexists(p):
                raise TreeError(f"{p}: exists (left by an interrupted run without its journal?); remove it")
        targets.append(Target(rel, path, results[rel]))
    if os.path.lexists(tree / JOURNAL):
        raise TreeError(f"{tree / JOURNAL}: an interrupted in-place rewrite's journal is still here")
    if targets:
        check_git(tree, [t.rel for t in targets])
    return targets


# ---- the journal ---------------------------------------------------------------------------

def _write_journal(tree: Path, state: str, targets: list[Target], old: dict[str, str], faults: _Faults) -> None:
    doc = {"tool": "kvm-refactor rewrite --in-place", "version": JOURNAL_VERSION, "state": state,
           "files": [{"rel": t.rel, "old_sha256": old.get(t.rel), "new_sha256": _sha(t.new)} for t in targets]}
    path = tree / JOURNAL
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(tree)
    faults.point()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_journal(tree: Path) -> dict | None:
    path = tree / JOURNAL
    if not os.path.lexists(path):
        stale = tree / (JOURNAL + ".tmp")
        if os.path.lexists(stale):
            os.unlink(stale)  # killed while writing the first journal: nothing else was written
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != JOURNAL_VERSION or doc.get("state") not in ("prepare", "commit"):
            raise ValueError("unknown version or state")
        files = [(f["rel"], f["new_sha256"]) for f in doc["files"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise TreeError(f"{path}: unreadable journal of an interrupted rewrite ({type(exc).__name__}); "
                        "inspect the tree, then remove it") from None
    for rel, _ in files:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise TreeError(f"{path}: names {rel!r}, not a path inside the tree")
    return doc


def recover(tree: Path) -> str | None:
    """Finish or undo an interrupted in-place rewrite of `tree`; what was done, or None."""
    tree = Path(tree)
    doc = _read_journal(tree)
    if doc is None:
        return None
    targets = [Target(f["rel"], tree / f["rel"], b"") for f in doc["files"]]
    if doc["state"] == "prepare":
        for t in targets:
            for p in (t.tmp, t.backup):
                if os.path.lexists(p):
                    os.unlink(p)
        os.unlink(tree / JOURNAL)
        return "rolled back"
    # Commit point passed: every new file was complete and fsynced; finish the renames.
    for t, f in zip(targets, doc["files"]):
        if os.path.lexists(t.tmp):
            if _sha(t.tmp.read_bytes()) != f["new_sha256"]:
                raise TreeError(f"{t.tmp}: does not hold what the journal says; inspect the tree, then remove "
                                f"{tree / JOURNAL}")
            os.replace(t.tmp, t.path)
        elif _sha(t.path.read_bytes()) != f["new_sha256"]:
            raise TreeError(f"{t.path}: neither old nor new content is where the journal says; inspect the tree")
    for t in targets:
        _fsync_dir(t.path.parent)
    for t in targets:
        if os.path.lexists(t.backup):
            os.unlink(t.backup)
    os.unlink(tree / JOURNAL)
    return "completed"


# ---- the write -----------------------------------------------------------------------------

def write_all(tree: Path, targets: list[Target]) -> int:
    """Write every target or none (see the module docstring)."""
    tree = Path(tree)
    faults = _Faults()
    old = {t.rel: _sha(t.path.read_bytes()) for t in targets}
    _write_journal(tree, "prepare", targets, old, faults)
    try:
        for t in targets:
            mode = t.path.stat().st_mode & 0o7777
            fd = os.open(t.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(t.new)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(t.tmp, mode)
            faults.point()
            try:
                os.link(t.path, t.backup)
            except OSError:  # a file system without hard links: a copy does as well
                t.backup.write_bytes(t.path.read_bytes())
            faults.point()
        for d in {t.path.parent for t in targets}:
            _fsync_dir(d)
    except OSError as exc:
        recover(tree)  # still before the commit point: this rolls back
        raise TreeError(f"{getattr(exc, 'filename', None) or tree}: {exc.strerror}; nothing was changed") from None
    _write_journal(tree, "commit", targets, old, faults)
    for t in targets:
        os.replace(t.tmp, t.path)
        faults.point()
    for d in {t.path.parent for t in targets}:
        _fsync_dir(d)
    for t in targets:
        os.unlink(t.backup)
        faults.point()
    os.unlink(tree / JOURNAL)
    _fsync_dir(tree)
    faults.point()
    return len(targets)


def rewrite_in_place(tree: Path, results: dict[str, bytes], originals: dict[str, bytes]) -> Outcome:
    targets = precheck(tree, results, originals)
    return Outcome(write_all(tree, targets))
