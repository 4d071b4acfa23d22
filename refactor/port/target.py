"""What a port knows about its target tree: files, layout, walker names, definitions.

A target is a kernel tree directory (a git repository is read at its HEAD).
Only the files a port needs are read, once; the identifier set and the
function definitions are built lazily, for the prerequisite and relocation
checks.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from refactor.frontend.source import TreeError, kernel_version
from refactor.port.calls import argument_spans
from refactor.rules import Rules, RulesError, WalkerNames

# Where KVM x86 code and the headers a fix may need live.
_SCOPE = ("arch/x86/kvm", "arch/x86/include/asm", "include/linux", "virt/kvm", "include/uapi/linux",
          "arch/x86/include/uapi/asm")
_SUFFIXES = (".c", ".h")
_IDENT = re.compile(r"[A-Za-z_]\w*")
# A function definition or prototype starting a line: `static int foo(` / `int foo(`.
_DEF = re.compile(r"^(?:[A-Za-z_][\w\s\*]*?[\s\*])?([A-Za-z_]\w*)\s*\(", re.M)
_MACRO = re.compile(r"^\s*#\s*define\s+([A-Za-z_]\w*)(\()?", re.M)


def _git_head_files(root: Path) -> dict[str, bytes] | None:
    """HEAD's files in scope, for a git repository (never the working tree)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-tree", "-r", "-z", "--name-only", "HEAD", "--",
                              *_SCOPE], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    names = [n for n in out.decode("utf-8", "replace").split("\0") if n.endswith(_SUFFIXES)]
    if not names:
        return {}
    # One cat-file process for all blobs.
    spec = "".join(f"HEAD:{n}\n" for n in names).encode()
    proc = subprocess.run(["git", "-C", str(root), "cat-file", "--batch"], input=spec,
                          capture_output=True, check=True)
    data, files, pos = proc.stdout, {}, 0
    for name in names:
        nl = data.index(b"\n", pos)
        header = data[pos:nl].split()
        if len(header) < 3 or header[1] != b"blob":
            pos = nl + 1
            continue
        size = int(header[2])
        files[name] = data[nl + 1:nl + 1 + size]
        pos = nl + 1 + size + 1
    return files


