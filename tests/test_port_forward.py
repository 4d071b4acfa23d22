"""Forward ports: fixes written on old-layout trees (7.2, 6.1, 5.10) onto 7.3 and 7.2.

Each probe repeats one line of the source tree's own function, as
bench/port_bench.py --forward makes them; the line the port adds must be what
`rewrite` makes of the patched source (measured there for every probe; the
expected lines here are those outputs), and a near miss beside each fix must
still come out otherwise (translated, or a conflict).
"""
from __future__ import annotations

import re
from pathlib import Path

from refactor.port.diff import file_diff
from refactor.port.engine import port_one
from refactor.port.mail import read_mails

MMU_C, X86 = "arch/x86/kvm/mmu/mmu.c", "arch/x86/kvm/x86.c"


def probe(tree: Path, rel: str, function: str, line: str, new: str | None = None):
    """A mail that repeats `line` (the first after `function`'s definition), or adds `new` after it."""
    text = (tree / rel).read_text()
    head = re.search(rf"^\w[^\n]*\b{re.escape(function)}\(", text, re.M)
    assert head, f"{function}() not in {rel}"
    at = text.index(line + "\n", head.end()) + len(line) + 1
    diff = file_diff(rel, text, text[:at] + (line if new is None else new) + "\n" + text[at:])
    return read_mails("From: A <a@e>\nSubject: [PATCH] probe\n\nx\n---\n" + diff)[0]


def added(res) -> list[str]:
    return [x[1:] for x in res.diff.split("\n") if x.startswith("+") and not x.startswith("+++")]


# ---- a field that stayed on the MMU, next to one that moved to the walker -----------------------

ROOT = "\t\thpa_t root = vcpu->arch.mmu->root.hpa;"
LEVEL = "\tif (vcpu->arch.mmu->cpu_role.base.level >= PT64_ROOT_4LEVEL) {"


def test_a_field_that_stayed_on_the_mmu_is_not_sent_through_the_walker(trees, targets, rules):
    """kvm_mmu_sync_roots() on 7.2 reads `vcpu->arch.mmu->root.hpa` right below a test of
    `vcpu->arch.mmu->cpu_role` (7.3: `->w->cpu_role`).  The context pair taught the port that
    `vcpu->arch.mmu->` is the target's `vcpu->arch.mmu->w->`, and the repeated line came out as
    `vcpu->arch.mmu->w->root.hpa` (no such member): only fields that moved go through the walker."""
    res = port_one(probe(trees["7.2"], MMU_C, "kvm_mmu_sync_roots", ROOT), targets["7.3"], rules)
    assert res.result == "ported", [h.reason for h in res.hunks]
    assert added(res) == [ROOT]
    # The patch names a field that moved, read through a vcpu MMU member: it is old-layout
    # code, ported forward (translated), not applied as it is.
    assert res.direction == "forward"


def test_a_field_that_moved_still_goes_through_the_walker(trees, targets, rules):
    """The near miss: the line with the moved field, in the same function, is translated."""
    res = port_one(probe(trees["7.2"], MMU_C, "kvm_mmu_sync_roots", LEVEL), targets["7.3"], rules)
    assert res.result == "ported" and res.direction == "forward", [h.reason for h in res.hunks]
    assert added(res) == ["\tif (vcpu->arch.mmu->w->cpu_role.base.level >= PT64_ROOT_4LEVEL) {"]
    assert "field-cpu_role" in res.hunks[0].rules


# ---- 5.10's vcpu->arch.walk_mmu in a call, where the target calls through a local -----------------

SYSTEM = "\treturn vcpu->arch.walk_mmu->gva_to_gpa(vcpu, gva, 0, exception);"


def test_walk_mmu_in_a_call_is_the_targets_local(t510, targets, rules):
    """5.10's kvm_mmu_gva_to_gpa_system() calls `vcpu->arch.walk_mmu->gva_to_gpa(vcpu, gva, 0,
    exception)`; 7.2 holds the MMU in `struct kvm_mmu *mmu = vcpu->arch.walk_mmu;` and 7.3 the
    walker in `struct kvm_pagewalk *gva_walk = &vcpu->arch.gva_walk;`.  The hook takes the object
    on both (port-hook-arguments); the object is the target's local (port-local-names)."""
    mail = probe(t510.root, X86, "kvm_mmu_gva_to_gpa_system", SYSTEM)
    for version, want in (("7.2", "\treturn mmu->gva_to_gpa(vcpu, mmu, gva, 0, exception);"),
                          ("7.3", "\treturn gva_walk->gva_to_gpa(vcpu, gva_walk, gva, 0, exception);")):
        res = port_one(mail, targets[version], rules)
        assert res.result == "ported", (version, [h.reason for h in res.hunks])
        assert added(res) == [want], version
        assert {"port-local-names", "port-hook-arguments"} <= set(res.hunks[0].rules), version


