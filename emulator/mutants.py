"""Plausible wrong rules and wrong wirings of the new layout; each must be killed.

A rule mutant changes the Rules object the new model is derived from (as a
wrong line in rules/*.toml would).  A wiring mutant edits the derived new
model's source (as a hand-written port could get one line wrong).  A mutant
is killed when some corpus trace gives a different result in the two layouts.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from refactor.rules import Rules, WalkerNames

from .derive import compile_model, derive_source
from .machine import new_model, old_model
from .trace import read_events, run_pair

# Package data (pyproject.toml), found the same way in a checkout and an installed wheel.
CORPUS = Path(str(importlib.resources.files("emulator").joinpath("corpus")))


@dataclass(frozen=True)
class Mutant:
    name: str
    kind: str                 # "rule" or "wiring"
    what: str
    rules: Callable[[Rules], Rules] | None = None
    edit: tuple[str, str] | None = None   # derived-source text -> replacement ({gva}/{ngpa})


def _base(rules: Rules, base_id: str, **changes) -> Rules:
    bases = [dataclasses.replace(b, **changes) if b.id == base_id else b for b in rules.bases]
    return dataclasses.replace(rules, bases=bases)


def _expr(rules: Rules, expr_id: str, new: str | None) -> Rules:
    if new is None:
        exprs = [e for e in rules.exprs if e.id != expr_id]
    else:
        exprs = [dataclasses.replace(e, new=new) if e.id == expr_id else e for e in rules.exprs]
    return dataclasses.replace(rules, exprs=exprs)


def _field(rules: Rules, name: str, dest: str, path: str) -> Rules:
    fields = dict(rules.mmu_fields)
    fields[name] = dataclasses.replace(fields[name], dest=dest, path=path)
    return dataclasses.replace(rules, mmu_fields=fields)


def _member(rules: Rules, name: str, walker: str) -> Rules:
    members = dict(rules.vcpu_old)
    members[name] = dataclasses.replace(members[name], walker=walker)
    return dataclasses.replace(rules, vcpu_old=members)


_READ_TAIL = "\n    return w.gva_to_gpa(vcpu, w, gva, cpl_access(vcpu))"

MUTANTS: list[Mutant] = [
    # -- wrong rules --------------------------------------------------------
    Mutant("rule-walk-mmu-to-ngpa", "rule", "walk_mmu mapped to the nGPA walker",
           rules=lambda r: _base(r, "walk-mmu", new="vcpu->arch.{ngpa}")),
    Mutant("rule-guest-mmu-walker-to-gva", "rule", "guest_mmu's walker mapped to the GVA walker",
           rules=lambda r: _base(r, "guest-mmu-walker", new="vcpu->arch.{gva}")),
    Mutant("rule-nested-mmu-to-ngpa", "rule", "nested_mmu mapped to the nGPA walker",
           rules=lambda r: _base(r, "nested-mmu", new="vcpu->arch.{ngpa}")),
    Mutant("rule-known-guest-mmu-to-gva", "rule",
           "nested EPT/NPT setup (mmu known to be &guest_mmu) writes into the GVA walker",
           rules=lambda r: _base(r, "fault-mmu-walker", known_guest_mmu="vcpu->arch.{gva}")),
    Mutant("rule-permissions-left-on-mmu", "rule", "permissions[] stays in struct kvm_mmu",
           rules=lambda r: _field(r, "permissions", "mmu", "permissions")),
    Mutant("rule-cpu-role-left-on-mmu", "rule", "cpu_role stays in struct kvm_mmu",
           rules=lambda r: _field(r, "cpu_role", "mmu", "cpu_role")),
    Mutant("rule-nested-fault-test-ngpa", "rule",
           "nested_page_fault tested against the nGPA walker",
           rules=lambda r: _expr(r, "walk-mmu-compare", "w != &vcpu->arch.{ngpa}")),
    Mutant("rule-translate-gpa-test-dropped", "rule",
           "kvm_translate_gpa()'s nested_mmu test mapped like any nested_mmu use",
           rules=lambda r: _expr(r, "nested-mmu-compare", None)),
    Mutant("rule-root-mmu-walks-ngpa", "rule", "root_mmu.w attached to the nGPA walker",
           rules=lambda r: _member(r, "root_mmu", "ngpa")),
    Mutant("rule-root-mmu-walker-to-ngpa", "rule", "root_mmu used as a walker mapped to the "
           "nGPA walker", rules=lambda r: _base(r, "root-mmu-walker", new="vcpu->arch.{ngpa}")),
    Mutant("rule-mmu-pointer-without-w", "rule", "a struct kvm_mmu * used as a walker kept as "
           "is (no ->w)", rules=lambda r: _base(r, "mmu-pointer-walker", new="{base}",
                                                  new_is="obj")),
    # -- wrong wirings in the derived model ---------------------------------
    Mutant("wire-ept-inject-into-gva", "wiring", "nested EPT setup writes inject_page_fault "
           "into the GVA walker",
           edit=("vcpu.arch.{ngpa}.inject_page_fault = nested_ept_inject_page_fault",
                 "vcpu.arch.{gva}.inject_page_fault = nested_ept_inject_page_fault")),
    Mutant("wire-npf-inject-into-gva", "wiring", "nested NPT setup writes inject_page_fault "
           "into the GVA walker",
           edit=("vcpu.arch.{ngpa}.inject_page_fault = nested_svm_inject_npf_exit",
                 "vcpu.arch.{gva}.inject_page_fault = nested_svm_inject_npf_exit")),
    Mutant("wire-npt-pdptr-into-gva", "wiring", "NPT get_pdptr written into the GVA walker",
           edit=("vcpu.arch.{ngpa}.get_pdptr = nested_svm_get_tdp_pdptr",
                 "vcpu.arch.{gva}.get_pdptr = nested_svm_get_tdp_pdptr")),
    Mutant("wire-nested-fault-test", "wiring", "nested_page_fault tested against the wrong walker",
           edit=("nested_translator(vcpu, w), w != vcpu.arch.{gva})",
                 "nested_translator(vcpu, w), w != vcpu.arch.{ngpa})")),
    Mutant("wire-ngpa-for-l2-gvas", "wiring", "the nGPA walker used for GVA reads",
           edit=("    w = vcpu.arch.{gva}" + _READ_TAIL, "    w = vcpu.arch.{ngpa}" + _READ_TAIL)),
    Mutant("wire-inject-old-target", "wiring", "inject_page_fault left on the GVA walker for "
           "nested faults",
           edit=("fault_walk = vcpu.arch.mmu.w if fault.nested_page_fault else vcpu.arch.{gva}",
                 "fault_walk = vcpu.arch.{gva}")),
    Mutant("wire-wp-refresh-wrong-walker", "wiring", "the CR0.WP refresh exempts the GVA walker",
           edit=("if not vcpu.tdp_enabled or w == vcpu.arch.{ngpa}:",
                 "if not vcpu.tdp_enabled or w == vcpu.arch.{gva}:")),
    Mutant("wire-translate-gpa-no-nesting", "wiring",
           "kvm_translate_gpa() tests the walker but not mmu_is_nested()",
           edit=("    if not mmu_is_nested(vcpu) or w == vcpu.arch.{ngpa}:\n        return gpa\n",
                 "    if w == vcpu.arch.{ngpa}:\n        return gpa\n")),
    Mutant("wire-invlpg-on-ngpa", "wiring", "INVLPG invalidates through the nGPA walker",
           edit=("kvm_mmu_invalidate_addr(vcpu, vcpu.arch.{gva}, gva, KVM_MMU_ROOTS_ALL)",
                 "kvm_mmu_invalidate_addr(vcpu, vcpu.arch.{ngpa}, gva, KVM_MMU_ROOTS_ALL)")),
    Mutant("wire-pdptrs-via-ngpa", "wiring", "load_pdptrs() translates CR3 with the nGPA walker",
           edit=("    w = vcpu.arch.{gva}\n    # While L2 runs", "    w = vcpu.arch.{ngpa}\n    # While L2 runs")),
    Mutant("wire-ept-permissions-into-gva", "wiring",
           "nested EPT permission bitmap computed into the GVA walker",
           edit=("update_permission_bitmask(vcpu.arch.{ngpa}, True)",
                 "update_permission_bitmask(vcpu.arch.{gva}, True)")),
    Mutant("wire-translate-nested-via-gva", "wiring",
           "translate_nested_gpa() walks the GVA walker instead of mmu->w",
           edit=("    w = vcpu.arch.mmu.w\n", "    w = vcpu.arch.{gva}\n")),
]


class MutantError(RuntimeError):
    """A mutant no longer applies (its text is gone from the derived model)."""


def mutant_model(mutant: Mutant, rules: Rules, names: WalkerNames):
    """(rules, module) of the mutated new layout."""
    if mutant.rules is not None:
        mrules = mutant.rules(rules)
        source = derive_source(mrules, names)
        return mrules, compile_model(source, f"mutant_{mutant.name.replace('-', '_')}")
    old_text, new_text = (names.fill(t) for t in mutant.edit)
    source = derive_source(rules, names)
    if old_text not in source:
        raise MutantError(f"mutant {mutant.name}: text not found in the derived model: "
                          f"{old_text.strip()!r}")
    source = source.replace(old_text, new_text)
    return rules, compile_model(source, f"mutant_{mutant.name.replace('-', '_')}")


def corpus_files(corpus: Path | None = None) -> list[Path]:
    return sorted((corpus or CORPUS).glob("*.jsonl"))


def run_mutant(mutant: Mutant, rules: Rules, names: WalkerNames, files: list[Path]) -> dict:
    try:
        mrules, module = mutant_model(mutant, rules, names)
    except MutantError:
        raise
    except Exception as exc:       # the rewriter itself refused the wrong rule
        return {"name": mutant.name, "kind": mutant.kind, "killed": True, "by": "derive",
                "detail": f"{type(exc).__name__}: {exc}"}
    for path in files:
        old = old_model(rules)
        new = new_model(mrules, names, module)
        report = run_pair(read_events(path), old, new, str(path))
        if report.divergence is not None:
            d = report.divergence
            return {"name": mutant.name, "kind": mutant.kind, "killed": True,
                    "by": f"{path.name}:{d.line}", "event": d.event,
                    "how": "model error" if "error" in d.new else "different result"}
    return {"name": mutant.name, "kind": mutant.kind, "killed": False}


def run_mutants(rules: Rules, names: WalkerNames, corpus: Path | None = None,
                only: list[str] | None = None) -> dict:
    files = corpus_files(corpus)
    if not files:
        raise FileNotFoundError(f"no *.jsonl traces in {corpus or CORPUS}")
    results = [run_mutant(m, rules, names, files) for m in MUTANTS
               if not only or m.name in only]
    return {"mutants": len(results), "killed": sum(r["killed"] for r in results),
            "names": names.as_dict(), "traces": len(files), "results": results}


def find(name: str) -> Mutant:
    for m in MUTANTS:
        if m.name == name:
            return m
    raise KeyError(name)
