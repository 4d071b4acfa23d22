"""Guest page formats: the CPU role, reserved-bit masks and permission bitmaps.

These are the pure computations behind KVM's kvm_calc_cpu_role,
__reset_rsvds_bits_mask(_ept), update_permission_bitmask and
update_pkru_bitmask.  The plumbing (kvm_old.py and its derived twin) decides
where the results are stored: in struct kvm_mmu (old) or in the walker's
struct kvm_page_format (new).
"""
from __future__ import annotations

from typing import NamedTuple

from .consts import (ACC_EXEC, ACC_USER, ACC_WRITE, CR0_PG, CR0_WP, CR4_LA57, CR4_PAE, CR4_PKE,
                     CR4_PSE, CR4_SMAP, CR4_SMEP, EFER_LMA, EFER_NXE, PFERR_FETCH, PFERR_RSVD,
                     PFERR_USER, PFERR_WRITE, rsvd_bits)


class CpuRole(NamedTuple):
    """What of CR0/CR4/EFER (or of the EPTP) shapes a walk; compared by value."""

    pg: bool = False
    wp: bool = False
    pae: bool = False
    pse: bool = False
    smep: bool = False
    smap: bool = False
    pke: bool = False
    la57: bool = False
    lma: bool = False
    nxe: bool = False
    level: int = 0          # 0: no paging; 2: 32-bit; 3: PAE; 4/5: IA-32e
    ept: bool = False
    execonly: bool = False
    ad: bool = True         # A/D updates (EPT: EPTP bit 6)
    guest_mode: bool = False
    maxphy: int = 46

    @property
    def kind(self) -> str:
        if self.ept:
            return "ept"
        if not self.pg:
            return "none"
        return {2: "32", 3: "pae"}.get(self.level, "64")


def calc_cpu_role(cr0: int, cr4: int, efer: int, guest_mode: bool, maxphy: int) -> CpuRole:
    """kvm_calc_cpu_role(): the role of the CR0/CR3/CR4 tables of the running level."""
    if not cr0 & CR0_PG:
        return CpuRole(guest_mode=guest_mode, maxphy=maxphy)
    lma = bool(efer & EFER_LMA)
    pae = bool(cr4 & CR4_PAE)
    if lma:
        level = 5 if cr4 & CR4_LA57 else 4
    else:
        level = 3 if pae else 2
    return CpuRole(pg=True, wp=bool(cr0 & CR0_WP), pae=pae, pse=bool(cr4 & CR4_PSE),
                   smep=bool(cr4 & CR4_SMEP), smap=bool(cr4 & CR4_SMAP),
                   # Protection keys exist only in IA-32e paging.
                   pke=lma and bool(cr4 & CR4_PKE),
                   la57=level == 5, lma=lma,
                   # role.base.efer_nx is EFER.NX in every mode (a fetch fault then
                   # reports PFERR_FETCH); 32-bit entries have no NX bit to check.
                   nxe=bool(efer & EFER_NXE),
                   level=level, guest_mode=guest_mode, maxphy=maxphy)


def calc_ept_role(execonly: bool, ad: bool, level: int, maxphy: int) -> CpuRole:
    """kvm_calc_shadow_ept_root_page_role(): EPT ignores CR0, CR4 and EFER."""
    return CpuRole(pg=True, wp=True, level=level, ept=True, execonly=execonly, ad=ad,
                   guest_mode=True, maxphy=maxphy)


class PageFormat:
    """struct kvm_page_format (new) / rsvd_bits_validate + permission fields (old)."""

    __slots__ = ("rsvd_bits_mask", "bad_mt_xwr", "permissions", "pkru_mask")

    def __init__(self) -> None:
        self.rsvd_bits_mask = [[0] * 5, [0] * 5]
        self.bad_mt_xwr = 0
        self.permissions = [0] * 16
        self.pkru_mask = 0


