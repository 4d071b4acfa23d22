"""The scenario library: small, deterministic traces covering each MMU configuration.

Each scenario is a function that fills a Builder; `scenario_events(name)`
returns its events.  emulator/corpus/ holds them written out as JSONL.
"""
from __future__ import annotations

from typing import Callable

from .consts import (CR0_PE, CR0_PG, CR0_WP, CR4_LA57, CR4_PAE, CR4_PKE, CR4_PSE, CR4_SMAP,
                     CR4_SMEP, EFER_LMA, EFER_LME, EFER_NXE, EPT_R, EPT_W, EPT_X, PT_NX, PT_P,
                     PT_RW, PT_US)
from .tables import PageAllocator, Tables

L2_OFFSET = 1 << 32          # L2 GPA x lives at L1 GPA x + 4 GiB (through EPT/NPT)
LONG_EFER = EFER_LME | EFER_LMA | EFER_NXE
PG = CR0_PG | CR0_PE
ACCESSES = ("read", "write", "fetch")


class Builder:
    def __init__(self, tdp: bool = True, maxphy: int = 46):
        self.events: list[dict] = [{"ev": "reset", "tdp": tdp, "maxphyaddr": maxphy}]
        self.alloc = PageAllocator(0x100000, 0x400000)       # L1 tables (L1 GPA)
        self.tdp_alloc = PageAllocator(0x400000, 0x800000)   # EPT/NPT tables (L1 GPA)
        self.l2_alloc = PageAllocator(0x200000, 0x400000)    # L2 tables (L2 GPA)

    def ev(self, kind: str, **fields) -> None:
        self.events.append({"ev": kind, **fields})

    def tables(self, fmt: str) -> Tables:
        return Tables(fmt, self.alloc, self.events.append)

    def l2_tables(self, fmt: str, nested: bool = True) -> Tables:
        to_l1 = (lambda a: a + L2_OFFSET) if nested else (lambda a: a)
        alloc = self.l2_alloc if nested else self.alloc
        return Tables(fmt, alloc, self.events.append, to_l1)

    def tdp_tables(self, fmt: str = "ept", identity_gib: int = 1) -> Tables:
        """EPT/NPT mapping L2 GPA [0, n GiB) to L1 GPA + 4 GiB with 1 GiB pages."""
        t = Tables(fmt, self.tdp_alloc, self.events.append)
        flags = None if fmt == "ept" else PT_P | PT_RW | PT_US
        for g in range(identity_gib):
            t.map(g << 30, L2_OFFSET + (g << 30), size=1 << 30, flags=flags)
        return t

    def long_mode(self, t: Tables, cr4: int = 0, wp: bool = True, nxe: bool = True) -> None:
        la57 = CR4_LA57 if t.fmt == "la57" else 0
        self.ev("cr4", val=CR4_PAE | la57 | cr4)
        self.ev("efer", val=LONG_EFER if nxe else EFER_LME | EFER_LMA)
        self.ev("cr3", val=t.cr3())
        self.ev("cr0", val=PG | (CR0_WP if wp else 0))

    def probe(self, addrs, accesses=ACCESSES, cpls=(0, 3)) -> None:
        for cpl in cpls:
            self.ev("cpl", val=cpl)
            for a in addrs:
                for acc in accesses:
                    self.ev("translate", addr=a, access=acc)


def _guest_layout(t: Tables, big: bool = True) -> list[int]:
    """A spread of mappings with different rights; returns addresses to probe."""
    t.map(0x0000_1000, 0x0010_0000 + 0x9000, flags=PT_P | PT_RW)             # supervisor RW
    t.map(0x0000_2000, 0x0003_0000, flags=PT_P | PT_US)                      # user RO
    t.map(0x0000_3000, 0x0003_1000, flags=PT_P | PT_RW | PT_US | (PT_NX if t.fmt != "32" else 0))
    t.map(0x0040_0000, 0x0080_0000, size=(4 << 20) if t.fmt == "32" else (2 << 20),
          flags=PT_P | PT_RW | PT_US)
    addrs = [0x1008, 0x2010, 0x3ff8, 0x41_2345, 0x5000, 0x7F_0000]
    if big and t.fmt in ("64", "la57"):
        t.map(0x4000_0000, 0xC000_0000, size=1 << 30, flags=PT_P | PT_US)
        t.map(0x7F12_3456_7000, 0x0004_0000, flags=PT_P | PT_RW | PT_US)
        addrs += [0x4567_89AB, 0x7F12_3456_7ABC, 0x7F12_3456_8000]
    return addrs


