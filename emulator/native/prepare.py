"""The Kbuild side of the native engine: a configured, prepared output directory and the
tree's own preprocessor command line for each KVM unit.

Kbuild runs once per *configuration*, not once per tree: a prepared output
directory records every source file its generated headers and its `.config`
were made from (the `.cmd` files Kbuild writes, `auto.conf.cmd` for the
Kconfig files, the Makefiles), and any tree whose copies of those files are
byte-identical (a rewrite of arch/x86/kvm, a series step) reuses it.  The
units are then preprocessed by running the command Kbuild used for the
`.i` target, with the tree's path put in (`unit_command()`), without `make`.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

KVM_OPTIONS = ("KVM", "KVM_INTEL", "KVM_AMD")
SRC = "@SRC@"
# Files whose text makes the flags and the configuration, besides what .cmd files list.
FIXED_INPUTS = ("Makefile", "arch/x86/Makefile", "arch/x86/kvm/Makefile",
                "arch/x86/configs/x86_64_defconfig", "scripts/Kbuild.include",
                "scripts/Makefile.build", "scripts/Makefile.lib", "scripts/Makefile.compiler",
                "scripts/Makefile.extrawarn", "scripts/Makefile.host", "virt/kvm/Makefile.kvm")
_CMD = re.compile(r"^(?:saved)?cmd_(\S+) := (.*)$", re.M)
_DIAG = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?:\d+:)? (?:fatal )?error: (?P<msg>.*)$",
                   re.M)


class PrepareError(RuntimeError):
    """Kbuild could not configure or prepare the tree; the message is one line."""


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=dict(os.environ, LC_ALL="C"), capture_output=True,
                          text=True)


def first_error(text: str) -> str:
    m = _DIAG.search(text)
    if m:
        return f"{m['file']}:{m['line']}: {m['msg']}"
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    for ln in lines:
        if "multiple definition" in ln or "undefined reference" in ln or "error:" in ln:
            return ln.strip()
    return lines[-1] if lines else "unknown error"


def dep_paths(text: str) -> list[str]:
    """Paths a Kbuild .cmd file or a gcc -MD file lists (config wildcards left out)."""
    text = re.sub(r"\$\(wildcard [^)]*\)", " ", text)
    out = []
    for tok in text.replace("\\\n", " ").split():
        tok = tok.rstrip(":")
        if tok.endswith((".h", ".c", ".S", ".lds", ".tbl", ".sh")) or tok.startswith("/"):
            out.append(tok)
    return out


class Hasher:
    """Content digests of a tree's files, each file read once per build."""

    def __init__(self, tree: Path, out: Path):
        self.tree, self.out = tree, out
        self.prefix = str(tree) + "/"
        self.memo: dict[str, bytes] = {}

    def rel(self, path: str) -> str | None:
        """'T:rel' for a tree file, None for a generated or system file."""
        if path.startswith(self.prefix):
            return "T:" + os.path.normpath(path[len(self.prefix):])
        return None

    def file(self, rel: str) -> bytes:
        d = self.memo.get(rel)
        if d is None:
            try:
                data = (self.tree / rel[2:]).read_bytes()
                d = hashlib.sha256(data).digest()
            except OSError:
                d = b"missing"
            self.memo[rel] = d
        return d

    def digest(self, rels: list[str], *extra: str) -> str:
        h = hashlib.sha256()
        for e in extra:
            h.update(e.encode() + b"\0")
        for rel in rels:
            h.update(rel.encode() + b"\0" + self.file(rel))
        return h.hexdigest()[:24]


@dataclass
class Prepared:
    """A configured and prepared output directory usable for a tree."""
    out: Path
    owner: str                       # the tree Kbuild ran for
    inputs: list[str]                # 'T:rel' files it was made from
    digest: str                      # their content (the owner's)
    templates: dict[str, list[str]]  # unit -> preprocessor argv, SRC for the tree
    config: str                      # digest of the generated autoconf.h
    fresh: bool = False              # Kbuild has just preprocessed the units for this tree

    def save(self) -> None:
        (self.out / "kvm-refactor-prep.json").write_text(json.dumps(
            {"owner": self.owner, "inputs": self.inputs, "digest": self.digest,
             "templates": self.templates, "config": self.config}))

    @classmethod
    def load(cls, out: Path) -> "Prepared | None":
        try:
            d = json.loads((out / "kvm-refactor-prep.json").read_text())
            return cls(out, d["owner"], d["inputs"], d["digest"], d["templates"], d["config"])
        except (OSError, ValueError, KeyError):
            return None


def configure(tree: Path, out: Path) -> None:
    """defconfig + KVM, KVM_INTEL, KVM_AMD in OUT (as refactor/kernel/build.py does)."""
    if (out / ".config").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    steps = [["make", f"O={out}", "defconfig"],
             ["scripts/config", "--file", str(out / ".config")]
             + [x for o in KVM_OPTIONS for x in ("-e", o)],
             ["make", f"O={out}", "olddefconfig"]]
    for cmd in steps:
        proc = run(cmd, tree)
        if proc.returncode != 0:
            (out / ".config").unlink(missing_ok=True)
            raise PrepareError(f"{tree}: {' '.join(cmd[:2])} failed: "
                               f"{first_error(proc.stderr + proc.stdout)}")


