"""`verify` as units: series steps (or the rewrite) of a tree.

verify builds the pristine engine and one per step (in order: the steps of a
branch share one farm), then runs corpus + fuzz through the pristine engine
and every step.  Steps never interact (each is compared with the pristine
result of the same event), so a unit is one step, or a group of steps: the
pristine engine and theirs on the same streams (on local workers, one group
per worker, since each unit runs the pristine engine too).  The tallies, the
reference's bugs and the steps' translation counts come back as data;
shrinking and the rewrite sites stay with run_variants, as in a single-process
run.

On a cluster a native engine travels with its unit: the executable's bytes,
written once per worker into its engine cache under their SHA-256
(`ShippedBuild`); a stand-in engine (tests) travels as itself.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from refactor.verify.trees import VerifyError

from . import Unit, current_context, default_jobs, run_units

TASK = "refactor.execute.verify_steps:step_unit"


class ShippedBuild:
    """A native build whose executable travels inside the unit (a cluster worker has
    neither the tree's build nor, maybe, the tree)."""

    def __init__(self, build):
        self.build = build
        self.data = Path(build.path).read_bytes()
        self.sha = hashlib.sha256(self.data).hexdigest()

    def model(self):
        from emulator.native.build import cache_root
        from emulator.native.model import NativeBuild

        path = cache_root() / "shipped" / self.sha / "engine"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"engine.{os.getpid()}")
            tmp.write_bytes(self.data)
            tmp.chmod(0o755)
            os.replace(tmp, path)
        b = self.build
        return NativeBuild(b.tree, b.version, path, b.info).model()


def step_unit(ref, cands: dict, corpus: list, seed: int, events: int, keep: int) -> dict:
    """The pristine engine and some steps' ({step number: build}) on corpus + fuzz."""
    from emulator.trace import TraceError
    from refactor.verify.run import RefBug, corpus_stream, fuzz_stream, run_streams

    with tempfile.TemporaryDirectory(prefix="kvm-refactor-corpus-") as tmp:
        files = []
        for parent, name, text in corpus:
            # The corpus is written under its own folder name: events are cited by it.
            path = Path(tmp) / parent / name
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            files.append(path)
        streams = [corpus_stream(files)] + ([fuzz_stream(seed, events)] if events else [])
        models = {name: b.model() for name, b in cands.items()}
        try:
            _, tallies, ref_bugs = run_streams(streams, ref.model(), models, keep)
        except (TraceError, RefBug) as exc:
            return {"error": str(exc)}     # the message verify shows (TraceError does not pickle)
    return {"tallies": tallies, "ref_bugs": ref_bugs,
            "translations": {name: m.translations for name, m in models.items()}}


def executor(jobs: int | None = None, cluster: str | None = None, progress=None,
             steps_per_unit: int | None = None):
    """The `execute` hook of refactor.verify.check.run_variants for these backends.

    Every unit runs the pristine engine too, so on local workers the steps are
    grouped into one unit per worker (the pristine engine runs `jobs` times, not
    once per step); on a cluster each step is a unit (`steps_per_unit` overrides).
    """

    def execute(files, seed, events, ref_build, builds, keep):
        ship = ShippedBuild if cluster else (lambda b: b)
        travel = (lambda b: ship(b) if hasattr(b, "path") else b)
        corpus = [(f.parent.name, f.name, f.read_text()) for f in files]
        ctx = current_context()
        ref = travel(ref_build)
        per = steps_per_unit or (1 if cluster else -(-len(builds) // (jobs or default_jobs())))
        groups = [list(range(k, min(k + per, len(builds)))) for k in range(0, len(builds), per)]
        units = [Unit(f"verify-steps{g[0] + 1}-{g[-1] + 1}", TASK,
                      {"ref": ref, "cands": {str(i): travel(builds[i]) for i in g},
                       "corpus": corpus, "seed": seed, "events": events, "keep": keep}, ctx)
                 for g in groups] or [Unit("verify-pristine", TASK, {
                     "ref": ref, "cands": {}, "corpus": corpus, "seed": seed, "events": events,
                     "keep": keep}, ctx)]      # no step: the pristine engine alone, for its bugs
        step = progress or (lambda label=None, n=1: None)
        results = run_units(units, jobs=jobs, cluster=cluster, on_result=lambda uid, r: step(uid))
        ordered = [results[u.id] for u in units]
        for r in ordered:
            if "error" in r:
                raise VerifyError(r["error"])
        tallies = {k: v for r in ordered for k, v in r["tallies"].items()}
        translations = {k: v for r in ordered for k, v in r["translations"].items()}
        return tallies, ordered[0]["ref_bugs"], translations

    return execute
