"""A series is ported in order; a patch that needs an earlier one which conflicted says so."""
from __future__ import annotations

from refactor.port.diff import file_diff
from refactor.port.engine import port_patches
from refactor.port.mail import read_mails

REL = "arch/x86/kvm/x86.c"
LOAD = "\tvcpu_load(vcpu);\n"


def _mail(n: int, before: str, after: str) -> str:
    return (f"From {'0' * 39}{n} Mon Sep 17 00:00:00 2001\nFrom: A <a@e>\n"
            f"Date: Mon, 30 Nov 2026 10:00:00 +0000\nSubject: [PATCH {n}/2] KVM: x86: step {n}\n\n"
            f"x\n---\n{file_diff(REL, before, after)}-- \n2.47.0\n\n")


def _drift(text: str, function: str, mark: str) -> str:
    at = text.index(LOAD, text.index(function))
    return text[:at] + f"\tvcpu_load(vcpu); /* {mark} */\n" + text[at + len(LOAD):]


def _series(tree, second_after: str):
    """Patch 1 is made on a tree whose lines differ from the target's (it conflicts) and adds
    `foo_one(vcpu);` in kvm_arch_vcpu_ioctl_get_mpstate(); patch 2 adds a line after
    `second_after`."""
    base = (tree / REL).read_text()
    drift = _drift(_drift(base, "int kvm_arch_vcpu_ioctl_get_mpstate(", "drift"),
                   "int kvm_arch_vcpu_ioctl_set_mpstate(", "other drift")
    one = drift.replace("/* drift */\n", "/* drift */\n\tfoo_one(vcpu);\n", 1)
    two = one.replace(second_after, second_after + "\tfoo_two(vcpu);\n", 1)
    return read_mails(_mail(1, drift, one) + _mail(2, one, two))


def test_a_hunk_on_an_unported_patchs_lines_names_that_patch(trees, rules):
    report = port_patches(_series(trees["7.2"], "\tfoo_one(vcpu);\n"), [trees["7.2"]], rules=rules)
    first, second = report.targets[0].patches
    assert first.result == second.result == "conflict"
    assert "needs" not in first.hunks[0].reason
    assert second.hunks[0].reason.startswith("needs patch 1/2 'KVM: x86: step 1', which conflicted: "
                                             "its added lines are this hunk's context (`foo_one(vcpu);`)")


def test_a_conflict_of_its_own_does_not_blame_the_earlier_patch(trees, rules):
    """Patch 2 conflicts on a drifted line of another function and holds none of patch 1's
    lines."""
    mails = _series(trees["7.2"], "\tvcpu_load(vcpu); /* other drift */\n")
    report = port_patches(mails, [trees["7.2"]], rules=rules)
    second = report.targets[0].patches[1]
    assert second.result == "conflict" and not second.hunks[0].reason.startswith("needs")
