"""The execution layer on this machine: units, the local worker pool, the merge.

Every parallel result is compared with the single-process run it replaces
(emulator.fuzz.fuzz, the serial port/verify/lint code): same JSON but for
timing figures, same first divergence, the same shrunk trace byte for byte.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulator.fuzz import episode_events, fuzz, random_events
from test_verify import fake_engine, series_repo  # noqa: F401 (series_repo: a fixture)
from refactor import __version__
from refactor.execute import Context, ExecuteError, Unit, execute, run_units
from refactor.execute.fuzz_campaign import factories, plan, run_fuzz

MUTANT = {"engine": "python", "names": "upstream", "mutant": "rule-nested-fault-test-ngpa",
          "trees": []}
TIMING = ("seconds", "translations_per_second", "translations_per_second_by_layout")


def comparable(summary: dict) -> dict:
    """A fuzz summary without its timing figures, with the shrunk trace's bytes."""
    out = {k: v for k, v in summary.items() if k not in TIMING}
    if out.get("shrunk_trace"):
        out["shrunk_trace"] = Path(out["shrunk_trace"]).read_bytes()
    return out


def test_units_cover_the_campaign_in_whole_episodes():
    units = list(plan(2, 50_000, MUTANT, unit_events=7_000))
    assert len(units) > 5
    assert [u.args["first"] for u in units] == sorted(u.args["first"] for u in units)
    assert units[0].args["first"] == 0 and len({u.id for u in units}) == len(units)
    # Each unit's own episodes regenerate exactly its slice of the stream.
    stream = list(random_events(2, 50_000))
    for u, nxt in zip(units, units[1:] + [None]):
        rng = random.Random()
        rng.setstate(u.args["state"])
        got, limit = [], u.args["limit"]
        for _ in range(u.args["episodes"]):
            got += episode_events(rng, limit - len(got))
        end = nxt.args["first"] if nxt else 50_000
        assert got == stream[u.args["first"]:end]


@pytest.fixture(scope="module")
def serial_mutant_run(tmp_path_factory):
    """Today's single-process run (emulator.fuzz.fuzz) of a campaign that diverges."""
    out = tmp_path_factory.mktemp("serial")
    make_old, make_new = factories(MUTANT)
    return comparable(fuzz(5, 20_000, make_old, make_new, out).summary())


@pytest.mark.parametrize("jobs,unit_events", [(1, 3_000), (2, 3_000), (2, 50_000)])
def test_fuzz_units_merge_into_the_single_process_report(serial_mutant_run, tmp_path, jobs,
                                                          unit_events):
    make_old, make_new = factories(MUTANT)
    report = run_fuzz(5, 20_000, MUTANT, make_old, make_new, tmp_path, jobs=jobs,
                      unit_events=unit_events)
    got = comparable(report.summary())
    assert got == serial_mutant_run
    assert got["divergences"] > 1 and got["first_divergence"]["event"] > 1


def test_fuzz_cli_jobs_two_prints_what_jobs_one_prints(tmp_path):
    from refactor.cli import main

    runner = CliRunner()
    outs = []
    for jobs in ("1", "2"):
        r = runner.invoke(main, ["emulate", "fuzz", "--seed", "5", "--events", "30000",
                                 "--mutant", "rule-nested-fault-test-ngpa", "--jobs", jobs,
                                 "--out", str(tmp_path / jobs), "--format", "json"])
        assert r.exit_code == 1, r.output
        outs.append(comparable(json.loads(r.output)))
    assert outs[0] == outs[1]
    assert outs[0]["events"] == 30_000 and outs[0]["divergences"] > 1


def test_a_unit_refuses_another_version():
    unit = Unit("u", "refactor.execute.local:default_jobs", {}, Context(version="0.0.0-other"))
    with pytest.raises(ExecuteError, match="install the same version"):
        execute(unit)


def test_an_unknown_task_is_one_error():
    with pytest.raises(ExecuteError, match="no task"):
        execute(Unit("u", "refactor.execute.local:nothing_here"))


def test_rules_overlay_travels_with_the_unit(tmp_path):
    """A worker process without the user's --rules file applies the overlay the unit carries."""
    overlay = b'[presets.travel]\ngva = "gw"\nngpa = "nw"\n'
    ctx = Context(__version__, (("names.toml", overlay),), False)
    units = [Unit(f"u{k}", f"{__name__}:preset_names", {"preset": "travel"}, ctx)
             for k in range(2)] + [Unit("plain", f"{__name__}:preset_names",
                                        {"preset": "upstream"}, Context())]
    results = run_units(units, jobs=2)
    assert results["u0"] == results["u1"] == {"gva": "gw", "ngpa": "nw"}
    assert results["plain"]["gva"] != "gw"


def preset_names(preset: str) -> dict:
    from refactor.rules import load_rules

    return {k: v for k, v in load_rules().names(preset).as_dict().items() if k in ("gva", "ngpa")}


