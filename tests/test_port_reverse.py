"""`port` inverts the layout changes of `series` (issue 16 item 5: the series patches ported
back onto their base reverse exactly), and only those.

Each test writes, on the real 7.2 or 6.1 tree, what a step of `series` writes there (a hunk
whose pre-image is the tree's code in the step's intermediate layout) and ports it back onto
the tree: it must come out as nothing.  Beside it, a fix that looks the same but changes
something must still be ported as a change, or be a conflict: a hunk that silently leaves
the target as it is where the patch meant a change would be a wrong port.
"""
from __future__ import annotations

import re

from refactor.port.diff import file_diff
from refactor.port.engine import port_one
from refactor.port.mail import read_mails

SHA = "1234567890abcdef1234567890abcdef12345678"
MMU_C = "arch/x86/kvm/mmu/mmu.c"




def mail_of(diff: str) -> str:
    """The diff as a format-patch mail with an upstream sha (tests/test_port_reverse_spte.py too)."""
    return (f"From {SHA} Mon Sep 17 00:00:00 2001\nFrom: Jane Dev <jane@example.org>\n"
            "Date: Tue, 3 Nov 2026 10:00:00 +0100\nSubject: [PATCH] KVM: x86/mmu: Restate the walk\n\n"
            "Explain.\n\nSigned-off-by: Jane Dev <jane@example.org>\n---\n"
            f"{diff}-- \n2.47.0\n\n")


def only_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def _port(target, rel: str, before: str, after: str, rules):
    return port_one(read_mails(mail_of(file_diff(rel, before, after)))[0], target, rules)


def _added(diff: str) -> list[str]:
    return [ln[1:] for ln in diff.split("\n") if ln.startswith("+") and not ln.startswith("+++")]


def _function(text: str, head: str) -> tuple[int, int]:
    start = text.index(head)
    return start, text.index("\n}\n", start) + 3


# ---- a walker local declared above the hunk is the old function's MMU ----

def _tdp_walker_local(text: str) -> str:
    """7.2's init_kvm_tdp_mmu() as `series` leaves it before step 6: the walker's fields are
    written through a `gva_walk` local declared at the top, the role tests still take the MMU."""
    a, b = _function(text, "static void init_kvm_tdp_mmu(")
    body = text[a:b].replace("\tstruct kvm_mmu *context = &vcpu->arch.root_mmu;\n",
                             "\tstruct kvm_mmu *context = &vcpu->arch.root_mmu;\n"
                             "\tstruct kvm_pagewalk *gva_walk = &vcpu->arch.gva_walk;\n")
    for f in ("get_guest_pgd", "get_pdptr", "inject_page_fault", "gva_to_gpa"):
        body = body.replace(f"context->{f} ", f"gva_walk->{f} ")
    return text[:a] + body + text[b:]


def _ported_as_nothing(res) -> None:
    """A backport that ports and leaves the target as it is."""
    assert res.direction == "backport" and res.result == "ported", [(h.old_start, h.reason) for h in res.hunks]
    assert res.diff == "", res.diff


def test_a_walker_local_declared_above_the_hunk_is_the_old_mmu(trees, targets, rules):
    """Step 6 (CPU-role accessors take the walker) on init_kvm_tdp_mmu(): `is_cr0_pg(context)`
    becomes `is_cr0_pg(gva_walk)`, a local the hunk does not declare.  On 7.2 the function's
    one MMU, root_mmu, is its own walker: the hunk is nothing there."""
    text = (trees["7.2"] / MMU_C).read_text()
    before = _tdp_walker_local(text)
    after = only_once(before, "\tif (!is_cr0_pg(context))\n\t\tgva_walk->", "\tif (!is_cr0_pg(gva_walk))\n\t\tgva_walk->")
    after = only_once(after, "\telse if (is_cr4_pae(context))\n\t\tgva_walk->",
                  "\telse if (is_cr4_pae(gva_walk))\n\t\tgva_walk->")
    res = _port(targets["7.2"], MMU_C, before, after, rules)
    _ported_as_nothing(res)
    assert "port-local-names" in res.hunks[0].rules

    # A fix there (another walk for PAE guests) is ported as that change, on the MMU.
    fix = only_once(before, "\t\tgva_walk->gva_to_gpa = paging64_gva_to_gpa;\n\telse\n",
                "\t\tgva_walk->gva_to_gpa = paging32_gva_to_gpa;\n\telse\n")
    res = _port(targets["7.2"], MMU_C, before, fix, rules)
    assert res.result == "ported", [h.reason for h in res.hunks]
    assert _added(res.diff) == ["\t\tcontext->gva_to_gpa = paging32_gva_to_gpa;"], res.diff


