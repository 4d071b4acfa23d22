"""Both layouts agree on every scenario under any walker names; the new layout is
derived from the old one through the rules, so wrong rules and wrong wirings diverge."""
from __future__ import annotations

import shutil

import pytest

from emulator.derive import derive_source
from emulator.machine import new_model, old_model
from emulator.mutants import MUTANTS, run_mutants
from emulator.scenarios import SCENARIOS, scenario_events
from emulator.trace import read_events, run_pair
from refactor.rules import load_rules


def _pairs(events):
    return enumerate(events, 1)


@pytest.mark.parametrize("preset", ["upstream", "v1"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_equal_in_both_layouts(name, preset):
    rules = load_rules()
    report = run_pair(_pairs(scenario_events(name)), old_model(rules),
                      new_model(rules, rules.names(preset)))
    assert report.divergence is None, report.divergence
    assert report.translations > 0


def test_custom_names_agree_and_appear_in_the_model():
    rules = load_rules()
    names = rules.names("gva=l2_or_l1_walk,ngpa=nested_stage_walk")
    source = derive_source(rules, names)
    assert "vcpu.arch.l2_or_l1_walk" in source and "vcpu.arch.nested_stage_walk" in source
    report = run_pair(_pairs(scenario_events("l2_nested_ept")), old_model(rules),
                      new_model(rules, names))
    assert report.divergence is None


def test_derived_model_has_no_old_walker_paths():
    rules = load_rules()
    source = derive_source(rules, rules.names("upstream"))
    body = source.split('"""', 2)[2]           # skip the module docstring
    code = "\n".join(line.split("#")[0] for line in body.splitlines())
    assert "arch.walk_mmu" not in code and "arch.nested_mmu" not in code
    assert ".permissions" not in code.replace(".fmt.permissions", "")
    assert "guest_rsvd_check" not in code
    # nested EPT/NPT setup writes into the nGPA walker (known_guest_mmu rule)
    assert "vcpu.arch.ngpa_walk.inject_page_fault = nested_ept_inject_page_fault" in code
    assert "if not mmu_is_nested(vcpu) or w == vcpu.arch.ngpa_walk:" in code


def test_wrong_rule_in_toml_shows_up_as_divergence(tmp_path):
    rules_dir = tmp_path / "rules"
    shutil.copytree(load_rules().directory, rules_dir)
    mappings = rules_dir / "mappings.toml"
    text = mappings.read_text()
    # Send guest_mmu's walker to the GVA walker: a plausible one-word slip.
    right = 'new = "vcpu->arch.{ngpa}"\nnew_is = "obj"\nwhy = "guest_mmu.w'
    assert right in text
    mappings.write_text(text.replace(right, right.replace("{ngpa}", "{gva}")))
    bad = load_rules(rules_dir)
    good = load_rules()
    names = good.names("upstream")
    diverged = []
    for name in ("l2_nested_ept", "l1_tdp", "l2_nested_npt"):
        report = run_pair(_pairs(scenario_events(name)), old_model(good), new_model(bad, names))
        diverged.append(report.divergence is not None)
    assert any(diverged)


@pytest.mark.parametrize("preset", ["upstream", "v1"])
def test_every_mutant_is_killed(preset):
    rules = load_rules()
    result = run_mutants(rules, rules.names(preset))
    assert result["mutants"] == len(MUTANTS) >= 10
    assert {m.kind for m in MUTANTS} == {"rule", "wiring"}
    survivors = [r["name"] for r in result["results"] if not r["killed"]]
    assert not survivors
    assert result["killed"] == result["mutants"]


def test_corpus_matches_the_scenario_library():
    from emulator.mutants import corpus_files

    files = {p.stem: p for p in corpus_files()}
    assert set(files) == set(SCENARIOS)
    for name, path in files.items():
        assert [ev for _n, ev in read_events(path)] == scenario_events(name), name


def test_derivation_uses_every_mapping_rule():
    rules = load_rules()
    source = derive_source(rules, rules.names("upstream"))
    header = " ".join(line[1:] for line in source.splitlines()[:12] if line.startswith("#"))
    used = header.split("rules applied:")[1].split("narrowed to")[0]
    for base in rules.bases:
        assert base.id in used, base.id
    assert "(known_guest_mmu)" in used
    # The expression rules the old-layout model has occasion to use (others, such as
    # C type renames, have no counterpart in Python).
    for expr_id in ("walk-mmu-compare", "walk-mmu-assign", "walker-builder-field-on-nested-mmu",
                    "nested-mmu-compare"):
        assert expr_id in used, expr_id
