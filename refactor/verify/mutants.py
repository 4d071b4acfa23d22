"""Wrong rules, executed: each mutant is a copy of rules/ with one TOML entry edited.

The mutated rules go through the real rewrite (plan_rewrite) on a tree; when
the C output differs from the correct rewrite's, the result is built by the
native engine and run against the pristine tree on the corpus and a fuzz
campaign.  A mutant is killed by a divergence, by a build failure (the C
does not compile while the correct rewrite's does: the compile oracle kills
it), or by the rewrite refusing the rules.  A mutant whose C output equals
the correct rewrite's is equivalent on that tree, and the report says why
(the mutated entry matched nothing there, or mapped to the same text, and
the mutant's `equivalent_where`).
"""
from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .trees import VerifyError, check_tree

RULES = Path(__file__).resolve().parents[2] / "rules"


@dataclass(frozen=True)
class RuleMutant:
    name: str
    rule: str          # the id of the entry it edits (as edits cite it)
    what: str
    file: str          # file in rules/
    old: str           # exact TOML text to replace (must occur once)
    new: str
    # Where the mutant is expected to leave the C output unchanged, and why (the report
    # prints it beside the mechanical reason when the C output is the same).
    equivalent_where: str = ""


MUTANTS: list[RuleMutant] = [
    RuleMutant("walk-mmu-is-nested-inverted", "walk-mmu-is-nested", "walk-mmu-is-nested written upside down: "
               "mmu_is_nested() asks whether the fault MMU is root_mmu",
               "mappings.toml",
               'new = "vcpu->arch.mmu == &vcpu->arch.guest_mmu"',
               'new = "vcpu->arch.mmu == &vcpu->arch.root_mmu"',
               "equivalent on a tree whose mmu_is_nested() already reads `vcpu->arch.mmu == "
               "&vcpu->arch.guest_mmu` (7.x): the entry's `old` text (`walk_mmu == &nested_mmu`) "
               "occurs nowhere, so neither the right nor the wrong `new` is written"),
    RuleMutant("nested-fault-test-ngpa", "walk-mmu-compare", "the nested-fault test compares against the nGPA walker",
               "mappings.toml", 'new = "w != &vcpu->arch.{gva}"', 'new = "w != &vcpu->arch.{ngpa}"'),
    RuleMutant("translate-gpa-test-gva", "nested-mmu-compare", "kvm_translate_gpa()'s nested_mmu test becomes "
               "'not the GVA walker' (the 6.1 series' step-6 form)",
               "mappings.toml", 'new = "!mmu_is_nested(vcpu) || w == &vcpu->arch.{ngpa}"',
               'new = "w != &vcpu->arch.{gva}"'),
    RuleMutant("translate-gpa-test-no-nesting", "nested-mmu-compare", "kvm_translate_gpa() tests the walker but not "
               "mmu_is_nested()", "mappings.toml",
               'new = "!mmu_is_nested(vcpu) || w == &vcpu->arch.{ngpa}"',
               'new = "w == &vcpu->arch.{ngpa}"'),
    RuleMutant("guest-mmu-walker-gva", "guest-mmu-walker", "guest_mmu used as a walker mapped to the GVA walker",
               "mappings.toml", 'old = "vcpu->arch.guest_mmu"\nnew = "vcpu->arch.{ngpa}"',
               'old = "vcpu->arch.guest_mmu"\nnew = "vcpu->arch.{gva}"'),
    RuleMutant("walk-mmu-ngpa", "walk-mmu", "walk_mmu mapped to the nGPA walker", "mappings.toml",
               'old = "vcpu->arch.walk_mmu"\nnew = "vcpu->arch.{gva}"',
               'old = "vcpu->arch.walk_mmu"\nnew = "vcpu->arch.{ngpa}"'),
    RuleMutant("nested-mmu-ngpa", "nested-mmu", "nested_mmu mapped to the nGPA walker", "mappings.toml",
               'old = "vcpu->arch.nested_mmu"\nnew = "vcpu->arch.{gva}"',
               'old = "vcpu->arch.nested_mmu"\nnew = "vcpu->arch.{ngpa}"'),
    RuleMutant("root-mmu-walker-ngpa", "root-mmu-walker", "root_mmu used as a walker mapped to the nGPA walker",
               "mappings.toml", 'old = "vcpu->arch.root_mmu"\nnew = "vcpu->arch.{gva}"',
               'old = "vcpu->arch.root_mmu"\nnew = "vcpu->arch.{ngpa}"',
               "equivalent on 6.1 and 7.2: they reach root_mmu's walker only through a moved "
               "field (`root_mmu.cpu_role.ext.valid = 0` in kvm_mmu_after_set_cpuid(), rewritten "
               "by field-cpu_role through layout.toml's root_mmu -> {gva} attachment, which "
               "root-mmu-attached-to-ngpa mutates) and through `&root_mmu` arguments rewritten "
               "by function rules (narrow-local, invalidate-addr-takes-walker); no "
               "`vcpu->arch.root_mmu` stands where a walker object is expected"),
    RuleMutant("known-guest-mmu-gva", "fault-mmu-walker", "nested EPT/NPT setup (mmu known to be &guest_mmu) "
               "writes into the GVA walker", "mappings.toml",
               'known_guest_mmu = "vcpu->arch.{ngpa}"', 'known_guest_mmu = "vcpu->arch.{gva}"'),
    RuleMutant("walk-mmu-as-builder-guest-mmu", "walk-mmu-as-builder", "walk_mmu where an MMU is required becomes "
               "guest_mmu", "mappings.toml",
               'old = "vcpu->arch.walk_mmu"          # where a struct kvm_mmu * is still required\n'
               'new = "&vcpu->arch.root_mmu"',
               'old = "vcpu->arch.walk_mmu"          # where a struct kvm_mmu * is still required\n'
               'new = "&vcpu->arch.guest_mmu"'),
    RuleMutant("mbec-call-wrong", "mbec-on-walker", "a wrong `calls` mapping: mmu_has_mbec() on a walker becomes "
               "is_cr4_smap()", "mappings.toml", 'new = "is_cr4_smep"', 'new = "is_cr4_smap"',
               "equivalent on a tree without mmu_has_mbec() (6.1: MBEC for nested EPT came "
               "later): the `calls` entry has no call to rewrite"),
    RuleMutant("permissions-left-behind", "field-permissions", "permissions[] stays in struct kvm_mmu", "layout.toml",
               '[mmu_fields.permissions]\ndest = "walker"\npath = "fmt.permissions"',
               '[mmu_fields.permissions]\ndest = "mmu"\npath = "permissions"'),
    RuleMutant("pkru-mask-left-behind", "field-pkru_mask", "pkru_mask stays in struct kvm_mmu", "layout.toml",
               '[mmu_fields.pkru_mask]\ndest = "walker"\npath = "fmt.pkru_mask"',
               '[mmu_fields.pkru_mask]\ndest = "mmu"\npath = "pkru_mask"'),
    RuleMutant("cpu-role-left-behind", "field-cpu_role", "cpu_role stays in struct kvm_mmu", "layout.toml",
               '[mmu_fields.cpu_role]\ndest = "walker"', '[mmu_fields.cpu_role]\ndest = "mmu"'),
    RuleMutant("guest-rsvd-check-to-mmu-fmt", "field-guest_rsvd_check", "the guest's reserved-bit masks read from the "
               "builder's SPTE format (mmu->fmt)", "layout.toml",
               '[mmu_fields.guest_rsvd_check]\ndest = "walker"',
               '[mmu_fields.guest_rsvd_check]\ndest = "mmu"'),
    RuleMutant("root-mmu-attached-to-ngpa", "layout-root_mmu", "root_mmu.w attached to the nGPA walker",
               "layout.toml", '[vcpu_arch.old.root_mmu]\nkind = "mmu"                    '
               '# L1\'s MMU; its walker is {gva}\nwalker = "gva"',
               '[vcpu_arch.old.root_mmu]\nkind = "mmu"                    '
               '# L1\'s MMU; its walker is {gva}\nwalker = "ngpa"'),
    RuleMutant("guest-mmu-attached-to-gva", "layout-guest_mmu", "guest_mmu.w attached to the GVA walker",
               "layout.toml", '[vcpu_arch.old.guest_mmu]\nkind = "mmu"                    '
               '# shadows L1\'s EPT/NPT for L2; its walker is {ngpa}\nwalker = "ngpa"',
               '[vcpu_arch.old.guest_mmu]\nkind = "mmu"                    '
               '# shadows L1\'s EPT/NPT for L2; its walker is {ngpa}\nwalker = "gva"'),
    RuleMutant("walker-init-test-inverted", "init-kvm-page-walk", "kvm_init_mmu() builds root_mmu only while L2 runs "
               "with nested TDP (the dispatcher's test inverted)", "restructure.toml",
               'nested_test = "mmu_is_nested(vcpu)"', 'nested_test = "!mmu_is_nested(vcpu)"'),
]


