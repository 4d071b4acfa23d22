"""`verify`: execute the pristine tree's MMU code and its rewrite (or each commit) natively.

The reference is always the pristine tree built by the native engine
(emulator.native); there is no fallback to the Python model: a tree the
engine cannot build is an error (VerifyError, exit 2), never a pass.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from emulator.trace import TraceError, jsonable
from refactor.index.functions import naming_macros_in

from .run import Found, RefBug, corpus_stream, fuzz_stream, run_streams, shrink_found
from .sites import SiteMap
from .trees import Variant, VerifyError, base_tree, branch_variants, check_tree, materialise, \
    rewrite_variant

CORPUS = Path(__file__).resolve().parents[2] / "emulator" / "corpus"


@dataclass
class Divergence:
    step: str
    source: str
    event: int
    ev: dict
    base: dict
    result: dict
    bug: bool
    trace: str | None = None
    trace_events: int | None = None
    functions: list[str] = field(default_factory=list)
    sites: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return jsonable({"step": self.step, "source": self.source, "event": self.event,
                         "ev": self.ev, "base": self.base, "result": self.result, "bug": self.bug,
                         "trace": self.trace, "trace_events": self.trace_events,
                         "functions": self.functions, "sites": self.sites})


@dataclass
class StepReport:
    name: str
    commit: str | None
    events: int = 0
    translations: int = 0
    divergences: int = 0
    bugs: int = 0
    found: list[Divergence] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"name": self.name, "commit": self.commit, "events": self.events,
                "translations": self.translations, "divergences": self.divergences,
                "bugs": self.bugs, "found": [d.as_dict() for d in self.found]}


@dataclass
class VerifyReport:
    base: str
    seed: int
    fuzz_events: int
    corpus: int
    steps: list[StepReport] = field(default_factory=list)
    base_bugs: list[dict] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    @property
    def divergences(self) -> int:
        return sum(s.divergences for s in self.steps)

    @property
    def incomplete(self) -> str | None:
        """Why the run does not cover what it claims (the pristine tree hit a stub)."""
        stub = next((b for b in self.base_bugs if b["result"].get("stub")), None)
        if stub is None:
            return None
        return (f"the pristine tree reached a path the native engine does not provide at "
                f"{stub['where']} ({stub['result'].get('bug')}): the run is incomplete")

    def as_dict(self) -> dict:
        return {"engine": "native", "base": self.base,
                "steps": [s.as_dict() for s in self.steps], "divergences": self.divergences,
                "seed": self.seed, "fuzz_events": self.fuzz_events, "corpus_traces": self.corpus,
                "base_bugs": self.base_bugs, "incomplete": self.incomplete,
                "seconds": self.seconds}

    def text(self) -> str:
        lines = [f"base {self.base}: corpus {self.corpus} traces + fuzz seed {self.seed}, "
                 f"{self.fuzz_events} events (native engine)"]
        for i, s in enumerate(self.steps, 1):
            mark = "ok" if not s.divergences else "DIVERGES"
            lines.append(f"[{i}/{len(self.steps)}] {s.name}{' ' + s.commit[:12] if s.commit else ''}: "
                         f"{s.events} events, {s.translations} translations, "
                         f"{s.divergences} divergences, {s.bugs} bugs: {mark}")
            for d in s.found:
                lines.append(f"  {d.source}: event {d.event} {json.dumps(jsonable(d.ev))}")
                lines.append(f"    base:   {json.dumps(jsonable(d.base))}")
                lines.append(f"    {'bug' if d.bug else 'result'}: {' ' if d.bug else ''}"
                             f"{json.dumps(jsonable(d.result))}")
                if d.trace:
                    lines.append(f"    shrunk to {d.trace_events} events: {d.trace}")
                for site in d.sites[:12]:
                    rule = f" [{site['rule']}]" if site.get("rule") else ""
                    lines.append(f"    site {site['file']}:{site['line']} in {site['function']}(){rule}: "
                                 f"{' '.join(site['new'].split())[:90]}")
                if len(d.sites) > 12:
                    lines.append(f"    ... {len(d.sites) - 12} more sites")
        for b in self.base_bugs[:5]:
            lines.append(f"note: the pristine tree itself failed at {b['where']}: {b['result']}")
        lines.append(f"{self.divergences} divergences in {len(self.steps)} "
                     f"{'step' if len(self.steps) == 1 else 'steps'}")
        return "\n".join(lines)


def _engine():
    try:
        from emulator.native import EngineError, build_engine
    except ImportError as exc:
        raise VerifyError(f"the native engine is not available ({exc}); verify does not fall "
                          "back to the Python model") from None
    return build_engine, EngineError


def build_native(tree: Path, cache_dir, progress, engine=None):
    """The native build of `tree`; `engine` replaces emulator.native.build_engine (tests)."""
    build_engine, EngineError = (engine, VerifyError) if engine is not None else _engine()
    try:
        return build_engine(Path(tree), cache_dir=cache_dir, progress=progress)
    except EngineError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "engine build failed"
        raise VerifyError(first if first.startswith(f"{tree}:") else f"{tree}: {first}") from None


def _functions(model, found: Found, sites: SiteMap) -> list[str]:
    """Functions a divergence points at: a location in the result (with the rewritten
    callers and callees of that function), else the rewritten functions the candidate ran
    in the diverging event (the native engine's probe: NativeModel.functions_run; a probe
    build costs about as much as an engine's, so not when a location already points)."""
    fns = sites.with_neighbours(sites.locate(json.dumps(found.result))
                                + sites.locate(json.dumps(found.base)))
    ran = getattr(model, "functions_run", None)
    if callable(ran) and not fns:
        try:
            names = ran(found.episode)
        except Exception:  # coverage is a help for the reader, not part of the verdict
            names = []
        # paging_tmpl.h's sites are named FNAME(x); what ran is paging64_x, ept_x...
        prefixes = _fname_prefixes(sites)
        fname = {p + x[6:-1]: x for x in sites.by_function if x.startswith("FNAME(")
                 for p in prefixes}
        for name in names:
            site_fn = name if name in sites.by_function else fname.get(name)
            if site_fn and site_fn not in fns:
                fns.append(site_fn)
    return fns


def _fname_prefixes(sites: SiteMap) -> list[str]:
    """The prefixes FNAME() gives in paging_tmpl.h (`paging##64_##name`: paging64_)."""
    rel = "arch/x86/kvm/mmu/paging_tmpl.h"
    data = sites.files.get(rel)
    if data is None and sites.root is not None:
        try:
            data = (Path(sites.root) / rel).read_bytes()
        except OSError:
            data = b""
    return sorted(naming_macros_in(data or b"").get("FNAME", ()))


def run_variants(base: Path, base_label: str, variants: list[Variant], *, seed: int = 1,
                 events: int = 100_000, out_dir: Path | None = None, corpus: Path | None = None,
                 cache_dir: Path | None = None, keep: int = 3, shrink_budget: float = 30.0,
                 progress: Callable[[str], None] | None = None,
                 site_plans: Callable[[int, Variant], object] | None = None,
                 engine=None, prepare: Callable[[Variant], None] | None = None,
                 execute=None) -> VerifyReport:
    """Build the pristine engine and one per variant, run corpus + fuzz, report per variant.

    `prepare(variant)` makes a variant's tree right before its build (steps of a
    branch share one farm); the engines themselves live in the engine's cache.
    `execute(files, seed, events, ref_build, builds, keep)` runs the streams instead of
    run_streams here: (tallies, reference bugs, translations) by variant number as str
    (refactor.execute.verify_steps: one unit per variant, on worker processes or a cluster).
    """
    say = progress or (lambda msg: None)
    files = sorted((corpus or CORPUS).glob("*.jsonl"))
    if not files:
        raise VerifyError(f"{corpus or CORPUS}: no *.jsonl traces")
    report = VerifyReport(base_label, seed, events, len(files))
    t0 = time.perf_counter()
    say(f"building the native engine for {base}")
    ref_build = build_native(base, cache_dir, None, engine)
    builds = []
    for i, v in enumerate(variants, 1):
        say(f"building the native engine for step {i}/{len(variants)}: {v.name}")
        if prepare is not None:
            prepare(v)
        builds.append(build_native(v.src, cache_dir, None, engine))
    report.seconds["build"] = round(time.perf_counter() - t0, 1)
    cands = {str(i): b.model() for i, b in enumerate(builds)}
    t1 = time.perf_counter()
    try:
        if execute is not None:
            tallies, ref_bugs, translations = execute(files, seed, events, ref_build, builds, keep)
        else:
            streams = [corpus_stream(files)] + ([fuzz_stream(seed, events)] if events else [])
            total, tallies, ref_bugs = run_streams(
                streams, ref_build.model(), cands, keep,
                lambda n: say(f"{n} events") if n % 50_000 == 0 else None)
            translations = {name: m.translations for name, m in cands.items()}
    except (TraceError, RefBug) as exc:
        raise VerifyError(str(exc)) from None
    report.seconds["run"] = round(time.perf_counter() - t1, 1)
    report.base_bugs = ref_bugs
    out_dir = Path(out_dir or Path.cwd() / "verify-out")
    for i, (v, b) in enumerate(zip(variants, builds)):
        t = tallies[str(i)]
        model = cands[str(i)]
        step = StepReport(v.name, v.commit, t.events, translations[str(i)], t.divergences, t.bugs,
                          seconds=round(t.seconds, 1))
        if t.found:
            plan = v.plan if v.plan is not None or site_plans is None else site_plans(i, v)
            sitemap = SiteMap(v.files, v.originals, plan, root=v.src)
            for k, f in enumerate(t.found):
                d = Divergence(v.name, f.source, f.event, f.ev, f.base, f.result, f.bug)
                if k == 0 or (f.bug and not any(x.bug for x in step.found)):
                    say(f"shrinking the divergence of step {i + 1} at {f.source}")
                    path, n = shrink_found(f, ref_build.model, b.model,
                                           out_dir / f"verify-step{i + 1}-seed{seed}-{k + 1}.jsonl",
                                           shrink_budget)
                    d.trace, d.trace_events = str(path), n
                d.functions = _functions(model, f, sitemap)
                d.sites = sitemap.sites(d.functions)
                step.found.append(d)
        report.steps.append(step)
    report.seconds["total"] = round(time.perf_counter() - t0, 1)
    return report


def verify_tree(tree: str | Path, names: str = "upstream", *, rules=None, seed: int = 1,
                events: int = 100_000, out_dir: Path | None = None, corpus: Path | None = None,
                cache_dir: Path | None = None, progress=None, engine=None,
                execute=None) -> VerifyReport:
    """The pristine tree against its one-shot rewrite (`rules`: a Rules object, e.g. a mutant)."""
    tree = check_tree(Path(tree))
    variant = rewrite_variant(tree, names, rules)
    if not variant.files:
        raise VerifyError(f"{tree}: the rewrite changes nothing (already the new layout?)")
    return run_variants(tree, str(tree), [variant], seed=seed, events=events, out_dir=out_dir,
                        corpus=corpus, cache_dir=cache_dir, progress=progress, engine=engine,
                        execute=execute)


def verify_branch(repo: str | Path, base: str, branch: str, *, names: str | None = "upstream",
                  seed: int = 1, events: int = 100_000, out_dir: Path | None = None,
                  corpus: Path | None = None, cache_dir: Path | None = None,
                  progress=None, engine=None, execute=None) -> VerifyReport:
    """Every commit of base..branch against base, on the same events.

    `names`: the walker names the branch was generated with (series); used
    only to name the rules behind the sites of a diverging step.
    """
    repo = Path(repo)
    tree, sha, variants = branch_variants(repo, base, branch)
    check_tree(tree)
    label = f"branch-{sha}-{branch}"
    plans = (lambda i, v: _step_plan(tree, names, i, v)) if names else None
    return run_variants(tree, f"{repo} {base} ({sha[:12]})", variants, seed=seed, events=events,
                        out_dir=out_dir, corpus=corpus, cache_dir=cache_dir, progress=progress,
                        site_plans=plans, engine=engine, execute=execute,
                        prepare=lambda v: materialise(tree, v, label, variants))


def _step_plan(tree: Path, names: str, i: int, v: Variant):
    """The staged plan of the rules/steps.toml step whose subject the commit has (steps
    with nothing to do make no commit); its edits name the rules of the commit's hunks."""
    from refactor.index.indexer import build_index
    from refactor.plan.rewrite import plan_rewrite
    from refactor.rules import load_rules, load_steps, staged

    try:
        rules = load_rules()
        steps = load_steps(rules)
        filled = rules.names(names)
        upto = next(k for k, s in enumerate(steps, 1) if filled.fill(s.subject) == v.name)
        r = staged(rules, steps, upto)
        # The index with the whole refactor's rules: with a stage's, the layout reads "unknown".
        plan = plan_rewrite(tree, names, r, build_index(tree, rules))
    except Exception:  # the commit may not come from these rules: hunks still name the sites
        return None
    return plan


def verify_base(repo: Path, base: str) -> Path:
    return base_tree(Path(repo), base)[0]