def l1_tdp(b: Builder) -> None:
    """L1 under TDP, 4-level paging, 4K/2M/1G pages; passthrough CR0.WP; INVLPG."""
    t = b.tables("64")
    addrs = _guest_layout(t)
    b.long_mode(t)
    b.probe(addrs)
    b.ev("cr0", val=PG, passthrough=True)          # guest-owned CR0.WP flips, no exit
    b.probe(addrs[:3], accesses=("write",), cpls=(0,))
    b.ev("invlpg", addr=0x2000)
    b.ev("translate", addr=0x2000, access="implicit")


def l1_shadow(b: Builder) -> None:
    """L1 under shadow paging, 32-bit paging with PSE and PSE-36; PSE off."""
    t = b.tables("32")
    addrs = _guest_layout(t)
    t.map(0x0080_0000, 0x3_4040_0000, size=4 << 20)      # PSE-36: PA above 4 GiB
    b.ev("cr4", val=CR4_PSE)
    b.ev("cr3", val=t.cr3())
    b.ev("cr0", val=PG | CR0_WP)
    b.probe(addrs + [0x0080_1234])
    b.ev("cr0", val=PG)                                   # intercepted: context reset
    b.probe(addrs[:2], accesses=("write",), cpls=(0,))
    b.ev("cr4", val=0)                                    # PSE off: PS ignored in PDEs
    b.probe([0x41_2345], cpls=(0,))
    b.ev("invlpg", addr=0x1000)


def _nested_common(b: Builder, vendor: str, ad: bool, l2fmt: str = "64") -> tuple[Tables, Tables]:
    t1 = b.tables("64")
    _guest_layout(t1, big=False)
    b.long_mode(t1)
    tdp = b.tdp_tables("ept" if vendor == "vmx" else "64")
    # Restricted nested mappings for final-page faults, above the 1 GiB window.
    if vendor == "vmx":
        tdp.map(0x4000_0000, 0x0005_0000, flags=EPT_R)                  # read-only
        tdp.map(0x4000_1000, 0x0005_1000, flags=EPT_X)                  # execute-only
        tdp.map(0x4000_2000, 0x0005_2000, flags=EPT_W)                  # misconfig
        tdp.map(0x4000_3000, 0x0005_3000, flags=EPT_R | EPT_W | EPT_X | (1 << 51))  # reserved
    else:
        tdp.map(0x4000_0000, 0x0005_0000, flags=PT_P | PT_US)
        tdp.map(0x4000_1000, 0x0005_1000, flags=PT_P | PT_RW)           # supervisor-only
        tdp.map(0x4000_2000, 0x0005_2000, flags=PT_P | PT_RW | PT_US | PT_NX)
        tdp.map(0x4000_3000, 0x0005_3000, flags=PT_P | PT_US | (1 << 51))
    t2 = b.l2_tables(l2fmt)
    _guest_layout(t2, big=l2fmt != "pae")
    for i in range(4):
        t2.map(0x10_0000 + i * 0x1000, 0x4000_0000 + i * 0x1000)
    # An L2 table page outside every nested mapping: the walk faults on it.
    t2.map(0x20_0000, 0x1000)
    b.ev("write", addr=t2.entry_addr(0x20_0000, 2), val=0x7000_0000 | 7, size=8)
    efer = LONG_EFER if l2fmt != "pae" else EFER_NXE
    b.ev("nested_entry", vendor=vendor, tdp=True,
         root=tdp.eptp(ad) if vendor == "vmx" else tdp.cr3(), ad=ad, execonly=True,
         cr0=PG | CR0_WP, cr3=t2.cr3(), cr4=CR4_PAE | CR4_SMEP, efer=efer)
    return t2, tdp


def _nested_probe(b: Builder) -> None:
    b.probe([0x1008, 0x2010, 0x3ff8, 0x41_2345, 0x5000])
    b.probe([0x10_0000, 0x10_1000, 0x10_2000, 0x10_3000, 0x20_0000], cpls=(0,))
    for acc in ("l2gpa_read", "l2gpa_write"):
        for a in (0x1234, 0x4000_0010, 0x4000_1010, 0x4000_2010, 0x5000_0000):
            b.ev("translate", addr=a, access=acc)
    b.ev("cr0", val=PG, passthrough=True)
    b.probe([0x1008], accesses=("write",), cpls=(0,))
    b.ev("invlpg", addr=0x1000)
    b.ev("nested_exit")
    b.probe([0x1008, 0x2010], cpls=(0, 3))
    b.ev("invlpg", addr=0x1000)


