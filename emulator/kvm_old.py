"""KVM's MMU plumbing in the OLD layout (up to 7.2), written once.

Python that mirrors the kernel's access paths: vcpu.arch.mmu / root_mmu /
guest_mmu / nested_mmu / walk_mmu, struct kvm_mmu holding both walker and
builder fields.  derive.py rewrites this source with the rules into the
new-layout model, so the conventions below are what the rewriter reads:

- a parameter annotated `kvm_mmu` is a struct kvm_mmu *; locals assigned from
  vcpu.arch.<member> are typed by that member;
- comparisons of MMU pointers use == / != (identity, as in C);
- one statement per assignment; no aliasing through containers.

Function and variable names follow arch/x86/kvm (mmu/mmu.c, paging_tmpl.h,
x86.c, regs.c, vmx/nested.c, svm/nested.c).
"""
from __future__ import annotations

from .consts import (ACC_USER, CR0_PG, CR0_WP, CR4_PAE, CR4_PKE, CR4_PSE, CR4_SMAP, CR4_SMEP,
                     EFER_LMA, PFERR_FETCH, PFERR_GUEST_FINAL, PFERR_GUEST_PAGE, PFERR_IMPLICIT,
                     PFERR_PRESENT, PFERR_RSVD, PFERR_USER, PFERR_WRITE, rsvd_bits)
from .formats import (calc_cpu_role, calc_ept_role, ept_bad_mt_xwr, ept_rsvd_masks,
                      guest_rsvd_masks, permission_bitmap, pkru_bitmap)
from .paging import Fault, walk

KVM_MMU_ROOT_CURRENT = 1
KVM_MMU_ROOTS_ALL = 7
CR4_PDPTR_BITS = CR4_PSE | CR4_PAE | CR4_SMEP
kvm_mmu = "struct kvm_mmu *"     # annotation marker read by derive.py


# ---- registers (x86.h, regs.h) -------------------------------------------

def is_paging(vcpu):
    return bool(vcpu.cr0 & CR0_PG)


def is_long_mode(vcpu):
    return bool(vcpu.efer & EFER_LMA)


def is_pae_paging(vcpu):
    return is_paging(vcpu) and bool(vcpu.cr4 & CR4_PAE) and not is_long_mode(vcpu)


def mmu_is_nested(vcpu):
    return vcpu.arch.mmu == vcpu.arch.guest_mmu


def get_guest_cr3(vcpu):
    return vcpu.cr3


def kvm_pdptr_read(vcpu, index):
    return vcpu.pdptrs[index]


def nested_ept_get_eptp(vcpu):
    return vcpu.nested.root


def nested_svm_get_tdp_cr3(vcpu):
    return vcpu.nested.root


def nested_svm_get_tdp_pdptr(vcpu, index):
    # PAE-format NPT: the four PDPTEs sit at nCR3, 32-byte aligned.
    return vcpu.mem.read64((vcpu.nested.root & 0xFFFFFFE0) + index * 8)


def pdptr_rsvd_bits(vcpu):
    return rsvd_bits(vcpu.maxphy, 63) | rsvd_bits(5, 8) | rsvd_bits(1, 2)


# ---- role accessors and paging metadata (mmu.c) ---------------------------

def is_cr0_pg(mmu: kvm_mmu):
    return mmu.cpu_role.pg


def is_cr4_pae(mmu: kvm_mmu):
    return mmu.cpu_role.pae


def is_cr0_wp(mmu: kvm_mmu):
    return mmu.cpu_role.wp


def kvm_calc_cpu_role(vcpu):
    return calc_cpu_role(vcpu.cr0, vcpu.cr4, vcpu.efer, vcpu.guest_mode, vcpu.maxphy)


def reset_guest_rsvds_bits_mask(vcpu, mmu: kvm_mmu):
    mmu.guest_rsvd_check.rsvd_bits_mask = guest_rsvd_masks(mmu.cpu_role)
    mmu.guest_rsvd_check.bad_mt_xwr = 0


def reset_rsvds_bits_mask_ept(vcpu, mmu: kvm_mmu, execonly):
    mmu.guest_rsvd_check.rsvd_bits_mask = ept_rsvd_masks(vcpu.maxphy)
    mmu.guest_rsvd_check.bad_mt_xwr = ept_bad_mt_xwr(execonly)


