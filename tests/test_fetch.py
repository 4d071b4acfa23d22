"""Tests of refactor/kernel/fetch.py, refactor/kernel/apt.py and the fetch-tree command.

apt is faked wherever it would download (``refactor.kernel.apt.run`` is replaced by a
recorder that plays apt-cache/apt-get and passes dpkg-deb and tar through to the
real tools), on a small synthetic linux-source .deb built in tmp.  The bundled
tarballs of $KVM_REFACTOR_TREES are unpacked for real.  One test fetches from
Debian for real and is marked slow.
"""
from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from refactor.kernel import apt as A
from refactor.kernel import fetch as F
from refactor.cli.fetch import fetch_tree_cmd
from refactor.kernel.fetch import (
    AptConfig,
    FetchError,
    FetchResult,
    Mirror,
    SourceEntry,
    bundled_tarball_trees,
    choose_candidate,
    compare_versions,
    fetch_tree,
    find_debian_mirror,
    parse_deb822_sources,
    parse_madison,
    parse_one_line_sources,
    private_suites,
    read_machine_sources,
    render_private_sources,
    subset_patterns,
)

# A made-up mirror: tests never name a real one.
MIRROR = "http://mirror.invalid/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
FAKE_VERSION = "9.8"
FAKE_PACKAGE = f"linux-source-{FAKE_VERSION}"

needs_dpkg = pytest.mark.skipif(
    shutil.which("dpkg-deb") is None or shutil.which("tar") is None, reason="needs dpkg-deb and tar"
)

# Files of the synthetic tree: the KVM subset, and files outside it.
SUBSET_FILES = [
    "Makefile",
    "arch/x86/kvm/Makefile",
    "arch/x86/kvm/mmu/mmu.c",
    "arch/x86/kvm/vmx/nested.c",
    "arch/x86/include/asm/kvm_host.h",
    "arch/x86/include/asm/kvm_page_track.h",
    "include/linux/kvm_host.h",
    "include/linux/kvm_types.h",
    "virt/kvm/kvm_main.c",
]
OTHER_FILES = [
    "drivers/net/dummy.c",
    "arch/x86/mm/fault.c",
    "arch/x86/include/asm/page.h",
    "include/linux/list.h",
    "arch/arm64/kvm/arm.c",
]


# ----------------------------------------------------------------- synthetic .deb


def _make_tree_tarball(dest: Path, version: str) -> Path:
    top = f"linux-source-{version}"
    tarball = dest / f"{top}.tar.xz"
    with tarfile.open(tarball, "w:xz") as tf:
        for rel in SUBSET_FILES + OTHER_FILES:
            data = (f"VERSION = 9\nPATCHLEVEL = 8\n" if rel == "Makefile" else f"/* {rel} */\n").encode()
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return tarball


def _build_deb(tmp: Path, version: str, deb_version: str) -> Path:
    root = tmp / "pkgroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr" / "src").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: linux-source-{version}\nVersion: {deb_version}\nArchitecture: all\n"
        "Maintainer: Test <test@example.invalid>\nDescription: synthetic linux source\n"
    )
    _make_tree_tarball(root / "usr" / "src", version)
    deb = tmp / f"linux-source-{version}_{deb_version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


@pytest.fixture(scope="session")
def synthetic_deb(tmp_path_factory) -> Path:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("needs dpkg-deb")
    return _build_deb(tmp_path_factory.mktemp("deb"), FAKE_VERSION, "9.8.3-1")


# ---------------------------------------------------------------------- fake apt