# ---- a walker-naming local the patch removes was never there on the old layout ----

GET_PGD = "static inline unsigned long kvm_mmu_get_guest_pgd(struct kvm_vcpu *vcpu,\n"


def _get_pgd_walker_local(text: str) -> str:
    """7.2's kvm_mmu_get_guest_pgd() as `series` step 2 writes it: `struct kvm_pagewalk *w =
    mmu->w;` and the walker's hook read through it."""
    a, b = _function(text, GET_PGD)
    body = text[a:b].replace("{\n", "{\n\tstruct kvm_pagewalk *w = mmu->w;\n\n", 1).replace("mmu->get_guest_pgd",
                                                                                          "w->get_guest_pgd")
    return text[:a] + body + text[b:]


def test_a_removed_walker_local_that_became_the_parameter_ports_back_as_nothing(trees, targets, rules):
    """Step 11 (the page walker takes the walker): kvm_mmu_get_guest_pgd()'s MMU parameter
    becomes the walker `w` its local named.  On 7.2 there is no local, the MMU is the walker:
    nothing to port."""
    text = (trees["7.2"] / MMU_C).read_text()
    before = _get_pgd_walker_local(text)
    after = only_once(before, "\t\t\t\t\t\t  struct kvm_mmu *mmu)\n{\n\tstruct kvm_pagewalk *w = mmu->w;\n\n",
                  "\t\t\t\t\t\t  struct kvm_pagewalk *w)\n{\n")
    res = _port(targets["7.2"], MMU_C, before, after, rules)
    _ported_as_nothing(res)
    assert "port-inline-local" in res.hunks[0].rules

    # The same, with a fix in the function: the fix is ported, on the MMU 7.2 passes.
    fix = only_once(after, "\treturn w->get_guest_pgd(vcpu);", "\treturn w->get_guest_pgd(vcpu) & PAGE_MASK;")
    res = _port(targets["7.2"], MMU_C, before, fix, rules)
    assert res.result == "ported", [h.reason for h in res.hunks]
    assert _added(res.diff) == ["\treturn mmu->get_guest_pgd(vcpu) & PAGE_MASK;"], res.diff


def test_a_walker_local_replaced_by_another_walker_is_not_inlined(trees, targets, rules):
    """A removed walker local that the patch replaces by another one (step 12 on 6.1's
    vmx_ept_load_pdptrs(): `w = vcpu->arch.walk_mmu->w` by `gva_walk = &vcpu->arch.gva_walk`)
    pairs with the target's own local: nothing to port.  A fix that replaces it by a local
    naming the other walker is a change, and ported as one."""
    rel = "arch/x86/kvm/vmx/vmx.c"
    text = (trees["6.1"] / rel).read_text()
    a, b = _function(text, "void vmx_ept_load_pdptrs(struct kvm_vcpu *vcpu)\n")
    step11 = text[a:b].replace("\tstruct kvm_mmu *mmu = vcpu->arch.walk_mmu;\n",
                               "\tstruct kvm_pagewalk *w = vcpu->arch.walk_mmu->w;\n").replace("mmu->pdptrs", "w->pdptrs")
    assert "w->pdptrs[3]" in step11
    before = text[:a] + step11 + text[b:]
    for walker, want in (("gva_walk", None), ("ngpa_walk", "\tstruct kvm_mmu *mmu = &vcpu->arch.guest_mmu;")):
        step12 = step11.replace("*w = vcpu->arch.walk_mmu->w;", f"*{walker} = &vcpu->arch.{walker};").replace(
            "w->pdptrs", f"{walker}->pdptrs")
        res = _port(targets["6.1"], rel, before, text[:a] + step12 + text[b:], rules)
        assert res.result == "ported", [h.reason for h in res.hunks]
        assert _added(res.diff) == ([want] if want else []), res.diff