def update_permission_bitmask(mmu: kvm_mmu, ept):
    mmu.permissions = permission_bitmap(mmu.cpu_role, ept)


def update_pkru_bitmask(mmu: kvm_mmu):
    mmu.pkru_mask = pkru_bitmap(mmu.cpu_role)


def reset_guest_paging_metadata(vcpu, mmu: kvm_mmu):
    if not is_cr0_pg(mmu):
        return
    reset_guest_rsvds_bits_mask(vcpu, mmu)
    update_permission_bitmask(mmu, False)
    update_pkru_bitmask(mmu)


def __kvm_mmu_refresh_passthrough_bits(vcpu, mmu: kvm_mmu):
    cr0_wp = bool(vcpu.cr0 & CR0_WP)
    if is_cr0_wp(mmu) == cr0_wp:
        return
    mmu.cpu_role = mmu.cpu_role._replace(wp=cr0_wp)
    reset_guest_paging_metadata(vcpu, mmu)


def kvm_mmu_refresh_passthrough_bits(vcpu, mmu: kvm_mmu):
    # With TDP, CR0.WP is passed through: the walker's copy may be stale.
    # The nEPT/nNPT walker ignores CR0.WP, so it is exempt.
    if not vcpu.tdp_enabled or mmu == vcpu.arch.guest_mmu:
        return
    __kvm_mmu_refresh_passthrough_bits(vcpu, mmu)


# ---- gva_to_gpa implementations (paging_tmpl.h) ---------------------------

def translate_nested_gpa(vcpu, gpa, access, pte_access):
    mmu = vcpu.arch.mmu
    stage = access & (PFERR_GUEST_FINAL | PFERR_GUEST_PAGE)
    if vcpu.nested.vendor == "vmx":
        # vmx_translate_nested_gpa() (7.x): USER is the L2 page's effective U/S on the
        # final stage, never the CPL; the EPT walk checks R/W/X from the access kind.
        access &= ~PFERR_USER
        if pte_access & ACC_USER and stage & PFERR_GUEST_FINAL:
            access |= PFERR_USER
    else:
        # The APM treats nested-table accesses as user accesses.
        access = access | PFERR_USER
    return mmu.gva_to_gpa(vcpu, mmu, gpa, access)


def kvm_translate_gpa(vcpu, mmu: kvm_mmu, gpa, access, pte_access):
    if mmu != vcpu.arch.nested_mmu:
        return gpa
    return translate_nested_gpa(vcpu, gpa, access, pte_access)


def nested_translator(vcpu, mmu: kvm_mmu):
    """kvm_translate_gpa() for every table and final address of one walk."""
    if mmu != vcpu.arch.nested_mmu:
        return None
    return lambda gpa, access, pte_access, gva: translate_nested_gpa(vcpu, gpa, access, pte_access)


def nonpaging_gva_to_gpa(vcpu, mmu: kvm_mmu, vaddr, access):
    # With CR0.PG=0 every linear address is a user address (EPT MBEC): ACC_ALL.
    return kvm_translate_gpa(vcpu, mmu, vaddr, access | PFERR_GUEST_FINAL, 7)


def paging_gva_to_gpa(vcpu, mmu: kvm_mmu, addr, access):
    # permission_fault() refreshes CR0.WP before it reads the bitmap.
    kvm_mmu_refresh_passthrough_bits(vcpu, mmu)
    return walk(vcpu, vcpu.mem, mmu.cpu_role, mmu.get_guest_pgd(vcpu), mmu.get_pdptr,
                mmu.guest_rsvd_check.rsvd_bits_mask, mmu.guest_rsvd_check.bad_mt_xwr,
                mmu.permissions, mmu.pkru_mask, addr, access,
                nested_translator(vcpu, mmu), mmu != vcpu.arch.walk_mmu)


paging32_gva_to_gpa = paging_gva_to_gpa
paging64_gva_to_gpa = paging_gva_to_gpa
ept_gva_to_gpa = paging_gva_to_gpa