def l2_nested_ept(b: Builder) -> None:
    """L2 under nested EPT (A/D on): #PF to L2, EPT violations/misconfigs, nGPAs."""
    _nested_common(b, "vmx", ad=True)
    _nested_probe(b)


def l2_nested_ept_intercept(b: Builder) -> None:
    """L2 under nested EPT with #PF intercepted by L1."""
    t2, tdp = _nested_common(b, "vmx", ad=False)
    b.ev("nested_exit")
    b.ev("nested_entry", vendor="vmx", tdp=True, root=tdp.eptp(False), pf_intercept=True,
         cr0=PG | CR0_WP, cr3=t2.cr3(), cr4=CR4_PAE, efer=LONG_EFER)
    _nested_probe(b)


def l2_nested_npt(b: Builder) -> None:
    """L2 under nested NPT (4-level host format): #NPF with stage bits."""
    _nested_common(b, "svm", ad=False)
    _nested_probe(b)


def l2_nested_npt_pae_host(b: Builder) -> None:
    """L1 in PAE mode: the NPT is in PAE format and its PDPTEs come from nCR3."""
    t1 = b.tables("pae")
    _guest_layout(t1)
    b.ev("cr4", val=CR4_PAE)
    b.ev("efer", val=EFER_NXE)
    b.ev("cr3", val=t1.cr3())
    b.ev("cr0", val=PG | CR0_WP)
    npt = Tables("pae", b.tdp_alloc, b.events.append)
    for g in range(0, 1 << 30, 2 << 20):
        if g < (16 << 20):
            npt.map(g, L2_OFFSET + g, size=2 << 20, flags=PT_P | PT_RW | PT_US)
    t2 = b.l2_tables("32")
    _guest_layout(t2)
    b.ev("nested_entry", vendor="svm", tdp=True, root=npt.cr3(), cr0=PG, cr3=t2.cr3(),
         cr4=CR4_PSE, efer=0)
    b.probe([0x1008, 0x2010, 0x3ff8, 0x41_2345, 0x5000, 0x0100_0000])
    b.ev("translate", addr=0x0200_0000, access="l2gpa_read")
    b.ev("nested_exit")
    b.probe([0x1008], cpls=(0,))


def l2_no_nested_tdp(b: Builder) -> None:
    """L2 without nested TDP: L2 tables map straight to L1 GPAs; SMAP in L2."""
    t1 = b.tables("64")
    _guest_layout(t1, big=False)
    b.long_mode(t1)
    t2 = b.l2_tables("64", nested=False)
    addrs = _guest_layout(t2)
    for intercept in (False, True):
        b.ev("nested_entry", vendor="vmx", tdp=False, pf_intercept=intercept, cr0=PG | CR0_WP,
             cr3=t2.cr3(), cr4=CR4_PAE | CR4_SMAP, efer=LONG_EFER)
        b.probe(addrs)
        b.ev("translate", addr=0x1234, access="l2gpa_read")
        b.ev("invlpg", addr=0x2000)
        b.ev("nested_exit")
    b.probe(addrs[:2], cpls=(3,))


def cr0_pg0(b: Builder) -> None:
    """CR0.PG=0 in L1, and in L2 under nested EPT (GPA through EPT)."""
    b.probe([0x1234, 0xFFFF_F000], cpls=(0,))
    tdp = b.tdp_tables("ept")
    b.ev("nested_entry", vendor="vmx", tdp=True, root=tdp.eptp(False), cr0=CR0_PE, cr3=0,
         cr4=0, efer=0)
    b.probe([0x1234, 0x4000_0000], cpls=(0,))
    b.ev("nested_exit")
    b.ev("translate", addr=0x1234, access="read")


