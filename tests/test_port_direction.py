"""Which way a patch goes follows from the layout its own lines are written on."""
from __future__ import annotations

from test_port import make_mail

from refactor.port.engine import port_one
from refactor.port.mail import read_mails

LINE = "\trsvd_check = &vcpu->arch.mmu->fmt;\n"


def test_a_member_only_the_new_mmu_has_marks_a_new_layout_patch(trees, targets, rules):
    """`vcpu->arch.mmu->fmt` (layout.toml new_fields: the old struct kvm_mmu has
    shadow_zero_check) is new-layout code: onto 7.2 a backport, not `same` with a translation
    that the direction did not announce."""
    mail = read_mails(make_mail(trees["7.3"], "arch/x86/kvm/mmu/mmu.c", LINE, LINE + LINE))[0]
    back = port_one(mail, targets["7.2"], rules)
    assert back.direction == "backport" and back.result == "ported"
    assert "+\trsvd_check = &vcpu->arch.mmu->shadow_zero_check;" in back.diff
    assert port_one(mail, targets["7.3"], rules).direction == "same"


def test_another_structs_member_of_that_name_says_nothing():
    """`fmt` of something that is not a vcpu MMU is no layout evidence."""
    from refactor.port.engine import patch_layout
    from refactor.rules import load_rules

    diff = ("--- a/arch/x86/kvm/x86.c\n+++ b/arch/x86/kvm/x86.c\n@@ -1,2 +1,3 @@\n a;\n"
            "+\tctx->fmt = fmt;\n b;\n")
    layout, _names = patch_layout(read_mails(diff)[0], load_rules(), None)
    assert layout == "neutral"