# ---- [[walker_param]]: kvm_mmu_invalidate_addr() takes the walker ----

INVALIDATE_OLD = ("void kvm_mmu_invalidate_addr(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu,\n"
                  "\t\t\t     u64 addr, unsigned long roots)\n{\n\tint i;\n")
INVALIDATE_NEW = ("void kvm_mmu_invalidate_addr(struct kvm_vcpu *vcpu, struct kvm_pagewalk *w,\n"
                  "\t\t\t     u64 addr, unsigned long roots)\n{\n\tstruct kvm_mmu *mmu;\n\tint i;\n")
FLUSH = "\t\tkvm_x86_call(flush_tlb_gva)(vcpu, addr, NULL);\n\t}\n"


def _walker_param(text: str, then_mmu: str = "root_mmu", else_mmu: str = "guest_mmu") -> str:
    """What `series` step 10 makes of 7.2's kvm_mmu_invalidate_addr()."""
    new = only_once(text, INVALIDATE_OLD, INVALIDATE_NEW)
    new = only_once(new, "\tif (mmu != &vcpu->arch.guest_mmu) {\n", "\tif (w == &vcpu->arch.gva_walk) {\n")
    return only_once(new, FLUSH, FLUSH[:-3] + f"\n\t\tmmu = &vcpu->arch.{then_mmu};\n\t}} else {{\n"
                 f"\t\tmmu = &vcpu->arch.{else_mmu};\n\t}}\n")


def test_the_walker_test_of_kvm_mmu_invalidate_addr_ports_back_as_nothing(trees, targets, rules):
    """[[walker_param]] inverted in the definition: the walker parameter, the MMU local, the
    test of the walker and the MMU each branch names are 7.2's MMU parameter and its test."""
    text = (trees["7.2"] / MMU_C).read_text()
    res = _port(targets["7.2"], MMU_C, text, _walker_param(text), rules)
    _ported_as_nothing(res)
    assert "invalidate-addr-takes-walker" in res.hunks[0].rules


def test_a_walker_test_that_changes_which_mmu_is_synced_is_not_inverted(trees, targets, rules):
    """The same restructuring with the branches' MMUs swapped (a GVA would sync guest_mmu's
    roots) is no layout change: a conflict, never the target left as it is silently.  So is
    a walker test alone, without the MMU each branch names."""
    text = (trees["7.2"] / MMU_C).read_text()
    for after in (_walker_param(text, "guest_mmu", "root_mmu"),
                  only_once(only_once(text, INVALIDATE_OLD, INVALIDATE_NEW), "\tif (mmu != &vcpu->arch.guest_mmu) {\n",
                        "\tif (w == &vcpu->arch.gva_walk) {\n")):
        res = _port(targets["7.2"], MMU_C, text, after, rules)
        assert res.result == "conflict" and res.diff == "", (res.result, res.diff)
        assert "kvm_mmu_invalidate_addr" in res.hunks[0].reason, res.hunks[0].reason


# ---- [[walker_init]]: the MMU initialisers after init_kvm_page_walk() ----

TDP_DECL = "\tstruct kvm_mmu *context = &vcpu->arch.root_mmu;\n"
SHADOW_CALL = "\tshadow_mmu_init_context(vcpu, context, cpu_role, root_role);\n"
GMET = "\tcpu_role.base.cr4_smep = (misc_ctl & SVM_MISC_ENABLE_GMET) != 0;\n"
NPT = "void kvm_init_shadow_npt_mmu(struct kvm_vcpu *vcpu, unsigned long cr4,\n"
PROTO = ("static void init_kvm_page_walk(struct kvm_vcpu *vcpu, struct kvm_pagewalk *w,\n"
         "\t\t\t       union kvm_cpu_role cpu_role);\n\n")


