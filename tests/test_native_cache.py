"""Pruning the native engine cache (emulator/native/cache.py, `kvm-refactor cache prune`).

Every test works on a cache of its own under tmp_path, laid out as build.py lays out the
real one (engines/KEY/, units/KEY/, objs/KEY.o, prep/HASH/, manifests/, tmp/), with the
last uses set through mtimes as build() records them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulator.native import cache as native_cache
from emulator.native.cache import GRACE, entries, parse_size, prune, prune_after_build, using

DAY = 86400
NOW = time.time()


def _put(path: Path, size: int, days_ago: float, name: str = "data") -> Path:
    """An entry (a directory with one file, or a file) last used DAYS_AGO days ago."""
    if path.suffix in (".o", ".tmp"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    else:
        path.mkdir(parents=True)
        (path / name).write_bytes(b"x" * size)
    stamp = NOW - days_ago * DAY
    os.utime(path, (stamp, stamp))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def cache(tmp_path):
    root = tmp_path / "native"
    _put(root / "engines" / "old", 100_000, 40, "engine")
    _put(root / "engines" / "recent", 100_000, 5, "engine")
    _put(root / "engines" / "first-layout", 100_000, 2, "cpuid_unit.c")
    _put(root / "units" / "gone", 50_000, 45, "unit.c.gz")
    _put(root / "units" / "kept", 50_000, 1, "unit.c.gz")
    _put(root / "objs" / "a.o", 20_000, 60)
    _put(root / "objs" / "b.o", 20_000, 3)
    _put(root / "prep" / "1ee89b09c3ec", 200_000, 31, "autoconf.h")
    (root / "prep" / "1ee89b09c3ec.lock").write_text("")
    _put(root / "out" / "338b51a36840", 300_000, 0.5 + GRACE / DAY, "vmlinux.o")
    _put(root / "tmp" / f"{_dead_pid()}-{time.time_ns()}", 10_000, 0.2)
    _put(root / "tmp" / f"{os.getpid()}-{time.time_ns()}", 10_000, 0.2)   # a build running now
    (root / "manifests").mkdir()
    (root / "manifests" / "arch_x86_kvm_x86.c.json").write_text(json.dumps(
        [{"deps": ["T:a.h"], "hits": {"d1": "gone"}}, {"deps": ["T:b.h"], "hits": {"d2": "kept", "d3": "gone"}}]))
    return root


def _names(found) -> set[str]:
    return {str(e.path.relative_to(e.path.parent.parent)) for e in found}


def test_age_and_earlier_layout_entries_go(cache):
    dead = next(p.name for p in (cache / "tmp").iterdir() if not p.name.startswith(f"{os.getpid()}-"))
    result = prune(cache, max_age_days=30, now=NOW)
    assert _names(result.removed) == {"engines/old", "engines/first-layout", "units/gone", "objs/a.o",
                                      "prep/1ee89b09c3ec", "out/338b51a36840", f"tmp/{dead}"}
    for e in result.removed:
        assert not e.path.exists()
    assert not (cache / "prep" / "1ee89b09c3ec.lock").exists()
    assert {"engines/recent", "units/kept", "objs/b.o"} <= _names(result.kept)
    assert (cache / "engines" / "recent" / "engine").is_file()
    assert (cache / "tmp" / next(p.name for p in (cache / "tmp").iterdir()
                                 if p.name.startswith(f"{os.getpid()}-"))).is_dir()
    assert result.removed_bytes >= 100_000 * 2 + 50_000 + 20_000 + 200_000 + 300_000
    # The manifests no longer name the unit that went.
    manifest = json.loads((cache / "manifests" / "arch_x86_kvm_x86.c.json").read_text())
    assert manifest == [{"deps": ["T:b.h"], "hits": {"d2": "kept"}}]
    # Nothing left behind in tmp/ by the removal itself.
    assert all(not p.name.startswith("pruned-") for p in (cache / "tmp").iterdir())


def test_dry_run_removes_nothing(cache):
    before = sorted(str(p) for p in cache.rglob("*"))
    result = prune(cache, max_age_days=30, dry_run=True, now=NOW)
    assert len(result.removed) == 7
    assert sorted(str(p) for p in cache.rglob("*")) == before


def test_size_cap_removes_least_recently_used_first(cache):
    sizes = {_names([e]).pop(): e.size for e in entries(cache)}
    keep_total = sizes["engines/recent"] + sizes["units/kept"] + sizes["objs/b.o"]
    own_tmp = next(n for n in sizes if n.startswith(f"tmp/{os.getpid()}-"))
    # No age limit: the cap alone removes, oldest first, until the rest fits.
    cap = keep_total + sizes[own_tmp]
    result = prune(cache, max_age_days=None, max_size=cap, now=NOW)
    assert _names(result.kept) == {"engines/recent", "units/kept", "objs/b.o", own_tmp}
    assert result.kept_bytes <= cap
    # A smaller cap: the oldest of the rest go (5 and 3 days); the work directory of a
    # running build (this process) stays and counts.
    result = prune(cache, max_age_days=None, max_size=sizes["units/kept"] + sizes[own_tmp] + 1, now=NOW)
    assert _names(result.removed) == {"engines/recent", "objs/b.o"}
    assert _names(result.kept) == {"units/kept", own_tmp}
    # Smaller than what is in use: that stays all the same, and is said so.
    result = prune(cache, max_age_days=None, max_size=1, now=NOW)
    assert _names(result.removed) == {"units/kept"} and _names(result.in_use) == {own_tmp}
    assert (cache / own_tmp).is_dir()


def test_entries_in_use_stay(cache, tmp_path):
    # Used a few minutes ago (a concurrent run's): kept whatever the limits say.
    fresh = _put(cache / "engines" / "fresh", 100_000, 5 / 1440, "engine")
    # An engine a process is running, last built long ago: kept too.
    running = cache / "engines" / "running"
    running.mkdir()
    shutil.copy(shutil.which("sleep"), running / "engine")
    proc = subprocess.Popen([str(running / "engine"), "30"])
    try:
        os.utime(running, (NOW - 90 * DAY, NOW - 90 * DAY))
        result = prune(cache, max_age_days=1, max_size=1, now=NOW)
    finally:
        proc.kill()
        proc.wait()
    assert fresh.is_dir() and running.is_dir()
    assert {"engines/fresh", "engines/running"} <= _names(result.in_use)
    assert "engines/recent" in _names(result.removed)


def test_a_build_holds_the_cache(cache, monkeypatch):
    """While a build runs, a prune does not start (after a build it skips; the command waits)."""
    with using(cache):
        assert prune(cache, max_age_days=30, wait=False, now=NOW) is None
        assert prune_after_build(cache, now=NOW) is None
    assert (cache / "engines" / "old").is_dir()
    # build() holds it for its whole run and prunes after it.
    from emulator.native import build as native_build

    seen = {}

    def fake_build(tree, root, progress, names, jobs):
        seen["during"] = prune(root, max_age_days=30, wait=False, now=NOW)
        return "exe", "6.1", None

    monkeypatch.setattr(native_build, "_build", fake_build)
    monkeypatch.setenv(native_cache.MAX_AGE_ENV, "30")
    assert native_build.build(Path("/nonexistent"), cache_dir=cache) == ("exe", "6.1", None)
    assert seen["during"] is None
    assert not (cache / "engines" / "old").exists()   # pruned after the build


def test_prune_after_build_runs_once_a_day(cache, monkeypatch):
    monkeypatch.setenv(native_cache.MAX_AGE_ENV, "30")
    monkeypatch.setenv(native_cache.MAX_SIZE_ENV, "0")
    first = prune_after_build(cache, now=NOW)
    assert first is not None and len(first.removed) == 7
    _put(cache / "engines" / "older", 1000, 90, "engine")
    assert prune_after_build(cache, now=NOW + 3600) is None      # pruned an hour ago
    assert (cache / "engines" / "older").is_dir()
    again = prune_after_build(cache, now=NOW + 2 * DAY)
    assert _names(again.removed) >= {"engines/older"}
    # Limits turned off: only the earlier layout's entries would go.
    monkeypatch.setenv(native_cache.MAX_AGE_ENV, "0")
    assert native_cache.policy_from_env() == (None, None)


def test_parse_size():
    assert parse_size("500M") == 500 << 20
    assert parse_size("1.5G") == int(1.5 * (1 << 30))
    assert parse_size("2GiB") == 2 << 30
    assert parse_size("123") == 123
    for bad in ("", "lots", "-1G", "G"):
        with pytest.raises(native_cache.CacheError):
            parse_size(bad)


def test_cache_prune_command(cache):
    from refactor.cli.app import main

    runner = CliRunner()
    out = runner.invoke(main, ["cache", "prune", "--cache-dir", str(cache), "--dry-run", "-v"])
    assert out.exit_code == 0, out.output
    assert "would remove engines/old" in out.output and "would remove 7 entries" in out.output
    assert (cache / "engines" / "old").is_dir()
    out = runner.invoke(main, ["cache", "prune", "--cache-dir", str(cache), "--max-size", "1G"])
    assert out.exit_code == 0 and "removed 7 entries" in out.output
    assert not (cache / "engines" / "old").exists() and (cache / "engines" / "recent").is_dir()
    bad = runner.invoke(main, ["cache", "prune", "--cache-dir", str(cache), "--max-size", "lots"])
    assert bad.exit_code == 2 and "bad size 'lots'" in bad.output