def _template(tree: Path, command: str) -> list[str]:
    argv = []
    words = shlex.split(command)
    skip = False
    for i, w in enumerate(words):
        if skip:
            skip = False
            continue
        if w.startswith("-Wp,-MMD,") or w.startswith("-Wp,-MD,"):
            argv.append("-Wp,-MMD,@DEP@")
        elif w == "-o":
            argv += ["-o", "@OUT@"]
            skip = True
        else:
            argv.append(w.replace(str(tree), SRC))
    return argv


def _inputs(tree: Path, out: Path, units: list[str]) -> list[str]:
    """Every tree file the prepared directory depends on ('T:rel', sorted)."""
    h = Hasher(tree, out)
    skip = {f".{Path(u).stem}.i.cmd" for u in units}
    found = {"T:" + f for f in FIXED_INPUTS if (tree / f).exists()}
    for cmd in out.rglob(".*.cmd"):
        if cmd.name in skip and "arch/x86/kvm" in str(cmd):
            continue
        try:
            text = cmd.read_text(errors="replace")
        except OSError:
            continue
        for p in dep_paths(text):
            rel = h.rel(p)
            if rel:
                found.add(rel)
    auto = out / "include/config/auto.conf.cmd"
    if auto.exists():
        for m in re.finditer(r"^\s*(\S*Kconfig\S*)\s*\\?$", auto.read_text(errors="replace"), re.M):
            p = m.group(1)
            found.add("T:" + p if not p.startswith("/") else (h.rel(p) or p))
    return sorted(found)


def prepare(tree: Path, out: Path, units: list[str], jobs: int = 2) -> Prepared:
    """Configure and prepare OUT for TREE (Kbuild), preprocess UNITS once to learn their
    command lines.  objtool is not built: nothing here is linked into a kernel."""
    configure(tree, out)
    targets = [u[:-2] + ".i" for u in units]
    # CONFIG_OBJTOOL= on the command line drops `prepare: tools/objtool` (a host tool
    # for object files; .i targets never run it): half of a cold prepare.
    proc = run(["make", f"O={out}", f"-j{jobs}", "-s", "CONFIG_OBJTOOL="] + targets, tree)
    if proc.returncode != 0:
        raise PrepareError(f"{tree}: cannot preprocess KVM: "
                           f"{first_error(proc.stderr + proc.stdout)}")
    templates = {}
    for u in units:
        cmd = out / (str(Path(u).parent) + f"/.{Path(u).stem}.i.cmd")
        m = _CMD.search(cmd.read_text(errors="replace")) if cmd.exists() else None
        if not m:
            raise PrepareError(f"{tree}: Kbuild left no command for {u[:-2]}.i")
        templates[u] = _template(tree, m.group(2))
    inputs = _inputs(tree, out, units)
    autoconf = out / "include/generated/autoconf.h"
    config = hashlib.sha256(autoconf.read_bytes()).hexdigest()[:24] if autoconf.exists() else ""
    prep = Prepared(out, str(tree), inputs, Hasher(tree, out).digest(inputs), templates, config,
                    fresh=True)
    prep.save()
    return prep


def find_prepared(root: Path, tree: Path, units: list[str], jobs: int = 2,
                  say=lambda msg: None) -> tuple[Prepared, Hasher]:
    """A prepared directory valid for TREE: one whose inputs the tree has unchanged, else a
    new one (Kbuild run for this tree)."""
    base = root / "prep"
    own = base / hashlib.sha1(str(tree).encode()).hexdigest()[:12]
    candidates = [own] + sorted(p for p in base.glob("*") if p != own) if base.exists() else [own]
    for out in candidates:
        prep = Prepared.load(out)
        if prep is None or sorted(prep.templates) != sorted(units):
            continue
        h = Hasher(tree, out)
        if h.digest(prep.inputs) == prep.digest:
            return prep, h
    say(f"configuring and preparing {tree} in {own} (Kbuild)")
    base.mkdir(parents=True, exist_ok=True)
    with open(base / f"{own.name}.lock", "w") as lock:
        # Two builds of one tree at once would run Kbuild in one directory together.
        fcntl.flock(lock, fcntl.LOCK_EX)
        prep = Prepared.load(own)
        if prep is None or sorted(prep.templates) != sorted(units) or \
                Hasher(tree, own).digest(prep.inputs) != prep.digest:
            prep = prepare(tree, own, units, jobs)
    return prep, Hasher(tree, own)


def kbuild_output(prep: Prepared, unit: str) -> tuple[Path, Path] | None:
    """(the .i Kbuild wrote for UNIT, its .cmd with the dependencies) when just made."""
    if not prep.fresh:
        return None
    i = prep.out / (unit[:-2] + ".i")
    cmd = i.parent / f".{i.name}.cmd"
    return (i, cmd) if i.exists() and cmd.exists() else None


def unit_command(prep: Prepared, tree: Path, unit: str, out_i: Path, dep: Path) -> list[str]:
    """The tree's own preprocessor command for UNIT, writing OUT_I and its dependencies."""
    return [w.replace(SRC, str(tree)).replace("@DEP@", str(dep)).replace("@OUT@", str(out_i))
            for w in prep.templates[unit]]