# ---- context initialisation (mmu.c) ----------------------------------------

def paging_init_context(context: kvm_mmu):
    if not is_cr0_pg(context):
        context.gva_to_gpa = nonpaging_gva_to_gpa
        context.sync_spte = None
    elif is_cr4_pae(context):
        context.gva_to_gpa = paging64_gva_to_gpa
        context.sync_spte = "paging64_sync_spte"
    else:
        context.gva_to_gpa = paging32_gva_to_gpa
        context.sync_spte = "paging32_sync_spte"
    context.page_fault = "shadow_page_fault"


def init_kvm_tdp_mmu(vcpu, cpu_role):
    context = vcpu.arch.root_mmu
    root_role = ("tdp", vcpu.maxphy)
    if cpu_role == context.cpu_role and root_role == context.root_role:
        return
    context.cpu_role = cpu_role
    context.root_role = root_role
    context.page_fault = "kvm_tdp_page_fault"
    context.sync_spte = None
    context.get_guest_pgd = get_guest_cr3
    context.get_pdptr = kvm_pdptr_read
    context.inject_page_fault = kvm_inject_page_fault
    if not is_cr0_pg(context):
        context.gva_to_gpa = nonpaging_gva_to_gpa
    elif is_cr4_pae(context):
        context.gva_to_gpa = paging64_gva_to_gpa
    else:
        context.gva_to_gpa = paging32_gva_to_gpa
    reset_guest_paging_metadata(vcpu, context)


def shadow_mmu_init_context(vcpu, context: kvm_mmu, cpu_role, root_role):
    if cpu_role == context.cpu_role and root_role == context.root_role:
        return
    context.cpu_role = cpu_role
    context.root_role = root_role
    paging_init_context(context)
    reset_guest_paging_metadata(vcpu, context)


def init_kvm_softmmu(vcpu, cpu_role):
    context = vcpu.arch.root_mmu
    shadow_mmu_init_context(vcpu, context, cpu_role, ("shadow", cpu_role.level))
    context.get_guest_pgd = get_guest_cr3
    context.get_pdptr = kvm_pdptr_read
    context.inject_page_fault = kvm_inject_page_fault


def init_kvm_nested_mmu(vcpu, new_mode):
    g_context = vcpu.arch.nested_mmu
    if new_mode == g_context.cpu_role:
        return
    g_context.cpu_role = new_mode
    g_context.get_guest_pgd = get_guest_cr3
    g_context.get_pdptr = kvm_pdptr_read
    g_context.inject_page_fault = kvm_inject_page_fault
    # L2 page tables are never shadowed: nothing to sync.
    g_context.sync_spte = None
    # L2 GVA -> L1 GPA: L2's tables first, then L1's EPT/NPT for every address.
    if not is_paging(vcpu):
        g_context.gva_to_gpa = nonpaging_gva_to_gpa
    elif is_long_mode(vcpu):
        g_context.gva_to_gpa = paging64_gva_to_gpa
    elif bool(vcpu.cr4 & CR4_PAE):
        g_context.gva_to_gpa = paging64_gva_to_gpa
    else:
        g_context.gva_to_gpa = paging32_gva_to_gpa
    reset_guest_paging_metadata(vcpu, g_context)


def kvm_init_mmu(vcpu):
    cpu_role = kvm_calc_cpu_role(vcpu)
    if mmu_is_nested(vcpu):
        init_kvm_nested_mmu(vcpu, cpu_role)
    elif vcpu.tdp_enabled:
        init_kvm_tdp_mmu(vcpu, cpu_role)
    else:
        init_kvm_softmmu(vcpu, cpu_role)


def kvm_mmu_reset_context(vcpu):
    kvm_init_mmu(vcpu)


def kvm_init_shadow_ept_mmu(vcpu, execonly, accessed_dirty, level, new_eptp):
    context = vcpu.arch.guest_mmu
    new_mode = calc_ept_role(execonly, accessed_dirty, level, vcpu.maxphy)
    if new_mode != context.cpu_role:
        # The EPT format depends on the EPTP and VMX capabilities only.
        context.cpu_role = new_mode
        context.root_role = ("ept", level)
        context.page_fault = "ept_page_fault"
        context.gva_to_gpa = ept_gva_to_gpa
        context.sync_spte = "ept_sync_spte"
        update_permission_bitmask(context, True)
        context.pkru_mask = 0
        reset_rsvds_bits_mask_ept(vcpu, context, execonly)


