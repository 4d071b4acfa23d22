"""`port` inverts restructure.toml [[spte_permissions]] on a backport (issue 16 item 5), and
only that.

`series` step 16 on 7.2 replaces is_access_allowed() by spte_permission_fault() (the rule's
`definition`), drops is_executable_pte(), gives the callers the vCPU's MMU in a local and
calls the new helper, defines update_spte_permission_bitmask() and calls it before each
reset of an MMU's SPTE format.  Ported back onto 7.2 that is nothing.  Each test writes that
change on the real 7.2 tree and ports it back: nothing must come out; beside it, a fix that
looks the same but changes something must still be a change or a conflict, never nothing.
"""
from __future__ import annotations

from refactor.apply.splice import apply
from refactor.plan.restructure_spte import helper_and_caller_edits
from refactor.port.diff import file_diff
from refactor.port.engine import port_one
from refactor.port.mail import read_mails
from test_port_reverse import mail_of, only_once

MMU_C = "arch/x86/kvm/mmu/mmu.c"
SPTE_H = "arch/x86/kvm/mmu/spte.h"
TDP_MMU_C = "arch/x86/kvm/mmu/tdp_mmu.c"


def _port(target, before: dict[str, str], after: dict[str, str], rules):
    diff = "".join(file_diff(rel, before[rel], after[rel]) for rel in sorted(before))
    return port_one(read_mails(mail_of(diff))[0], target, rules)


def _rule(rules):
    return next(r for r in rules.restructure["spte_permissions"] if r.id == "spte-permission-fault")


def _ported_as_nothing(res) -> None:
    assert res.direction == "backport" and res.result == "ported", [(h.file, h.old_start, h.reason)
                                                                    for h in res.hunks]
    assert res.diff == "", res.diff


def _not_nothing(res, rel: str) -> None:
    """The patch's change to `rel` is a change or a conflict on the target, not nothing."""
    mine = [h for h in res.hunks if h.file == rel]
    assert any(h.status == "conflict" for h in mine) or f"+++ b/{rel}" in res.diff, \
        [(h.old_start, h.status, h.reason) for h in mine]


# ---- the helper replaced, what only it read dropped, its callers given the MMU ----

def _helper_and_callers(trees, rules) -> tuple[dict[str, str], dict[str, str]]:
    """7.2's spte.h, mmu.c and tdp_mmu.c, and the same as the forward rule leaves them."""
    root = trees["7.2"]
    texts = {rel: (root / rel).read_bytes() for rel in (SPTE_H, MMU_C, TDP_MMU_C)}
    edits = helper_and_caller_edits(_rule(rules), texts, rules)
    assert sorted(edits) == sorted(texts), sorted(edits)
    return ({rel: t.decode() for rel, t in texts.items()},
            {rel: apply(t, edits[rel]).decode() for rel, t in texts.items()})


def test_the_helper_and_its_callers_as_the_rule_makes_them_port_back_as_nothing(trees, targets, rules):
    """The definition of spte_permission_fault() in is_access_allowed()'s place, the removal
    of is_executable_pte(), fast_page_fault()'s and tdp_mmu_map_handle_target_level()'s MMU
    local, calls and comment: on 7.2 the old helper is what all of it stands for."""
    before, after = _helper_and_callers(trees, rules)
    res = _port(targets["7.2"], before, after, rules)
    _ported_as_nothing(res)
    assert len(res.hunks) >= 8
    assert all("spte-permission-fault" in h.rules for h in res.hunks if h.file == SPTE_H)


def test_a_fix_to_the_new_helpers_body_is_not_ported_as_nothing(trees, targets, rules):
    """One bit of spte_permission_fault() changed (user execute read as execute): not the
    rule's definition, so not the old helper: the hunk is a conflict on 7.2."""
    before, after = _helper_and_callers(trees, rules)
    after[SPTE_H] = only_once(after[SPTE_H], "shadow_xu_mask ? ACC_USER_EXEC_MASK : 0;",
                          "shadow_xu_mask ? ACC_EXEC_MASK : 0;")
    res = _port(targets["7.2"], before, after, rules)
    _not_nothing(res, SPTE_H)
    # That hunk alone: the callers' and is_executable_pte()'s are still the rule's change.
    bad = [h for h in res.hunks if h.status == "conflict"]
    assert [h.file for h in bad] == [SPTE_H] and "is_access_allowed()" in bad[0].reason, \
        [(h.file, h.old_start, h.status, h.reason) for h in res.hunks]


def test_a_caller_given_another_mmu_is_not_ported_as_nothing(trees, targets, rules):
    """fast_page_fault()'s local set to guest_mmu rather than the vCPU's MMU: not the rule's
    change, so its hunk is no restatement of 7.2's code."""
    before, after = _helper_and_callers(trees, rules)
    after[MMU_C] = only_once(after[MMU_C], "\tmmu = vcpu->arch.mmu;\n", "\tmmu = &vcpu->arch.guest_mmu;\n")
    res = _port(targets["7.2"], before, after, rules)
    _not_nothing(res, MMU_C)
    # Its declaration goes with it (never an assignment of a local the port left out); the
    # other files' hunks are still the rule's change, nothing.
    local = [h for h in res.hunks if h.file == MMU_C][:2]     # fast_page_fault()'s first two
    assert all(h.status == "conflict" for h in local) or (
        "+\tstruct kvm_mmu *mmu;" in res.diff and "+\tmmu = &vcpu->arch.guest_mmu;" in res.diff), res.diff
    assert all(h.status != "conflict" for h in res.hunks if h.file != MMU_C), \
        [(h.file, h.old_start, h.status, h.reason) for h in res.hunks]


