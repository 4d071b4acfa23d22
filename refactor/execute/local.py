"""Local execution: in this process (one job) or a pool of worker processes.

Units are submitted lazily with a bounded number in flight, so a campaign of
millions of units is cut as it runs, not all at once.  Workers are spawned
(not forked): a fresh interpreter holds no state of the parent's threads or
open engine processes.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable, Iterable, Iterator

from .units import Unit, execute


def default_jobs() -> int:
    """The number of cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:      # not Linux
        return max(1, os.cpu_count() or 1)


def run_serial(units: Iterable[Unit]) -> Iterator[tuple[str, object]]:
    for unit in units:
        yield execute(unit)


def run_pool(units: Iterable[Unit], jobs: int,
             on_start: Callable[[int], None] | None = None) -> Iterator[tuple[str, object]]:
    """(unit id, result) as units finish, on `jobs` worker processes."""
    ctx = multiprocessing.get_context("spawn")
    window = 2 * jobs
    it = iter(units)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        pending = set()
        for unit in it:
            pending.add(pool.submit(execute, unit))
            if len(pending) >= window:
                break
        if on_start is not None:
            on_start(jobs)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.add(pool.submit(execute, nxt))