def kvm_init_shadow_npt_mmu(vcpu, cr4, efer, nested_cr3):
    context = vcpu.arch.guest_mmu
    # NPT uses L1's CR4/EFER format; CR0.WP is ignored, PKE/SMAP do not apply.  SMEP stays:
    # it cannot fault a walk that is always a user access, but makes a fetch fault report
    # PFERR_FETCH (has_pferr_fetch: EFER.NX or CR4.SMEP, as KVM computes it before GMET).
    cpu_role = calc_cpu_role(CR0_PG | CR0_WP, cr4 & ~(CR4_PKE | CR4_SMAP), efer, True,
                             vcpu.maxphy)
    shadow_mmu_init_context(vcpu, context, cpu_role, ("npt", cpu_role.level))


def kvm_mmu_create(vcpu):
    vcpu.arch.mmu = vcpu.arch.root_mmu
    vcpu.arch.walk_mmu = vcpu.arch.root_mmu


# ---- nested VMX / SVM (vmx/nested.c, svm/nested.c) --------------------------

def nested_ept_init_mmu_context(vcpu):
    vcpu.arch.mmu = vcpu.arch.guest_mmu
    n = vcpu.nested
    level = 5 if (n.root >> 3) & 7 == 4 else 4
    kvm_init_shadow_ept_mmu(vcpu, n.execonly, n.ad, level, n.root)
    vcpu.arch.mmu.get_guest_pgd = nested_ept_get_eptp
    vcpu.arch.mmu.inject_page_fault = nested_ept_inject_page_fault
    vcpu.arch.mmu.get_pdptr = kvm_pdptr_read
    vcpu.arch.walk_mmu = vcpu.arch.nested_mmu


def nested_ept_uninit_mmu_context(vcpu):
    vcpu.arch.mmu = vcpu.arch.root_mmu
    vcpu.arch.walk_mmu = vcpu.arch.root_mmu


def nested_svm_init_mmu_context(vcpu):
    vcpu.arch.mmu = vcpu.arch.guest_mmu
    kvm_init_shadow_npt_mmu(vcpu, vcpu.nested.l1_cr4, vcpu.nested.l1_efer, vcpu.nested.root)
    vcpu.arch.mmu.get_guest_pgd = nested_svm_get_tdp_cr3
    vcpu.arch.mmu.get_pdptr = nested_svm_get_tdp_pdptr
    vcpu.arch.mmu.inject_page_fault = nested_svm_inject_npf_exit
    vcpu.arch.walk_mmu = vcpu.arch.nested_mmu


def nested_svm_uninit_mmu_context(vcpu):
    vcpu.arch.mmu = vcpu.arch.root_mmu
    vcpu.arch.walk_mmu = vcpu.arch.root_mmu


def deliver(vcpu, level, kind, fault, **info):
    vcpu.delivered = {"to": level, "kind": kind, "vector": fault.vector,
                      "error_code": fault.error_code & 0xFFFFFFFF, "address": fault.address,
                      "nested": fault.nested_page_fault, **info}


def kvm_inject_page_fault(vcpu, fault, from_hardware):
    if vcpu.guest_mode and not fault.nested_page_fault and vcpu.nested.pf_intercept:
        deliver(vcpu, "L1", "pf_vmexit", fault)
    else:
        deliver(vcpu, "L2" if vcpu.guest_mode else "L1", "pf", fault)


def nested_ept_inject_page_fault(vcpu, fault, from_hardware):
    if fault.error_code & PFERR_RSVD:
        deliver(vcpu, "L1", "ept_misconfig", fault, exit_qualification=0)
    else:
        deliver(vcpu, "L1", "ept_violation", fault,
                exit_qualification=fault.exit_qualification)


def nested_svm_inject_npf_exit(vcpu, fault, from_hardware):
    stage = fault.error_code & (PFERR_GUEST_FINAL | PFERR_GUEST_PAGE)
    deliver(vcpu, "L1", "npf", fault, exit_info_1=stage | (fault.error_code & 0xFFFFFFFF),
            exit_info_2=fault.address)


