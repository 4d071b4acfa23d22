"""`port` of fixes written on 7.3 inside code the refactor restructured, onto 7.2 and 6.1.

Each fix is a small edit of the real 7.3 text (as a maintainer would write it)
in a function rules/restructure.toml says the refactor introduced or
re-parameterized: init_kvm_page_walk() ([[walker_init]] `to`),
kvm_mmu_invalidate_addr() ([[walker_param]]), __update_permission_bitmask()
([[parameterize]] `inner`), a caller of spte_permission_fault() and
update_spte_permission_bitmask() ([[spte_permissions]]).  The port must see
a new-layout patch even where the hunk shows only `w->...` lines, and either
port it exactly or name the target's counterparts with their lines there.
The expected lines are read from the target's own text here, not from the
tool.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from refactor.port.counterparts import changed_functions, new_layout_functions
from refactor.port.diff import file_diff
from refactor.port.engine import port_one
from refactor.port.mail import read_mails
from refactor.port.output import mail_text

MMU = "arch/x86/kvm/mmu/mmu.c"
TDP = "arch/x86/kvm/mmu/tdp_mmu.c"
OLD = ["7.2", "6.1"]




def diff_of(tree: Path, rel: str, old: str, new: str) -> str:
    text = (tree / rel).read_text()
    assert text.count(old) == 1, f"{old!r} must occur once in {rel}"
    return file_diff(rel, text, text.replace(old, new))


def mail(diff: str) -> object:
    return read_mails("From: Jane Dev <jane@example.org>\nSubject: [PATCH] KVM: x86/mmu: fix\n\n"
                      f"Explain.\n---\n{diff}")[0]


def line_of(tree: Path, rel: str, pattern: str, after: int = 0) -> int:
    """1-based line of the first line matching `pattern` at or after line `after`."""
    for n, text in enumerate((tree / rel).read_text().split("\n"), 1):
        if n >= after and re.search(pattern, text):
            return n
    raise AssertionError(f"{pattern!r} not in {rel}")


def definition(tree: Path, rel: str, name: str) -> int:
    return line_of(tree, rel, rf"^[a-z].*\b{name}\(")


def applies(tree: Path, diff: str) -> bool:
    return subprocess.run(["git", "apply", "--check", "-"], cwd=tree, input=diff.encode(),
                          capture_output=True).returncode == 0


def added(diff: str) -> list[str]:
    return [ln[1:] for ln in diff.split("\n") if ln.startswith("+") and not ln.startswith("+++")]


# ---- which functions tell a new-layout patch -------------------------------------------------

def test_new_layout_functions_come_from_the_rules(rules, targets):
    new = new_layout_functions(rules)
    # One per introduced-function key of restructure.toml, and no old tree defines any.
    assert {"init_kvm_page_walk", "__update_permission_bitmask", "spte_permission_fault",
            "update_spte_permission_bitmask", "init_kvm_shadow_mmu"} == set(new)
    for v in OLD:
        assert not [n for n in new if targets[v].definitions(n)], v
    assert set(changed_functions(rules)) == {"kvm_mmu_invalidate_addr", "update_permission_bitmask"}


# ---- init_kvm_page_walk() ---------------------------------------------------------------------

WALK_OLD = "\tw->get_guest_pgd     = get_guest_cr3;\n\n\tif (!is_cr0_pg(w))"
WALK_NEW = "\tw->get_guest_pgd     = get_guest_cr3;\n\tw->foo = NULL;\n\n\tif (!is_cr0_pg(w))"


@pytest.mark.parametrize("version", OLD)
def test_walker_line_only_hunk_is_a_backport_naming_each_counterpart(trees, targets, rules, version):
    # As `diff -up` writes it: the heading is cut at 40 columns, so nothing in the hunk but
    # the function's name says it is new-layout code (the lead's probe).
    diff = diff_of(trees["7.3"], MMU, WALK_OLD, WALK_NEW)
    diff = re.sub(r"^(@@ [^@]+ @@ ).*$", r"\1static void init_kvm_page_walk(struct kv", diff, flags=re.M)
    assert "kvm_pagewalk" not in diff
    res = port_one(mail(diff), targets[version], rules)
    assert res.direction == "backport"
    (h,) = res.hunks
    assert h.status == "conflict"
    tree = trees[version]
    for name in ("init_kvm_nested_mmu", "init_kvm_softmmu", "init_kvm_tdp_mmu", "shadow_mmu_init_context",
                 "kvm_init_mmu", "kvm_init_shadow_npt_mmu"):
        assert f"{MMU}:{definition(tree, MMU, name)} {name}()" in h.reason, (name, h.reason)
    assert "restructure.toml init-kvm-page-walk" in h.reason
    # The change as each old initialiser writes it.
    assert "`+g_context->foo = NULL;` in init_kvm_nested_mmu()" in h.reason
    assert "`+context->foo = NULL;` in init_kvm_softmmu(), init_kvm_tdp_mmu()" in h.reason
    # Where: after each one's write of the field the hunk writes just before.
    nested = line_of(tree, MMU, r"g_context->get_guest_pgd\s*=", definition(tree, MMU, "init_kvm_nested_mmu"))
    tdp = line_of(tree, MMU, r"context->get_guest_pgd\s*=", definition(tree, MMU, "init_kvm_tdp_mmu"))
    assert f"after {MMU}:{nested} in init_kvm_nested_mmu()" in h.reason
    assert f"after {MMU}:{tdp} in init_kvm_tdp_mmu()" in h.reason
    # guest_mmu's set-up (kvm_init_shadow_npt_mmu) writes no such field: not ported blindly.
    assert "kvm_init_shadow_npt_mmu() (" in h.reason and "decide there by hand" in h.reason


PKRU_OLD = "\tw->cpu_role.as_u64   = cpu_role.as_u64;\n\tw->inject_page_fault"
PKRU_NEW = "\tw->cpu_role.as_u64   = cpu_role.as_u64;\n\tw->fmt.pkru_mask = 0;\n\tw->inject_page_fault"


@pytest.mark.parametrize("version", OLD)
def test_walker_write_is_ported_into_every_old_initialiser(trees, targets, rules, version):
    res = port_one(mail(diff_of(trees["7.3"], MMU, PKRU_OLD, PKRU_NEW)), targets[version], rules)
    assert res.direction == "backport" and res.result == "ported", res.hunks[0].reason
    (h,) = res.hunks
    assert h.status == "relocated" and h.rules == ["init-kvm-page-walk"]
    tree = trees[version]
    for name in ("init_kvm_nested_mmu", "init_kvm_tdp_mmu", "shadow_mmu_init_context"):
        assert f"{name}() ({MMU}:{definition(tree, MMU, name)})" in h.reason
    assert applies(tree, res.diff)
    assert sorted(x.strip() for x in added(res.diff)) == ["context->pkru_mask = 0;"] * 2 + \
        ["g_context->pkru_mask = 0;"]
    # Each right after that function's cpu_role write (the neighbour in the patch).
    new = res.files[MMU].split("\n")
    for name, local in (("init_kvm_nested_mmu", "g_context"), ("init_kvm_tdp_mmu", "context"),
                        ("shadow_mmu_init_context", "context")):
        at = next(i for i in range(definition(tree, MMU, name), len(new))
                  if re.match(rf"\s*{local}->cpu_role\.as_u64\s*=", new[i]))
        assert new[at + 1].strip() == f"{local}->pkru_mask = 0;", (name, new[at:at + 2])
    # The stable note says where the change went.
    out = mail_text(res, targets[version], ("P", "p@e"), None, rules)
    assert ("init_kvm_page_walk() is not in this tree: made in init_kvm_nested_mmu(), "
            "init_kvm_tdp_mmu(), shadow_mmu_init_context()") in out


CHANGE_OLD = "\tw->inject_page_fault = kvm_inject_page_fault;\n"
CHANGE_NEW = "\tw->inject_page_fault = kvm_inject_emulated_page_fault;\n"


@pytest.mark.parametrize("version", OLD)
def test_changed_walker_write_is_changed_wherever_the_old_code_makes_it(trees, targets, rules, version):
    res = port_one(mail(diff_of(trees["7.3"], MMU, CHANGE_OLD, CHANGE_NEW)), targets[version], rules)
    assert res.result == "ported", res.hunks[0].reason
    assert applies(trees[version], res.diff)
    removed = [ln[1:].split("=")[0].strip() for ln in res.diff.split("\n")
               if ln.startswith("-") and not ln.startswith("---")]
    assert sorted(removed) == ["context->inject_page_fault"] * 2 + ["g_context->inject_page_fault"]
    # The target's alignment is kept (init_kvm_nested_mmu() aligns its `=`).
    assert "\tg_context->inject_page_fault = kvm_inject_emulated_page_fault;" in added(res.diff)
    assert "kvm_inject_page_fault;" not in "\n".join(added(res.diff))


@pytest.mark.parametrize("version", OLD)
def test_walker_write_of_a_missing_helper_is_a_prerequisite(trees, targets, rules, version):
    new = "\tw->inject_page_fault = kvm_inject_page_fault_checked;\n"
    res = port_one(mail(diff_of(trees["7.3"], MMU, CHANGE_OLD, new)), targets[version], rules)
    (h,) = res.hunks
    assert h.status == "conflict" and h.reason.startswith("missing prerequisite: `kvm_inject_page_fault_checked`")
    assert f"{MMU}:{definition(trees[version], MMU, 'init_kvm_nested_mmu')} init_kvm_nested_mmu()" in h.reason


@pytest.mark.parametrize("version", OLD)
def test_renamed_initialiser_names_its_old_name(trees, targets, rules, version):
    # init_kvm_shadow_mmu() is [[walker_init]] `rename` of kvm_init_shadow_mmu(); the hunk's
    # context (shadow_mmu_init_context() lost its cpu_role argument) does not match there.
    old = "\troot_role.efer_nx = true;\n\n\tshadow_mmu_init_context(vcpu, context, root_role);"
    new = old.replace("true;\n", "true;\n\troot_role.cr0_wp = true;\n", 1)
    res = port_one(mail(diff_of(trees["7.3"], MMU, old, new)), targets[version], rules)
    (h,) = res.hunks
    assert res.direction == "backport" and h.status == "conflict"
    at = definition(trees[version], MMU, "kvm_init_shadow_mmu")
    assert f"init_kvm_shadow_mmu() is a name the refactor gave (restructure.toml init-kvm-page-walk); " \
           f"on the old layout: {MMU}:{at} kvm_init_shadow_mmu()" in h.reason, h.reason
    assert "`+root_role.cr0_wp = true;` in kvm_init_shadow_mmu()" in h.reason


# ---- kvm_mmu_invalidate_addr() ----------------------------------------------------------------

INV_OLD = "\t/* Invalidate shadow pages, whether GPA->GVA or nGPA->GPA.  */\n"
INV_NEW = "\tif (w->cpu_role.base.guest_mode)\n\t\treturn;\n\n" + INV_OLD


@pytest.mark.parametrize("version,name", [("7.2", "kvm_mmu_invalidate_addr"), ("6.1", "kvm_mmu_invalidate_gva")])
def test_invalidate_addr_names_the_old_function_and_its_mmu(trees, targets, rules, version, name):
    res = port_one(mail(diff_of(trees["7.3"], MMU, INV_OLD, INV_NEW)), targets[version], rules)
    assert res.direction == "backport"
    (h,) = res.hunks
    assert h.status == "conflict"
    assert f"{MMU}:{definition(trees[version], MMU, name)} {name}()" in h.reason, h.reason
    assert "restructure.toml invalidate-addr-takes-walker" in h.reason
    assert "`== &vcpu->arch.gva_walk` reads `mmu != &vcpu->arch.guest_mmu`" in h.reason
    assert f"`+if (mmu->cpu_role.base.guest_mode)`, `+return;` in {name}()" in h.reason


# ---- __update_permission_bitmask() --------------------------------------------------------------

PERM_OLD = "\t\tfmt->permissions[index] = ff | uf | wf | rf | smapf;\n"
PERM_NEW = "\t\tif (!cr0_wp && cr4_smap)\n\t\t\tsmapf = 0;\n" + PERM_OLD


def test_permission_bitmask_fix_ports_onto_7_2(trees, targets, rules):
    res = port_one(mail(diff_of(trees["7.3"], MMU, PERM_OLD, PERM_NEW)), targets["7.2"], rules)
    assert res.direction == "backport" and res.result == "ported", res.hunks[0].reason
    assert applies(trees["7.2"], res.diff)
    assert [x.strip() for x in added(res.diff)] == ["if (!cr0_wp && cr4_smap)", "smapf = 0;"]
    # Located in update_permission_bitmask(), which holds the body on the old layout.
    (h,) = res.hunks
    assert h.status == "relocated" and "parameterize-permission-bitmask" in h.rules
    start = definition(trees["7.2"], MMU, "update_permission_bitmask")
    assert f"ported to update_permission_bitmask() ({MMU}:" in h.reason
    assert start < h.target_start < line_of(trees["7.2"], MMU, r"^}", start)
    out = mail_text(res, targets["7.2"], ("P", "p@e"), None, rules)
    assert "__update_permission_bitmask() is not in this tree: made in update_permission_bitmask()" in out


def test_permission_bitmask_fix_onto_6_1_names_update_permission_bitmask(trees, targets, rules):
    res = port_one(mail(diff_of(trees["7.3"], MMU, PERM_OLD, PERM_NEW)), targets["6.1"], rules)
    (h,) = res.hunks
    assert res.direction == "backport" and h.status == "conflict"
    at = definition(trees["6.1"], MMU, "update_permission_bitmask")
    assert f"{MMU}:{at} update_permission_bitmask()" in h.reason, h.reason
    assert "__update_permission_bitmask() was introduced by the refactor (restructure.toml " \
           "parameterize-permission-bitmask)" in h.reason
    assert "`+if (!cr0_wp && cr4_smap)`, `+smapf = 0;` in update_permission_bitmask()" in h.reason


# ---- spte_permission_fault() and its bitmap ---------------------------------------------------------

SPTE_OLD = "(fault->prefetch || !spte_permission_fault(mmu, iter->old_spte, fault)) &&"
SPTE_NEW = "(fault->prefetch || spte_permission_fault(mmu, iter->old_spte, fault)) &&"


def test_spte_permission_fault_caller_ports_onto_7_2_as_is_access_allowed(trees, targets, rules):
    res = port_one(mail(diff_of(trees["7.3"], TDP, SPTE_OLD, SPTE_NEW)), targets["7.2"], rules)
    assert res.direction == "backport" and res.result == "ported", res.hunks[0].reason
    assert "spte-permission-fault" in res.hunks[0].rules
    assert [x.strip() for x in added(res.diff)] == ["(fault->prefetch || !is_access_allowed(fault, iter->old_spte)) &&"]
    assert applies(trees["7.2"], res.diff)
    out = mail_text(res, targets["7.2"], ("P", "p@e"), None, rules)
    assert "spte_permission_fault() restated as the negation of is_access_allowed()" in out
    assert "mmu -> fault" not in out   # the restated arguments are not a renaming


def test_spte_permission_fault_caller_onto_6_1_names_is_access_allowed(trees, targets, rules):
    # 6.1's tdp_mmu_map_handle_target_level() differs around the check: a conflict that says
    # what the calls are there, and where the function is.
    res = port_one(mail(diff_of(trees["7.3"], TDP, SPTE_OLD, SPTE_NEW)), targets["6.1"], rules)
    (h,) = res.hunks
    assert res.direction == "backport" and h.status == "conflict"
    tree = trees["6.1"]
    assert f"{MMU}:{definition(tree, MMU, 'is_access_allowed')} is_access_allowed()" in h.reason, h.reason
    assert f"{TDP}:{definition(tree, TDP, 'tdp_mmu_map_handle_target_level')} " \
           "tdp_mmu_map_handle_target_level() as:" in h.reason
    assert "`+(fault->prefetch || !is_access_allowed(fault, iter->old_spte)) &&`" in h.reason


@pytest.mark.parametrize("version", OLD)
def test_spte_bitmask_fix_names_the_old_check(trees, targets, rules, version):
    old = "mmu->root_role.cr4_smep, false, true, true);"
    new = "mmu->root_role.cr4_smep, false, false, true);"
    res = port_one(mail(diff_of(trees["7.3"], MMU, old, new)), targets[version], rules)
    (h,) = res.hunks
    assert res.direction == "backport" and h.status == "conflict"
    rel, line, _ = [d for d in targets[version].definitions("is_access_allowed") if d[0].endswith((".c", ".h"))][0]
    assert f"{rel}:{line} is_access_allowed()" in h.reason, h.reason
    assert "update_spte_permission_bitmask() was introduced by the refactor" in h.reason


# ---- the same functions, fixed on the old layout and ported forward ------------------------------

FORWARD = [
    (MMU, "\tg_context->cpu_role.as_u64   = new_mode.as_u64;\n",
     "\tg_context->cpu_role.as_u64   = new_mode.as_u64;\n\tg_context->pkru_mask = 0;\n"),
    (MMU, "\tif (!mmu->sync_spte)\n\t\treturn;\n\n\tif (roots & KVM_MMU_ROOT_CURRENT)",
     "\tif (!mmu->sync_spte || !VALID_PAGE(mmu->root.hpa))\n\t\treturn;\n\n\tif (roots & KVM_MMU_ROOT_CURRENT)"),
    (MMU, "\t\tmmu->permissions[index] = ff | uf | wf | rf | smapf;\n",
     "\t\tif (!cr0_wp && cr4_smap)\n\t\t\tsmapf = 0;\n\t\tmmu->permissions[index] = ff | uf | wf | rf | smapf;\n"),
    (TDP, "(fault->prefetch || is_access_allowed(fault, iter->old_spte)) &&",
     "(fault->prefetch || !is_access_allowed(fault, iter->old_spte)) &&"),
]


@pytest.mark.parametrize("rel,old,new", FORWARD)
def test_old_layout_fixes_are_not_taken_for_new_layout_ones(trees, targets, rules, rel, old, new):
    """Old-layout fixes in the counterparts are never read as backports: none names a function
    only the new layout has, and nothing of the backport analysis is applied to them."""
    res = port_one(mail(diff_of(trees["7.2"], rel, old, new)), targets["7.3"], rules)
    assert res.direction in ("forward", "same")
    for h in res.hunks:
        assert "spte-permission-fault" not in h.rules and "on the old layout" not in (h.reason or "")
