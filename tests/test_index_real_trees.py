"""The index on real kernel trees: complete, typed, with the right layout."""
from __future__ import annotations

from collections import Counter

import pytest

from refactor.frontend.lexer import tokens
from refactor.frontend.macros import mask
from refactor.frontend.parse import LANGUAGE
from refactor.frontend.source import discover

# Names that only ever mean the refactor's fields and types in KVM code.
DISTINCT = {"walk_mmu", "nested_mmu", "root_mmu", "guest_mmu", "get_guest_pgd", "get_pdptr",
            "inject_page_fault", "gva_to_gpa", "cpu_role", "pkru_mask", "guest_rsvd_check",
            "shadow_zero_check", "rsvd_bits_validate", "kvm_pagewalk", "kvm_page_format",
            "gva_walk", "ngpa_walk", "kvm_mmu"}


def _lexer_occurrences(tree):
    """Every occurrence of DISTINCT by the plain tokenizer (not the names regex)."""
    out = {}
    for sf in discover(tree):
        if sf.type_only:
            continue
        for tok in tokens(sf.data, None):
            if tok.name in DISTINCT:
                out[(sf.rel, tok.start)] = tok.context
    return out


def _name_at(tree, key):
    rel, start = key
    data = (tree / rel).read_bytes()
    end = start
    while end < len(data) and (data[end:end + 1].isalnum() or data[end:end + 1] == b"_"):
        end += 1
    return data[start:end].decode()


@pytest.mark.parametrize("version", ["6.1", "7.2", "7.3"])
def test_every_code_occurrence_is_indexed_and_no_comment_is_code(version, trees, indexes):
    expected = _lexer_occurrences(trees[version])
    index = indexes[version]
    got = {(r.file, r.start): r.context for r in index.references}
    code = {k for k, c in expected.items() if c == "code"}
    missing = sorted(code - {k for k, c in got.items() if c == "code"})
    assert not missing, f"{len(missing)} code occurrences not indexed, e.g. {missing[:5]}"
    wrongly_code = [k for k, c in got.items() if c == "code" and expected.get(k, "code") != "code"]
    assert not wrongly_code, f"comment/string text reported as code: {wrongly_code[:5]}"
    if version == "7.2":
        # About 200 occurrences of the moving names (the type name aside) in code.
        moving = [k for k in code if _name_at(trees[version], k) != "kvm_mmu"]
        assert 180 <= len(moving) <= 260


def test_versions_and_layouts(indexes):
    assert indexes["6.1"].version.startswith("6.1.")
    assert indexes["7.2"].version.startswith("7.2.")
    assert indexes["7.3"].version.startswith("7.3.")
    assert indexes["6.1"].layout == "old"
    assert indexes["7.2"].layout == "old"
    assert indexes["7.3"].layout == "new"
    assert sorted(indexes["7.3"].walkers) == ["gva_walk", "ngpa_walk"]


def test_vcpu_arch_mmu_is_typed_not_guessed(indexes):
    refs = [r for r in indexes["7.2"].code_references() if r.symbol == "mmu"]
    assert len(refs) >= 60
    typed = [r for r in refs if r.via == "tree"]
    assert all(r.base_type == "struct kvm_vcpu_arch" for r in typed if r.use != "member-declaration")
    # A local `struct kvm_mmu *mmu` is not vcpu->arch.mmu.
    assert not any(r.expression == "mmu" for r in refs)


def test_fields_are_typed_from_the_trees_own_struct(indexes):
    # 6.1 keeps pdptrs in struct kvm_mmu; 7.2 moved it to kvm_vcpu_arch.
    pd61 = [r for r in indexes["6.1"].code_references() if r.symbol == "pdptrs" and r.kind == "mmu_field"]
    pd72 = [r for r in indexes["7.2"].code_references() if r.symbol == "pdptrs" and r.kind == "mmu_field"]
    assert pd61 and not pd72
    members_61 = indexes["6.1"].program.structs.members["kvm_mmu"]
    members_72 = indexes["7.2"].program.structs.members["kvm_mmu"]
    assert "pdptrs" in members_61 and "pdptrs" not in members_72
    assert "sync_page" in members_61 and "sync_spte" in members_72
    cpu_role = [r for r in indexes["7.2"].code_references()
                if r.symbol == "cpu_role" and r.kind == "mmu_field" and r.use != "member-declaration"]
    assert cpu_role and sum(r.base_type is not None for r in cpu_role) / len(cpu_role) > 0.9


def test_uses_are_classified(indexes):
    refs = [r for r in indexes["7.2"].code_references() if r.symbol == "walk_mmu"]
    uses = Counter(r.use for r in refs)
    assert uses["write"] >= 3  # nested entry/exit switch the pointer
    assert uses["argument"] >= 1
    invalidate = [r for r in refs if r.callee == "kvm_mmu_invalidate_addr"]
    assert invalidate and all(r.argument_index == 1 for r in invalidate)
    nested = [r for r in indexes["7.2"].code_references() if r.symbol == "nested_mmu"]
    assert any(r.use == "address" for r in nested)
    assert any(r.use == "member-declaration" for r in nested)


def test_flow_fact_nested_ept_setup_targets_guest_mmu(indexes):
    refs = [r for r in indexes["7.2"].code_references()
            if r.function == "nested_ept_init_mmu_context" and r.symbol == "get_guest_pgd"]
    assert refs and refs[0].known_target == "&vcpu->arch.guest_mmu"


def test_macro_bodies_are_typed(indexes):
    refs = [r for r in indexes["7.2"].code_references()
            if r.region == "macro" and r.function and "BUILD_MMU_ROLE_ACCESSOR" in r.function]
    assert any(r.symbol == "cpu_role" and r.base_type == "struct kvm_mmu *" for r in refs)
    assert any(r.symbol == "kvm_mmu" and r.use == "parameter" for r in refs)


def _files_with_errors(tree, masked: bool) -> int:
    from tree_sitter import Parser

    parser = Parser(LANGUAGE)
    bad = 0
    for sf in discover(tree):
        if sf.type_only:
            continue
        data = mask(sf.data)[0] if masked else sf.data
        bad += parser.parse(data).root_node.has_error
    return bad


def test_macro_table_reduces_parse_errors(trees):
    naive, masked = _files_with_errors(trees["7.2"], False), _files_with_errors(trees["7.2"], True)
    assert naive >= 70
    assert masked <= naive // 3


def test_masking_keeps_offsets(trees):
    for sf in discover(trees["7.2"]):
        masked, _ = mask(sf.data)
        assert len(masked) == len(sf.data)
        assert masked.count(b"\n") == sf.data.count(b"\n")