class MutantError(RuntimeError):
    """A mutant's TOML text is no longer in rules/ (the rules changed): update the mutant."""


def mutant_rules_dir(m: RuleMutant, dest: Path, rules_dir: Path = RULES) -> Path:
    """A copy of rules/ with the mutant's one edit."""
    shutil.copytree(rules_dir, dest)
    path = dest / m.file
    text = path.read_text()
    if text.count(m.old) != 1:
        raise MutantError(f"mutant {m.name}: {m.file} has {text.count(m.old)} copies of "
                          f"{m.old.splitlines()[0]!r} (expected 1)")
    path.write_text(text.replace(m.old, m.new))
    return dest


@dataclass
class MutantResult:
    name: str
    what: str
    tree: str
    killed: bool
    by: str                    # "divergence", "bug", "build", "rules", "equivalent"
    detail: str = ""
    changed_files: int = 0
    sites: list[dict] = field(default_factory=list)
    rule: str = ""
    trace: str | None = None   # the shrunk trace of the killing divergence, when written

    @property
    def changed_c(self) -> bool | None:
        """Whether the mutant's C output differs from the correct rewrite (None: no output)."""
        return None if self.by == "rules" else self.by != "equivalent"

    @property
    def executed(self) -> bool:
        """Whether the mutant's C ran in the native engine (a build failure did not run)."""
        return self.by in ("divergence", "bug", "survived")

    def as_dict(self) -> dict:
        return {"name": self.name, "rule": self.rule, "what": self.what, "tree": self.tree,
                "changed_c": self.changed_c, "executed": self.executed, "killed": self.killed,
                "by": self.by, "detail": self.detail, "changed_files": self.changed_files,
                "sites": self.sites[:10], "trace": self.trace}