class FakeApt:
    """Plays apt-cache and apt-get; passes dpkg-deb and tar to the real tools."""

    def __init__(self, deb: Path | None) -> None:
        self.deb = deb
        self.calls: list[list[str]] = []
        self.default_madison = ""  # what the machine's own lists know
        self.private_madison = ""  # what the private lists know after update
        self.update_stderr = ""
        self.update_rc = 0
        self.download_fails_default = False
        self.download_stderr = ""
        self.tar_fails = False
        self.missing: set[str] = set()

    @staticmethod
    def is_private(cmd: list[str]) -> bool:
        return "-o" in cmd

    def apt_calls(self) -> list[list[str]]:
        return [c for c in self.calls if c[0] in ("apt-get", "apt-cache")]

    def __call__(self, cmd, *, cwd=None, timeout=None):
        cmd = list(cmd)
        self.calls.append(cmd)
        if cmd[0] in self.missing:
            raise FileNotFoundError(cmd[0])
        ok = lambda out="", err="", rc=0: subprocess.CompletedProcess(cmd, rc, out, err)  # noqa: E731
        if cmd[0] == "apt-cache":
            return ok(self.private_madison if self.is_private(cmd) else self.default_madison)
        if cmd[0] == "apt-get" and cmd[-1] == "update":
            return ok("", self.update_stderr, self.update_rc)
        if cmd[0] == "apt-get" and cmd[-2] == "download":
            if self.download_stderr or (self.download_fails_default and not self.is_private(cmd)):
                return ok("", self.download_stderr or f"E: Failed to fetch {MIRROR}/pool/x.deb  404  Not Found", 100)
            pkg, _, ver = cmd[-1].partition("=")
            assert self.deb is not None
            shutil.copy(self.deb, Path(cwd) / f"{pkg}_{ver}_all.deb")
            return ok()
        if cmd[0] == "tar" and self.tar_fails:
            return ok("", "tar: Unexpected EOF in archive", 2)
        if cmd[0] in ("dpkg-deb", "tar"):
            return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        raise AssertionError(f"unexpected command {cmd}")


def _madison(package: str, *rows: tuple[str, str]) -> str:
    return "".join(f"{package} | {v} | {MIRROR} {s}/main amd64 Packages\n" for v, s in rows)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A cache dir, a machine with made-up apt sources, and no other state."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(cache))
    etc = tmp_path / "etc-apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text("")
    (etc / "sources.list.d" / "debian.sources").write_text(
        f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm bookworm-updates\nComponents: main\n"
        f"Signed-By: {KEYRING}\n\n"
        f"Types: deb\nURIs: {MIRROR}-security\nSuites: bookworm-security\nComponents: main\n"
    )
    monkeypatch.setattr(A, "apt_source_paths", lambda: (etc / "sources.list", etc / "sources.list.d"))
    return types.SimpleNamespace(cache=cache, etc=etc, tmp=tmp_path)


@pytest.fixture
def apt(monkeypatch, synthetic_deb):
    fake = FakeApt(synthetic_deb)
    monkeypatch.setattr(A, "run", fake)
    return fake


def _no_temp_left(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.startswith(".tmp-")]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


# ------------------------------------------------------------ sources and mirror


def test_parse_one_line_sources():
    text = (
        "# comment\n"
        f"deb [arch=amd64 signed-by={KEYRING}] {MIRROR} bookworm main contrib # tail\n"
        f"deb-src {MIRROR} bookworm main\n"
        "deb https://vendor.invalid/apt cloud-sdk-bookworm main\n"
        "\n"
    )
    entries = parse_one_line_sources(text)
    assert [e.types for e in entries] == [("deb",), ("deb-src",), ("deb",)]
    assert entries[0] == SourceEntry(("deb",), (MIRROR,), ("bookworm",), ("main", "contrib"), KEYRING)
    assert entries[1].signed_by is None


def test_parse_deb822_sources():
    text = (
        f"Types: deb deb-src\nURIs: {MIRROR}\nSuites: trixie trixie-updates\nComponents: main\n"
        f"Signed-By: {KEYRING}\n\n"
        "# a disabled one\nTypes: deb\nURIs: http://other.invalid/debian\nSuites: sid\n"
        "Components: main\nEnabled: no\n\n"
        "Types: deb\nURIs: http://inline.invalid/debian\nSuites: bookworm\nComponents: main\n"
        "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n"
    )
    a, b, c = parse_deb822_sources(text)
    assert a.types == ("deb", "deb-src") and a.suites == ("trixie", "trixie-updates")
    assert a.signed_by == KEYRING and a.enabled
    assert not b.enabled
    assert c.signed_by is None  # inline key: rely on apt's trusted keys


