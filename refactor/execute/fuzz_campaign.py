"""`emulate fuzz` as units: episode ranges of the seeded stream.

The stream (emulator.fuzz.random_events) draws every episode from one
`random.Random(seed)`, so a unit is "the rng state at the start of episode i,
run n episodes, the first event is number k": the planner walks the stream's
episodes to cut units (the serial part, about a tenth of a Python-model run),
each worker draws the same episodes again from that state and runs them.
Episodes are independent (each starts with a reset, and a divergence skips to
the next reset), so per-unit counts add up, the first divergence is the one of
the earliest unit that has one, and the shrinker runs once, here, on exactly
the episode a single-process run would shrink: the summary is the same JSON
but for the timing figures.
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Callable

from emulator.fuzz import FuzzReport, compare_episode, episode_events, shrink
from emulator.trace import jsonable, write_events

from . import Unit, current_context, run_units

TASK = "refactor.execute.fuzz_campaign:fuzz_unit"
UNIT_EVENTS = 25_000      # about a second of the Python model: startup is amortised


def plan(seed: int, count: int, models: dict, unit_events: int = UNIT_EVENTS, ids=None):
    """Units covering the first `count` events of seed's stream, whole episodes each."""
    ctx = current_context()
    rng = random.Random(seed)
    done = 0
    while done < count:
        state, start, episodes = rng.getstate(), done, 0
        while done < count and done - start < unit_events:
            done += len(episode_events(rng, count - done))
            episodes += 1
        uid = f"fuzz-seed{seed}-event{start + 1}"
        if ids is not None:
            ids.append(uid)
        yield Unit(uid, TASK, {"state": state, "first": start, "episodes": episodes,
                               "limit": count - start, "models": models}, ctx)


_FACTORIES: dict[str, tuple[Callable, Callable]] = {}


def factories(models: dict) -> tuple[Callable, Callable]:
    """(make_old, make_new) for a models spec, built once per worker process.

    {"engine": "python" | "native", "names": spec, "mutant": name | None,
    "trees": [path, ...]}: what `emulate fuzz` compares, as its options say.
    """
    key = repr(sorted(models.items()))
    if key not in _FACTORIES:
        from emulator.machine import new_model, old_model
        from refactor.rules import load_rules

        rules = load_rules()
        names = rules.names(models.get("names") or "upstream")
        if models.get("engine") == "native":
            import fcntl

            from emulator.native.build import cache_root
            from emulator.native.engines import build_all, factory

            # Workers of one machine share the engine cache and its output directories:
            # one builds (or finds the build) at a time.
            lock = cache_root() / "execute-build.lock"
            lock.parent.mkdir(parents=True, exist_ok=True)
            with lock.open("w") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                builds = build_all(tuple(Path(t) for t in models["trees"]))
            pair = ((lambda: old_model(rules)), factory(builds[0])) if len(builds) == 1 \
                else (factory(builds[0]), factory(builds[1]))
        else:
            new_rules, module = rules, None
            if models.get("mutant"):
                from emulator.mutants import find, mutant_model

                new_rules, module = mutant_model(find(models["mutant"]), rules, names)
            pair = ((lambda: old_model(rules)), (lambda: new_model(new_rules, names, module)))
        _FACTORIES[key] = pair
    return _FACTORIES[key]


def fuzz_unit(state, first: int, episodes: int, limit: int, models: dict) -> dict:
    """Run `episodes` episodes from rng `state`; counts, layout times, first divergence."""
    make_old, make_new = factories(models)
    rng = random.Random()
    rng.setstate(state)
    out = {"events": 0, "translations": 0, "divergences": 0, "old_seconds": 0.0,
           "new_seconds": 0.0, "first": None, "episode": None}
    for _ in range(episodes):
        events = episode_events(rng, limit - out["events"])
        old, new = make_old(), make_new()
        found = compare_episode(events, old, new)
        if found is not None:
            i, r_old, r_new = found
            out["divergences"] += 1
            if out["first"] is None:
                out["first"] = jsonable({"event": first + out["events"] + i + 1, "ev": events[i],
                                         "old": r_old, "new": r_new})
                out["episode"] = events[:i + 1]
        out["events"] += len(events)
        out["old_seconds"] += old.translate_time
        out["new_seconds"] += new.translate_time
        out["translations"] += old.translations
    return out


def run_fuzz(seed: int, count: int, models: dict, make_old, make_new,
             out_dir: Path | None = None, *, jobs: int | None = None, cluster: str | None = None,
             unit_events: int = UNIT_EVENTS, shrink_budget: float = 20.0,
             progress: Callable[..., None] | None = None) -> FuzzReport:
    """emulator.fuzz.fuzz() cut into units: the same report, on any backend.

    `make_old`/`make_new` serve the shrinker here; workers build theirs from
    `models` (see factories()).
    """
    t0 = time.perf_counter()
    ids: list[str] = []
    step = progress or (lambda label=None, n=1: None)
    results = run_units(plan(seed, count, models, unit_events, ids), jobs=jobs, cluster=cluster,
                        on_result=lambda uid, r: step(None, r["events"]))
    report = FuzzReport(seed)
    tt = {"old": 0.0, "new": 0.0}
    episode = None
    for uid in ids:
        r = results[uid]
        report.events += r["events"]
        report.translations += r["translations"]
        report.divergences += r["divergences"]
        tt["old"] += r["old_seconds"]
        tt["new"] += r["new_seconds"]
        if report.first is None and r["first"] is not None:
            report.first, episode = r["first"], r["episode"]
    if episode is not None:
        trace = shrink(list(episode), make_old, make_new, shrink_budget)
        out_dir = out_dir or Path.cwd()
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"divergence-seed{seed}.jsonl"
        report.shrunk_events = write_events(path, trace)
        report.shrunk = str(path)
    report.translate_seconds = tt
    report.seconds = time.perf_counter() - t0
    return report
