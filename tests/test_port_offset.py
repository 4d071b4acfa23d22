"""`port` places lines that stand twice by the offset the file patch's earlier hunks were found at.

kvm_arch_vm_ioctl()'s KVM_GET_IRQCHIP and KVM_SET_IRQCHIP cases open with the same lines, 24
lines apart on every tree here.  A fix written on 7.3 (x86.c line ~4500) lands on 6.1 and 7.2
thousands of lines lower (~6800-6900), so the patch's own line number never says which copy is
meant; the hunks of the same file that were placed already say how far the lines moved, as
patch(1) learns it.  A copy is taken only alone at (or a few lines from) the predicted line:
anything else stays a conflict listing the places, never a guess.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from refactor.port.diff import file_diff
from refactor.port.engine import port_one
from refactor.port.locate import Offsets
from refactor.port.mail import read_mails

from conftest import FULL_510

X86 = "arch/x86/kvm/x86.c"
MEMDUP = "\t\tchip = memdup_user(argp, sizeof(*chip));\n"


def mail_of(old_text: str, new_text: str) -> str:
    diff = file_diff(X86, old_text, new_text)
    return ("From 1234567890abcdef1234567890abcdef12345678 Mon Sep 17 00:00:00 2001\n"
            "From: Jane Dev <jane@example.org>\nDate: Tue, 3 Nov 2026 10:00:00 +0100\n"
            "Subject: [PATCH] KVM: x86: Fix the irqchip ioctls\n\nExplain.\n\n"
            f"Signed-off-by: Jane Dev <jane@example.org>\n---\n{diff}-- \n2.47.0\n\n")


def edited(text: str, edits: list[tuple[str, str, str]]) -> str:
    """`text` with each (anchor, old, new): the first `old` after `anchor` replaced."""
    for anchor, old, new in edits:
        at = text.index(old, text.index(anchor))
        text = text[:at] + new + text[at + len(old):]
    return text


def two_hunks(tree: Path, first_anchor: str, first_old: str, first_new: str) -> tuple[str, str]:
    """A 7.3 fix in two hunks of kvm_arch_vm_ioctl(): one at `first_anchor` (its lines stand
    once), then `r = 0;` after the SET case's memdup_user(), whose lines stand in the GET case
    too.  Returns the mail and the second hunk's added line's neighbourhood for checking."""
    text = (tree / X86).read_text()
    new = edited(text, [(first_anchor, first_old, first_new), ("case KVM_SET_IRQCHIP", MEMDUP, MEMDUP + "\t\tr = 0;\n")])
    return mail_of(text, new), text


def set_case_line(target, version_text: str) -> int:
    """0-based line of the SET case's memdup_user() in the target."""
    at = version_text.index(MEMDUP, version_text.index("case KVM_SET_IRQCHIP"))
    return version_text.count("\n", 0, at)


# The GET case's first lines stand once in the file: the first hunk is placed without help.
GET_TOP = ("case KVM_GET_IRQCHIP", "\t\tstruct kvm_irqchip *chip;\n",
           "\t\tstruct kvm_irqchip *chip;\n\t\tint unused = 0;\n")


@pytest.mark.parametrize("version", ["6.1", "7.2"])
def test_the_earlier_hunk_s_offset_places_lines_that_stand_twice(trees, targets, rules, version):
    mail_text, _ = two_hunks(trees["7.3"], *GET_TOP)
    mail = read_mails(mail_text)[0]
    hunks = mail.patch.files[0].hunks
    target = targets[version]
    res = port_one(mail, target, rules)
    first, second = res.hunks
    assert res.result == "ported", [h.reason for h in res.hunks]
    text = target.text(X86)
    memdup = set_case_line(target, text)
    lines = text.split("\n")
    # The second hunk's pre-image starts two lines above the memdup_user() it follows: in the
    # SET case, not the GET case 24 lines above, though 7.3's numbers are ~2300 lines off.
    assert second.target_start == memdup - 2
    assert "case KVM_SET_IRQCHIP" in lines[memdup - 4]
    off = first.target_start - (hunks[0].old_start - 1)
    assert abs(off) > 2000                  # the patch's own numbers are no guide here
    assert second.status == "clean"
    assert second.reason == (f"placed at {X86}:{memdup - 1} by the offset of the file's earlier hunks "
                             f"({off:+d})"), second.reason
    assert first.reason is None              # placed by its own lines: nothing to say
    # What is written: `r = 0;` follows the SET case's memdup_user(), the GET case is as it was
    # but for the first hunk.
    out = res.files[X86].split("\n")
    at = next(i for i, ln in enumerate(out) if ln == "\t\tr = 0;" and out[i - 1] == MEMDUP.rstrip("\n"))
    assert "case KVM_SET_IRQCHIP" in out[at - 5]
    # The JSON says it too.
    assert res.to_json()["hunks"][1]["reason"].startswith("placed at ")


def test_the_5_10_tree_places_it_by_the_same_rule(trees, t510, rules):
    mail = read_mails(two_hunks(trees["7.3"], *GET_TOP)[0])[0]
    res = port_one(mail, t510, rules)
    assert res.result == "ported", [h.reason for h in res.hunks]
    text = t510.text(X86)
    assert res.hunks[1].target_start == set_case_line(t510, text) - 2
    assert "by the offset of the file's earlier hunks" in res.hunks[1].reason


