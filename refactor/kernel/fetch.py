"""Obtain real Linux source trees: Debian's linux-source-VERSION, or the bundled test tarballs.

`fetch_tree` finds which suite ships ``linux-source-VERSION`` (the machine's own apt
sources first, then a private apt configuration that adds more Debian suites on the
mirror the machine already uses), downloads the .deb with ``apt-get download``, unpacks
it with ``dpkg-deb -x`` and extracts ``/usr/src/linux-source-V.tar.xz``: by default only
the KVM subset, with ``full=True`` the whole tree.  Trees are cached and written
atomically (extracted into a temporary directory, then renamed into place).

The machine's apt sources are only read, never changed: the private configuration
lives in its own files under the cache directory (``-o Dir::Etc::SourceList=...``).
The mirror is taken from the machine's apt configuration at run time and its host
is never printed: messages from apt are scrubbed of URLs.

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
import subprocess
import tarfile
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence
from urllib.parse import urlsplit

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

# Suites the private configuration adds, after the machine's own Debian suites.
# bullseye: linux-source-5.10, the oldest LTS tree the rewrite is tested on.
EXTRA_SUITES: tuple[str, ...] = ("bullseye", "bookworm", "trixie", "trixie-backports", "sid")

# Debian codenames and aliases, to tell a Debian archive entry from a third-party one.
_DEBIAN_SUITE_BASES = frozenset(
    "buster bullseye bookworm trixie forky duke sid unstable testing stable oldstable "
    "oldoldstable experimental".split()
)

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
_URL_RE = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"]+", re.I)
_DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

Progress = Callable[[str, str], None]


class FetchError(Exception):
    """Fetching a tree failed; str(error) is a one-line reason for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(" ".join(str(reason).split()))


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


# ------------------------------------------------------------ the machine's sources