@dataclass
class Target:
    root: Path
    version: str
    layout: str                    # "old", "new" or "unknown"
    names: WalkerNames | None      # walker names of a new-layout tree
    files: dict[str, bytes] = field(repr=False, default_factory=dict)
    _idents: set[str] | None = field(default=None, repr=False)
    # Definitions per file (name -> [(offset, has parameters)]), read on first use.
    _defs: dict[str, dict[str, list[tuple[int, bool]]]] = field(default_factory=dict, repr=False)
    _lines: dict = field(default_factory=dict, repr=False)
    # definitions() per name: what is known, and the files (changed since) still to read.
    _by_name: dict[str, tuple[list, frozenset]] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return f"{self.version} ({self.root})"

    def text(self, rel: str) -> str | None:
        data = self.files.get(rel)
        return None if data is None else data.decode("utf-8", "replace")

    def lines(self, rel: str) -> list[str]:
        if rel not in self._lines:
            self._lines[rel] = self.text(rel).split("\n")
        return self._lines[rel]

    def norm_lines(self, rel: str) -> list[str]:
        key = ("norm", rel)
        if key not in self._lines:
            self._lines[key] = [" ".join(x.split()) for x in self.lines(rel)]
        return self._lines[key]

    def positions(self, rel: str, exact: bool) -> dict[str, list[int]]:
        """Line text -> where it stands in the file (exact, or whitespace-normalised)."""
        key = ("pos", exact, rel)
        if key not in self._lines:
            index: dict[str, list[int]] = {}
            for i, x in enumerate(self.lines(rel) if exact else self.norm_lines(rel)):
                index.setdefault(x, []).append(i)
            self._lines[key] = index
        return self._lines[key]

    def patched(self, changes: dict[str, str]) -> "Target":
        """This target with some files replaced (the patches of a series ported so far)."""
        files = dict(self.files)
        files.update({rel: text.encode() for rel, text in changes.items()})
        new = Target(root=self.root, version=self.version, layout=self.layout, names=self.names,
                     files=files)
        # What was read of the other files still holds.
        new._lines = {k: v for k, v in self._lines.items()
                      if (k if isinstance(k, str) else k[-1]) not in changes}
        if self._idents is not None:
            new._idents = self._idents | {i for t in changes.values() for i in _IDENT.findall(t)}
        new._defs = {rel: d for rel, d in self._defs.items() if rel not in changes}
        new._by_name = {n: ([d for d in known if d[0] not in changes], todo | set(changes))
                        for n, (known, todo) in self._by_name.items()}
        return new

    def file_identifiers(self, rel: str) -> set[str]:
        key = ("idents", rel)
        if key not in self._lines:
            self._lines[key] = set(_IDENT.findall(self.text(rel) or ""))
        return self._lines[key]

    def identifiers(self) -> set[str]:
        if self._idents is None:
            idents: set[str] = set()
            for data in self.files.values():
                idents.update(_IDENT.findall(data.decode("utf-8", "replace")))
            self._idents = idents
        return self._idents

    def definitions(self, name: str) -> list[tuple[str, int, int | None]]:
        """(file, line, arity or None) of each definition or prototype of `name` (a function, or a
        macro: None for one without parameters or a variadic one)."""
        if name in self._by_name:       # known: read only the files a series changed since
            known, todo = self._by_name[name]
            out = known + self._scan(name, [r for r in todo if r in self.files])
            order = {r: i for i, r in enumerate(self.files)}
            out.sort(key=lambda d: order[d[0]])          # in file order, as a full scan gives
        else:
            out = self._scan(name, list(self.files))
        self._by_name[name] = (out, frozenset())
        return list(out)

    def _scan(self, name: str, rels: list[str]) -> list[tuple[str, int, int | None]]:
        out = []
        key = name.encode()
        for rel in rels:
            data = self.files[rel]
            if key not in data:        # most files never mention it: no need to read them
                continue
            if rel not in self._defs:
                self._defs[rel] = _definitions(self.text(rel))
            for offset, params in self._defs[rel].get(name, ()):
                text = self.text(rel)
                out.append((rel, text.count("\n", 0, offset) + 1, arity(text, offset) if params else None))
        return out

    def hooks(self, struct: str) -> dict[str, tuple[str, int, list[str]]]:
        """Function-pointer members of `struct` as the target declares them: name -> (file,
        line, parameter declarations).  Looked for in arch/x86/include/asm/kvm_host.h."""
        key = ("hooks", struct, _HOST_H)      # the file last: patched() drops what a patch changes
        if key not in self._lines:
            self._lines[key] = _hooks(self.text(_HOST_H) or "", struct)
        return self._lines[key]

    def territories(self, rel: str, name: str) -> list[tuple[int, int]]:
        """0-based (first, last) lines that git would head with each definition of function
        `name` (`FNAME(x)` for paging_tmpl.h's) in `rel`: from its first line to the line before
        the next top-level line after its body.  Prototypes and macros have none."""
        key = ("territories", name, rel)
        if key not in self._lines:
            self._lines[key] = _territories(self.text(rel) or "", name)
        return self._lines[key]


_HOST_H = "arch/x86/include/asm/kvm_host.h"
_HOOK = re.compile(r"\(\s*\*\s*(\w+)\s*\)\s*\(([^;{}]*)\)\s*;")


def split_args(inner: str) -> list[str]:
    """The comma-separated parts of an argument or parameter list, at its top level."""
    text = f"({inner})"
    got = argument_spans(text, 0)
    return [text[a:b].strip() for a, b in got[0]] if got else [inner.strip()]


def _hooks(text: str, struct: str) -> dict[str, tuple[str, int, list[str]]]:
    m = re.search(rf"^struct\s+{re.escape(struct)}\s*{{", text, re.M)
    if not m:
        return {}
    end = text.find("\n};", m.end())
    out = {}
    for h in _HOOK.finditer(text, m.end(), end if end > 0 else len(text)):
        params = split_args(" ".join(h.group(2).split()))
        out[h.group(1)] = (_HOST_H, text.count("\n", 0, h.start()) + 1,
                           [] if params == ["void"] else params)
    return out


