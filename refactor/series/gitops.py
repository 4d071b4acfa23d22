"""Git plumbing for the series: HEAD's tree only, a private index, safe failure.

The series is made from the blobs of the base commit (`git ls-tree`,
`git cat-file`), never from files in the working tree: an untracked or
ignored file next to the KVM sources cannot end up in a commit.  Commits are
written with a private index (GIT_INDEX_FILE) and `commit-tree`, so the
user's checkout and index are never touched; the branch ref is created last,
and removed again if anything after it fails.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from refactor.frontend.source import SCAN_GLOBS, TYPE_ONLY


from refactor.errors import SeriesError  # noqa: E402,F401  (defined there; re-exported here)


# What the rewrite reads: the directories of SCAN_GLOBS, the type-only headers
# and the top Makefile (the tree's version).
def _read_paths() -> list[str]:
    dirs = {g[:g.index("*")].rsplit("/", 1)[0] for g in SCAN_GLOBS}
    return sorted(dirs | set(TYPE_ONLY) | {"Makefile"})


def git(cwd: Path, *args: str, stdin: bytes | None = None, env: dict | None = None) -> str:
    """Run git; a failure is a SeriesError with git's own first line."""
    proc = subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True,
                          env=dict(os.environ, LC_ALL="C", **(env or {})))
    if proc.returncode:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        first = next((line for line in err if line.startswith(("fatal:", "error:"))), err[0] if err else "")
        raise SeriesError(f"git {args[0]} failed in {cwd}: {first.removeprefix('fatal: ')}")
    return proc.stdout.decode(errors="replace").strip()


def open_repo(path: Path) -> tuple[Path, str]:
    """The top of the work tree and the base commit, or one line saying what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise SeriesError(f"{path}: not a git repository (no such directory)")
    proc = subprocess.run(["git", "rev-parse", "--is-bare-repository", "--show-toplevel"], cwd=path,
                          capture_output=True, text=True, env=dict(os.environ, LC_ALL="C"))
    if proc.returncode:
        if "dubious ownership" in proc.stderr:
            raise SeriesError(f"{path}: git refuses a repository owned by another user; if you trust it, "
                              f"run: git config --global --add safe.directory {path.resolve()}")
        raise SeriesError(f"{path}: not a git repository")
    out = proc.stdout.split()
    if out and out[0] == "true":
        raise SeriesError(f"{path}: a bare repository has no tree to rewrite")
    top = Path(out[1])
    head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD^{commit}"], cwd=top,
                          capture_output=True, text=True)
    if head.returncode:
        raise SeriesError(f"{top}: the repository has no commits yet; commit the tree first "
                          "(the series is made from HEAD)")
    base = head.stdout.strip()
    # Tracked files only: untracked files are never read, so they do not matter.
    if git(top, "status", "--porcelain", "--untracked-files=no"):
        raise SeriesError(f"{top}: the git tree has uncommitted changes; commit or stash them first")
    return top, base


def identity(top: Path) -> tuple[str, str]:
    try:
        return git(top, "config", "user.name"), git(top, "config", "user.email")
    except SeriesError:
        raise SeriesError("git user.name and user.email must be set (git config user.name ...; "
                          "git config user.email ...): they sign off the series") from None


def check_branch(top: Path, branch: str) -> None:
    try:
        git(top, "check-ref-format", "--branch", branch)
    except SeriesError:
        raise SeriesError(f"{branch!r} is not a valid branch name") from None
    if subprocess.run(["git", "rev-parse", "--verify", "-q", f"refs/heads/{branch}"], cwd=top,
                      capture_output=True).returncode == 0:
        raise SeriesError(f"branch {branch} already exists; pick another name or delete it")


def snapshot(top: Path, commit: str, dest: Path) -> dict[str, str]:
    """Write the files the rewrite reads, as `commit` has them, under dest.

    Returns each written path's git mode.  Only blobs are written (symlinks
    as symlinks); submodules are skipped.
    """
    listing = git(top, "ls-tree", "-r", "-z", "--full-tree", commit, "--", *_read_paths())
    entries = []
    for item in listing.split("\0"):
        if not item:
            continue
        meta, rel = item.split("\t", 1)
        mode, kind, sha = meta.split()
        if kind == "blob":
            entries.append((rel, mode, sha))
    data = subprocess.run(["git", "cat-file", "--batch"], cwd=top, capture_output=True,
                          input="".join(f"{sha}\n" for _, _, sha in entries).encode()).stdout
    modes, pos = {}, 0
    for rel, mode, sha in entries:
        header_end = data.index(b"\n", pos)
        size = int(data[pos:header_end].split()[2])
        blob = data[header_end + 1:header_end + 1 + size]
        pos = header_end + 1 + size + 1
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if mode == "120000":
            target.symlink_to(blob.decode(errors="replace"))
        else:
            target.write_bytes(blob)
        modes[rel] = mode
    return modes


class PrivateIndex:
    """Commits built with a temporary index: the checkout and its index stay as they were."""

    def __init__(self, top: Path, base: str):
        self.top = top
        fd, self.path = tempfile.mkstemp(prefix="kvm-refactor-index-")
        os.close(fd)
        os.unlink(self.path)
        self.env = {"GIT_INDEX_FILE": self.path}
        self.git("read-tree", base)

    def git(self, *args: str, stdin: bytes | None = None) -> str:
        return git(self.top, *args, stdin=stdin, env=self.env)

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


_PATCH_NAME = re.compile(r"^(v\d+-)?\d{4}-.*\.patch$")


def prepare_outdir(outdir: str | Path, force: bool) -> Path:
    """--outdir, relative to the current directory; refused if it holds patches unless force.

    With force, the old patch files there are removed (a shorter new series
    must not leave the tail of the old one behind); other files are kept.
    """
    out = Path(outdir).expanduser()
    out = out if out.is_absolute() else Path.cwd() / out
    if out.exists() and not out.is_dir():
        raise SeriesError(f"--outdir {outdir}: exists and is not a directory")
    old = sorted(p for p in out.iterdir() if _PATCH_NAME.match(p.name)) if out.is_dir() else []
    if old and not force:
        raise SeriesError(f"--outdir {outdir}: already holds {len(old)} patch files (e.g. {old[0].name}); "
                          "use another directory or --force to replace them")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".kvm-refactor-probe-")
        probe.close()
    except OSError as exc:
        raise SeriesError(f"--outdir {outdir}: cannot write there ({exc.strerror})") from None
    for p in old:
        p.unlink()
    return out


def delete_branch(top: Path, branch: str, commit: str) -> None:
    """Undo the branch this run created (only if it still points where we put it)."""
    subprocess.run(["git", "update-ref", "-d", f"refs/heads/{branch}", commit], cwd=top, capture_output=True)
    for key in ("kvm-refactor-change-id", "kvm-refactor-version", "kvm-refactor-base"):
        subprocess.run(["git", "config", "--unset", f"branch.{branch}.{key}"], cwd=top, capture_output=True)


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