def test_another_mmu_in_the_call_is_not_the_targets_local(t510, targets, rules):
    """The near miss: a fix that calls through `vcpu->arch.mmu` (not what the target's local
    holds) beside the same context is no renaming of that local: a conflict on 7.2."""
    other = SYSTEM.replace("walk_mmu", "mmu")
    text = (t510.root / X86).read_text()
    head = text.index("gpa_t kvm_mmu_gva_to_gpa_system(")
    at = text.index(SYSTEM, head)
    edited = text[:at] + other + text[at + len(SYSTEM):]
    diff = file_diff(X86, edited, edited[:at] + other + "\n" + edited[at:])
    mail = read_mails("From: A <a@e>\nSubject: [PATCH] probe\n\nx\n---\n" + diff)[0]
    res = port_one(mail, targets["7.2"], rules)
    assert res.result == "conflict"
    # The reason shows the call as the patch writes it, not as fitted to the target's hook.
    assert ("patch `return vcpu->arch.mmu->gva_to_gpa(vcpu, gva, 0, exception);` vs target "
            "`return mmu->gva_to_gpa(vcpu, mmu, gva, 0, exception);`") in res.hunks[0].reason


def test_a_conflict_shows_the_patchs_own_hook_call(t510, targets, rules):
    """5.10's kvm_mmu_gva_to_gpa_read() differs from 7.3's for other reasons (`u32 access =
    (kvm_x86_ops.get_cpl(vcpu) ...`): the conflict lists the hook call as 5.10 has it, not with
    the argument the port would have passed (`(vcpu, vcpu->arch.walk_mmu, gva, ...)`)."""
    line = "\treturn vcpu->arch.walk_mmu->gva_to_gpa(vcpu, gva, access, exception);"
    res = port_one(probe(t510.root, X86, "kvm_mmu_gva_to_gpa_read", line), targets["7.3"], rules)
    assert res.result == "conflict"
    reason = res.hunks[0].reason
    assert f"patch `{line.strip()}` vs target `return gva_walk->gva_to_gpa(" in reason, reason
    assert "vcpu->arch.walk_mmu, gva" not in reason


# ---- 6.1's nested test: walk_mmu and nested_mmu are one walker on the new layout -----------------

NESTED = "\treturn vcpu->arch.walk_mmu == &vcpu->arch.nested_mmu;"


def before(tree: Path, rel: str, line: str, new: str):
    """A mail that adds `new` just above `line` (which stands once in `rel`)."""
    text = (tree / rel).read_text()
    assert text.count(line + "\n") == 1
    at = text.index(line + "\n")
    diff = file_diff(rel, text, text[:at] + new + "\n" + text[at:])
    return read_mails("From: A <a@e>\nSubject: [PATCH] probe\n\nx\n---\n" + diff)[0]


def test_the_nested_test_is_restated_not_translated_name_by_name(trees, targets, rules):
    """6.1's mmu_is_nested() (x86.h) tests `vcpu->arch.walk_mmu == &vcpu->arch.nested_mmu`;
    name by name both sides became `&vcpu->arch.gva_walk` (always true).  mappings.toml
    restates the test (walk-mmu-is-nested), as `rewrite` does: `vcpu->arch.mmu ==
    &vcpu->arch.guest_mmu`, in mmu.h on 7.3; its negation too."""
    res = port_one(probe(trees["6.1"], "arch/x86/kvm/x86.h", "mmu_is_nested", NESTED), targets["7.3"], rules)
    assert res.result == "ported", [h.reason for h in res.hunks]
    assert added(res) == ["\treturn vcpu->arch.mmu == &vcpu->arch.guest_mmu;"]
    assert res.hunks[0].target_file == "arch/x86/kvm/mmu.h" and "walk-mmu-is-nested" in res.hunks[0].rules
    warn = before(trees["6.1"], "arch/x86/kvm/x86.h", NESTED,
                  "\tWARN_ON(vcpu->arch.walk_mmu != &vcpu->arch.nested_mmu);")
    res = port_one(warn, targets["7.3"], rules)
    assert added(res) == ["\tWARN_ON(vcpu->arch.mmu != &vcpu->arch.guest_mmu);"]