def test_read_machine_sources_ignores_disabled_files(tmp_path):
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (tmp_path / "sources.list").write_text(f"deb {MIRROR} bookworm main\n")
    (parts / "x.sources").write_text(f"Types: deb\nURIs: {MIRROR}\nSuites: sid\nComponents: main\n")
    (parts / "y.list.disabled-by-farm").write_text("deb http://no.invalid/ x main\n")
    (parts / "z.list").write_text("deb http://vendor.invalid/apt stable main\n")
    entries = read_machine_sources(tmp_path / "sources.list", parts)
    assert [e.suites for e in entries] == [("bookworm",), ("sid",), ("stable",)]


def test_find_debian_mirror_skips_security_and_third_party():
    entries = [
        SourceEntry(("deb",), ("https://vendor.invalid/apt",), ("cloud-sdk-bookworm",), ("main",)),
        SourceEntry(("deb",), ("https://node.invalid/node_20.x",), ("nodistro",), ("main",)),
        SourceEntry(("deb",), (MIRROR + "-security",), ("bookworm-security",), ("main",)),
        SourceEntry(("deb-src",), (MIRROR,), ("bookworm",), ("main",)),
        SourceEntry(("deb",), ("http://off.invalid/debian",), ("bookworm",), ("main",), enabled=False),
        SourceEntry(("deb",), (MIRROR + "/",), ("bookworm", "bookworm-updates"), ("main",), KEYRING),
    ]
    assert find_debian_mirror(entries) == Mirror(MIRROR, ("bookworm", "bookworm-updates"), KEYRING)
    with pytest.raises(FetchError, match="no Debian archive"):
        find_debian_mirror(entries[:5])


def test_machine_sources_give_a_debian_mirror():
    """The machine this runs on has a Debian archive in its apt sources (read only)."""
    if shutil.which("apt-config") is None:
        pytest.skip("not a Debian machine")
    mirror = find_debian_mirror(read_machine_sources())
    assert mirror.uri.startswith(("http://", "https://", "file:", "mirror+"))
    assert mirror.suites


def test_private_sources_add_suites_on_the_same_mirror():
    mirror = Mirror(MIRROR, ("bookworm", "bookworm-updates"), KEYRING)
    suites = private_suites(mirror)
    assert suites == ["bookworm", "bullseye", "trixie", "trixie-backports", "sid"]
    text = render_private_sources(mirror, suites)
    assert text.splitlines() == [f"deb [signed-by={KEYRING}] {MIRROR} {s} main" for s in suites]
    assert private_suites(Mirror(MIRROR, ("trixie",), None), ["sid"]) == ["trixie", "sid"]


def test_private_apt_config_command_lines(tmp_path):
    cfg = AptConfig.private(tmp_path)
    cmd = cfg.cmd("apt-get", "-q", "update")
    assert cmd[0] == "apt-get" and cmd[-2:] == ["-q", "update"]
    opts = dict(zip(cmd[1:-2:2], cmd[2:-2:2], strict=True))
    assert set(opts) == {"-o"}
    values = cmd[2:-2:2]
    assert f"Dir::Etc::SourceList={tmp_path / 'sources.list'}" in values
    assert "Dir::Etc::SourceParts=/dev/null" in values
    assert f"Dir::State::Lists={tmp_path / 'lists'}" in values
    assert f"Dir::Cache={tmp_path / 'cache'}" in values
    assert AptConfig("default").cmd("apt-cache", "madison", "p") == ["apt-cache", "madison", "p"]


# ------------------------------------------------------------- suite selection


