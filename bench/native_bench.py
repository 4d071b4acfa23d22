"""Native engine benchmark: translations per second per tree against the Python model,
and the engine's build time: cold, cached, and a tree with one unit changed.

    python bench/native_bench.py            # the fetched 6.1 and 7.2 full trees
    python bench/native_bench.py --tree ~/.cache/kvm-refactor/trees/linux-source-6.1-full
    python bench/native_bench.py --tree A --tree B --events 100000 --cold

The same seeded fuzz stream (emulator.fuzz.random_events) runs through the
Python old-layout model and through each tree's engine.  The machine is
shared, so the headline figures are CPU seconds (what a run costs, whatever
else runs); wall-clock figures and the load average are printed beside them.

- python: Model.apply() over the whole stream, CPU seconds of this process.
- pack: encoding the stream for the engines (once, shared by every tree).
- batch (per tree): run_packed() of the packed stream; CPU seconds of the
  engine process plus this process's (reading and splitting the answers).
  `with pack` adds the encoding, as if only this tree ran.
- blocks: run_blocks(), the same answers as one block of lines per chunk of
  16,384 events (what comparing two trees needs: one `==` per chunk).
- decoded: apply_many(), answers decoded into result dicts, wall clock.
- sync: apply(), one pipe round trip per event (what run_pair does).
- end to end: refactor.verify.run.run_streams() (the loop of `verify`) over the
  same events, this tree's engine as the pristine reference and one candidate
  (the same engine, or `--against TREE`'s), against the Python model's own
  two-layout comparison of the same events (emulator.fuzz.compare_episode per
  episode with fresh old/new models, as `emulate fuzz` runs it), both timed in
  this run: wall clock and CPU (this process plus the engines'); also as a
  ratio to one Python model's apply() of the events (the `python model`
  line: half the work of a comparison, no model built per episode).  `--sync`
  events also go through run_streams one event at a time (apply(), the loop
  before batching) for comparison.
`--cold` builds each engine in an empty cache directory (Kbuild configure and
prepare, preprocessing, compiling, linking), again (cached), and for a symlink
farm of the tree with one line added to mmu.c (prepared directory and the
other units' objects reused).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator.fuzz import random_events  # noqa: E402
from emulator.machine import old_model  # noqa: E402
from emulator.native import build_engine  # noqa: E402
from emulator.native.model import BATCH_EVENTS, pack  # noqa: E402
from emulator.fuzz import compare_episode  # noqa: E402
from emulator.machine import new_model  # noqa: E402
from refactor.rules import load_rules  # noqa: E402
from refactor.verify.run import PerEvent, Stream, run_streams  # noqa: E402


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def python_cpu(events: list[dict]) -> float:
    rules = load_rules()
    model = None
    cpu0 = time.process_time()
    for ev in events:
        if ev["ev"] == "reset":
            model = old_model(rules)
        model.apply(ev)
    return time.process_time() - cpu0


def episodes(events: list[dict]) -> list[list[dict]]:
    out: list[list[dict]] = []
    for ev in events:
        if ev["ev"] == "reset" or not out:
            out.append([])
        out[-1].append(ev)
    return out


def python_compare(events: list[dict]) -> tuple[float, float, int]:
    """(wall, CPU, divergences) of the Python model's two-layout comparison, per episode
    with fresh models, as `emulate fuzz` runs it."""
    rules = load_rules()
    names = rules.names("upstream")
    eps = episodes(events)
    diverged = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for ep in eps:
        diverged += compare_episode(ep, old_model(rules), new_model(rules, names)) is not None
    return time.perf_counter() - t0, time.process_time() - c0, diverged


def end_to_end(ref_build, cand_build, events: list[dict], label: str, wrap=None, count=1):
    """(wall, CPU of this process and the engines, translations of a candidate,
    divergences) of run_streams() over EVENTS with COUNT candidates."""
    items = [(f"{label} event {i}", ev) for i, ev in enumerate(events, 1)]
    wrap = wrap or (lambda m: m)
    ref = wrap(ref_build.model())
    cands = {str(k): wrap(cand_build.model()) for k in range(count)}
    c0, p0, t0 = children_cpu(), time.process_time(), time.perf_counter()
    _total, tallies, _bugs = run_streams([Stream(label, iter(items))], ref, cands)
    wall, mine = time.perf_counter() - t0, time.process_time() - p0
    translations = cands["0"].translations
    for m in (ref, *cands.values()):
        m.close()      # waited for: the engines' CPU is counted
    return wall, mine + children_cpu() - c0, translations, tallies["0"].divergences


def task_cpu(pid: int) -> float | None:
    """CPU seconds of a running process (nanoseconds in /proc/PID/schedstat)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def batch_run(build, chunks, blocks=False) -> tuple[float, float, float, float, list[bytes]]:
    """(wall, this process's CPU, engine CPU for the batch, engine start-up CPU, answer
    lines) of one engine process; the start-up (exec, kvm_ops_update) is paid once per
    process, which fuzz and verify keep across episodes."""
    model = build.model()
    c0 = children_cpu()
    model.apply({"ev": "reset"})          # the process is up before timing
    pid = model._own.pid
    e0, p0, t0 = task_cpu(pid), time.process_time(), time.perf_counter()
    lines = list(model.run_blocks(chunks) if blocks else model.run_packed(chunks))
    wall, mine, e1 = time.perf_counter() - t0, time.process_time() - p0, task_cpu(pid)
    model.close()                          # waited for: its CPU time is counted
    total = children_cpu() - c0
    engine = e1 - e0 if e0 is not None and e1 is not None else total
    return wall, mine, engine, total - engine, lines


