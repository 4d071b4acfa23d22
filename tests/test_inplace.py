"""`rewrite --in-place` is all or nothing: pre-checks, then a journalled write a rerun finishes or undoes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from refactor.apply import inplace
from refactor.cli.app import main

REPO = Path(__file__).resolve().parent.parent
MINI = REPO / "fixtures" / "mini-kvm"


def snapshot(tree: Path) -> dict[str, bytes]:
    return {p.relative_to(tree).as_posix(): p.read_bytes() for p in sorted(tree.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(tree).parts}


@pytest.fixture(scope="module")
def states(tmp_path_factory):
    """The mini tree before and after a plain in-place rewrite."""
    base = tmp_path_factory.mktemp("states")
    old, new = base / "old", base / "new"
    shutil.copytree(MINI, old)
    shutil.copytree(MINI, new)
    res = CliRunner().invoke(main, ["rewrite", "--in-place", str(new)])
    assert res.exit_code == 0, res.stderr
    assert snapshot(old) != snapshot(new)
    return snapshot(old), snapshot(new)


def run(tree: Path, cache: Path, fault: int | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, KVM_REFACTOR_CACHE=str(cache), PYTHONPATH=str(REPO))
    env.pop(inplace.FAULT_ENV, None)
    if fault is not None:
        env[inplace.FAULT_ENV] = str(fault)
    return subprocess.run([sys.executable, "-m", "refactor", "rewrite", "--in-place", str(tree)],
                          capture_output=True, text=True, env=env)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=T", "-c", "user.email=t@example.invalid", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout


def test_killed_at_every_write_point(tmp_path, states):
    """Killed after its k-th write, for every k: the tree is old, new, or has a journal a rerun completes."""
    old, new = states
    cache = tmp_path / "cache"
    k, seen_old, seen_journal = 1, 0, 0
    while True:
        tree = tmp_path / f"t{k}"
        shutil.copytree(MINI, tree)
        proc = run(tree, cache, fault=k)
        if proc.returncode == 0:  # k is past the last write point: the run completed
            assert snapshot(tree) == new
            break
        assert proc.returncode == 137, proc.stderr
        journal = (tree / inplace.JOURNAL).exists()
        state = snapshot(tree)
        visible = {rel: data for rel, data in state.items() if not Path(rel).name.startswith(".")}
        committed = journal and json.loads((tree / inplace.JOURNAL).read_text())["state"] == "commit"
        if not committed:  # before the commit point the files are untouched
            assert visible in (old, new), f"mixed tree without a committed journal after write {k}"
        seen_old += visible == old
        seen_journal += committed
        if not journal:
            assert state in (old, new), f"stray files without a journal after write {k}: {set(state) - set(old)}"
        # Any command reading the tree refuses it until the rerun.
        if journal:
            res = CliRunner().invoke(main, ["scan", str(tree)])
            assert res.exit_code == 2 and "interrupted" in res.stderr
        rerun = CliRunner().invoke(main, ["rewrite", "--in-place", str(tree)], env={"KVM_REFACTOR_CACHE": str(cache)})
        assert rerun.exit_code == 0, rerun.stderr
        assert snapshot(tree) == new, f"rerun after write {k} did not give the new tree"
        assert not list(tree.rglob(".*kvm-refactor*")), k
        k += 1
    # 7 files: journal, 7 x (new file, backup link), journal, 7 renames, 7 unlinks, journal removed.
    assert k == 32, k
    assert seen_old and seen_journal


@pytest.mark.parametrize("fault", [5, 20])
def test_killed_on_a_git_tree(tmp_path, states, fault):
    old, new = states
    tree = tmp_path / "repo"
    shutil.copytree(MINI, tree)
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "base")
    assert run(tree, tmp_path / "c", fault=fault).returncode == 137
    assert run(tree, tmp_path / "c").returncode == 0
    assert snapshot(tree) == new
    assert git(tree, "status", "--porcelain", "--untracked-files=all").strip().count("\n") == 6  # 7 modified


def refused(tree: Path, pattern: str) -> None:
    before = snapshot(tree)
    res = CliRunner().invoke(main, ["rewrite", "--in-place", str(tree)])
    assert res.exit_code == 2, (res.exit_code, res.stderr)
    assert len(res.stderr.strip().splitlines()) == 1 and pattern in res.stderr, res.stderr
    assert snapshot(tree) == before
    assert not list(tree.rglob(".*kvm-refactor*"))


def test_untracked_file_in_git_tree(tmp_path):
    tree = tmp_path / "repo"
    shutil.copytree(MINI, tree)
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "rm", "-q", "--cached", "arch/x86/kvm/mmu/mmu.c")
    git(tree, "commit", "-q", "-m", "base")
    refused(tree, "mmu.c: not tracked by git")


def test_repository_without_commits(tmp_path):
    tree = tmp_path / "repo"
    shutil.copytree(MINI, tree)
    git(tree, "init", "-q")
    refused(tree, "has no commits")


def test_dirty_git_tree(tmp_path):
    tree = tmp_path / "repo"
    shutil.copytree(MINI, tree)
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "base")
    (tree / "Makefile").write_text("changed\n")
    refused(tree, "uncommitted changes")


def test_symlinked_directory_inside(tmp_path):
    """vmx/ is a symlink to elsewhere in the tree: read through (no gap in the index), never written through."""
    tree = tmp_path / "t"
    shutil.copytree(MINI, tree)
    (tree / "arch/x86/kvm/vmx").rename(tree / "vmx-real")
    os.symlink("../../../vmx-real", tree / "arch/x86/kvm/vmx")
    res = CliRunner().invoke(main, ["scan", "--format", "json", str(tree)])
    assert any(r["file"].startswith("arch/x86/kvm/vmx/") for r in json.loads(res.stdout)["references"])
    refused(tree, "vmx: symbolic link on the way")
    assert (tree / "arch/x86/kvm/vmx").is_symlink()


def test_symlinked_kvm_directory_outside(tmp_path):
    tree = tmp_path / "t"
    shutil.copytree(MINI, tree)
    shutil.move(tree / "arch/x86/kvm", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", tree / "arch/x86/kvm")
    before = snapshot(tmp_path / "elsewhere")
    refused(tree, "outside the tree")
    assert snapshot(tmp_path / "elsewhere") == before


def test_symlinked_header_outside(tmp_path):
    tree = tmp_path / "t"
    shutil.copytree(MINI, tree)
    h = tree / "arch/x86/include/asm/kvm_host.h"
    shutil.move(h, tmp_path / "kvm_host.h")
    os.symlink(tmp_path / "kvm_host.h", h)
    refused(tree, "outside the tree")


def test_unwritable_subdirectory(tmp_path, monkeypatch):
    """As with `chmod a-w vmx/` for a normal user (or a read-only mount): nothing is written at all."""
    tree = tmp_path / "t"
    shutil.copytree(MINI, tree)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if "vmx" in str(p) and mode & os.W_OK
                        else real(p, mode, **k))
    refused(tree, "cannot write")


def test_unreadable_file(tmp_path, monkeypatch):
    tree = tmp_path / "t"
    shutil.copytree(MINI, tree)
    # As with `chmod 000 x86.c` for a normal user: the read in refactor.frontend.source fails.
    monkeypatch.setattr("refactor.frontend.source.open", lambda p, *a: (_ for _ in ()).throw(
        PermissionError(13, "Permission denied", str(p))) if str(p).endswith("x86.c") else open(p, *a),
        raising=False)
    refused(tree, "x86.c: cannot read: Permission denied")


def test_failure_during_prepare_rolls_back(tmp_path, monkeypatch, states):
    """An OSError while writing the new files (a full disk): the old tree, no stray files, exit 2."""
    old, _ = states
    tree = tmp_path / "t"
    shutil.copytree(MINI, tree)
    real = os.link
    calls = []

    def link(src, dst, **k):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(dst))
        return real(src, dst, **k)

    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(Path, "write_bytes", lambda self, data: (_ for _ in ()).throw(
        OSError(28, "No space left on device", str(self))))
    res = CliRunner().invoke(main, ["rewrite", "--in-place", str(tree)])
    assert res.exit_code == 2 and "No space left on device; nothing was changed" in res.stderr
    assert snapshot(tree) == old
