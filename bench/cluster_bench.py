"""Execution-layer benchmark: `emulate fuzz` events/s on 1 and 2 local workers and on a
local Dask cluster (a scheduler and two worker processes on loopback), in one run, and
the overhead of one unit on each backend.

    python bench/cluster_bench.py                     # 200,000 events, seed 1
    python bench/cluster_bench.py --events 1000000 --unit-events 25000

Figures are wall-clock on this machine, shared with whatever else runs: the load
average is printed before and after.  Every backend's summary is checked to be the
single-process one (timing fields aside).  The planner line is the serial part of a
campaign: walking the seeded stream's episodes to cut units (docs/cluster.md).
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator.fuzz import episode_events  # noqa: E402
from refactor.execute import Unit, run_units  # noqa: E402
from refactor.execute.fuzz_campaign import UNIT_EVENTS, factories, run_fuzz  # noqa: E402

MODELS = {"engine": "python", "names": "upstream", "mutant": None, "trees": []}
TIMING = ("seconds", "translations_per_second", "translations_per_second_by_layout")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_seconds() -> float:
    """CPU time of this process, its finished children (pool workers) and its live
    descendants (cluster scheduler and workers): wall time on a shared machine depends on
    the others' load, CPU time much less."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    try:
        import psutil
    except ImportError:
        return total
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def campaign(label: str, events: int, seed: int, unit_events: int, **backend) -> dict:
    make_old, make_new = factories(MODELS)
    c0, t0 = cpu_seconds(), time.perf_counter()
    report = run_fuzz(seed, events, MODELS, make_old, make_new, Path("/tmp"),
                      unit_events=unit_events, **backend)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    summary = {k: v for k, v in report.summary().items() if k not in TIMING}
    print(f"{label:<28} {wall:7.2f} s wall {events / wall:9,.0f} events/s   "
          f"{cpu:7.2f} CPU s {events / cpu:9,.0f} events/CPU s", flush=True)
    return {"wall": wall, "summary": summary}


def planner(events: int, seed: int) -> tuple[float, float]:
    """(events/s, events/CPU s) of walking the stream's episodes, as the planner does."""
    rng, done = random.Random(seed), 0
    t0, c0 = time.perf_counter(), time.process_time()
    while done < events:
        done += len(episode_events(rng, events - done))
    return events / (time.perf_counter() - t0), events / (time.process_time() - c0)


def unit_overhead(n: int, **backend) -> float:
    """Seconds per no-op unit (round trip of a unit that does nothing), backend started."""
    units = [Unit(f"noop{k}", "os:getpid") for k in range(n)]
    run_units(units[:4], **backend)          # warm: workers started, modules imported
    t0 = time.perf_counter()
    run_units(units, **backend)
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--unit-events", type=int, default=UNIT_EVENTS)
    ap.add_argument("--noop-units", type=int, default=400)
    args = ap.parse_args()
    print(f"load average before: {load()}  (cores: {os.cpu_count()})")
    print(f"{args.events:,} events, seed {args.seed}, {args.unit_events:,} events per unit")
    wall, cpu = planner(args.events, args.seed)
    print(f"planner (serial cut of the stream): {wall:,.0f} events/s, {cpu:,.0f} events/CPU s")
    runs = {"1 worker (this process)": campaign("1 worker (this process)", args.events,
                                                args.seed, args.unit_events, jobs=1),
            "2 local workers": campaign("2 local workers", args.events, args.seed,
                                        args.unit_events, jobs=2)}
    print(f"unit overhead, 2 local workers: {unit_overhead(args.noop_units, jobs=2) * 1e3:.2f} ms")
    try:
        from refactor.execute.localcluster import LocalCluster
        t0 = time.perf_counter()
        with LocalCluster(workers=2) as cluster:
            print(f"local cluster started in {time.perf_counter() - t0:.1f} s "
                  f"(scheduler + 2 workers, {cluster.address})")
            runs["local cluster, 2 workers"] = campaign(
                "local cluster, 2 workers", args.events, args.seed, args.unit_events,
                cluster=cluster.address)
            print(f"unit overhead, local cluster: "
                  f"{unit_overhead(args.noop_units, cluster=cluster.address) * 1e3:.2f} ms")
    except ImportError:
        print("local cluster: skipped (pip install 'kvm-refactor[cluster]')")
    first = next(iter(runs.values()))["summary"]
    same = all(r["summary"] == first for r in runs.values())
    print(f"same summary on every backend: {'yes' if same else 'NO'}")
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
