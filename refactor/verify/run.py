"""Run one event stream through the pristine engine and every candidate at once.

Events are generated (or read) once: each goes to the reference model and
then to every candidate whose state still matches it.  A candidate that
diverges is skipped until the next `reset` (its state differs from there
on), exactly as emulator/fuzz.py does for the two Python layouts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from emulator.fuzz import random_events, shrink
from emulator.trace import jsonable, read_events, write_events


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
    import threading

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
    (all are counted, and all passed to `on_found`).
    """
    tallies = {name: Tally() for name in cands}
    ref_bugs: list[dict] = []
    total = 0
    for stream in streams:
        episode: list[dict] = []
        skipping = {name: False for name in cands}
        for where, ev in stream.events:
            total += 1
            if ev["ev"] == "reset":
                episode = []
                skipping = dict.fromkeys(cands, False)
            episode.append(ev)
            try:
                r_ref = ref.apply(ev)
            except RuntimeError as exc:
                raise RefBug(f"the pristine engine died at {where}: {exc}") from None
            if "bug" in r_ref or "error" in r_ref:
                # The reference cannot go on in this episode: note it, skip everyone.  A stub
                # hit (a path the engine does not provide) makes the run incomplete: the
                # caller reports it as bad input rather than as a pass.
                if len(ref_bugs) < 20 or (r_ref.get("stub") and
                                          not any(b["result"].get("stub") for b in ref_bugs)):
                    ref_bugs.append({"where": where, "ev": jsonable(ev), "result": jsonable(r_ref)})
                for name in cands:
                    skipping[name] = True
                continue
            for name, model in cands.items():
                t = tallies[name]
                t.events += 1
                if skipping[name]:
                    continue
                t0 = time.perf_counter()
                try:
                    r = _apply_watched(model, ev)
                except RuntimeError as exc:   # the engine process died: a crash is a result
                    r = {"bug": f"engine died: {str(exc).splitlines()[0] if str(exc) else exc}"}
                if "bug" in r and r["bug"].startswith(("hang:", "engine died:")):
                    revive = getattr(model, "build", None)
                    if revive is not None:
                        cands[name] = revive.model()
                t.seconds += time.perf_counter() - t0
                if r != r_ref:
                    skipping[name] = True
                    f = Found(where, total, ev, r_ref, r, list(episode))
                    t.divergences += 1
                    t.bugs += f.bug
                    if len(t.found) < keep:
                        t.found.append(f)
                    if on_found is not None:
                        on_found(name, f)
            if ev["ev"] == "nested_entry" and r_ref.get("pdptrs") is False:
                # KVM fails this VM-entry (L2's PDPTEs cannot be loaded); the trace format
                # lets L2 run on from a state the kernel never continues from, where the
                # layouts legitimately keep different stale PDPTEs: stop comparing here.
                for name in cands:
                    skipping[name] = True
            if progress is not None and total % 1000 == 0:
                progress(total)
    return total, tallies, ref_bugs


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
    still = None
    if kind is not None:
        want = kind(found.ev, found.base, found.result)

        def still(events):
            ref, cand = make_ref(), _Watched(make_cand())
            for ev in events:
                a = ref.apply(ev)
                if "error" in a:
                    return False
                b = cand.apply(ev)
                if a != b:
                    return kind(ev, a, b) == want
            return False
    trace = shrink(found.episode, make_ref, lambda: _Watched(make_cand()), budget, still)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out, write_events(out, trace)
