"""run_streams() batches native engines; its results are those of one event at a time.

The per-event path is today's loop: models without send()/receive() (a Python
model, or here a native engine behind a wrapper that hides them) get every
event through apply().  Both paths run the same streams on the real 6.1 engine
and must give the same tallies, divergences (with their episodes) and
reference errors.
"""
from __future__ import annotations

import re
import threading

import pytest

from emulator.fuzz import random_episodes, random_events
from emulator.native.model import NativeModel
from refactor.verify.check import CORPUS
from refactor.verify.run import PerEvent, Stream, corpus_stream, run_streams

GPA = re.compile(rb'^\{"gpa":(\d+)')


class Perturbed(NativeModel):
    """The real engine, except that a translation to a GPA divisible by 53 answers the
    next GPA: the same change whether the answer comes from apply() or in a block."""

    def apply(self, ev):
        r = super().apply(ev)
        if "gpa" in r and r["gpa"] % 53 == 0:
            r["gpa"] += 1
        return r

    def receive(self, count):
        lines = super().receive(count).split(b"\n")

        def bump(m):
            n = int(m.group(1))
            return b'{"gpa":%d' % (n + 1 if n % 53 == 0 else n)
        return b"\n".join(GPA.sub(bump, x) for x in lines)


def _errors():
    """A fuzz stream with events the reference refuses ({"error": ...}) mid-episode."""
    evs = list(random_events(5, 2500))
    resets = [i for i, e in enumerate(evs) if e["ev"] == "reset"]
    evs.insert(resets[2] + 3, {"ev": "nested_exit"})      # L1 runs there
    evs.insert(resets[1] + 1, {"ev": "nested_exit"})
    # Episode 34 of seed 1 has a nested entry whose PDPTEs cannot be loaded (the reference
    # answers "pdptrs": false and comparing stops for the episode).
    return evs + list(random_episodes(1, 12592))[34]


def _streams():
    return [corpus_stream(sorted(CORPUS.glob("*.jsonl"))),
            Stream("fuzz", ((f"fuzz {i}", e) for i, e in enumerate(random_events(1, 2500), 1))),
            Stream("errors", ((f"errors {i}", e) for i, e in enumerate(_errors(), 1)))]


def _run(ref, cands):
    seen, ticks = [], []
    total, tallies, ref_bugs = run_streams(
        _streams(), ref, cands, keep=4, progress=ticks.append,
        on_found=lambda name, f: seen.append((name, f.source, f.event)))
    found = {name: [(f.source, f.event, f.ev, f.base, f.result, f.episode) for f in t.found]
             for name, t in tallies.items()}
    counts = {name: (t.events, t.divergences, t.bugs) for name, t in tallies.items()}
    translations = {name: m.translations for name, m in cands.items()}
    return total, counts, found, ref_bugs, seen, ticks, translations


def test_batched_run_streams_equals_one_event_at_a_time(engine_61):
    def cands(wrap):
        return {"same": wrap(engine_61.model()), "perturbed": wrap(Perturbed(engine_61)),
                "python": PythonModel()}

    batched = _run(engine_61.model(), cands(lambda m: m))
    per_event = _run(PerEvent(engine_61.model()), cands(PerEvent))
    assert batched == per_event
    total, counts, found, ref_bugs, seen, ticks, translations = batched
    # The streams have what the paths must agree on: divergences of a batched candidate,
    # of the Python model, and errors of the reference mid-episode.
    assert counts["same"][1] == 0 and counts["perturbed"][1] > 0 and counts["python"][1] > 0
    assert len(found["perturbed"]) == 4 and found["perturbed"][0][4]["gpa"] % 53 == 1
    resets = [i for i, e in enumerate(random_events(5, 2500)) if e["ev"] == "reset"]
    assert [b["where"] for b in ref_bugs] == [f"errors {resets[1] + 2}", f"errors {resets[2] + 5}"]
    assert all("error" in b["result"] for b in ref_bugs)
    assert ticks == list(range(1000, total + 1, 1000))
    assert translations["same"] > 0
    model = engine_61.model()
    assert any(b'"pdptrs":false' in x for x in model.apply_many(_errors()[-392:], raw=True))
    model.close()


def test_candidates_that_answer_as_a_failing_reference_count_as_one_event_at_a_time(engine_61):
    """Chunks where the reference errs or fails a PDPTE load, and every candidate answered
    line for line as it did: counted from the reference's few stopping lines (_ref_scan),
    the same events, translations, reference bugs and progress as the per-event loop."""
    def cands(wrap):
        return {"a": wrap(engine_61.model()), "b": wrap(engine_61.model())}

    batched = _run(engine_61.model(), cands(lambda m: m))
    per_event = _run(PerEvent(engine_61.model()), cands(PerEvent))
    assert batched == per_event
    total, counts, _found, ref_bugs, _seen, _ticks, translations = batched
    assert len(ref_bugs) == 2 and counts["a"][1:] == (0, 0)
    # The stops leave events and translations uncompared: fewer than the stream has.
    assert counts["a"][0] == total - 2
    assert 0 < translations["a"] < sum(e["ev"] == "translate" for s in _streams()
                                       for _w, e in s.events)


