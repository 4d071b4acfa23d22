"""Pruning the native engine cache (build.py's cache_root(): engines, objects, units, Kbuild).

Every entry's modification time is its last use: build() touches what it finds in the
cache (touch()), so an entry's age is how long no build has needed it.  A prune removes
what is older than a maximum age, then, oldest first, what exceeds a size cap, and always
what only an earlier layout of the cache holds (`out/`, engine directories that kept the
unit texts beside the engine, work directories of builds that are gone).

Other runs may be using the cache at the same time, so nothing in use is removed: a build
holds a shared lock for its whole run (using()) and a prune takes the lock exclusively
(after a build it skips instead of waiting); an entry used in the last GRACE seconds, or
whose engine a running process executes, is kept whatever its age or the cap says.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

LOCK = "prune.lock"
STAMP = "last-prune"
# What build() after a build prunes, unless the environment says otherwise.
MAX_AGE_ENV, MAX_SIZE_ENV = "KVM_REFACTOR_NATIVE_MAX_AGE", "KVM_REFACTOR_NATIVE_MAX_SIZE"
DEFAULT_MAX_AGE_DAYS = 30.0
DEFAULT_MAX_SIZE = "4G"
AUTO_INTERVAL = 24 * 3600   # seconds between prunes after builds: a prune walks the cache
GRACE = 3600                # seconds: an entry used this recently may be in a concurrent run's hands
# Directories of entries (one file or directory each) and of earlier layouts (nothing reads them).
ENTRY_DIRS = ("engines", "units", "objs", "prep", "shipped")
STALE_DIRS = ("out",)


class CacheError(RuntimeError):
    """A bad prune request (a size that does not parse); the message is one line."""


@dataclass
class Entry:
    path: Path
    kind: str           # engines, units, objs, prep, shipped, tmp, out
    size: int           # bytes on disk
    used: float         # last use (mtime)
    stale: bool = False  # an earlier layout's, or the work directory of a build that is gone

    def describe(self, root: Path) -> str:
        return str(self.path.relative_to(root))


@dataclass
class PruneResult:
    root: Path
    removed: list[Entry] = field(default_factory=list)
    kept: list[Entry] = field(default_factory=list)
    in_use: list[Entry] = field(default_factory=list)   # kept although the policy would remove them
    dry_run: bool = False

    @property
    def removed_bytes(self) -> int:
        return sum(e.size for e in self.removed)

    @property
    def kept_bytes(self) -> int:
        return sum(e.size for e in self.kept)


def parse_size(text: str) -> int:
    """Bytes of a size such as 500M, 4G, 1.5G, 123456 (K, M, G, T: powers of 1024)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    number = t[:-1] if t[-1:] in "KMGT" and t else t
    try:
        value = float(number)
    except ValueError:
        raise CacheError(f"bad size {text!r}: expected a number with an optional K, M, G or T") from None
    if value < 0:
        raise CacheError(f"bad size {text!r}: negative")
    return int(value * scale)


def touch(path: Path) -> None:
    """Record a use of a cache entry (its mtime); a vanished entry is not an error."""
    try:
        os.utime(path)
    except OSError:
        pass