IDENTITY = ("case KVM_SET_IDENTITY_MAP_ADDR", "\t\tu64 ident_addr;\n", "\t\tu64 ident_addr;\n\t\tint unused = 0;\n")


@pytest.mark.parametrize("version", ["6.1", "7.2"])
def test_a_prediction_from_too_far_stays_a_conflict(trees, targets, rules, version):
    # The first hunk at KVM_SET_IDENTITY_MAP_ADDR, ~110 lines above the SET case.  On 6.1 the
    # lines between are ten fewer than 7.3's (its KVM_CREATE_IRQCHIP case is shorter): the
    # prediction falls between the two copies, near neither.  On 7.2 nothing moved in between
    # and the prediction is exact, but 110 lines can gain or lose the 24 that separate the
    # copies as easily: the GET copy could be the place too.  Both stay conflicts.
    mail = read_mails(two_hunks(trees["7.3"], *IDENTITY)[0])[0]
    target = targets[version]
    res = port_one(mail, target, rules)
    first, second = res.hunks
    assert first.status == "clean", first.reason
    assert second.status == "conflict" and "the hunk's lines stand 2 times in" in second.reason, second.reason
    starts = [int(n) for n in re.findall(rf"{X86}:(\d+)", second.reason)]
    memdup = set_case_line(target, target.text(X86))
    assert starts == [memdup - 1 - 24, memdup - 1]
    assert second.target_start == memdup - 2 - 24     # (the first place listed)
    # The reason says what the offset predicted and why that did not decide.
    h1, h2 = mail.patch.files[0].hunks
    end = h1.old_start - 1 + h1.old_len
    off = first.target_start + first.target_len - end
    assert (f"the offset of the file's earlier hunks ({off:+d}) puts it at line {h2.old_start + off}, "
            f"{h2.old_start - 1 - end} lines below that mark, which does not single out one of them") in second.reason


def test_a_first_hunk_that_stands_twice_teaches_nothing(trees, targets, rules):
    text = (trees["7.3"] / X86).read_text()
    # Both hunks where the lines stand twice (the GET and the SET case): the first has no
    # earlier hunk to learn from, so it is a conflict, and it teaches nothing to the second.
    new = edited(text, [("case KVM_GET_IRQCHIP", MEMDUP, MEMDUP + "\t\tr = 0;\n"),
                        ("case KVM_SET_IRQCHIP", MEMDUP, MEMDUP + "\t\tr = 0;\n")])
    res = port_one(read_mails(mail_of(text, new))[0], targets["6.1"], rules)
    assert [h.status for h in res.hunks] == ["conflict", "conflict"], [h.reason for h in res.hunks]
    assert all("the hunk's lines stand 2 times in" in h.reason for h in res.hunks)


def test_a_definition_line_the_patch_shows_is_a_mark_too(trees, targets, rules):
    # The first hunk, at the top of kvm_arch_vm_ioctl(), is made on a tree whose `r` starts as
    # -EINVAL (in its context): a conflict on 7.2, so it places nothing.  Its context still
    # shows the function's definition line, which 7.2 has word for word, once: where the
    # function starts in both predicts the SET case exactly.  6.1 spells the definition
    # otherwise (`long ...`): no mark.
    text = (trees["7.3"] / X86).read_text()
    ours = edited(text, [("int kvm_arch_vm_ioctl(", "\tint r = -ENOTTY;\n", "\tint r = -EINVAL;\n")])
    kvm = "\tstruct kvm *kvm = filp->private_data;\n"
    new = edited(ours, [("int kvm_arch_vm_ioctl(", kvm, kvm + "\tbool done = false;\n"),
                        ("case KVM_SET_IRQCHIP", MEMDUP, MEMDUP + "\t\tr = 0;\n")])
    mail = read_mails(mail_of(ours, new))[0]
    first_hunk, second_hunk = mail.patch.files[0].hunks
    t72 = targets["7.2"].text(X86)
    memdup = set_case_line(targets["7.2"], t72)
    defined = t72.count("\n", 0, t72.index("int kvm_arch_vm_ioctl("))
    patch_def = text.count("\n", 0, text.index("int kvm_arch_vm_ioctl("))
    res = port_one(mail, targets["7.2"], rules)
    first, second = res.hunks
    assert first.status == "conflict" and "context differs" in first.reason, first.reason
    offsets = Offsets()
    offsets.settle(first_hunk, first, X86, targets["7.2"])
    assert offsets.predict(second_hunk) == (
        memdup - 2, second_hunk.old_start - 1 - patch_def,
        f"the definition of kvm_arch_vm_ioctl() in both ({defined - patch_def:+d})")
    # Exact, but from 136 lines above copies 24 lines apart: not enough to choose.
    assert second.status == "conflict" and "the hunk's lines stand 2 times in" in second.reason, second.reason
    empty = Offsets()
    empty.settle(first_hunk, port_one(mail, targets["6.1"], rules).hunks[0], X86, targets["6.1"])
    assert empty.predict(second_hunk) is None