@dataclass(frozen=True)
class SourceEntry:
    """One apt source, from either sources.list format."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None
    enabled: bool = True


@dataclass(frozen=True)
class Mirror:
    """The Debian mirror the machine uses, with its suites and keyring."""

    uri: str
    suites: tuple[str, ...]
    signed_by: str | None


def parse_one_line_sources(text: str) -> list[SourceEntry]:
    """Parse the one-line format: ``deb [opt=val ...] URI SUITE [COMPONENT...]``."""
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        options: dict[str, str] = {}
        m = re.match(r"(\S+)\s+\[([^\]]*)\]\s*(.*)", line)
        if m:
            kind, opts, rest = m.groups()
            for opt in opts.split():
                key, _, val = opt.partition("=")
                options[key.lower()] = val
        else:
            kind, _, rest = line.partition(" ")
        words = rest.split()
        if len(words) < 2:
            continue
        entries.append(
            SourceEntry(
                types=(kind,),
                uris=(words[0],),
                suites=(words[1],),
                components=tuple(words[2:]),
                signed_by=options.get("signed-by"),
            )
        )
    return entries


def parse_deb822_sources(text: str) -> list[SourceEntry]:
    """Parse the deb822 format of ``*.sources`` files."""
    entries = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and key:
                fields[key] += "\n" + raw.strip()
                continue
            k, sep, v = raw.partition(":")
            if not sep:
                continue
            key = k.strip().lower()
            fields[key] = v.strip()
        if not fields.get("uris") or not fields.get("suites"):
            continue
        signed = fields.get("signed-by", "").strip() or None
        if signed and ("\n" in signed or signed.startswith("-----")):
            signed = None  # an inline key: let apt use its trusted keys instead
        entries.append(
            SourceEntry(
                types=tuple(fields.get("types", "deb").split()),
                uris=tuple(fields["uris"].split()),
                suites=tuple(fields["suites"].split()),
                components=tuple(fields.get("components", "").split()),
                signed_by=signed,
                enabled=fields.get("enabled", "yes").strip().lower() not in ("no", "false", "0"),
            )
        )
    return entries


def _apt_source_paths() -> tuple[Path, Path]:
    """Where the machine's apt reads its sources, as apt-config resolves them."""
    sources_list, sources_parts = Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d")
    try:
        out = subprocess.run(
            ["apt-config", "shell", "SL", "Dir::Etc::sourcelist/f", "SP", "Dir::Etc::sourceparts/d"],
            capture_output=True,
            text=True,
            timeout=30,
            env=_c_env(),
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return sources_list, sources_parts
    for name, value in re.findall(r"^(SL|SP)='([^']*)'", out, re.M):
        if name == "SL":
            sources_list = Path(value)
        else:
            sources_parts = Path(value.rstrip("/"))
    return sources_list, sources_parts


def read_machine_sources(
    sources_list: Path | None = None, sources_parts: Path | None = None
) -> list[SourceEntry]:
    """All apt sources of the machine (only ``*.list`` and ``*.sources`` files count)."""
    if sources_list is None or sources_parts is None:
        found_list, found_parts = _apt_source_paths()
        sources_list = sources_list or found_list
        sources_parts = sources_parts or found_parts
    entries: list[SourceEntry] = []
    if sources_list.is_file():
        entries += parse_one_line_sources(sources_list.read_text(errors="replace"))
    if sources_parts.is_dir():
        for path in sorted(sources_parts.iterdir()):
            if path.name.endswith(".list"):
                entries += parse_one_line_sources(path.read_text(errors="replace"))
            elif path.name.endswith(".sources"):
                entries += parse_deb822_sources(path.read_text(errors="replace"))
    return entries


def _is_debian_suite(suite: str) -> bool:
    base = suite.split("-", 1)[0].split("/", 1)[0]
    return base in _DEBIAN_SUITE_BASES and not suite.endswith("-security")


def find_debian_mirror(entries: Sequence[SourceEntry]) -> Mirror:
    """The first enabled binary Debian archive entry (not a security archive)."""
    for entry in entries:
        if not entry.enabled or "deb" not in entry.types:
            continue
        suites = tuple(s for s in entry.suites if _is_debian_suite(s))
        if not suites:
            continue
        for uri in entry.uris:
            if "security" in uri.rstrip("/").rsplit("/", 1)[-1]:
                continue
            return Mirror(uri=uri.rstrip("/"), suites=suites, signed_by=entry.signed_by)
    raise FetchError("no Debian archive found in the machine's apt sources")


def private_suites(mirror: Mirror, extra: Sequence[str] = EXTRA_SUITES) -> list[str]:
    """The machine's own Debian suites (without -updates), then the extra ones, deduplicated."""
    seen: list[str] = []
    for suite in [s for s in mirror.suites if not s.endswith("-updates")] + list(extra):
        if suite not in seen:
            seen.append(suite)
    return seen


def render_private_sources(mirror: Mirror, suites: Sequence[str]) -> str:
    keyring = mirror.signed_by
    if keyring is None and Path(_DEFAULT_KEYRING).is_file():
        keyring = _DEFAULT_KEYRING
    opts = f"[signed-by={keyring}] " if keyring else ""
    return "".join(f"deb {opts}{mirror.uri} {suite} main\n" for suite in suites)


# ----------------------------------------------------------------------- apt calls


def _c_env() -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    env.pop("LANGUAGE", None)
    return env


def _run(cmd: Sequence[str], *, cwd: Path | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run a command and capture its output as text (the one place tests fake)."""
    return subprocess.run(
        list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_c_env()
    )


def _call(cmd: Sequence[str], *, cwd: Path | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    try:
        return _run(cmd, cwd=cwd, timeout=timeout)
    except FileNotFoundError:
        raise FetchError(f"{cmd[0]} not found: fetching a tree needs Debian's apt, dpkg and tar") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''} timed out after {timeout:.0f} s") from None


_hidden_hosts: set[str] = set()


def _hide_hosts_of(entries: Sequence[SourceEntry]) -> None:
    """Remember the hosts of the machine's apt sources, so that no message names them."""
    for entry in entries:
        for uri in entry.uris:
            host = urlsplit(uri).hostname
            if host:
                _hidden_hosts.add(host)


def _scrub(text: str) -> str:
    """Hide URLs and the mirror's host name in a message."""
    text = _URL_RE.sub("<mirror>", text)
    for host in sorted(_hidden_hosts, key=len, reverse=True):
        text = re.sub(re.escape(host), "<mirror>", text, flags=re.I)
    return text


def _reason(proc: subprocess.CompletedProcess) -> str:
    """One line from a failed command: its last error line, else its last line."""
    lines = [ln.strip() for ln in (proc.stderr or "").splitlines() + (proc.stdout or "").splitlines()]
    lines = [ln for ln in lines if ln]
    errors = [ln for ln in (proc.stderr or "").splitlines() if ln.startswith("E:")]
    line = errors[-1][2:].strip() if errors else (lines[-1] if lines else f"exit status {proc.returncode}")
    return _scrub(line)


@dataclass(frozen=True)
class AptConfig:
    """apt options: none for the machine's own sources, private dirs otherwise."""

    name: str  # "default" or "private"
    options: tuple[str, ...] = ()

    @classmethod
    def private(cls, state: Path) -> "AptConfig":
        return cls(
            "private",
            (
                "-o", f"Dir::Etc::SourceList={state / 'sources.list'}",
                "-o", "Dir::Etc::SourceParts=/dev/null",
                "-o", f"Dir::State::Lists={state / 'lists'}",
                "-o", f"Dir::Cache={state / 'cache'}",
                "-o", "Acquire::Languages=none",
            ),
        )

    def cmd(self, tool: str, *args: str) -> list[str]:
        return [tool, *self.options, *args]


def parse_madison(text: str, package: str) -> list[tuple[str, str]]:
    """(version, suite) pairs from ``apt-cache madison`` output, binary entries only."""
    found = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 3 or parts[0] != package:
            continue
        version, where = parts[1], parts[2].split()
        if not where or where[-1] != "Packages" or len(where) < 2:
            continue
        suite = where[1].split("/", 1)[0]
        found.append((version, suite))
    return found


def _order(c: str) -> int:
    """dpkg's weight of one character of a non-digit run ('~' sorts before the end)."""
    if c == "~":
        return -1
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's comparison of an upstream version or of a Debian revision."""
    while a or b:
        ia = len(a) - len(a.lstrip("~+.-:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
        ib = len(b) - len(b.lstrip("~+.-:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
        pa, pb = a[:ia], b[:ib]
        for i in range(max(len(pa), len(pb))):
            oa = _order(pa[i]) if i < len(pa) else 0
            ob = _order(pb[i]) if i < len(pb) else 0
            if oa != ob:
                return -1 if oa < ob else 1
        a, b = a[ia:], b[ib:]
        da = len(a) - len(a.lstrip("0123456789"))
        db = len(b) - len(b.lstrip("0123456789"))
        va, vb = int(a[:da] or 0), int(b[:db] or 0)
        if va != vb:
            return -1 if va < vb else 1
        a, b = a[da:], b[db:]
        if (a or b) and not da and not db and not ia and not ib:
            # a character outside Debian's version alphabet: compare the rest as text
            return (a > b) - (a < b)
    return 0


def compare_versions(a: str, b: str) -> int:
    """Compare two Debian versions like ``dpkg --compare-versions``: -1, 0 or 1."""

    def split(v: str) -> tuple[int, str, str]:
        epoch, sep, rest = v.partition(":")
        if not sep:
            epoch, rest = "0", v
        upstream, sep, revision = rest.rpartition("-")
        if not sep:
            upstream, revision = rest, ""
        return int(epoch or 0), upstream, revision

    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def choose_candidate(
    found: Sequence[tuple[str, str]], suite_order: Sequence[str] = ()
) -> tuple[str, str] | None:
    """The highest version; for one version in several suites, the earliest in suite_order."""
    best: tuple[str, str] | None = None

    def rank(suite: str) -> int:
        return suite_order.index(suite) if suite in suite_order else len(suite_order)

    for version, suite in found:
        if best is None:
            best = (version, suite)
            continue
        cmp = compare_versions(version, best[0])
        if cmp > 0 or (cmp == 0 and rank(suite) < rank(best[1])):
            best = (version, suite)
    return best


def _madison(config: AptConfig, package: str) -> list[tuple[str, str]]:
    proc = _call(config.cmd("apt-cache", "madison", package), timeout=300)
    if proc.returncode != 0:
        return []
    return parse_madison(proc.stdout, package)


def _update_private(config: AptConfig, state: Path, mirror: Mirror, suites: Sequence[str]) -> list[str]:
    """apt-get update on the private configuration; returns the fetch failures it reported."""
    (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (state / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    sources = state / "sources.list"
    text = render_private_sources(mirror, suites)
    if not sources.is_file() or sources.read_text() != text:
        sources.write_text(text)
    proc = _call(config.cmd("apt-get", "-q", "update"), timeout=900)
    failures = [
        _scrub(ln.split("Failed to fetch", 1)[1].strip())
        for ln in proc.stderr.splitlines()
        if "Failed to fetch" in ln
    ]
    if proc.returncode != 0 and not failures:
        raise FetchError(f"apt-get update (private sources) failed: {_reason(proc)}")
    return failures


def _failure_summary(failures: Sequence[str]) -> str:
    """The first reason apt gave for failed index fetches, without URL, host or address."""
    for failure in failures:
        reason = failure.replace("<mirror>", "", 1).strip()  # the URL that failed
        reason = re.sub(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", "<mirror>", reason)
        reason = re.sub(r"'?<mirror>'?(?::\d+)?(?: \(<mirror>\))?", "the mirror", reason)
        reason = reason.rstrip(" :")
        if reason:
            return reason
    return "index files could not be fetched"


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


def _locate(package: str, apt_state: Path, report: Callable[[str, str], None]) -> tuple[AptConfig, str, str]:
    """Find (apt configuration, version, suite) for package: machine sources first."""
    default = AptConfig("default")
    _hide_hosts_of(read_machine_sources())
    report("locate", f"looking for {package} in the machine's apt sources")
    hit = choose_candidate(_madison(default, package))
    if hit:
        return default, hit[0], hit[1]
    return _locate_private(package, apt_state, report)


def _locate_private(
    package: str, apt_state: Path, report: Callable[[str, str], None]
) -> tuple[AptConfig, str, str]:
    entries = read_machine_sources()
    _hide_hosts_of(entries)
    mirror = find_debian_mirror(entries)
    suites = private_suites(mirror)
    config = AptConfig.private(apt_state)
    report("locate", f"updating private apt lists ({', '.join(suites)})")
    failures = _update_private(config, apt_state, mirror, suites)
    hit = choose_candidate(_madison(config, package), suites)
    if hit:
        return config, hit[0], hit[1]
    if failures and len(failures) >= len(suites):
        raise FetchError(f"cannot reach the Debian mirror: {_failure_summary(failures)}")
    if failures:
        raise FetchError(
            f"{package} not found in the suites that could be read of {', '.join(suites)} "
            f"(some index files failed: {_failure_summary(failures)})"
        )
    raise FetchError(f"no Debian package {package} in {', '.join(suites)}")


def _download(config: AptConfig, package: str, version: str, workdir: Path) -> Path:
    proc = _call(config.cmd("apt-get", "-q", "download", f"{package}={version}"), cwd=workdir)
    debs = sorted(workdir.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        raise FetchError(f"apt-get download {package}={version} failed: {_reason(proc)}")
    return debs[0]


def _deb_field(deb: Path, field: str) -> str:
    proc = _call(["dpkg-deb", "-f", str(deb), field], timeout=120)
    if proc.returncode != 0:
        raise FetchError(f"dpkg-deb cannot read {deb.name}: {_reason(proc)}")
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
    config, deb_version, suite = _locate(package, apt_state, report)
    download_dir = work / "download"
    download_dir.mkdir()
    report("download", f"downloading {package} {deb_version} ({suite})")
    try:
        deb = _download(config, package, deb_version, download_dir)
    except FetchError:
        if config.name != "default":
            raise
        # The machine's lists may be stale: retry through the private configuration.
        config, deb_version, suite = _locate_private(package, apt_state, report)
        report("download", f"downloading {package} {deb_version} ({suite})")
        deb = _download(config, package, deb_version, download_dir)
    got_version = _deb_field(deb, "Version") or deb_version

    report("unpack", f"unpacking {deb.name}")
    unpacked = work / "deb"
    proc = _call(["dpkg-deb", "-x", str(deb), str(unpacked)])
    if proc.returncode != 0:
        raise FetchError(f"dpkg-deb -x {deb.name} failed: {_reason(proc)}")
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
    proc = _call(cmd)
    if proc.returncode != 0:
        raise FetchError(f"extracting {tarball.name} failed: {_reason(proc)}")
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
