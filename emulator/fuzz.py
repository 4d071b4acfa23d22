"""Seeded random traces: valid page tables in every mode, then mutations and probes.

The stream is a generator of episodes; each starts with a `reset`, so a run of
any length keeps bounded state and a divergence depends only on its episode
(which is what gets shrunk).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .consts import (CR0_PE, CR0_PG, CR0_WP, CR4_PAE, CR4_PKE, CR4_PSE, CR4_SMAP, CR4_SMEP,
                     EFER_LMA, EFER_LME, EFER_NXE, PT_NX, PT_P, PT_RW, PT_US)
from .scenarios import L2_OFFSET
from .tables import PageAllocator, Tables
from .trace import TraceError, entry_failed, jsonable, run_pair, write_events

PG = CR0_PG | CR0_PE
# Bits a mutation flips in a guest entry / an EPT entry.
GUEST_BITS = [0, 1, 2, 5, 6, 7, 8, 51, 59, 60, 63, 13, 21]
EPT_BITS = [0, 1, 2, 7, 8, 9, 3, 4, 51]
EPT_XU = 1 << 10        # user-execute of an EPT entry under MBEC
MBEC_SHARE = 0.4        # of VMX entries with nested EPT (0: the stream from before MBEC)
ACCESS_WEIGHTS = (["read"] * 4 + ["write"] * 3 + ["fetch"] * 2 + ["system", "implicit",
                                                                  "implicit_write"])


class _Episode:
    """Random state of one episode: the tables built and the addresses worth probing."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        # MBEC choices come from a second generator seeded from the first's state without
        # drawing from it: the stream is the one it was before MBEC, except in the MBEC
        # episodes (VMX with nested EPT), where entries gain bit 10 and nested_entry "mbec".
        self.xrng = random.Random(hash(rng.getstate()[1]))
        self.mbec = False
        self.events: list[dict] = []
        self.tdp = rng.random() < 0.8
        self.maxphyaddr = rng.choice((36, 39, 46, 52))
        self.events.append({"ev": "reset", "tdp": self.tdp, "maxphyaddr": self.maxphyaddr})
        self.alloc = PageAllocator(0x100000, 0x300000)
        self.l1: Tables | None = None
        self.l2: Tables | None = None
        self.tdp_tables: Tables | None = None
        self.vas: list[int] = []
        self.l2_vas: list[int] = []
        self.nested = False
        self.cr0 = 0
        self.cr4 = 0
        self.fmt = "none"
        self.ended = False      # no event may follow (KVM would not run on from here)

    def ev(self, kind: str, **f) -> None:
        self.events.append({"ev": kind, **f})

    def _va(self, fmt: str) -> int:
        rng = self.rng
        if fmt in ("32", "pae"):
            return rng.randrange(0, 1 << 32) & ~0xFFF
        top = 57 if fmt == "la57" else 48
        return rng.randrange(0, 1 << (top - 1)) & ~0xFFF

    def _flags(self, ept: bool) -> int:
        rng = self.rng
        if ept:
            return rng.choice((7, 7, 7, 1, 3, 5, 4, 2))
        f = PT_P | (PT_RW if rng.random() < 0.7 else 0) | (PT_US if rng.random() < 0.6 else 0)
        if rng.random() < 0.2:
            f |= PT_NX
        if rng.random() < 0.2:
            f |= rng.randrange(16) << 59
        if rng.random() < 0.05:
            f |= 1 << 51
        return f

    def _xu(self) -> int:
        """Bit 10 for an EPT entry, often, while the episode's L2 runs with MBEC."""
        return EPT_XU if self.mbec and self.xrng.random() < 0.7 else 0

    def _populate(self, t: Tables, vas: list[int], pa_limit: int, n: int) -> None:
        rng = self.rng
        for _ in range(n):
            va = self._va(t.fmt)
            size = rng.choice((4096,) * 6 + ((4 << 20) if t.fmt == "32" else (2 << 20),)
                              + (((1 << 30),) if t.fmt in ("64", "la57") else ()))
            va &= ~(size - 1)
            pa = rng.randrange(0, pa_limit) & ~(size - 1)
            flags = self._flags(False)
            if t.fmt == "32":
                flags &= 0xFFFFFFFF
            t.map(va, pa, size=size, flags=flags,
                  upper={lvl: PT_P | PT_RW | PT_US if rng.random() < 0.8 else PT_P | PT_RW
                         for lvl in range(2, 6)})
            vas.append(va | rng.randrange(0, min(size, 1 << 16)))

    def setup_l1(self) -> None:
        rng = self.rng
        fmt = rng.choice(("64", "64", "64", "la57", "pae", "32", "none"))
        self.fmt = fmt
        if fmt == "none":
            self.vas = [rng.randrange(0, 1 << 32) for _ in range(8)]
            self.cr0 = CR0_PE
            self.ev("cr0", val=CR0_PE)
            return
        self.l1 = Tables(fmt, self.alloc, self.events.append)
        self._populate(self.l1, self.vas, 1 << 32, rng.randrange(4, 16))
        extra = rng.choice((0, CR4_SMEP, CR4_SMAP, CR4_SMEP | CR4_SMAP, CR4_PKE))
        if fmt == "32":
            self.cr4 = (CR4_PSE if rng.random() < 0.8 else 0) | (extra & ~CR4_PKE)
            efer = 0
        elif fmt == "pae":
            self.cr4 = CR4_PAE | (extra & ~CR4_PKE)
            efer = EFER_NXE if rng.random() < 0.7 else 0
        else:
            self.cr4 = CR4_PAE | extra | (1 << 12 if fmt == "la57" else 0)
            efer = EFER_LME | EFER_LMA | (EFER_NXE if rng.random() < 0.8 else 0)
        self.ev("cr4", val=self.cr4)
        self.ev("efer", val=efer)
        self.ev("cr3", val=self.l1.cr3())
        self.cr0 = PG | (CR0_WP if rng.random() < 0.7 else 0)
        self.ev("cr0", val=self.cr0)

    def enter_l2(self) -> None:
        rng = self.rng
        vendor = rng.choice(("vmx", "svm"))
        tdp = self.tdp and rng.random() < 0.8 and self.fmt in ("64", "la57")
        root, ad, tables_readable = 0, False, True
        self.mbec = tdp and vendor == "vmx" and self.xrng.random() < MBEC_SHARE
        if tdp:
            # NPT has L1's paging depth (KVM walks it with vmcb01's CR4: LA57 means 5 levels);
            # EPT's depth is the EPTP's (4 here).
            tfmt = "ept" if vendor == "vmx" else ("la57" if self.fmt == "la57" else "64")
            t = Tables(tfmt, PageAllocator(0x300000, 0x380000), self.events.append)
            full = None if tfmt == "ept" else PT_P | PT_RW | PT_US
            # Under MBEC the non-leaf entries may be user-executable; every map of the
            # table gets the same ones, so that none is rewritten (one write each, as before).
            xu = self._xu()
            upper = {lvl: 7 | xu for lvl in range(2, 6)} if xu else None
            # The 1 GiB leaf is what most L2 accesses go through: under MBEC its rights vary
            # too (XU with or without R/W/XS), so that user/supervisor fetches, XU-only
            # presence and the XU bit of exit qualifications are all reached.
            big = self.xrng.choice((7, 7, 7, 5, 3, 1, 0)) | xu if xu else full
            t.map(0, L2_OFFSET, size=1 << 30, flags=big, upper=upper)
            # L2's own tables live behind that leaf: load_pdptrs() translates the PDPTEs'
            # address as a user write (PFERR_USER_MASK | PFERR_WRITE_MASK), so without
            # read and write in the leaf the PDPTE load at entry faults on the nested stage.
            tables_readable = big is None or big & 3 == 3
            for _ in range(rng.randrange(2, 6)):
                gpa = (1 << 30) + rng.randrange(0, 1 << 24) & ~0xFFF
                t.map(gpa, rng.randrange(0, 1 << 32) & ~0xFFF,
                      flags=self._flags(tfmt == "ept") | self._xu(), upper=upper)
            self.tdp_tables = t
            ad = rng.random() < 0.5
            root = t.eptp(ad) if tfmt == "ept" else t.cr3()
        fmt = rng.choice(("64", "64", "pae", "32"))
        to_l1 = (lambda a: a + L2_OFFSET) if tdp else (lambda a: a)
        alloc = PageAllocator(0x380000, 0x400000) if tdp else self.alloc
        self.l2 = Tables(fmt, alloc, self.events.append, to_l1)
        self.l2_vas = []
        self._populate(self.l2, self.l2_vas, 1 << 31 if tdp else 1 << 32, rng.randrange(3, 10))
        cr4 = {"64": CR4_PAE, "pae": CR4_PAE, "32": CR4_PSE}[fmt] | rng.choice(
            (0, CR4_SMEP, CR4_SMAP))
        efer = EFER_LME | EFER_LMA | EFER_NXE if fmt == "64" else EFER_NXE
        self.ev("nested_entry", vendor=vendor, tdp=tdp, root=root, ad=ad,
                execonly=rng.random() < 0.7, pf_intercept=rng.random() < 0.3,
                cr0=PG | (CR0_WP if rng.random() < 0.7 else 0), cr3=self.l2.cr3(), cr4=cr4,
                efer=efer, **({"mbec": True} if self.mbec else {}))
        self.nested = True
        # A PAE L2 whose PDPTEs cannot be loaded fails VM-entry in KVM: L2 never runs from
        # there, so neither does the episode (its tables may hold stale entries: pages of an
        # earlier L2 are reused).
        pdptes = to_l1(self.l2.cr3() & ~0xFFF) + (self.l2.cr3() & 0xFE0)
        self.ended = fmt == "pae" and not (tables_readable and self.pdptes_load(pdptes))

    def memory(self) -> dict[int, int]:
        """The guest memory the episode's writes made so far, byte by byte (unwritten: 0)."""
        mem: dict[int, int] = {}
        for ev in self.events:
            if ev["ev"] == "write":
                for i in range(ev.get("size", 8)):
                    mem[ev["addr"] + i] = (ev["val"] >> (8 * i)) & 0xFF
        return mem

    def pdptes_load(self, addr: int) -> bool:
        """Whether load_pdptrs() accepts the 4 PDPTEs at L1 GPA `addr`: a present entry
        has none of pdptr_rsvd_bits() (bits 1-2, 5-8, MAXPHYADDR-63)."""
        mem = self.memory()
        rsvd = ((1 << 64) - (1 << self.maxphyaddr)) | 0x1E0 | 0x6
        for k in range(4):
            e = sum(mem.get(addr + 8 * k + i, 0) << (8 * i) for i in range(8))
            if e & 1 and e & rsvd:
                return False
        return True

    def step(self) -> None:
        rng = self.rng
        r = rng.random()
        vas = self.l2_vas if self.nested else self.vas
        tables = self.l2 if self.nested else self.l1
        if r < 0.6 or not vas:
            addr = rng.choice(vas) if vas and rng.random() < 0.85 else rng.randrange(0, 1 << 48)
            if self.nested and rng.random() < 0.1:
                self.ev("translate", addr=rng.randrange(0, 1 << 31),
                        access=rng.choice(("l2gpa_read", "l2gpa_write")))
            else:
                self.ev("translate", addr=addr, access=rng.choice(ACCESS_WEIGHTS))
        elif r < 0.72:
            pool = [t for t in (tables, self.tdp_tables if self.nested else None) if t is not None]
            if pool:
                t = rng.choice(pool)
                if t.entries:
                    addr = rng.choice(list(t.entries))
                    bits = EPT_BITS if t.fmt == "ept" else GUEST_BITS
                    bit = rng.choice(bits)
                    if t.fmt == "ept" and self.mbec and self.xrng.random() < 0.2:
                        bit = 10
                    if t.esize == 4:
                        bit = bit if bit < 32 else 7
                    t.write_entry(addr, t.entries[addr] ^ (1 << bit))
        elif r < 0.8:
            kind = rng.choice(("cpl", "ac", "pkru"))
            val = {"cpl": rng.choice((0, 3)), "ac": rng.randrange(2),
                   "pkru": rng.randrange(0, 1 << 32) if rng.random() < 0.5 else 0}[kind]
            self.ev(kind, val=val)
        elif r < 0.85 and not self.fmt == "none":
            if self.nested:
                self.ev("cr0", val=self.events_l2_cr0(), passthrough=self.tdp)
            else:
                self.cr0 ^= CR0_WP
                self.ev("cr0", val=self.cr0, passthrough=self.tdp and rng.random() < 0.7)
        elif r < 0.88 and not self.nested and self.fmt != "none":
            flip = rng.choice((CR4_SMEP, CR4_SMAP, CR4_PKE))
            self.cr4 ^= flip
            self.ev("cr4", val=self.cr4)
        elif r < 0.91:
            self.ev("invlpg", addr=rng.choice(vas) if vas else 0)
        elif r < 0.93 and tables is not None:
            self.ev("cr3", val=tables.cr3())
        elif r < 0.94:
            self.ev("reset_context")
        elif r < 0.97 and not self.nested and self.fmt != "none":
            self.enter_l2()
        elif self.nested:
            self.ev("nested_exit")
            self.nested = False
            self.mbec = False
            self.tdp_tables = None

    def events_l2_cr0(self) -> int:
        # The last L2 CR0 written, with WP flipped (the generator tracks it in the entry).
        for ev in reversed(self.events):
            if ev["ev"] == "nested_entry" or (ev["ev"] == "cr0"):
                val = ev["cr0"] if ev["ev"] == "nested_entry" else ev["val"]
                return val ^ CR0_WP
        return PG


