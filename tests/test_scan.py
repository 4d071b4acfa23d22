"""scan on the bundled tree and on bad input: the JSON contract and exit codes."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from refactor.cli.app import main
from refactor.index.indexer import build_index

from conftest import FIXTURE_TREE


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_json_contract_on_bundled_tree():
    res = run("scan", str(FIXTURE_TREE), "--format", "json")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    assert {"tree", "version", "layout", "references", "unparsed"} <= set(data)
    assert data["version"] == "7.2.0-mini" and data["layout"] == "old"
    for ref in data["references"]:
        assert {"file", "line", "column", "symbol", "context", "function", "expression", "use"} <= set(ref)
        assert not ref["file"].startswith("/")
        assert ref["line"] >= 1 and ref["context"] in ("code", "comment", "string")
    by = {(r["file"], r["line"], r["symbol"]): r for r in data["references"]}
    wr = by[("arch/x86/kvm/x86.c", 36, "walk_mmu")]
    assert wr["function"] == "kvm_arch_vcpu_ioctl_translate"
    arg = [r for r in data["references"] if r["symbol"] == "walk_mmu" and r.get("callee") == "kvm_mmu_invalidate_addr"]
    assert arg and arg[0]["argument_index"] == 1 and arg[0]["use"] == "argument"


def test_comments_and_strings_are_not_code(mini_index):
    texts = [r for r in mini_index.references if r.symbol == "walk_mmu" and r.context != "code"]
    assert {r.context for r in texts} == {"comment", "string"}
    assert all(r.use == "text" for r in texts)


def test_flow_and_typing_on_fixture(mini_index):
    refs = {(r.function, r.symbol, r.line): r for r in mini_index.code_references()}
    ept = refs[("nested_ept_init_mmu_context", "get_guest_pgd", 17)]
    assert ept.known_target == "&vcpu->arch.guest_mmu" and ept.use == "write"
    local = refs[("kvm_mmu_gva_to_gpa_read", "gva_to_gpa", 19)]
    assert local.base_type == "struct kvm_mmu *" and local.base_values == ["vcpu->arch.walk_mmu"]
    tmpl = [r for r in mini_index.code_references() if r.function == "FNAME(walk_addr_generic)"]
    assert any(r.symbol == "cpu_role" and r.base_type == "struct kvm_mmu *" for r in tmpl)


def test_text_output_groups_by_function():
    res = run("scan", str(FIXTURE_TREE))
    assert res.exit_code == 0
    assert "arch/x86/kvm/x86.c: kvm_mmu_gva_to_gpa_read" in res.output
    assert "layout: old" in res.output


@pytest.mark.parametrize("args", [["scan", "/nonexistent/tree"], ["scan", str(FIXTURE_TREE / "Makefile")]])
def test_bad_tree_is_one_line_exit_2(args):
    proc = subprocess.run([sys.executable, "-m", "refactor", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_files_are_reported_not_fatal(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(FIXTURE_TREE, tree)
    kvm = tree / "arch/x86/kvm"
    (kvm / "empty.c").write_bytes(b"")
    (kvm / "latin1.c").write_bytes(b"/* caf\xe9 */\nint f(struct kvm_vcpu *vcpu) { return !!vcpu->arch.walk_mmu; }\n")
    (kvm / "blob.h").write_bytes(b"\x00\x01walk_mmu\x00" * 10)
    # Something tree-sitter cannot read: the reference inside must survive.
    (kvm / "weird.c").write_bytes(b"void g(struct kvm_vcpu *vcpu)\n{\n\tasm goto(: : : : label)\n"
                                  b"\t\t.ifc %r15 vcpu->arch.walk_mmu @@ ;\n}\n")
    index = build_index(tree)
    reasons = {u["file"]: u["reason"] for u in index.unparsed if "line" not in u}
    assert reasons["arch/x86/kvm/empty.c"] == "empty file"
    assert reasons["arch/x86/kvm/blob.h"] == "binary file"
    assert reasons["arch/x86/kvm/latin1.c"].startswith("not UTF-8")
    latin = [r for r in index.code_references() if r.file == "arch/x86/kvm/latin1.c"]
    assert [r.symbol for r in latin] == ["walk_mmu"]
    weird = [r for r in index.code_references() if r.file == "arch/x86/kvm/weird.c" and r.symbol == "walk_mmu"]
    assert weird and weird[0].via == "token" and weird[0].region == "error"
    assert any(u["file"] == "arch/x86/kvm/weird.c" and "line" in u for u in index.unparsed)
    res = run("scan", str(tree), "--format", "json")
    assert res.exit_code == 0


def test_warm_scan_uses_cache(tmp_path, monkeypatch):
    from refactor.index import indexer as index_mod

    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(tmp_path / "c"))
    first = index_mod.scan_tree(FIXTURE_TREE)
    calls = []
    monkeypatch.setattr(index_mod, "build_index", lambda *a, **k: calls.append(1))
    second = index_mod.scan_tree(FIXTURE_TREE)
    assert not calls
    assert [r.to_json() for r in second.references] == [r.to_json() for r in first.references]
