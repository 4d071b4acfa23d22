"""Known kernel macros, neutralised before parsing with byte offsets kept.

tree-sitter-c knows C, not the kernel's macro dialect.  Each entry below is
rewritten to plain C of exactly the same length (newlines kept), so every
node of the parse still points at the right bytes of the real file.  Spans
that were changed are returned too: the index reads them again with the
lexer, so a name hidden inside a masked macro is never lost.
"""
from __future__ import annotations

import re

# Attributes and annotations that only decorate a declaration: blanked.
ATTRIBUTES = (
    "__always_inline __inline __init __exit __initdata __initconst __read_mostly "
    "__ro_after_init __maybe_unused __always_unused __must_check __user __iomem __percpu "
    "__rcu __force __bitwise __packed __visible __cold __weak __noreturn __pure __used "
    "__flatten __cacheline_aligned __cacheline_aligned_in_smp __ref __refdata __noclone "
    "__nocfi __no_kcsan __no_sanitize_address __sched __latent_entropy __randomize_layout "
    "asmlinkage noinline noinstr notrace __noinstr __kprobes __init_or_module __meminit "
    "__free_ __private __safe_for_unaligned __nostackprotector __context_analysis"
).split()

# Attribute macros that take an argument list: blanked with their arguments.
ATTRIBUTES_WITH_ARGS = (
    "__aligned __section __printf __scanf __counted_by __acquires __releases __must_hold "
    "__cond_acquires __guarded_by __attribute__ __alloc_size __assume_aligned __free __cleanup "
    "__diagnose_as __nonstring __noinstr_section"
).split()

# Declarations written as a macro call: (macro, index of the argument that is the name).
DECLARATORS = {
    "DECLARE_BITMAP": 0,
    "DECLARE_KFIFO": 0,
    "DECLARE_PER_CPU": 1,
    "DEFINE_PER_CPU": 1,
    "DEFINE_PER_CPU_ALIGNED": 1,
    "DEFINE_PER_CPU_READ_MOSTLY": 1,
    "DECLARE_PER_CPU_READ_MOSTLY": 1,
    "DEFINE_STATIC_KEY_FALSE": 0,
    "DEFINE_STATIC_KEY_TRUE": 0,
    "DECLARE_STATIC_KEY_FALSE": 0,
    "DECLARE_STATIC_KEY_TRUE": 0,
    "DEFINE_MUTEX": 0,
    "DEFINE_SPINLOCK": 0,
    "DEFINE_RAW_SPINLOCK": 0,
    "LIST_HEAD": 0,
}

# Macros whose arguments include a type name (`struct foo`): the keyword is
# blanked so the argument parses as an expression; the masked span is re-read.
TYPE_ARGUMENT_MACROS = (
    "container_of container_of_const offsetof sizeof_field offsetofend kzalloc_obj "
    "kzalloc_objs kmalloc_obj kmalloc_objs kvzalloc_obj kvzalloc_objs kvmalloc_objs "
    "kcalloc_objs typeof_member KVM_GENERATE_TRACE_ALL_ZERO BUILD_BUG_ON va_arg __typeof__ typeof "
    "DEFINE_GUARD DEFINE_CLASS list_first_entry list_first_entry_or_null list_entry "
    "list_last_entry hlist_entry hlist_entry_safe rb_entry"
).split()

_LOOP = re.compile(rb"\b([A-Za-z0-9_]*for_each[A-Za-z0-9_]*)(\s*\()")
_ATTR = re.compile(rb"\b(?:" + b"|".join(a.encode() for a in ATTRIBUTES) + rb")\b")
_ATTR_ARGS = re.compile(
    rb"\b(?:" + b"|".join(a.encode() for a in ATTRIBUTES_WITH_ARGS) + rb")\s*\("
)
_DECL = re.compile(rb"\b(" + b"|".join(d.encode() for d in DECLARATORS) + rb")\s*\(")
_TYPE_ARG = re.compile(
    rb"\b(?:" + b"|".join(t.encode() for t in TYPE_ARGUMENT_MACROS) + rb")\s*\("
)
_STRUCT_KW = re.compile(rb"\b(?:struct|union|enum)\b")
_CASE_RANGE = re.compile(rb"\bcase\b[^:;\n]*?(\.\.\.)")
_ANON_BITFIELD = re.compile(rb"\bunsigned(?=\s*:\s*[0-9])")
# Tracepoint definitions: their arguments are a DSL, not C.
_TRACE_DSL = re.compile(
    rb"^(?:TRACE_EVENT|TRACE_EVENT_CONDITION|DEFINE_EVENT|DEFINE_EVENT_PRINT|DECLARE_EVENT_CLASS"
    rb"|TRACE_DEFINE_ENUM)\s*\(", re.M)
