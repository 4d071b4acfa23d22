"""Each lint rule: a patch of 7.3 that triggers it, and the correct code it leaves alone."""
from __future__ import annotations

import pytest

from refactor.lint.engine import lint_patches
from refactor.lint.registry import load_lint_rules
from refactor.rules import RulesError

from test_lint import make_patch

GVA_SYSTEM = "\tstruct kvm_pagewalk *gva_walk = &vcpu->arch.gva_walk;\n\n\treturn gva_walk->gva_to_gpa(vcpu, gva_walk, gva, 0, exception);"
NESTED_VMX = "access |= PFERR_USER_MASK;\n\n\treturn w->gva_to_gpa(vcpu, w, gpa, access, exception);"
FAULT_TEST = "walker->fault.nested_page_fault = w != &vcpu->arch.gva_walk;"

# rule -> (file, edits that trigger it, edits that are correct code touching the same place)
CASES = {
    "KVM003": ("arch/x86/kvm/mmu/spte.c",
               [("is_rsvd_spte(&vcpu->arch.mmu->fmt, spte, level)", "is_rsvd_spte(&vcpu->arch.mmu->shadow_zero_check, spte, level)")],
               [("is_rsvd_spte(&vcpu->arch.mmu->fmt, spte, level)", "is_rsvd_spte(&(vcpu->arch.mmu->fmt), spte, level)")]),
    "KVM004": ("arch/x86/kvm/mmu/spte.h",
               [("static inline bool __is_rsvd_bits_set(struct kvm_page_format *",
                 "static inline bool __is_rsvd_bits_set(struct rsvd_bits_validate *")],
               [("static inline bool __is_rsvd_bits_set(struct kvm_page_format *",
                 "static inline bool __is_rsvd_bits_set(const struct kvm_page_format *")]),
    "KVM010": ("arch/x86/kvm/x86.c",
               [(GVA_SYSTEM, GVA_SYSTEM.replace("&vcpu->arch.gva_walk", "&vcpu->arch.ngpa_walk"))],
               [(GVA_SYSTEM, GVA_SYSTEM.replace("gva, 0,", "gva, 0 /* system */,"))]),
    "KVM011": ("arch/x86/kvm/vmx/nested.c",
               [(NESTED_VMX, NESTED_VMX.replace("w->gva_to_gpa(vcpu, w,", "vcpu->arch.gva_walk.gva_to_gpa(vcpu, &vcpu->arch.gva_walk,"))],
               [(NESTED_VMX, NESTED_VMX.replace("w->gva_to_gpa(vcpu, w,", "vcpu->arch.ngpa_walk.gva_to_gpa(vcpu, &vcpu->arch.ngpa_walk,"))]),
    "KVM012": ("arch/x86/kvm/mmu/paging_tmpl.h",
               [(FAULT_TEST, FAULT_TEST.replace("gva_walk", "ngpa_walk"))],
               [(FAULT_TEST, FAULT_TEST.replace("w != &vcpu->arch.gva_walk", "&vcpu->arch.gva_walk != w"))]),
}


def _rules(found):
    return sorted({f.rule for f in found})


@pytest.mark.parametrize("rule", sorted(CASES))
@pytest.mark.parametrize("with_tree", [False, True])
def test_rule_fires_and_is_silent_on_correct_code(trees, indexes, rule, with_tree):
    rel, bad, good = CASES[rule]
    kw = {"tree": indexes["7.3"], "tree_root": trees["7.3"]} if with_tree else {}
    found = lint_patches(make_patch(trees["7.3"], rel, bad), "bad.patch", **kw)
    assert _rules(found) == [rule], [(f.rule, f.line, f.message) for f in found]
    assert found[0].fix
    assert lint_patches(make_patch(trees["7.3"], rel, good), "good.patch", **kw) == []


def test_wrong_walker_fixes(trees, indexes):
    rel, bad, _ = CASES["KVM010"]
    (f,) = lint_patches(make_patch(trees["7.3"], rel, bad), "p")
    assert f.fix == "&vcpu->arch.gva_walk" and "nGPA" in f.message
    rel, bad, _ = CASES["KVM011"]
    (f,) = lint_patches(make_patch(trees["7.3"], rel, bad), "p")
    assert f.fix == "&vcpu->arch.ngpa_walk"
    rel, bad, _ = CASES["KVM012"]
    (f,) = lint_patches(make_patch(trees["7.3"], rel, bad), "p")
    assert f.fix == "w != &vcpu->arch.gva_walk"