def test_a_test_the_rules_do_not_restate_is_a_conflict(trees, targets, rules):
    """The near miss: the same test written the other way round is not the rule's; translated
    name by name it compares the walker with itself, which would port silently as a constant."""
    mail = before(trees["6.1"], "arch/x86/kvm/x86.h", NESTED,
                  "\tWARN_ON(&vcpu->arch.nested_mmu == vcpu->arch.walk_mmu);")
    res = port_one(mail, targets["7.3"], rules)
    assert res.result == "conflict"
    assert res.hunks[0].reason.startswith(
        "the translated test `&vcpu->arch.gva_walk == &vcpu->arch.gva_walk` compares the walker with itself")


# ---- a local the target keeps beside the walker it hoists ----------------------------------------

PML5 = "\tbool need_pml5 = mmu->root_role.level > PT64_ROOT_4LEVEL;"


def test_a_local_the_target_keeps_is_not_renamed_to_its_walker(trees, targets, rules):
    """7.2's mmu_alloc_special_roots() has `struct kvm_mmu *mmu = vcpu->arch.mmu;`; 7.3 keeps it
    and adds `struct kvm_pagewalk *w = mmu->w;`.  A layout-neutral line (root_role stays on the
    MMU) ports as it is: the hoisted walker is upstream's style, not a difference, and pairing
    the two declarations must not rename `mmu` to `w` (`w->root_role`: no such member)."""
    res = port_one(probe(trees["7.2"], MMU_C, "mmu_alloc_special_roots", PML5), targets["7.3"], rules)
    assert res.result == "ported", [h.reason for h in res.hunks]
    assert added(res) == [PML5]


def test_a_local_the_target_renamed_still_follows(trees, targets, rules):
    """The near miss: FNAME(walk_addr_generic)'s `mmu` parameter is 7.3's `w` (the target has no
    `mmu` of its own): the rename still applies."""
    line = "\twalker->level = mmu->cpu_role.base.level;"
    res = port_one(probe(trees["7.2"], "arch/x86/kvm/mmu/paging_tmpl.h", "FNAME(walk_addr_generic)", line),
                   targets["7.3"], rules)
    assert res.result == "ported", [h.reason for h in res.hunks]
    assert added(res) == ["\twalker->level = w->cpu_role.base.level;"]


# ---- the function a hunk is in, when the next definition's line follows the change ---------------

def test_a_hunk_is_in_the_function_above_the_next_definitions_line(trees, targets, rules):
    """A line repeated at the end of 6.1's kvm_mmu_gva_to_gpa_read() has
    `EXPORT_SYMBOL_GPL(kvm_mmu_gva_to_gpa_read);` in its context after the change; the conflict
    (6.1's `static_call(kvm_x86_get_cpl)` is `kvm_x86_call(get_cpl)` on 7.3) was reported as
    "EXPORT_SYMBOL_GPL() is at arch/x86/kvm/mmu/page_track.c:264": it names the function the
    change is in, and the lines that really differ."""
    line = "\treturn mmu->gva_to_gpa(vcpu, mmu, gva, access, exception);"
    res = port_one(probe(trees["6.1"], X86, "kvm_mmu_gva_to_gpa_read", line), targets["7.3"], rules)
    reason = res.hunks[0].reason
    assert res.result == "conflict" and "EXPORT_SYMBOL_GPL() is at" not in reason, reason
    assert "kvm_mmu_gva_to_gpa_read() is at arch/x86/kvm/x86.c:" in reason
    assert "patch `u64 access = (static_call(kvm_x86_get_cpl)(vcpu) == 3)" in reason


def test_a_hunk_that_changes_a_definitions_line_is_in_that_function(trees, targets, rules):
    """The near miss: a removed line is the change's own, even at the top level (a function's
    own first line changed): the hunk is in that function, as before."""
    from refactor.port.headings import function_of

    regs = "arch/x86/kvm/regs.c"
    text = (trees["7.2"] / regs).read_text()
    old = "int load_pdptrs(struct kvm_vcpu *vcpu, unsigned long cr3)\n"
    assert text.count(old) == 1
    diff = file_diff(regs, text, text.replace(old, "int load_pdptrs(struct kvm_vcpu *vcpu, u64 cr3)\n"))
    hunk = read_mails("From: A <a@e>\nSubject: [PATCH] p\n\nx\n---\n" + diff)[0].patch.files[0].hunks[0]
    assert function_of(hunk) == "load_pdptrs"