def guest_rsvd_masks(role: CpuRole) -> list[list[int]]:
    """__reset_rsvds_bits_mask(): [PS bit][level-1] reserved bits of a guest entry."""
    m = [[0] * 5, [0] * 5]
    high = rsvd_bits(role.maxphy, 51)
    nx = 0 if role.nxe else 1 << 63
    if role.level == 2:
        if role.pse:
            # PSE-36 as KVM has it (is_cpuid_PSE36() is always true): PDE bits 16:13 give
            # PA bits 35:32 and bits 21:17 are reserved whatever MAXPHYADDR is.
            m[1][1] = rsvd_bits(17, 21)
        # Without CR4.PSE the PS bit is ignored (the walk never treats it as leaf).
    elif role.level == 3:
        # PAE entries reserve every bit from MAXPHYADDR to 62 (IA-32e ignores 62:52).
        high = rsvd_bits(role.maxphy, 62)
        m[0][2] = rsvd_bits(1, 2) | rsvd_bits(5, 8) | high | rsvd_bits(63, 63)  # PDPTE
        m[0][1] = nx | high
        m[0][0] = nx | high
        m[1][1] = nx | high | rsvd_bits(13, 20)
        m[1][0] = m[0][0]
        m[1][2] = m[0][2]
    elif role.level >= 4:
        m[0][4] = nx | high | rsvd_bits(7, 7)
        m[0][3] = nx | high | rsvd_bits(7, 7)
        m[0][2] = nx | high
        m[0][1] = nx | high
        m[0][0] = nx | high
        m[1][4] = m[0][4]
        m[1][3] = m[0][3]
        m[1][2] = nx | high | rsvd_bits(13, 29)
        m[1][1] = nx | high | rsvd_bits(13, 20)
        m[1][0] = m[0][0]
    return m


def ept_rsvd_masks(maxphy: int) -> list[list[int]]:
    """__reset_rsvds_bits_mask_ept(): 2 MiB and 1 GiB leaves allowed."""
    high = rsvd_bits(maxphy, 51)
    m = [[0] * 5, [0] * 5]
    m[0][4] = high | rsvd_bits(3, 7)
    m[0][3] = high | rsvd_bits(3, 7)
    m[0][2] = high | rsvd_bits(3, 6)
    m[0][1] = high | rsvd_bits(3, 6)
    m[0][0] = high
    m[1][4] = m[0][4]
    m[1][3] = m[0][3]
    m[1][2] = high | rsvd_bits(12, 29)
    m[1][1] = high | rsvd_bits(12, 20)
    m[1][0] = m[0][0]
    return m


def ept_bad_mt_xwr(execonly: bool) -> int:
    """Bitmap over entry bits 5:0 (memory type, XWR) of misconfigured combinations."""
    bad = 0
    for pte in range(64):
        xwr, mt = pte & 7, pte >> 3
        if xwr in (2, 6) or (xwr == 4 and not execonly):
            bad |= 1 << pte
        elif xwr and mt in (2, 3, 7):
            bad |= 1 << pte
    return bad


def permission_bitmap(role: CpuRole, ept: bool) -> list[int]:
    """update_permission_bitmask(): bit `pte_access` of entry pfec>>1 set = fault.

    PFERR_RSVD in the index stands for "SMAP does not apply" (EFLAGS.AC=1 on an
    explicit supervisor access), as in KVM.
    """
    x = bits_with(ACC_EXEC)
    w = bits_with(ACC_WRITE)
    u = bits_with(ACC_USER)
    out = []
    for index in range(16):
        pfec = index << 1
        wf = (~w & 0xff) if pfec & PFERR_WRITE else 0
        uf = (~u & 0xff) if pfec & PFERR_USER else 0
        ff = (~x & 0xff) if pfec & PFERR_FETCH else 0
        smepf = smapf = 0
        if ept:
            # EPT: a read (neither write nor fetch) needs R, which is ACC_USER here; the
            # USER bit of the access is the L2 page's U/S (MBEC), not a right to check.
            uf = 0 if pfec & (PFERR_WRITE | PFERR_FETCH) else (~u & 0xff)
        else:
            kf = 0 if pfec & PFERR_USER else u
            if not role.nxe:
                ff = 0
            if not role.wp:
                wf = wf if pfec & PFERR_USER else 0
            if role.smep:
                smepf = kf if pfec & PFERR_FETCH else 0
            if role.smap:
                smapf = 0 if pfec & (PFERR_RSVD | PFERR_FETCH) else kf
        out.append(ff | uf | wf | smepf | smapf)
    return out


def bits_with(acc: int) -> int:
    """Bitmap over the 8 ACC_* combinations of those that include `acc`."""
    return sum(1 << i for i in range(8) if i & acc)


def pkru_bitmap(role: CpuRole) -> int:
    """update_pkru_bitmask(): two bits (AD, WD applies) per PFEC, PFERR_RSVD = PTE.U."""
    if not role.pke:
        return 0
    mask = 0
    for index in range(16):
        pfec = index << 1
        check_pkey = not (pfec & PFERR_FETCH) and bool(pfec & PFERR_RSVD)
        check_write = (check_pkey and bool(pfec & PFERR_WRITE)
                       and (bool(pfec & PFERR_USER) or role.wp))
        mask |= (int(check_pkey) | (int(check_write) << 1)) << pfec
    return mask
