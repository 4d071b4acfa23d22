"""A series step's own MMU code, run natively, behaves as its base on the traces on which
`verify --branch` once saw a step diverge (slow: a full-tree plan and engine builds).

`verify` of the 7.2 series (seed 1, corpus + 200,000 fuzz events) reported 86 bugs in
each of steps 5-7, all "Segmentation fault in h_svm_init_mmu (address 0x71)": an SVM
nested entry after a VMX one in the same episode.  The harness used one allocation as
vcpu_vmx and as vcpu_svm; from the step that moves cpu_role into struct kvm_pagewalk,
struct kvm_vcpu's size put vmx->fail (1) where the SVM glue reads
svm->nested.vmcb02.ptr, and 1 became the VMCB.  No KVM code changed behaviour: a KVM
vCPU never changes vendor.  The harness now starts the vendor part zeroed on a switch.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from test_build import full_tree

# fuzz seed 1, events 583-785 (one episode), shrunk by hand to what still crashed step 5.
VENDOR_SWITCH = [
    {"ev": "reset", "tdp": True, "maxphyaddr": 52},
    {"ev": "nested_entry", "vendor": "vmx", "tdp": True, "root": 3145822, "ad": True,
     "execonly": True, "pf_intercept": False, "cr0": 2147549185, "cr3": 3670016, "cr4": 32,
     "efer": 3328},
    {"ev": "nested_exit"},
    {"ev": "nested_entry", "vendor": "svm", "tdp": True, "root": 3145728, "ad": False,
     "execonly": False, "pf_intercept": True, "cr0": 2147549185, "cr3": 3670016,
     "cr4": 2097184, "efer": 3328},
    {"ev": "translate", "addr": 4096, "access": "l2gpa_read"},
    {"ev": "nested_exit"},
    {"ev": "nested_entry", "vendor": "vmx", "tdp": True, "root": 3145822, "ad": True,
     "execonly": True, "pf_intercept": False, "cr0": 2147549185, "cr3": 3670016, "cr4": 32,
     "efer": 3328},
    {"ev": "translate", "addr": 4096, "access": "l2gpa_read"},
]


def step_tree(tree: Path, step_id: str) -> Path:
    """A farm of `tree` as the series leaves it after the step `step_id`."""
    from refactor.rules import load_rules, load_steps
    from refactor.series.generate import step_plans
    from refactor.verify.trees import make_farm

    rules = load_rules()
    steps = load_steps(rules)
    upto = next(k for k, s in enumerate(steps, 1) if s.id == step_id)
    for k, _step, plan in step_plans(tree, "upstream", rules, steps):
        if k == upto:
            assert plan.results, f"step {step_id} changes nothing on {tree}"
            return make_farm(tree, f"test-step-{step_id}", plan.results)
    raise AssertionError(step_id)


@pytest.mark.slow
def test_72_move_cpu_role_step_survives_a_vendor_switch(monkeypatch):
    # The persistent cache: engines of a full tree take minutes cold.
    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(Path.home() / ".cache" / "kvm-refactor"))
    from emulator.native import build_engine

    tree = full_tree("7.2")
    base = build_engine(tree).model()
    step = build_engine(step_tree(tree, "move-cpu-role")).model()
    results = [(ev, base.apply(ev), step.apply(ev)) for ev in VENDOR_SWITCH]
    assert all("bug" not in a for _, a, _ in results), results
    assert [b for _, _, b in results] == [a for _, a, _ in results]
    # The trace reaches the nested walkers of both vendors (not only their set-up).
    l2 = [a for ev, a, _ in results if ev["ev"] == "translate"]
    assert len(l2) == 2 and all("gpa" in a or "fault" in a for a in l2), l2
