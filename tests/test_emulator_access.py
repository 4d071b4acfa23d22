"""kvm-unit-tests x86/access.c in spirit: every PTE/PDE rights combination x CR0.WP,
CR4.SMEP/SMAP/PKE, EFER.NXE, PKRU, EFLAGS.AC, CPL and access type, against an
independent table of expected outcomes written from the Intel SDM (vol. 3A 4.6,
4.7), not from the walker's code.
"""
from __future__ import annotations

import itertools

import pytest

from emulator.machine import new_model, old_model
from emulator.tables import PageAllocator, Tables
from refactor.rules import load_rules

P, W, U, A, D, PS = 1, 2, 4, 0x20, 0x40, 0x80
NX = 1 << 63
RSVD = 1 << 51            # above MAXPHYADDR (46): reserved
PKEY = 5
CR0_PG, CR0_PE, CR0_WP = 1 << 31, 1, 1 << 16
CR4_PAE, CR4_SMEP, CR4_SMAP, CR4_PKE = 1 << 5, 1 << 20, 1 << 21, 1 << 22
EFER_LM = (1 << 8) | (1 << 10)
EFER_NXE = 1 << 11
EC_P, EC_W, EC_U, EC_RSVD, EC_I, EC_PK = 1, 2, 4, 8, 16, 32

PDE_COMBOS = [W * w | U * u | NX * x for w, u, x in itertools.product((0, 1), repeat=3)]
PTE_COMBOS = [P * p | W * w | U * u | NX * x | RSVD * r
              for p, w, u, x, r in itertools.product((0, 1), repeat=5)]
BASE_VA = 0x40_0000_0000       # 4 KiB leaves: PDE rights x PTE bits
BASE_VA_2M = 0x80_0000_0000    # 2 MiB leaves: PDPTE rights x PDE (leaf) bits


def va_of(i: int, j: int) -> int:
    return BASE_VA + (i << 21) + (j << 12) + 0x123


def pa_of(i: int, j: int) -> int:
    return 0x1000_0000 + ((i * 32 + j) << 12)


def cases() -> list[tuple[int, int, int, int]]:
    """(va, expected pa, upper entry rights, leaf entry bits) for both leaf sizes."""
    out = []
    for i, upper in enumerate(PDE_COMBOS):
        for j, leaf in enumerate(PTE_COMBOS):
            out.append((va_of(i, j), pa_of(i, j) | 0x123, upper, leaf))
            va2 = BASE_VA_2M + (i << 30) + (j << 21) + 0x1_2345
            out.append((va2, (1 << 40) + ((i * 32 + j) << 21) + 0x1_2345, upper, leaf))
    return out


def expected(pde: int, pte: int, *, wp, smep, smap, pke, nxe, pkru, ac, user, access, implicit):
    """What the SDM says: ("gpa", address) or ("pf", error code)."""
    write, fetch = access == "write", access == "fetch"
    ec = (EC_W if write else 0) | (EC_U if user else 0) | (EC_I if fetch and (nxe or smep) else 0)
    # The walk goes top-down: a reserved bit in the PDE faults before the PTE is read.
    # NX is reserved when EFER.NXE=0; bits at or above MAXPHYADDR are reserved.
    if not nxe and pde & NX:
        return ("pf", ec | EC_P | EC_RSVD)
    if not pte & P:
        return ("pf", ec)
    if (not nxe and pte & NX) or pte & RSVD:
        return ("pf", ec | EC_P | EC_RSVD)
    user_page = bool(pde & U and pte & U)
    writable = bool(pde & W and pte & W)
    no_exec = nxe and bool(pde & NX or pte & NX)
    fault = False
    if user:
        fault = (not user_page) or (write and not writable) or (fetch and no_exec)
    elif fetch:
        fault = no_exec or (smep and user_page)
    else:
        if write and not writable and wp:
            fault = True
        if smap and user_page and (implicit or not ac):
            fault = True
    pk = False
    if pke and user_page and not fetch:
        access_disable = pkru >> (2 * PKEY) & 1
        write_disable = pkru >> (2 * PKEY + 1) & 1
        pk = bool(access_disable or (write and write_disable and (user or wp)))
    if fault or pk:
        return ("pf", ec | EC_P | (EC_PK if pk else 0))
    return ("gpa", None)