def random_episodes(seed: int, count: int,
                    episode: tuple[int, int] = (150, 600)) -> Iterator[list[dict]]:
    """The stream of random_events() as its episodes (exactly `count` events in all)."""
    rng = random.Random(seed)
    produced = 0
    while produced < count:
        events = episode_events(rng, count - produced, episode)
        produced += len(events)
        yield events


def random_events(seed: int, count: int, episode: tuple[int, int] = (150, 600)) -> Iterator[dict]:
    """Exactly `count` events, streamed episode by episode (at most 600 held at once)."""
    for events in random_episodes(seed, count, episode):
        yield from events


def compare_episode(events: list[dict], old, new) -> tuple[int, dict, dict] | None:
    """The first event of one episode on which the two models differ: (index, old result,
    new result), or None.  Past it the states differ, so the episode is not compared on."""
    if events and events[0]["ev"] == "reset":
        from .native.model import answer_blocks

        blocks = answer_blocks(events, [old, new])   # two native engines: one round trip
        if blocks is not None:
            return _first_difference(events, blocks[0], blocks[1], old, new)
    for i, ev in enumerate(events):
        r_old = old.apply(ev)
        if "error" in r_old:
            raise RuntimeError(f"generator produced an inapplicable event: {ev}: {r_old}")
        r_new = new.apply(ev)
        if r_old != r_new:
            return i, r_old, r_new
        if entry_failed(ev, r_old):
            return None
    return None


