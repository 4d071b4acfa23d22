"""The compile oracle: Kbuild on a real tree, errors mapped back to rewrite sites.

The user's tree is never written: a build of a rewrite happens in a symlink
farm of the tree (`cp -as`) whose rewritten files are real files, with the
objects in a separate output directory (Kbuild's O=), kept for incremental
rebuilds.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from refactor.apply.splice import write_atomic

KVM_OPTIONS = ("KVM", "KVM_INTEL", "KVM_AMD")
# --config: how KVM is configured on top of defconfig (scripts/config switch).
CONFIGS = {"builtin": "-e", "modules": "-m"}
CONFIG_LABELS = {"builtin": "defconfig + KVM, KVM_INTEL, KVM_AMD built in",
                 "modules": "defconfig + KVM, KVM_INTEL, KVM_AMD as modules"}
_DIAG = re.compile(r"^(?P<file>[^\s:]+\.[ch]):(?P<line>\d+):(?P<col>\d+): (?P<kind>error|fatal error): (?P<msg>.*)$",
                   re.M)


from refactor.errors import BuildError  # noqa: E402,F401  (defined there; re-exported here)


@dataclass
class Diagnostic:
    file: str
    line: int
    column: int
    message: str
    site: dict | None = None  # the rewrite site it maps to, if any


@dataclass
class BuildResult:
    ok: bool
    seconds: float
    errors: list[Diagnostic] = field(default_factory=list)
    log_tail: str = ""
    command: str = ""
    reason: str | None = None  # Kbuild's one-line reason when it failed without a compile error


def work_dir() -> Path:
    base = os.environ.get("KVM_REFACTOR_CACHE")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kvm-refactor"
    return root / "build"


def claim(root: Path, label: str, lock_stem=lambda name: name) -> tuple[str, object]:
    """(name, open lock file) of a directory set under ROOT that this run holds alone until it
    closes the file: LABEL, or LABEL-2, LABEL-3... when another run holds it.  Farms and
    output directories are kept between runs (a reused farm rewrites only what differs);
    two runs at once must not rewrite files under each other's build."""
    import fcntl
    import itertools

    root.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        name = label if n == 1 else f"{label}-{n}"
        lock = open(root / f"{lock_stem(name)}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return name, lock
    raise AssertionError("unreachable")


def _key(tree: Path) -> str:
    return hashlib.sha1(str(tree.resolve()).encode()).hexdigest()[:12]


# Where distributions put ccache's compiler links (`gcc` -> ccache).
_CCACHE_LINKS = ("/usr/lib/ccache", "/usr/lib64/ccache", "/usr/local/lib/ccache")


def ccache_links() -> str | None:
    """ccache's directory of compiler links when ccache is installed (KVM_REFACTOR_CCACHE=0: off).

    Put first on PATH, Kbuild's `gcc` is ccache: a file compiled before with the same
    preprocessed text and flags (a series' step built by an earlier run) is taken from the
    cache, with its warnings replayed.  Kbuild's command lines do not change, so an
    output directory built without ccache is not rebuilt because of it.
    """
    if os.environ.get("KVM_REFACTOR_CCACHE", "1") == "0" or shutil.which("ccache") is None:
        return None
    return next((d for d in _CCACHE_LINKS if os.path.exists(os.path.join(d, "gcc"))), None)


def _env() -> dict[str, str]:
    env = dict(os.environ, LC_ALL="C")
    links = ccache_links()
    if links:
        env["PATH"] = links + os.pathsep + env.get("PATH", "")
    return env


def _run(cmd: list[str], cwd: Path, log=None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)


def kbuild_reason(text: str, src: Path) -> str | None:
    """Kbuild's own reason for a failure that is not a compile error, with the fix, in one line."""
    if "source tree is not clean" in text or "please run 'make mrproper'" in text:
        return (f"{src}: the kernel source tree is not clean (configured or built in place, e.g. a .config "
                f"or include/config/ there), so Kbuild refuses an O= build: please run make mrproper in it")
    for tool, package in (("flex", "flex"), ("bison", "bison"), ("bc", "bc"), ("gcc", "gcc"),
                          ("openssl", "libssl-dev")):
        if re.search(rf"\b{tool}: (command )?not found", text):
            return f"Kbuild needs {tool}, which is not installed: apt-get install {package}"
    if "libelf" in text and ("please install" in text or "No such file" in text):
        return "Kbuild needs libelf's headers (objtool): apt-get install libelf-dev"
    m = re.search(r"^\*\*\* (.+)$", text, re.M)
    if m:
        return f"Kbuild: {m.group(1).strip()}"
    m = re.search(r"^.*(?:error|Error)[: ].*$", text, re.M)
    return m.group(0).strip() if m else None


def unclean_reason(src: Path) -> str | None:
    """Kbuild's check, made before running it: an in-place configuration breaks O= builds."""
    if (src / ".config").exists() or (src / "include" / "config").is_dir():
        return kbuild_reason("source tree is not clean", src)
    return None


def configure(src: Path, out: Path, config: str = "builtin") -> None:
    """defconfig with KVM, KVM_INTEL and KVM_AMD on (or as modules), when out has no .config."""
    if (out / ".config").exists():
        return
    if config not in CONFIGS:
        raise BuildError(f"unknown --config {config!r} (known: {', '.join(CONFIGS)})")
    out.mkdir(parents=True, exist_ok=True)
    switch = CONFIGS[config]
    steps = [["make", f"O={out}", "defconfig"],
             ["scripts/config", "--file", str(out / ".config")] + [x for o in KVM_OPTIONS for x in (switch, o)],
             ["make", f"O={out}", "olddefconfig"]]
    for cmd in steps:
        proc = _run(cmd, src)
        if proc.returncode != 0:
            (out / ".config").unlink(missing_ok=True)  # not half-configured for the next run
            text = proc.stdout + proc.stderr
            raise BuildError(kbuild_reason(text, src) or f"{' '.join(cmd[:3])} failed: "
                             + (text.strip().splitlines() or [""])[-1])


def build_kvm(src: Path, out: Path, jobs: int = 2, config: str = "builtin") -> BuildResult:
    import time

    if not (src / "Makefile").exists() or not (src / "scripts").is_dir():
        raise BuildError(f"{src}: not a full kernel tree (no scripts/); get one with "
                         "`kvm-refactor fetch-tree VERSION --full`")
    from refactor.kernel.preflight import check_build

    problem = check_build()  # flex/bison/bc/libelf missing: say so, not make's Error 2
    if problem:
        raise BuildError(problem)
    unclean = unclean_reason(src)
    if unclean:
        raise BuildError(unclean)
    configure(src, out, config)
    cmd = ["make", f"O={out}", f"-j{jobs}", "arch/x86/kvm/"]
    start = time.monotonic()
    proc = _run(cmd, src)
    seconds = time.monotonic() - start
    text = proc.stdout + proc.stderr
    errors = []
    for m in _DIAG.finditer(text):
        f = m.group("file")
        rel = os.path.relpath(f, src) if os.path.isabs(f) else f
        errors.append(Diagnostic(rel, int(m.group("line")), int(m.group("col")), m.group("msg")))
    return BuildResult(proc.returncode == 0, seconds, errors, "\n".join(text.splitlines()[-15:]),
                       " ".join(cmd), None if proc.returncode == 0 or errors else kbuild_reason(text, src))


def farm(tree: Path, dest: Path, files: dict[str, bytes], originals: set[str] | None = None) -> Path:
    """A symlink farm of `tree` at `dest` with `files` (relative path -> content) real.

    A file written by an earlier call and not in `files` now gets the tree's content
    back as a real file: relinked, it would show the tree file's old time, older than the
    objects built from the written version, and Kbuild, which compares times, would keep
    those (a series run after another starts from the last step's objects).
    """
    tree = tree.resolve()
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        proc = subprocess.run(["cp", "-as", str(tree), str(tmp)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"cannot make a symlink farm of {tree}: {proc.stderr.strip()}")
        os.replace(tmp, dest)
    marker = dest / ".kvm-refactor-written"
    previous = set(marker.read_text().split("\n")) - {""} if marker.exists() else set()
    files = dict(files)
    for rel in previous - set(files):
        if (tree / rel).is_file():
            files[rel] = (tree / rel).read_bytes()
        elif (dest / rel).is_file() and not (dest / rel).is_symlink():
            (dest / rel).unlink()  # a file the tree does not have
    for rel, data in files.items():
        target = dest / rel
        if target.is_symlink():
            target.unlink()
        if not target.exists() or target.read_bytes() != data:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                write_atomic(target, data)
            else:
                target.write_bytes(data)
    marker.write_text("\n".join(sorted(files)))
    return dest


def map_errors(errors: list[Diagnostic], plan) -> None:
    """Attach to each error the rewrite site nearest above it in the same file."""
    sites = new_line_sites(plan)
    for err in errors:
        best = None
        for site in sites.get(err.file, []):
            if site["new_line"] <= err.line + 1 and (best is None or site["new_line"] > best["new_line"]):
                best = site
        if best is not None and err.line - best["new_line"] <= 40:
            err.site = best


def new_line_sites(plan) -> dict[str, list[dict]]:
    """Where each edit of a plan lands in the rewritten file (line numbers)."""
    from refactor.plan.edits import DROP

    out: dict[str, list[dict]] = {}
    by_file: dict[str, list] = {}
    for e in plan.edits:
        by_file.setdefault(e.file, []).append(e)
    for rel, edits in by_file.items():
        delta = 0
        for e in sorted(edits, key=lambda e: e.start):
            added = e.new.count("\n") - e.old.count("\n") - (1 if DROP in e.new else 0)
            out.setdefault(rel, []).append({"file": rel, "line": e.line, "new_line": e.line + delta,
                                            "rule": e.rule, "old": e.old[:80], "new": e.new[:80]})
            delta += added
    return out


def check_tree(tree: Path, plan=None, jobs: int = 2, config: str = "builtin") -> BuildResult:
    """Build KVM of `tree`, or of `plan`'s rewrite of it (in a farm), and map errors."""
    tree = Path(tree)
    unclean = unclean_reason(tree)  # named on the user's tree, not on the farm that links it
    if unclean:
        raise BuildError(unclean)
    key = _key(tree) + ("" if config == "builtin" else f"-{config}")
    # Kbuild ties an output directory to one source tree: one per (tree, farm or not).
    out = work_dir() / f"{key}-{'rewrite' if plan is not None else 'plain'}-out"
    src = tree
    if plan is not None:
        src = farm(tree, work_dir() / f"{key}-src", plan.results)
    result = build_kvm(src, out, jobs, config)
    if plan is not None:
        map_errors(result.errors, plan)
    return result
