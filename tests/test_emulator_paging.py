"""Targeted SDM/APM facts the walker must get right, checked in both layouts."""
from __future__ import annotations

from emulator.machine import new_model, old_model
from emulator.scenarios import L2_OFFSET, LONG_EFER, PG, Builder
from emulator.tables import Tables
from refactor.rules import load_rules

CR0_WP, CR4_PAE, CR4_PSE, CR4_LA57 = 1 << 16, 1 << 5, 1 << 4, 1 << 12
P, W, U, PS, NX = 1, 2, 4, 0x80, 1 << 63
EPT_R, EPT_W, EPT_X = 1, 2, 4


def run(events: list[dict]) -> list[dict]:
    """Results of the old layout; the new layout must give the same for every event."""
    rules = load_rules()
    old, new = old_model(rules), new_model(rules, rules.names("upstream"))
    out = []
    for ev in events:
        a, b = old.apply(ev), new.apply(ev)
        assert a == b, (ev, a, b)
        assert "error" not in a, (ev, a)
        out.append(a)
    return out


def last(b: Builder, **ev) -> dict:
    b.ev("translate", **ev)
    return run(b.events)[-1]


def test_pse36_4mib_page_above_4gib_and_ps_ignored_without_pse():
    b = Builder(tdp=False)
    t = b.tables("32")
    t.map(0x0080_0000, 0x3_4040_0000, size=4 << 20)
    b.ev("cr4", val=CR4_PSE)
    b.ev("cr3", val=t.cr3())
    b.ev("cr0", val=PG | CR0_WP)
    assert last(b, addr=0x0081_2345, access="read") == {"gpa": 0x3_4041_2345, "ad": [
        (t.entry_addr(0x0080_0000, 2), 0x20)]}
    b.ev("cr4", val=0)
    # Without CR4.PSE the PDE is a table pointer: its frame's entry 0x12 is empty.
    r = last(b, addr=0x0081_2345, access="read")
    assert r["fault"]["error_code"] == 0


def test_large_pages_4level_and_la57():
    b = Builder()
    t = b.tables("la57")
    t.map(0x00FF_1234_4000_0000, 0x1_C000_0000, size=1 << 30)
    t.map(0x00FF_1235_5660_0000, 0x0060_0000, size=2 << 20)
    b.long_mode(t)
    assert last(b, addr=0x00FF_1234_4765_4321, access="read")["gpa"] == 0x1_C765_4321
    r = last(b, addr=0x00FF_1235_567A_BCDE, access="write")
    assert r["gpa"] == 0x0060_0000 | (0x567A_BCDE & 0x1F_FFFF)


def test_ps_in_pml4e_is_reserved():
    b = Builder()
    t = b.tables("64")
    t.map(0x1000, 0x5000)
    b.long_mode(t)
    b.ev("write", addr=t.entry_addr(0x1000, 4), val=(t.entries[t.entry_addr(0x1000, 4)] | PS))
    assert last(b, addr=0x1000, access="read")["fault"]["error_code"] == 1 | 8


def test_pae_pdptrs_are_loaded_with_cr3():
    b = Builder()
    t = b.tables("pae")
    t.map(0xC000_0000, 0x0600_0000)
    b.ev("cr4", val=CR4_PAE)
    b.ev("cr3", val=t.cr3())
    b.ev("cr0", val=PG | CR0_WP)
    pdpte = t.entry_addr(0xC000_0000, 3)
    b.ev("write", addr=pdpte, val=0)
    assert last(b, addr=0xC000_0010, access="read")["gpa"] == 0x0600_0010   # cached copy
    b.ev("cr3", val=t.cr3())
    assert last(b, addr=0xC000_0010, access="read")["fault"]["error_code"] == 0
    b.ev("write", addr=pdpte, val=0x0010_0000 | P | W)                     # RW reserved
    b.ev("cr3", val=t.cr3())
    assert run(b.events)[-1] == {"ok": False, "gp": True}


