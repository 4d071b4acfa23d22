"""The forward rewrite on the bundled tree and on real 6.1, 7.2 and 7.3 trees."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from refactor.cli.app import main
from refactor.index.indexer import build_index
from refactor.plan.rewrite import plan_rewrite

from conftest import FIXTURE_TREE

REMOVED = ("walk_mmu", "nested_mmu", "rsvd_bits_validate", "shadow_zero_check", "guest_rsvd_check")
FIXTURE_SOURCES = ["arch/x86/kvm/mmu/mmu.c", "arch/x86/kvm/x86.c", "arch/x86/kvm/vmx/nested.c",
                   "arch/x86/kvm/svm/nested.c"]


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def copy(tree, tmp_path, name="tree"):
    dest = tmp_path / name
    shutil.copytree(tree, dest, ignore=shutil.ignore_patterns(".kvm-refactor-fetch.json"))
    return dest


def gcc_syntax(tree) -> list[str]:
    """The mini tree is real C: compile each file (syntax and types) with gcc."""
    errors = []
    for f in FIXTURE_SOURCES:
        proc = subprocess.run(["gcc", "-fsyntax-only", "-Wall", "-Wno-unused-function", "-Wno-unused-variable",
                               "-Werror", "-I", "include", "-I", "arch/x86/include", f],
                              cwd=tree, capture_output=True, text=True)
        if proc.returncode:
            errors.append(proc.stderr)
    return errors


def removed_names_in_code(tree):
    index = build_index(tree)
    return [(r.file, r.line, r.symbol) for r in index.code_references() if r.symbol in REMOVED]


@pytest.mark.parametrize("names,gva,ngpa", [("upstream", "gva_walk", "ngpa_walk"), ("v1", "cpu_walk", "tdp_walk"),
                                            ("gva=cr3_walk,ngpa=l1_tdp_walk", "cr3_walk", "l1_tdp_walk")])
def test_fixture_rewrite_compiles_and_is_idempotent(tmp_path, names, gva, ngpa):
    tree = copy(FIXTURE_TREE, tmp_path)
    assert gcc_syntax(tree) == []
    res = run("rewrite", str(tree), "--names", names, "--in-place")
    assert res.exit_code == 0, res.output
    assert gcc_syntax(tree) == [], "rewritten mini tree does not compile"
    assert removed_names_in_code(tree) == []
    header = (tree / "arch/x86/include/asm/kvm_host.h").read_text()
    assert f"struct kvm_pagewalk {gva};" in header and f"struct kvm_pagewalk {ngpa};" in header
    again = run("rewrite", str(tree), "--names", names)
    assert again.exit_code == 0 and again.stdout == ""


def test_fixture_diff_applies_with_patch_and_git_apply(tmp_path):
    diff = run("rewrite", str(FIXTURE_TREE)).stdout
    assert diff.startswith("diff --git a/")
    for tool in (["patch", "-p1", "--dry-run", "-s"], ["git", "apply", "--check", "-"]):
        tree = copy(FIXTURE_TREE, tmp_path, tool[0])
        if tool[0] == "git":
            subprocess.run(["git", "init", "-q"], cwd=tree, check=True)
        proc = subprocess.run(tool, cwd=tree, input=diff, text=True, capture_output=True)
        assert proc.returncode == 0, proc.stderr + proc.stdout


def test_fixture_sites_follow_the_rules():
    plan = plan_rewrite(FIXTURE_TREE, "upstream")
    new = {rel: data.decode() for rel, data in plan.results.items()}
    x86 = new["arch/x86/kvm/x86.c"]
    # A local holding a named walker takes its name (restructure.toml local-named-walker).
    assert "struct kvm_pagewalk *gva_walk = &vcpu->arch.gva_walk;" in x86
    assert "return gva_walk->gva_to_gpa(vcpu, gva_walk, gva, 0, exception);" in x86
    assert "struct kvm_pagewalk *fault_walk;" in x86
    vmx = new["arch/x86/kvm/vmx/nested.c"]
    # Nested EPT setup: the code just set mmu to &guest_mmu, so the nGPA walker.
    assert "vcpu->arch.ngpa_walk.get_guest_pgd     = nested_ept_get_eptp;" in vmx
    assert "walk_mmu" not in vmx
    mmu = new["arch/x86/kvm/mmu/mmu.c"]
    assert "static inline bool is_##reg##_##name(struct kvm_pagewalk *w)" in mmu
    assert "return !!(w->cpu_role. base_or_ext . reg##_##name);" in mmu
    assert "w->fmt.permissions[byte] = ept ? 0 : is_cr0_wp(w);" in mmu
    assert "__kvm_mmu_create(vcpu, &vcpu->arch.guest_mmu, &vcpu->arch.ngpa_walk);" in mmu
    assert "mmu->w = w;" in mmu
    # A walker where a struct kvm_mmu * is still needed: the rule's builder MMU.
    assert "kvm_mmu_invalidate_addr(vcpu, &vcpu->arch.root_mmu, gva, 7);" in mmu
    assert "vcpu->arch.nested_mmu.root_role.invalid = 1;" not in mmu
    # One initialiser for the walker of the running level (rules/restructure.toml).
    assert "static void init_kvm_page_walk(struct kvm_vcpu *vcpu, struct kvm_pagewalk *w, " in mmu
    assert ("\tinit_kvm_page_walk(vcpu, &vcpu->arch.gva_walk, cpu_role);\n\n\tif (!mmu_is_nested(vcpu)) {\n"
            "\t\tif (tdp_enabled)\n\t\t\tinit_kvm_tdp_mmu(vcpu, cpu_role);\n\t\telse\n"
            "\t\t\tinit_kvm_shadow_mmu(vcpu, cpu_role);\n\t}\n") in mmu
    assert "init_kvm_nested_mmu" not in mmu and "init_kvm_softmmu" not in mmu
    mmu_h = new["arch/x86/kvm/mmu.h"]
    assert "if (!mmu_is_nested(vcpu) || w == &vcpu->arch.ngpa_walk)" in mmu_h
    # Continuation lines stay aligned under the moved parenthesis.
    tmpl = new["arch/x86/kvm/mmu/paging_tmpl.h"]
    assert "static int FNAME(walk_addr_generic)(struct guest_walker *walker,\n\t\t\t\t    struct kvm_vcpu *vcpu, struct kvm_pagewalk *w," in tmpl


def test_json_lists_every_site_with_its_rule():
    res = run("rewrite", str(FIXTURE_TREE), "--format", "json")
    data = json.loads(res.stdout)
    assert data["names"] == {"gva": "gva_walk", "ngpa": "ngpa_walk"}
    rules = {r for s in data["sites"] for r in s["rule"].split(",")}
    assert {"walk-mmu-assign", "narrow-param", "attach-walker", "layout-walker"} <= rules
    assert all({"file", "line", "old", "new", "rule"} <= set(s) for s in data["sites"])
    assert data["needs_human"] == []
    assert any(c["symbol"] == "walk_mmu" for c in data["comments"])


def test_undecidable_site_exits_3_with_file_and_line(tmp_path):
    tree = copy(FIXTURE_TREE, tmp_path)
    x86 = tree / "arch/x86/kvm/x86.c"
    x86.write_text(x86.read_text() + "\nvoid f(struct kvm_vcpu *vcpu, int x)\n{\n\tif (x)\n"
                   "\t\tvcpu->arch.walk_mmu = &vcpu->arch.root_mmu;\n}\n")
    proc = subprocess.run([sys.executable, "-m", "refactor", "rewrite", str(tree)], capture_output=True, text=True)
    assert proc.returncode == 3
    assert "arch/x86/kvm/x86.c:42: needs a human" in proc.stderr


@pytest.mark.parametrize("names,why", [("gva=1bad,ngpa=x", "not a C identifier"),
                                       ("gva=vcpu_id,ngpa=tdp_walk", "already used"),
                                       ("gva=a,ngpa=a", "different names"), ("nosuch", "unknown names preset")])
def test_bad_names_exit_2(names, why):
    proc = subprocess.run([sys.executable, "-m", "refactor", "rewrite", str(FIXTURE_TREE), "--names", names],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and why in proc.stderr and "Traceback" not in proc.stderr


def test_in_place_refuses_a_dirty_git_tree(tmp_path):
    tree = copy(FIXTURE_TREE, tmp_path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(git + ["init", "-q"], cwd=tree, check=True)
    subprocess.run(git + ["add", "-A"], cwd=tree, check=True)
    subprocess.run(git + ["commit", "-qm", "base"], cwd=tree, check=True)
    (tree / "arch/x86/kvm/x86.c").write_text("/* local work */\n")
    proc = subprocess.run([sys.executable, "-m", "refactor", "rewrite", str(tree), "--in-place"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "uncommitted changes" in proc.stderr
    assert (tree / "arch/x86/kvm/x86.c").read_text() == "/* local work */\n"


@pytest.mark.parametrize("version", ["6.1", "7.2"])
def test_real_tree_rewrite_leaves_no_old_names_and_is_idempotent(version, trees, tmp_path):
    tree = copy(trees[version], tmp_path)
    res = run("rewrite", str(tree), "--in-place")
    assert res.exit_code == 0, res.output
    assert removed_names_in_code(tree) == []
    index = build_index(tree)
    assert index.layout == "new" and sorted(index.walkers) == ["gva_walk", "ngpa_walk"]
    assert run("rewrite", str(tree)).stdout == ""


def test_new_layout_tree_is_left_alone(trees):
    plan = plan_rewrite(trees["7.3"], "upstream")
    assert plan.layout == "new" and plan.results == {} and plan.humans == []


def test_narrowing_matches_what_upstream_did(trees, indexes):
    """7.3 is upstream's result for 7.2: the functions it narrowed are ours too."""
    upstream = {n for n, sig in indexes["7.3"].program.functions.items()
                if any(t.name == "struct kvm_pagewalk" and t.depth == 1 for _, t in sig.params)}
    common = upstream & set(indexes["7.2"].program.functions)
    plan = plan_rewrite(trees["7.2"], "upstream", index=build_index(trees["7.2"]))
    narrowed = {item.split(":")[0] for item in plan.narrowed}
    attached = {"__kvm_mmu_create"}  # rules/restructure.toml gives it the walker
    assert len(common) >= 20
    # kvm_mmu_invalidate_addr was restructured upstream (it picks the MMU from the
    # walker); the rules keep it on struct kvm_mmu and pass the builder MMU instead.
    assert common - narrowed - attached == {"kvm_mmu_invalidate_addr"}


def test_every_series_stage_of_the_mini_tree_compiles(tmp_path):
    """Each step's tree (rules/steps.toml, cumulative) is valid C: the series bisects."""
    from refactor.apply.splice import write_atomic
    from refactor.rules import load_rules, load_steps, staged

    rules = load_rules()
    steps = load_steps(rules)
    index = build_index(FIXTURE_TREE)
    for k in range(1, len(steps) + 1):
        plan = plan_rewrite(FIXTURE_TREE, "v1", staged(rules, steps, k), index)
        assert plan.humans == [], steps[k - 1].id
        tree = copy(FIXTURE_TREE, tmp_path, f"stage{k}")
        for rel, data in plan.results.items():
            write_atomic(tree / rel, data)
        assert gcc_syntax(tree) == [], f"after step {k} ({steps[k - 1].id})"
    assert plan.results == plan_rewrite(FIXTURE_TREE, "v1").results
