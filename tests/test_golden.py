"""Golden pairs per rule: tests/golden/<rule-id>/before.c rewritten is after.c.

Coccinelle keeps a .c/.res pair per semantic patch; this is the same habit for
every mapping rule (rules/mappings.toml bases, exprs, calls) and every
restructure rule (rules/restructure.toml).  Each case is compiled into a
minimal tree, tests/golden/_tree (the old-layout headers of fixtures/mini-kvm),
as arch/x86/kvm/golden.c, rewritten with --names upstream, and the rewritten
golden.c must be after.c byte for byte.

To add a case: write before.c (old-layout C using those headers; declare what it
calls; a file `stage` naming a rules/steps.toml step rewrites with the rules in force
after that step), then `python tests/test_golden.py RULE-ID` writes the tool's after.c for
you to review (a golden is only as good as that review) before committing both.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
COMMON = GOLDEN / "_tree"
MINI = Path(__file__).resolve().parent.parent / "fixtures" / "mini-kvm"
# The golden pairs compile against the mini tree's own headers (not a copy of them).
HEADERS = ("arch/x86/include/asm/kvm_host.h", "include/linux/kvm_host.h")


def scratch_tree(tree: Path) -> Path:
    """The golden tree: its Makefile, the mini tree's headers, an arch/x86/kvm to write into."""
    shutil.copytree(COMMON, tree)
    for rel in HEADERS:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(MINI / rel, tree / rel)
    (tree / TARGET).parent.mkdir(parents=True, exist_ok=True)
    return tree


TARGET = "arch/x86/kvm/golden.c"

# Ids that name a mapping the rewrite applies through another rule's edit, so its
# output cites that other id (lint and the emulator's derivation cite these).
CITED_AS_OTHERS = {
    "root-mmu-walker": "a root_mmu read as a walker is part of the field's edit (field-*)",
    "guest-mmu-walker": "a guest_mmu read as a walker is part of the field's edit (field-*)",
    "fault-mmu-walker": "vcpu->arch.mmu read as a walker is part of the field's or call's edit",
    "mmu-pointer-walker": "a struct kvm_mmu * read as a walker is part of the field's or call's edit",
    # Gaps: the rewrite applies these rules but its output names another id (kept as it is,
    # since the output must not change silently; see the issue 9 report).
    "walk-mmu-as-builder": "gap: the converted argument's edit names walk-mmu",
    "nested-mmu-as-builder": "gap: the converted argument's edit names nested-mmu",
    "mbec-on-walker": "gap: the changed call's edit names narrow-call",
}


def _cases() -> list[str]:
    return sorted(p.name for p in GOLDEN.iterdir() if p.is_dir() and not p.name.startswith("_"))


def rule_ids(rules) -> dict[str, str]:
    """Every mapping and restructure rule id, with the table it comes from."""
    out = {}
    for b in rules.bases:
        out[b.id] = "mappings.toml [[bases]]"
    for e in rules.exprs:
        out[e.id] = "mappings.toml [[exprs]]"
    for c in rules.calls:
        out[c.id] = "mappings.toml [[calls]]"
    for kind, entries in rules.restructure.items():
        if kind == "prerequisite":     # checks a tree, edits nothing: test_a_missing_prerequisite...
            continue
        for r in entries:
            out.setdefault(r.id, f"restructure.toml [[{kind}]]")
    return out


def rewrite_case(case: str, work: Path):
    """(plan, rewritten golden.c) of one case."""
    from refactor.index.indexer import build_index
    from refactor.plan.rewrite import plan_rewrite
    from refactor.rules import load_rules, load_steps, staged

    tree = work / "tree"
    scratch_tree(tree)
    target = tree / TARGET
    target.write_bytes((GOLDEN / case / "before.c").read_bytes())
    rules = load_rules()
    stage = GOLDEN / case / "stage"
    if stage.is_file():
        # A rule that only acts part-way (rules/steps.toml): the rules in force after that step.
        steps = load_steps(rules)
        step = stage.read_text().strip()
        upto = next((i + 1 for i, s in enumerate(steps) if s.id == step), None)
        assert upto is not None, f"{case}/stage: no step {step!r} in rules/steps.toml"
        rules = staged(rules, steps, upto)
    # The index is read with the whole refactor's rules, as `series` reads it (a stage's
    # rules still keep the members a later step removes, so its layout would be unknown).
    plan = plan_rewrite(tree, "upstream", rules, build_index(tree, load_rules()))
    return plan, plan.results.get(TARGET, target.read_bytes())


@pytest.mark.parametrize("case", _cases())
def test_golden_pair(case, tmp_path):
    before = (GOLDEN / case / "before.c").read_bytes()
    after = (GOLDEN / case / "after.c").read_bytes()
    assert before != after, f"{case}: a golden pair shows a change"
    plan, out = rewrite_case(case, tmp_path)
    assert out.decode() == after.decode(), f"{case}: rewrite of before.c is not after.c"
    cited = {r for e in plan.edits + plan.post_edits if e.file == TARGET for r in e.rules}
    if case not in CITED_AS_OTHERS:
        assert case in cited, f"{case}: the rewrite of before.c does not apply rule {case} (cites {sorted(cited)})"


def test_every_rule_has_a_golden_pair():
    from refactor.rules import load_rules

    ids = rule_ids(load_rules())
    have = {c for c in _cases() if (GOLDEN / c / "before.c").is_file() and (GOLDEN / c / "after.c").is_file()}
    missing = sorted(set(ids) - have)
    assert not missing, (
        "rules without a golden pair: "
        + ", ".join(f"{i} ({ids[i]})" for i in missing)
        + ".  For each, add tests/golden/<id>/before.c: old-layout C that the rule changes, compiled "
        "as arch/x86/kvm/golden.c against the headers of tests/golden/_tree; then run "
        "`.venv/bin/python tests/test_golden.py <id>` to write tests/golden/<id>/after.c, review it, "
        "and commit both files.")
    stale = sorted(have - set(ids))
    assert not stale, f"golden pairs for rules that no longer exist: {stale}"


