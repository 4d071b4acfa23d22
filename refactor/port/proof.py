"""Proof on the target: the ported patch executed next to the original (issue 16, item 4).

Four trees are built by the native engine (emulator.native), each in a
symlink farm (refactor.verify.trees.make_farm: the user's trees are never
written): the target as it is, the target with the ported patch, and, when
the tree the patch was written on is given, that source tree as it is and
with the original patch.  The same events (the corpus and one seeded fuzz
stream, refactor.verify.run) go through all of them:

- agreement: the patched target against the patched source (the reference);
  the port must behave as the original patch does;
- the patch's own effect: each patched tree against its unpatched base; the
  same events must change on both sides;
- reach: a fifth build, the patched target with a probe at the top of every
  function the port changed (a `WARN()` naming it: the engine reports the
  first warning of an event as its result and goes on, so the probe build's
  state stays the kernel's), counts the events that executed the changed
  functions.  A proof whose events never reach them says so: it is not a pass.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from emulator.trace import TraceError, jsonable
from refactor.errors import VerifyError
from refactor.kernel.build import claim
from refactor.verify.check import CORPUS, build_native
from refactor.verify.run import Found, RefBug, Stream, corpus_stream, fuzz_stream, run_streams
from refactor.verify.sites import SiteMap, function_spans
from refactor.verify.trees import check_tree, make_farm, verify_root

PROBE = "kvm-refactor-probe"
# WARN_ON(), not WARN(fmt): 7.x reaches WARN's format through a static call (`WARN_trap`)
# the engine does not provide, while a bare WARN_ON() is a `ud2` the engine reports as
# "file:line: WARN" and continues from.  A declaration, so it may precede the function's own.
PROBE_LINE = b"\tint kvm_refactor_probe __maybe_unused = WARN_ON(1); /* kvm-refactor-probe */"
_LOCATION = re.compile(rb"((?:[\w.+-]+/)*[\w.+-]+\.[ch]):(\d+): WARN")


@dataclass
class Probes:
    """The probe build's files and where each probe sits."""

    files: dict[str, bytes]
    sites: dict[tuple[str, int], str]            # (file, line of the probe) -> function
    functions: list[str]                         # the changed functions, probed
    outside: list[dict] = field(default_factory=list)   # changed lines in no function

    def hit(self, line: bytes) -> str | None:
        """The probed function an answer line names, if the event reached one."""
        m = _LOCATION.search(line)
        if m:
            path, num = m.group(1).decode(), int(m.group(2))
            for (rel, ln), fn in self.sites.items():
                if ln == num and (rel == path or rel.endswith("/" + path) or path.endswith("/" + rel)):
                    return fn
        return None


def probe_files(files: dict[str, bytes], originals: dict[str, bytes]) -> Probes:
    """`files` with a probe at the top of each function whose text differs from `originals`.

    The probe (PROBE_LINE) is found again by its file:line in the engine's answer."""
    sitemap = SiteMap(files, originals)
    probed: dict[str, bytes] = {}
    sites: dict[tuple[str, int], str] = {}
    names: list[str] = []
    outside = [dict(s, old=s["old"][:80], new=s["new"][:80]) for s in sitemap.by_function.get("", [])]
    for rel, data in files.items():
        changed = {s["function"] for fn, ss in sitemap.by_function.items() if fn for s in ss
                   if s["file"] == rel}
        lines = data.split(b"\n")
        spans = [sp for sp in function_spans(data) if sp.name in changed]
        found = {sp.name for sp in spans}
        for fn in sorted(changed - found):   # a function the patch removed: nothing to probe
            outside.append({"file": rel, "line": 0, "function": fn, "old": "", "new": "(removed)"})
        inserts: list[tuple[int, str]] = []
        for sp in spans:
            brace = next(i for i in range(sp.first - 1, sp.last) if lines[i].startswith(b"{"))
            inserts.append((brace + 1, sp.name))
        for k, (at, name) in enumerate(sorted(inserts)):
            # Lines shift by the probes inserted above this one.
            sites[(rel, at + k + 1)] = name
            if name not in names:
                names.append(name)
        for at, name in sorted(inserts, reverse=True):
            lines.insert(at, PROBE_LINE)
        probed[rel] = b"\n".join(lines)
    return Probes(probed, sites, names, outside)