def test_a_python_reference_with_batched_candidates_equals_one_event_at_a_time(engine_61):
    """verify --model: the Python model is the reference, native engines the candidates."""
    def cands(wrap):
        return {"native": wrap(engine_61.model()), "perturbed": wrap(Perturbed(engine_61))}

    batched = _run(PythonModel(), cands(lambda m: m))
    assert batched == _run(PythonModel(), cands(PerEvent))
    counts = batched[1]
    assert counts["perturbed"][1] > counts["native"][1] > 0


class PythonModel:
    """The Python model (old layout), a fresh one at each reset."""

    def __init__(self):
        from refactor.rules import load_rules

        self.rules, self.m, self.translations = load_rules(), None, 0

    def apply(self, ev):
        from emulator.machine import old_model

        if ev["ev"] == "reset":
            self.m = old_model(self.rules)
        self.translations += ev["ev"] == "translate"
        return self.m.apply(ev)


class Echo:
    """A batched model without an engine: answers {"gpa": addr} to translations; its
    first batch hangs until the watchdog kills it."""

    def __init__(self, hang_first=False):
        self.translations, self.hang = 0, hang_first
        self.killed = threading.Event()
        self.sent: list[bytes] = []

    @staticmethod
    def answer(ev):
        return {"gpa": ev["addr"]} if ev["ev"] == "translate" else {"ok": True}

    def apply(self, ev):
        self.translations += ev["ev"] == "translate"
        return self.answer(ev)

    def send(self, data):
        self.sent.append(data)

    def receive(self, count):
        if self.hang:
            self.hang = False
            if self.killed.wait(10):
                raise RuntimeError("native engine exited (-9): no message")
        raise RuntimeError("no block: answer one event at a time")

    def kill(self):
        self.killed.set()


def test_a_hanging_batch_is_run_again_one_event_at_a_time(monkeypatch):
    from refactor.verify import run

    monkeypatch.setattr(run, "HANG_SECONDS", 0.2)
    events = list(random_events(3, 700))
    cand = Echo(hang_first=True)
    total, tallies, ref_bugs = run_streams([Stream("s", ((str(i), e) for i, e in
                                                         enumerate(events)))],
                                           Echo(), {"c": cand})
    assert cand.killed.is_set() and total == 700 and not ref_bugs
    assert tallies["c"].events == 700 and tallies["c"].divergences == 0
    assert cand.translations == sum(e["ev"] == "translate" for e in events)


def test_compare_episode_of_two_engines_equals_one_event_at_a_time(engine_61):
    """emulate fuzz --engine native: an episode in one batch, the same first difference."""
    from emulator.fuzz import compare_episode

    def run(wrap):
        out = []
        for ep in random_episodes(2, 3000):
            old, new = wrap(engine_61.model()), wrap(Perturbed(engine_61))
            out.append((compare_episode(ep, old, new), old.translations, new.translations))
            old.close()
            new.close()
        return out

    batched, per_event = run(lambda m: m), run(PerEvent)
    assert batched == per_event
    assert any(found is not None for found, _, _ in batched)
    assert any(found is None for found, _, _ in batched)


FAKE_ENGINE = r'''#!PYTHON
"""A stand-in engine speaking the protocol: {"gpa": addr} for translations, exit 3 at
the address DIE (a crash of the kernel's code that the harness could not turn into a
result)."""
import os, struct, sys
DIE = int(sys.argv[0].rsplit("-", 1)[1], 16)
data = b""
while True:
    more = os.read(0, 1 << 16)
    if not more:
        break
    data += more
    out = []
    while len(data) >= 8:
        head, = struct.unpack_from("<Q", data)
        nargs, op = (head >> 8) & 0xFF, head & 0xFF
        if len(data) < 8 * (nargs + 1):
            break
        args = struct.unpack_from(f"<{nargs}Q", data, 8)
        data = data[8 * (nargs + 1):]
        if op == 0:
            sys.exit(0)
        if op == 2 and args[1] == DIE:
            os.write(1, b"".join(out))
            sys.stderr.write("Segmentation fault in the stand-in\n")
            sys.exit(3)
        out.append(b'{"gpa":%d}\n' % args[1] if op == 2 else b'{"ok":true}\n')
    os.write(1, b"".join(out))
'''