def test_parse_madison():
    text = (
        f"linux-source-7.2 |   7.2.13-1 | {MIRROR} sid/main amd64 Packages\n"
        f"linux-source-7.2 | 7.2.12-1~bpo13+1 | {MIRROR} trixie-backports/main amd64 Packages\n"
        f"linux-source-7.2 |   7.2.13-1 | {MIRROR} sid/main Sources\n"
        "linux-source-7.20 | 7.20.1-1 | x sid/main amd64 Packages\n"
        "N: Unable to locate package\n"
    )
    assert parse_madison(text, "linux-source-7.2") == [("7.2.13-1", "sid"), ("7.2.12-1~bpo13+1", "trixie-backports")]


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("6.1.176-1", "6.1.170-3", 1),
        ("7.2.13-1", "7.2.12-1~bpo13+1", 1),
        ("7.3.4-1~bpo13+1", "7.3.4-1", -1),
        ("1.0~rc1-1", "1.0-1", -1),
        ("1:0.1-1", "9.9-1", 1),
        ("1.0-1", "1.0-1", 0),
        ("6.1.176-1+deb12u1", "6.1.176-1", 1),
        ("1.0a", "1.0+", -1),
    ],
)
def test_compare_versions(a, b, expected):
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected
    if shutil.which("dpkg"):
        op = {1: "gt", 0: "eq", -1: "lt"}[expected]
        assert subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode == 0


def test_choose_candidate():
    assert choose_candidate([]) is None
    found = [("7.2.12-1~bpo13+1", "trixie-backports"), ("7.2.13-1", "sid"), ("7.2.9-1~bpo13+1", "trixie-backports")]
    assert choose_candidate(found) == ("7.2.13-1", "sid")
    same = [("7.3.4-1", "sid"), ("7.3.4-1", "trixie")]
    assert choose_candidate(same, ["bookworm", "trixie", "sid"]) == ("7.3.4-1", "trixie")
    assert choose_candidate(same) == ("7.3.4-1", "sid")


def test_subset_patterns():
    assert subset_patterns("6.1") == [
        "linux-source-6.1/arch/x86/kvm",
        "linux-source-6.1/arch/x86/include/asm/kvm*",
        "linux-source-6.1/include/linux/kvm*",
        "linux-source-6.1/virt/kvm",
        "linux-source-6.1/Makefile",
    ]


# ------------------------------------------------------------- fetch_tree, faked


@needs_dpkg
def test_fetch_from_machine_sources_extracts_the_subset(env, apt):
    apt.default_madison = _madison(FAKE_PACKAGE, ("9.8.3-1", "bookworm"), ("9.8.1-1", "bookworm"))
    steps = []
    res = fetch_tree(FAKE_VERSION, progress=lambda step, msg: steps.append(step))
    assert res == FetchResult(env.cache / FAKE_PACKAGE, FAKE_PACKAGE, "9.8.3-1", "bookworm", False)
    assert res.describe() == f"{FAKE_PACKAGE} 9.8.3-1 (bookworm) -> {env.cache / FAKE_PACKAGE}"
    assert _files(res.path) == set(SUBSET_FILES) | {F.METADATA_NAME}
    # No private update: the machine's own sources had it; the exact version is asked for.
    assert apt.apt_calls() == [
        ["apt-cache", "madison", FAKE_PACKAGE],
        ["apt-get", "-q", "download", f"{FAKE_PACKAGE}=9.8.3-1"],
    ]
    tar = next(c for c in apt.calls if c[0] == "tar")
    assert tar[:2] == ["tar", "-xJf"] and "--wildcards" in tar
    assert tar[tar.index("--wildcards") + 1 :] == subset_patterns(FAKE_VERSION)
    assert steps == list(F.FETCH_STEPS)
    assert _no_temp_left(env.cache)
    assert not list(env.cache.rglob("*.deb"))


@needs_dpkg
def test_fetch_falls_back_to_private_suites(env, apt):
    apt.private_madison = _madison(
        FAKE_PACKAGE, ("9.8.3-1", "sid"), ("9.8.2-1~bpo13+1", "trixie-backports")
    )
    res = fetch_tree(FAKE_VERSION)
    assert (res.version, res.suite) == ("9.8.3-1", "sid")
    state = env.cache / ".apt"
    calls = apt.apt_calls()
    assert calls[0] == ["apt-cache", "madison", FAKE_PACKAGE]
    private = AptConfig.private(state)
    assert calls[1:] == [
        private.cmd("apt-get", "-q", "update"),
        private.cmd("apt-cache", "madison", FAKE_PACKAGE),
        private.cmd("apt-get", "-q", "download", f"{FAKE_PACKAGE}=9.8.3-1"),
    ]
    sources = (state / "sources.list").read_text().splitlines()
    assert sources == [
        f"deb [signed-by={KEYRING}] {MIRROR} {s} main"
        for s in ("bookworm", "bullseye", "trixie", "trixie-backports", "sid")
    ]
    assert (state / "lists" / "partial").is_dir() and (state / "cache" / "archives" / "partial").is_dir()


