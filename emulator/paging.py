"""One page walker for every format, after paging_tmpl.h's FNAME(walk_addr_generic).

The format (32-bit, PAE, 4/5-level, EPT; NPT is the 4-level/PAE/32-bit host
format walked with user rights) comes from the role.  Everything that belongs
to KVM's plumbing is a parameter: where the role, the reserved-bit masks, the
permission bitmap and pkru_mask live, how PDPTEs are read, whether table and
final addresses go through a nested stage.  The plumbing reads those from
struct kvm_mmu (old layout) or struct kvm_pagewalk (new layout).
"""
from __future__ import annotations

from .consts import (ACC_EXEC, ACC_USER, ACC_WRITE, EPTQ_FETCH, EPTQ_GVA_TRANSLATED,
                     EPTQ_GVA_VALID, EPTQ_READ, EPTQ_WRITE, PF_VECTOR, PFERR_FETCH,
                     PFERR_GUEST_FINAL, PFERR_GUEST_PAGE, PFERR_IMPLICIT, PFERR_PK,
                     PFERR_PRESENT, PFERR_RSVD, PFERR_USER, PFERR_WRITE)

PA_MASK = ((1 << 52) - 1) & ~0xFFF     # address bits 51:12 (higher ones are caught as reserved)
ACCESS_MASK = PFERR_WRITE | PFERR_USER | PFERR_FETCH


class Fault:
    """struct x86_exception for a #PF or a nested (EPT/NPT) fault."""

    __slots__ = ("vector", "error_code", "address", "nested_page_fault", "exit_qualification")

    def __init__(self, error_code: int, address: int, nested: bool, exit_qualification: int = 0):
        self.vector = PF_VECTOR
        self.error_code = error_code
        self.address = address
        self.nested_page_fault = nested
        self.exit_qualification = exit_qualification

    def as_dict(self) -> dict:
        return {"vector": self.vector, "error_code": self.error_code, "address": self.address,
                "nested": self.nested_page_fault, "exit_qualification": self.exit_qualification}


