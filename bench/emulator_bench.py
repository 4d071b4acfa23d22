"""Emulator benchmark: 4-level walk throughput per layout, and memory of a long streamed trace.

    python bench/emulator_bench.py                 # 200k walks, 1,000,000-event trace
    python bench/emulator_bench.py --events 100000 --walks 50000

The trace is generated on the fly into a temporary file (streamed, never held
in memory), then run through both layouts exactly as `kvm-refactor emulate
run` does.  Peak memory is the process's peak RSS (resource.ru_maxrss); with
--tracemalloc the peak of Python allocations is reported too (slower).
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
from emulator.machine import new_model, old_model  # noqa: E402
from emulator.scenarios import Builder  # noqa: E402
from emulator.trace import read_events, run_pair, write_events  # noqa: E402
from refactor.rules import load_rules  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def walk_throughput(walks: int, names_spec: str) -> dict[str, float]:
    """Translations/s of 4-level walks (64 distinct 4 KiB pages, reads and writes)."""
    rules = load_rules()
    out = {}
    for model in (old_model(rules), new_model(rules, rules.names(names_spec))):
        b = Builder(tdp=True)
        t = b.tables("64")
        for i in range(64):
            t.map(0x7F00_0000_0000 + i * 0x1000 * 513, 0x1000_0000 + i * 0x1000)
        b.long_mode(t)
        for ev in b.events:
            model.apply(ev)
        evs = [{"ev": "translate", "addr": 0x7F00_0000_0000 + (i % 64) * 0x1000 * 513 + 8,
                "access": ("read", "write", "fetch")[i % 3]} for i in range(walks)]
        t0 = time.perf_counter()
        for ev in evs:
            model.apply(ev)
        out[model.layout] = walks / (time.perf_counter() - t0)
    return out


def streamed_run(events: int, seed: int, names_spec: str, trace_malloc: bool) -> dict:
    rules = load_rules()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        t0 = time.perf_counter()
        write_events(path, random_events(seed, events))
        gen_s = time.perf_counter() - t0
        size = path.stat().st_size
        if trace_malloc:
            import tracemalloc
            tracemalloc.start()
        t0 = time.perf_counter()
        report = run_pair(read_events(path), old_model(rules),
                          new_model(rules, rules.names(names_spec)), str(path))
        run_s = time.perf_counter() - t0
        result = {"events": report.events, "translations": report.translations,
                  "divergence": report.divergence is not None,
                  "trace_mib": round(size / 2**20, 1), "generate_s": round(gen_s, 1),
                  "run_s": round(run_s, 1), "events_per_s": round(report.events / run_s),
                  "peak_rss_mib": round(peak_rss_mib(), 1)}
        if trace_malloc:
            result["python_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
            tracemalloc.stop()
        return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="events in the streamed trace")
    ap.add_argument("--walks", type=int, default=200_000, help="4-level walks per layout")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--names", default="upstream")
    ap.add_argument("--tracemalloc", action="store_true")
    args = ap.parse_args()
    # The streamed run goes first so that its peak RSS is its own.
    print(f"RSS at start: {peak_rss_mib():.1f} MiB")
    r = streamed_run(args.events, args.seed, args.names, args.tracemalloc)
    print(f"streamed trace: {r['events']:,} events ({r['trace_mib']} MiB on disk, generated in "
          f"{r['generate_s']} s), {r['translations']:,} translations, both layouts in "
          f"{r['run_s']} s ({r['events_per_s']:,} events/s), divergence: {r['divergence']}")
    print(f"peak RSS: {r['peak_rss_mib']} MiB"
          + (f", Python heap peak: {r['python_peak_mib']} MiB" if "python_peak_mib" in r else ""))
    tps = walk_throughput(args.walks, args.names)
    for layout, v in tps.items():
        print(f"4-level walks, {layout} layout: {v:,.0f} translations/s")


if __name__ == "__main__":
    main()
