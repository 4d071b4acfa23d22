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


def test_on_6_1_the_shorter_argument_list_stays_a_non_layout_difference(trees, targets, rules):
    # The hunk starts below the parameter list; its `w` is taken for 6.1's `mmu`
    # (tests/test_port_outside_locals.py), and what is left is 6.1's shorter call.
    reason = reason_of(trees, targets["6.1"], rules, "reset_guest_paging_metadata", PERMISSIONS)
    assert reason.startswith("context differs for non-layout reasons")
    assert "update_permission_bitmask(mmu, false);" in reason
    assert RESTRUCTURED not in reason and "parameterize" not in reason


@pytest.mark.parametrize("version", ["7.2", "6.1"])
def test_a_function_the_refactor_introduced_is_still_blamed_on_it(trees, targets, rules, version):
    reason = reason_of(trees, targets[version], rules, "__update_permission_bitmask",
                       "\tconst u16 r = ACC_BITS_MASK(ACC_READ_MASK);")
    # Code absent because the refactor made the function: that cause, and where to port to.
    assert ("__update_permission_bitmask() was introduced by the refactor "
            "(restructure.toml parameterize-permission-bitmask)") in reason
    assert "in update_permission_bitmask()" in reason


def test_walker_writes_through_the_fault_mmu_port_through_the_forward_image(trees, targets, rules):
    # 7.2's nested_svm_init_mmu_context() writes the nested walker's hooks through
    # vcpu->arch.mmu (guest_mmu there: mappings.toml fault-mmu-walker says that is {ngpa}),
    # 7.3 through ngpa_walk, and 7.2 sets walk_mmu, which the new layout drops
    # (walk-mmu-assign): the forward image of 7.2's function is the hunk's lines but for a
    # blank line 7.3 sets the writes off with.  The repeated write is 7.2's own line.
    rel = "arch/x86/kvm/svm/nested.c"
    line = "\tvcpu->arch.ngpa_walk.get_guest_pgd     = nested_svm_get_tdp_cr3;"
    mail = read_mails(repeat_line(trees["7.3"], rel, "nested_svm_init_mmu_context", line), "p.mbox")[0]
    res = port_one(mail, targets["7.2"], rules)
    h = res.hunks[0]
    assert h.status == "translated", h.reason
    assert "fault-mmu-walker" in h.rules
    own = "\tvcpu->arch.mmu->get_guest_pgd     = nested_svm_get_tdp_cr3;"
    assert [x for x in res.diff.split("\n") if x.startswith("+\t")] == ["+" + own]
    assert applies(trees["7.2"], res.diff)


AFTER_CPUID = "kvm_mmu_after_set_cpuid"
NGPA_ROLE = "\tvcpu->arch.ngpa_walk.cpu_role.ext.valid = 0;"
GVA_ROLE = "\tvcpu->arch.gva_walk.cpu_role.ext.valid = 0;"


def test_context_the_rules_rewrote_ports_onto_the_targets_own_lines(trees, targets, rules):
    # 7.2 writes cpu_role through root_mmu, guest_mmu and nested_mmu and invalidates
    # nested_mmu's root role; on the new layout the last is gone
    # (walker-builder-field-on-nested-mmu) and root_mmu's and nested_mmu's writes are one
    # (duplicate-walker-write).  The repeated ngpa line is 7.2's guest_mmu line, repeated.
    mail = read_mails(repeat_line(trees["7.3"], MMU, AFTER_CPUID, NGPA_ROLE), "p.mbox")[0]
    res = port_one(mail, targets["7.2"], rules)
    h = res.hunks[0]
    assert h.status == "translated", h.reason
    assert {"duplicate-walker-write", "walker-builder-field-on-nested-mmu"} <= set(h.rules)
    own = "\tvcpu->arch.guest_mmu.cpu_role.ext.valid = 0;"
    text = (trees["7.2"] / MMU).read_text()
    assert text.count(own + "\n") == 1
    assert res.files[MMU] == text.replace(own + "\n", own + "\n" + own + "\n")
    assert applies(trees["7.2"], res.diff)


def test_an_added_write_that_stands_for_two_target_writes_stays_a_conflict(trees, targets, rules):
    # Near miss: the gva line is 7.2's root_mmu and nested_mmu writes at once; which of
    # them (or both) a repeat means is not for the port to guess.
    mail = read_mails(repeat_line(trees["7.3"], MMU, AFTER_CPUID, GVA_ROLE), "p.mbox")[0]
    res = port_one(mail, targets["7.2"], rules)
    assert res.hunks[0].status == "conflict"
    assert res.hunks[0].reason == (
        "context differs by the layout change: the added `vcpu->arch.gva_walk.cpu_role.ext.valid = 0;` "
        "stands for the target's `vcpu->arch.root_mmu.cpu_role.ext.valid = 0;` and "
        "`vcpu->arch.nested_mmu.cpu_role.ext.valid = 0;` (restructure.toml duplicate-walker-write): "
        "say which by hand")


def test_on_6_1_the_layout_explained_lines_are_named_and_the_rest_shown(trees, targets, rules):
    # 6.1 invalidates the root roles with `.word = 0`: that is the non-layout difference;
    # what the rules made of the other lines is said with the rule ids.
    reason = reason_of(trees, targets["6.1"], rules, AFTER_CPUID, NGPA_ROLE)
    assert reason.startswith("context differs for non-layout reasons: patch "
                             "`vcpu->arch.root_mmu.root_role.invalid = 1;` vs target "
                             "`vcpu->arch.root_mmu.root_role.word = 0;`"), reason
    assert "(mappings.toml walker-builder-field-on-nested-mmu)" in reason
    assert "became one write `vcpu->arch.gva_walk.cpu_role.ext.valid = 0;` " \
           "(restructure.toml duplicate-walker-write)" in reason


@pytest.mark.parametrize("version", ["7.2", "6.1"])
def test_a_walker_write_the_new_layout_makes_elsewhere_is_the_layouts_difference(trees, targets, rules, version):
    # vmx's nested_ept_init_mmu_context(): 7.2 writes inject_page_fault through
    # vcpu->arch.mmu between the two writes the hunk shows; 7.3 writes it through ngpa_walk
    # further down.  The rules do not move it, so no port, but the reason says so.
    reason = reason_of(trees, targets[version], rules, "nested_ept_init_mmu_context",
                       "\tvcpu->arch.ngpa_walk.get_guest_pgd     = nested_ept_get_eptp;",
                       rel="arch/x86/kvm/vmx/nested.c")
    assert reason.startswith("context differs in where the new layout writes walker fields: the target "
                             "writes `inject_page_fault` (`vcpu->arch.mmu->inject_page_fault = "
                             "nested_ept_inject_page_fault;`, on the new layout `vcpu->arch.ngpa_walk."
                             "inject_page_fault = nested_ept_inject_page_fault;`: mappings.toml "
                             "fault-mmu-walker)"), reason
    assert "(mappings.toml walk-mmu-assign)" in reason
    assert "non-layout" not in reason and RESTRUCTURED not in reason


def applies(tree: Path, diff: str) -> bool:
    import subprocess

    return subprocess.run(["git", "apply", "--check", "-"], cwd=tree, input=diff.encode(),
                          capture_output=True).returncode == 0
