"""`port` as units: one unit per target tree, the whole series of patches on it.

port_patches() puts each patch onto the target as the patches before it left
it (a series), so a target is the smallest independent unit: a patch's result
depends on the earlier patches of the same target, never on another target.
Each unit is port_patches() for one target; its TargetResult (plain
dataclasses: strings, the target's files, the ported mails) comes back, and
the report is the units' results in the order of --onto, exactly as the
single-process loop builds it.  A unit's bad input (not a kernel tree) comes
back as data too, and the first in --onto order is raised: which unit
finishes first never decides the error shown.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from refactor.errors import PatchError, RulesError, TreeError
from refactor.port.engine import PortReport, port_patches
from refactor.rules import load_rules

from . import Unit, current_context, run_units

TASK = "refactor.execute.port_matrix:port_unit"
_CWD = threading.Lock()


def port_unit(mails: list, target: str, cwd: str, names_spec: str | None,
              target_names: str | None, porter, subject_prefix: str | None) -> dict:
    """port_patches() for one target: {"target": TargetResult} or {"error": exception}."""
    try:
        if Path(target).is_absolute() or os.getcwd() == cwd:
            report = port_patches(mails, [target], names_spec=names_spec,
                                  target_names=target_names, porter=porter,
                                  subject_prefix=subject_prefix)
        else:
            # A cluster worker runs elsewhere: the target is read as the user named it,
            # from the user's directory (trees on a shared filesystem), so the report
            # names it as a single-process run does.
            with _CWD:
                back = os.getcwd()
                os.chdir(cwd)
                try:
                    report = port_patches(mails, [target], names_spec=names_spec,
                                          target_names=target_names, porter=porter,
                                          subject_prefix=subject_prefix)
                finally:
                    os.chdir(back)
    except (PatchError, TreeError, RulesError) as exc:
        return {"error": exc}
    return {"target": report.targets[0]}


def run_port(mails: list, targets: list[str], names_spec: str | None = None,
             target_names: str | None = None, porter=None, subject_prefix: str | None = None,
             *, jobs: int | None = None, cluster: str | None = None,
             progress=None) -> PortReport:
    """port_patches(mails, targets, ...) with one unit per target, on any backend."""
    if names_spec:
        load_rules().names(names_spec)  # a bad specification is bad input before any work
    ctx = current_context()
    units = [Unit(f"port-{k}-{t}", TASK, {"mails": mails, "target": str(t), "cwd": os.getcwd(),
                                          "names_spec": names_spec,
                                          "target_names": target_names, "porter": porter,
                                          "subject_prefix": subject_prefix}, ctx)
             for k, t in enumerate(targets)]
    step = progress or (lambda label=None, n=1: None)
    results = run_units(units, jobs=jobs, cluster=cluster,
                        on_result=lambda uid, r: step(uid.split("-", 2)[2]))
    report = PortReport(targets=[])
    for u in units:
        r = results[u.id]
        if "error" in r:
            raise r["error"]
        report.targets.append(r["target"])
    return report