@needs_dpkg
def test_reported_version_is_the_debs(env, apt):
    # The lists say one version, the .deb obtained says another: report the .deb's.
    apt.default_madison = _madison(FAKE_PACKAGE, ("9.8.2-1", "bookworm"))
    assert fetch_tree(FAKE_VERSION).version == "9.8.3-1"


@needs_dpkg
def test_stale_machine_lists_fall_back_to_private(env, apt):
    apt.default_madison = _madison(FAKE_PACKAGE, ("9.8.0-1", "bookworm"))
    apt.download_fails_default = True
    apt.private_madison = _madison(FAKE_PACKAGE, ("9.8.3-1", "bookworm"))
    res = fetch_tree(FAKE_VERSION)
    assert (res.version, res.suite) == ("9.8.3-1", "bookworm")
    assert any("update" in c for c in apt.apt_calls())


@needs_dpkg
def test_fetch_full_tree(env, apt):
    apt.default_madison = _madison(FAKE_PACKAGE, ("9.8.3-1", "bookworm"))
    dest = env.tmp / "dest"
    res = fetch_tree(FAKE_VERSION, dest=dest, full=True)
    assert res.path == dest / f"{FAKE_PACKAGE}-full"
    assert _files(res.path) == set(SUBSET_FILES + OTHER_FILES) | {F.METADATA_NAME}
    assert "--wildcards" not in next(c for c in apt.calls if c[0] == "tar")
    # The apt state stays in the cache dir, not in dest.
    assert not (dest / ".apt").exists()


@needs_dpkg
def test_second_call_is_a_cache_hit(env, apt):
    apt.default_madison = _madison(FAKE_PACKAGE, ("9.8.3-1", "bookworm"))
    first = fetch_tree(FAKE_VERSION)
    n = len(apt.calls)
    second = fetch_tree(FAKE_VERSION)
    assert len(apt.calls) == n  # no apt, dpkg or tar at all
    assert second.cached and not first.cached
    assert (second.path, second.version, second.suite) == (first.path, first.version, first.suite)
    # Subset and full trees are cached apart.
    assert fetch_tree(FAKE_VERSION, full=True).path != first.path


@needs_dpkg
def test_failed_extraction_leaves_nothing(env, apt):
    apt.default_madison = _madison(FAKE_PACKAGE, ("9.8.3-1", "bookworm"))
    apt.tar_fails = True
    with pytest.raises(FetchError, match="extracting linux-source-9.8.tar.xz failed: tar: Unexpected EOF"):
        fetch_tree(FAKE_VERSION)
    assert not (env.cache / FAKE_PACKAGE).exists()
    assert _no_temp_left(env.cache)


@needs_dpkg
def test_interrupted_fetch_is_not_a_cache_hit(env, apt):
    # A temporary dir left by a killed run is ignored; the tree appears whole or not at all.
    env.cache.mkdir(parents=True)
    (env.cache / f".tmp-{FAKE_PACKAGE}-dead" / FAKE_PACKAGE).mkdir(parents=True)
    apt.default_madison = _madison(FAKE_PACKAGE, ("9.8.3-1", "bookworm"))
    res = fetch_tree(FAKE_VERSION)
    assert not res.cached and (res.path / "arch/x86/kvm/mmu/mmu.c").is_file()


def test_foreign_directory_in_the_way(env, apt):
    (env.cache / FAKE_PACKAGE).mkdir(parents=True)
    with pytest.raises(FetchError, match="exists but is not a tree fetched by kvm-refactor"):
        fetch_tree(FAKE_VERSION)
    assert apt.calls == []


# ---------------------------------------------------------------------- errors


def _one_line_without_mirror(exc: FetchError) -> str:
    msg = str(exc)
    assert "\n" not in msg
    assert "mirror.invalid" not in msg and "://" not in msg
    return msg