@dataclass
class MutantsReport:
    tree: str
    results: list[MutantResult] = field(default_factory=list)

    @property
    def survivors(self) -> int:
        return sum(1 for r in self.results if not r.killed and r.by != "equivalent")

    def as_dict(self) -> dict:
        return {"engine": "native", "tree": self.tree, "mutants": len(self.results),
                "changed_c": sum(bool(r.changed_c) for r in self.results),
                "executed": sum(r.executed for r in self.results),
                "killed": sum(r.killed for r in self.results),
                "killed_by": dict(sorted(Counter(r.by for r in self.results if r.killed).items())),
                "equivalent": sum(r.by == "equivalent" for r in self.results),
                "survived": self.survivors, "results": [r.as_dict() for r in self.results]}

    def text(self) -> str:
        """The table: mutant, tree, changed C?, verdict, killed by / equivalent because."""
        lines = [f"{'mutant':<32} {'changed C':<9} {'verdict':<10} killed by / equivalent because"]
        for r in self.results:
            state = ("killed" if r.killed else "equivalent" if r.by == "equivalent" else
                     "NOT RUN" if r.by == "not executed" else "SURVIVED")
            changed = {True: "yes", False: "no", None: "-"}[r.changed_c]
            how = f"{r.by}: {r.detail}" if r.killed else r.detail
            if r.trace:
                how += f" (shrunk trace: {r.trace})"
            lines.append(f"{r.name:<32} {changed:<9} {state:<10} {how}".rstrip())
        d = self.as_dict()
        by = ", ".join(f"{n} by {k}" for k, n in d["killed_by"].items())
        lines.append(f"{self.tree}: {d['mutants']} mutants, {d['changed_c']} change the C, "
                     f"{d['executed']} executed natively; {d['killed']} killed ({by or 'none'}), "
                     f"{d['equivalent']} equivalent, {d['survived']} survived")
        return "\n".join(lines)


