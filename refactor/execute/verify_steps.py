"""`verify` as units: one unit per series step (or rewrite) of a tree.

verify builds the pristine engine and one per step (in order: the steps of a
branch share one farm), then runs corpus + fuzz through the pristine engine
and every step.  Steps never interact (each is compared with the pristine
result of the same event), so a unit is one step: the pristine and the
step's engine on the same streams.  Its Tally, the reference's bugs and the
step's translation count come back as data; shrinking and the rewrite sites
stay with refactor.verify.check.run_variants, as in a single-process run.

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

from . import Unit, current_context, run_units

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


def step_unit(ref, cand, corpus: list, seed: int, events: int, keep: int) -> dict:
    """The pristine engine and one step's on corpus + fuzz: its tally and translations."""
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
        cands = {"0": cand.model()} if not isinstance(cand, _NoStep) else {}
        try:
            _, tallies, ref_bugs = run_streams(streams, ref.model(), cands, keep)
        except (TraceError, RefBug) as exc:
            return {"error": str(exc)}     # the message verify shows (TraceError does not pickle)
    if not cands:
        return {"ref_bugs": ref_bugs}
    return {"tally": tallies["0"], "ref_bugs": ref_bugs, "translations": cands["0"].translations}


class _NoStep:
    def model(self):
        return None


def executor(jobs: int | None = None, cluster: str | None = None, progress=None):
    """The `execute` hook of refactor.verify.check.run_variants for these backends."""

    def execute(files, seed, events, ref_build, builds, keep):
        ship = ShippedBuild if cluster else (lambda b: b)
        travel = (lambda b: ship(b) if hasattr(b, "path") else b)
        corpus = [(f.parent.name, f.name, f.read_text()) for f in files]
        ctx = current_context()
        ref = travel(ref_build)
        units = [Unit(f"verify-step{i + 1}", TASK, {"ref": ref, "cand": travel(b),
                                                    "corpus": corpus, "seed": seed,
                                                    "events": events, "keep": keep}, ctx)
                 for i, b in enumerate(builds)]
        step = progress or (lambda label=None, n=1: None)
        results = run_units(units, jobs=jobs, cluster=cluster, on_result=lambda uid, r: step(uid))
        ordered = [results[u.id] for u in units]
        for r in ordered:
            if "error" in r:
                raise VerifyError(r["error"])
        if not ordered:      # no step: the reference alone, for its bugs
            return {}, step_unit(ref, _NoStep(), corpus, seed, events, keep)["ref_bugs"], {}
        return ({str(i): r["tally"] for i, r in enumerate(ordered)}, ordered[0]["ref_bugs"],
                {str(i): r["translations"] for i, r in enumerate(ordered)})

    return execute
