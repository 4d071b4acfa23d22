"""What the native engine's glue adapts to (emulator/native/features.py, layout.py): the
tree's own declarations, read from its headers, never a version number.

Default suite, about a second: reads headers only (the real 6.1, 7.2 and 7.3 trees of
$KVM_REFACTOR_TREES; the fetched full 5.10 and 6.12 trees when they are in the cache),
no build.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from emulator.native.features import (param_count, struct_body, struct_members,
                                      tree_features)
from emulator.native.layout import layout_header
from refactor.rules import load_rules

FULL = Path.home() / ".cache" / "kvm-refactor" / "trees"


def _full(version: str) -> Path:
    tree = FULL / f"linux-source-{version}-full"
    if not (tree / "arch/x86/include/asm/kvm_host.h").is_file():
        pytest.skip(f"no full {version} tree in {FULL} (`kvm-refactor fetch-tree {version} --full`)")
    return tree


# -- the parser, on text shaped like the kernel's --------------------------------------------

OPS = """
struct kvm_x86_ops {
	const char *name;
	int (*get_cpl)(struct kvm_vcpu *vcpu);
	void (*tlb_flush_gva)(struct kvm_vcpu *vcpu, gva_t addr);   /* a comment; with (*x)( */
	union {
		u64 as_u64;
		struct { u32 a:4, b:4; };
	};
#ifdef CONFIG_X
	unsigned long regs_avail[2], regs_dirty[2];
#endif
	struct kvm_mmu_root_info prev_roots[KVM_MMU_NUM_PREV_ROOTS];
	DECLARE_BITMAP(irq_pending, 256);
	u64 pdptrs[4] __aligned(8);
};
"""


def test_struct_members_are_the_names_c_reaches():
    members = struct_members(struct_body(OPS, "kvm_x86_ops"))
    assert {"name", "get_cpl", "tlb_flush_gva", "as_u64", "a", "b", "regs_avail",
            "regs_dirty", "prev_roots", "pdptrs"} <= members
    # Not members: parameters of hooks, words of comments, a macro's arguments.
    assert not {"vcpu", "addr", "comment", "x", "irq_pending", "256"} & members


def test_a_struct_the_text_does_not_define_has_no_body():
    assert struct_body(OPS, "kvm_mmu") is None
    assert struct_body("void f(struct kvm_x86_ops *ops);\n", "kvm_x86_ops") is None


@pytest.mark.parametrize("params, n", [("void", 0), ("", 0), ("struct kvm_vcpu *vcpu", 1),
                                       ("struct kvm_vcpu *vcpu, struct kvm_mmu *mmu,\n\t"
                                        "unsigned long cr3", 3),
                                       ("int (*fn)(int a, int b), int c", 2)])
def test_param_count(params, n):
    assert param_count(params) == n


def test_calls_are_not_declarations(tmp_path):
    x86 = tmp_path / "arch/x86/kvm/x86.c"
    x86.parent.mkdir(parents=True)
    # A call with fewer arguments comes first; a column-0 declaration decides.
    x86.write_text("static void f(void)\n{\n\tkvm_ops_update(ops, 1);\n\tr = load_pdptrs(v, m, c);\n}\n\n"
                   "static inline void kvm_ops_update(struct kvm_x86_init_ops *ops)\n{\n}\n")
    f = tree_features(tmp_path)
    assert f["H_NARGS_kvm_ops_update"] == 1 and f["H_DEFINED_kvm_ops_update"] == 1
    assert "H_NARGS_load_pdptrs" not in f


# -- the real trees ---------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["6.1", "7.2", "7.3"])
def test_six_and_seven_have_static_calls_and_the_flush_tlb_names(trees, version):
    f = tree_features(trees[version])
    assert f["H_DEFINED_kvm_ops_update"] == 1
    assert f.get("H_HAS_kvm_x86_ops__flush_tlb_gva") == 1
    assert "H_HAS_kvm_x86_ops__tlb_flush_gva" not in f
    assert (f["H_NARGS_load_pdptrs"], f["H_NARGS_kvm_init_mmu"],
            f["H_NARGS_kvm_configure_mmu"]) == (2, 1, 4)
    assert f.get("H_HAS_kvm_mmu__root_role") == f.get("H_HAS_vcpu_svm__vmcb01") == 1
    assert f["H_DEFINED_kvm_set_cpuid"] == 1
    # 7.x added pte_access to kvm_translate_gpa().
    assert f["H_NARGS_kvm_translate_gpa"] == (5 if version == "6.1" else 6)


def test_510_is_described_by_its_own_declarations():
    f = tree_features(_full("5.10"))
    # No static calls for kvm_x86_ops (callers read the struct), 5.x hook names.
    assert "H_DEFINED_kvm_ops_update" not in f
    assert f.get("H_HAS_kvm_x86_ops__tlb_flush_gva") == 1
    assert "H_HAS_kvm_x86_ops__flush_tlb_gva" not in f
    # load_pdptrs() takes the MMU, kvm_init_mmu() a reset flag, no forced root level.
    assert (f["H_NARGS_load_pdptrs"], f["H_NARGS_kvm_init_mmu"],
            f["H_NARGS_kvm_configure_mmu"]) == (3, 2, 3)
    # root_hpa/mmu_role/direct_map instead of root/root_role; hsave instead of vmcb01.
    assert {"H_HAS_kvm_mmu__root_hpa", "H_HAS_kvm_mmu__mmu_role", "H_HAS_kvm_mmu__direct_map",
            "H_HAS_svm_nested_state__hsave", "H_HAS_kvm_mmu__translate_gpa"} <= set(f)
    assert not {"H_HAS_kvm_mmu__root_role", "H_HAS_vcpu_svm__vmcb01",
                "H_DEFINED_kvm_set_cpuid", "H_NARGS_kvm_translate_gpa"} & set(f)


def test_510_translates_nested_gpas_through_the_walked_mmus_hook():
    text, desc = layout_header(load_rules(), _full("5.10"))
    assert desc["layout"] == "old"
    assert ("#define H_TRANSLATE_GPA(vcpu, w, gpa, access, e) "
            "(w)->translate_gpa(vcpu, gpa, access, e)") in text
    assert "#define H_NARGS_load_pdptrs 3" in text
    assert "#define H_MMU_MMU_ROLE(mmu) ((mmu)->mmu_role)" in text


def test_a_rewrite_with_kvm_translate_gpa_in_x86_h_uses_it_on_the_gva_walker(tmp_path):
    """A rewrite of 5.10 defines kvm_translate_gpa() in x86.h (5.10 has no such helper in
    mmu.h): layout.py looks there too, and the walker is the rules' GVA walker."""
    rules = load_rules()
    names = rules.names("upstream")
    host = tmp_path / "arch/x86/include/asm/kvm_host.h"
    host.parent.mkdir(parents=True)
    host.write_text(f"struct {rules.types['walker']} {{\n\tu64 pdptrs[4];\n}};\n"
                    f"struct kvm_vcpu_arch {{\n\tstruct {rules.types['walker']} {names.gva};\n"
                    f"\tstruct {rules.types['walker']} {names.ngpa};\n}};\n")
    x86_h = tmp_path / "arch/x86/kvm/x86.h"
    x86_h.parent.mkdir(parents=True)
    x86_h.write_text(f"static inline gpa_t kvm_translate_gpa(struct kvm_vcpu *vcpu, "
                     f"struct {rules.types['walker']} *w,\n\t\tgpa_t gpa, u32 access,\n"
                     f"\t\tstruct x86_exception *exception)\n{{\n\treturn gpa;\n}}\n")
    text, desc = layout_header(rules, tmp_path)
    assert desc["layout"] == "new"
    assert f"#define H_GVA_WALKER(vcpu) (&vcpu->arch.{names.gva})" in text
    assert "kvm_translate_gpa(vcpu, w, gpa, access, e)" in text
    assert "#define H_MMU_MMU_ROLE(mmu) ((mmu)->w->mmu_role)" in text


def test_612_has_the_six_x_shape():
    f = tree_features(_full("6.12"))
    assert f["H_DEFINED_kvm_ops_update"] == 1 and f["H_NARGS_load_pdptrs"] == 2
    assert f.get("H_HAS_kvm_x86_ops__flush_tlb_gva") == 1