def _diff_summary(correct: dict[str, bytes], mutated: dict[str, bytes]) -> list[dict]:
    from .sites import SiteMap

    changed = {rel: data for rel, data in mutated.items() if correct.get(rel) != data}
    gone = [rel for rel in correct if rel not in mutated]
    sm = SiteMap(changed, {rel: correct.get(rel, b"") for rel in changed})
    out = [s for fn in sorted(sm.by_function) for s in sm.by_function[fn]]
    return out + [{"file": rel, "line": 0, "function": None, "rule": None, "old": "(rewritten)",
                   "new": "(left as in the pristine tree)"} for rel in gone]


def run_mutant(m: RuleMutant, tree: Path, correct, names: str = "upstream", *, seed: int = 1,
               events: int = 20_000, corpus: Path | None = None, cache_dir: Path | None = None,
               work: Path | None = None, progress=None, rules_dir: Path = RULES,
               correct_build=None) -> MutantResult:
    """Apply one mutant to `tree` (`correct`: the correct plan) and execute it if it changed C.

    `correct_build()` returns None when the correct rewrite's engine builds, else its first
    error: a mutant's build failure is a kill only when the correct rewrite builds."""
    from refactor.index.indexer import build_index
    from refactor.plan.rewrite import plan_rewrite
    from refactor.rules import RulesError, load_rules

    from .check import run_variants
    from .trees import Variant, make_farm

    with tempfile.TemporaryDirectory(prefix="kvm-refactor-mutant-") as tmp:
        rules_dir = mutant_rules_dir(m, Path(tmp) / "rules", rules_dir)
        try:
            rules = load_rules(rules_dir)
            plan = plan_rewrite(tree, names, rules, build_index(tree, rules))
        except RulesError as exc:
            return MutantResult(m.name, m.what, str(tree), True, "rules", str(exc).splitlines()[0])
    if plan.results == correct.results:
        cited = any(m.rule in e.rule for e in correct.edits + correct.post_edits)
        why = (f"edits citing {m.rule} give the same text here" if cited else
               f"no edit of this tree's rewrite cites {m.rule}: the rewrite does not use the "
               "edited entry here")
        if m.equivalent_where:
            why += f" ({m.equivalent_where})"
        return MutantResult(m.name, m.what, str(tree), False, "equivalent",
                            f"same C output as the correct rewrite: {why}")
    sites = _diff_summary(correct.results, plan.results)
    variant = Variant(f"mutant {m.name}", tree, files=dict(plan.results),
                      originals=dict(plan.originals), plan=plan)
    variant.src = make_farm(tree, "mutant", plan.results)
    try:
        report = run_variants(tree, str(tree), [variant], seed=seed, events=events,
                              # One directory per mutant: their traces have the same names.
                              out_dir=(work or Path(tempfile.gettempdir()) / "kvm-refactor-mutants")
                              / m.name,
                              corpus=corpus, cache_dir=cache_dir, keep=1, shrink_budget=5.0,
                              progress=progress)
    except VerifyError as exc:
        if not str(exc).startswith(str(variant.src)):
            raise       # not the mutant's build (the pristine engine died...): bad input
        if any(k in str(exc) for k in ("cannot compile", "cannot link", "cannot preprocess")):
            # The pristine engine was built before; the correct rewrite must build too, or
            # the failure is not the mutant's doing.
            broken = correct_build() if correct_build else None
            if broken:
                return MutantResult(m.name, m.what, str(tree), False, "not executed",
                                    f"the correct rewrite does not build either: {broken[:200]}",
                                    len(plan.results), sites)
            detail = str(exc)[:300] + (" (the correct rewrite builds)" if correct_build else "")
            return MutantResult(m.name, m.what, str(tree), True, "build", detail,
                                len(plan.results), sites)
        # The engine cannot take this tree (e.g. its layout reader finds no walker pair):
        # no verdict on the C, so not a kill.
        return MutantResult(m.name, m.what, str(tree), False, "not executed", str(exc)[:300],
                            len(plan.results), sites)
    step = report.steps[0]
    if report.incomplete and not step.divergences:
        raise VerifyError(f"mutant {m.name}: {report.incomplete}")
    if step.divergences:
        d = step.found[0]
        return MutantResult(m.name, m.what, str(tree), True, "bug" if d.bug else "divergence",
                            f"{d.source}: {d.ev.get('ev')} -> {str(d.result)[:160]}",
                            len(plan.results), sites, trace=d.trace)
    return MutantResult(m.name, m.what, str(tree), False, "survived",
                        f"{step.events} events, {step.translations} translations, no divergence",
                        len(plan.results), sites)


