"""Half-done trees: an interrupted --in-place or a hand-started port.

The tree is fixtures/mini-kvm with some files taken from its own full
rewrite: `scan` says `layout: mixed` and what is old and new per file, and
`rewrite` completes it to exactly the full rewrite (no second walker
parameter, no double `->w`), idempotently.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import FIXTURE_TREE
from refactor.cli.app import main

HEADER = "arch/x86/include/asm/kvm_host.h"
MMU_C = "arch/x86/kvm/mmu/mmu.c"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    tree = tmp_path_factory.mktemp("full") / "tree"
    shutil.copytree(FIXTURE_TREE, tree)
    assert run("rewrite", tree, "--in-place").exit_code == 0
    return tree


def half(tmp_path: Path, full: Path, new_files: list[str], names: str | None = None) -> Path:
    tree = tmp_path / "half"
    shutil.copytree(FIXTURE_TREE, tree)
    for rel in new_files:
        shutil.copy(full / rel, tree / rel)
    return tree


def files_of(tree: Path) -> dict[str, str]:
    return {p.relative_to(tree).as_posix(): p.read_text() for p in sorted(tree.rglob("*.[ch]"))}


@pytest.mark.parametrize("done", [[MMU_C], [HEADER], [HEADER, MMU_C]])
def test_rewrite_completes_a_half_done_tree(tmp_path, full, done):
    tree = half(tmp_path, full, done)
    scan = run("scan", tree, "--no-cache")
    assert "layout: mixed" in scan.stdout
    res = run("rewrite", tree, "--in-place")
    assert res.exit_code == 0, res.stderr
    got = files_of(tree)
    for rel, text in got.items():
        assert "struct kvm_pagewalk *w, struct kvm_pagewalk *w" not in text
        assert "->w->w" not in text
    assert got == files_of(full)
    again = run("rewrite", tree)
    assert again.exit_code == 0 and again.stdout == ""


def test_scan_says_what_is_old_and_new_per_file(tmp_path, full):
    tree = half(tmp_path, full, [MMU_C])
    text = run("scan", tree, "--no-cache").stdout
    lines = {ln.split()[1].rstrip(":"): ln for ln in text.splitlines() if ln.startswith("  ") and ": old:" in ln}
    assert lines[MMU_C].split()[0] == "new" and "old: - |" in lines[MMU_C] and "gva_walk" in lines[MMU_C]
    assert lines["arch/x86/kvm/x86.c"].split()[0] == "old" and "walk_mmu" in lines["arch/x86/kvm/x86.c"]
    data = json.loads(run("scan", tree, "--no-cache", "--format", "json").stdout)
    assert data["layout"] == "mixed"
    assert data["layout_by_file"][MMU_C]["old"] == {}
    assert data["layout_by_file"]["arch/x86/kvm/x86.c"]["old"]["walk_mmu"] >= 1


def test_half_done_tree_keeps_its_walker_names(tmp_path, full):
    tree = half(tmp_path, full, [HEADER])
    res = run("rewrite", tree, "--names", "v1")
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert "half rewritten with walkers gva_walk, ngpa_walk" in res.stderr


@pytest.mark.parametrize("done", [[HEADER, MMU_C], [MMU_C]])
def test_lint_reports_every_remaining_old_use(tmp_path, full, done):
    from refactor.index.indexer import build_index
    from refactor.index.layout_files import is_old
    from refactor.rules import load_rules

    tree = half(tmp_path, full, done)
    res = run("lint", "--format", "json", "--no-cache", tree)
    assert res.exit_code == 1
    found = {(f["file"], f["line"]) for f in json.loads(res.stdout)["findings"]}
    rules = load_rules()
    old = {(r.file, r.line) for r in build_index(tree).references
           if is_old(r, rules) and r.use != "member-declaration"}
    assert old and old <= found, sorted(old - found)


def test_lint_reports_walker_mmu_mismatches_of_a_half_done_tree(tmp_path, full):
    # mmu.h already passes walkers; paging_tmpl.h still hands them its struct kvm_mmu *.
    tree = half(tmp_path, full, [HEADER, "arch/x86/kvm/mmu.h"])
    res = run("lint", "--format", "json", "--no-cache", tree)
    found = {(f["file"], f["line"], f["rule"]) for f in json.loads(res.stdout)["findings"]}
    tmpl = "arch/x86/kvm/mmu/paging_tmpl.h"
    src = (tree / tmpl).read_text().splitlines()
    calls = [i + 1 for i, ln in enumerate(src) if "permission_fault(vcpu, mmu" in ln or "kvm_translate_gpa(vcpu, mmu" in ln]
    assert len(calls) == 2
    assert {(tmpl, n) for n in calls} <= {(f, n) for f, n, rule in found if rule == "KVM020"}


@pytest.mark.slow
def test_half_done_61_completes_to_the_one_shot_rewrite(tmp_path, trees):
    # Headers, mmu.h, mmu.c and paging_tmpl.h already rewritten (an interrupted port).
    full_tree = tmp_path / "full"
    shutil.copytree(trees["6.1"], full_tree)
    assert run("rewrite", full_tree, "--in-place").exit_code == 0
    tree = tmp_path / "half"
    shutil.copytree(trees["6.1"], tree)
    for rel in (HEADER, "arch/x86/kvm/mmu.h", MMU_C, "arch/x86/kvm/mmu/paging_tmpl.h"):
        shutil.copy(full_tree / rel, tree / rel)
    assert "layout: mixed" in run("scan", "--no-cache", tree).stdout
    res = run("rewrite", tree, "--in-place")
    assert res.exit_code == 0, res.stderr
    assert files_of(tree) == files_of(full_tree)
