"""Model factories for the CLI: the Python model or native engines of trees.

`--engine native --tree A`: the Python old-layout model (reference) against
tree A's own code; `--tree A --tree B`: A (reference) against B.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .build import EngineError
from .model import NativeBuild, NativeModel, build_engine


class SharedProcessModel(NativeModel):
    """A NativeModel on a process kept by its factory: every trace starts with a
    reset (a fresh vCPU), so fuzz episodes need no new process each."""

    def __init__(self, build: NativeBuild, proc):
        self.build = build
        self.translations = 0
        self.translate_time = 0.0
        self._proc = proc

    def close(self) -> None:      # the factory owns the process
        pass


def factory(build: NativeBuild) -> Callable[[], NativeModel]:
    holder: dict = {}

    def make() -> NativeModel:
        proc = holder.get("proc")
        if proc is None or proc.poll() is not None:
            holder["model"] = build.model()
            proc = holder["proc"] = holder["model"]._proc
        return SharedProcessModel(build, proc)

    return make


def build_all(trees: tuple[Path, ...], progress=None) -> list[NativeBuild]:
    builds = []
    for tree in trees:
        builds.append(build_engine(tree, progress=progress))
    return builds


def label(build: NativeBuild) -> str:
    return f"{build.tree} ({build.version}, {build.info.layout.get('layout')} layout)"


def stub_hit(result: dict) -> str | None:
    """The message of a result that hit a harness gap (not a kernel behaviour)."""
    if result.get("stub"):
        return result.get("bug")
    return None


__all__ = ["EngineError", "SharedProcessModel", "build_all", "factory", "label", "stub_hit"]