@pytest.mark.parametrize("bad", ["abc", "6", "6.1.2", "", "6.1; rm -rf /"])
def test_invalid_version(env, apt, bad):
    with pytest.raises(FetchError, match="invalid kernel version"):
        fetch_tree(bad)
    assert apt.calls == []


def test_accepts_package_name(env, apt):
    apt.default_madison = apt.private_madison = _madison("linux-source-6.1", ("6.1.176-1", "bookworm"))
    apt.download_stderr = "E: stop here"
    with pytest.raises(FetchError, match="download linux-source-6.1=6.1.176-1"):
        fetch_tree("linux-source-6.1")


def test_unknown_version(env, apt):
    with pytest.raises(FetchError) as info:
        fetch_tree("9.9")
    assert _one_line_without_mirror(info.value) == (
        "no Debian package linux-source-9.9 in bookworm, bullseye, trixie, trixie-backports, sid"
    )


def test_no_network(env, apt):
    apt.update_stderr = "".join(
        f"W: Failed to fetch {MIRROR}/dists/{s}/InRelease  Could not resolve 'mirror.invalid'\n"
        for s in ("bookworm", "bullseye", "trixie", "trixie-backports", "sid")
    ) + "W: Some index files failed to download. They have been ignored, or old ones used instead.\n"
    with pytest.raises(FetchError) as info:
        fetch_tree("7.2")
    assert _one_line_without_mirror(info.value) == "cannot reach the Debian mirror: Could not resolve the mirror"


def test_some_suites_unreachable(env, apt):
    apt.update_stderr = f"W: Failed to fetch {MIRROR}/dists/sid/InRelease  Connection timed out\n"
    with pytest.raises(FetchError) as info:
        fetch_tree("7.2")
    msg = _one_line_without_mirror(info.value)
    assert msg.startswith("linux-source-7.2 not found") and "Connection timed out" in msg


def test_apt_update_failure(env, apt):
    apt.update_rc = 100
    apt.update_stderr = "E: Could not get lock /x/lists/lock. It is held by process 1 (apt-get)\n"
    with pytest.raises(FetchError) as info:
        fetch_tree("7.2")
    assert _one_line_without_mirror(info.value).startswith(
        "apt-get update (private sources) failed: Could not get lock"
    )


def test_download_failure(env, apt):
    apt.private_madison = _madison("linux-source-7.2", ("7.2.13-1", "sid"))
    apt.download_stderr = (
        "Get:1 something\nE: Failed to fetch http://mirror.invalid/debian/pool/main/l/x.deb  404  Not Found\n"
    )
    with pytest.raises(FetchError) as info:
        fetch_tree("7.2")
    assert _one_line_without_mirror(info.value) == (
        "apt-get download linux-source-7.2=7.2.13-1 failed: Failed to fetch <mirror> 404 Not Found"
    )


def test_no_apt(env, apt):
    apt.missing = {"apt-cache"}
    with pytest.raises(FetchError, match="apt-cache not found"):
        fetch_tree("6.1")


def test_deb_without_source_tarball(env, apt, tmp_path):
    root = tmp_path / "empty"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: linux-source-9.8\nVersion: 9.8.3-1\nArchitecture: all\nMaintainer: T <t@example.invalid>\n"
        "Description: x\n"
    )
    apt.deb = tmp_path / "empty.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(apt.deb)], check=True, capture_output=True)
    apt.default_madison = _madison(FAKE_PACKAGE, ("9.8.3-1", "bookworm"))
    with pytest.raises(FetchError, match=r"holds no /usr/src/linux-source-9.8.tar.xz"):
        fetch_tree(FAKE_VERSION)
    assert _no_temp_left(env.cache) and not (env.cache / FAKE_PACKAGE).exists()


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get")
def test_unreachable_mirror_with_real_apt(tmp_path, monkeypatch):
    """Real apt-get update against a closed loopback port: a one-line reason, no traceback."""
    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(tmp_path / "cache"))
    (tmp_path / "sources.list").write_text("deb http://127.0.0.1:9/debian bookworm main\n")
    (tmp_path / "parts").mkdir()
    monkeypatch.setattr(A, "apt_source_paths", lambda: (tmp_path / "sources.list", tmp_path / "parts"))
    monkeypatch.setattr(A, "private_suites", lambda m, extra=("sid",): list(m.suites) + ["sid"])
    real_private = AptConfig.private.__func__
    monkeypatch.setattr(
        AptConfig,
        "private",
        classmethod(lambda cls, state: AptConfig("private", real_private(cls, state).options + ("-o", "Acquire::Retries=0"))),
    )
    with pytest.raises(FetchError) as info:
        fetch_tree("9.7")  # not in the machine's own lists, so the private lists are needed
    msg = str(info.value)
    assert "\n" not in msg and "127.0.0.1" not in msg
    assert msg.startswith("cannot reach the Debian mirror:"), msg