# ---- entry points (x86.c, regs.c, mmu.c) -----------------------------------

def kvm_mmu_invalidate_addr(vcpu, mmu: kvm_mmu, addr, roots):
    # Addresses of the nested stage are nGPAs: there is no GVA TLB entry to drop.
    if mmu != vcpu.arch.guest_mmu:
        # INVLPG of a non-canonical address is a NOP (SDM); 7.x checks the host's width
        # (is_noncanonical_invlpg_address()): 57 bits, the host here has LA57.
        if (addr & ((1 << 64) - 1)) >> 56 not in (0, (1 << 8) - 1):
            return
        vcpu.notes.append(["flush_tlb_gva", addr, roots])


def kvm_mmu_invlpg(vcpu, gva):
    kvm_mmu_invalidate_addr(vcpu, vcpu.arch.walk_mmu, gva, KVM_MMU_ROOTS_ALL)


def kvm_inject_emulated_page_fault(vcpu, fault):
    fault_mmu = vcpu.arch.mmu if fault.nested_page_fault else vcpu.arch.walk_mmu
    # Drop the stale TLB entry, else the access would fault forever.
    if fault.error_code & PFERR_PRESENT and not fault.error_code & PFERR_RSVD:
        kvm_mmu_invalidate_addr(vcpu, fault_mmu, fault.address, KVM_MMU_ROOT_CURRENT)
    fault_mmu.inject_page_fault(vcpu, fault, False)


def cpl_access(vcpu):
    return PFERR_USER if vcpu.cpl == 3 else 0


def kvm_mmu_gva_to_gpa_read(vcpu, gva):
    mmu = vcpu.arch.walk_mmu
    return mmu.gva_to_gpa(vcpu, mmu, gva, cpl_access(vcpu))


def kvm_mmu_gva_to_gpa_write(vcpu, gva):
    mmu = vcpu.arch.walk_mmu
    return mmu.gva_to_gpa(vcpu, mmu, gva, cpl_access(vcpu) | PFERR_WRITE)


def kvm_fetch_guest_virt(vcpu, gva):
    mmu = vcpu.arch.walk_mmu
    return mmu.gva_to_gpa(vcpu, mmu, gva, cpl_access(vcpu) | PFERR_FETCH)


def kvm_mmu_gva_to_gpa_system(vcpu, gva):
    mmu = vcpu.arch.walk_mmu
    return mmu.gva_to_gpa(vcpu, mmu, gva, 0)


def kvm_mmu_gva_to_gpa_implicit(vcpu, gva, write):
    # Implicit supervisor accesses (descriptor tables...): SMAP ignores EFLAGS.AC.
    mmu = vcpu.arch.walk_mmu
    return mmu.gva_to_gpa(vcpu, mmu, gva, PFERR_IMPLICIT | (PFERR_WRITE if write else 0))


def kvm_translate_l2_gpa(vcpu, gpa, write):
    # As hyperv.c does for hypercall arguments: an (n)GPA of the running level, the final
    # stage of an L2 access (KVM passes PFERR_GUEST_FINAL_MASK).
    return kvm_translate_gpa(vcpu, vcpu.arch.walk_mmu, gpa,
                             PFERR_GUEST_FINAL | (PFERR_WRITE if write else 0), 0)


def load_pdptrs(vcpu, cr3):
    mmu = vcpu.arch.walk_mmu
    # While L2 runs under nested TDP its CR3 is an L2 GPA: go through the nested stage.
    real_gpa = kvm_translate_gpa(vcpu, mmu, cr3 & 0xFFFFF000,
                                 PFERR_USER | PFERR_WRITE | PFERR_GUEST_PAGE, 0)
    if isinstance(real_gpa, Fault):
        return False
    pdpte = [vcpu.mem.read64(real_gpa + (cr3 & 0xFE0) + i * 8) for i in range(4)]
    for entry in pdpte:
        if entry & 1 and entry & pdptr_rsvd_bits(vcpu):
            return False
    vcpu.pdptrs = pdpte
    return True
