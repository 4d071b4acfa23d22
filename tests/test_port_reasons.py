"""A conflict's reason names what stops the hunk (issue 16: a stable maintainer must be
able to act on it): the refactor's restructuring only where the lines that differ are the
ones it made, not wherever a hunk mentions a restructured function while other lines
differ.  Mails are made from 7.3's own code, like bench/port_bench.py's: a line repeated."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from refactor.port.diff import file_diff
from refactor.port.engine import port_one
from refactor.port.mail import read_mails

MMU = "arch/x86/kvm/mmu/mmu.c"
RESTRUCTURED = "the refactor restructured this code"


def repeat_line(tree: Path, rel: str, function: str, line: str) -> str:
    """A mail that repeats `line` (the first one after `function`'s definition)."""
    text = (tree / rel).read_text()
    head = re.search(rf"^\w[^\n]*\b{re.escape(function)}\(", text, re.M)
    assert head, f"{function}() not in {rel}"
    at = text.index(line + "\n", head.end())
    new = text[:at] + line + "\n" + text[at:]
    return ("From 1234567890abcdef1234567890abcdef12345678 Mon Sep 17 00:00:00 2001\n"
            "From: Jane Dev <jane@example.org>\nDate: Tue, 3 Nov 2026 10:00:00 +0100\n"
            "Subject: [PATCH] KVM: x86/mmu: Probe\n\nExplain.\n\n"
            f"Signed-off-by: Jane Dev <jane@example.org>\n---\n{file_diff(rel, text, new)}-- \n2.47.0\n\n")


def reason_of(trees, target, rules, function: str, line: str, rel: str = MMU) -> str:
    mail = read_mails(repeat_line(trees["7.3"], rel, function, line), "probe.mbox")[0]
    res = port_one(mail, target, rules)
    assert [h.status for h in res.hunks] == ["conflict"]
    return res.hunks[0].reason


GUEST_MMU_CREATE = "\tret = __kvm_mmu_create(vcpu, &vcpu->arch.guest_mmu, &vcpu->arch.ngpa_walk);"
PERMISSIONS = "\tupdate_permission_bitmask(w, w == &vcpu->arch.ngpa_walk, false);"


def test_an_extra_context_line_of_5_10_is_the_cause_not_the_walker_attachment(trees, t510, rules):
    # __kvm_mmu_create()'s walker argument translates back (attach-walker); what stops the
    # hunk is 5.10's nested_mmu.translate_gpa assignment among its context lines.
    reason = reason_of(trees, t510, rules, "kvm_mmu_create", GUEST_MMU_CREATE)
    assert reason.startswith("context differs for non-layout reasons")
    assert "vcpu->arch.nested_mmu.translate_gpa = translate_nested_gpa;" in reason
    assert RESTRUCTURED not in reason and "attach-walker" not in reason


def test_a_function_5_10_predates_is_absent_code_not_a_restructuring(trees, t510, rules):
    # reset_guest_paging_metadata() came upstream after 5.10; the refactor did not make it,
    # though the hunk calls update_permission_bitmask(), which the refactor parameterized.
    reason = reason_of(trees, t510, rules, "reset_guest_paging_metadata", PERMISSIONS)
    assert reason.startswith("code absent from the target")
    assert "reset_guest_paging_metadata()" in reason
    assert RESTRUCTURED not in reason and "parameterize" not in reason


def test_a_walker_parameter_declared_outside_the_hunk_is_named_on_7_2(trees, targets, rules):
    # The hunk starts below the parameter list: `w` is 7.2's `mmu`, and the calls are the same.
    reason = reason_of(trees, targets["7.2"], rules, "reset_guest_paging_metadata", PERMISSIONS)
    assert reason.startswith("context differs only in a local's name: the patch's `w` is the "
                             "target's `mmu` in reset_guest_paging_metadata()")
    assert RESTRUCTURED not in reason and "parameterize" not in reason


def test_on_6_1_the_shorter_argument_list_stays_a_non_layout_difference(trees, targets, rules):
    reason = reason_of(trees, targets["6.1"], rules, "reset_guest_paging_metadata", PERMISSIONS)
    assert reason.startswith("context differs for non-layout reasons")
    assert "update_permission_bitmask(mmu, false);" in reason
    assert "the patch's `w` is the target's `mmu`" in reason
    assert RESTRUCTURED not in reason and "parameterize" not in reason


@pytest.mark.parametrize("version", ["7.2", "6.1"])
def test_a_function_the_refactor_introduced_is_still_blamed_on_it(trees, targets, rules, version):
    reason = reason_of(trees, targets[version], rules, "__update_permission_bitmask",
                       "\tconst u16 r = ACC_BITS_MASK(ACC_READ_MASK);")
    # Code absent because the refactor made the function: that cause, and where to port to.
    assert ("__update_permission_bitmask() was introduced by the refactor "
            "(restructure.toml parameterize-permission-bitmask)") in reason
    assert "in update_permission_bitmask()" in reason


def test_walker_fields_written_through_another_object_are_a_layout_difference(trees, targets, rules):
    # 7.2's nested_svm_init_mmu_context() writes the nested walker's hooks through
    # vcpu->arch.mmu (guest_mmu there), 7.3 through ngpa_walk (translated: guest_mmu), and
    # 7.2 sets walk_mmu, which the new layout drops: no line differs for another reason.
    reason = reason_of(trees, targets["7.2"], rules, "nested_svm_init_mmu_context",
                       "\tvcpu->arch.ngpa_walk.get_guest_pgd     = nested_svm_get_tdp_cr3;",
                       rel="arch/x86/kvm/svm/nested.c")
    assert reason.startswith("context differs in where walker fields are written: the target writes "
                             "walker fields `get_guest_pgd`, `get_pdptr`, `inject_page_fault` through "
                             "`vcpu->arch.mmu` where the translated patch has `vcpu->arch.guest_mmu`"), reason
    assert "non-layout" not in reason and RESTRUCTURED not in reason