def _close(text: str, open_at: int) -> int | None:
    """Offset of the parenthesis closing the one at `open_at`."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return None


# After a definition's parameter list: attributes (`__releases(x)`) before its body.
_ATTRIBUTE = re.compile(r"\s*[A-Za-z_]\w*\s*(?=\()")
_TOP_LEVEL = re.compile(r"^[A-Za-z_](?![A-Za-z_0-9]*:\s*(?:$|/[/*]))")   # a label is not a heading


def _territories(text: str, name: str) -> list[tuple[int, int]]:
    inner = re.fullmatch(r"FNAME\((\w+)\)", name)
    spelled = rf"FNAME\(\s*{inner.group(1)}\s*\)" if inner else re.escape(name)
    out = []
    lines = text.split("\n")
    for m in re.finditer(rf"^(?:[A-Za-z_][\w \t\*]*?[\s\*])?{spelled}\s*\(", text, re.M):
        pos = _close(text, m.end() - 1)
        while pos is not None:
            rest = text[pos + 1:]
            body = len(rest) - len(rest.lstrip())
            if rest[body:body + 1] == "{":
                break
            attr = _ATTRIBUTE.match(rest)
            pos = _close(text, pos + 1 + attr.end()) if attr else None
        if pos is None:
            continue        # a prototype, a call at top level (a macro use), a declaration
        first = text.count("\n", 0, m.start())
        last = first
        while last < len(lines) and lines[last] != "}":
            last += 1
        last += 1
        while last < len(lines) and not _TOP_LEVEL.match(lines[last]):
            last += 1
        out.append((first, last - 1))
    return out


def arity(text: str, open_at: int) -> int | None:
    depth, commas, i, empty = 0, 0, open_at, True
    while i < len(text):
        c = text[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                break
        elif c == "," and depth == 1:
            commas += 1
        elif depth >= 1 and not c.isspace():
            empty = False
        i += 1
    else:
        return None
    inner = text[open_at + 1:i].strip()
    if empty or inner == "void":
        return 0
    if "..." in inner:
        return None  # variadic: any count
    return commas + 1


def _definitions(text: str) -> dict[str, list[tuple[int, bool]]]:
    """Name -> (offset of its opening parenthesis or name end, has parameters) per definition."""
    out: dict[str, list[tuple[int, bool]]] = {}
    for m in _DEF.finditer(text):
        if m.group(1) not in ("if", "for", "while", "switch", "return", "sizeof"):
            out.setdefault(m.group(1), []).append((m.end() - 1, True))
    for m in _MACRO.finditer(text):
        out.setdefault(m.group(1), []).append((m.end() - 1, bool(m.group(2))))
    return out


def _walker_members(host_h: str, rules: Rules) -> list[str]:
    """Names of the struct kvm_pagewalk objects in struct kvm_vcpu_arch, in order."""
    start = host_h.find(f"struct {rules.types['vcpu_arch']} {{")
    if start < 0:
        return []
    end = host_h.find("\n};", start)
    body = host_h[start:end if end > 0 else None]
    return re.findall(rf"^\s*struct\s+{rules.types['walker']}\s+(\w+)\s*;", body, re.M)


def load_target(path: str | Path, rules: Rules, names_spec: str | None = None) -> Target:
    """Read a target tree.  Raises TreeError (one line) when it is not a kernel tree."""
    root = Path(path)
    if not root.is_dir():
        raise TreeError(f"{root}: not a directory")
    files = _git_head_files(root) if (root / ".git").exists() else None
    if files is None:
        files = {}
        for sub in _SCOPE:
            base = root / sub
            if not base.is_dir():
                continue
            for p in base.rglob("*"):
                if p.suffix in _SUFFIXES and p.is_file() and not p.is_symlink():
                    try:
                        files[str(p.relative_to(root))] = p.read_bytes()
                    except OSError as exc:
                        raise TreeError(f"{p}: cannot read: {exc.strerror}") from None
    if not any(r.startswith("arch/x86/kvm/") for r in files):
        raise TreeError(f"{root}: not a kernel tree (no arch/x86/kvm/)")
    version = kernel_version(root) or "unknown"
    host = (files.get("arch/x86/include/asm/kvm_host.h") or b"").decode("utf-8", "replace")
    members = _walker_members(host, rules)
    removed = [n for n, m in rules.vcpu_old.items() if m.removed]
    if members:
        layout = "new"
    elif any(re.search(rf"\b{n}\s*;", host) for n in removed):
        layout = "old"
    else:
        layout = "unknown"
    names = None
    if layout == "new":
        names = _target_names(members, rules, names_spec)
    return Target(root=root, version=version, layout=layout, names=names, files=files)


def _target_names(members: list[str], rules: Rules, spec: str | None) -> WalkerNames:
    if spec:
        names = rules.names(spec)
        if {names.gva, names.ngpa} <= set(members):
            return names
    for preset in rules.presets.values():
        if {preset.gva, preset.ngpa} <= set(members):
            return preset
    raise RulesError(f"the target's walkers ({', '.join(members)}) match no names preset: "
                     "say which is which with --target-names gva=X,ngpa=Y")
