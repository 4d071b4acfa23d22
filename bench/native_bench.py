"""Native engine benchmark: translations per second per tree against the Python model,
and the engine's build time, cold and cached.

    python bench/native_bench.py --tree ~/.cache/kvm-refactor/trees/linux-source-6.1-full
    python bench/native_bench.py --tree A --tree B --events 100000 --cold

For each tree the same seeded fuzz stream (emulator.fuzz.random_events) is
run through the Python old-layout model and through the tree's engine, three
ways for the engine:
- `sync`: one pipe round trip per event (what run_pair/fuzz do), translations
  per second of wall time spent in translate events;
- `stream`: the whole stream pipelined (NativeModel.stream), all events'
  wall time, translations counted;
- the Python model's translate time (Model.translate_time) for the same events.
`--cold` builds each engine in an empty cache directory first (the Kbuild
configure + prepare, preprocessing, compile and link), then again (cached).
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator.fuzz import random_events  # noqa: E402
from emulator.machine import old_model  # noqa: E402
from emulator.native import build_engine  # noqa: E402
from refactor.rules import load_rules  # noqa: E402


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def python_rate(events: list[dict]) -> tuple[int, float, float]:
    rules = load_rules()
    model, n, t = None, 0, 0.0
    cpu0 = time.process_time()
    for ev in events:
        if ev["ev"] == "reset":
            if model:
                n, t = n + model.translations, t + model.translate_time
            model = old_model(rules)
        model.apply(ev)
    n, t = n + model.translations, t + model.translate_time
    return n, t, time.process_time() - cpu0


def sync_rate(build, events: list[dict]) -> tuple[int, float]:
    model = build.model()
    for ev in events:
        model.apply(ev)
    model.close()
    return model.translations, model.translate_time


def stream_rate(build, events: list[dict]) -> tuple[int, float, float, int]:
    """(translations, wall seconds, engine CPU seconds, bug results) of a raw stream."""
    model = build.model()      # stream() runs its own batch process
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    bugs = sum(1 for r in model.stream(iter(events), raw=True) if r.startswith('{"bug"'))
    seconds = time.perf_counter() - t0
    return (sum(1 for ev in events if ev["ev"] == "translate"), seconds, children_cpu() - cpu0,
            bugs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", type=Path, required=True)
    ap.add_argument("--events", type=int, default=50000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cold", action="store_true", help="also time a build from an empty cache")
    args = ap.parse_args()

    events = list(random_events(args.seed, args.events))
    py_n, py_t, py_cpu = python_rate(events)
    py_rate = py_n / py_t if py_t else 0.0
    py_cpu_rate = py_n / py_cpu if py_cpu else 0.0
    print(f"python model: {py_n} translations in {py_t:.2f} s of translate time: "
          f"{py_rate:,.0f} translations/s; whole stream {py_cpu:.2f} s CPU: "
          f"{py_cpu_rate:,.0f} translations/s of CPU")
    for tree in args.tree:
        print(f"\n{tree}")
        if args.cold:
            with tempfile.TemporaryDirectory(prefix="native-bench-") as tmp:
                t0 = time.perf_counter()
                build_engine(tree, cache_dir=Path(tmp))
                cold = time.perf_counter() - t0
                t0 = time.perf_counter()
                build_engine(tree, cache_dir=Path(tmp))
                cached = time.perf_counter() - t0
            print(f"  build: cold {cold:.1f} s, cached {cached:.1f} s")
        t0 = time.perf_counter()
        build = build_engine(tree)
        print(f"  engine {build.version} ({build.info.layout.get('layout')} layout, "
              f"{build.info.stubs} stubs), ready in {time.perf_counter() - t0:.1f} s"
              f"{' (cached)' if build.info.cached else ''}")
        n, t = sync_rate(build, events)
        rate = n / t if t else 0.0
        print(f"  sync:   {n} translations, {rate:,.0f} translations/s "
              f"({rate / py_rate if py_rate else 0:.1f}x the Python model)")
        n, t, cpu, bugs = stream_rate(build, events)
        rate = n / t if t else 0.0
        cpu_rate = n / cpu if cpu else 0.0
        print(f"  stream: {len(events)} events, {n} translations in {t:.2f} s wall: "
              f"{rate:,.0f} translations/s, all events included "
              f"({rate / py_rate if py_rate else 0:.1f}x); {bugs} bug results")
        print(f"  engine CPU: {cpu:.3f} s for the whole stream: {cpu_rate:,.0f} translations/s "
              f"of CPU ({cpu_rate / py_cpu_rate if py_cpu_rate else 0:.1f}x the Python "
              f"model's whole-stream CPU rate)")


if __name__ == "__main__":
    main()