def test_an_engine_that_dies_in_a_batch_gives_the_per_event_results(tmp_path):
    """A candidate engine that exits mid-chunk: the chunk is replayed one event at a time,
    the death is a bug result at its event and the engine is revived, as before."""
    import sys

    from emulator.native.model import NativeBuild

    def build(die):
        path = tmp_path / f"engine-{die:x}"
        path.write_text(FAKE_ENGINE.replace("PYTHON", sys.executable))
        path.chmod(0o755)
        return NativeBuild(tmp_path, "fake", path, None)

    events = [{"ev": "reset"}] + [{"ev": "translate", "access": "read", "addr": a * 4096}
                                  for a in range(1, 40)]
    events += [{"ev": "reset"}, {"ev": "write", "addr": 8, "val": 1},
               {"ev": "translate", "access": "read", "addr": 0xdead000}]
    events += [{"ev": "translate", "access": "read", "addr": a} for a in range(5)]
    events += [{"ev": "reset"}, {"ev": "translate", "access": "read", "addr": 7}]

    def run(wrap):
        good, dying = build(0xffff), build(0xdead000)
        stream = Stream("s", ((f"s:{i}", e) for i, e in enumerate(events, 1)))
        cands = {"dying": wrap(dying.model())}
        total, tallies, bugs = run_streams([stream], wrap(good.model()), cands)
        t = tallies["dying"]
        return (total, t.events, t.divergences, t.bugs, bugs,
                [(f.source, f.result) for f in t.found], type(cands["dying"]).__name__)

    batched = run(lambda m: m)
    assert batched[:6] == run(PerEvent)[:6]
    assert batched[3] == 1 and batched[5][0][0] == "s:43"
    assert batched[5][0][1]["bug"].startswith("engine died: native engine for")
    assert batched[6] == "NativeModel"        # revived


class _Fake:
    """A stand-in engine: a fixed answer per translated address; ADDR 0x5000 answers
    `late` only after 0x1000 was translated (a divergence that needs its episode)."""

    translations, translate_time = 0, 0.0

    def __init__(self, answers: dict[int, dict], late: dict):
        self.answers, self.late, self.primed = answers, late, False

    def apply(self, ev: dict) -> dict:
        addr = ev.get("addr")
        self.primed |= addr == 0x1000
        if addr == 0x5000 and self.primed:
            return self.late
        return self.answers.get(addr, {"ok": True})


def test_a_shrunk_divergence_is_one_the_pristine_engine_survives(tmp_path):
    """The shrinker must not keep a cut whose first difference comes where the pristine
    engine itself fails (verify stops comparing there): it used to write such a trace
    (the WARN at 0x2000, one line apart), which reproduced nothing of the divergence."""
    from emulator.trace import read_events
    from refactor.verify.run import Found, shrink_found

    warn = {0x2000: {"bug": "paging_tmpl.h:374: WARN"}}
    moved = {0x2000: {"bug": "paging_tmpl.h:375: WARN"}}
    episode = [{"ev": "reset"}] + [{"ev": "translate", "addr": a, "access": "read"}
                                   for a in (0x1000, 0x2000, 0x3000, 0x5000)]
    found = Found("test", 5, episode[-1], {"gpa": 1}, {"gpa": 2}, episode)
    out, n = shrink_found(found, lambda: _Fake(warn, {"gpa": 1}),
                          lambda: _Fake(moved, {"gpa": 2}), tmp_path / "cut.jsonl", budget=5.0)
    assert [ev.get("addr") for _, ev in read_events(out)] == [None, 0x1000, 0x5000]
    assert n == 3


class _AfterFailedEntry:
    """A model whose nested entry fails its PDPTE load; past it, `skew` shifts every GPA
    (what two layouts with different stale PDPTEs may legitimately answer)."""

    def __init__(self, skew):
        self.skew, self.translations, self.translate_time = skew, 0, 0.0

    def apply(self, ev):
        if ev["ev"] == "nested_entry":
            return {"ok": True, "pdptrs": False}
        if ev["ev"] == "translate":
            self.translations += 1
            return {"gpa": ev["addr"] + self.skew}
        return {"ok": True}


def test_emulate_compares_no_further_than_a_failed_vm_entry_as_verify():
    """emulate run/fuzz stop comparing an episode at a VM-entry KVM fails, as verify does
    (the same rule, emulator.trace.entry_failed): what differs after it is no divergence;
    what differs before it still is.  Before, emulate counted such differences."""
    from emulator.fuzz import _first_difference, compare_episode
    from emulator.trace import run_pair

    entry = {"ev": "nested_entry", "cr0": 0, "cr3": 0, "cr4": 0, "efer": 0}
    after = [{"ev": "reset"}, entry, {"ev": "translate", "access": "read", "addr": 4096}]
    assert compare_episode(after, _AfterFailedEntry(0), _AfterFailedEntry(1)) is None
    assert run_pair(enumerate(after, 1), _AfterFailedEntry(0), _AfterFailedEntry(1)).divergence is None
    # The next episode is compared again.
    again = after + [{"ev": "reset"}, {"ev": "translate", "access": "read", "addr": 8}]
    assert run_pair(enumerate(again, 1), _AfterFailedEntry(0), _AfterFailedEntry(1)).divergence.event == 5
    before = [after[0], after[2], entry]
    assert compare_episode(before, _AfterFailedEntry(0), _AfterFailedEntry(1))[0] == 1
    # Two engines' answer blocks: the same rule on the lines.
    ref = b'{"ok":true}\n{"ok":true,"pdptrs":false}\n{"gpa":4096}\n'
    cand = b'{"ok":true}\n{"ok":true,"pdptrs":false}\n{"gpa":4097}\n'
    a, b = _AfterFailedEntry(0), _AfterFailedEntry(1)
    assert _first_difference(after, ref, cand, a, b) is None and a.translations == 0