def pae_pdptr(b: Builder) -> None:
    """PAE: PDPTEs cached at CR3 load, reload, reserved PDPTE #GP; PAE L2 under EPT."""
    t = b.tables("pae")
    addrs = _guest_layout(t)
    t.map(0xC000_0000, 0x0600_0000)
    b.ev("cr4", val=CR4_PAE)
    b.ev("efer", val=EFER_NXE)
    b.ev("cr3", val=t.cr3())
    b.ev("cr0", val=PG | CR0_WP)
    b.probe(addrs + [0xC000_0000])
    pdpte = t.entry_addr(0xC000_0000, 3)
    b.ev("write", addr=pdpte, val=0, size=8)                 # cached PDPTE still used
    b.ev("translate", addr=0xC000_0000, access="read")
    b.ev("cr3", val=t.cr3())                                 # reload: now not present
    b.ev("translate", addr=0xC000_0000, access="read")
    b.ev("write", addr=pdpte, val=0x0010_0000 | 1 | 2, size=8)   # RW reserved in a PDPTE
    b.ev("cr3", val=t.cr3())                                 # #GP, CR3 unchanged
    b.ev("translate", addr=0x1008, access="read")
    tdp = b.tdp_tables("ept")
    t2 = b.l2_tables("pae")
    addrs2 = _guest_layout(t2)
    b.ev("nested_entry", vendor="vmx", tdp=True, root=tdp.eptp(True), ad=True, cr0=PG | CR0_WP,
         cr3=t2.cr3(), cr4=CR4_PAE, efer=EFER_NXE)
    b.probe(addrs2)
    b.ev("cr3", val=t2.cr3())
    b.ev("nested_exit")


def la57(b: Builder) -> None:
    """5-level paging (LA57)."""
    t = b.tables("la57")
    addrs = _guest_layout(t)
    t.map(0x00FF_1234_5678_9000, 0x7000)
    b.long_mode(t)
    b.probe(addrs + [0x00FF_1234_5678_9ABC, 0x00FE_0000_0000_0000])


def prot_combos(b: Builder) -> None:
    """SMEP/SMAP/PKE x CR0.WP x EFLAGS.AC x PKRU, implicit accesses, NX off."""
    t = b.tables("64")
    addrs = _guest_layout(t, big=False)
    t.map(0x0000_6000, 0x0003_6000, flags=PT_P | PT_RW | PT_US | (5 << 59))   # pkey 5
    addrs.append(0x6000)
    b.long_mode(t)
    for cr4 in (0, CR4_SMEP, CR4_SMAP, CR4_SMEP | CR4_SMAP | CR4_PKE):
        for wp in (True, False):
            b.ev("cr4", val=CR4_PAE | cr4)
            b.ev("cr0", val=PG | (CR0_WP if wp else 0))
            for ac in (0, 1):
                b.ev("ac", val=ac)
                b.ev("pkru", val=(1 << 10) if ac else (2 << 10))     # key 5: AD or WD
                b.probe(addrs)
                b.probe(addrs[:2], accesses=("implicit", "implicit_write"), cpls=(0,))
    b.ev("efer", val=EFER_LME | EFER_LMA)                           # NX off: bit 63 reserved
    b.probe([0x3ff8], cpls=(0,))


def ad_bits(b: Builder) -> None:
    """Accessed/dirty write-back in L1 tables, L2 tables and EPT (A/D on)."""
    t = b.tables("64")
    addrs = _guest_layout(t, big=False)
    b.long_mode(t)
    b.probe(addrs, accesses=("read",), cpls=(0,))
    b.probe(addrs, accesses=("write",), cpls=(0,))
    for a in addrs[:3]:
        for level in (1, 2, 3, 4):
            e = t.entry_addr(a, level)
            if e is not None:
                b.ev("read", addr=e)
    tdp = b.tdp_tables("ept")
    t2 = b.l2_tables("64")
    addrs2 = _guest_layout(t2, big=False)
    b.ev("nested_entry", vendor="vmx", tdp=True, root=tdp.eptp(True), ad=True, cr0=PG | CR0_WP,
         cr3=t2.cr3(), cr4=CR4_PAE, efer=LONG_EFER)
    b.probe(addrs2, accesses=("read", "write"), cpls=(0,))
    b.ev("read", addr=tdp.entry_addr(0, 3))
    b.ev("read", addr=t2.entry_addr(0x1000, 1))


SCENARIOS: dict[str, Callable[[Builder], None]] = {
    "l1_tdp": l1_tdp,
    "l1_shadow": l1_shadow,
    "l2_nested_ept": l2_nested_ept,
    "l2_nested_ept_intercept": l2_nested_ept_intercept,
    "l2_nested_npt": l2_nested_npt,
    "l2_nested_npt_pae_host": l2_nested_npt_pae_host,
    "l2_no_nested_tdp": l2_no_nested_tdp,
    "cr0_pg0": cr0_pg0,
    "pae_pdptr": pae_pdptr,
    "la57": la57,
    "prot_combos": prot_combos,
    "ad_bits": ad_bits,
}
SHADOW = {"l1_shadow"}


def scenario_events(name: str) -> list[dict]:
    b = Builder(tdp=name not in SHADOW)
    SCENARIOS[name](b)
    return b.events