# ---- the bitmap's filler: defined after update_permission_bitmask(), called before resets ----

FILLER = ("static void update_spte_permission_bitmask(struct kvm_mmu *mmu, bool tdp, bool ept)\n{\n"
          "\t__update_permission_bitmask(&mmu->fmt, tdp, ept,\n"
          "\t\t\t\t    mmu->root_role.cr4_smep, false, true, true);\n}\n\n")
PKU = "/*\n* PKU is an additional mechanism"
# After a statement the rule sets its call off with a blank line (init_kvm_tdp_mmu() on 7.2).
TDP_CALL = "\n\tupdate_spte_permission_bitmask(context, true, shadow_xs_mask);\n"
SHADOW_CALL = "\tupdate_spte_permission_bitmask(context, context == &vcpu->arch.guest_mmu, false);\n"
EPT_CALL = "\n\t\tupdate_spte_permission_bitmask(context, true, true);\n"
METADATA = "\treset_guest_paging_metadata(vcpu, context);\n\treset_shadow_zero_bits_mask(vcpu, context);\n"


def _filler(trees, tdp_call: str = TDP_CALL, filler: str = FILLER) -> tuple[str, str]:
    """7.2's mmu.c with shadow_mmu_init_context() as [[walker_init]] leaves it (the walker's
    metadata reset moved out: context the old tree does not have), and the same with the
    filler defined and called as step 16 writes it."""
    text = (trees["7.2"] / MMU_C).read_text()
    before = only_once(text, METADATA, "\treset_shadow_zero_bits_mask(vcpu, context);\n")
    after = only_once(before, PKU, filler + PKU)
    after = only_once(after, "\treset_tdp_shadow_zero_bits_mask(context);\n",
                  tdp_call + "\treset_tdp_shadow_zero_bits_mask(context);\n")
    after = only_once(after, "\treset_shadow_zero_bits_mask(vcpu, context);\n",
                  SHADOW_CALL + "\treset_shadow_zero_bits_mask(vcpu, context);\n")
    after = only_once(after, "\t\treset_ept_shadow_zero_bits_mask(context, execonly);\n",
                  EPT_CALL + "\t\treset_ept_shadow_zero_bits_mask(context, execonly);\n")
    return before, after


def test_the_bitmap_filler_as_the_rule_makes_it_ports_back_as_nothing(trees, targets, rules):
    """update_spte_permission_bitmask() defined after update_permission_bitmask() and called
    before the three resets of an MMU's SPTE format: 7.2 has no bitmap to fill, nothing to
    port; also in shadow_mmu_init_context(), whose context is the new layout's."""
    before, after = _filler(trees)
    res = _port(targets["7.2"], {MMU_C: before}, {MMU_C: after}, rules)
    _ported_as_nothing(res)
    assert len(res.hunks) == 4
    assert all("spte-permission-fault" in h.rules for h in res.hunks), [(h.old_start, h.rules) for h in res.hunks]
    # shadow_mmu_init_context()'s lines are not 7.2's: nothing to port all the same, said so.
    assert sum("nothing to port" in (h.reason or "") for h in res.hunks) == 1


def test_a_filler_call_with_other_arguments_is_not_ported_as_nothing(trees, targets, rules):
    """init_kvm_tdp_mmu() filling the bitmap as for a shadow MMU (tdp false): not what the rule
    writes there, so a conflict (7.2 has no such function), while the others are nothing."""
    before, after = _filler(trees, tdp_call=TDP_CALL.replace("true", "false"))
    res = _port(targets["7.2"], {MMU_C: before}, {MMU_C: after}, rules)
    bad = [h for h in res.hunks if h.status == "conflict"]
    assert len(bad) == 1 and "update_spte_permission_bitmask" in bad[0].reason, \
        [(h.old_start, h.status, h.reason) for h in res.hunks]


def test_a_filler_with_another_role_bit_is_not_ported_as_nothing(trees, targets, rules):
    """The filler passing SMAP as on (`true` for the rule's `false`): another bitmap, not the
    rule's filler; its definition and so every call of it conflict."""
    before, after = _filler(trees, filler=FILLER.replace("cr4_smep, false, true, true", "cr4_smep, true, true, true"))
    res = _port(targets["7.2"], {MMU_C: before}, {MMU_C: after}, rules)
    assert res.result == "conflict"
    # The calls the rule writes are its calls only beside its filler: all conflict.
    assert [h.status for h in res.hunks] == ["conflict"] * 4, [(h.old_start, h.status, h.reason) for h in res.hunks]
    # Beside the rule's filler the same calls are nothing (the inverse is what tells them apart).
    before, after = _filler(trees)
    _ported_as_nothing(_port(targets["7.2"], {MMU_C: before}, {MMU_C: after}, rules))
