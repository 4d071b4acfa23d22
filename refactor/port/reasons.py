"""What a conflict's reason says when the lines that differ are the layout's doing after all:
a local the hunk does not declare (the port could not see its type), or walker fields
written through another object on each side.  A stable maintainer reads the cause first."""
from __future__ import annotations

import re

from refactor.port.hunks import HunkResult
from refactor.port.lexicon import Vocabulary, declared_types, dropped_by, translate
from refactor.port.locals import function_span
from refactor.port.outside_locals import evidence_for
from refactor.port.target import Target
from refactor.rules import Rules


def unseen_locals(hunk, direction: str, src: Vocabulary, dst: Vocabulary, target: Target,
                   rel: str, func: str | None) -> tuple[dict[str, str], bool, str] | None:
    """The hunk's lines that the target's function has once the layout is translated and one
    of the hunk's locals takes the name of a layout-typed variable of that function (the
    patch's `w` for the target's `mmu`, declared outside the hunk where the port cannot see
    its type): ({patch name: target name}, whether that explains every line the target
    lacks, what the patch's lines say of those locals where that did not decide them), or
    None."""
    defs = sorted(target.definitions(func) if func else [], key=lambda d: d[0] != rel)
    if not defs:
        return None
    tlines = target.lines(defs[0][0])
    lo, hi = function_span(tlines, defs[0][1] - 1)
    body = tlines[lo:hi + 1]
    typed = declared_types(body, dst if direction == "forward" else src)
    seen = {x.strip() for x in body}
    bodies = [re.findall(r"\w+|\S", x) for x in body]
    # A name the target's function uses already is not one it calls otherwise.
    used = {w for toks in bodies for w in toks}
    mapping: dict[str, str] = {}
    unexplained = 0
    group = {"walker": "pointer", "mmu": "pointer", "format": "format", None: None}

    def fits(x: str, y: str) -> bool:
        # Not a page format for what the patch says is a walker (or the other way round).
        kind = evidence_for(x, hunk, src).kind
        return kind is None or group[kind] == group[typed[y]]
    for g, t, _ in hunk.lines:
        text = translate(t, direction, src, {}, dst.names).text.strip() if g != "+" else ""
        if not text or text in seen:
            continue
        toks = re.findall(r"\w+|\S", text)
        for cand in bodies:
            pairs = {(x, y) for x, y in zip(toks, cand) if x != y} if len(cand) == len(toks) else None
            if pairs and len({x for x, _ in pairs}) == len(pairs) and \
                    all(y in typed and x not in used and mapping.get(x, y) == y and fits(x, y) for x, y in pairs):
                mapping.update(pairs)
                break
        else:
            unexplained += 1
    # Why the port did not take it for that variable itself (refactor.port.outside_locals):
    # what the patch's lines say the local is, when that is nothing or contradicts itself.
    said = [ev.said() for a in mapping for ev in [evidence_for(a, hunk, src)] if ev.kind is None]
    return (mapping, not unexplained, "; ".join(said)) if mapping else None


def with_unseen_locals(reason: str, renamed: tuple, func: str | None) -> str:
    mapping, every = renamed[:2]
    evidence = renamed[2] if len(renamed) > 2 else ""
    said = ", ".join(f"the patch's `{a}` is the target's `{b}`" for a, b in mapping.items())
    why = (f"{said} in {func}() (declared outside the hunk, the port could not tell its type "
           f"to translate it{': ' + evidence if evidence else ''}): rename it by hand")
    head = "context differs for non-layout reasons: "
    if every and reason.startswith(head):
        return f"context differs only in a local's name: {why}; {reason[len(head):]}"
    return f"{reason}; {why}"


_FIELD_WRITE = re.compile(r"^\s*(.+?)(?:->|\.)(\w+)(\s*=.*)$")


def with_walker_writes(h: HunkResult, src: Vocabulary, dst: Vocabulary, rules: Rules) -> str:
    """The reason, saying which differing lines write the same walker field (layout.toml
    [mmu_fields] dest = "walker") with the same value through another object on each side
    (the translated `vcpu->arch.guest_mmu.get_pdptr = ...` where the target writes
    `vcpu->arch.mmu->get_pdptr = ...`): a layout difference, not a non-layout one."""
    walker = {f.name for f in rules.mmu_fields.values() if f.dest == "walker"}

    def writes(line: str, translated: bool) -> tuple[str, str, str] | None:
        text = translate(line, "backport", src, {}, dst.names).text if translated else line
        m = _FIELD_WRITE.match(text)
        return (m.group(2), " ".join(m.group(3).split()), m.group(1).strip()) \
            if m and m.group(2) in walker else None

    ours = {w[:2]: w[2] for a, _b in h.differing for w in [writes(a, True)] if w}
    theirs = {w[:2]: w[2] for _a, b in h.differing for w in [writes(b, False)] if w}
    same = [(k, ours[k], theirs[k]) for k in ours if k in theirs and ours[k] != theirs[k]]
    if not same:
        return h.reason
    bases = sorted({(a, b) for _k, a, b in same})
    said = (f"the target writes walker field{'s' if len(same) > 1 else ''} "
            f"{', '.join(f'`{k[0]}`' for k, _a, _b in same)} through "
            + "; ".join(f"`{b}` where the translated patch has `{a}`" for a, b in bases)
            + ": the same fields through another object (the layout's, not the change's difference), "
              "port by hand")
    head = "context differs for non-layout reasons: "
    explained = {k for k, _a, _b in same}
    every = all((not a.strip() or (writes(a, True) or (None,))[:2] in explained or a.strip().startswith("(not"))
                and (not b.strip() or (writes(b, False) or (None,))[:2] in explained or b.strip().startswith("(not")
                     or dropped_by(b, rules))    # a line the new layout drops (walk_mmu = ...)
                for a, b in h.differing)
    if every and h.reason.startswith(head):
        return f"context differs in where walker fields are written: {said}; {h.reason[len(head):]}"
    return f"{h.reason}; {said}"