def _definition(text: str, name: str) -> str:
    """Static function `name` of the tree's text (read there, not copied into the tests)."""
    m = re.search(rf"^static void {re.escape(name)}\(.*?^\}}\n", text, re.M | re.S)
    assert m, name
    return m.group(0)


def _step13(text: str) -> str:
    """7.2's MMU initialisers as `series` leaves them before step 14: the walker reached
    through `gva_walk` (init_kvm_tdp_mmu()) and `w = context->w` (shadow_mmu_init_context())."""
    body = _definition(text, "init_kvm_tdp_mmu")
    tdp_old = body[body.index("\tif (cpu_role.as_u64 =="):body.rindex("}\n")]
    tdp = tdp_old.replace("context->cpu_role", "gva_walk->cpu_role").replace("(context))", "(gva_walk))")
    for f in ("get_guest_pgd", "get_pdptr", "inject_page_fault", "gva_to_gpa"):
        tdp = tdp.replace(f"context->{f} ", f"gva_walk->{f} ")
    tdp = tdp.replace("reset_guest_paging_metadata(vcpu, context)", "reset_guest_paging_metadata(vcpu, gva_walk)")
    new = only_once(text, TDP_DECL + "\tunion kvm_mmu_page_role root_role = kvm_calc_tdp_mmu_root_page_role(vcpu, cpu_role);\n\n"
                + tdp_old, TDP_DECL + "\tstruct kvm_pagewalk *gva_walk = &vcpu->arch.gva_walk;\n"
                "\tunion kvm_mmu_page_role root_role = kvm_calc_tdp_mmu_root_page_role(vcpu, cpu_role);\n\n" + tdp)
    shadow_old = _definition(text, "shadow_mmu_init_context")
    shadow = shadow_old.replace("{\n", "{\n\tstruct kvm_pagewalk *w = context->w;\n\n").replace(
        "context->cpu_role", "w->cpu_role").replace("(context))", "(w))").replace("metadata(vcpu, context)",
                                                                                 "metadata(vcpu, w)")
    return only_once(new, shadow_old, shadow)


def _step14(step13: str) -> str:
    """What step 14 makes of them: no walker writes or walker role test, no role parameter
    where nothing else used it, and init_kvm_page_walk() first for the nested NPT MMU."""
    a, b = _function(step13, "static void init_kvm_tdp_mmu(")
    tdp = step13[a:b]
    tdp = only_once(tdp, "\tstruct kvm_pagewalk *gva_walk = &vcpu->arch.gva_walk;\n", "")
    tdp = only_once(tdp, "\tif (cpu_role.as_u64 == gva_walk->cpu_role.as_u64 &&\n\t    root_role.word",
                "\tif (root_role.word")
    tdp = only_once(tdp, "\tgva_walk->cpu_role.as_u64 = cpu_role.as_u64;\n", "")
    start, end = tdp.index("\tgva_walk->get_guest_pgd"), tdp.index("\treset_tdp_shadow_zero_bits_mask")
    tdp = tdp[:start] + "\n" + tdp[end:]
    new = step13[:a] + tdp + step13[b:]
    a, b = _function(new, "static void shadow_mmu_init_context(")
    shadow = new[a:b].replace("\t\t\t\t    union kvm_cpu_role cpu_role,\n", "").replace(
        "\tstruct kvm_pagewalk *w = context->w;\n\n", "").replace(
        "\tif (cpu_role.as_u64 == w->cpu_role.as_u64 &&\n\t    root_role.word", "\tif (root_role.word").replace(
        "\tw->cpu_role.as_u64 = cpu_role.as_u64;\n", "").replace("(w))", "(context->w))").replace(
        "\treset_guest_paging_metadata(vcpu, w);\n", "")
    new = new[:a] + shadow + new[b:]
    new = new.replace(SHADOW_CALL, "\tshadow_mmu_init_context(vcpu, context, root_role);\n")
    new = only_once(new, NPT, PROTO + NPT)
    return only_once(new, GMET, GMET + "\n\tinit_kvm_page_walk(vcpu, &vcpu->arch.ngpa_walk, cpu_role);\n")


