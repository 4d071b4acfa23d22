"""A kernel tree on disk: which files matter, its version, reading them safely.

Reading is bounded: only regular files inside the tree are read (a symlink
leaving it, a device or a FIFO is refused), a file larger than MAX_BYTES or
nested deeper than MAX_NESTING is refused with the limit named (the later
stages walk syntax trees recursively), and an unreadable file or directory
is an error rather than a silent gap in the index.
"""
from __future__ import annotations

import os
import re
import stat
from array import array
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

from refactor.errors import TreeError  # noqa: F401  (defined there; re-exported here)

# Files whose references the index reports (relative to the tree root).
SCAN_GLOBS = ("arch/x86/kvm/**/*.c", "arch/x86/kvm/**/*.h", "arch/x86/include/asm/kvm*.h")
# The same, as (directory, recursive, name pattern) for the bounded walk below.
_SCAN_DIRS = (("arch/x86/kvm", True, re.compile(r".*\.[ch]\Z", re.S)),
              ("arch/x86/include/asm", False, re.compile(r"kvm.*\.h\Z", re.S)))
# Files read only for type information (struct kvm_vcpu lives here).
TYPE_ONLY = ("include/linux/kvm_host.h", "include/linux/kvm_types.h")

# The largest KVM source (x86.c) is about 400 KB; ten times that is still
# plausible, a 50 MB "source" is not and would take minutes and gigabytes.
MAX_BYTES = 4 * 1024 * 1024
# Brackets, conditional expressions and #if blocks nest syntax trees that the
# indexer and rewriter walk recursively; real KVM code stays below 20.
MAX_NESTING = 200

__all__ = ["MAX_BYTES", "MAX_NESTING", "SCAN_GLOBS", "TYPE_ONLY", "SourceFile", "TreeError", "discover",
           "kernel_version", "nesting_depth"]


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
        mk = Path(root) / "Makefile"
        if not mk.is_file():
            return None
        with mk.open("rb") as fh:
            head = fh.read(4096).decode("utf-8", "replace")
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


# Comments, string and character literals: their brackets do not nest anything.
_NOT_CODE = re.compile(rb'/\*.*?(?:\*/|\Z)|//[^\n]*|"(?:\\.|[^"\\\n])*"?|\'(?:\\.|[^\'\\\n])*\'?', re.S)
_BRACKETS = bytes.maketrans(b"([{)]}", b"\x01\x01\x01\xff\xff\xff")
# Every byte except the two bracket marks is deleted before summing.
_NOT_MARK = bytes(b for b in range(256) if b not in (1, 255))
_PP = re.compile(rb"#[ \t]*(if|ifdef|ifndef|endif)\b")


def nesting_depth(data: bytes) -> tuple[int, int]:
    """(depth, byte offset where it is reached): brackets plus the conditional
    operators of one statement plus open #if blocks, an upper bound of how deep
    the syntax tree nests.  Linear, and in C loops (no Python loop per byte);
    the offset is exact only when the depth is over MAX_NESTING."""
    code = _NOT_CODE.sub(b" ", data)
    depth = max(accumulate(array("b", code.translate(_BRACKETS).translate(None, _NOT_MARK))), default=0)
    directives = _PP.findall(code)
    questions = code.count(b"?")
    if depth + questions + len(directives) <= MAX_NESTING:  # a bound that is cheap to get
        return max(depth, 0) + questions + len(directives), 0
    ternary = max((s.count(b"?") for s in code.split(b";")), default=0)
    pp = max(accumulate(-1 if m == b"endif" else 1 for m in directives), default=0)
    total = max(depth, 0) + ternary + max(pp, 0)
    if total <= MAX_NESTING:
        return total, 0
    # Over the limit: find where, with offsets kept (rare, so the slow way).
    code = _NOT_CODE.sub(lambda m: b" " * (m.end() - m.start()), data)
    if depth < max(ternary, pp):
        return total, code.find(b"?") if ternary >= pp else code.find(b"#")
    level = 0
    for i, b in enumerate(code.translate(_BRACKETS)):
        level += 1 if b == 1 else -1 if b == 255 else 0
        if level >= depth:
            return total, i
    return total, 0


def _classify(data: bytes) -> str | None:
    if not data:
        return "empty file"
    if b"\0" in data[:8192]:
        return "binary file"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 (byte {exc.start})"
    return None


def _check_bounds(rel: str, data: bytes) -> None:
    if len(data) > MAX_BYTES:
        raise TreeError(f"{rel}: {len(data)} bytes, larger than the {MAX_BYTES // (1024 * 1024)} MiB "
                        "limit for one source file")
    depth, at = nesting_depth(data)
    if depth > MAX_NESTING:
        line = data.count(b"\n", 0, max(at, 0)) + 1
        raise TreeError(f"{rel}:{line}: nested {depth} levels deep (brackets, ?: and #if), more than the "
                        f"limit of {MAX_NESTING}")


