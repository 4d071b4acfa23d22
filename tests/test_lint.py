"""lint on real trees and on patches made from them: every rule fires, and is silent on correct code."""
from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from refactor.cli.lint import lint_cmd
from refactor.lint.engine import lint_patches, lint_tree
from refactor.lint.registry import load_lint_rules
from refactor.rules import load_rules

from conftest import FIXTURE_TREE


def run(*args, input=None):
    return CliRunner().invoke(lint_cmd, [str(a) for a in args], input=input, catch_exceptions=False)


def make_patch(tree: Path, rel: str, edits: list[tuple[str, str]], subject: str | None = None) -> str:
    """A unified diff of `rel` in `tree` after string replacements (each must apply once)."""
    before = (tree / rel).read_text()
    after = before
    for old, new in edits:
        assert after.count(old) == 1, f"edit not unique in {rel}: {old!r}"
        after = after.replace(old, new)
    diff = "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                        f"a/{rel}", f"b/{rel}"))
    head = f"diff --git a/{rel} b/{rel}\n"
    if subject:
        head = (f"From 0123456789abcdef0123456789abcdef01234567 Mon Sep 17 00:00:00 2001\n"
                f"From: A U Thor <a@example.org>\nDate: Mon, 1 Jan 2026 00:00:00 +0000\n"
                f"Subject: [PATCH] {subject}\n\nBody.\n\nSigned-off-by: A U Thor <a@example.org>\n---\n"
                f" {rel} | 2 +-\n 1 file changed\n\n") + head
        return head + diff + "-- \n2.43.0\n\n"
    return head + diff


def added_lines(patch: str) -> set[int]:
    from refactor.frontend.patch import parse_patches

    return {n for p in parse_patches(patch) for fp in p.files for n in fp.added()}


# ---- trees -------------------------------------------------------------------

@pytest.fixture(scope="module")
def lint72(trees, indexes):
    return lint_tree(trees["7.2"], index=indexes["7.2"])


def test_73_is_clean(trees, indexes):
    _, found = lint_tree(trees["7.3"], index=indexes["7.3"])
    assert found == []
    res = run(trees["7.3"])
    assert res.exit_code == 0 and res.stdout == ""


def test_72_every_old_layout_reference_is_a_finding(trees, lint72):
    rules = load_rules()
    index, found = lint72
    assert index.layout == "old"
    at = {(f.file, f.line, f.column) for f in found}
    old_refs = [r for r in index.code_references()
                if (r.kind == "vcpu_member" and rules.vcpu_old[r.symbol].removed)
                or (r.kind == "mmu_field" and r.symbol in rules.mmu_fields
                    and (rules.mmu_fields[r.symbol].moves_to_walker or rules.mmu_fields[r.symbol].path != r.symbol))
                or (r.kind == "type" and r.symbol == rules.types["old_format"])]
    assert len(old_refs) > 100
    missing = [r for r in old_refs if (r.file, r.line, r.column + 1) not in at]
    assert missing == []
    # Besides them: only the other sites the rewriter edits (narrowed parameters, calls...).
    others = [f for f in found if f.rule == "KVM100"]
    assert len(found) == len(old_refs) + len(others)
    assert {f.rule for f in found} == {"KVM001", "KVM002", "KVM003", "KVM004", "KVM100"}
    assert all(f.fix is not None for f in found)
    res = run(trees["7.2"], "--format", "json")
    assert res.exit_code == 1
    assert len(json.loads(res.stdout)["findings"]) == len(found)


def test_72_fixes_are_the_rewriters_edits(trees, indexes, lint72):
    from refactor.plan.edits import DROP
    from refactor.plan.rewrite import plan_rewrite

    _, found = lint72
    plan = plan_rewrite(trees["7.2"], "upstream", index=indexes["7.2"])
    new_by_old = {}
    for e in plan.edits:
        new_by_old.setdefault((e.file, " ".join(e.old.split())[:200]), set()).add("" if e.new == DROP else e.new)
    unplanned = []
    for f in found:
        if (f.file, f.expression) in new_by_old:
            assert f.fix in new_by_old[(f.file, f.expression)], f
        else:
            unplanned.append(f)  # a site the rewriter does not edit: the fix comes from mappings.toml
    assert len(unplanned) <= 2 and all(f.fix for f in unplanned)
    by = {(f.file, f.line, f.rule): f for f in found}
    assert by[("arch/x86/kvm/mmu/mmu.c", 6899, "KVM001")].fix == ""  # walk_mmu assignment: dropped
    assert "vcpu->arch.mmu->fmt" in by[("arch/x86/kvm/mmu/mmu.c", 4499, "KVM003")].fix
    assert any(f.rule == "KVM100" and f.fix.startswith("struct kvm_pagewalk *") for f in found)
    # The same rules under other walker names.
    _, v1 = lint_tree(trees["7.2"], index=indexes["7.2"], names="v1")
    assert any("cpu_walk" in (f.fix or "") for f in v1) and not any("gva_walk" in (f.fix or "") for f in v1)


