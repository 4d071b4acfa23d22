"""`port` onto old trees: where a hunk is placed, and calls whose hook takes another argument list.

Fixes are written on 7.3 (its own code, edited as a maintainer would) and
ported onto 6.1, 7.2 and the full 5.10 tree (cached by `kvm-refactor
fetch-tree 5.10 --full`; the 5.10 tests skip when it is absent).  The worst
failure of a port is a silent wrong one: a hunk placed in another function
that has the same lines, so each test says where the hunk must land.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from refactor.port.diff import file_diff
from refactor.port.engine import port_one
from refactor.port.mail import read_mails
from refactor.port.target import load_target

from conftest import FULL_510
X86 = "arch/x86/kvm/x86.c"


def mail_at(tree: Path, rel: str, function: str, old: str, new: str, after: str = "") -> str:
    """A mail replacing the first `old` after the definition of `function` (and after `after`
    in it): the same lines may stand elsewhere too, that is the point."""
    text = (tree / rel).read_text()
    head = re.search(rf"^\w[^\n]*\b{re.escape(function)}\(", text, re.M)
    assert head, f"{function}() not in {rel}"
    at = text.index(old, text.index(after, head.end()) if after else head.end())
    diff = file_diff(rel, text, text[:at] + new + text[at + len(old):])
    return ("From 1234567890abcdef1234567890abcdef12345678 Mon Sep 17 00:00:00 2001\n"
            "From: Jane Dev <jane@example.org>\nDate: Tue, 3 Nov 2026 10:00:00 +0100\n"
            "Subject: [PATCH] KVM: x86: Fix the helper\n\nExplain.\n\n"
            f"Signed-off-by: Jane Dev <jane@example.org>\n---\n{diff}-- \n2.47.0\n\n")


def function_at(text: str, line: int) -> str:
    """The function whose definition is the nearest above 1-based `line`."""
    names = [m.group(1) for m in re.finditer(r"^\w[^\n(]*?\b(\w+)\(", "\n".join(text.split("\n")[:line]),
                                            re.M)]
    return names[-1]


def applies(tree: Path, diff: str) -> bool:
    proc = subprocess.run(["git", "apply", "--check", "-"], cwd=tree, input=diff.encode(),
                          capture_output=True)
    return proc.returncode == 0



# The top of kvm_write_guest_virt_helper(): on 6.1 and 7.2 the same lines, translated, stand
# in kvm_read_guest_virt_helper() too, which is nearer to 7.3's line number.
WRITE_TOP_OLD = "\tint r = X86EMUL_CONTINUE;\n\n\twhile (bytes) {\n"
WRITE_TOP_NEW = "\tint r = X86EMUL_CONTINUE;\n\n\tif (!bytes)\n\t\treturn r;\n\twhile (bytes) {\n"


@pytest.mark.parametrize("version", ["6.1", "7.2"])
def test_a_hunk_whose_lines_another_function_has_too_lands_in_its_own(trees, targets, rules, version):
    mail = read_mails(mail_at(trees["7.3"], X86, "kvm_write_guest_virt_helper", WRITE_TOP_OLD,
                              WRITE_TOP_NEW))[0]
    res = port_one(mail, targets[version], rules)
    assert res.result == "ported", res.hunks[0].reason
    at = res.hunks[0].target_start
    assert function_at(targets[version].text(X86), at + 1) == "kvm_write_guest_virt_helper"
    assert applies(trees[version], res.diff)


def test_the_write_helper_is_not_placed_on_the_read_helper_of_5_10(trees, t510, rules):
    # 5.10's write helper wraps its gva_to_gpa() call over three lines, the read helper over
    # two: the read helper's window looked more like the hunk than the write helper's.
    old = "\t\tgpa_t gpa = gva_walk->gva_to_gpa(vcpu, gva_walk, addr, access, exception);\n"
    mail = read_mails(mail_at(trees["7.3"], X86, "kvm_write_guest_virt_helper", old, old + old))[0]
    res = port_one(mail, t510, rules)
    hunk = res.hunks[0]
    assert res.result == "ported", hunk.reason
    assert function_at(t510.text(X86), hunk.target_start + 1) == "kvm_write_guest_virt_helper"
    # The hook takes no MMU on 5.10 (its declaration in kvm_host.h says so): the walker
    # argument goes, and the call the target wraps over three lines is the context line.
    assert "port-hook-arguments" in hunk.rules
    new = [ln[1:] for ln in res.diff.split("\n") if ln.startswith("+") and not ln.startswith("+++")]
    assert new == ["\t\tgpa_t gpa = vcpu->arch.walk_mmu->gva_to_gpa(vcpu, addr, access, exception);"]
    assert applies(FULL_510, res.diff)
    # The stable note lists the deviation, with the declaration it follows.
    from refactor.port.output import mail_text

    line = t510.hooks(rules.types["mmu"])["gva_to_gpa"][1]
    note = (f"gva_to_gpa() called as this tree declares it (arch/x86/include/asm/kvm_host.h:{line}): "
            "`gva_walk` not passed")
    assert note in mail_text(res, t510, ("Porter", "porter@example.org"), None, rules)


def test_a_hunk_is_placed_in_the_function_its_heading_names_or_nowhere(trees, t510, rules):
    # update_pkru_bitmask(): its hunk was placed in kvm_init_shadow_ept_mmu() on 5.10, whose
    # lines looked more like it than those of 5.10's own update_pkru_bitmask().
    text = (trees["7.3"] / "arch/x86/kvm/mmu/mmu.c").read_text()
    line = next(ln for ln in text.split("\n") if "w->fmt.pkru_mask = 0;" in ln)
    mail = read_mails(mail_at(trees["7.3"], "arch/x86/kvm/mmu/mmu.c", "update_pkru_bitmask", line + "\n",
                              line + "\n" + line + "\n"))[0]
    res = port_one(mail, t510, rules)
    hunk = res.hunks[0]
    assert hunk.target_start is not None, hunk.reason
    assert function_at(t510.text("arch/x86/kvm/mmu/mmu.c"), hunk.target_start + 1) == "update_pkru_bitmask"


READ_CALL = "\t\tgpa_t gpa = gva_walk->gva_to_gpa(vcpu, gva_walk, addr, access, exception);\n"


@pytest.mark.parametrize("wrapped, want", [
    # The walker argument on the call's first line: the continuation line moves under the
    # parenthesis of the translated call.
    ("\t\tgpa_t gpa = gva_walk->gva_to_gpa(vcpu, gva_walk, addr,\n"
     "\t\t\t\t\t\t access | PFERR_USER_MASK, exception);\n",
     ["\t\tgpa_t gpa = vcpu->arch.walk_mmu->gva_to_gpa(vcpu, addr,",
      "\t\t\t\t\t\t\t    access | PFERR_USER_MASK, exception);"]),
    # The walker argument alone on a line: that line goes.
    ("\t\tgpa_t gpa = gva_walk->gva_to_gpa(vcpu,\n\t\t\t\t\t\t gva_walk,\n"
     "\t\t\t\t\t\t addr, access | PFERR_USER_MASK, exception);\n",
     # (translated, the call's arguments move right: the line would be 103 columns wide)
     ["\t\tgpa_t gpa = vcpu->arch.walk_mmu->gva_to_gpa(vcpu,",
      "\t\t\t\t\t\t\t    addr, access | PFERR_USER_MASK,",
      "\t\t\t\t\t\t\t    exception);"]),
])
def test_a_wrapped_hook_call_takes_the_5_10_argument_list(trees, t510, rules, wrapped, want):
    mail = read_mails(mail_at(trees["7.3"], X86, "kvm_read_guest_virt_helper", READ_CALL, wrapped))[0]
    res = port_one(mail, t510, rules)
    assert res.result == "ported", res.hunks[0].reason
    # The target's own call, wrapped over two lines there, is what the new one replaces.
    gone = ("\t\tgpa_t gpa = vcpu->arch.walk_mmu->gva_to_gpa(vcpu, addr, access,\n"
            "\t\t\t\t\t\t\t    exception);\n\t\tunsigned offset = addr & (PAGE_SIZE-1);\n"
            "\t\tunsigned toread")
    assert gone in t510.text(X86) and gone not in res.files[X86]
    assert "\n".join(want) + "\n\t\tunsigned offset = addr & (PAGE_SIZE-1);\n\t\tunsigned toread" in res.files[X86]
    assert all(len(ln.expandtabs(8)) <= 100 for ln in want)
    assert applies(FULL_510, res.diff)


def test_the_same_call_keeps_its_walker_argument_where_the_hook_takes_one(trees, targets, rules):
    # 6.1 declares gva_to_gpa with the MMU as its second parameter: nothing to fit.
    wrapped = ("\t\tgpa_t gpa = gva_walk->gva_to_gpa(vcpu, gva_walk, addr,\n"
               "\t\t\t\t\t\t access | PFERR_USER_MASK, exception);\n")
    mail = read_mails(mail_at(trees["7.3"], X86, "kvm_read_guest_virt_helper", READ_CALL, wrapped))[0]
    res = port_one(mail, targets["6.1"], rules)
    assert res.result == "ported", res.hunks[0].reason
    assert "port-hook-arguments" not in res.hunks[0].rules
    assert [ln[1:] for ln in res.diff.split("\n") if ln.startswith("+") and not ln.startswith("+++")] == [
        "\t\tgpa_t gpa = mmu->gva_to_gpa(vcpu, mmu, addr,",
        "\t\t\t\t\t    access | PFERR_USER_MASK, exception);"]


def test_a_hook_call_passing_another_walker_is_a_missing_prerequisite_on_5_10(trees, t510, rules):
    # Not the object the call goes through: 5.10's hook cannot be told which MMU to walk.
    other = "\t\tgpa_t gpa = gva_walk->gva_to_gpa(vcpu, &vcpu->arch.ngpa_walk, addr, access, exception);\n"
    mail = read_mails(mail_at(trees["7.3"], X86, "kvm_read_guest_virt_helper", READ_CALL, READ_CALL + other))[0]
    res = port_one(mail, t510, rules)
    assert res.result == "conflict"
    reason = res.hunks[0].reason
    assert "hook gva_to_gpa() takes 4 arguments (arch/x86/include/asm/kvm_host.h:" in reason, reason
    assert "the patch passes 5 and none of them is the object it is called through" in reason


def test_a_hook_call_gains_the_object_it_goes_through_where_the_target_declares_it(targets, rules):
    # The other way: a 5.10-style call (no MMU argument) fitted to 7.3's declaration of
    # gva_to_gpa in struct kvm_pagewalk, whose second parameter is the walker.  The line break
    # and the continuation line stay as they were.
    from refactor.frontend.patch import Hunk
    from refactor.port.hooks import fit_hook_calls

    call = ["\t\tgpa_t gpa = vcpu->arch.walk_mmu->gva_to_gpa(vcpu, addr, access,",
            "\t\t\t\t\t\t\t    exception);"]
    hunk = Hunk(10, 2, 10, 3, "static int f(void)",
                [(" ", call[0], 10), (" ", call[1], 11), ("+", "\t\tfoo(gpa);", 12)])
    fitted = fit_hook_calls(hunk, targets["7.3"], rules)
    assert fitted.rules == ["port-hook-arguments"] and not fitted.problems
    assert [t for _g, t, _ in fitted.hunk.lines[:2]] == [
        "\t\tgpa_t gpa = vcpu->arch.walk_mmu->gva_to_gpa(vcpu, vcpu->arch.walk_mmu, addr, access,", call[1]]


def test_lines_that_stand_twice_in_the_function_are_a_conflict_not_a_guess(trees, targets, rules):
    # kvm_arch_vm_ioctl(): KVM_GET_IRQCHIP and KVM_SET_IRQCHIP open with the same lines.  A fix
    # of the SET case went to the GET case on 6.1 (nearer to 7.3's line number): a silent
    # wrong port.  Another tree's line numbers cannot tell the two apart.
    old = "\t\tchip = memdup_user(argp, sizeof(*chip));\n"
    new = "\t\tchip = memdup_user(argp, sizeof(*chip));\n\t\tr = 0;\n"
    mail = read_mails(mail_at(trees["7.3"], X86, "kvm_arch_vm_ioctl", old, new, after="case KVM_SET_IRQCHIP"))[0]
    res = port_one(mail, targets["6.1"], rules)
    hunk = res.hunks[0]
    assert res.result == "conflict" and "the hunk's lines stand 2 times in" in hunk.reason, hunk.reason
    starts = [int(n) for n in re.findall(rf"{X86}:(\d+)", hunk.reason)]
    text = targets["6.1"].text(X86).split("\n")
    assert [text[n - 1 + 2] for n in starts] == [old.rstrip("\n")] * 2
    assert "say which by hand" in hunk.reason
    # On the tree the fix was made on, its line number says which: it applies as is.
    same = port_one(mail, targets["7.3"], rules)
    assert same.result == "ported" and [h.status for h in same.hunks] == ["clean"]
    text = (trees["7.3"] / X86).read_text()
    at = text.index(old, text.index("case KVM_SET_IRQCHIP"))
    assert same.files[X86] == text[:at] + new + text[at + len(old):]


@pytest.mark.parametrize("version", ["6.1", "5.10"])   # 7.2 places as 6.1 does: ~15 s each
def test_no_hunk_of_the_bench_mbox_is_placed_outside_its_function(trees, targets, rules, version):
    # bench/port_bench.py's 20 patches (one per function the refactor changed): wherever a hunk
    # is placed, ported or not, it is in the function its heading names when the target has it.
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from port_bench import make_mbox

    from refactor.port.headings import function_of
    from refactor.port.locate import named_function

    if version == "5.10":
        if not (FULL_510 / X86).is_file():
            pytest.skip("no full 5.10 tree: `kvm-refactor fetch-tree 5.10 --full` adds it")
        target = load_target(FULL_510, rules)
    else:
        target = targets[version]
    placed = 0
    for mail in read_mails(make_mbox(trees["7.3"])):
        res = port_one(mail, target, rules)
        for hunk, h in zip(mail.patch.files[0].hunks, res.hunks):
            name = named_function(hunk, function_of(hunk))
            spans = target.territories(h.target_file, name) if h.target_file and name else []
            if h.target_start is None or not spans:
                continue
            placed += 1
            assert any(lo <= h.target_start <= hi for lo, hi in spans), (mail.subject, name, h.target_start)
    assert placed >= (5 if version == "5.10" else 10)      # 5.10 lacks many of the functions


def test_a_static_function_of_the_same_name_in_another_file_is_not_a_relocation(trees, targets, rules):
    # grow_ple_window() is a static function of vmx.c and of svm.c.  Give 6.1's svm.c vmx.c's
    # body of it and change vmx.c's: a vmx.c fix must not move to svm.c.
    vmx, svm = "arch/x86/kvm/vmx/vmx.c", "arch/x86/kvm/svm/svm.c"
    t61 = targets["6.1"]
    dirty = "\t\tvmx->ple_window_dirty = true;\n"
    vtext, stext = t61.text(vmx), t61.text(svm)
    body = re.search(r"^static void grow_ple_window\(struct kvm_vcpu \*vcpu\)\n\{\n.*?^\}\n", vtext, re.M | re.S)
    sbody = re.search(r"^static void grow_ple_window\(struct kvm_vcpu \*vcpu\)\n\{\n.*?^\}\n", stext, re.M | re.S)
    target = t61.patched({svm: stext.replace(sbody.group(0), body.group(0)),
                          vmx: vtext.replace(body.group(0), body.group(0).replace(dirty, "\t\tvmx->ple_window_dirty = 1;\n"))})
    mail = read_mails(mail_at(trees["6.1"], vmx, "grow_ple_window", dirty, dirty + dirty))[0]
    res = port_one(mail, target, rules)
    assert res.result == "conflict" and res.hunks[0].target_file == vmx, res.hunks[0].reason
    assert svm not in res.files


def test_a_6_1_fix_onto_5_10_drops_the_mmu_argument_too(trees, t510, rules):
    # Both trees have the old layout (no translation): only the hooks' declarations differ.
    # 6.1's local `mmu` is 5.10's vcpu->arch.walk_mmu, which makes the line 109 columns wide:
    # it is wrapped under its parenthesis, as 5.10 wraps the call it replaces.
    old = "\t\tgpa_t gpa = mmu->gva_to_gpa(vcpu, mmu, addr, access, exception);\n"
    mail = read_mails(mail_at(trees["6.1"], X86, "kvm_read_guest_virt_helper", old,
                              old.replace("access,", "access | PFERR_USER_MASK,")))[0]
    res = port_one(mail, t510, rules)
    assert res.direction == "same" and res.result == "ported", res.hunks[0].reason
    assert "port-hook-arguments" in res.hunks[0].rules
    before = ("\t\tgpa_t gpa = vcpu->arch.walk_mmu->gva_to_gpa(vcpu, addr, access,\n"
              "\t\t\t\t\t\t\t    exception);\n\t\tunsigned offset = addr & (PAGE_SIZE-1);\n\t\tunsigned toread")
    after = before.replace("access,\n", "access | PFERR_USER_MASK,\n")
    assert t510.text(X86).count(before) == 1 and res.files[X86] == t510.text(X86).replace(before, after)
    assert applies(FULL_510, res.diff)


def test_added_lines_move_with_the_target_s_deeper_block(trees, targets, rules):
    # set_dr_intercepts() is in svm.c on 7.3 and in svm.h on 6.1, where its body stands inside
    # an `if`, one tab deeper: the added line goes one tab deeper too.
    line = "\tvmcb_set_intercept(&vmcb->control, INTERCEPT_DR5_READ);\n"
    mail = read_mails(mail_at(trees["7.3"], "arch/x86/kvm/svm/svm.c", "set_dr_intercepts", line, line + line))[0]
    res = port_one(mail, targets["6.1"], rules)
    assert [h.status for h in res.hunks] == ["relocated"], res.hunks[0].reason
    new = [ln[1:] for ln in res.diff.split("\n") if ln.startswith("+") and not ln.startswith("+++")]
    assert new == ["\t" + line.rstrip("\n")]
    assert applies(trees["6.1"], res.diff)


@pytest.mark.parametrize("version", ["7.2", "6.1"])
def test_a_prototype_in_a_header_stays_in_the_header(trees, targets, rules, version):
    """A hunk among kvm_host.h's prototypes, headed by one of them, is in the header: the
    function it names is defined in mmu.c, but its body is not the hunk's place (the walker
    parameter of kvm_mmu_invalidate_addr()'s prototype, ported back, is the target's line)."""
    rel = "arch/x86/include/asm/kvm_host.h"
    text = (trees[version] / rel).read_text()
    old = re.search(r"^void kvm_mmu_invalidate_\w+\(struct kvm_vcpu \*vcpu, struct kvm_mmu \*mmu,$",
                    text, re.M).group(0)
    new = old.replace("struct kvm_mmu *mmu", "struct kvm_pagewalk *w")
    mail = ("From: Jane Dev <jane@example.org>\nSubject: [PATCH] KVM: x86/mmu: walker\n\nx\n---\n"
            + file_diff(rel, text, text.replace(old, new)))
    res = port_one(read_mails(mail)[0], targets[version], rules)
    assert res.direction == "backport"
    [h] = res.hunks
    assert h.status != "conflict", h.reason
    assert h.target_file == rel
    # The old layout's prototype is the target's own: nothing to change.
    assert res.diff == ""