def test_results_are_kept_once_by_unit_id():
    seen = []
    units = [Unit("same", "refactor.execute.local:default_jobs")] * 2
    out = run_units(units, jobs=1, on_result=lambda uid, r: seen.append(uid))
    assert list(out) == ["same"] and seen == ["same"]


@pytest.fixture(scope="module")
def port_mails(trees):
    """Two fixes written on 7.3 (tests/test_port.py's), as one mbox."""
    from test_port import PKRU_NEW, PKRU_OLD, make_mail

    from refactor.port.mail import read_mails

    second = make_mail(trees["7.3"], "arch/x86/kvm/mmu.h", PKRU_OLD, PKRU_NEW,
                       subject="KVM: x86/mmu: Fix the walk again")
    return read_mails(make_mail(trees["7.3"], "arch/x86/kvm/mmu.h", PKRU_OLD, PKRU_NEW)
                      + second, "fixes.mbox")


def test_port_matrix_units_give_the_single_process_report(trees, port_mails):
    from refactor.execute.port_matrix import run_port
    from refactor.port.engine import port_patches
    from refactor.port.output import analysis_text

    onto = [str(trees[v]) for v in ("7.2", "6.1", "7.3")]
    serial = port_patches(port_mails, onto, porter=("T", "t@e"))
    pooled = run_port(port_mails, onto, porter=("T", "t@e"), jobs=2)
    assert json.dumps(pooled.to_json()) == json.dumps(serial.to_json())
    assert analysis_text(pooled) == analysis_text(serial)
    assert [p.output for t in pooled.targets for p in t.patches] == \
        [p.output for t in serial.targets for p in t.patches]
    assert pooled.conflicts == serial.conflicts >= 1


def test_port_matrix_bad_target_is_the_first_in_onto_order(trees, port_mails, tmp_path):
    from refactor.errors import TreeError
    from refactor.execute.port_matrix import run_port

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(TreeError, match=str(tmp_path / "a")):
        run_port(port_mails, [str(trees["7.2"]), str(tmp_path / "a"), str(tmp_path / "b")],
                 jobs=2)


def _verify_dict(report) -> dict:
    data = report.as_dict()
    data.pop("seconds")        # build/run wall times
    for step in data["steps"]:
        for d in step["found"]:
            if d["trace"]:
                d["trace"] = Path(d["trace"]).read_bytes()
    return data


def test_verify_steps_as_units_give_the_single_process_report(tmp_path, series_repo):
    """verify of a four-step branch (tests/test_verify.py's repository and stand-in engine:
    the Python model, one step crashing every walk), serial and one unit per step."""
    from refactor.execute.verify_steps import executor
    from refactor.verify import verify_branch

    repo = series_repo
    serial = verify_branch(repo, "HEAD", "series", names=None, events=3000, seed=3,
                           out_dir=tmp_path / "serial", engine=fake_engine)
    pooled = verify_branch(repo, "HEAD", "series", names=None, events=3000, seed=3,
                           out_dir=tmp_path / "pooled", engine=fake_engine,
                           execute=executor(jobs=2))
    assert _verify_dict(pooled) == _verify_dict(serial)
    assert [s.divergences > 0 for s in serial.steps] == [False, True, False, False]
    assert pooled.text() == serial.text().replace(str(tmp_path / "serial"),
                                                  str(tmp_path / "pooled"))


def test_lint_paths_as_units_print_what_one_process_prints(trees, port_mails, tmp_path):
    import shutil

    from refactor.cli import main

    mini = Path(__file__).resolve().parent.parent / "fixtures" / "mini-kvm"
    other = tmp_path / "mini-copy"
    shutil.copytree(mini, other)
    patch = tmp_path / "fix.patch"
    patch.write_text(port_mails[0].diff)
    runner = CliRunner()
    args = ["lint", str(mini), str(other), str(patch), "--format", "json"]
    one = runner.invoke(main, args + ["--jobs", "1"])
    two = runner.invoke(main, args + ["--jobs", "2"])
    assert one.exit_code == two.exit_code and one.exit_code in (0, 1), one.output
    assert two.output == one.output
    doc = json.loads(one.output)
    assert [i["kind"] for i in doc["inputs"]] == ["tree", "tree", "patch"]
    assert doc["findings"]
    bad = runner.invoke(main, ["lint", str(mini), str(tmp_path / "none.patch"),
                               "--jobs", "2"])
    assert bad.exit_code == 2 and "none.patch: no such file" in bad.output


def test_cluster_without_the_extra_names_the_install_command(monkeypatch):
    import sys

    from refactor.cli import main

    monkeypatch.setitem(sys.modules, "distributed", None)     # as if not installed
    r = CliRunner().invoke(main, ["emulate", "fuzz", "--events", "10", "--cluster",
                                  "tcp://127.0.0.1:9"])
    assert r.exit_code == 2
    assert "pip install 'kvm-refactor[cluster]'" in r.output and "Traceback" not in r.output