def test_fixes_from_mappings_where_there_is_no_plan(trees):
    # A patch has no rewrite plan: its fixes come from mappings.toml through refactor.rules.
    rel = "arch/x86/kvm/regs.c"
    anchor = "int load_pdptrs(struct kvm_vcpu *vcpu, unsigned long cr3)\n{\n"
    patch = make_patch(trees["7.2"], rel, [(anchor, anchor + "\tstruct kvm_mmu *m2 = vcpu->arch.walk_mmu;\n"
                                                     "\tm2->cpu_role.base.level = 0;\n")])
    fixes = {f.rule: f.fix for f in lint_patches(patch, "p")}
    assert fixes == {"KVM001": "&vcpu->arch.gva_walk", "KVM002": "m2->w->cpu_role"}


def test_mini_tree_and_known_guest_mmu(mini_index):
    _, found = lint_tree(FIXTURE_TREE, index=mini_index)
    ept = [f for f in found if f.function == "nested_ept_init_mmu_context" and f.rule == "KVM002"]
    assert ept and all(f.fix.startswith("vcpu->arch.ngpa_walk.") for f in ept)


# ---- patches: old names back in 7.3 -------------------------------------------

WALK_MMU_BACK = [("""	struct kvm_pagewalk *gva_walk = &vcpu->arch.gva_walk;

	return gva_walk->gva_to_gpa(vcpu, gva_walk, gva, 0, exception);""",
                  """	struct kvm_mmu *mmu = vcpu->arch.walk_mmu;

	return mmu->gva_to_gpa(vcpu, mmu, gva, 0, exception);""")]


@pytest.mark.parametrize("with_tree", [False, True])
def test_patch_bringing_walk_mmu_back(trees, tmp_path, with_tree):
    patch = make_patch(trees["7.3"], "arch/x86/kvm/x86.c", WALK_MMU_BACK)
    f = tmp_path / "walk.patch"
    f.write_text(patch)
    args = [f, "--format", "json"] + (["--tree", trees["7.3"]] if with_tree else [])
    res = run(*args)
    assert res.exit_code == 1
    found = json.loads(res.stdout)["findings"]
    assert {(x["rule"], x["line"]) for x in found} == {("KVM001", 4824), ("KVM002", 4826)}
    assert {x["line"] for x in found} <= added_lines(patch)
    kvm001 = next(x for x in found if x["rule"] == "KVM001")
    assert kvm001["file"] == "arch/x86/kvm/x86.c" and kvm001["column"] == 35
    assert kvm001["fix"] == "&vcpu->arch.gva_walk"


def test_patch_findings_only_on_added_lines_with_new_numbers(trees):
    # On 7.2 every walk_mmu is a finding: the context lines of this patch have
    # some, and only the added line may be reported, at its post-image line.
    rel = "arch/x86/kvm/x86.c"
    patch = make_patch(trees["7.2"], rel, [
        ("void kvm_fixup_and_inject_pf_error(struct kvm_vcpu *vcpu, gva_t gva, u16 error_code)\n{\n",
         "void kvm_fixup_and_inject_pf_error(struct kvm_vcpu *vcpu, gva_t gva, u16 error_code)\n{\n"
         "\t/* one line more */\n\tstruct kvm_mmu *again = vcpu->arch.walk_mmu;\n"),
    ])
    found = lint_patches(patch, "p", names=None)
    src = (trees["7.2"] / rel).read_text().splitlines()
    decl = next(i for i, l in enumerate(src, 1) if l.startswith("void kvm_fixup_and_inject_pf_error"))
    assert [(f.rule, f.line) for f in found] == [("KVM001", decl + 3)]
    assert "walk_mmu" in src[decl + 1]  # the context line below it also names walk_mmu, unreported


def test_text_output_is_compiler_like(trees, tmp_path):
    f = tmp_path / "walk.patch"
    f.write_text(make_patch(trees["7.3"], "arch/x86/kvm/x86.c", WALK_MMU_BACK))
    res = run(f)
    first = res.stdout.splitlines()[0]
    assert first.startswith("arch/x86/kvm/x86.c:4824:35: error: ") and first.endswith("[KVM001]")
    assert "1 errors" not in res.stderr and "2 errors" in res.stderr


def test_stdin_and_mbox_series(trees):
    t = trees["7.3"]
    p1 = make_patch(t, "arch/x86/kvm/regs.c", [("\tint ret;\n\tu64 pdpte", "\tint ret; /* ok */\n\tu64 pdpte")],
                    subject="KVM: x86: a harmless change")
    p2 = make_patch(t, "arch/x86/kvm/x86.c", WALK_MMU_BACK, subject="KVM: x86: bring walk_mmu back")
    res = run("-", "--format", "json", input=p1 + p2)
    assert res.exit_code == 1
    found = json.loads(res.stdout)["findings"]
    assert {x["patch"] for x in found} == {"KVM: x86: bring walk_mmu back"}
    res = run("-", input=p1)
    assert res.exit_code == 0


