"""Backports whose walker local is declared above the hunk (issue 16 item 1): most real
stable backports start below the signature, so `w` has no declaration in the hunk.  The
port takes it for the target's MMU only where the patch's own lines say it is a walker and
the target's function of the same name has one MMU used the same way; a near miss of
either side stays a conflict.  Mails are made from 7.3's own code (a line repeated, as
bench/port_bench.py makes them), or hand-written where a hunk must show less."""
from __future__ import annotations

import subprocess
from pathlib import Path

from refactor.port.diff import file_diff
from refactor.port.engine import port_one
from refactor.port.mail import read_mails

MMU = "arch/x86/kvm/mmu/mmu.c"
PERMISSIONS = "\tupdate_permission_bitmask(w, w == &vcpu->arch.ngpa_walk, false);\n"
HEAD = ("From 1234567890abcdef1234567890abcdef12345678 Mon Sep 17 00:00:00 2001\n"
        "From: Jane Dev <jane@example.org>\nDate: Tue, 3 Nov 2026 10:00:00 +0100\n"
        "Subject: [PATCH] KVM: x86/mmu: Probe\n\nExplain.\n\nSigned-off-by: Jane Dev <jane@example.org>\n---\n")


def mail(tree: Path, rel: str, old: str, new: str) -> object:
    text = (tree / rel).read_text()
    assert text.count(old) == 1, old
    return read_mails(HEAD + file_diff(rel, text, text.replace(old, new)) + "-- \n2.47.0\n\n", "p.mbox")[0]


def hand_mail(rel: str, hunks: str) -> object:
    return read_mails(f"{HEAD}diff --git a/{rel} b/{rel}\n--- a/{rel}\n+++ b/{rel}\n{hunks}-- \n2.47.0\n\n",
                      "p.mbox")[0]


def applies(tree: Path, diff: str) -> bool:
    return subprocess.run(["git", "apply", "--check", "-"], cwd=tree, input=diff.encode(),
                          capture_output=True).returncode == 0


def added(diff: str) -> list[str]:
    return [x[1:] for x in diff.split("\n") if x.startswith("+") and not x.startswith("+++")]


def test_a_walker_parameter_above_the_hunk_ports_as_the_targets_mmu(trees, targets, rules):
    # reset_guest_paging_metadata(struct kvm_vcpu *vcpu, struct kvm_pagewalk *w): the hunk
    # starts below the signature.  `w == &vcpu->arch.ngpa_walk` says `w` is a walker; 7.2's
    # function of the same name has one MMU, `mmu`, passed to reset_guest_rsvds_bits_mask()
    # as the hunk passes `w`: the line comes out as 7.2's own, repeated.
    res = port_one(mail(trees["7.3"], MMU, PERMISSIONS, PERMISSIONS * 2), targets["7.2"], rules)
    assert res.result == "ported", [h.reason for h in res.hunks]
    assert res.hunks[0].status == "translated" and "port-local-names" in res.hunks[0].rules
    own = "\tupdate_permission_bitmask(mmu, mmu == &vcpu->arch.guest_mmu, false);"
    assert own + "\n" in (trees["7.2"] / MMU).read_text()
    assert added(res.diff) == [own]
    assert applies(trees["7.2"], res.diff)


def test_on_6_1_the_renamed_hunk_meets_the_shorter_argument_list(trees, targets, rules):
    # 6.1's update_permission_bitmask() takes two arguments: after the rename that is the
    # one line that differs, a non-layout difference, and no "rename it by hand" is left.
    res = port_one(mail(trees["7.3"], MMU, PERMISSIONS, PERMISSIONS * 2), targets["6.1"], rules)
    h = res.hunks[0]
    assert h.status == "conflict" and h.target_start is not None
    assert h.reason.startswith("context differs for non-layout reasons")
    # The patch's line as the patch writes it, and the rename said.
    assert h.reason.startswith("context differs for non-layout reasons: patch "
                               "`update_permission_bitmask(w, w == &vcpu->arch.ngpa_walk, false);` vs target "
                               "`update_permission_bitmask(mmu, false);`"), h.reason
    assert h.reason.endswith("; the patch's `w`, declared outside the hunk, is the target's `mmu` there: "
                             "`w == &vcpu->arch.ngpa_walk` (a walker)")
    assert "rename it by hand" not in h.reason


def test_a_local_the_patch_says_is_an_mmu_and_a_walker_stays_a_conflict(trees, targets, rules):
    # Near miss: the added line reads `w->root_role` (layout.toml: a member of the MMU only)
    # while the context compares `w` with a walker: the evidence disagrees, no rename.
    new = PERMISSIONS + "\tif (w->root_role.direct)\n\t\treturn;\n"
    res = port_one(mail(trees["7.3"], MMU, PERMISSIONS, new), targets["7.2"], rules)
    h = res.hunks[0]
    assert h.status == "conflict", h.new_lines
    assert "the patch's lines disagree on what `w` is" in h.reason
    assert "`w == &vcpu->arch.ngpa_walk` (a walker)" in h.reason
    assert "`w->root_role` (layout.toml: an MMU member) (an MMU)" in h.reason
    assert "rename it by hand" in h.reason


UNTYPED = """\
@@ -6212,2 +6212,3 @@ void kvm_mmu_after_set_cpuid(struct kvm_vcpu *vcpu)
 	vcpu->arch.root_mmu.root_role.invalid = 1;
+	vcpu->arch.ngpa_walk.cpu_role.ext.valid = 0;
 	vcpu->arch.guest_mmu.root_role.invalid = 1;
@@ -5888,2 +5889,3 @@ static void reset_guest_paging_metadata(struct kvm_vcpu *vcpu,
 	update_pkru_bitmask(w);
+	update_pkru_bitmask(w);
 }
"""


def test_a_local_nothing_in_the_patch_types_stays_a_conflict(trees, targets, rules):
    # Near miss: a hunk that only passes `w` on (the other hunk makes the patch a backport):
    # the target's `mmu` is used the same way, but nothing says `w` is a walker.
    res = port_one(hand_mail(MMU, UNTYPED), targets["7.2"], rules)
    h = res.hunks[1]
    assert h.status == "conflict", h.new_lines
    assert "the patch's `w` is the target's `mmu`" in h.reason
    assert "nothing in the patch says what `w` is" in h.reason


def test_a_target_function_without_an_mmu_of_its_own_stays_a_conflict(trees, targets, rules):
    # Near miss on the target's side: 7.2 with reset_guest_paging_metadata()'s parameter a
    # page format, not an MMU: the patch's walker has no counterpart there.
    text = targets["7.2"].text(MMU)
    sig = "static void reset_guest_paging_metadata(struct kvm_vcpu *vcpu,\n\t\t\t\t\tstruct kvm_mmu *mmu)"
    assert text.count(sig) == 1
    other = targets["7.2"].patched({MMU: text.replace(sig, sig.replace("struct kvm_mmu *mmu",
                                                                     "struct rsvd_bits_validate *mmu"))})
    res = port_one(mail(trees["7.3"], MMU, PERMISSIONS, PERMISSIONS * 2), other, rules)
    assert res.hunks[0].status == "conflict"
    assert res.hunks[0].target_start is None
    # ...nor is that page format named as the walker's counterpart in the reason.
    assert "the patch's `w` is the target's `mmu`" not in res.hunks[0].reason