# -------------------------------------------------------------------------- CLI


def test_cli_prints_the_result(monkeypatch, tmp_path):
    seen = {}

    def fake(version, dest=None, full=False, progress=None):
        seen.update(version=version, dest=dest, full=full, progress=progress)
        return FetchResult(tmp_path / "linux-source-6.1-full", "linux-source-6.1", "6.1.176-1", "bookworm", False)

    monkeypatch.setattr("refactor.cli.fetch.fetch_tree", fake)
    monkeypatch.setenv("CI", "true")
    res = CliRunner().invoke(fetch_tree_cmd, ["6.1", "--full", "--dest", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert res.output == f"linux-source-6.1 6.1.176-1 (bookworm) -> {tmp_path / 'linux-source-6.1-full'}\n"
    assert seen == {"version": "6.1", "dest": tmp_path, "full": True, "progress": None}


def test_cli_error_is_one_line_exit_2(monkeypatch):
    def fake(*a, **k):
        raise FetchError("no Debian package linux-source-9.9 in bookworm, sid")

    monkeypatch.setattr("refactor.cli.fetch.fetch_tree", fake)
    res = CliRunner().invoke(fetch_tree_cmd, ["9.9"])
    assert res.exit_code == 2
    assert res.output == "kvm-refactor: error: no Debian package linux-source-9.9 in bookworm, sid\n"
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_cli_progress_only_on_a_terminal(monkeypatch):
    from refactor.cli import fetch as cli_fetch

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    monkeypatch.delenv("CI", raising=False)
    assert cli_fetch._show_progress()
    monkeypatch.setenv("CI", "true")
    assert not cli_fetch._show_progress()
    monkeypatch.delenv("CI")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not cli_fetch._show_progress()


def test_cli_progress_bar_runs(monkeypatch, tmp_path):
    from refactor.cli import fetch as cli_fetch

    def fake(version, dest=None, full=False, progress=None):
        for step in F.FETCH_STEPS:
            progress(step, f"doing {step}")
        return FetchResult(tmp_path, "linux-source-6.1", "6.1.176-1", "bookworm", True)

    monkeypatch.setattr(cli_fetch, "fetch_tree", fake)
    monkeypatch.setattr(cli_fetch, "_show_progress", lambda: True)
    res = CliRunner().invoke(fetch_tree_cmd, ["6.1"])
    assert res.exit_code == 0, res.output
    assert "linux-source-6.1 6.1.176-1 (bookworm) -> " in res.output and "(cached)" in res.output


# -------------------------------------------------------- bundled test tarballs


BUNDLED = F.default_tarball_dir()
needs_bundled = pytest.mark.skipif(
    not (BUNDLED / "linux-kvm-6.1.tar.xz").is_file(), reason=f"no bundled tarballs in {BUNDLED}"
)


@needs_bundled
def test_bundled_tarball_trees(tmp_path):
    trees = bundled_tarball_trees(BUNDLED, tmp_path / "trees")
    assert {"6.1", "7.2", "7.3"} <= set(trees)
    for version, root in trees.items():
        assert root.name == f"linux-source-{version}"
        assert (root / "Makefile").is_file()
        assert (root / "arch/x86/kvm/mmu/mmu.c").is_file()
    assert "PATCHLEVEL = 1" in (trees["6.1"] / "Makefile").read_text()
    assert _no_temp_left(tmp_path / "trees")


@needs_bundled
def test_bundled_trees_are_not_extracted_twice(tmp_path, monkeypatch):
    cache = tmp_path / "trees"
    first = bundled_tarball_trees(BUNDLED, cache)
    marker = first["6.1"] / "Makefile"
    mtime = marker.stat().st_mtime_ns

    def refuse(*a, **k):
        raise AssertionError("extracted again")

    monkeypatch.setattr(F.tarfile, "open", refuse)
    assert bundled_tarball_trees(BUNDLED, cache) == first
    assert marker.stat().st_mtime_ns == mtime


def _small_tarball(path: Path, top: str, body: str) -> None:
    with tarfile.open(path, "w:xz") as tf:
        data = body.encode()
        info = tarfile.TarInfo(f"{top}/Makefile")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))