# ---- bad input -------------------------------------------------------------------

def test_not_a_patch_exits_2(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("just some prose\n--- not a diff\n")
    res = run(f)
    assert res.exit_code == 2
    assert str(f) in res.stderr and "not a patch" in res.stderr and "Traceback" not in res.stderr
    b = tmp_path / "blob.bin"
    b.write_bytes(b"\0\1\2")
    assert "binary file" in run(b).stderr
    assert run(tmp_path / "missing.patch").exit_code == 2
    assert "not a directory" not in run(tmp_path).stderr  # a directory is a tree
    assert run(tmp_path).exit_code == 2


def test_truncated_hunk_exits_2(tmp_path):
    f = tmp_path / "cut.patch"
    f.write_text("--- a/x.c\n+++ b/x.c\n@@ -1,5 +1,6 @@\n int a;\n+int b;\n")
    res = run(f)
    assert res.exit_code == 2 and "cut.patch:3" in res.stderr and "truncated" in res.stderr


# ---- baseline and SARIF ----------------------------------------------------------

def test_baseline_round_trip(trees, tmp_path):
    base = tmp_path / "baseline.json"
    assert run(FIXTURE_TREE).exit_code == 1
    res = run(FIXTURE_TREE, "--write-baseline", base)
    assert res.exit_code == 0 and base.exists()
    res = run(FIXTURE_TREE, "--baseline", base)
    assert res.exit_code == 0 and "suppressed by the baseline" in res.stderr
    base72 = tmp_path / "baseline72.json"
    assert run(trees["7.2"], "--write-baseline", base72).exit_code == 0
    # The patch brings back 7.2's own line: same rule, file, function and text, so suppressed...
    f = tmp_path / "old.patch"
    f.write_text(make_patch(trees["7.3"], "arch/x86/kvm/x86.c", WALK_MMU_BACK))
    assert run(f, "--baseline", base72).exit_code == 0
    # ...while a new line is not in the baseline.
    f = tmp_path / "new.patch"
    f.write_text(make_patch(trees["7.3"], "arch/x86/kvm/x86.c", [(
        "	return gva_walk->gva_to_gpa(vcpu, gva_walk, gva, 0, exception);",
        "	WARN_ON(!vcpu->arch.walk_mmu);\n\treturn gva_walk->gva_to_gpa(vcpu, gva_walk, gva, 0, exception);")]))
    assert run(f, "--baseline", base72).exit_code == 1
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    res = run(trees["7.3"], "--baseline", bad)
    assert res.exit_code == 2 and "bad.json" in res.stderr


def test_sarif_shape(trees, tmp_path):
    f = tmp_path / "walk.patch"
    f.write_text(make_patch(trees["7.3"], "arch/x86/kvm/x86.c", WALK_MMU_BACK))
    res = run(f, "--format", "sarif")
    doc = json.loads(res.stdout)
    assert doc["version"] == "2.1.0" and "sarif" in doc["$schema"]
    driver = doc["runs"][0]["tool"]["driver"]
    ids = [r["id"] for r in driver["rules"]]
    assert ids == [r.id for r in load_lint_rules().items]
    for rule in driver["rules"]:
        assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note")
        assert rule["shortDescription"]["text"] and rule["help"]["text"]
    results = doc["runs"][0]["results"]
    assert {r["ruleId"] for r in results} == {"KVM001", "KVM002"}
    for r in results:
        assert r["level"] == "error" and r["message"]["text"]
        assert ids[r["ruleIndex"]] == r["ruleId"]
        loc = r["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uri"] == "arch/x86/kvm/x86.c"
        assert loc["region"]["startLine"] >= 1 and loc["region"]["startColumn"] >= 1


def test_walker_names_read_from_a_renamed_tree(trees, tmp_path):
    # A 7.3 tree whose walkers have names no preset knows: roles come from pairing
    # with root_mmu/guest_mmu (layout.toml), the tree stays clean, fixes use its names.
    src, dst = trees["7.3"], tmp_path / "renamed"
    for path in src.rglob("*"):
        if path.is_file():
            rel = path.relative_to(src)
            out = dst / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            data = path.read_bytes()
            if path.suffix in (".c", ".h"):
                data = data.replace(b"ngpa_walk", b"beta_walk").replace(b"gva_walk", b"alpha_walk")
            out.write_bytes(data)
    index, found = lint_tree(dst, use_cache=False)
    assert index.layout == "new" and set(index.walkers) == {"alpha_walk", "beta_walk"}
    assert found == []
    f = tmp_path / "walk.patch"
    f.write_text(make_patch(dst, "arch/x86/kvm/x86.c", [(a.replace("gva_walk", "alpha_walk"), b)
                                                       for a, b in WALK_MMU_BACK]))
    res = run(f, "--tree", dst, "--format", "json")
    fixes = {x["rule"]: x.get("fix") for x in json.loads(res.stdout)["findings"]}
    assert fixes["KVM001"] == "&vcpu->arch.alpha_walk"