def walk(vcpu, mem, role, root: int, get_pdptr, rsvd, bad_mt: int, permissions, pkru_mask: int,
         addr: int, access: int, translate, nested: bool):
    """Translate `addr`; return the GPA (int) or a Fault."""
    ept = role.ept
    level = role.level
    gva = addr                    # a fault reports the address as given (walker->fault.address)
    if level == 2:
        esize, bits, table_mask = 4, 10, 0xFFFFF000
        addr &= 0xFFFFFFFF
    else:
        esize, bits, table_mask = 8, 9, PA_MASK
        if level == 3:
            addr &= 0xFFFFFFFF
    idx_mask = (1 << bits) - 1
    pte_access = 7
    prot = 7                      # EPT: raw RWX ANDed over the walked entries
    walked = []
    is_rsvd = False
    present = True
    if level == 3:
        pte = get_pdptr(vcpu, (addr >> 30) & 3)
        if not pte & 1:
            present = False
            return _error(role, gva, access, nested, present, is_rsvd, 0, 0, walked)
        table = pte & PA_MASK
        level = 2
    else:
        table = root & table_mask
    pse = role.pse
    # FNAME(walk_addr_generic): the nested stage sees the table's page (gfn_to_gpa(table_gfn)),
    # read with nested_access: a write when the walker sets A/D bits, always a user access.
    nested_access = (PFERR_WRITE if role.ad else 0) | PFERR_USER | PFERR_GUEST_PAGE
    while True:
        pte_gpa = table + ((addr >> (12 + (level - 1) * bits)) & idx_mask) * esize
        if translate is not None:
            real = translate(pte_gpa & ~0xFFF, nested_access, pte_access, addr)
            if real.__class__ is Fault:
                return real
            real |= pte_gpa & 0xFFF
        else:
            real = pte_gpa
        pte = mem.read32(real) if esize == 4 else mem.read64(real)
        if ept:
            prot &= pte
            if not pte & 7:
                present = False
                break
            if (pte & rsvd[(pte >> 7) & 1][level - 1]) or (bad_mt >> (pte & 0x3F)) & 1:
                is_rsvd = True
                break
            pte_access &= ((ACC_WRITE if pte & 2 else 0) | (ACC_EXEC if pte & 4 else 0)
                           | (ACC_USER if pte & 1 else 0))
        else:
            if not pte & 1:
                present = False
                break
            if pte & rsvd[(pte >> 7) & 1][level - 1]:
                is_rsvd = True
                break
            pte_access &= (pte & 6) | (0 if pte >> 63 else ACC_EXEC)
        walked.append((real, level, esize))
        if level == 1:
            gpa = (pte & table_mask) | (addr & 0xFFF)
            break
        if pte & 0x80:
            if level == 2:
                if esize == 4:
                    if pse:
                        # PSE-36: PDE bits 20:13 are PA bits 39:32.
                        gpa = ((pte & 0xFFC00000) | (((pte >> 13) & 0xFF) << 32)
                               | (addr & 0x3FFFFF))
                        break
                else:
                    gpa = (pte & PA_MASK & ~0x1FFFFF) | (addr & 0x1FFFFF)
                    break
            elif level == 3 and role.level != 3:
                gpa = (pte & PA_MASK & ~0x3FFFFFFF) | (addr & 0x3FFFFFFF)
                break
        table = pte & table_mask
        level -= 1
    if not present or is_rsvd:
        return _error(role, gva, access, nested, present, is_rsvd, 0, prot, walked)

    # permission_fault(): PFERR_RSVD in the index means "SMAP overridden by EFLAGS.AC".
    pfec = access & ACCESS_MASK
    not_smap = vcpu.rflags_ac and not access & PFERR_IMPLICIT
    fault = (permissions[(pfec | (PFERR_RSVD if not_smap else 0)) >> 1] >> pte_access) & 1
    errcode = PFERR_PRESENT
    if pkru_mask:
        pkey = (pte >> 59) & 15
        pkru_bits = (vcpu.pkru >> (pkey * 2)) & 3
        pkru_bits &= pkru_mask >> (pfec + ((pte_access & ACC_USER) << 1))
        if pkru_bits:
            errcode |= PFERR_PK
            fault = 1
    if fault:
        return _error(role, gva, access, nested, True, False, errcode, prot, walked)

    if translate is not None:
        # The final stage translates the page (gfn_to_gpa(gfn)); the offset is added after.
        real = translate(gpa & ~0xFFF, pfec | PFERR_GUEST_FINAL, pte_access, addr)
        if real.__class__ is Fault:
            return real
        gpa = real | (gpa & 0xFFF)
    if role.ad:
        # Accessed on every entry used, dirty on the leaf of a write (SDM 4.8).
        a_bit, d_bit = (1 << 8, 1 << 9) if ept else (1 << 5, 1 << 6)
        last = len(walked) - 1
        for i, (real, _lvl, size) in enumerate(walked):
            mem.set_bits(real, a_bit | (d_bit if i == last and pfec & PFERR_WRITE else 0), size)
    return gpa


def _error(role, addr, access, nested, present, is_rsvd, errcode, prot, walked) -> Fault:
    if is_rsvd:
        errcode = PFERR_RSVD | PFERR_PRESENT
    errcode |= access & (PFERR_WRITE | PFERR_USER)
    # has_pferr_fetch: EFER.NX or CR4.SMEP of the walker's role (never EPT's).
    if access & PFERR_FETCH and (role.nxe or role.smep):
        errcode |= PFERR_FETCH
    qual = 0
    if role.ept:
        if access & PFERR_WRITE:
            qual |= EPTQ_WRITE
        elif access & PFERR_FETCH:
            qual |= EPTQ_FETCH
        else:
            qual |= EPTQ_READ
        qual |= (prot & 7) << 3
        # 7.x: the GVA is always valid; a paging-structure access is also a read, any other
        # is the translation of the GVA.
        if access & PFERR_GUEST_PAGE:
            qual |= EPTQ_GVA_VALID | EPTQ_READ
        elif access & PFERR_GUEST_FINAL:
            qual |= EPTQ_GVA_VALID | EPTQ_GVA_TRANSLATED
    # The stage bits travel in the error code for #NPF's exit_info_1.
    errcode |= access & (PFERR_GUEST_FINAL | PFERR_GUEST_PAGE)
    return Fault(errcode, addr, nested, qual)
