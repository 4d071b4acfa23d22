"""One registry of rule ids: every id the tool cites resolves to an entry of rules/ with a why."""
from __future__ import annotations

import importlib
import pkgutil
import shutil

import pytest

import refactor
from refactor.plan.edits import Edit
from refactor.plan.rewrite import plan_rewrite
from refactor.rules import RULES_DIR, RulesError, cited, load_rules


def _import_everything() -> None:
    """Import every module of the package, so that every cite() has run."""
    for mod in pkgutil.walk_packages(refactor.__path__, "refactor."):
        if mod.name.startswith("refactor.rules_data") or mod.name.endswith("__main__"):
            continue
        importlib.import_module(mod.name)
    importlib.import_module("emulator.derive")


def test_every_id_the_code_cites_is_defined():
    _import_everything()
    ids = cited()
    # The modules that write ids themselves declare them (a check that cannot be empty).
    assert {"narrow-local", "narrow-param", "walker-compare", "layout-{member}", "field-{field}"} <= set(ids)
    load_rules().check_cited(ids)
    for rule_id in ids:
        entry = load_rules().registry.get(rule_id) or load_rules().families[rule_id]
        assert entry.why.strip(), rule_id


def test_an_undefined_cited_id_is_refused_at_load(tmp_path):
    rules_dir = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules_dir)
    mappings = rules_dir / "mappings.toml"
    text = mappings.read_text()
    assert '\n[[decisions]]\nid = "walker-compare"\n' in text
    mappings.write_text(text.replace('\n[[decisions]]\nid = "walker-compare"\n', '\n[[decisions]]\nid = "gone"\n'))
    with pytest.raises(RulesError, match=r"walker-compare \(cited by refactor.plan.translate\)"):
        load_rules(rules_dir)


def test_an_id_without_a_why_is_refused(tmp_path):
    rules_dir = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules_dir)
    restructure = rules_dir / "restructure.toml"
    restructure.write_text(restructure.read_text() + '\n[[drop_assignment]]\nid = "no-such-decision"\n'
                           'member = "walk_mmu"\n')
    with pytest.raises(RulesError, match="no-such-decision"):
        load_rules(rules_dir)


def test_families_expand_over_the_layout_tables():
    rules = load_rules()
    assert rules.rule("field-cpu_role").why == rules.mmu_fields["cpu_role"].why
    assert rules.rule("layout-walk_mmu").family == "layout-{member}"
    with pytest.raises(RulesError, match="not defined"):
        rules.rule("field-no_such_field")


def test_edit_rules_are_a_tuple_and_json_keeps_the_joined_string():
    e = Edit("f.c", 0, 1, "x", ("field-cpu_role", "narrow-local"))
    assert e.rules == ("field-cpu_role", "narrow-local") and e.rule == "field-cpu_role,narrow-local"
    assert Edit("f.c", 0, 1, "x", "a,b").rules == ("a", "b")  # the historic string form


@pytest.mark.parametrize("version", ["6.1", "7.2"])
def test_rewrite_json_cites_only_registered_ids(trees, indexes, version):
    rules = load_rules()
    data = plan_rewrite(trees[version], "upstream", rules, indexes[version]).to_json()
    sites = data["sites"] + data["restructured"]
    ids = {r for s in sites for r in s["rule"].split(",")}
    assert len(sites) > 100 and {"narrow-param", "walker-compare", "layout-walker", "attach-walker"} <= ids
    unknown = sorted(i for i in ids if i not in rules.registry)
    assert unknown == []
    assert all(rules.rule(i).why for i in ids)


def test_lint_fixes_name_registered_ids():
    from refactor.lint.registry import load_lint_rules

    rules = load_rules()
    for lint_rule in load_lint_rules().items:
        fix = lint_rule.fix or {}
        for value in fix.values():
            for rule_id in value if isinstance(value, list) else [value]:
                if isinstance(rule_id, str):
                    assert rule_id in rules.registry, (lint_rule.id, rule_id)


def test_every_step_of_the_series_cites_registered_ids(mini_index):
    """Commit trailers name the ids of each step's edits (series): every staged plan's ids resolve."""
    from conftest import FIXTURE_TREE
    from refactor.rules import load_steps, staged

    rules = load_rules()
    steps = load_steps(rules)
    seen: set[str] = set()
    for k in range(1, len(steps) + 1):
        plan = plan_rewrite(FIXTURE_TREE, "upstream", staged(rules, steps, k), mini_index)
        seen |= {r for e in plan.edits + plan.post_edits for r in e.rules}
    assert {"attach-walker", "narrow-param", "field-cpu_role"} <= seen
    assert sorted(i for i in seen if i not in rules.registry) == []


def test_port_roles_must_name_keys_the_tables_have(tmp_path):
    """restructure.toml [port_roles] says which keys name functions only the new layout has;
    a key the table's entries lack (a rename of the key left behind) is refused, naming
    where, rather than silently leaving a function out of the port's view."""
    edited = _rules_edited(tmp_path, lambda text: text.replace('introduces.inner = { function =',
                                                               'introduces.inner = { fnction ='))
    with pytest.raises(RulesError, match=r"port_roles\.parameterize.*fnction"):
        load_rules(edited)


def _rules_edited(tmp_path, edit):
    """A copy of rules/ whose restructure.toml is `edit(text)` (which must change it)."""
    rules_dir = tmp_path / "rules"
    shutil.copytree(RULES_DIR, rules_dir)
    restructure = rules_dir / "restructure.toml"
    text = restructure.read_text()
    restructure.write_text(edit(text))
    assert restructure.read_text() != text
    return rules_dir


def test_the_port_reads_which_functions_are_new_from_port_roles(tmp_path):
    from refactor.port.counterparts import new_layout_functions

    new = new_layout_functions(load_rules())
    assert {"init_kvm_page_walk", "__update_permission_bitmask", "spte_permission_fault",
            "update_spte_permission_bitmask"} <= set(new)
    edited = _rules_edited(tmp_path, lambda text: text[:text.index("[port_roles.spte_permissions]")])
    fewer = new_layout_functions(load_rules(edited))
    assert "spte_permission_fault" not in fewer and "init_kvm_page_walk" in fewer
