"""What the tree declares, as preprocessor macros the harness glue can `#if` on.

The glue (harness/glue_*.c) is compiled after the tree's own preprocessed unit, where
the tree's macros are gone and C cannot ask whether a struct has a member or how many
parameters a function takes.  So the tree's headers are read here, before the build,
and layout.h gets the answers:

- `H_HAS_<struct>__<member>`: for each struct of STRUCTS, every member it declares
  (`H_HAS_kvm_x86_ops__tlb_flush_gva`, `H_HAS_kvm_mmu__root_role`);
- `H_NARGS_<function>`: the parameter count of each function of FUNCTIONS, from its
  declaration or definition in the tree (`H_NARGS_load_pdptrs 3`);
- `H_DEFINED_<function>`: the tree defines it (a body, not only a prototype).

Nothing here knows a kernel version: a stable branch, a distribution kernel or a fork is
described by what its own files say.  The glue picks, for instance,
`.tlb_flush_gva = ...` or `.flush_tlb_gva = ...` by the member the tree's
`struct kvm_x86_ops` has.
"""
from __future__ import annotations

import re
from pathlib import Path

# (file, struct) whose members the glue may depend on.  A struct found in none of its
# files gets no macros: the glue's #if then takes its fallback (or fails to compile
# with its own file:line, as before).
STRUCTS = (("arch/x86/include/asm/kvm_host.h", "kvm_x86_ops"),
           ("arch/x86/include/asm/kvm_host.h", "kvm_x86_init_ops"),
           ("arch/x86/include/asm/kvm_host.h", "kvm_mmu"),
           ("arch/x86/include/asm/kvm_host.h", "kvm_vcpu_arch"),
           ("arch/x86/kvm/svm/svm.h", "vcpu_svm"),
           ("arch/x86/kvm/svm/svm.h", "svm_nested_state"),
           ("arch/x86/kvm/vmx/vmx.h", "nested_vmx"),
           ("arch/x86/kvm/vmx/vmx.h", "vcpu_vmx"))
# Functions whose signature or presence the glue adapts to, and the files that may
# declare or define them (first declaration found wins; a definition anywhere counts).
FUNCTIONS = ("load_pdptrs", "kvm_init_mmu", "kvm_configure_mmu", "kvm_ops_update",
             "kvm_set_cpuid", "kvm_vcpu_ioctl_set_cpuid2", "kvm_translate_gpa",
             "kvm_mmu_invlpg")
FILES = ("arch/x86/include/asm/kvm_host.h", "arch/x86/kvm/mmu.h", "arch/x86/kvm/x86.h",
         "arch/x86/kvm/cpuid.h", "arch/x86/kvm/kvm_cache_regs.h", "arch/x86/kvm/x86.c",
         "arch/x86/kvm/cpuid.c", "arch/x86/kvm/regs.c", "arch/x86/kvm/mmu/mmu.c")

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_ATTR = re.compile(r"__attribute__\s*\(\(.*?\)\)|\b__aligned\s*\([^)]*\)|\b__packed\b")


def _read(tree: Path, rel: str) -> str:
    try:
        return (tree / rel).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _strip(text: str) -> str:
    """Comments and preprocessor lines out (both branches of an #if are kept: a member
    under a config option the engine's configuration lacks is still a member to the
    parser, which matches what the glue may name only under the same option)."""
    text = _COMMENT.sub(" ", text)
    text = re.sub(r"\\\n", " ", text)
    return re.sub(r"^[ \t]*#[^\n]*", "", text, flags=re.M)


def struct_body(text: str, name: str) -> str | None:
    """The text between the braces of `struct NAME {` at the start of a line."""
    m = re.search(rf"^struct\s+{name}\s*\{{", text, re.M)
    if not m:
        return None
    depth, i = 1, m.end()
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[m.end():i - 1]


def struct_members(body: str) -> set[str]:
    """Member names a struct body declares, those of nested anonymous structs and unions
    included (C reaches them directly)."""
    out: set[str] = set()
    for stmt in _ATTR.sub(" ", _strip(body)).split(";"):
        stmt = re.split(r"[{}]", stmt)[-1].strip()
        if not stmt:
            continue
        fp = re.search(r"\(\s*\*\s*(\w+)\s*\)\s*\(", stmt)
        if fp:
            out.add(fp.group(1))
            continue
        for decl in _top_level_split(stmt):
            m = re.search(r"(\w+)\s*(?:\[[^\]]*\]\s*)*(?::\s*\w+\s*)?$", decl.strip())
            if m and not decl.strip().endswith(")"):
                out.add(m.group(1))
    return out


def _top_level_split(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _signature(text: str, name: str) -> tuple[str, bool] | None:
    """(parameter list, is a definition) of NAME's first declaration or definition: a
    line that starts at column 0 with its return type (kernel style), not a call."""
    pat = re.compile(rf"^(?!return\b)(?:\w+[ \t\n*]+)+?\**{name}\s*\(([^;{{}}]*?)\)\s*([;{{])",
                     re.M)
    first = None
    for m in pat.finditer(text):
        if first is None:
            first = (m.group(1), m.group(2) == "{")
        if m.group(2) == "{":
            return m.group(1), True
    return first


def param_count(params: str) -> int:
    params = " ".join(params.split())
    if params in ("", "void"):
        return 0
    return len(_top_level_split(params))


def tree_features(tree: Path) -> dict[str, int]:
    """{macro: value} for the tree (module docstring)."""
    out: dict[str, int] = {}
    texts: dict[str, str] = {}

    def text_of(rel: str) -> str:
        if rel not in texts:
            texts[rel] = _strip(_read(tree, rel))
        return texts[rel]

    for rel, struct in STRUCTS:
        body = struct_body(text_of(rel), struct)
        for member in sorted(struct_members(body)) if body is not None else ():
            out[f"H_HAS_{struct}__{member}"] = 1
    for func in FUNCTIONS:
        nargs, defined = None, False
        for rel in FILES:
            sig = _signature(text_of(rel), func)
            if sig is None:
                continue
            if nargs is None:
                nargs = param_count(sig[0])
            defined = defined or sig[1]
        if nargs is not None:
            out[f"H_NARGS_{func}"] = nargs
        if defined:
            out[f"H_DEFINED_{func}"] = 1
    return out


def feature_lines(tree: Path) -> list[str]:
    return [f"#define {k} {v}" for k, v in sorted(tree_features(tree).items())]
