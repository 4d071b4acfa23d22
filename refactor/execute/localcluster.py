"""A real Dask cluster on this machine: a scheduler and workers as separate processes.

What the cluster tests and bench/cluster_bench.py run against, started the
way a lab starts one (`dask scheduler`, `dask worker ADDRESS`), on loopback
ports only.  Workers run without a nanny, so killing one is a lost worker.  They stay in the
caller's session: with the kernel's autogroup scheduling a new session would get a
CPU share of its own, which on a shared machine flatters the cluster against the
local pool in the benchmark.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .units import ExecuteError


def _dask() -> list[str]:
    exe = Path(sys.executable).with_name("dask")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("dask")
    if found is None:
        raise ExecuteError("the `dask` command is missing: pip install 'kvm-refactor[cluster]'")
    return [found]


def scheduler_address(sched: Path, check) -> str:
    """The address in the scheduler's file.  The scheduler creates the file before it writes
    it: a read in between sees it empty, so wait (calling `check`) for a whole document."""
    while True:
        check()
        try:
            return json.loads(sched.read_text())["address"]
        except (FileNotFoundError, json.JSONDecodeError):
            continue


class LocalCluster:
    """`with LocalCluster(2) as c: ... c.address ... c.kill_worker(0)`."""

    def __init__(self, workers: int = 2, threads: int = 1, start_timeout: float = 60.0,
                 env: dict[str, str] | None = None):
        """`env`: added to the workers' environment (e.g. PYTHONPATH for tasks of tests).
        Workers run in their own directory, not this one, as on another machine."""
        self.dir = Path(tempfile.mkdtemp(prefix="kvm-refactor-cluster-"))
        self.env = dict(os.environ, **(env or {}))
        self.workers: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        sched = self.dir / "scheduler.json"
        self.scheduler = self._spawn("scheduler", ["scheduler", "--host", "127.0.0.1",
                                                   "--port", "0", "--no-dashboard",
                                                   "--dashboard-address", "127.0.0.1:0",
                                                   "--scheduler-file", str(sched)])
        deadline = time.monotonic() + start_timeout
        self.address = scheduler_address(sched, lambda: self._check(deadline))
        for k in range(workers):
            self.workers.append(self._spawn(f"worker{k}", [
                "worker", self.address, "--nthreads", str(threads), "--no-nanny",
                "--no-dashboard", "--dashboard-address", "127.0.0.1:0", "--host", "127.0.0.1",
                "--local-directory", str(self.dir / f"worker{k}" / "dask"),
                "--name", f"worker{k}"]))
        self.wait_for(workers, deadline)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = self.dir / f"{name}.log"
        self.logs.append(log)
        cwd = self.dir / name
        cwd.mkdir()
        with log.open("wb") as fh:
            return subprocess.Popen(_dask() + args, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=cwd,
                                    env=self.env)

    def _check(self, deadline: float) -> None:
        for p, log in zip([self.scheduler, *self.workers], self.logs):
            if p.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                self.close()
                raise ExecuteError(f"a cluster process exited ({p.returncode}): {' '.join(tail)}")
        if time.monotonic() > deadline:
            self.close()
            raise ExecuteError("the local cluster did not start in time")
        time.sleep(0.2)

    def wait_for(self, workers: int, deadline: float) -> None:
        from distributed import Client

        with Client(self.address, timeout=30, set_as_default=False) as client:
            while len(client.scheduler_info(n_workers=-1)["workers"]) < workers:
                self._check(deadline)

    def kill_worker(self, k: int) -> None:
        """SIGKILL worker k: it dies with whatever it was running or holding."""
        os.kill(self.workers[k].pid, signal.SIGKILL)
        self.workers[k].wait()

    def close(self) -> None:
        for p in [*self.workers, self.scheduler]:
            if p.poll() is None:
                p.terminate()
        for p in [*self.workers, self.scheduler]:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
