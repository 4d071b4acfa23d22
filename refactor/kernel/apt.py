"""Debian's apt, read and run for fetch-tree: the machine's sources, a private configuration.

Which suite ships ``linux-source-VERSION`` is asked of the machine's own apt sources
first, then of a private apt configuration that adds more Debian suites on the mirror
the machine already uses (its own files under the cache directory, ``-o
Dir::Etc::SourceList=...``): the machine's sources are only read, never changed.  The
mirror's host is never printed: messages from apt are scrubbed of URLs and hosts.

Every command goes through `run` (the one place tests fake).  Unpacking and caching
the tree is refactor.kernel.fetch.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlsplit

from refactor.errors import FetchError

__all__ = [
    "AptConfig",
    "EXTRA_SUITES",
    "Mirror",
    "SourceEntry",
    "choose_candidate",
    "compare_versions",
    "find_debian_mirror",
    "parse_deb822_sources",
    "parse_madison",
    "parse_one_line_sources",
    "read_machine_sources",
    "render_private_sources",
]

# Suites the private configuration adds, after the machine's own Debian suites.
# bullseye: linux-source-5.10, the oldest LTS tree the rewrite is tested on.
EXTRA_SUITES: tuple[str, ...] = ("bullseye", "bookworm", "trixie", "trixie-backports", "sid")

# Debian codenames and aliases, to tell a Debian archive entry from a third-party one.
_DEBIAN_SUITE_BASES = frozenset(
    "buster bullseye bookworm trixie forky duke sid unstable testing stable oldstable "
    "oldoldstable experimental".split()
)


_URL_RE = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"]+", re.I)
_DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


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


def apt_source_paths() -> tuple[Path, Path]:
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
        found_list, found_parts = apt_source_paths()
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


def run(cmd: Sequence[str], *, cwd: Path | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run a command and capture its output as text (the one place tests fake)."""
    return subprocess.run(
        list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_c_env()
    )


def call(cmd: Sequence[str], *, cwd: Path | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    try:
        return run(cmd, cwd=cwd, timeout=timeout)
    except FileNotFoundError:
        raise FetchError(f"{cmd[0]} not found: fetching a tree needs Debian's apt, dpkg and tar") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''} timed out after {timeout:.0f} s") from None


_hidden_hosts: set[str] = set()


def hide_hosts_of(entries: Sequence[SourceEntry]) -> None:
    """Remember the hosts of the machine's apt sources, so that no message names them."""
    for entry in entries:
        for uri in entry.uris:
            host = urlsplit(uri).hostname
            if host:
                _hidden_hosts.add(host)


def scrub(text: str) -> str:
    """Hide URLs and the mirror's host name in a message."""
    text = _URL_RE.sub("<mirror>", text)
    for host in sorted(_hidden_hosts, key=len, reverse=True):
        text = re.sub(re.escape(host), "<mirror>", text, flags=re.I)
    return text


def reason(proc: subprocess.CompletedProcess) -> str:
    """One line from a failed command: its last error line, else its last line."""
    lines = [ln.strip() for ln in (proc.stderr or "").splitlines() + (proc.stdout or "").splitlines()]
    lines = [ln for ln in lines if ln]
    errors = [ln for ln in (proc.stderr or "").splitlines() if ln.startswith("E:")]
    line = errors[-1][2:].strip() if errors else (lines[-1] if lines else f"exit status {proc.returncode}")
    return scrub(line)


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


def madison(config: AptConfig, package: str) -> list[tuple[str, str]]:
    proc = call(config.cmd("apt-cache", "madison", package), timeout=300)
    if proc.returncode != 0:
        return []
    return parse_madison(proc.stdout, package)


def update_private(config: AptConfig, state: Path, mirror: Mirror, suites: Sequence[str]) -> list[str]:
    """apt-get update on the private configuration; returns the fetch failures it reported."""
    (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (state / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    sources = state / "sources.list"
    text = render_private_sources(mirror, suites)
    if not sources.is_file() or sources.read_text() != text:
        sources.write_text(text)
    proc = call(config.cmd("apt-get", "-q", "update"), timeout=900)
    failures = [
        scrub(ln.split("Failed to fetch", 1)[1].strip())
        for ln in proc.stderr.splitlines()
        if "Failed to fetch" in ln
    ]
    if proc.returncode != 0 and not failures:
        raise FetchError(f"apt-get update (private sources) failed: {reason(proc)}")
    return failures


def failure_summary(failures: Sequence[str]) -> str:
    """The first reason apt gave for failed index fetches, without URL, host or address."""
    for failure in failures:
        reason = failure.replace("<mirror>", "", 1).strip()  # the URL that failed
        reason = re.sub(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", "<mirror>", reason)
        reason = re.sub(r"'?<mirror>'?(?::\d+)?(?: \(<mirror>\))?", "the mirror", reason)
        reason = reason.rstrip(" :")
        if reason:
            return reason
    return "index files could not be fetched"


def locate(package: str, apt_state: Path, report: Callable[[str, str], None]) -> tuple[AptConfig, str, str]:
    """Find (apt configuration, version, suite) for package: machine sources first."""
    default = AptConfig("default")
    hide_hosts_of(read_machine_sources())
    report("locate", f"looking for {package} in the machine's apt sources")
    hit = choose_candidate(madison(default, package))
    if hit:
        return default, hit[0], hit[1]
    return locate_private(package, apt_state, report)


def locate_private(
    package: str, apt_state: Path, report: Callable[[str, str], None]
) -> tuple[AptConfig, str, str]:
    entries = read_machine_sources()
    hide_hosts_of(entries)
    mirror = find_debian_mirror(entries)
    suites = private_suites(mirror)
    config = AptConfig.private(apt_state)
    report("locate", f"updating private apt lists ({', '.join(suites)})")
    failures = update_private(config, apt_state, mirror, suites)
    hit = choose_candidate(madison(config, package), suites)
    if hit:
        return config, hit[0], hit[1]
    if failures and len(failures) >= len(suites):
        raise FetchError(f"cannot reach the Debian mirror: {failure_summary(failures)}")
    if failures:
        raise FetchError(
            f"{package} not found in the suites that could be read of {', '.join(suites)} "
            f"(some index files failed: {failure_summary(failures)})"
        )
    raise FetchError(f"no Debian package {package} in {', '.join(suites)}")


def download(config: AptConfig, package: str, version: str, workdir: Path) -> Path:
    proc = call(config.cmd("apt-get", "-q", "download", f"{package}={version}"), cwd=workdir)
    debs = sorted(workdir.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        raise FetchError(f"apt-get download {package}={version} failed: {reason(proc)}")
    return debs[0]
