"""`kvm-refactor emulate`: exit codes, malformed traces, fuzz summary, shrinking."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulator.cli import emulate
from emulator.fuzz import random_events
from emulator.trace import TraceError, read_events

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "emulator" / "corpus"


def invoke(*args):
    return CliRunner().invoke(emulate, [str(a) for a in args])


def test_run_equal_exits_0_text_and_json():
    r = invoke("run", CORPUS / "l2_nested_npt.jsonl")
    assert r.exit_code == 0 and "agree" in r.output
    r = invoke("run", CORPUS / "pae_pdptr.jsonl", "--names", "v1", "--format", "json")
    data = json.loads(r.output)
    assert r.exit_code == 0 and data["equal"] is True and data["names"]["gva"] == "cpu_walk"


def test_run_divergence_exits_1_with_event_and_both_results():
    r = invoke("run", CORPUS / "l1_tdp.jsonl", "--mutant", "wire-wp-refresh-wrong-walker",
               "--format", "json")
    assert r.exit_code == 1
    d = json.loads(r.output)["divergence"]
    assert d["event"] >= 1 and d["line"] >= 1 and d["old"] != d["new"]
    r = invoke("run", CORPUS / "l1_tdp.jsonl", "--mutant", "wire-wp-refresh-wrong-walker")
    assert r.exit_code == 1 and "divergence at event" in r.output and "old:" in r.output


@pytest.mark.parametrize("lines, line, needle", [
    (['{"ev":"reset"}', '{"ev":"translate","addr":1}'], 2, "missing field 'access'"),
    (['{"ev":"reset"}', '{"ev":"cr0","val":1}', "{oops"], 3, "invalid JSON"),
    (['{"ev":"cr3","val":4096}'], 1, "must start with a reset"),
    (['{"ev":"reset"}', '{"ev":"warp","val":1}'], 2, "unknown or missing event type"),
    (['{"ev":"reset"}', '{"ev":"translate","addr":1,"access":"peek"}'], 2, "must be one of"),
    (['{"ev":"reset"}', '{"ev":"write","addr":-8,"val":0}'], 2, "64-bit unsigned"),
    (['{"ev":"reset"}', '', '{"ev":"nested_exit"}'], 3, "not applicable"),
    (['{"ev":"reset","tdp":false}', '{"ev":"cr0","val":65536,"passthrough":true}'], 2,
     "not applicable"),
])
def test_malformed_trace_exits_2_with_file_and_line(tmp_path, lines, line, needle):
    trace = tmp_path / "bad.jsonl"
    trace.write_text("\n".join(lines) + "\n")
    r = invoke("run", trace)
    assert r.exit_code == 2
    assert f"{trace}:{line}:" in r.output and needle in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_missing_trace_and_bad_names_exit_2(tmp_path):
    r = invoke("run", tmp_path / "nope.jsonl")
    assert r.exit_code == 2 and "nope.jsonl" in r.output
    r = invoke("run", CORPUS / "la57.jsonl", "--names", "gva=x,ngpa=x")
    assert r.exit_code == 2 and "different names" in r.output


def test_module_entry_point():
    p = subprocess.run([sys.executable, "-m", "refactor", "emulate", "run",
                        str(CORPUS / "cr0_pg0.jsonl")], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_trace_reading_is_streamed(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"ev":"reset"}\n{"ev":"cpl","val":3}\n{bad\n')
    it = read_events(trace)
    assert next(it)[1]["ev"] == "reset" and next(it)[1]["ev"] == "cpl"
    with pytest.raises(TraceError) as exc:
        next(it)
    assert exc.value.line == 3
    assert sum(1 for _ in random_events(7, 1000)) == 1000


def test_fuzz_summary_fields():
    r = invoke("fuzz", "--seed", 3, "--events", 20000, "--format", "json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    for key in ("events", "translations", "divergences", "translations_per_second"):
        assert key in s
    assert s["events"] == 20000 and s["divergences"] == 0 and s["translations"] > 5000
    # A figure, not a check: speed is measured by bench/emulator_bench.py, never asserted.
    assert s["translations_per_second"] > 0
    assert set(s["translations_per_second_by_layout"]) == {"old", "new"}


def test_fuzz_divergence_is_shrunk_and_written(tmp_path):
    r = invoke("fuzz", "--seed", 5, "--events", 20000, "--mutant", "rule-nested-fault-test-ngpa",
               "--out", tmp_path, "--format", "json")
    assert r.exit_code == 1
    s = json.loads(r.output)
    assert s["divergences"] >= 1 and s["first_divergence"]["event"] >= 1
    shrunk = Path(s["shrunk_trace"])
    assert shrunk.exists() and shrunk.parent == tmp_path
    assert s["shrunk_events"] <= 25
    # The written trace reproduces the divergence, and only against the mutant.
    assert invoke("run", shrunk, "--mutant", "rule-nested-fault-test-ngpa").exit_code == 1
    assert invoke("run", shrunk).exit_code == 0


def test_mutants_command_reports_all_killed():
    r = invoke("mutants", "--format", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["mutants"] >= 10 and data["killed"] == data["mutants"]


def test_derive_and_scenarios_commands(tmp_path):
    r = invoke("derive", "--names", "v1")
    assert r.exit_code == 0 and "vcpu.arch.cpu_walk" in r.output and "rules applied:" in r.output
    r = invoke("scenarios", "--write", tmp_path)
    assert r.exit_code == 0
    for path in CORPUS.glob("*.jsonl"):
        assert (tmp_path / path.name).read_text() == path.read_text(), path.name
