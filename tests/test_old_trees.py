"""5.10 LTS: the oldest tree the rewrite is tested on.

struct kvm_mmu of 5.x has members 6.x dropped (translate_gpa, mmu_role,
root_level, shadow_root_level, root_hpa, lm_root, ...): rules/layout.toml
places each, so the rewrite has no unknown field, no site for a human, no
old-layout name left in code, and is idempotent.  The Kbuild build of the
rewrite (and of the pristine tree, with the same knobs) is in `make slow`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from old_trees import old_tree
from refactor.index.indexer import build_index
from refactor.plan.coverage import unplaced_members
from refactor.plan.rewrite import plan_rewrite
from refactor.rules import load_rules

OLD_FIELDS = ("translate_gpa", "mmu_role", "root_level", "shadow_root_level", "root_hpa", "lm_root",
              "ept_ad", "direct_map", "last_nonleaf_level", "nx", "root_pgd")


@pytest.fixture(scope="module")
def tree510() -> Path:
    return old_tree("5.10")


@pytest.fixture(scope="module")
def rewritten510(tree510, tmp_path_factory) -> tuple[Path, object]:
    """A copy of the 5.10 KVM sources with the rewrite applied."""
    from refactor.frontend.source import discover

    plan = plan_rewrite(tree510, "upstream", load_rules())
    dest = tmp_path_factory.mktemp("r510") / "tree"
    for sf in discover(tree510):
        target = dest / sf.rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(plan.results.get(sf.rel, sf.data))
    shutil.copy(tree510 / "Makefile", dest / "Makefile")
    return dest, plan


def test_510_struct_kvm_mmu_is_fully_placed(tree510):
    index = build_index(tree510)
    assert index.layout == "old"
    members = index.program.structs.members["kvm_mmu"]
    assert set(OLD_FIELDS) <= set(members), "not a 5.x struct kvm_mmu"
    assert unplaced_members(index.program, load_rules()) == ([], [])


PKRU_PREREQ = "prereq-pkru-mask-reset"


def _humans(plan) -> list[str]:
    """The sites for a human other than the missing upstream pkru_mask fix (below)."""
    return [f"{h.file}:{h.line}: {h.why}" for h in plan.humans if PKRU_PREREQ not in h.why]


def test_510_rewrite_needs_the_pkru_mask_fix_first(rewritten510, tree510, tmp_path):
    """5.10.223 lacks upstream's reset of mmu->pkru_mask: once the rewrite shares one walker
    between L1's and L2's walks, the stale mask the pristine tree keeps is gone, a behaviour
    change `verify` found on 5.10 (tests/test_native_old_trees.py).  The rewrite says so at
    the line that accumulates, naming the commit to backport first; with that fix applied
    (the reset moved before the early returns) the site goes."""
    _tree, plan = rewritten510
    pk = [h for h in plan.humans if PKRU_PREREQ in h.why]
    assert [(h.file, h.text) for h in pk] == [("arch/x86/kvm/mmu/mmu.c",
                                               "mmu->pkru_mask |= (pkey_bits & 3) << pfec;")]
    assert "a3ca5281bb77" in pk[0].why and "Reset mmu->pkru_mask to avoid stale data" in pk[0].why
    fixed = tmp_path / "tree"
    shutil.copytree(tree510 / "arch/x86/kvm", fixed / "arch/x86/kvm")
    shutil.copytree(tree510 / "arch/x86/include", fixed / "arch/x86/include")
    mmu = fixed / "arch/x86/kvm/mmu/mmu.c"
    text = mmu.read_text()
    head, sep, tail = text.partition("\tbool wp;\n\n\tif (ept) {\n\t\tmmu->pkru_mask = 0;\n")
    assert sep, "update_pkru_bitmask() is not 5.10.223's"
    mmu.write_text(head + "\tbool wp;\n\n\tmmu->pkru_mask = 0;\n\n\tif (ept) {\n" + tail)
    assert not [h for h in plan_rewrite(fixed, "upstream", load_rules()).humans if PKRU_PREREQ in h.why]


def test_510_rewrite_needs_no_other_human_and_leaves_no_old_name(rewritten510):
    tree, plan = rewritten510
    assert _humans(plan) == []
    rules = load_rules()
    index = build_index(tree)
    assert index.layout == "new"
    removed = {n for n, m in rules.vcpu_old.items() if m.removed} | {rules.types["old_format"]}
    left = [(r.file, r.line, r.symbol) for r in index.code_references() if r.symbol in removed]
    assert left == []
    # The nested walk of paging_tmpl.h stays the L2 walk: never redirected to root_mmu.
    tmpl = (tree / "arch/x86/kvm/mmu/paging_tmpl.h").read_text()
    assert "&vcpu->arch.nested_mmu" not in tmpl
    assert "walk_addr_generic)(walker, vcpu, &vcpu->arch.gva_walk" in tmpl
    assert "&vcpu->arch.root_mmu, addr" not in tmpl


def test_510_translate_gpa_hook_becomes_the_helper(rewritten510):
    # One gva walker for L1 and L2: the nested stage is decided at the call, as upstream.
    tree, plan = rewritten510
    code = {rel: (tree / rel).read_text() for rel in plan.results}
    assert not [rel for rel, text in code.items() if "translate_gpa(" in text.replace("kvm_translate_gpa(", "")
                and "static gpa_t translate_gpa(" not in text]
    assert "->translate_gpa" not in "".join(code.values()) and ".translate_gpa" not in "".join(code.values())
    x86_h = code["arch/x86/kvm/x86.h"]
    assert "static inline gpa_t kvm_translate_gpa(struct kvm_vcpu *vcpu, struct kvm_pagewalk *w," in x86_h
    assert "if (!mmu_is_nested(vcpu) || w == &vcpu->arch.ngpa_walk)" in x86_h
    assert "kvm_translate_gpa(vcpu, w, gfn_to_gpa(table_gfn)," in code["arch/x86/kvm/mmu/paging_tmpl.h"]


def test_510_rewrite_is_idempotent(rewritten510):
    tree, _ = rewritten510
    again = plan_rewrite(tree, "upstream", load_rules())
    assert again.results == {} and again.humans == []


@pytest.mark.slow
def test_rewritten_510_builds_with_kbuild(monkeypatch):
    from refactor.kernel.build import check_tree

    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(Path.home() / ".cache" / "kvm-refactor"))
    tree = old_tree("5.10", full=True)
    pristine = check_tree(tree)
    assert pristine.ok, pristine.log_tail
    plan = plan_rewrite(tree, "upstream", index=build_index(tree))
    assert _humans(plan) == []
    result = check_tree(tree, plan)
    assert result.ok, "\n".join(f"{e.file}:{e.line}: {e.message} <- {e.site}" for e in result.errors[:10]) \
        or result.log_tail