def cold_builds(tree: Path) -> None:
    from refactor.kernel.build import farm

    with tempfile.TemporaryDirectory(prefix="native-bench-") as tmp:
        cache = Path(tmp) / "cache"
        for what in ("cold", "cached"):
            print(f"  build {what}: ({load()})", flush=True)
            c0 = children_cpu()
            b = build_engine(tree, cache_dir=cache)
            phases = ", ".join(f"{k} {v:.1f} s" for k, v in b.info.times.items())
            print(f"    {b.info.seconds:.1f} s wall, {children_cpu() - c0:.1f} s CPU of make and "
                  f"gcc ({phases}); compiled: "
                  f"{', '.join(b.info.compiled) or 'nothing'}", flush=True)
        mmu = (tree / "arch/x86/kvm/mmu/mmu.c").read_bytes()
        # A farm is ~80,000 symlinks: kept between runs (farm() re-links what it changed).
        where = Path.home() / ".cache" / "kvm-refactor" / f"native-bench-farm-{tree.name}"
        changed = farm(tree, where, {"arch/x86/kvm/mmu/mmu.c": mmu + b"\nint h_bench_changed;\n"})
        print(f"  build of a farm with mmu.c changed: ({load()})", flush=True)
        c0 = children_cpu()
        b = build_engine(changed, cache_dir=cache)
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in b.info.times.items())
        print(f"    {b.info.seconds:.1f} s wall, {children_cpu() - c0:.1f} s CPU ({phases}); "
              f"compiled: "
              f"{', '.join(b.info.compiled) or 'nothing'}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", type=Path, default=None,
                    help="a configured full tree (default: the 6.1 and 7.2 trees "
                         "`kvm-refactor fetch-tree VERSION --full` put in the cache)")
    ap.add_argument("--events", type=int, default=200000,
                    help="fuzz events (fewer make the engines' figures hundredths of a second: noise)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sync", type=int, default=5000,
                    help="events run one round trip each (0: skip)")
    ap.add_argument("--cold", action="store_true", help="also time builds from an empty cache")
    ap.add_argument("--against", type=Path, default=None,
                    help="end to end: this tree's engine is the candidate (default: the "
                         "reference tree's own engine, as a second process)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each CPU measurement; the least is printed (the others "
                         "are the same work slowed by the machine's other jobs)")
    args = ap.parse_args()

    if not args.tree:
        fetched = Path.home() / ".cache" / "kvm-refactor" / "trees"
        args.tree = [fetched / f"linux-source-{v}-full" for v in ("6.1", "7.2")
                     if (fetched / f"linux-source-{v}-full").is_dir()]
        if not args.tree:
            sys.exit("native_bench: no full tree: `kvm-refactor fetch-tree 6.1 --full` or --tree")
    print(f"start: {load()} on {os.cpu_count()} CPUs")
    events = list(random_events(args.seed, args.events))
    n = sum(1 for ev in events if ev["ev"] == "translate")
    py = min(python_cpu(events) for _ in range(args.repeat))
    print(f"python model: {len(events)} events, {n} translations, {py:.3f} s CPU: "
          f"{n / py:,.0f} translations/s")
    packing = None
    for _ in range(args.repeat):
        p0 = time.process_time()
        chunks = [pack(events[i:i + BATCH_EVENTS]) for i in range(0, len(events), BATCH_EVENTS)]
        packing = min(packing or 1e9, time.process_time() - p0)
    print(f"pack: {packing:.3f} s CPU for the stream (shared by every tree)")
    cmp_wall, cmp_cpu, cmp_div = min((python_compare(events) for _ in range(args.repeat)),
                                     key=lambda r: r[1])
    print(f"python two-layout compare (emulate fuzz): {cmp_cpu:.3f} s CPU, {cmp_wall:.3f} s "
          f"wall: {n / cmp_cpu:,.0f} translations/s of CPU, {n / cmp_wall:,.0f}/s wall; "
          f"{cmp_div} divergences")
    against = build_engine(args.against) if args.against else None
    for tree in args.tree:
        print(f"\n{tree}")
        if args.cold:
            cold_builds(tree)
        t0 = time.perf_counter()
        build = build_engine(tree)
        print(f"  engine {build.version} ({build.info.layout.get('layout')} layout, "
              f"{build.info.stubs} stubs), ready in {time.perf_counter() - t0:.1f} s"
              f"{' (cached)' if build.info.cached else ''}")
        wall, mine, engine, startup, lines = min(
            (batch_run(build, chunks) for _ in range(args.repeat)), key=lambda r: r[1] + r[2])
        cpu = mine + engine
        bugs = sum(x.startswith(b'{"bug"') for x in lines)
        print(f"  batch: {cpu:.3f} s CPU (engine {engine:.3f}, driver {mine:.3f}): "
              f"{n / cpu:,.0f} translations/s = {py / cpu:.1f}x the Python model; "
              f"with pack {n / (cpu + packing):,.0f}/s = {py / (cpu + packing):.1f}x; "
              f"wall {wall:.3f} s: {n / wall:,.0f}/s; "
              f"{bugs} bug results; engine start-up and the rest {startup:.3f} s CPU")
        wall, mine, engine, _startup, blocks = min(
            (batch_run(build, chunks, blocks=True) for _ in range(args.repeat)),
            key=lambda r: r[1] + r[2])
        cpu = mine + engine
        same = b"".join(blocks) == b"".join(x + b"\n" for x in lines)
        print(f"  blocks: {cpu:.3f} s CPU (engine {engine:.3f}, driver {mine:.3f}): "
              f"{n / cpu:,.0f} translations/s = {py / cpu:.1f}x the Python model; "
              f"with pack {n / (cpu + packing):,.0f}/s = {py / (cpu + packing):.1f}x; "
              f"wall {wall:.3f} s; answers {'equal to' if same else 'DIFFERENT from'} the lines")
        model = build.model()
        t0 = time.perf_counter()
        model.apply_many(events)
        wall = time.perf_counter() - t0
        model.close()
        print(f"  decoded: apply_many() {wall:.3f} s wall: {n / wall:,.0f} translations/s")
        if args.sync:
            model = build.model()
            sub = events[:args.sync]
            t0 = time.perf_counter()
            for ev in sub:
                model.apply(ev)
            wall = time.perf_counter() - t0
            model.close()
            print(f"  sync: apply() of {len(sub)} events, {wall / len(sub) * 1e6:.0f} us "
                  f"per event wall, {model.translations / wall:,.0f} translations/s")
        cand = against or build
        what = f"{build.version} against {'itself' if cand is build else cand.version}"
        wall, cpu, tr, div = min((end_to_end(build, cand, events, f"seed {args.seed}")
                                  for _ in range(args.repeat)), key=lambda r: r[1])
        print(f"  end to end: run_streams() {what}: {wall:.3f} s wall, {cpu:.3f} s CPU "
              f"(driver and both engines), {div} divergences: {tr / wall:,.0f} translations/s "
              f"wall = {cmp_wall / wall:.1f}x the Python compare, {tr / cpu:,.0f}/s of CPU = "
              f"{cmp_cpu / cpu:.1f}x the Python compare, {py / cpu:.1f}x one Python model "
              f"alone ({load()})")
        w3, cpu3, _tr, _div = min((end_to_end(build, cand, events, f"seed {args.seed}", count=3)
                                   for _ in range(args.repeat)), key=lambda r: r[1])
        extra = (cpu3 - cpu) / 2
        print(f"  end to end with 3 candidates: {w3:.3f} s wall, {cpu3:.3f} s CPU; each "
              f"candidate after the first costs {extra:.3f} s CPU: {n / extra:,.0f} translations/s "
              f"= {py / extra:.1f}x one Python model (what one more tree of a branch costs)")
        if args.sync:
            sub = events[:args.sync]
            subn = sum(1 for ev in sub if ev["ev"] == "translate")
            s_wall, s_cpu, tr, _div = end_to_end(build, cand, sub, f"seed {args.seed}",
                                                 PerEvent)
            ratio = (s_wall / subn) / (wall / n)
            print(f"  end to end, one event at a time (apply()): {len(sub)} events, "
                  f"{s_wall:.3f} s wall, {s_cpu:.3f} s CPU: {tr / s_wall:,.0f} translations/s "
                  f"wall; the batched loop is {ratio:.0f}x faster per translation")
    print(f"\nend: {load()}")


if __name__ == "__main__":
    main()
