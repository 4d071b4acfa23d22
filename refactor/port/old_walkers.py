"""The old layout's counterparts of the new layout's walker locals, for a backport.

On the old layout an MMU is its own walker: a new-layout local that only names a walker or
a page format (`struct kvm_pagewalk *w = mmu->w;`, `struct kvm_page_format *fmt = &w->fmt;`)
has no old counterpart but what it was set to, and a walker local the new layout declares
beside an MMU (`gva_walk` beside init_kvm_tdp_mmu()'s `context`) is that MMU there.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from refactor.frontend.patch import Hunk
from refactor.port.headings import function_of
from refactor.port.lexicon import Vocabulary, declared_types

HOISTED = re.compile(r"^\s*struct\s+(\w+)\s*\*\s*(\w+)\s*=\s*(.+?);\s*$")
_HEADER_PARAM = re.compile(r"\bstruct\s+\w+\s*\*\s*(\w+)\s*[,)]")


def hoisted(line: str, vocab: Vocabulary) -> tuple[str, str] | None:
    """(variable, initialiser) of a local that only names a walker or a page format:
    `struct kvm_page_format *fmt = &w->fmt;`, `struct kvm_pagewalk *w = mmu->w;`."""
    m = HOISTED.match(line)
    if m and m.group(1) in (vocab.rules.types["walker"], vocab.rules.types["format"]):
        return m.group(2), m.group(3).strip()
    return None


def inline(line: str, var: str, init: str) -> str:
    """`line` with the local `var` replaced by what it was initialised to."""
    if init.startswith("&"):
        deref = init[1:] + "."          # &w->fmt: fmt->x is w->fmt.x
    else:
        deref = init + "->"             # mmu->w: w->x is mmu->w->x
    line = re.sub(rf"(?<![\w>.]){re.escape(var)}\s*->", lambda _m: deref, line)
    return re.sub(rf"(?<![\w>.]){re.escape(var)}(?!\w)", lambda _m: init, line)


def own_walker(mine: list[str], ptypes: dict[str, str], ttypes: dict[str, str], hunk_lines: list[str]) -> str | None:
    """The old layout's counterpart of a walker local the new layout declares outside the hunk
    (`gva_walk` beside init_kvm_tdp_mmu()'s `context`): where the target function has one
    layout-typed variable, an MMU, that MMU is the walker.  `mine`: the hunk's layout-typed
    variables the target function lacks."""
    pointers = [v for v, k in ttypes.items() if k in ("walker", "mmu")]
    if len(mine) != 1 or ptypes.get(mine[0]) != "walker" or len(pointers) != 1 \
            or ptypes.get(pointers[0], "mmu") != "mmu":
        return None
    declares = re.compile(rf"\bstruct\s+\w+\s*\*\s*{re.escape(mine[0])}\b")
    if any(declares.search(t) for t in hunk_lines):
        return None
    return pointers[0]


def inline_removed_locals(lines: list[tuple[str, str, int]], vocab: Vocabulary) -> list[tuple[str, str, int]]:
    """A backported hunk that removes a local only naming a walker or a page format, where the
    patch's function no longer declares that name as a local (it became a parameter, or is not
    used any more: `struct kvm_pagewalk *w = mmu->w;` gone, the parameter `mmu` retyped to `w`):
    on the old layout the function never had the local, so its pre-image is written through
    what the local was set to, and the declaration (with the removed blank line after it) is
    not looked for.  Only in that function: up to its closing brace."""
    out = list(lines)
    drop: set[int] = set()
    for i, (tag, text, _n) in enumerate(lines):
        h = hoisted(text, vocab) if tag == "-" else None
        if h is None:
            continue
        var, init = h
        # Not a declaration the patch replaces by another local (`w = walk_mmu->w` by `gva_walk =
        # &vcpu->arch.gva_walk`): that one pairs with the target's local.
        lo = hi = i
        while lo > 0 and lines[lo - 1][0] in "-+":
            lo -= 1
        while hi + 1 < len(lines) and lines[hi + 1][0] in "-+":
            hi += 1
        if any(g == "+" and hoisted(t, vocab) for g, t, _ in lines[lo:hi + 1]):
            continue
        end = next((k for k in range(i + 1, len(lines)) if lines[k][1].startswith("}")), len(lines))
        begin = next((k + 1 for k in range(i - 1, -1, -1) if lines[k][1].startswith("}")), 0)
        word = re.compile(rf"(?<![\w>.]){re.escape(var)}(?!\w)")
        post = [t for g, t, _ in lines[begin:end] if g != "-"]
        # The post-image declares the name again as a local (the patch changes what it holds),
        # or uses it without declaring it as a parameter of the function: not this case.
        if any(HOISTED.match(t) and HOISTED.match(t).group(2) == var for t in post) or any(
                re.match(rf"\s*(?:const\s+)?(?:struct\s+)?\w+\s*\*?\s*{re.escape(var)}\s*[=;]", t) for t in post):
            continue
        brace = next((k for k in range(begin, i) if lines[k][1].startswith("{")), None)
        header = " ".join(t for g, t, _ in lines[begin:brace or begin] if g != "-")
        body = [t for g, t, _ in lines[(brace or begin) + 1:end] if g != "-"]
        if any(word.search(t) for t in body) and var not in _HEADER_PARAM.findall(header):
            continue
        drop.add(i)
        if i + 1 < len(lines) and lines[i + 1][0] == "-" and not lines[i + 1][1].strip():
            drop.add(i + 1)
        for k in range(i + 1, end):
            g, t, n = out[k]
            if g != "+" and k not in drop:
                out[k] = (g, inline(t, var, init), n)
    return [x for k, x in enumerate(out) if k not in drop]


@dataclass
class OwnMmuHunk(Hunk):
    """A hunk whose walker locals are written as the target function's own MMU local, for
    pairing; `as_written`: its lines as the patch has them (same indices), for the inverses
    that replay the refactor's change on the patch's own text."""
    as_written: list = field(default_factory=list)


_DEFINES = re.compile(r"^(?!(?:if|for|while|switch|return|else)\b)[A-Za-z_][\w\s\*]*?\b(\w+)\s*\(")


def own_mmu_hunk(hunk: Hunk, target, vocab: Vocabulary) -> OwnMmuHunk | None:
    """The hunk with, in each function it spans, a walker local it declares for the {gva}
    walker (`struct kvm_pagewalk *gva_walk = &vcpu->arch.gva_walk;`) written as the one
    layout-typed local the target's function has, where that local is an MMU whose walker the
    old layout makes {gva} (layout.toml: root_mmu, nested_mmu, walk_mmu: init_kvm_softmmu()'s
    `context`, init_kvm_nested_mmu()'s `g_context`): on the old layout that MMU is the walker
    the function initialises.  Only in the initialisers restructure.toml [[walker_init]]
    names (`from`, `merge`, `then_mmu`): the dispatcher calls them only where their MMU is
    the one walked (elsewhere root_mmu is not the {gva} walker under nesting).  None where
    no function of the hunk is so."""
    rules = vocab.rules
    initialisers = {n for step in rules.restructure.get("walker_init", [])
                    for n in [step.params.get("from"), *step.params.get("merge", {}), *step.params.get("then_mmu", [])]}
    gva_members = {n for n, m in rules.vcpu_old.items() if m.walker == "gva"}
    walker_init = re.compile(rf"^&\w+->arch\.{re.escape(vocab.names.gva)}$")
    segments: list[tuple[str | None, list[int]]] = [(function_of(hunk), [])]
    for i, (tag, text, _n) in enumerate(hunk.lines):
        m = _DEFINES.match(text) if tag != "+" else None
        if m and not text.rstrip().endswith(";"):
            segments.append((m.group(1), []))
        segments[-1][1].append(i)
    lines = list(hunk.lines)
    for name, idx in segments:
        decl = [(i, h[0]) for i in idx for h in [hoisted(lines[i][1], vocab)]
                if lines[i][0] != "+" and h and walker_init.match(h[1])]
        mine = declared_types([lines[i][1] for i in idx if lines[i][0] != "+"], vocab)
        if len(decl) != 1 or name not in initialisers or len(mine) != 1:
            continue        # beside another layout-typed local: own_walker's case, not this one
        at, var = decl[0]
        local = _own_mmu_local(target, name, vocab, gva_members)
        if local is None or any(re.search(rf"(?<![\w>.]){local[0]}(?!\w)", lines[i][1]) for i in idx):
            continue
        word = re.compile(rf"(?<![\w>.]){re.escape(var)}(?!\w)")
        keeps = lines[at][0] == " "     # a walker the post-image still declares: its uses follow
        for i in idx:
            tag, text, n = lines[i]
            if i == at:
                lines[i] = (tag, local[1], n)
            elif tag != "+" or keeps:
                lines[i] = (tag, word.sub(local[0], text), n)
    if lines == hunk.lines:
        return None
    return OwnMmuHunk(hunk.old_start, hunk.old_len, hunk.new_start, hunk.new_len, hunk.section, lines,
                      as_written=list(hunk.lines))


def _own_mmu_local(target, name: str, vocab: Vocabulary, members: set[str]) -> tuple[str, str] | None:
    """(name, declaration line) of the one layout-typed variable of the target's `name`, an MMU
    local set to a member in `members`."""
    spans = [(rel, span) for rel in dict.fromkeys(d[0] for d in target.definitions(name) if d[0].endswith(".c"))
             for span in target.territories(rel, name)]
    if len(spans) != 1:
        return None
    rel, (lo, hi) = spans[0]
    body = target.lines(rel)[lo:hi + 1]
    types = declared_types(body, vocab)
    if len(types) != 1 or next(iter(types.values())) != "mmu":
        return None
    var = next(iter(types))
    line = next((t for t in body if (m := HOISTED.match(t)) and m.group(2) == var), None)
    m = re.match(r"^&?\w+->arch\.(\w+)$", HOISTED.match(line).group(3).strip()) if line else None
    return (var, line) if m and m.group(1) in members else None