# A macro invoked at file scope to define things, with no `;` after it.
_TOPLEVEL_CALL = re.compile(rb"^[A-Za-z_][A-Za-z0-9_]*[ \t]*\(", re.M)


def _blank(buf: bytearray, start: int, end: int) -> None:
    for i in range(start, end):
        if buf[i] not in (0x0A, 0x0D):
            buf[i] = 0x20


def _close_paren(src: bytes, open_at: int) -> int:
    """Index just past the parenthesis matching src[open_at] == '('."""
    depth = 0
    i = open_at
    n = len(src)
    while i < n:
        c = src[i]
        if c == 0x28:
            depth += 1
        elif c == 0x29:
            depth -= 1
            if depth == 0:
                return i + 1
        elif c in (0x22, 0x27):  # skip string and char literals
            q = c
            i += 1
            while i < n and src[i] != q:
                i += 2 if src[i] == 0x5C else 1
        i += 1
    return n


def _split_args(src: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """Top-level comma-separated argument spans of src[start:end]."""
    spans, depth, begin = [], 0, start
    for i in range(start, end):
        c = src[i]
        if c in b"([{":
            depth += 1
        elif c in b")]}":
            depth -= 1
        elif c == 0x2C and depth == 0:
            spans.append((begin, i))
            begin = i + 1
    spans.append((begin, end))
    return spans


def mask(src: bytes) -> tuple[bytes, list[tuple[int, int]]]:
    """Return (same-length parsable text, spans that were changed)."""
    buf = bytearray(src)
    spans: list[tuple[int, int]] = []

    for m in _ATTR.finditer(src):
        _blank(buf, m.start(), m.end())
    for m in _ATTR_ARGS.finditer(src):
        end = _close_paren(src, m.end() - 1)
        _blank(buf, m.start(), end)
        spans.append((m.start(), end))
    for m in _LOOP.finditer(src):
        # `list_for_each_entry(pos, head, member) {` -> `while (pos, head, member) {`
        name_start, name_end = m.span(1)
        buf[name_start:name_start + 5] = b"while"
        _blank(buf, name_start + 5, name_end)
    for m in _DECL.finditer(src):
        end = _close_paren(src, m.end() - 1)
        args = _split_args(src, m.end(), end - 1)
        which = DECLARATORS[m.group(1).decode()]
        if which >= len(args):
            continue
        name_start, name_end = args[which]
        # `DECLARE_BITMAP(x, 256)` -> `long           x      `
        _blank(buf, m.start(), end)
        buf[m.start():m.start() + 4] = b"long"
        buf[name_start:name_end] = src[name_start:name_end]
        spans.append((m.start(), end))
    for m in _TYPE_ARG.finditer(src):
        end = _close_paren(src, m.end() - 1)
        changed = False
        for k in _STRUCT_KW.finditer(src, m.end(), end):
            _blank(buf, k.start(), k.end())
            changed = True
        if changed:
            spans.append((m.start(), end))
    for m in _CASE_RANGE.finditer(src):
        # GNU case range `case 1 ... 3:` -> `case 1 |   3:`
        s = m.start(1)
        buf[s:s + 3] = b"|  "
    for m in _ANON_BITFIELD.finditer(src):
        # `unsigned:3;` (anonymous padding) -> `int _pad:3;`
        buf[m.start():m.end()] = b"int _pad"
    for m in _TRACE_DSL.finditer(src):
        end = _close_paren(src, m.end() - 1)
        _blank(buf, m.end(), end - 1)
        spans.append((m.end(), end - 1))
    for m in _TOPLEVEL_CALL.finditer(src):
        end = _close_paren(src, m.end() - 1)
        rest = re.match(rb"[ \t]*(?://[^\n]*)?\n\s*(.)", src[end:end + 400])
        if rest is None or rest.group(1) in (b"{", b";", b",", b")"):
            continue
        if src[end:src.find(b"\n", end)].strip():
            continue  # something follows on the line: a declaration or definition
        _blank(buf, m.start(), end)
        spans.append((m.start(), end))
    return bytes(buf), spans


def join_continuations(text: bytes) -> bytes:
    """Macro body with line-continuation backslashes blanked (same length)."""
    return re.sub(rb"\\(?=\r?\n)", b" ", text)