def _first_difference(events: list[dict], a: bytes, b: bytes, old, new):
    """compare_episode() of two engines' answer blocks (equal lines are equal results:
    one harness prints both; lines are decoded only where they differ)."""
    from .native.model import decode

    found, end = None, len(events)
    if a != b or b'"error"' in a or b'"pdptrs"' in a:
        for i, (x, y) in enumerate(zip(a.split(b"\n"), b.split(b"\n"))):
            if b'"error"' in x and "error" in (r_old := decode(x)):
                raise RuntimeError(f"generator produced an inapplicable event: {events[i]}: "
                                   f"{r_old}")
            if x != y and (r := (decode(x), decode(y)))[0] != r[1]:
                found, end = (i, r[0], r[1]), i + 1
                break
            if b'"pdptrs"' in x and entry_failed(events[i], decode(x)):
                end = i + 1
                break
    n = sum(1 for ev in events[:end] if ev["ev"] == "translate")
    old.translations += n
    new.translations += n
    return found


def episode_events(rng: random.Random, limit: int,
                   episode: tuple[int, int] = (150, 600)) -> list[dict]:
    """The next episode of the stream drawn from `rng` (at most `limit` events).

    random_events() is these episodes back to back; refactor/execute cuts a
    campaign into episode ranges by the rng state at an episode's start.
    """
    ep = _Episode(rng)
    ep.setup_l1()
    length = min(rng.randrange(*episode), limit)
    while len(ep.events) < length and not ep.ended:
        ep.step()
    return ep.events[:length]