def build(model) -> None:
    events = [{"ev": "reset", "tdp": True, "maxphyaddr": 46}]
    t = Tables("64", PageAllocator(0x100000, 0x200000), events.append)
    for i, pde in enumerate(PDE_COMBOS):
        for j, pte in enumerate(PTE_COMBOS):
            t.map(va_of(i, j) & ~0xFFF, pa_of(i, j), flags=pte | (PKEY << 59),
                  upper={2: P | pde, 3: P | W | U, 4: P | W | U})
            t.map(BASE_VA_2M + (i << 30) + (j << 21), (1 << 40) + ((i * 32 + j) << 21),
                  size=2 << 20, flags=pte | (PKEY << 59), upper={3: P | pde, 4: P | W | U})
    events += [{"ev": "cr4", "val": CR4_PAE}, {"ev": "efer", "val": EFER_LM | EFER_NXE},
               {"ev": "cr3", "val": t.cr3()}, {"ev": "cr0", "val": CR0_PG | CR0_PE | CR0_WP}]
    for ev in events:
        assert "error" not in model.apply(ev)


CONFIGS = list(itertools.product((0, 1), repeat=5))     # wp, smep, smap, pke, nxe


@pytest.mark.parametrize("layout", ["old", "new"])
def test_access_matrix_matches_sdm(layout):
    rules = load_rules()
    model = old_model(rules) if layout == "old" else new_model(rules, rules.names("upstream"))
    build(model)
    checked = mismatches = 0
    first = None
    all_cases = cases()
    for wp, smep, smap, pke, nxe in CONFIGS:
        model.apply({"ev": "cr0", "val": CR0_PG | CR0_PE | (CR0_WP if wp else 0)})
        model.apply({"ev": "cr4", "val": CR4_PAE | CR4_SMEP * smep | CR4_SMAP * smap
                     | CR4_PKE * pke})
        model.apply({"ev": "efer", "val": EFER_LM | (EFER_NXE if nxe else 0)})
        for pkru in ((0, 1 << (2 * PKEY), 2 << (2 * PKEY)) if pke else (0,)):
            model.apply({"ev": "pkru", "val": pkru})
            for ac, cpl in itertools.product((0, 1), (0, 3)):
                model.apply({"ev": "ac", "val": ac})
                model.apply({"ev": "cpl", "val": cpl})
                accesses = [("read", False), ("write", False), ("fetch", False)]
                if cpl == 0:
                    accesses += [("implicit", True), ("implicit_write", True)]
                for va, pa, pde, pte in all_cases:
                    for access, implicit in accesses:
                        kind = "write" if access.endswith("write") else (
                            "fetch" if access == "fetch" else "read")
                        want = expected(pde, pte, wp=wp, smep=smep, smap=smap, pke=pke,
                                        nxe=nxe, pkru=pkru, ac=ac,
                                        user=cpl == 3 and not implicit, access=kind,
                                        implicit=implicit)
                        got = model.apply({"ev": "translate", "addr": va, "access": access})
                        if "gpa" in got:
                            outcome = ("gpa", None)
                            ok = got["gpa"] == pa
                        else:
                            f = got["fault"]
                            outcome = ("pf", f["error_code"])
                            ok = f["address"] == va and f["to"] == "L1" and not f["nested"]
                        checked += 1
                        if outcome != want or not ok:
                            mismatches += 1
                            if first is None:
                                first = dict(wp=wp, smep=smep, smap=smap, pke=pke, nxe=nxe,
                                             pkru=pkru, ac=ac, cpl=cpl, access=access,
                                             pde=hex(pde), pte=hex(pte), want=want, got=got)
    assert checked > 300_000
    assert mismatches == 0, repr(first)


def test_accessed_dirty_written_back():
    rules = load_rules()
    model = old_model(rules)
    build(model)
    i, j = PDE_COMBOS.index(W | U), PTE_COMBOS.index(P | W | U)
    va = va_of(i, j)
    read = model.apply({"ev": "translate", "addr": va, "access": "read"})
    written = {addr: bits for addr, bits in read["ad"]}
    assert all(bits == A for bits in written.values()) and len(written) == 4
    write = model.apply({"ev": "translate", "addr": va, "access": "write"})
    assert [bits for _addr, bits in write["ad"]] == [D]       # only the leaf gains D
    again = model.apply({"ev": "translate", "addr": va, "access": "write"})
    assert "ad" not in again
    fault = model.apply({"ev": "translate", "addr": va_of(i, PTE_COMBOS.index(P | U)),
                         "access": "write"})
    assert "fault" in fault and "ad" not in fault or fault["fault"]["error_code"] & EC_P