def test_bundled_trees_keyed_by_content(tmp_path):
    src, cache = tmp_path / "src", tmp_path / "cache"
    src.mkdir()
    _small_tarball(src / "linux-kvm-9.1.tar.xz", "linux-source-9.1", "one\n")
    (src / "README.md").write_text("not a tarball")
    (src / "linux-kvm-9.2.tar.gz").write_text("not matching")
    first = bundled_tarball_trees(src, cache)
    assert list(first) == ["9.1"]
    _small_tarball(src / "linux-kvm-9.1.tar.xz", "linux-source-9.1", "two\n")
    second = bundled_tarball_trees(src, cache)
    assert second["9.1"] != first["9.1"]
    assert (second["9.1"] / "Makefile").read_text() == "two\n"
    assert (first["9.1"] / "Makefile").read_text() == "one\n"  # the old one is untouched


def test_bundled_bad_tarballs(tmp_path):
    src, cache = tmp_path / "src", tmp_path / "cache"
    src.mkdir()
    _small_tarball(src / "linux-kvm-9.3.tar.xz", "wrong-top", "x\n")
    with pytest.raises(FetchError, match="does not unpack to linux-source-9.3/"):
        bundled_tarball_trees(src, cache)
    assert list(cache.iterdir()) == []  # nothing half-written
    (src / "linux-kvm-9.3.tar.xz").write_bytes(b"not xz")
    with pytest.raises(FetchError, match="cannot unpack linux-kvm-9.3.tar.xz"):
        bundled_tarball_trees(src, cache)
    assert list(cache.iterdir()) == []
    with pytest.raises(FetchError, match="no tarball directory"):
        bundled_tarball_trees(tmp_path / "missing", cache)


def test_default_dirs(monkeypatch, tmp_path):
    monkeypatch.setenv("KVM_REFACTOR_TREES", str(tmp_path / "t"))
    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(tmp_path / "c"))
    assert F.default_tarball_dir() == tmp_path / "t"
    assert F.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("KVM_REFACTOR_TREES")
    monkeypatch.delenv("KVM_REFACTOR_CACHE")
    repo = Path(F.__file__).resolve().parents[2]
    assert F.default_tarball_dir() == repo.parent / "shared" / "kernel"
    assert F.default_cache_dir() == Path.home() / ".cache" / "kvm-refactor" / "trees"


# ------------------------------------------------------------ real download


@pytest.mark.slow
def test_real_fetch_of_6_1_subset(tmp_path, monkeypatch):
    """Downloads linux-source-6.1 from Debian (about 140 MB) and extracts the KVM subset."""
    if shutil.which("apt-get") is None:
        pytest.skip("needs apt-get")
    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(tmp_path / "cache"))
    res = fetch_tree("6.1", dest=tmp_path / "trees")
    assert res.package == "linux-source-6.1" and res.version.startswith("6.1.")
    assert res.suite.startswith("bookworm") and not res.cached
    assert (res.path / "arch/x86/kvm/mmu/mmu.c").is_file()
    assert (res.path / "include/linux/kvm_host.h").is_file()
    assert not (res.path / "drivers").exists()
    assert "PATCHLEVEL = 1" in (res.path / "Makefile").read_text()
    again = fetch_tree("6.1", dest=tmp_path / "trees")
    assert again.cached and again.version == res.version