@dataclass
class PortProof:
    """What the native run showed for one target."""

    target: str
    source: str | None
    seed: int
    fuzz_events: int
    corpus: int
    events: int = 0
    reached: int | None = 0
    reached_by_function: dict[str, int] = field(default_factory=dict)
    functions: list[str] = field(default_factory=list)
    outside: list[dict] = field(default_factory=list)
    divergences: int | None = None       # patched target vs patched source, not explained_by_bases
    found: list[dict] = field(default_factory=list)
    effect_target: list[int] = field(default_factory=list)    # event numbers the patch changes
    effect_source: list[int] | None = None
    effect_examples: list[dict] = field(default_factory=list)
    effect_reached: int | None = None    # of the target's effect events, those probed as reached
    effect_mismatch: int = 0             # events both patches change, to different results
    bases_differ: int | None = None      # unpatched target vs unpatched source
    explained: int | None = None         # patched trees differing exactly as the unpatched do
    ref_bugs: list[dict] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)

    @property
    def same_effect(self) -> bool | None:
        if self.effect_source is None:
            return None
        return self.effect_target == self.effect_source and not self.effect_mismatch

    @property
    def agree(self) -> bool | None:
        if self.source is None:
            return None
        return self.divergences == 0 and bool(self.same_effect)

    @property
    def verdict(self) -> str:
        """agree / disagree / unreached / effect-only (no source tree to agree with)."""
        if self.reached == 0 or (self.reached is None and not self.effect_target):
            return "unreached"
        if self.source is None:
            return "effect-only"
        return "agree" if self.agree else "disagree"

    def as_dict(self) -> dict:
        return jsonable({
            "engine": "native", "tree": self.target, "source": self.source,
            "verdict": self.verdict, "events": self.events, "reached": self.reached,
            "reached_by_function": self.reached_by_function, "functions": self.functions,
            "outside_functions": self.outside, "agree": self.agree,
            "divergences": self.divergences, "found": self.found,
            "effect": {"target": len(self.effect_target),
                       "source": None if self.effect_source is None else len(self.effect_source),
                       "same": self.same_effect, "mismatched": self.effect_mismatch,
                       "reached": self.effect_reached,
                       "examples": self.effect_examples},
            "bases_differ": self.bases_differ, "explained_by_bases": self.explained,
            "ref_bugs": self.ref_bugs[:5],
            "seed": self.seed, "fuzz_events": self.fuzz_events, "corpus_traces": self.corpus,
            "seconds": self.seconds})

    def text(self) -> str:
        fns = ", ".join(f"{fn} {n}" for fn, n in self.reached_by_function.items()) or "none"
        reached = ("reach unknown (no changed function to probe)" if self.reached is None
                   else f"{self.reached} reached the changed functions ({fns})")
        lines = [f"native proof on {self.target}: {self.events} events (corpus {self.corpus} traces "
                 f"+ fuzz seed {self.seed}, {self.fuzz_events}); {reached}"]
        tgt = len(self.effect_target)
        if self.source is None:
            lines.append(f"  the patch changes the result of {tgt} events on the target "
                         "(no --source tree: nothing to agree with)")
        else:
            src = len(self.effect_source or [])
            common = len(set(self.effect_target) & set(self.effect_source or []))
            lines.append(f"  patched target vs patched source {self.source}: "
                         f"{self.divergences} divergences; the patch changes {tgt} events on the "
                         f"target, {src} on the source, {common} of them the same"
                         + (f", {self.effect_mismatch} to another result" if self.effect_mismatch
                            else ""))
            if self.bases_differ:
                lines.append(f"  note: the unpatched trees themselves differ on {self.bases_differ} "
                             f"events; {self.explained} more divergences of the patched trees are "
                             "exactly those differences, not counted")
            for d in self.found:
                lines.append(f"  {d['source']} (event {d['event']}): {json.dumps(jsonable(d['ev']))}")
                lines.append(f"    patched source: {json.dumps(jsonable(d['expected']))}")
                lines.append(f"    patched target: {json.dumps(jsonable(d['result']))}")
        if not tgt and not (self.effect_source or []):
            lines.append("  note: the patch changes no result on these events: they show that the "
                         "port adds no behaviour the original lacks, not that it has the original's")
        if self.effect_reached is not None and self.effect_reached < tgt:
            lines.append(f"  note: {tgt - self.effect_reached} of the events the patch changes on "
                         "the target did not reach a probed function")
        if self.outside:
            lines.append(f"  {len(self.outside)} changed lines are outside any function (not probed)")
        for b in self.ref_bugs[:3]:
            lines.append(f"  note: the {b.get('tree', 'reference')} reported a bug at {b['where']} "
                         f"(the rest of that episode is not compared): {json.dumps(b['result'])}")
        lines.append(f"  verdict: {self.verdict.upper()}")
        return "\n".join(lines) + "\n"


