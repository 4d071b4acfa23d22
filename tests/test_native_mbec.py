"""The `mbec` field of `nested_entry`: mode-based execute control for nested EPT.

Default suite (about 2 s with the 6.1 engine cached; the 6.1 engine is the
one test_native_engine.py builds): the field is parsed, encoded, has no effect
on 6.1 (which has no MBEC), and the fuzzer draws it without changing the
episodes that do not turn it on.  Slow: on 7.2 the tree's own
`nested_ept_mbec_enabled()` sees it (user-execute bit 10 decides user fetches).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from emulator.consts import PT_P, PT_RW, PT_US
from emulator.fuzz import random_events
from emulator.machine import old_model
from emulator.native import build_engine
from emulator.native.model import words
from emulator.scenarios import Builder
from emulator.tables import Tables
from emulator.trace import check_event
from refactor.rules import load_rules

from test_build import full_tree

XU = 1 << 10


def mbec_trace(mbec: bool) -> list[dict]:
    """L2 under nested EPT: one page user-execute only (R|W|XU), one XU only."""
    b = Builder()
    t1 = b.tables("64")
    t1.map(0x1000, 0x10_0000 + 0x9000, flags=PT_P | PT_RW)
    b.long_mode(t1)
    ept = Tables("ept", b.tdp_alloc, b.events.append)
    upper = {lvl: 7 | XU for lvl in range(2, 6)}
    ept.map(0, 1 << 32, size=1 << 30, flags=7 | XU, upper=upper)
    ept.map(0x4000_0000, 0x5_0000, flags=3 | XU, upper=upper)      # R, W, user-execute
    ept.map(0x4000_1000, 0x5_1000, flags=XU, upper=upper)          # user-execute only
    t2 = b.l2_tables("64")
    t2.map(0x10_0000, 0x4000_0000, flags=PT_P | PT_RW | PT_US)
    t2.map(0x10_1000, 0x4000_1000, flags=PT_P | PT_RW | PT_US)
    entry = dict(vendor="vmx", tdp=True, root=ept.eptp(False), cr0=0x80010001, cr3=t2.cr3(),
                 cr4=0x20, efer=0xD00)
    if mbec:
        entry["mbec"] = True
    b.ev("nested_entry", **entry)
    for cpl in (3, 0):
        b.ev("cpl", val=cpl)
        for addr in (0x10_0000, 0x10_1000):
            for acc in ("fetch", "read"):
                b.ev("translate", addr=addr, access=acc)
    b.ev("translate", addr=0x4000_1000, access="l2gpa_read")
    return b.events


def results(model, events):
    return [model.apply(ev) for ev in events]


def test_mbec_is_a_checked_boolean_field_off_by_default():
    ev = {"ev": "nested_entry", "vendor": "vmx", "tdp": True, "root": 0, "mbec": True,
          "cr0": 0, "cr3": 0, "cr4": 0, "efer": 0}
    assert check_event(dict(ev))["mbec"] is True
    with pytest.raises(ValueError, match="mbec"):
        check_event({**ev, "mbec": 3})
    on, off = words(ev), words({k: v for k, v in ev.items() if k != "mbec"})
    assert on[-1] == 1 and off[-1] == 0 and on[:-1] == off[:-1]


def test_fuzz_turns_mbec_on_only_for_vmx_with_nested_ept_and_gives_entries_bit_10():
    events = list(random_events(1, 30_000))
    entries = [e for e in events if e["ev"] == "nested_entry"]
    on = [e for e in entries if e.get("mbec")]
    assert on and len(on) < len(entries)
    assert all(e["vendor"] == "vmx" and e["tdp"] for e in on)
    assert "mbec" not in {k for e in entries if not e.get("mbec") for k in e}


def test_episodes_without_mbec_are_those_of_the_stream_without_it(monkeypatch):
    """MBEC draws from its own generator, so the stream is the one without MBEC up to the
    first MBEC episode.  After it the two may part: an MBEC episode whose 1 GiB leaf lacks
    read or write fails a PAE L2's PDPTE load and ends early (KVM fails that VM-entry),
    which moves every later episode of the stream."""
    with_mbec = _episodes(random_events(7, 30_000))
    monkeypatch.setattr("emulator.fuzz.MBEC_SHARE", 0.0)
    without = _episodes(random_events(7, 30_000))
    same = [a == b for a, b in zip(with_mbec, without)]
    assert not all(same)
    first = same.index(False)
    ep = with_mbec[first]
    # The first difference is an MBEC episode (its entry may fall after the cut: then its
    # EPT writes already carry bit 10).
    assert any(e.get("mbec") for e in ep) or any(
        e["ev"] == "write" and e["val"] >> 10 & 1 for e in ep)
    assert not any(e.get("mbec") for ep in with_mbec[:first] for e in ep)


def _episodes(events):
    out = []
    for ev in events:
        if ev["ev"] == "reset":
            out.append([])
        out[-1].append(ev)
    return out


def test_mbec_has_no_effect_on_61(engine_61):
    on, off = mbec_trace(True), mbec_trace(False)
    assert results(engine_61.model(), on) == results(engine_61.model(), off)


@pytest.mark.slow
def test_72_reads_mbec_from_vmcs12(monkeypatch):
    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(Path.home() / ".cache" / "kvm-refactor"))
    engine = build_engine(full_tree("7.2"))
    on, off = mbec_trace(True), mbec_trace(False)
    r_on, r_off = results(engine.model(), on), results(engine.model(), off)
    n = len(on) - 10            # the first probe: CPL 3 fetch of the R|W|XU page
    assert on[n] == {"ev": "translate", "addr": 0x10_0000, "access": "fetch"}
    assert "gpa" in r_on[n], r_on[n]                      # XU allows a user fetch
    assert r_off[n]["fault"]["kind"] == "ept_violation"   # without MBEC, XS (bit 2) is 0
    # The Python model does not model MBEC: it gives the results without it.
    assert results(old_model(load_rules()), on)[n] == results(old_model(load_rules()), off)[n]
