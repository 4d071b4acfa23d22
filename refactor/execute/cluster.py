"""`--cluster ADDRESS`: the same units on a running Dask distributed cluster.

Dask is an optional extra (`pip install kvm-refactor[cluster]`): nothing here
is imported unless a command is given `--cluster`.  Each unit is one task
whose key is derived from the run and the unit id.  The scheduler reruns the
tasks of a worker that is lost (running, or finished but not yet collected);
results are kept by unit id, so a rerun unit is counted once and none is lost.
Workers need the same kvm-refactor installed (units carry its version and
refuse to run on another one) and, for native engines, the kernel trees at the
same paths (a lab's shared filesystem): each worker builds an engine once and
keeps it in its own engine cache.
"""
from __future__ import annotations

import hashlib
import itertools
import uuid
from typing import Callable, Iterable, Iterator

from .units import ExecuteError, Unit, execute


def _client(address: str, timeout: float):
    try:
        from distributed import Client
    except ImportError:
        raise ExecuteError("--cluster needs Dask distributed: pip install "
                           "'kvm-refactor[cluster]'") from None
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ExecuteError(f"--cluster {address}: cannot reach a Dask scheduler there "
                           f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") \
            from None


def run_cluster(units: Iterable[Unit], address: str, *, window: int | None = None,
                timeout: float = 10.0,
                on_start: Callable[[int], None] | None = None) -> Iterator[tuple[str, object]]:
    """(unit id, result) as units finish on the cluster at `address`.

    At most `window` units are in flight (default: 4 per worker thread), so the
    cut of a long campaign keeps pace with the cluster instead of preceding it.
    """
    client = _client(address, timeout)      # first: says how to install Dask if it is missing
    from distributed import KilledWorker, as_completed
    try:
        threads = sum(client.nthreads().values()) or 1
        window = window or 4 * threads
        if on_start is not None:
            on_start(threads)
        run = uuid.uuid4().hex[:12]
        it = iter(units)

        def submit(unit: Unit):
            key = f"kvm-refactor-{run}-{hashlib.sha1(unit.id.encode()).hexdigest()[:16]}"
            # pure=False with an explicit key: one task per unit of this run; retries
            # cover an exception on a worker, a lost worker is rescheduled by Dask itself.
            return client.submit(execute, unit, key=key, pure=False, retries=1)

        first = [submit(u) for u in itertools.islice(it, window)]
        pending = as_completed(first, loop=client.loop)
        seen: set[str] = set()
        for fut in pending:
            try:
                uid, result = fut.result()
            except KilledWorker as exc:
                # The same unit took down worker after worker: a crash of its own, not a
                # lost machine (Dask's distributed.scheduler.allowed-failures).
                raise ExecuteError(f"--cluster {address}: a unit killed every worker that ran "
                                   f"it ({exc})") from None
            fut.release()
            nxt = next(it, None)
            if nxt is not None:
                pending.add(submit(nxt))
            if uid in seen:       # never twice, whatever the scheduler did
                continue
            seen.add(uid)
            yield uid, result
    finally:
        client.close()