def test_gva_through_mmu_walker(trees):
    found = lint_patches(make_patch(trees["7.3"], "arch/x86/kvm/x86.c",
                                    [(GVA_SYSTEM, GVA_SYSTEM.replace("&vcpu->arch.gva_walk", "vcpu->arch.mmu->w"))]),
                         "p")
    assert _rules(found) == ["KVM010"] and "MMU's walker" in found[0].message


def test_kvm020_narrowed_function_given_mmu(trees, indexes):
    edit = [("\treal_gpa = kvm_translate_gpa(vcpu, w, gfn_to_gpa(pdpt_gfn),",
             "\treal_gpa = kvm_translate_gpa(vcpu, vcpu->arch.mmu, gfn_to_gpa(pdpt_gfn),")]
    patch = make_patch(trees["7.3"], "arch/x86/kvm/regs.c", edit)
    found = lint_patches(patch, "p", tree=indexes["7.3"], tree_root=trees["7.3"])
    assert _rules(found) == ["KVM020"]
    assert found[0].fix == "vcpu->arch.mmu->w" and "kvm_translate_gpa" in found[0].message
    # &root_mmu is a struct kvm_mmu * too; its walker is the GVA walker (mappings.toml root-mmu-walker).
    patch = make_patch(trees["7.3"], "arch/x86/kvm/regs.c", [(edit[0][0], edit[0][1].replace(
        "vcpu->arch.mmu", "&vcpu->arch.root_mmu"))])
    (f,) = lint_patches(patch, "p", tree=indexes["7.3"], tree_root=trees["7.3"])
    assert f.fix == "&vcpu->arch.gva_walk"
    # Passing a walker is correct.
    patch = make_patch(trees["7.3"], "arch/x86/kvm/regs.c", [(edit[0][0], edit[0][1].replace(
        "vcpu->arch.mmu", "vcpu->arch.mmu->w"))])
    assert lint_patches(patch, "p", tree=indexes["7.3"], tree_root=trees["7.3"]) == []


def test_kvm020_without_tree_uses_prototypes_in_the_patch():
    patch = """--- /dev/null
+++ b/arch/x86/kvm/new.c
@@ -0,0 +1,9 @@
+static int narrowed(struct kvm_vcpu *vcpu, struct kvm_pagewalk *w);
+
+static int caller(struct kvm_vcpu *vcpu)
+{
+	struct kvm_mmu *mmu = vcpu->arch.mmu;
+
+	narrowed(vcpu, &vcpu->arch.gva_walk);
+	return narrowed(vcpu, mmu);
+}
"""
    found = lint_patches(patch, "p")
    assert [(f.rule, f.line, f.fix) for f in found] == [("KVM020", 8, "mmu->w")]


def test_rule_data_is_checked(tmp_path):
    rules = load_lint_rules()
    assert [r.id for r in rules.items] == sorted(r.id for r in rules.items)
    for r in rules.items:
        assert r.severity in ("error", "warning", "note") and r.help and r.message
    import shutil

    from refactor.rules import RULES_DIR

    for name in ("names.toml", "layout.toml", "mappings.toml"):
        shutil.copy(RULES_DIR / name, tmp_path / name)
    text = (RULES_DIR / "lint.toml").read_text().replace('"rsvd-bits-validate-type"', '"no-such-rule"')
    (tmp_path / "lint.toml").write_text(text)
    with pytest.raises(RulesError, match="no-such-rule"):
        load_lint_rules(tmp_path)


def test_kvm020_through_fname(trees, indexes):
    # paging_tmpl.h calls FNAME(walk_addr_generic)(...): the callee is a token-pasted name.
    call = "return FNAME(walk_addr_generic)(walker, vcpu, vcpu->arch.mmu->w, addr,"
    patch = make_patch(trees["7.3"], "arch/x86/kvm/mmu/paging_tmpl.h", [(call, call.replace("mmu->w", "mmu"))])
    (f,) = lint_patches(patch, "p", tree=indexes["7.3"], tree_root=trees["7.3"])
    assert (f.rule, f.line, f.fix) == ("KVM020", 566, "vcpu->arch.mmu->w")
    assert f.message.startswith("FNAME(walk_addr_generic)()")