def _same(result: dict) -> str:
    """A result as two trees of different line numbering can share it: a bug's `file:line`
    and code offsets left out (the same WARN sits at other lines in a rewritten file)."""
    text = json.dumps(jsonable(result), sort_keys=True)
    return re.sub(r":\d+:|\+0x[0-9a-f]+", "", text) if "bug" in result else text


def _streams(events: list[tuple[str, dict]]) -> list[Stream]:
    return [Stream("proof", iter(events))]


def _pass(events, ref, cands: dict, keep: int) -> tuple[dict, list[dict], dict[str, list[Found]]]:
    """run_streams over the materialised events; every divergence, not only the kept ones."""
    every: dict[str, list[Found]] = {name: [] for name in cands}
    try:
        _total, tallies, ref_bugs = run_streams(_streams(events), ref, cands, keep,
                                                on_found=lambda name, f: every[name].append(f))
    except (TraceError, RefBug) as exc:
        raise VerifyError(str(exc)) from None
    return tallies, ref_bugs, every


def _reach(events, build, probes: Probes) -> tuple[set[int], dict[str, int]]:
    """Events whose answer from the probe build is a probe's WARN, and counts per function.

    Batched (model.stream), so without run_streams' per-event hang timer: one timer for
    the whole stream instead, generous against the microseconds an event takes."""
    import threading

    model = build.model()
    hits: set[int] = set()
    by_fn: dict[str, int] = {fn: 0 for fn in probes.functions}
    limit = 120 + len(events) / 1000
    hung = threading.Event()
    timer = threading.Timer(limit, lambda: (hung.set(), model.close()))
    timer.daemon = True
    timer.start()
    try:
        for n, line in enumerate(model.stream((ev for _w, ev in events), raw=True), 1):
            if b": WARN" in line:
                fn = probes.hit(line)
                if fn is not None:
                    hits.add(n)
                    by_fn[fn] = by_fn.get(fn, 0) + 1
    except (RuntimeError, ValueError, OSError) as exc:   # EngineError, or closed by the timer
        why = f"gave no answer within {limit:.0f} s (a hang)" if hung.is_set() else f"died: {exc}"
        raise VerifyError(f"the probe build of the patched target {why}") from None
    finally:
        timer.cancel()
        model.close()
    return hits, by_fn


def own_farm(farms: ExitStack, base: Path, label: str, files: dict[str, bytes]) -> Path:
    """make_farm's farm of `base` with `files`, this run's alone until `farms` closes.

    Farms are kept between runs: a reused one only rewrites the files that differ (a new
    one is a `cp -as` of a full tree, 80,000 links).  A second run for the same tree at
    the same time finds the farm locked and takes the next one (`LABEL-2`, ...) instead
    of rewriting its files under the first run's build."""
    name, lock = claim(verify_root(), label, lambda name: hashlib.sha1(
        f"{Path(base).resolve()}\0{name}".encode()).hexdigest()[:12] + "-farm")
    farms.callback(lock.close)   # the lock goes with the file
    return make_farm(base, name, files)


