"""The native engine: the kernel tree's own KVM C, compiled for user space and executed.

    build = build_engine(tree)          # cached by content
    model = build.model()               # same interface as emulator.machine.Model
    run_pair(events, build_a.model(), build_b.model())

See docs/native-engine.md.
"""
from .build import EngineError
from .model import NativeBuild, NativeModel, build_engine

__all__ = ["EngineError", "NativeBuild", "NativeModel", "build_engine"]
