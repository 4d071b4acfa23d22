"""Hostile input through every command: the exit code means one thing, the message is one line.

Each case builds its input in a temporary directory, runs one command in
process (click's CliRunner, so monkeypatched faults reach the code) and
asserts the exit code and that stderr is exactly one line matching a
pattern -- never a traceback.  Codes: 0 ok, 1 findings, 2 bad input,
3 needs a human, 4 internal error (README, "Exit codes").
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from refactor.cli.app import main

REPO = Path(__file__).resolve().parent.parent
MINI = REPO / "fixtures" / "mini-kvm"


def mini(tmp: Path, name: str = "tree") -> Path:
    dest = tmp / name
    shutil.copytree(MINI, dest)
    return dest


def add_function(tree: Path, body: str) -> Path:
    path = tree / "arch/x86/kvm/x86.c"
    path.write_text(path.read_text() + "\nint hostile_fn(struct kvm_vcpu *vcpu, int x)\n{\n" + body + "}\n")
    return tree


def add_define(tree: Path, name: str) -> Path:
    path = tree / "arch/x86/include/asm/kvm_host.h"
    path.write_text(f"#define {name} 1024\n" + path.read_text())
    return tree


def write(tmp: Path, name: str, data: bytes | str) -> Path:
    path = tmp / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def patch_text(old: str, new: str = "x.c", hunk: str = "@@ -1 +1 @@\n-a\n+b\n", quote: bool = False) -> str:
    a, b = (f'"a/{old}"', f'"b/{new}"') if quote else (f"a/{old}", f"b/{new}")
    return f"--- {a}\n+++ {b}\n{hunk}"


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=T", "-c", "user.email=t@example.invalid", *args], cwd=cwd,
                   check=True, capture_output=True)


def git_tree(tmp: Path, commit: bool = True) -> Path:
    tree = mini(tmp, "repo")
    git(tree, "init", "-q", "-b", "main")
    if commit:
        git(tree, "add", "-A")
        git(tree, "commit", "-q", "-m", "base")
    return tree


def foreign_owned(tmp: Path) -> Path:
    """A repository git refuses as of "dubious ownership" (owned by another user)."""
    tree = git_tree(tmp)
    if os.geteuid() != 0:
        pytest.skip("needs root to give the repository to another user")
    for p in [tree, *tree.rglob("*")]:
        os.lchown(p, 65534, 65534)
    return tree


def deny_dir(monkeypatch, suffix: str) -> None:
    """The directory behaves as mode 000 would for a normal user (the suite may run as root)."""
    real = os.scandir

    def scandir(path="."):
        if str(path).rstrip("/").endswith(suffix):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def crash_in(monkeypatch, target: str, exc: BaseException) -> None:
    module, _, name = target.rpartition(".")
    mod = __import__(module, fromlist=[name])

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(mod, name, boom)


# (id, command builder (tmp, monkeypatch) -> argv, expected code, stderr pattern)
CASES = [
    # ---- scan
    ("scan-missing", lambda t, m: ["scan", str(t / "nope")], 2, r"not a directory"),
    ("scan-file", lambda t, m: ["scan", str(MINI / "Makefile")], 2, r"not a directory"),
    ("scan-not-kernel", lambda t, m: ["scan", str(t)], 2, r"no arch/x86/kvm"),
    ("scan-newline-in-name", lambda t, m: ["scan", str(t / "a\nb\x1b[31m")], 2, r"a\\x0ab\\x1b\[31m"),
    ("scan-unreadable-dir", lambda t, m: (deny_dir(m, "arch/x86/kvm/vmx"), ["scan", str(mini(t))])[1], 2,
     r"vmx: cannot read directory: Permission denied"),
    ("scan-huge-file", lambda t, m: (mini(t), os.truncate(write(t, "tree/arch/x86/kvm/big.c", b""), 50 << 20),
                                     ["scan", str(t / "tree")])[2], 2,
     r"big\.c: 52428800 bytes, larger than the 4 MiB limit"),
    ("scan-deep-parens", lambda t, m: ["scan", str(add_function(mini(t), "\treturn " + "(" * 1000 + "x"
                                                                + ")" * 1000 + ";\n"))], 2,
     r"x86\.c:\d+: nested 1001 levels deep .* limit of 200"),
    ("scan-deep-ternary", lambda t, m: ["scan", str(add_function(mini(t), "\treturn " + "x ? 1 : " * 3000
                                                                 + "0;\n"))], 2, r"limit of 200"),
    ("scan-deep-ifdef", lambda t, m: ["scan", str(add_function(mini(t), "#ifdef A\n" * 300 + "#endif\n" * 300))],
     2, r"limit of 200"),
    ("scan-symlink-out", lambda t, m: (os.symlink("/etc", mini(t) / "arch/x86/kvm/vmx2"),
                                       ["scan", str(t / "tree")])[1], 2, r"vmx2: symbolic link to /etc, outside"),
    ("scan-symlink-file-out", lambda t, m: (os.symlink("/etc/hostname", mini(t) / "arch/x86/kvm/h.c"),
                                            ["scan", str(t / "tree")])[1], 2, r"h\.c: symbolic link .* outside"),
    ("scan-fifo", lambda t, m: (os.mkfifo(mini(t) / "arch/x86/kvm/fifo.c"), ["scan", str(t / "tree")])[1], 2,
     r"fifo\.c: not a regular file"),
    ("scan-ok", lambda t, m: ["scan", str(MINI)], 0, None),
    # ---- rewrite
    ("rewrite-deep-parens", lambda t, m: ["rewrite", str(add_function(mini(t), "\treturn " + "(" * 1000
                                                                      + "vcpu->arch.walk_mmu != 0" + ")" * 1000
                                                                      + ";\n"))], 2, r"limit of 200"),
    ("rewrite-if-chain", lambda t, m: ["rewrite", str(add_function(mini(t), "\t" + "if (x) " * 3000
                                                                   + "return !!vcpu->arch.walk_mmu;\n"
                                                                   "\treturn 0;\n"))], 2,
     r"input nested too deeply to analyse"),
    ("rewrite-unary-chain", lambda t, m: ["rewrite", str(add_function(mini(t), "\treturn " + "!" * 3000
                                                                      + "vcpu->arch.walk_mmu;\n"))], 2,
     r"input nested too deeply to analyse"),
    ("rewrite-bad-names", lambda t, m: ["rewrite", str(MINI), "--names", "gva=1x,ngpa=y"], 2, r"not a C identifier"),
    ("rewrite-dubious-ownership", lambda t, m: ["rewrite", str(foreign_owned(t)), "--in-place"], 2,
     r"dubious ownership"),
    ("rewrite-nul-diff", lambda t, m: ["rewrite", str(add_function(mini(t), "\treturn !!vcpu->arch.walk_mmu;\n"
                                                                   "/* \0 */\n"))], 2,
     r"x86\.c:\d+: NUL byte"),
    ("rewrite-names-macro", lambda t, m: ["rewrite", str(add_define(mini(t), "KVM_MAX_VCPUS")), "--names",
                                          "gva=KVM_MAX_VCPUS,ngpa=tdp_walk"], 2,
     r"'KVM_MAX_VCPUS' is already a macro in the tree \(arch/x86/include/asm/kvm_host\.h:\d+\)"),
    ("rewrite-names-type", lambda t, m: ["rewrite", str(MINI), "--names", "gva=kvm_vcpu,ngpa=tdp_walk"], 2,
     r"'kvm_vcpu' is already a struct, union or enum in the tree"),
    ("rewrite-names-function", lambda t, m: ["rewrite", str(MINI), "--names", "gva=load_pdptrs,ngpa=tdp_walk"], 2,
     r"'load_pdptrs' is already"),
    ("rewrite-names-variable", lambda t, m: ["rewrite", str(MINI), "--names", "gva=vcpu,ngpa=tdp_walk"], 2,
     r"'vcpu' is already an identifier in the tree"),
    # ---- lint
    ("lint-quoted-bad-escape", lambda t, m: ["lint", str(write(t, "q.patch", patch_text("x\\x.c", quote=True)))],
     2, r"q\.patch:1: bad escape"),
    ("lint-non-ascii-name", lambda t, m: ["lint", str(write(t, "n.patch", patch_text("caf\u00e9.c", "caf\u00e9.c")))],
     0, None),
    ("lint-huge-hunk", lambda t, m: ["lint", str(write(t, "h.patch", patch_text("x.c", hunk="@@ -1 +4000000000 @@\n"
                                                                                 "-a\n+b\n")))], 2,
     r"h\.patch:3: hunk of x\.c claims 1 lines from line 4000000000"),
    ("lint-long-hunk", lambda t, m: ["lint", str(write(t, "l.patch", patch_text("x.c", hunk="@@ -1,900000000 "
                                                                                 "+1,900000000 @@\n a\n")))], 2,
     r"claims 900000000 lines"),
    ("lint-tree-dev-zero", lambda t, m: ["lint", "--tree", str(MINI),
                                         str(write(t, "z.patch", patch_text("/dev/zero")))], 2,
     r"'/dev/zero': not a path inside the tree"),
    ("lint-tree-dotdot", lambda t, m: ["lint", "--tree", str(MINI),
                                       str(write(t, "d.patch", patch_text("../../../etc/passwd")))], 2,
     r"not a path inside the tree"),
    ("lint-tree-fifo", lambda t, m: (os.mkfifo(mini(t) / "arch/x86/kvm/f.c"),
                                     ["lint", "--tree", str(t / "tree"),
                                      str(write(t, "f.patch", patch_text("arch/x86/kvm/f.c")))])[1], 2,
     r"f\.c: not a regular file"),
    ("lint-tree-symlink-out", lambda t, m: (os.symlink("/etc/passwd", mini(t) / "arch/x86/kvm/p.c"),
                                            ["lint", str(write(t, "p.patch", patch_text("arch/x86/kvm/p.c"))),
                                             "--tree", str(t / "tree")])[1], 2, r"outside the tree"),
    ("lint-deep-patch", lambda t, m: ["lint", str(write(t, "deep.patch", patch_text(
        "x.c", hunk="@@ -1 +1 @@\n-a\n+int f(void) { return " + "(" * 1000 + "1" + ")" * 1000 + "; }\n")))], 2,
     r"nested 1001 levels deep"),
    ("lint-baseline-nested", lambda t, m: ["lint", "--baseline", str(write(t, "b.json", "[" * 100000 + "]" * 100000)),
                                           str(MINI)], 2, r"JSON nested too deeply"),
    ("lint-baseline-foreign-tool", lambda t, m: ["lint", "--baseline", str(write(t, "b.json", json.dumps(
        {"tool": "other-linter", "version": 1, "tool_version": "9", "findings": []}))), str(MINI)], 2,
     r"baseline of 'other-linter'"),
    ("lint-baseline-other-version", lambda t, m: ["lint", "--baseline", str(write(t, "b.json", json.dumps(
        {"tool": "kvm-refactor lint", "version": 1, "tool_version": "0.0.1", "findings": []}))), str(MINI)], 2,
     r"written by kvm-refactor '0\.0\.1'"),
    ("lint-device", lambda t, m: ["lint", "/dev/zero"], 2, r"/dev/zero: not a regular file or a pipe"),
    ("lint-huge-patch", lambda t, m: (os.truncate(write(t, "huge.patch", b""), 33 << 20),
                                      ["lint", str(t / "huge.patch")])[1], 2, r"larger than the 32 MiB limit"),
    ("lint-baseline-device", lambda t, m: ["lint", "--baseline", "/dev/zero", str(MINI)], 2,
     r"/dev/zero: not a regular file"),
    ("lint-binary", lambda t, m: ["lint", str(write(t, "bin.patch", b"\0\1\2"))], 2, r"binary file, not a patch"),
    ("lint-missing", lambda t, m: ["lint", str(t / "none.patch")], 2, r"no such file"),
    # ---- port: a corrupt diff is bad input, never a patch that "ports" with nothing in it
    ("port-malformed-hunk-header", lambda t, m: ["port", str(write(t, "m.patch", patch_text(
        "arch/x86/kvm/x86.c", "arch/x86/kvm/x86.c", hunk="@@ -zz +1 @@\n a\n"))), "--onto", str(MINI)], 2,
     r"m\.patch:3: malformed hunk header '@@ -zz \+1 @@'"),
    ("port-device", lambda t, m: ["port", "/dev/zero", "--onto", str(MINI)], 2,
     r"/dev/zero: not a regular file or a pipe"),
    ("port-directory", lambda t, m: ["port", str(t), "--onto", str(MINI)], 2, r"a directory, not a patch"),
    ("port-binary", lambda t, m: ["port", str(write(t, "bin.patch", b"\0\1\2")), "--onto", str(MINI)], 2,
     r"binary file, not a patch"),
    ("port-header-without-hunk", lambda t, m: ["port", str(write(t, "h.patch", "--- a/arch/x86/kvm/x86.c\n"
                                                                 "+++ b/arch/x86/kvm/x86.c\n")),
                                               "--onto", str(MINI)], 2,
     r"h\.patch:1: arch/x86/kvm/x86\.c: a file header with no hunk"),
    # ---- emulate run
    ("emulate-not-utf8", lambda t, m: ["emulate", "run", str(write(t, "t.jsonl", b'{"ev":"reset"}\n\xff\xfe\n'))],
     2, r"t\.jsonl:2: not UTF-8"),
    ("emulate-nested-json", lambda t, m: ["emulate", "run", str(write(t, "n.jsonl", "[" * 100000 + "]" * 100000))],
     2, r"n\.jsonl:1: JSON nested too deeply"),
    ("emulate-missing", lambda t, m: ["emulate", "run", str(t / "none.jsonl")], 2, r"(cannot open|does not exist)"),
    ("emulate-device", lambda t, m: ["emulate", "run", "/dev/zero"], 2, r"/dev/zero: a device"),
    ("emulate-long-line", lambda t, m: ["emulate", "run", str(write(t, "l.jsonl", '{"ev":"reset"}\n'
                                                                    + "x" * (2 << 20)))], 2,
     r"l\.jsonl:2: line longer than 1048576 bytes"),
    ("emulate-empty", lambda t, m: ["emulate", "run", str(write(t, "e.jsonl", ""))], 2, r"empty trace"),
    # ---- series
    ("series-not-git", lambda t, m: ["series", str(mini(t)), "--branch", "x"], 2, r"."),
    ("series-no-commits", lambda t, m: ["series", str(git_tree(t, commit=False)), "--branch", "x"], 2, r"."),
    ("series-outdir-is-a-file", lambda t, m: ["series", str(git_tree(t)), "--branch", "x", "--outdir",
                                              str(write(t, "out", ""))], 2, r"out"),
    ("series-dubious-ownership", lambda t, m: ["series", str(foreign_owned(t)), "--branch", "x"], 2,
     r"dubious ownership|safe\.directory"),
    # ---- build-check
    ("build-check-missing", lambda t, m: ["build-check", str(t / "nope")], 2, r"not a full kernel tree"),
    ("build-check-mini", lambda t, m: ["build-check", str(MINI)], 2, r"not a full kernel tree"),
    # ---- fetch-tree (refused before any download)
    ("fetch-tree-traversal", lambda t, m: ["fetch-tree", "../../x"], 2, r"invalid kernel version"),
    ("fetch-tree-newline", lambda t, m: ["fetch-tree", "6.1\n7"], 2, r"invalid kernel version '6\.1\\n7'"),
    # ---- the guard itself: whatever escapes a command
    ("internal-error", lambda t, m: (crash_in(m, "refactor.index.indexer.build_index", RuntimeError("boom\nx")),
                                     ["scan", "--no-cache", str(MINI)])[1], 4,
     r"internal error: RuntimeError: boom\\x0ax \(traceback in (?P<tb>\S+)\)"),
    ("recursion-is-nesting", lambda t, m: (crash_in(m, "refactor.index.indexer.build_index", RecursionError("x")),
                                           ["scan", "--no-cache", str(MINI)])[1], 2,
     r"error: input nested too deeply .* \(traceback in (?P<tb>\S+)\)"),
    ("os-error-on-path", lambda t, m: (crash_in(m, "refactor.index.indexer.build_index",
                                                OSError(30, "Read-only file system", "/ro/x.c")),
                                       ["scan", "--no-cache", str(MINI)])[1], 2, r"/ro/x\.c: Read-only file system"),
    ("library-error-escapes", lambda t, m: (crash_in(m, "refactor.index.indexer.build_index",
                                                     __import__("refactor.errors").errors.SeriesError("x: bad")),
                                            ["scan", "--no-cache", str(MINI)])[1], 2, r"^kvm-refactor: error: x: bad$"),
    ("git-error-escapes", lambda t, m: (crash_in(m, "refactor.index.indexer.build_index",
                                                 __import__("git").GitCommandError(
                                                     ["git", "status"], 128, b"fatal: detected dubious ownership "
                                                     b"in repository at '/r'\nTo add an exception...")),
                                        ["scan", "--no-cache", str(MINI)])[1], 2,
     r"git status: fatal: detected dubious ownership in repository at '/r'$"),
    ("interrupted", lambda t, m: (crash_in(m, "refactor.index.indexer.build_index", KeyboardInterrupt()),
                                  ["scan", "--no-cache", str(MINI)])[1], 130, r"interrupted"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile(case, tmp_path, monkeypatch):
    name, build, code, pattern = case
    monkeypatch.setenv("KVM_REFACTOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KVM_REFACTOR_DEBUG", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    argv = build(work, monkeypatch)
    result = CliRunner().invoke(main, argv, catch_exceptions=False)
    err = result.stderr
    assert result.exit_code == code, (argv, result.stdout[-2000:], err)
    assert "Traceback" not in err and "Traceback" not in result.stdout
    if pattern is None:
        return
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    m = re.search(pattern, lines[0])
    assert m, (pattern, lines[0])
    if "tb" in (m.groupdict() or {}):
        assert "Traceback (most recent call last)" in Path(m.group("tb")).read_text()


def test_entry_point_never_shows_a_traceback(tmp_path):
    """The installed command, as a subprocess: a crash is one line and exit 4."""
    env = dict(os.environ, KVM_REFACTOR_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    code = ("import sys, refactor.index.indexer as i\n"
            "def boom(*a, **k): raise MemoryError('synthetic')\n"
            "i.build_index = boom\n"
            "from refactor.cli import main\n"
            "sys.argv = ['kvm-refactor', 'scan', '--no-cache', sys.argv[1]]\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code, str(MINI)], capture_output=True, text=True, env=env)
    assert proc.returncode == 4
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "internal error: MemoryError: synthetic" in proc.stderr


def odd_tree(tmp: Path) -> tuple[Path, str]:
    """The mini tree plus a copy of x86.c under a name with a newline, a quote, a space and non-ASCII."""
    tree = mini(tmp)
    name = 'arch/x86/kvm/we"ird\nna me\u00e9.c'
    (tree / name).write_bytes((tree / "arch/x86/kvm/x86.c").read_bytes())
    return tree, name


def test_odd_file_names_round_trip_through_the_diff(tmp_path):
    tree, name = odd_tree(tmp_path)
    res = CliRunner().invoke(main, ["rewrite", str(tree)])
    assert res.exit_code == 0, res.stderr
    assert '+++ "b/arch/x86/kvm/we\\"ird\\nna me' in res.stdout  # git's quoting
    assert all("\n" not in line for line in res.stderr.splitlines())  # notes escape the newline
    assert "we\"ird\\x0ana me" in res.stderr
    git(tree, "init", "-q")
    for tool in (["git", "apply", "--check", "-"], ["patch", "-p1", "--dry-run", "-s"]):
        proc = subprocess.run(tool, cwd=tree, input=res.stdout.encode(), capture_output=True)
        assert proc.returncode == 0, (tool, proc.stderr)
    subprocess.run(["git", "apply", "-"], cwd=tree, input=res.stdout.encode(), check=True)
    assert b"gva_walk" in (tree / name).read_bytes()


def test_lint_outputs_escape_and_encode_names(tmp_path):
    patch = write(tmp_path, "odd.patch", 'diff --git "a/x\\nq\\"\\303\\251 %.c" "b/x\\nq\\"\\303\\251 %.c"\n'
                  '--- "a/x\\nq\\"\\303\\251 %.c"\n+++ "b/x\\nq\\"\\303\\251 %.c"\n'
                  "@@ -1 +1 @@\n-a\n+\tvcpu->arch.walk_mmu = 0;\n")
    res = CliRunner().invoke(main, ["lint", str(patch)])
    assert res.exit_code == 1
    first = res.stdout.splitlines()[0]
    assert first.startswith('x\\x0aq"\u00e9 %.c:1:') and "[KVM" in first
    res = CliRunner().invoke(main, ["lint", "--format", "sarif", str(patch)])
    uris = [loc["physicalLocation"]["artifactLocation"]["uri"]
            for r in json.loads(res.stdout)["runs"][0]["results"] for loc in r["locations"]]
    assert uris and set(uris) == {"x%0Aq%22%C3%A9%20%25.c"}


def test_baseline_records_tool_and_version(tmp_path):
    from refactor import __version__

    base = tmp_path / "b.json"
    res = CliRunner().invoke(main, ["lint", "--write-baseline", str(base), str(MINI)])
    assert res.exit_code == 0
    doc = json.loads(base.read_text())
    assert doc["tool"] == "kvm-refactor lint" and doc["tool_version"] == __version__
    assert CliRunner().invoke(main, ["lint", "--baseline", str(base), str(MINI)]).exit_code == 0



def test_port_reads_a_patch_from_a_pipe(tmp_path):
    """`kvm-refactor port <(git format-patch --stdout -1) --onto TREE`: the patch arrives on a
    FIFO, which is not a regular file; it was refused as 'no such patch file'."""
    import threading

    from refactor.port.engine import read_inputs

    fifo = tmp_path / "p"
    os.mkfifo(fifo)
    text = patch_text("arch/x86/kvm/x86.c", "arch/x86/kvm/x86.c")
    writer = threading.Thread(target=lambda: fifo.write_text(text))
    writer.start()
    mails = read_inputs([str(fifo)])
    writer.join()
    assert [f.path for f in mails[0].patch.files] == ["arch/x86/kvm/x86.c"]
