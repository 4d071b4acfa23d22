"""Run one event stream through the pristine engine and every candidate at once.

Events are generated (or read) once: each goes to the reference model and
then to every candidate whose state still matches it.  A candidate that
diverges is skipped until the next `reset` (its state differs from there
on), exactly as emulator/fuzz.py does for the two Python layouts.  Native
engines get the events in chunks of whole episodes and answer in blocks,
compared byte for byte (`_Run`); the results are those of one event at a
time.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from emulator.fuzz import random_events, shrink
from emulator.native.model import decode, pack
from emulator.trace import TraceError, entry_failed, jsonable, read_events, write_events


@dataclass
class Found:
    """One diverging event of one candidate."""

    source: str            # "corpus/NAME.jsonl:LINE" or "fuzz seed S event N"
    event: int             # 1-based number of the event in the whole run
    ev: dict
    base: dict
    result: dict
    episode: list[dict]    # the events of its episode up to and including it

    @property
    def bug(self) -> bool:
        return "bug" in self.result or "error" in self.result


@dataclass
class Tally:
    events: int = 0
    divergences: int = 0
    bugs: int = 0
    found: list[Found] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Stream:
    label: str
    events: Iterable[tuple[str, dict]]      # (where, event)


def corpus_stream(files: list[Path]) -> Stream:
    def gen():
        for path in files:
            for lineno, ev in read_events(path):
                yield f"{path.parent.name}/{path.name}:{lineno}", ev
    return Stream("corpus", gen())


def fuzz_stream(seed: int, count: int) -> Stream:
    def gen():
        for n, ev in enumerate(random_events(seed, count), 1):
            yield f"fuzz seed {seed} event {n}", ev
    return Stream(f"fuzz seed {seed}", gen())


HANG_SECONDS = 20.0   # one event of a walk takes microseconds; this long is a hang


def _apply_watched(model, ev: dict, timeout: float = HANG_SECONDS) -> dict:
    """model.apply(ev), but an event that never returns (a loop in rewritten C) is a bug:
    the engine is closed from a timer, which makes apply() fail."""

    hung = threading.Event()

    def stop():
        hung.set()
        closer = getattr(model, "close", None)
        if closer is not None:
            closer()
    timer = threading.Timer(timeout, stop)
    timer.daemon = True
    timer.start()
    try:
        return model.apply(ev)
    except Exception:   # EngineError, or ValueError from a pipe closed under readline()
        if hung.is_set():
            return {"bug": f"hang: no result within {timeout:.0f} s (the host would hang)"}
        raise
    finally:
        timer.cancel()


class RefBug(RuntimeError):
    """The pristine engine itself failed on an event: an engine or harness defect."""


def run_streams(streams: list[Stream], ref, cands: dict[str, object], keep: int = 8,
                progress: Callable[[int], None] | None = None,
                on_found: Callable[[str, Found], None] | None = None,
                ) -> tuple[int, dict[str, Tally], list]:
    """Feed every stream to `ref` and each candidate; (events, tallies, reference bugs).

    `keep`: how many divergences per candidate are kept with their episode
    (all are counted, and all passed to `on_found`).  Native engines get the
    events in chunks of whole episodes (`_Run`); the results are those of one
    event at a time.
    """
    run = _Run(ref, cands, keep, progress, on_found)
    for stream in streams:
        run.stream(stream.events)
    return run.total, run.tallies, run.ref_bugs


CHUNK_EVENTS = 4096   # events per batch (whole episodes): a few ms of engine time


def _batched(model) -> bool:
    return callable(getattr(model, "send", None)) and callable(getattr(model, "receive", None))


# What may stop a comparison in a reference answer (decoded to be sure).
_STOP = re.compile(rb'"(?:bug|error|pdptrs)"')


def _is_fail(raw: bytes) -> bool:
    """Whether an answer line may be a bug or error result (decoded to be sure)."""
    return b'"bug"' in raw or b'"error"' in raw


class _Run:
    """run_streams()' state: the loop of one event at a time, fed by chunks.

    A chunk is whole episodes (it starts at a `reset`).  It is packed once and
    sent to the reference and to every native candidate at once; where a
    candidate's block of answer lines is byte-identical to the reference's and
    the reference has no bug, error or failed PDPTE load in it, the chunk is
    counted in one step (the same harness prints both, so equal results are
    equal lines).  Otherwise the chunk goes through `_rows`, today's loop over
    its events, taking each engine's answer from its block (decoded only where
    the lines differ) or, for a Python model and an engine whose batch failed
    (it died or hung: its process is restarted), from apply().  A candidate is
    sent the events of its episode past a divergence too, which one event at a
    time never sends it: a `reset` makes a fresh vCPU, guest memory and
    allocator in the engine (harness.c), so only process-wide state such an
    event changed (kernel globals, the nested vendor patched in) could reach the
    next episode, as the reference's does one event at a time
    (docs/native-engine.md, Protocol).
    """

    def __init__(self, ref, cands: dict, keep: int, progress, on_found):
        self.ref, self.cands, self.keep = ref, cands, keep
        self.progress, self.on_found = progress, on_found
        self.tallies = {name: Tally() for name in cands}
        self.ref_bugs: list[dict] = []
        self.total = 0

    def stream(self, events: Iterable[tuple[str, dict]]) -> None:
        chunk: list[tuple[str, dict]] = []
        try:
            for item in events:
                if item[1]["ev"] == "reset" and len(chunk) >= CHUNK_EVENTS:
                    ready, chunk = chunk, []
                    self.chunk(ready)
                chunk.append(item)
        except Exception:
            # A bad trace line: the events before it count, as they did one at a time.
            if chunk:
                self.chunk(chunk)
            raise
        if chunk:
            self.chunk(chunk)

    def chunk(self, items: list[tuple[str, dict]]) -> None:
        base = self.total
        batch = None
        if items[0][1]["ev"] == "reset" and (
                _batched(self.ref) or any(_batched(m) for m in self.cands.values())):
            batch = self._batch(items)
        if batch is None:
            fails, _ = self._rows(items, base, None, {}, list(self.cands))
        else:
            ref_block, ref_clean, lines, clean, same, translations = batch
            todo = [name for name in self.cands if name not in clean and name not in same]
            fails = set()
            if todo or not ref_clean:
                if todo or ref_block is None:
                    ref_lines = ref_block.split(b"\n")[:-1] if ref_block is not None else None
                    fails, compared = self._rows(items, base, ref_lines, lines, todo)
                else:
                    fails, compared = self._ref_scan(items, base, ref_block, translations)
                # A candidate that answered as the reference did, line for line, cannot
                # diverge: it gets what the loop would have counted for it, without the loop.
                for name in same:
                    self.tallies[name].events += len(items) - len(fails)
                    self.cands[name].translations += compared
        self.total = base + len(items)
        if self.progress is not None:
            for total in range(base - base % 1000 + 1000, self.total + 1, 1000):
                if total not in fails:   # the loop never reached progress at a reference bug
                    self.progress(total)

    def _batch(self, items: list[tuple[str, dict]]):
        """Run the chunk on the reference and every native candidate at once: (reference
        block or None if it failed, whether it needs no look, {candidate: lines} to look
        at, candidates done, candidates whose block is the reference's where the
        reference's needs a look), or None when the chunk cannot be packed."""
        try:
            data, n, translations = pack([ev for _, ev in items])
        except Exception:     # noqa: BLE001 -- one event at a time raises it where it is
            return None
        nat = [name for name, m in self.cands.items() if _batched(m)]
        by_ref = _batched(self.ref)     # else a Python model: one event at a time
        if by_ref:
            self.ref.send(data)
        for name in nat:
            self.cands[name].send(data)
        # The hang timer of apply(), for a chunk: what it kills runs again one event at a
        # time, where the event that hangs is found (the reference is not watched).
        pending, lock = set(nat), threading.Lock()

        def watchdog():
            with lock:
                for name in pending:
                    self.cands[name].kill()
        timer = threading.Timer(HANG_SECONDS, watchdog)
        timer.daemon = True
        timer.start()
        blocks: dict[str, bytes | None] = {}
        try:
            ref_block = None
            if by_ref:
                try:
                    ref_block = self.ref.receive(n)
                    self.ref.translations += translations
                except RuntimeError:     # died: run again one event at a time, to say where
                    ref_block = None
            for name in nat:
                t0 = time.perf_counter()
                try:
                    blocks[name] = self.cands[name].receive(n)
                except RuntimeError:
                    blocks[name] = None
                with lock:
                    pending.discard(name)
                self.tallies[name].seconds += time.perf_counter() - t0
        finally:
            timer.cancel()
        ref_clean = ref_block is not None and not _is_fail(ref_block) \
            and b'"pdptrs"' not in ref_block
        lines, clean, same = {}, set(), set()
        for name, block in blocks.items():
            if block is None:
                continue
            if ref_clean and block == ref_block:
                clean.add(name)
                self.tallies[name].events += n
                self.cands[name].translations += translations
            elif block == ref_block:
                same.add(name)
            else:
                lines[name] = block.split(b"\n")[:-1]
        return ref_block, ref_clean, lines, clean, same, translations

    def _rows(self, items: list[tuple[str, dict]], base: int, ref_lines: list[bytes] | None,
              lines: dict[str, list[bytes]], names: list[str]) -> set[int]:
        """One event at a time for candidates NAMES; answers from LINES where given, from
        apply() otherwise.  (the events numbers where the reference failed, the translations
        compared: those the reference's own bugs and failed PDPTE loads leave)."""
        ref = self.ref
        fails: set[int] = set()
        compared = 0
        ref_stop = False     # the reference stopped the comparison in this episode
        episode: list[dict] = []
        skipping = dict.fromkeys(names, False)
        for i, (where, ev) in enumerate(items):
            total = base + i + 1
            kind = ev["ev"]
            if kind == "reset":
                episode = []
                skipping = dict.fromkeys(names, False)
                ref_stop = False
            episode.append(ev)
            raw_ref = None
            if ref_lines is None:
                try:
                    r_ref = ref.apply(ev)
                except RuntimeError as exc:
                    raise RefBug(f"the pristine engine died at {where}: {exc}") from None
            else:
                raw_ref = ref_lines[i]
                r_ref = decode(raw_ref) if _is_fail(raw_ref) or (
                    kind == "nested_entry" and b'"pdptrs"' in raw_ref) else None
            if r_ref is not None and ("bug" in r_ref or "error" in r_ref):
                # The reference cannot go on in this episode: note it, skip everyone.  A stub
                # hit (a path the engine does not provide) makes the run incomplete: the
                # caller reports it as bad input rather than as a pass.
                fails.add(total)
                self._ref_bug(where, ev, r_ref)
                for name in names:
                    skipping[name] = True
                ref_stop = True
                continue
            compared += kind == "translate" and not ref_stop
            for name in names:
                self.tallies[name].events += 1
                if skipping[name]:
                    continue
                cand = lines.get(name)
                if cand is not None:
                    if kind == "translate":
                        self.cands[name].translations += 1
                    if cand[i] == raw_ref:
                        continue
                    r = decode(cand[i])
                else:
                    r = self._apply(name, ev)
                if r_ref is None:
                    r_ref = decode(raw_ref)
                if r != r_ref:
                    skipping[name] = True
                    self._found(name, Found(where, total, ev, r_ref, r, list(episode)))
            if r_ref is not None and entry_failed(ev, r_ref):
                # KVM fails this VM-entry (L2's PDPTEs cannot be loaded); the trace format
                # lets L2 run on from a state the kernel never continues from, where the
                # layouts legitimately keep different stale PDPTEs: stop comparing here.
                for name in names:
                    skipping[name] = True
                ref_stop = True
        return fails, compared

    def _ref_bug(self, where: str, ev: dict, r_ref: dict) -> None:
        bugs = self.ref_bugs
        if len(bugs) < 20 or (r_ref.get("stub") and
                              not any(b["result"].get("stub") for b in bugs)):
            bugs.append({"where": where, "ev": jsonable(ev), "result": jsonable(r_ref)})

    def _ref_scan(self, items: list[tuple[str, dict]], base: int, ref_block: bytes,
                  translations: int) -> tuple[set[int], int]:
        """What `_rows` returns when no candidate needs a look (each answered as the
        reference did), from the reference's few lines that stop a comparison: its bugs
        and errors, and failed PDPTE loads (found in the block, not line by line)."""
        hits: list[tuple[int, bytes]] = []
        line, counted = 0, 0
        for m in _STOP.finditer(ref_block):
            start = ref_block.rfind(b"\n", 0, m.start()) + 1
            line += ref_block.count(b"\n", counted, start)
            counted = start
            if not hits or hits[-1][0] != line:
                hits.append((line, ref_block[start:ref_block.index(b"\n", start)]))
        fails: set[int] = set()
        stopped_to = -1          # events before this index are past a stop of their episode
        skipped = 0              # translations the stops leave uncompared
        for i, raw in hits:
            where, ev = items[i]
            r_ref = decode(raw)
            if "bug" in r_ref or "error" in r_ref:
                fails.add(base + i + 1)
                self._ref_bug(where, ev, r_ref)
                start = i
            elif entry_failed(ev, r_ref):
                start = i + 1
            else:
                continue
            start = max(start, stopped_to)
            end = next((k for k in range(i + 1, len(items)) if items[k][1]["ev"] == "reset"),
                       len(items))
            skipped += sum(1 for k in range(start, end) if items[k][1]["ev"] == "translate")
            stopped_to = max(stopped_to, end)
        return fails, translations - skipped

    def _apply(self, name: str, ev: dict) -> dict:
        """One event on one candidate, as ever: a hang or a death is a bug result, and the
        engine is revived."""
        model = self.cands[name]
        t0 = time.perf_counter()
        try:
            r = _apply_watched(model, ev)
        except RuntimeError as exc:   # the engine process died: a crash is a result
            r = {"bug": f"engine died: {str(exc).splitlines()[0] if str(exc) else exc}"}
        if "bug" in r and r["bug"].startswith(("hang:", "engine died:")):
            revive = getattr(model, "build", None)
            if revive is not None:
                self.cands[name] = revive.model()
        self.tallies[name].seconds += time.perf_counter() - t0
        return r

    def _found(self, name: str, f: Found) -> None:
        t = self.tallies[name]
        t.divergences += 1
        t.bugs += f.bug
        if len(t.found) < self.keep:
            t.found.append(f)
        if self.on_found is not None:
            self.on_found(name, f)


class PerEvent:
    """A model seen through apply() only: run_streams gives it one event at a time.  The
    per-event loop is the reference the batched one must equal (tests) and the peer it is
    measured against (bench/native_bench.py)."""

    def __init__(self, model):
        self.model = model

    def apply(self, ev):
        return self.model.apply(ev)

    @property
    def translations(self):
        return self.model.translations

    @property
    def build(self):       # what run_streams revives a dead or hung engine from
        return getattr(self.model, "build", None)

    def close(self):
        self.model.close()


class _Watched:
    """A candidate model whose events run under the hang timer (for the shrinker)."""

    def __init__(self, model):
        self.model = model

    def apply(self, ev: dict) -> dict:
        return _apply_watched(self.model, ev)

    def __getattr__(self, name):
        return getattr(self.model, name)


def shrink_found(found: Found, make_ref, make_cand, out: Path, budget: float = 30.0,
                 kind=None) -> tuple[Path, int]:
    """ddmin the episode of a divergence (emulator/fuzz.py's shrinker) and write it.

    `kind(ev, ref_result, cand_result)`: when given, a cut is kept only if the first
    difference it shows is of the same kind as the original's (not just any difference)."""
    want = kind(found.ev, found.base, found.result) if kind is not None else None

    def still(events):
        # A cut reproduces only what run_streams would report: a difference while the
        # pristine engine is well (its bug or error stops the comparison of the episode,
        # so a cut where it fails first, say a WARN one line off, shows nothing).
        ref, cand = make_ref(), _Watched(make_cand())
        try:
            for ev in events:
                a = ref.apply(ev)
                if "error" in a or "bug" in a:
                    return False
                b = cand.apply(ev)
                if a != b:
                    return kind is None or kind(ev, a, b) == want
                if entry_failed(ev, a):
                    return False
        except TraceError:      # a cut that makes the trace invalid is not a reproduction
            return False
        return False
    trace = shrink(found.episode, make_ref, lambda: _Watched(make_cand()), budget, still)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out, write_events(out, trace)