def test_the_mmu_initialisers_after_init_kvm_page_walk_port_back_as_nothing(trees, targets, rules):
    """[[walker_init]] then_mmu inverted: init_kvm_tdp_mmu() and shadow_mmu_init_context()
    without their walker writes and walker role test, shadow_mmu_init_context() without the
    role parameter (at its definition and both calls), kvm_init_shadow_npt_mmu() calling
    init_kvm_page_walk() first: on 7.2, where the initialisers initialise the walker, the
    hunks are nothing."""
    text = (trees["7.2"] / MMU_C).read_text()
    before = _step13(text)
    res = _port(targets["7.2"], MMU_C, before, _step14(before), rules)
    _ported_as_nothing(res)
    assert all("init-kvm-page-walk" in h.rules for h in res.hunks), [h.rules for h in res.hunks]


def test_a_fix_beside_the_walker_init_restructuring_is_not_dropped(trees, targets, rules):
    """Only a hunk that is exactly the restructuring is inverted.  A fix that drops only the
    walker's role test from the early return (the walker would then keep a stale role), the
    restructuring with another line dropped too, or a call that drops another argument than
    the role: each is a change or a conflict, never nothing."""
    text = (trees["7.2"] / MMU_C).read_text()
    before = _step13(text)
    only_test = only_once(before, "\tif (cpu_role.as_u64 == gva_walk->cpu_role.as_u64 &&\n\t    root_role.word",
                      "\tif (root_role.word")
    more = only_once(_step14(before), "\tcontext->page_fault = kvm_tdp_page_fault;\n\tcontext->sync_spte = NULL;\n",
                 "\tcontext->page_fault = kvm_tdp_page_fault;\n")
    other_arg = before.replace(SHADOW_CALL, "\tshadow_mmu_init_context(vcpu, context, cpu_role);\n")
    res = _port(targets["7.2"], MMU_C, before, only_test, rules)
    assert res.result == "ported", [h.reason for h in res.hunks]
    assert _added(res.diff) == ["\tif (root_role.word == context->root_role.word)"], res.diff
    res = _port(targets["7.2"], MMU_C, before, more, rules)
    assert res.result == "conflict" and res.diff == "", res.diff
    assert res.hunks[0].status == "conflict" and "shadow_mmu_init_context" in res.hunks[0].reason
    res = _port(targets["7.2"], MMU_C, before, other_arg, rules)
    assert res.result == "conflict" and res.diff == "", res.diff
    assert all("takes 4 arguments in the target" in h.reason for h in res.hunks), [h.reason for h in res.hunks]


# ---- a local only a restated call used ----

TDP_MMU_C = "arch/x86/kvm/mmu/tdp_mmu.c"
SP_DECL = ("\t\t\t\t\t  struct tdp_iter *iter)\n{\n"
           "\tstruct kvm_mmu_page *sp = sptep_to_sp(rcu_dereference(iter->sptep));\n")
ALLOWED = "\t    (fault->prefetch || is_access_allowed(fault, iter->old_spte)) &&\n"


