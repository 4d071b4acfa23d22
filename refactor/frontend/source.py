"""A kernel tree on disk: which files matter, its version, reading them safely."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Files whose references the index reports (relative to the tree root).
SCAN_GLOBS = ("arch/x86/kvm/**/*.c", "arch/x86/kvm/**/*.h", "arch/x86/include/asm/kvm*.h")
# Files read only for type information (struct kvm_vcpu lives here).
TYPE_ONLY = ("include/linux/kvm_host.h", "include/linux/kvm_types.h")

MAX_BYTES = 4 * 1024 * 1024  # larger files are reported, and only lexed


class TreeError(ValueError):
    """The path is not a readable kernel tree."""


@dataclass
class SourceFile:
    rel: str
    path: Path
    data: bytes
    problem: str | None = None  # why it is not (fully) parsed: binary, empty, ...
    type_only: bool = False


def kernel_version(root: Path) -> str | None:
    """VERSION.PATCHLEVEL.SUBLEVEL from the top Makefile, if there is one."""
    try:
        head = (root / "Makefile").read_text(errors="replace")[:4096]
    except OSError:
        return None
    vals = {}
    for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL", "EXTRAVERSION"):
        m = re.search(rf"^{key}[ \t]*=[ \t]*([^\s#]*)", head, re.M)
        vals[key] = m.group(1) if m else ""
    if not vals["VERSION"]:
        return None
    ver = ".".join(v for v in (vals["VERSION"], vals["PATCHLEVEL"], vals["SUBLEVEL"]) if v)
    return ver + vals["EXTRAVERSION"]


def _classify(data: bytes) -> str | None:
    if not data:
        return "empty file"
    if b"\0" in data[:8192]:
        return "binary file"
    if len(data) > MAX_BYTES:
        return f"file larger than {MAX_BYTES // (1024 * 1024)} MiB"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 (byte {exc.start})"
    return None


def discover(root: Path) -> list[SourceFile]:
    """The tree's KVM sources, sorted, each read once."""
    root = Path(root)
    if not root.is_dir():
        raise TreeError(f"{root}: not a directory")
    if not (root / "arch/x86/kvm").is_dir():
        raise TreeError(f"{root}: no arch/x86/kvm here (is this a kernel tree?)")
    seen: dict[str, SourceFile] = {}
    for pattern in SCAN_GLOBS:
        for path in root.glob(pattern):
            if path.is_file() and not path.is_symlink():
                rel = path.relative_to(root).as_posix()
                seen[rel] = _read(rel, path)
    for rel in TYPE_ONLY:
        path = root / rel
        if path.is_file() and rel not in seen:
            sf = _read(rel, path)
            sf.type_only = True
            seen[rel] = sf
    return [seen[k] for k in sorted(seen)]


def _read(rel: str, path: Path) -> SourceFile:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return SourceFile(rel, path, b"", problem=f"unreadable: {exc.strerror}")
    return SourceFile(rel, path, data, problem=_classify(data))
