"""One execution layer for campaigns: units on this process, local workers or a cluster.

Work is cut into units (refactor.execute.units.Unit: pure data), each unit's
result is pure data keyed by its id, and each command merges the results in
unit order into exactly what a single-process run prints.  `run_units` picks
the backend: `cluster` (a Dask scheduler address), else `jobs` local worker
processes, else (jobs 1, or one unit) this process.  See docs/cluster.md.
"""
from __future__ import annotations

import itertools
from typing import Callable, Iterable, Iterator

from .local import default_jobs, run_pool, run_serial
from .units import Context, ExecuteError, Unit, current_context, execute

__all__ = ["Context", "ExecuteError", "Unit", "current_context", "default_jobs", "execute",
           "run_units"]


def run_units(units: Iterable[Unit], *, jobs: int | None = None, cluster: str | None = None,
              on_result: Callable[[str, object], None] | None = None,
              on_start: Callable[[int], None] | None = None) -> dict[str, object]:
    """Run every unit; {unit id: result}.  Results are collected by id (in whatever order
    they finish); callers merge them in their own unit order, which makes the output
    independent of the backend and of the number of workers."""
    it: Iterator[tuple[str, object]]
    if cluster:
        from .cluster import run_cluster

        it = run_cluster(units, cluster, on_start=on_start)
    else:
        jobs = jobs or default_jobs()
        units = iter(units)
        head = list(itertools.islice(units, 2))
        rest = itertools.chain(head, units)
        if jobs > 1 and len(head) > 1:
            it = run_pool(rest, jobs, on_start=on_start)
        else:
            if on_start is not None:
                on_start(1)
            it = run_serial(rest)
    out: dict[str, object] = {}
    for uid, result in it:
        if uid in out:
            continue
        out[uid] = result
        if on_result is not None:
            on_result(uid, result)
    return out