def test_a_local_only_a_restated_call_used_ports_back_as_nothing(trees, targets, rules):
    """[[spte_permissions]] on tdp_mmu_map_handle_target_level(): the MMU local declared for
    spte_permission_fault(), a call that is 7.2's is_access_allowed(); with the call restated
    the local would be unused on 7.2: it is nothing too (the port used to add it alone).  A
    fix that uses the local in what it changes keeps it."""
    text = (trees["7.2"] / TDP_MMU_C).read_text()
    decl = only_once(text, SP_DECL, SP_DECL.replace("{\n", "{\n\tstruct kvm_mmu *mmu = vcpu->arch.mmu;\n"))
    after = only_once(decl, ALLOWED, "\t    (fault->prefetch || !spte_permission_fault(mmu, iter->old_spte, fault)) &&\n")
    res = _port(targets["7.2"], TDP_MMU_C, text, after, rules)
    _ported_as_nothing(res)
    assert all("spte-permission-fault" in h.rules for h in res.hunks), [h.rules for h in res.hunks]

    fix = only_once(decl, ALLOWED, ALLOWED.replace("iter->old_spte)) &&", "iter->old_spte)) &&\n"
                                               "\t    !mmu->root_role.invalid &&"))
    res = _port(targets["7.2"], TDP_MMU_C, text, fix, rules)
    assert res.result == "ported", [h.reason for h in res.hunks]
    assert _added(res.diff) == ["\tstruct kvm_mmu *mmu = vcpu->arch.mmu;", "\t    !mmu->root_role.invalid &&"], res.diff


DISPATCH_72 = ("\tif (mmu_is_nested(vcpu))\n\t\tinit_kvm_nested_mmu(vcpu, cpu_role);\n\telse if (tdp_enabled)\n"
               "\t\tinit_kvm_tdp_mmu(vcpu, cpu_role);\n\telse\n\t\tinit_kvm_softmmu(vcpu, cpu_role);\n}\n")


def _dispatch14(test: str = "!mmu_is_nested(vcpu)", tdp: str = "init_kvm_tdp_mmu") -> str:
    other = "init_kvm_shadow_mmu" if tdp == "init_kvm_tdp_mmu" else "init_kvm_tdp_mmu"
    return (f"\tinit_kvm_page_walk(vcpu, &vcpu->arch.gva_walk, cpu_role);\n\n\tif ({test}) {{\n"
            f"\t\tif (tdp_enabled)\n\t\t\t{tdp}(vcpu, cpu_role);\n\t\telse\n\t\t\t{other}(vcpu, cpu_role);\n\t}}\n}}\n")


def test_the_dispatcher_that_initialises_the_walker_first_ports_back_as_nothing(trees, targets, rules):
    """[[walker_init]] dispatcher inverted: kvm_init_mmu() calling init_kvm_page_walk() on the
    {gva} walker first and the MMU initialisers (init_kvm_softmmu() merged into the renamed
    shadow set-up) only outside nesting is 7.2's dispatch.  The same with the test or the
    initialisers the other way round is a conflict."""
    text = (trees["7.2"] / MMU_C).read_text()
    res = _port(targets["7.2"], MMU_C, text, only_once(text, DISPATCH_72, _dispatch14()), rules)
    assert res.direction == "backport" and res.result == "ported", [h.reason for h in res.hunks]
    assert res.diff == "" and "init-kvm-page-walk" in res.hunks[0].rules, res.diff
    for wrong in (_dispatch14(test="mmu_is_nested(vcpu)"), _dispatch14(tdp="init_kvm_shadow_mmu")):
        res = _port(targets["7.2"], MMU_C, text, only_once(text, DISPATCH_72, wrong), rules)
        assert res.result == "conflict" and res.diff == "", res.diff


PAGE_WALK_14 = """static void init_kvm_page_walk(struct kvm_vcpu *vcpu, struct kvm_pagewalk *w,
			       union kvm_cpu_role cpu_role)
{
	if (cpu_role.as_u64 == w->cpu_role.as_u64)
		return;

	w->cpu_role.as_u64   = cpu_role.as_u64;
	w->get_guest_pgd     = get_guest_cr3;
	w->get_pdptr         = kvm_pdptr_read;
	w->inject_page_fault = kvm_inject_page_fault;

	if (!is_cr0_pg(w))
		w->gva_to_gpa = nonpaging_gva_to_gpa;
	else if (is_cr4_pae(w))
		w->gva_to_gpa = paging64_gva_to_gpa;
	else
		w->gva_to_gpa = paging32_gva_to_gpa;

	reset_guest_paging_metadata(vcpu, w);
}
"""


