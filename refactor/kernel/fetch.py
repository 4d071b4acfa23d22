"""Obtain real Linux source trees: Debian's linux-source-VERSION, or the bundled test tarballs.

`fetch_tree` finds which suite ships ``linux-source-VERSION`` (the machine's own apt
sources first, then a private apt configuration that adds more Debian suites on the
mirror the machine already uses), downloads the .deb with ``apt-get download``, unpacks
it with ``dpkg-deb -x`` and extracts ``/usr/src/linux-source-V.tar.xz``: by default only
the KVM subset, with ``full=True`` the whole tree.  Trees are cached and written
atomically (extracted into a temporary directory, then renamed into place).

Asking apt (the machine's sources, the private configuration, every command run)
is refactor.kernel.apt; this module unpacks and caches trees.

`bundled_tarball_trees` unpacks the test tarballs ``linux-kvm-V.tar.xz`` (each holds
``linux-source-V/``) into a cache keyed by their content hash.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

__all__ = [
    "AptConfig",
    "EXTRA_SUITES",
    "FETCH_STEPS",
    "FetchError",
    "FetchResult",
    "Mirror",
    "SourceEntry",
    "bundled_tarball_trees",
    "choose_candidate",
    "compare_versions",
    "default_cache_dir",
    "default_tarball_dir",
    "fetch_tree",
    "find_debian_mirror",
    "parse_deb822_sources",
    "parse_madison",
    "parse_one_line_sources",
    "read_machine_sources",
    "render_private_sources",
    "subset_patterns",
]

# Paths of the KVM subset, relative to the tree root (the same as the bundled tarballs).
_SUBSET = (
    "arch/x86/kvm",
    "arch/x86/include/asm/kvm*",
    "include/linux/kvm*",
    "virt/kvm",
    "Makefile",
)

# The steps reported to a progress callback, in order.
FETCH_STEPS: tuple[str, ...] = ("locate", "download", "unpack", "extract")

METADATA_NAME = ".kvm-refactor-fetch.json"
_VERSION_RE = re.compile(r"\d+\.\d+\Z")
_TARBALL_RE = re.compile(r"linux-kvm-(\d+\.\d+[0-9A-Za-z.+~-]*)\.tar\.xz\Z")

Progress = Callable[[str, str], None]


from refactor.errors import FetchError  # noqa: E402,F401  (defined there; re-exported here)
from refactor.kernel import apt  # noqa: E402  (commands run through apt.run: tests fake it)
from refactor.kernel.apt import (  # noqa: E402,F401  (re-exported: fetch's public API)
    EXTRA_SUITES, AptConfig, Mirror, SourceEntry, choose_candidate, compare_versions, find_debian_mirror,
    parse_deb822_sources, parse_madison, parse_one_line_sources, private_suites, read_machine_sources,
    render_private_sources,
)


@dataclass(frozen=True)
class FetchResult:
    path: Path  # root of the unpacked tree (holds Makefile, arch/, ...)
    package: str  # e.g. "linux-source-6.1"
    version: str  # exact Debian version, e.g. "6.1.176-1"
    suite: str  # e.g. "bookworm"
    cached: bool  # True when no download was needed

    def describe(self) -> str:
        return f"{self.package} {self.version} ({self.suite}) -> {self.path}"


# --------------------------------------------------------------------------- paths


def default_cache_dir() -> Path:
    """$KVM_REFACTOR_CACHE, else ~/.cache/kvm-refactor/trees."""
    env = os.environ.get("KVM_REFACTOR_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "kvm-refactor" / "trees"


def default_tarball_dir() -> Path:
    """$KVM_REFACTOR_TREES, else ../shared/kernel relative to the repository root."""
    env = os.environ.get("KVM_REFACTOR_TREES")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[3] / "shared" / "kernel"


def _tree_dir_name(version: str, full: bool) -> str:
    return f"linux-source-{version}" + ("-full" if full else "")


# ------------------------------------------------------------------------- fetching


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def subset_patterns(version: str) -> list[str]:
    """tar --wildcards patterns selecting the KVM subset of linux-source-VERSION."""
    return [f"linux-source-{version}/{p}" for p in _SUBSET]


def _read_cached(target: Path) -> FetchResult | None:
    meta = target / METADATA_NAME
    if not (target / "Makefile").is_file() or not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
        return FetchResult(
            path=target, package=data["package"], version=data["version"], suite=data["suite"], cached=True
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _deb_field(deb: Path, field: str) -> str:
    proc = apt.call(["dpkg-deb", "-f", str(deb), field], timeout=120)
    if proc.returncode != 0:
        raise FetchError(f"dpkg-deb cannot read {deb.name}: {apt.reason(proc)}")
    return proc.stdout.strip()


def fetch_tree(
    version: str,
    dest: Path | None = None,
    full: bool = False,
    progress: Progress | None = None,
) -> FetchResult:
    """Fetch linux-source-VERSION (e.g. "6.1") and return its unpacked tree.

    The tree lands in DEST/linux-source-VERSION (the KVM subset) or
    DEST/linux-source-VERSION-full (``full=True``); DEST defaults to
    `default_cache_dir()`.  A tree already there is returned without downloading
    (``cached=True``).  ``progress(step, message)`` is called as each of
    `FETCH_STEPS` starts.  Raises `FetchError` with a one-line reason.
    """
    version = version.strip()
    if version.startswith("linux-source-"):
        version = version[len("linux-source-"):]
    if not _VERSION_RE.match(version):
        raise FetchError(f"invalid kernel version {version!r}: expected MAJOR.MINOR, e.g. 6.1")
    package = f"linux-source-{version}"
    dest = (Path(dest).expanduser() if dest is not None else default_cache_dir()).absolute()
    target = dest / _tree_dir_name(version, full)

    cached = _read_cached(target)
    if cached:
        return cached
    if target.exists():
        raise FetchError(f"{target} exists but is not a tree fetched by kvm-refactor; remove it first")

    def report(step: str, message: str) -> None:
        if progress is not None:
            progress(step, message)

    apt_state = default_cache_dir().absolute() / ".apt"
    try:
        dest.mkdir(parents=True, exist_ok=True)
        apt_state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create {exc.filename}: {exc.strerror}") from None

    with _locked(apt_state / "fetch.lock"):
        cached = _read_cached(target)  # another process may have fetched it meanwhile
        if cached:
            return cached
        try:
            work = Path(tempfile.mkdtemp(prefix=f".tmp-{package}-", dir=dest))
        except OSError as exc:
            raise FetchError(f"cannot write in {dest}: {exc.strerror}") from None
        try:
            return _fetch_into(package, version, full, target, work, apt_state, report)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _fetch_into(
    package: str,
    version: str,
    full: bool,
    target: Path,
    work: Path,
    apt_state: Path,
    report: Callable[[str, str], None],
) -> FetchResult:
    config, deb_version, suite = apt.locate(package, apt_state, report)
    download_dir = work / "download"
    download_dir.mkdir()
    report("download", f"downloading {package} {deb_version} ({suite})")
    try:
        deb = apt.download(config, package, deb_version, download_dir)
    except FetchError:
        if config.name != "default":
            raise
        # The machine's lists may be stale: retry through the private configuration.
        config, deb_version, suite = apt.locate_private(package, apt_state, report)
        report("download", f"downloading {package} {deb_version} ({suite})")
        deb = apt.download(config, package, deb_version, download_dir)
    got_version = _deb_field(deb, "Version") or deb_version

    report("unpack", f"unpacking {deb.name}")
    unpacked = work / "deb"
    proc = apt.call(["dpkg-deb", "-x", str(deb), str(unpacked)])
    if proc.returncode != 0:
        raise FetchError(f"dpkg-deb -x {deb.name} failed: {apt.reason(proc)}")
    deb.unlink()
    tarball = unpacked / "usr" / "src" / f"{package}.tar.xz"
    if not tarball.is_file():
        raise FetchError(f"{deb.name} holds no /usr/src/{package}.tar.xz")

    report("extract", f"extracting {'the whole tree' if full else 'the KVM subset'}")
    out = work / "tree"
    out.mkdir()
    cmd = ["tar", "-xJf", str(tarball), "-C", str(out), "--no-same-owner"]
    if not full:
        cmd += ["--wildcards", *subset_patterns(version)]
    proc = apt.call(cmd)
    if proc.returncode != 0:
        raise FetchError(f"extracting {tarball.name} failed: {apt.reason(proc)}")
    shutil.rmtree(unpacked, ignore_errors=True)
    root = out / package
    if not (root / "Makefile").is_file():
        raise FetchError(f"{tarball.name} did not unpack to {package}/ with a Makefile")

    (root / METADATA_NAME).write_text(
        json.dumps(
            {"package": package, "version": got_version, "suite": suite, "full": full}, indent=1
        )
        + "\n"
    )
    try:
        os.rename(root, target)
    except OSError:
        cached = _read_cached(target)  # lost a race to another writer: use its tree
        if cached:
            return cached
        raise FetchError(f"cannot move the tree into place at {target}") from None
    return FetchResult(path=target, package=package, version=got_version, suite=suite, cached=False)


# ------------------------------------------------------------ bundled test tarballs


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bundled_tarball_trees(trees_dir: Path, cache: Path) -> dict[str, Path]:
    """Unpack every ``linux-kvm-V.tar.xz`` of trees_dir into cache; return {V: tree root}.

    Each tarball holds ``linux-source-V/``.  It is unpacked once into
    ``cache/<sha256 of the tarball>/`` (into a temporary directory first, then renamed),
    so a changed tarball gets a fresh tree and an unchanged one is not unpacked again.
    """
    trees_dir, cache = Path(trees_dir), Path(cache)
    result: dict[str, Path] = {}
    if not trees_dir.is_dir():
        raise FetchError(f"no tarball directory {trees_dir}")
    for tarball in sorted(trees_dir.iterdir()):
        m = _TARBALL_RE.match(tarball.name)
        if not m or not tarball.is_file():
            continue
        version = m.group(1)
        top = f"linux-source-{version}"
        final = cache / _sha256(tarball)
        root = final / top
        if not root.is_dir():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{tarball.name}-", dir=cache))
            try:
                try:
                    with tarfile.open(tarball, "r:xz") as tf:
                        tf.extractall(tmp, filter="data")
                except (tarfile.TarError, OSError, EOFError) as exc:
                    raise FetchError(f"cannot unpack {tarball.name}: {exc}") from None
                if not (tmp / top).is_dir():
                    raise FetchError(f"{tarball.name} does not unpack to {top}/")
                try:
                    os.rename(tmp, final)
                except OSError:
                    if not root.is_dir():  # not a lost race: a real failure
                        raise FetchError(f"cannot move {tarball.name}'s tree into {cache}") from None
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        result[version] = root
    return result
