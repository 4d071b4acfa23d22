"""A backported hunk against the forward image of the target's function: what the layout
rules make of the target's lines on the new layout, each image line remembering the target
lines it came from.

Where the rules rewrote the target's lines into the patch's (a write the new layout drops,
`vcpu->arch.nested_mmu.root_role.invalid = 1;` under mappings.toml
walker-builder-field-on-nested-mmu; two writes that became one walker's, restructure.toml
duplicate-walker-write), the hunk's pre-image pairs line for line with the image, not with
the target: the hunk is then ported onto the target's own lines (context and removed lines
are the target's, hidden lines stay, an added line that is the image of one target line is
that line, any other added line is translated).  Where the image still differs, the lines
that differ and the rules that made the others are the conflict's reason.

The image is made with the port's translation (refactor.port.lexicon, to_new) and the
dedupe the rewrite applies (refactor/plan/walker_writes.py `_dedupe`, the rule's
`dedupe_id`); running the rewrite itself on the target (refactor.plan) took over 20 s on the
7.2 subset here, per target and patch series."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from refactor.port.align import norm
from refactor.port.headings import function_of
from refactor.port.lexicon import Vocabulary, translate
from refactor.port.locals import target_types
from refactor.port.outside_locals import restore_names
from refactor.port.prereq import prerequisites

_CONST_WRITE = re.compile(r"^\s*[\w>.\-\[\]]+\s*=\s*(?:-?\d+|true|false|NULL)\s*;\s*$")


@dataclass
class ImageLine:
    text: str                   # on the new layout
    sources: list[int]          # target lines (absolute) it stands for; the last is its own
    rules: list[str] = field(default_factory=list)


def forward_image(tlines: list[str], lo: int, hi: int, vocab: Vocabulary,
                  first: int | None = None) -> tuple[list[ImageLine], dict]:
    """The image of target lines lo..hi (of a function that starts at `first`, lo by default)
    and {hidden target line: rule id} for the lines with no image of their own (dropped, or
    merged into a later write)."""
    rules = vocab.rules
    types = target_types(tlines, lo, vocab)
    known = _known_guest_mmu(vocab)
    out: list[ImageLine] = []
    hidden: dict[int, str] = {}
    guest_now = False
    for j in range(lo if first is None else first, hi + 1):
        line = tlines[j]
        if j < lo:      # only whether the fault MMU was set to guest_mmu above the lines
            if known and re.match(rf"\s*{re.escape(known[0])}\s*=", line):
                guest_now = bool(re.match(rf"\s*{re.escape(known[0])}\s*=\s*&\s*{re.escape(known[2])}\s*;", line))
            continue
        t = translate(line, "forward", vocab, types, other=vocab.names)
        if t.dropped:
            hidden[j] = t.rules[0] if t.rules else "?"
            continue
        text = t.text
        if known and re.match(rf"\s*{re.escape(known[0])}\s*=\s*&\s*{re.escape(known[2])}\s*;", line):
            guest_now = True       # mappings.toml known_guest_mmu: the fault MMU is guest_mmu here
        elif known and re.match(rf"\s*{re.escape(known[0])}\s*=", line):
            guest_now = False
        used = list(t.rules)
        if guest_now and known and known[1] in text:
            text = re.sub(rf"{re.escape(known[1])}(->)", lambda _m: known[3] + ".", text)
            text = re.sub(rf"{re.escape(known[1])}(?![\w.>-])", "&" + known[3], text)
        out.append(ImageLine(text, [j], used))
    # [[walker_init]] dedupe_id: in a run of constant writes, a walker write repeated keeps the
    # last (the member that took the walker's place).
    dedupe = next((s.params.get("dedupe_id") for s in rules.restructure.get("walker_init", [])
                   if s.params.get("dedupe_id")), None)
    walker = re.compile(rf"(?:\.|->)(?:{re.escape(vocab.names.gva)}|{re.escape(vocab.names.ngpa)}|"
                        rf"{re.escape(vocab.walker_member)})(?:\.|->)")
    if dedupe:
        seen: dict[str, int] = {}
        keep: list[ImageLine] = []
        for il in out:
            if not _CONST_WRITE.match(il.text):
                seen = {}
                keep.append(il)
                continue
            key = re.sub(r"\s+", "", il.text)
            if key in seen and walker.search(key):
                first = keep[seen[key]]
                il.sources = first.sources + il.sources
                il.rules = list(dict.fromkeys(first.rules + il.rules + [dedupe]))
                for s in first.sources:
                    hidden[s] = dedupe
                keep[seen[key]] = None      # the earlier write goes
            seen[key] = len(keep)
            keep.append(il)
        out = [il for il in keep if il is not None]
    return out, hidden


def _known_guest_mmu(vocab: Vocabulary) -> tuple[str, str, str, str] | None:
    """mappings.toml's base with `known_guest_mmu` (vcpu->arch.mmu): (old expression, its new
    expression, the MMU whose walker it names when set to it, that walker)."""
    for b in vocab.rules.bases:
        if getattr(b, "known_guest_mmu", None):
            walker = vocab.names.fill(b.known_guest_mmu)
            member = walker.rsplit(".", 1)[-1]
            which = next((k for k, v in vocab.names.as_dict().items() if v == member), None)
            mmu = next((n for n, m in vocab.rules.vcpu_old.items() if m.kind == "mmu" and m.walker == which), None)
            if mmu:
                return b.old, vocab.names.fill(b.new), b.old.rsplit(".", 1)[0] + "." + mmu, walker
    return None


@dataclass
class ImagePort:
    start: int = 0                  # first target line of the region
    length: int = 0
    lines: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    problem: str | None = None      # why the hunk does not port onto the image
    differing: list[tuple[str, str]] = field(default_factory=list)    # (patch, target) lines
    explained: list[str] = field(default_factory=list)   # the layout's differences, said
    image: list[ImageLine] = field(default_factory=list)


def port_onto_image(hunk, tlines: list[str], span: tuple[int, int], src: Vocabulary,
                    dst: Vocabulary, types: dict[str, str], first: int | None = None) -> ImagePort:
    """The hunk ported through the forward image of target lines `span` (of the function
    that starts at `first`)."""
    lo, hi = span
    image, hidden = forward_image(tlines, lo, hi, src, first)
    pre = [(i, t) for i, (g, t, _) in enumerate(hunk.lines) if g != "+"]
    keys = [norm(il.text) for il in image]
    want = [norm(t) for _i, t in pre]
    res = ImagePort()
    at = [k for k in range(len(keys) - len(want) + 1) if keys[k:k + len(want)] == want] if want else []
    explained = [f"the target's `{tlines[j].strip()}` is gone on the new layout ({r})"
                 for j, r in sorted(hidden.items()) if r and tlines[j].strip()
                 and not any(j in il.sources for il in image)]
    explained += [f"the target's {' and '.join(f'`{tlines[s].strip()}`' for s in il.sources)} "
                  f"became one write `{il.text.strip()}` ({il.rules[-1]})" for il in image if len(il.sources) > 1]
    res.explained = explained
    res.image = image
    skip: set[int] = set()
    if not at:
        # A blank context line the target lacks (7.3 sets a block of walker writes off where
        # 7.2 does not) is whitespace: matched without it, it is left out.
        blanks = {i for i, t in pre if not t.strip() and hunk.lines[i][0] == " "}
        bare = [norm(t) for i, t in pre if i not in blanks]
        again = [k for k in range(len(keys) - len(bare) + 1) if keys[k:k + len(bare)] == bare] if bare else []
        if blanks and len(again) == 1:
            at, skip = again, blanks
    if len(at) != 1:
        res.problem = "no place" if not at else "ambiguous"
        res.differing, same = _differing(want, pre, keys, image, tlines)
        # The target's lines the rules rewrote into the patch's (the same lines on each layout).
        res.explained += [f"the target's `{tlines[il.sources[-1]].strip()}` is the patch's `{il.text.strip()}` "
                          f"({next(r for r in il.rules if not r.startswith('field-'))})" for il in same
                          if len(il.sources) == 1 and norm(il.text) != norm(tlines[il.sources[-1]])
                          and any(not r.startswith("field-") for r in il.rules)]
        return res
    k0 = at[0]
    # The post-image on the target's lines.
    cursor = image[k0].sources[0]
    res.start = cursor
    out: list[str] = []
    used: list[str] = []
    k = k0
    # Added lines that are the image of one of the region's target lines are that line (the
    # hunk's own context shows what it means there: `vcpu->arch.mmu` after it was set).
    region = image[k0:k0 + len(pre) - len(skip)]
    single = {norm(il.text): il for il in region if len(il.sources) == 1}
    merged = {norm(il.text): il for il in image if len(il.sources) > 1}

    def several(what: str, text: str, il: ImageLine) -> str:
        return (f"the {what} `{text.strip()}` stands for the target's "
                + " and ".join(f"`{tlines[j].strip()}`" for j in il.sources)
                + f" ({_cite(il.rules[-1], src.rules)}): say which by hand")
    for i, (g, text, _n) in enumerate(hunk.lines):
        if i in skip:
            continue
        if g == "+":
            key = norm(text)
            if key in merged:
                res.problem = several("added", text, merged[key])
                return res
            if key in single:
                out.append(tlines[single[key].sources[0]])
                used += single[key].rules
            else:
                t = translate(text, "backport", src, types, other=dst.names)
                if t.dropped:
                    continue
                out.append(t.text)
                used += t.rules
            continue
        il = image[k]
        k += 1
        if g == "-" and len(il.sources) > 1:
            res.problem = several("removed", text, il)
            return res
        last = il.sources[-1]
        # Hidden lines before it stay; its own target line stays as context, goes if removed.
        out.extend(tlines[cursor:last])
        if g == " ":
            out.append(tlines[last])
        cursor = last + 1
        used += il.rules
    used += [hidden[j] for j in range(res.start, cursor) if j in hidden]
    res.length = cursor - res.start
    res.lines = out
    res.rules = list(dict.fromkeys(r for r in used if r))
    return res


def _differing(want, pre, keys, image, tlines) -> tuple[list[tuple[str, str]], list[ImageLine]]:
    """The patch's pre-image lines against the image lines of the closest place, written as
    the target has them; and the image lines there that are the patch's."""
    sm = difflib.SequenceMatcher(None, want, keys, autojunk=False)
    blocks = [b for b in sm.get_matching_blocks() if b.size]
    if not blocks:
        return [], []
    lo_b = max(blocks[0].b - blocks[0].a, 0)
    hi_b = min(blocks[-1].b + (len(want) - blocks[-1].a), len(keys))
    out, same = [], []
    for op, a1, a2, b1, b2 in difflib.SequenceMatcher(None, want, keys[lo_b:hi_b], autojunk=False).get_opcodes():
        if op == "equal":
            same += image[lo_b + b1:lo_b + b2]
            continue
        mine = [pre[a][1].strip() for a in range(a1, a2)]
        theirs = [tlines[image[lo_b + b].sources[-1]].strip() for b in range(b1, b2)]
        for x in range(max(len(mine), len(theirs))):
            out.append((mine[x] if x < len(mine) else "(not in the patch)",
                        theirs[x] if x < len(theirs) else "(not in the target)"))
    return out, same