def _initialisers_after_step13(text: str) -> tuple[int, int, str]:
    """7.2's init_kvm_softmmu() and init_kvm_nested_mmu() as `series` leaves them after step
    13: each writes the walker through a `gva_walk` local where 7.2 has its MMU local
    (`context`, `g_context`), the walk-only MMU's sync_spte gone.  (start, end, text)."""
    a = text.index("static void init_kvm_softmmu(")
    b = text.index("void kvm_init_mmu(struct kvm_vcpu *vcpu)\n{")
    step13 = (text[a:b].replace("\tstruct kvm_mmu *context = &vcpu->arch.root_mmu;\n",
                                "\tstruct kvm_pagewalk *gva_walk = &vcpu->arch.gva_walk;\n")
              .replace("\tstruct kvm_mmu *g_context = &vcpu->arch.nested_mmu;\n",
                       "\tstruct kvm_pagewalk *gva_walk = &vcpu->arch.gva_walk;\n")
              .replace("\tg_context->sync_spte         = NULL;\n", "")
              .replace("g_context->", "gva_walk->").replace("context->", "gva_walk->")
              .replace("(vcpu, g_context)", "(vcpu, gva_walk)"))
    assert step13.count("gva_walk->gva_to_gpa") == 4 and "context" not in step13
    return a, b, step13


def test_init_kvm_page_walk_is_what_the_rule_makes_of_the_old_initialisers(trees, targets, rules):
    """[[walker_init]] `from`/`merge` -> `to`, checked on the hunk: init_kvm_softmmu() (the
    shadow set-up plus walker callbacks) gone and init_kvm_nested_mmu() become
    init_kvm_page_walk() with the walker as a parameter, the role picked as the MMU
    initialisers pick it, is what the rule makes of 7.2's code after step 13.  A `to` that
    picks another walk for PAE is not."""
    from refactor.port.lexicon import Vocabulary
    from refactor.port.walker_init_inverse import restated_walker_init

    text = (trees["7.2"] / MMU_C).read_text()
    a, b, step13 = _initialisers_after_step13(text)
    vocab = Vocabulary(rules, rules.presets["upstream"])
    for post, want in ((PAGE_WALK_14, True), (PAGE_WALK_14.replace("paging64_gva_to_gpa", "paging32_gva_to_gpa"),
                                              False)):
        diff = file_diff(MMU_C, text[:a] + step13 + text[b:], text[:a] + post + "\n" + text[b:])
        hunks = [h for fp in read_mails(mail_of(diff))[0].patch.files for h in fp.hunks]
        assert len(hunks) == 1
        got = restated_walker_init(hunks[0].lines, hunks[0].section, vocab, targets["7.2"])
        changed = [i for i, (g, _t, _n) in enumerate(hunks[0].lines) if g != " "]
        assert (sorted(got) == changed and set(got.values()) == {"init-kvm-page-walk"}) if want else got == {}, got


def test_walker_locals_of_the_old_initialisers_are_their_mmu_locals(trees, targets, rules):
    """Series step 14 ported back onto 7.2: the hunk's pre-image declares a `gva_walk` walker
    local in each of init_kvm_softmmu() and init_kvm_nested_mmu(), where 7.2 has one MMU local
    each (root_mmu, nested_mmu: the MMUs whose walker is {gva} on the old layout): they pair,
    and the hunk, which only makes init_kvm_page_walk() of them, comes out as nothing.  The
    same hunk with a `to` that walks PAE with paging32 (a real change) is a conflict."""
    text = (trees["7.2"] / MMU_C).read_text()
    a, b, step13 = _initialisers_after_step13(text)
    before = text[:a] + step13 + text[b:]
    res = _port(targets["7.2"], MMU_C, before, text[:a] + PAGE_WALK_14 + "\n" + text[b:], rules)
    assert res.direction == "backport" and res.result == "ported", [h.reason for h in res.hunks]
    assert res.diff == "" and {"init-kvm-page-walk", "port-local-names"} <= set(res.hunks[0].rules), res.diff
    wrong = PAGE_WALK_14.replace("paging64_gva_to_gpa", "paging32_gva_to_gpa")
    res = _port(targets["7.2"], MMU_C, before, text[:a] + wrong + "\n" + text[b:], rules)
    assert res.result == "conflict" and res.diff == "", res.diff
    # A fix in init_kvm_nested_mmu() written on its walker local is the old MMU local's fix.
    fix = only_once(step13, "\tgva_walk->cpu_role.as_u64   = new_mode.as_u64;\n",
                "\tgva_walk->cpu_role.as_u64   = new_mode.as_u64;\n\tgva_walk->pdptrs[0]         = 0;\n")
    res = _port(targets["7.2"], MMU_C, before, text[:a] + fix + text[b:], rules)
    assert res.result == "ported" and _added(res.diff) == ["\tg_context->pdptrs[0]         = 0;"], res.diff


