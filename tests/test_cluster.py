"""`--cluster`: a real Dask cluster (a scheduler and two workers, separate processes on
loopback ports) gives byte-for-byte what the single-process run gives, and a worker
killed mid-campaign changes nothing.

Dask comes from the test extras (`pip install -e '.[test]'`, which `make test` and
so CI run).  Outside CI a checkout without it skips these tests with the install
command; in CI a missing engine is a failure, not a skip.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

try:
    import distributed  # noqa: F401
except ImportError:  # pragma: no cover - the test extras install it
    if os.environ.get("CI"):
        raise
    pytest.skip("Dask distributed is not installed: pip install -e '.[test]'",
                allow_module_level=True)

from refactor.cli import main
from refactor.execute import Unit, run_units
from refactor.execute.fuzz_campaign import factories, plan, run_fuzz
from refactor.execute.localcluster import LocalCluster
from test_execute import MUTANT, comparable


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(workers=2) as c:
        yield c


def _fuzz(args: list[str], out: Path) -> dict:
    r = CliRunner().invoke(main, ["emulate", "fuzz", *args, "--out", str(out), "--format", "json"])
    assert r.exit_code in (0, 1), r.output
    return comparable(json.loads(r.output))


def test_fuzz_campaign_on_the_cluster_is_the_single_process_run(cluster, tmp_path):
    args = ["--seed", "5", "--events", "60000", "--mutant", "rule-nested-fault-test-ngpa"]
    local = _fuzz(args + ["--jobs", "1"], tmp_path / "local")
    remote = _fuzz(args + ["--cluster", cluster.address], tmp_path / "cluster")
    assert remote == local
    assert local["divergences"] > 1 and local["shrunk_events"] >= 1


def test_units_really_ran_on_the_workers(cluster):
    units = [Unit(f"pid{k}", "os:getpid") for k in range(8)]
    pids = set(run_units(units, cluster=cluster.address).values())
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_a_bad_address_is_one_line():
    r = CliRunner().invoke(main, ["emulate", "fuzz", "--events", "10",
                                  "--cluster", "tcp://127.0.0.1:9"])
    assert r.exit_code == 2
    assert "--cluster tcp://127.0.0.1:9: cannot reach a Dask scheduler" in r.output
    assert "Traceback" not in r.output


def test_a_worker_killed_mid_campaign_changes_nothing(tmp_path):
    make_old, make_new = factories(MUTANT)
    serial = comparable(run_fuzz(5, 120_000, MUTANT, make_old, make_new, tmp_path / "serial",
                                 jobs=1, unit_events=4_000).summary())
    with LocalCluster(workers=2) as c:
        done = []
        killed = threading.Event()

        def progress(label=None, n=1):
            done.append(n)
            if len(done) == 3 and not killed.is_set():
                c.kill_worker(0)        # units in flight on it, and results it held
                killed.set()

        report = run_fuzz(5, 120_000, MUTANT, make_old, make_new, tmp_path / "cluster",
                          cluster=c.address, unit_events=4_000, progress=progress)
        assert killed.is_set() and c.workers[0].poll() is not None
        assert len(done) == len(list(plan(5, 120_000, MUTANT, 4_000)))  # each unit once
    assert comparable(report.summary()) == serial
