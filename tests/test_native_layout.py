"""The engine's layout reader (emulator/native/layout.py): the walker members of kvm_host.h.

Default suite, well under a second: no build.
"""
from __future__ import annotations

import pytest

from emulator.native.layout import LayoutError, tree_names
from refactor.rules import load_rules

WALKER = "struct kvm_pagewalk {\n\tint x;\n};\n"


def arch(*members: str) -> str:
    return WALKER + "struct kvm_vcpu_arch {\n" + "".join(
        f"\tstruct kvm_pagewalk {m};\n" for m in members) + "};\n"


def test_old_layout_has_no_names():
    assert tree_names(load_rules(), "struct kvm_vcpu_arch {\n\tstruct kvm_mmu *walk_mmu;\n};\n") is None


def test_a_walker_pair_gives_its_preset():
    rules = load_rules()
    assert tree_names(rules, arch("cpu_walk", "tdp_walk")) == rules.presets["v1"]


def test_one_gva_walker_member_is_accepted_under_its_preset():
    # guest-mmu-attached-to-gva's kvm_host.h declares gva_walk alone; the harness needs
    # only the GVA walker, and C naming the missing ngpa_walk fails in the compiler.
    rules = load_rules()
    assert tree_names(rules, arch("gva_walk")) == rules.presets["upstream"]


@pytest.mark.parametrize("members", [("ngpa_walk",), ("foo_walk",), ("a_walk", "b_walk"), ()])
def test_members_that_name_no_gva_walker_are_refused(members):
    with pytest.raises(LayoutError):
        tree_names(load_rules(), arch(*members))