# ---- [[parameterize]]: a function's change split over several hunks ----

def _permission_bitmask(text: str) -> tuple[str, str]:
    """7.2's update_permission_bitmask() as `series` leaves it before its step 15 (on the
    walker, its bitmap in the walker's format), and as step 15 makes it: __update_permission_
    bitmask() on the format with the role bits as parameters, the walker's function the call
    of it.  Three hunks: header and role locals, the bitmap's size, its write and the wrapper."""
    a, b = _function(text, "static void update_permission_bitmask(struct kvm_mmu *mmu, bool tdp, bool ept)\n")
    old = (text[a:b].replace("(struct kvm_mmu *mmu,", "(struct kvm_pagewalk *mmu,")
           .replace("mmu->permissions", "mmu->fmt.permissions"))
    locals_ = ("\tbool cr4_smep = is_cr4_smep(mmu);\n\tbool cr4_smap = is_cr4_smap(mmu);\n"
               "\tbool cr0_wp = is_cr0_wp(mmu);\n\tbool efer_nx = is_efer_nx(mmu);\n\n")
    new = (only_once(old, locals_, "")
           .replace("static void update_permission_bitmask(struct kvm_pagewalk *mmu, bool tdp, bool ept)\n",
                    "static void __update_permission_bitmask(struct kvm_page_format *fmt, bool tdp,\n"
                    "\t\t\t\t\tbool ept, bool cr4_smep, bool cr4_smap,\n\t\t\t\t\tbool cr0_wp, bool efer_nx)\n")
           .replace("mmu->fmt.permissions", "fmt->permissions")
           + "\nstatic void update_permission_bitmask(struct kvm_pagewalk *w, bool tdp, bool ept)\n{\n"
           "\t__update_permission_bitmask(&w->fmt, tdp, ept,\n\t\t\t\t    is_cr4_smep(w), is_cr4_smap(w),\n"
           "\t\t\t\t    is_cr0_wp(w), is_efer_nx(w));\n}\n")
    assert old.count("mmu->fmt.permissions") == 2
    return text[:a] + old + text[b:], text[:a] + new + text[b:]


def test_a_parameterized_function_over_several_hunks_ports_back_as_nothing(trees, targets, rules):
    """[[parameterize]] inverted over the file patch: update_permission_bitmask() made
    __update_permission_bitmask() on the page format (header and role locals in one hunk, the
    bitmap's size in another, its write and the walker's wrapper in a third) is 7.2's
    function.  The same with the wrapper passing two role bits the other way round (a real
    change) is not nothing."""
    text = (trees["7.2"] / MMU_C).read_text()
    before, after = _permission_bitmask(text)
    res = _port(targets["7.2"], MMU_C, before, after, rules)
    assert len(res.hunks) == 3 and res.result == "ported", [h.reason for h in res.hunks]
    assert res.diff == "" and all("parameterize-permission-bitmask" in h.rules for h in res.hunks), res.diff
    wrong = only_once(after, "is_cr0_wp(w), is_efer_nx(w));", "is_efer_nx(w), is_cr0_wp(w));")
    res = _port(targets["7.2"], MMU_C, before, wrong, rules)
    assert res.result == "conflict" or res.diff != "", [h.reason for h in res.hunks]