def run_mutants(tree: str | Path, names: str = "upstream", *, seed: int = 1, events: int = 20_000,
                only: list[str] | None = None, corpus: Path | None = None,
                cache_dir: Path | None = None, progress=None,
                out_dir: Path | None = None) -> MutantsReport:
    from refactor.index.indexer import build_index
    from refactor.plan.rewrite import plan_rewrite
    from refactor.rules import load_rules

    tree = check_tree(Path(tree))
    chosen = [m for m in MUTANTS if not only or m.name in only]
    if only and len(chosen) != len(set(only)):
        known = ", ".join(m.name for m in MUTANTS)
        raise VerifyError(f"unknown mutant in {list(only)} (known: {known})")
    from .check import build_native
    from .trees import make_farm

    build_native(tree, cache_dir, None)    # the pristine tree must build: a failure here is not a kill
    report = MutantsReport(str(tree))
    with tempfile.TemporaryDirectory(prefix="kvm-refactor-rules-") as tmp:
        # One snapshot of rules/ for the correct plan and every mutant: a mutant must differ
        # from the correct rules by its one edit only, whatever happens to rules/ meanwhile.
        snapshot = Path(tmp) / "rules"
        shutil.copytree(RULES, snapshot)
        rules = load_rules(snapshot)
        correct = plan_rewrite(tree, names, rules, build_index(tree, rules))
        built: list[str | None] = []

        def correct_build() -> str | None:
            if not built:      # once per run, and only if a mutant fails to build
                try:
                    build_native(make_farm(tree, "mutant", correct.results), cache_dir, progress)
                    built.append(None)
                except VerifyError as exc:
                    built.append(str(exc))
            return built[0]

        for m in chosen:
            if progress:
                progress(f"mutant {m.name}")
            try:
                result = run_mutant(m, tree, correct, names, seed=seed, events=events,
                                    corpus=corpus, cache_dir=cache_dir, progress=progress,
                                    rules_dir=snapshot, correct_build=correct_build,
                                    work=out_dir)
                result.rule = m.rule
                report.results.append(result)
            except MutantError as exc:
                raise VerifyError(str(exc)) from None
    return report