def discover(root: Path) -> list[SourceFile]:
    """The tree's KVM sources, sorted, each read once."""
    root = Path(root)
    if not root.is_dir():
        raise TreeError(f"{root}: not a directory")
    if not (root / "arch/x86/kvm").is_dir():
        raise TreeError(f"{root}: no arch/x86/kvm here (is this a kernel tree?)")
    if os.path.lexists(root / ".kvm-refactor-journal.json"):  # refactor.apply.inplace.JOURNAL
        raise TreeError(f"{root}: an in-place rewrite was interrupted here; run `kvm-refactor rewrite "
                        "--in-place` again to finish or undo it")
    real_root = root.resolve()
    seen: dict[str, SourceFile] = {}
    for top, recursive, pattern in _SCAN_DIRS:
        for rel in _walk(root, real_root, top, recursive, pattern):
            seen[rel] = _read(root, real_root, rel)
    for rel in TYPE_ONLY:
        if rel not in seen and os.path.lexists(root / rel):
            sf = _read(root, real_root, rel)
            sf.type_only = True
            seen[rel] = sf
    return [seen[k] for k in sorted(seen)]


def _inside(real_root: Path, path: Path) -> bool:
    try:
        return path.resolve().is_relative_to(real_root)
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _walk(root: Path, real_root: Path, top: str, recursive: bool, pattern: re.Pattern) -> list[str]:
    """Relative paths of matching entries under `top`: iterative, symlinks not followed."""
    start = root / top
    if not os.path.lexists(start):
        return []
    if not _inside(real_root, start):
        raise TreeError(f"{start}: symbolic link to {start.resolve()}, outside the tree")
    out, stack = [], [top]
    visited = {start.resolve()}  # directory symlinks inside the tree are followed, once each
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(root / rel_dir) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise TreeError(f"{root / rel_dir}: cannot read directory: {exc.strerror}") from None
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}"
            if entry.is_symlink():
                if not _inside(real_root, root / rel):
                    raise TreeError(f"{root / rel}: symbolic link to {os.path.realpath(root / rel)}, outside the tree")
                # Inside the tree: read through it, so the index has no silent gap (an in-place
                # rewrite then refuses to write through it: refactor/apply/inplace.py).
                if entry.is_dir():
                    real = (root / rel).resolve()
                    if recursive and real not in visited:
                        visited.add(real)
                        stack.append(rel)
                elif pattern.match(entry.name):
                    out.append(rel)
            elif entry.is_dir(follow_symlinks=False):
                if recursive:
                    stack.append(rel)
            elif pattern.match(entry.name):
                out.append(rel)
    return out


def _read(root: Path, real_root: Path, rel: str) -> SourceFile:
    path = root / rel
    rel_name, rel = rel, str(path)  # messages name the path as the user gave the tree
    if not _inside(real_root, path):
        raise TreeError(f"{rel}: symbolic link to {os.path.realpath(path)}, outside the tree")
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise TreeError(f"{rel}: not a regular file")
        if st.st_size > MAX_BYTES:
            raise TreeError(f"{rel}: {st.st_size} bytes, larger than the {MAX_BYTES // (1024 * 1024)} MiB "
                            "limit for one source file")
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise TreeError(f"{rel}: cannot read: {exc.strerror}") from None
    _check_bounds(rel, data)
    return SourceFile(rel_name, path, data, problem=_classify(data))


def read_tree_file(root: str | Path, rel: str) -> bytes | None:
    """The bytes of `rel` inside `root`, a path that came from untrusted input (a patch header).

    None when there is no such file.  Refused with TreeError: an absolute
    path, a `..` component, a path leading out of the tree through a symlink,
    anything but a regular file (a device would never end, a FIFO would
    block), and a file over the size or nesting limits.
    """
    root = Path(root)
    parts = rel.replace("\\", "/").split("/")
    if rel.startswith("/") or ".." in parts or "\0" in rel or not rel.strip("/"):
        raise TreeError(f"{rel!r}: not a path inside the tree (absolute, '..' or empty)")
    path = root.joinpath(*[p for p in parts if p not in ("", ".")])
    if not os.path.lexists(path):
        return None
    if not _inside(root.resolve(), path):
        raise TreeError(f"{path}: symbolic link to {os.path.realpath(path)}, outside the tree")
    return _read(root, root.resolve(), path.relative_to(root).as_posix()).data