def span_of(hunk, target, rel: str, near: int | None) -> tuple[str, tuple[int, int]] | None:
    """The target file and span of the function the hunk is in (the one around `near`)."""
    func = function_of(hunk)
    if not func:
        return None
    spans = target.territories(rel, func) if target.text(rel) is not None else []
    if not spans:
        return None
    if near is not None:
        spans = [s for s in spans if s[0] <= near <= s[1]] or spans
    if len(spans) != 1:
        return None
    return rel, spans[0]


def _cite(rule_id: str, rules) -> str:
    entry = rules.registry.get(rule_id)
    return f"{entry.source.split()[0]} {rule_id}" if entry else rule_id


_DEFINES = re.compile(r"^[A-Za-z_][\w \t*]*\b\w+\(|^\s*(?:const\s+)?struct\s+\w+\s*\*")
_IDENT = re.compile(r"(?<![\w>.])([A-Za-z_]\w*)(?!\s*\()(?!\w)")


def port_on_image(h, hunk, target, src: Vocabulary, dst: Vocabulary, ctx) -> None:
    """A backported hunk that conflicts where it was located: ported through the forward
    image of the target's function when its pre-image is that image's lines (h updated to
    `translated`), else its reason says which differences the layout rules explain (and
    which rule), and which lines still differ."""
    if h.status != "conflict" or h.target_start is None or not h.differing:
        return
    restore_names(h, hunk, src)     # a local renamed to the target's name: the patch's again
    rel = h.target_file
    got = span_of(hunk, target, rel, h.target_start)
    if got is None:
        return
    tlines = target.lines(rel)
    # Only the lines around where the hunk was placed: translating a whole long function
    # (FNAME(walk_addr_generic)) line by line costs more than the rest of the port.
    reach = 2 * len(hunk.lines) + 10
    window = (max(got[1][0], h.target_start - reach), min(got[1][1], h.target_start + reach))
    ip = port_onto_image(hunk, tlines, window, src, dst, dict(ctx.patch_types), got[1][0])
    rules = src.rules
    changed = [t for g, t, _ in hunk.lines if g != " "]
    if ip.problem is None and not any(_DEFINES.match(t) for t in changed):
        lo, hi = got[1]
        have = {m.group(1) for x in tlines[lo:hi + 1] for m in _IDENT.finditer(x)}
        region = tlines[ip.start:ip.start + ip.length]
        new = [x for x in ip.lines if x not in region]
        # A name the added lines use that is a local of the patch, not of the target's function.
        strange = {m.group(1) for x in new for m in _IDENT.finditer(x)} - have - target.file_identifiers(rel)
        strange |= {m.group(1) for x in new for m in _IDENT.finditer(x)} & (set(ctx.patch_types) - have)
        if not strange and ip.lines != region and not prerequisites(new, target, ctx):
            h.status, h.reason, h.differing = "translated", None, []
            h.target_start, h.target_len, h.new_lines = ip.start, ip.length, ip.lines
            h.rules = ip.rules
            return
    if ip.problem is None:
        return      # the image is the hunk's; what stops it is said already
    if ip.problem and ip.problem.endswith("say which by hand"):
        h.reason, h.differing = f"context differs by the layout change: {ip.problem}", []
        return
    diff = ip.differing if ip.problem == "no place" and ip.differing else h.differing
    # Only where the image says more: what the rules explain, and fewer lines left differing.
    if not ip.explained or len(diff) > len(h.differing):
        return
    layout = "; ".join(f"{e} ({_cite(r, rules)})" for e, r in _split(ip.explained[:4]))
    walker = {f.name for f in rules.mmu_fields.values() if f.dest == "walker"}
    moved = [b for a, b in diff if a == "(not in the patch)" and _writes(b, walker)]
    shown = "; ".join(f"patch {_shown(a)} vs target {_shown(b)}" for a, b in diff[:3])
    if moved and len(moved) == len(diff):
        by_text = {tlines[il.sources[-1]].strip(): il for il in ip.image}
        said = []
        for b in moved:
            il = by_text.get(b.strip())
            how = "" if il is None or norm(il.text) == norm(b) else (
                f", on the new layout `{il.text.strip()}`: "
                + ", ".join(_cite(r, rules) for r in il.rules if not r.startswith("field-")))
            said.append(f"`{_writes(b, walker)}` (`{b.strip()}`{how})")
        head = (f"context differs in where the new layout writes walker fields: the target writes "
                f"{', '.join(said)} here, a walker field by layout.toml mmu_fields; the patch's lines do "
                f"not, so its function writes it elsewhere or not at all: port by hand")
    else:
        head = f"context differs for non-layout reasons: {shown}" if diff else (h.reason or "")
    prefix = h.reason.split("context differs", 1)[0] if h.reason and "context differs" in h.reason else ""
    h.reason = f"{prefix}{head} (the layout rules explain the rest: {layout})"
    h.differing = diff


def _split(explained: list[str]) -> list[tuple[str, str]]:
    """(what, rule id) of each `... (rule)` the image said."""
    out = []
    for e in explained:
        m = re.match(r"^(.*) \(([\w-]+)\)$", e)
        out.append((m.group(1), m.group(2)) if m else (e, ""))
    return out


def _writes(line: str, walker: set[str]) -> str | None:
    m = re.match(r"^\s*.+?(?:->|\.)(\w+)\s*=[^=]", line)
    return m.group(1) if m and m.group(1) in walker else None


def _shown(line: str) -> str:
    return "(a blank line)" if not line.strip() else line.strip() if line.startswith("(not in") else f"`{line.strip()}`"