def _nested(vendor: str, ad: bool = False):
    b = Builder()
    t1 = b.tables("64")
    t1.map(0x1000, 0x2000)
    b.long_mode(t1)
    tdp = b.tdp_tables("ept" if vendor == "vmx" else "64")
    if vendor == "vmx":
        tdp.map(0x4000_0000, 0x5_0000, flags=EPT_X)              # execute-only
        tdp.map(0x4000_1000, 0x5_1000, flags=EPT_W)              # write-only: misconfig
    else:
        tdp.map(0x4000_0000, 0x5_0000, flags=P | U)              # read-only
    t2 = b.l2_tables("64")
    t2.map(0x7000, 0x4000_0000)
    t2.map(0x8000, 0x4000_1000)
    t2.map(0x9000, 0x1000)
    # A PDE whose page table (L2 GPA 0x7000_0000) has no nested mapping.
    t2.map(0x20_0000, 0x1000)
    b.ev("write", addr=t2.entry_addr(0x20_0000, 2), val=0x7000_0000 | 7)
    b.ev("nested_entry", vendor=vendor, tdp=True,
         root=tdp.eptp(ad) if vendor == "vmx" else tdp.cr3(), ad=ad, execonly=True,
         cr0=PG | CR0_WP, cr3=t2.cr3(), cr4=CR4_PAE, efer=LONG_EFER)
    return b, tdp, t2


def test_ept_execute_only_violation_and_misconfig():
    b, _tdp, _t2 = _nested("vmx")
    assert last(b, addr=0x7010, access="fetch")["gpa"] == 0x5_0010
    f = last(b, addr=0x7010, access="read")["fault"]
    # KVM translates the final GPA's page (gfn_to_gpa(gfn)): the fault names the page.
    assert (f["to"], f["kind"], f["nested"], f["address"]) == ("L1", "ept_violation", True,
                                                               0x4000_0000)
    # read access, executable (bit 5), GVA valid and translated (bits 7, 8)
    assert f["exit_qualification"] == 1 | (1 << 5) | (1 << 7) | (1 << 8)
    assert last(b, addr=0x8010, access="read")["fault"]["kind"] == "ept_misconfig"
    # A fault on an L2 page-table read: GVA valid, not translated.
    f = last(b, addr=0x20_0010, access="read")["fault"]
    assert f["kind"] == "ept_violation" and f["exit_qualification"] & 0x180 == 0x80
    # An L2 #PF is delivered to L2, not as an exit.
    f = last(b, addr=0x60_0000, access="read")["fault"]
    assert (f["to"], f["kind"], f["nested"]) == ("L2", "pf", False)


def test_ept_accessed_dirty_on_guest_table_reads():
    b, tdp, _t2 = _nested("vmx", ad=True)
    r = last(b, addr=0x9010, access="read")
    assert r["gpa"] == L2_OFFSET + 0x1010
    ept_leaf = tdp.entry_addr(0, 3)          # the 1 GiB leaf mapping L2 GPA 0
    bits = {addr: v for addr, v in r["ad"]}
    assert bits[ept_leaf] == (1 << 8) | (1 << 9)   # guest table accesses count as writes


def test_npt_fault_reports_stage_in_exit_info():
    b, _tdp, _t2 = _nested("svm")
    f = last(b, addr=0x7010, access="write")["fault"]
    assert (f["to"], f["kind"], f["address"]) == ("L1", "npf", 0x4000_0000)   # the page
    assert f["exit_info_1"] == (1 << 32) | 1 | 2 | 4          # final, P|W|U
    f = last(b, addr=0x20_0010, access="read")["fault"]
    assert f["exit_info_1"] & (3 << 32) == 1 << 33 and f["exit_info_2"] == 0x7000_0000


def test_high_bits_reserved_in_pae_but_ignored_in_4level():
    for fmt, bit60_faults in (("pae", True), ("64", False)):
        b = Builder()
        t = b.tables(fmt)
        t.map(0x1000, 0x5000, flags=P | W | (1 << 60))
        if fmt == "pae":
            b.ev("cr4", val=CR4_PAE)
            b.ev("cr3", val=t.cr3())
            b.ev("cr0", val=PG | CR0_WP)
        else:
            b.long_mode(t)
        r = last(b, addr=0x1000, access="read")
        assert ("fault" in r and r["fault"]["error_code"] == 1 | 8) == bit60_faults, (fmt, r)