@contextmanager
def using(root: Path):
    """Held by a build for its whole run: no prune removes anything meanwhile."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH)
        yield


def _size(path: Path) -> int:
    try:
        st = path.lstat()
    except OSError:
        return 0
    total = st.st_blocks * 512
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                except OSError:
                    pass
    return total


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _work_alive(name: str) -> bool:
    """Is the build that owns a work directory or a temporary file still running?

    Work directories are `PID-NANOSECONDS` (build.py), earlier `KEY-PID`; objects being
    written are `KEY.o.PID.tmp`."""
    parts = name.replace(".", "-").split("-")
    pids = [int(p) for p in parts if p.isdigit() and len(p) <= 7]
    return any(_pid_alive(p) for p in pids)


def running_executables() -> set[str]:
    """Real paths of the executables running processes execute (Linux /proc)."""
    out = set()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return out
    for pid in pids:
        try:
            out.add(os.path.realpath(os.readlink(f"/proc/{pid}/exe")))
        except OSError:
            pass
    return out


def entries(root: Path) -> list[Entry]:
    """Every prunable entry of the cache at ROOT."""
    out: list[Entry] = []

    def add(path: Path, kind: str, stale: bool = False) -> None:
        try:
            used = path.lstat().st_mtime
        except OSError:
            return
        out.append(Entry(path, kind, _size(path), used, stale))

    for kind in ENTRY_DIRS:
        base = root / kind
        if not base.is_dir():
            continue
        for path in sorted(base.iterdir()):
            if kind == "prep" and path.suffix == ".lock":
                continue  # goes with its directory
            if kind == "objs" and path.name.endswith(".tmp"):
                add(path, "tmp", stale=not _work_alive(path.name))
                continue
            # The first layout kept the unit texts beside each engine (36 MB an engine).
            stale = kind == "engines" and any(path.glob("*_unit.c"))
            add(path, kind, stale)
    for kind in STALE_DIRS:
        base = root / kind
        if base.is_dir():
            for path in sorted(base.iterdir()):
                add(path, kind, stale=True)
    if (root / "tmp").is_dir():
        for path in sorted((root / "tmp").iterdir()):
            add(path, "tmp", stale=not _work_alive(path.name))
    return out


def prune(root: Path, max_age_days: float | None = DEFAULT_MAX_AGE_DAYS, max_size: int | None = None,
          dry_run: bool = False, wait: bool = True, now: float | None = None) -> PruneResult | None:
    """Remove what the policy says from the cache at ROOT; None when builds hold the cache
    and `wait` is false.  max_age_days / max_size None (or 0): no such limit."""
    root = Path(root)
    result = PruneResult(root, dry_run=dry_run)
    if not root.is_dir():
        return result
    if dry_run:
        return _prune(root, result, max_age_days, max_size, now)
    with open(root / LOCK, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return None
        return _prune(root, result, max_age_days, max_size, now)


def _prune(root: Path, result: PruneResult, max_age_days, max_size, now) -> PruneResult:
    now = time.time() if now is None else now
    running = running_executables()
    found = sorted(entries(root), key=lambda e: e.used)   # oldest first

    in_use = {e.path for e in found if now - e.used < GRACE or (e.kind == "tmp" and not e.stale) or (
        e.kind in ("engines", "shipped") and os.path.realpath(e.path / "engine") in running)}

    def busy(e: Entry) -> bool:
        return e.path in in_use

    remove: set[Path] = set()
    for e in found:
        if e.stale or (max_age_days and now - e.used > max_age_days * 86400):
            remove.add(e.path)
    if max_size:
        # Oldest first; what is in use stays (reported) and still counts.
        total = sum(e.size for e in found if e.path not in remove or busy(e))
        for e in found:
            if total <= max_size:
                break
            if e.path not in remove:
                remove.add(e.path)
                total -= 0 if busy(e) else e.size
    for e in found:
        if e.path in remove and busy(e):
            result.in_use.append(e)
        (result.removed if e.path in remove and not busy(e) else result.kept).append(e)
    if not result.dry_run:
        for e in result.removed:
            _remove(root, e)
        if any(e.kind == "units" for e in result.removed):
            _forget_units(root)
    return result


def _remove(root: Path, e: Entry) -> None:
    """Out of sight first (one rename), then deleted: no reader sees half an entry."""
    if e.path.is_dir() and not e.path.is_symlink():
        trash = root / "tmp" / f"pruned-{os.getpid()}-{time.time_ns()}"
        try:
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.replace(e.path, trash)
        except OSError:
            trash = e.path
        shutil.rmtree(trash, ignore_errors=True)
    else:
        try:
            e.path.unlink()
        except OSError:
            pass
    if e.kind == "prep":
        try:
            (e.path.parent / f"{e.path.name}.lock").unlink()
        except OSError:
            pass


def _forget_units(root: Path) -> None:
    """Manifests stop naming units that are gone (a lookup would skip them anyway)."""
    units = root / "units"
    for manifest in sorted((root / "manifests").glob("*.json")):
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        kept = []
        for entry in data:
            entry["hits"] = {d: k for d, k in entry.get("hits", {}).items() if (units / k).is_dir()}
            if entry["hits"]:
                kept.append(entry)
        if kept != data:
            tmp = manifest.with_name(f".{manifest.name}.{os.getpid()}")
            tmp.write_text(json.dumps(kept))
            os.replace(tmp, manifest)


def policy_from_env() -> tuple[float | None, int | None]:
    """(max age in days, max size in bytes) for prunes after builds: the environment or the
    defaults; 0 turns a limit off."""
    try:
        age = float(os.environ.get(MAX_AGE_ENV, DEFAULT_MAX_AGE_DAYS))
    except ValueError:
        age = DEFAULT_MAX_AGE_DAYS
    try:
        size = parse_size(os.environ.get(MAX_SIZE_ENV, DEFAULT_MAX_SIZE))
    except CacheError:
        size = parse_size(DEFAULT_MAX_SIZE)
    return age or None, size or None


def prune_after_build(root: Path, now: float | None = None) -> PruneResult | None:
    """At most once a day, prune by policy_from_env(); never waits for other builds and
    never fails the build that calls it."""
    now = time.time() if now is None else now
    stamp = root / STAMP
    try:
        if now - stamp.stat().st_mtime < AUTO_INTERVAL:
            return None
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        age, size = policy_from_env()
        result = prune(root, age, size, wait=False, now=now)
        if result is not None:   # else another build holds the cache: the next one tries
            stamp.touch()
            os.utime(stamp, (now, now))
        return result
    except OSError:
        return None