def test_walker_to_a_declared_only_function(tmp_path):
    # Was a bug: callees were resolved from definitions only, so a walker passed to a
    # function the tree only declares was left a struct (`vcpu->arch.gva_walk`).
    tree = tmp_path / "tree"
    scratch_tree(tree)
    (tree / TARGET).write_text(
        "#include <linux/kvm_host.h>\n\n"
        "void kvm_mmu_free_roots(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu, unsigned long roots);\n\n"
        "void f(struct kvm_vcpu *vcpu)\n{\n\tkvm_mmu_free_roots(vcpu, vcpu->arch.walk_mmu, 1);\n}\n")
    from refactor.plan.rewrite import plan_rewrite

    out = plan_rewrite(tree, "upstream").results[TARGET].decode()
    assert "kvm_mmu_free_roots(vcpu, &vcpu->arch.root_mmu, 1);" in out


def test_walker_to_an_unknown_function_is_a_human_site(tmp_path):
    """Neither defined nor declared: the rewrite cannot know what it takes, so it says so
    (it used to pass the walker struct itself where a pointer was)."""
    tree = tmp_path / "tree"
    scratch_tree(tree)
    (tree / TARGET).write_text("#include <linux/kvm_host.h>\n\n"
                               "void f(struct kvm_vcpu *vcpu)\n{\n\tunknown_helper(vcpu, vcpu->arch.walk_mmu);\n}\n")
    from refactor.plan.rewrite import plan_rewrite

    plan = plan_rewrite(tree, "upstream")
    assert "arch.gva_walk" not in plan.results.get(TARGET, b"").decode()
    assert any(h.file == TARGET and h.line == 5 and "unknown_helper() is neither defined nor declared"
               in h.why for h in plan.humans)


PKRU_BUILDER = """#include <linux/kvm_host.h>

static void update_pkru_bitmask(struct kvm_vcpu *vcpu, struct kvm_mmu *mmu, bool ept)
{
	unsigned int bit;

%s	if (ept) {
%s		return;
	}
	for (bit = 0; bit < 16; ++bit)
		mmu->pkru_mask |= 3u << bit;
}

void g(struct kvm_vcpu *vcpu)
{
	update_pkru_bitmask(vcpu, vcpu->arch.walk_mmu, false);
}
"""


@pytest.mark.parametrize("reset_first", [False, True])
def test_a_missing_prerequisite_is_a_site_for_a_human(tmp_path, reset_first):
    """restructure.toml [[prerequisite]]: a builder that ORs into pkru_mask and resets it only
    on an early return (5.10's shape) would leak one walk's mask into the other's once the
    walker is shared: a site at the accumulating line naming the fix; reset first, none."""
    from refactor.plan.rewrite import plan_rewrite

    tree = tmp_path / "tree"
    scratch_tree(tree)
    (tree / TARGET).write_text(PKRU_BUILDER % (("\tmmu->pkru_mask = 0;\n", "")
                                               if reset_first else ("", "\t\tmmu->pkru_mask = 0;\n")))
    plan = plan_rewrite(tree, "upstream")
    sites = [(h.file, h.line) for h in plan.humans if "prereq-pkru-mask-reset" in h.why]
    assert sites == ([] if reset_first else [(TARGET, 12)])
    assert plan.results[TARGET] != (tree / TARGET).read_bytes()    # rewritten all the same


def test_attach_member_after_a_returned_call(tmp_path):
    # Was a bug: restructure.toml [[attach_member]] inserted the attachment after the last
    # statement calling __kvm_mmu_create, so after `return` when that statement is one.
    tree = tmp_path / "tree"
    scratch_tree(tree)
    before = (GOLDEN / "attach-walker" / "before.c").read_text()
    assert "\treturn __kvm_mmu_create(vcpu, &vcpu->arch.root_mmu);\n}" in before
    (tree / TARGET).write_text(before)
    from refactor.index.indexer import build_index
    from refactor.plan.rewrite import plan_rewrite
    from refactor.rules import load_rules, load_steps, staged

    rules = load_rules()
    stage = staged(rules, load_steps(rules), 1)
    plan = plan_rewrite(tree, "upstream", stage, build_index(tree, rules))
    out = plan.results[TARGET].decode()
    assert "nested_mmu.w = &vcpu->arch.gva_walk;\n}" not in out  # not the dead line after `return`
    assert out.index("nested_mmu.w =") < out.index("return __kvm_mmu_create(vcpu, &vcpu->arch.root_mmu")
    assert "\treturn ret;\n\n\tvcpu->arch.nested_mmu.w = &vcpu->arch.gva_walk;\n\n\treturn __kvm_mmu_create(" in out
    # A second run over the result attaches nothing again.
    for rel, data in plan.results.items():
        (tree / rel).write_bytes(data)
    again = plan_rewrite(tree, "upstream", stage, build_index(tree, rules)).results
    assert again.get(TARGET, (tree / TARGET).read_bytes()).decode().count("nested_mmu.w =") == 1


if __name__ == "__main__":  # write after.c of the named cases, for review
    import tempfile

    sys.path.insert(0, str(GOLDEN.parent.parent))
    for name in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as tmp:
            _, text = rewrite_case(name, Path(tmp))
        (GOLDEN / name / "after.c").write_bytes(text)
        print(f"wrote tests/golden/{name}/after.c: review it")