def prove_port(target: Path, target_files: dict[str, bytes], source: Path | None = None,
               source_files: dict[str, bytes] | None = None, *, seed: int = 1,
               events: int = 20_000, corpus: Path | None = None, cache_dir: Path | None = None,
               keep: int = 3, progress: Callable[[str], None] | None = None,
               engine=None) -> PortProof:
    """Run the patched target (and the patched source) natively; see the module docstring.

    `target_files`/`source_files`: relative path -> content after the patch.  Raises
    VerifyError (one line) when a tree is not a full kernel tree or an engine cannot
    be built; `engine` replaces emulator.native.build_engine (tests)."""
    say = progress or (lambda msg: None)
    target = check_tree(Path(target))
    if source is not None:
        source = check_tree(Path(source))
    files = sorted((corpus or CORPUS).glob("*.jsonl"))
    if not files:
        raise VerifyError(f"{corpus or CORPUS}: no *.jsonl traces")
    proof = PortProof(str(target), None if source is None else str(source), seed, events, len(files))
    originals = {rel: (target / rel).read_bytes() if (target / rel).is_file() else b""
                 for rel in target_files}
    probes = probe_files(target_files, originals)
    proof.functions, proof.outside = probes.functions, probes.outside
    t0 = time.perf_counter()

    def built(tree: Path, what: str):
        say(f"building the native engine of {what}")
        return build_native(tree, cache_dir, None, engine)

    with ExitStack() as farms:   # each farm is this run's until its engines are built
        t_base = built(target, f"{target}")
        t_patched = built(own_farm(farms, target, "port-proof-target", target_files),
                          "the patched target")
        t_probe = (built(own_farm(farms, target, "port-proof-probe", probes.files),
                         "the probed target") if probes.functions else None)
        s_base = s_patched = None
        if source is not None:
            s_base = built(source, f"{source}")
            s_patched = built(own_farm(farms, source, "port-proof-source", source_files or {}),
                              "the patched source")
    proof.seconds["build"] = round(time.perf_counter() - t0, 1)

    t1 = time.perf_counter()
    stream = list(corpus_stream(files).events) + (list(fuzz_stream(seed, events).events)
                                                  if events else [])
    proof.events = len(stream)
    say(f"running {len(stream)} events")
    _tallies, ref_bugs, every = _pass(stream, t_base.model(), {"target": t_patched.model()}, keep)
    proof.ref_bugs += [dict(b, tree="target") for b in ref_bugs]
    proof.effect_target = [f.event for f in every["target"]]
    examples = {f.event: f for f in every["target"][:keep]}
    if source is not None:
        _t, ref_bugs, every_s = _pass(stream, s_base.model(), {"source": s_patched.model()}, keep)
        proof.ref_bugs += [dict(b, tree="source") for b in ref_bugs]
        proof.effect_source = [f.event for f in every_s["source"]]
        for f in every_s["source"][:keep]:
            examples.setdefault(f.event, f)
        # Two kernel versions may differ by themselves: where the unpatched trees give
        # these very two results at this event, the patched trees' difference is theirs.
        _t, _b, every_b = _pass(stream, s_base.model(), {"target": t_base.model()}, 0)
        proof.bases_differ = len(every_b["target"])
        bases = {f.event: (f.base, f.result) for f in every_b["target"]}
        # The effect, event for event: where both patches change a result, the same new
        # result (the agreement pass below skips an episode once the patched source
        # reports a bug: here such an event is still compared).
        changed = {f.event: _same(f.result) for f in every["target"]}
        proof.effect_mismatch = sum(1 for f in every_s["source"] if f.event in changed
                                    and changed[f.event] != _same(f.result) and f.event not in bases)
        # The port must behave as the original.  Both ways round: run_streams stops
        # comparing an episode when its reference reports a bug, so a bug only the
        # patched source has is seen with the patched target as the reference.
        _t, ref_bugs, every_a = _pass(stream, s_patched.model(), {"target": t_patched.model()}, 0)
        proof.ref_bugs += [dict(b, tree="patched source") for b in ref_bugs]
        _t, ref_bugs, every_r = _pass(stream, t_patched.model(), {"source": s_patched.model()}, 0)
        proof.ref_bugs += [dict(b, tree="patched target") for b in ref_bugs]
        pairs = {f.event: (f, f.base, f.result) for f in every_a["target"]}
        for f in every_r["source"]:   # (event, patched source's result, patched target's)
            pairs.setdefault(f.event, (f, f.result, f.base))
        port = [(f, src, tgt) for e, (f, src, tgt) in sorted(pairs.items())
                if bases.get(e) != (src, tgt)]
        proof.explained = len(pairs) - len(port)
        proof.divergences = len(port)
        proof.found = [{"source": f.source, "event": f.event, "ev": f.ev, "expected": src,
                        "result": tgt} for f, src, tgt in port[:keep]]
    target_set = set(proof.effect_target)
    source_set = set(proof.effect_source or [])
    for n in sorted(examples):
        f = examples[n]
        proof.effect_examples.append({"source": f.source, "event": n, "ev": f.ev,
                                      "unpatched": f.base, "patched": f.result,
                                      "on_target": n in target_set,
                                      "on_source": None if source is None else n in source_set})
    if t_probe is not None:
        say("counting the events that reach the changed functions")
        hits, proof.reached_by_function = _reach(stream, t_probe, probes)
        proof.reached = len(hits)
        # A changed result on an event that never ran a changed function: the change acts
        # from outside the probed functions (a struct, a macro), or a kernel WARN came first.
        proof.effect_reached = len(hits & set(proof.effect_target))
    else:
        proof.reached = None
    proof.seconds["run"] = round(time.perf_counter() - t1, 1)
    proof.seconds["total"] = round(time.perf_counter() - t0, 1)
    return proof


def port_source_files(mails, source: Path, names_spec: str | None = None) -> dict[str, bytes]:
    """The source tree's files after the original patches (ported with analysis only: the
    patch was written there).  A patch that does not apply to its own tree is bad input."""
    from refactor.port.engine import port_patches

    report = port_patches(mails, [source], names_spec=names_spec)
    tr = report.targets[0]
    for p in tr.patches:
        if p.result == "conflict":
            h = next(h for h in p.hunks if h.status == "conflict")
            raise VerifyError(f"{source}: the patch does not apply to its source tree "
                              f"({h.file}:{h.old_start}: {h.reason})")
    return tr.changed