@dataclass
class FuzzReport:
    seed: int
    events: int = 0
    translations: int = 0
    divergences: int = 0
    seconds: float = 0.0
    translate_seconds: dict = field(default_factory=dict)
    first: dict | None = None
    shrunk: str | None = None
    shrunk_events: int | None = None

    def summary(self) -> dict:
        tps = {k: (self.translations / v if v else 0.0) for k, v in self.translate_seconds.items()}
        return {"seed": self.seed, "events": self.events, "translations": self.translations,
                "divergences": self.divergences,
                "translations_per_second": round(min(tps.values()) if tps else 0.0),
                "translations_per_second_by_layout": {k: round(v) for k, v in tps.items()},
                "seconds": round(self.seconds, 3), "first_divergence": self.first,
                "shrunk_trace": self.shrunk, "shrunk_events": self.shrunk_events}


def fuzz(seed: int, count: int, make_old, make_new, out_dir: Path | None = None,
         shrink_budget: float = 20.0) -> FuzzReport:
    """Run the random stream through both layouts, episode by episode."""
    report = FuzzReport(seed)
    t0 = time.perf_counter()
    tt = {"old": 0.0, "new": 0.0}
    for episode in random_episodes(seed, count):
        old, new = make_old(), make_new()
        found = compare_episode(episode, old, new)
        if found is not None:
            i, r_old, r_new = found
            report.divergences += 1
            if report.first is None:
                report.first = jsonable({"event": report.events + i + 1, "ev": episode[i],
                                         "old": r_old, "new": r_new})
                trace = shrink(episode[:i + 1], make_old, make_new, shrink_budget)
                out_dir = out_dir or Path.cwd()
                out_dir.mkdir(parents=True, exist_ok=True)
                path = out_dir / f"divergence-seed{seed}.jsonl"
                report.shrunk_events = write_events(path, trace)
                report.shrunk = str(path)
        report.events += len(episode)
        tt["old"] += old.translate_time
        tt["new"] += new.translate_time
        report.translations += old.translations
    report.translate_seconds = tt
    report.seconds = time.perf_counter() - t0
    return report


def diverges(events: list[dict], make_old, make_new) -> bool:
    try:
        rep = run_pair(enumerate(events, 1), make_old(), make_new())
    except TraceError:
        return False        # a cut that makes the trace invalid is not a reproduction
    return rep.divergence is not None


def shrink(events: list[dict], make_old, make_new, budget: float, still=None) -> list[dict]:
    """ddmin over the events after the reset, within a time budget.

    `still(events)`: whether a candidate still shows what is being shrunk (default: any
    divergence of the two models)."""
    if still is None:
        def still(evs):
            return diverges(evs, make_old, make_new)
    deadline = time.perf_counter() + budget
    head, body = events[:1], events[1:]
    n = 2
    while len(body) >= 2 and time.perf_counter() < deadline:
        chunk = max(1, len(body) // n)
        removed = False
        for start in range(0, len(body), chunk):
            cand = body[:start] + body[start + chunk:]
            if still(head + cand):
                body = cand
                n = max(n - 1, 2)
                removed = True
                break
            if time.perf_counter() > deadline:
                break
        if not removed:
            if chunk == 1:
                break
            n = min(n * 2, len(body))
    return head + body
