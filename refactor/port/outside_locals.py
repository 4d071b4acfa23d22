"""Locals a backported hunk uses but does not declare: a parameter or local declared above
the hunk (`struct kvm_pagewalk *w` in reset_guest_paging_metadata()'s parameter list, while
the hunk starts below it), as most real stable backports are.

What such a local is comes from evidence on both sides, never from its spelling:

- the patch's own hunks (of the same function): a declaration another hunk shows; a
  comparison or assignment with an expression of known type (`w == &vcpu->arch.{ngpa}`: a
  walker; `w == vcpu->arch.mmu`: an MMU); a member layout.toml puts on the walker only
  (`w->cpu_role`) or on the MMU only (`w->root_role`); a parameter of the `@@` heading's
  partial signature whose type is there but whose name git cut off;
- the target's function of the same name: a variable of the counterpart type (on the old
  layout an MMU stands for a walker) used the same way (a line of the hunk that names the
  local, translated and with the target's name, is a line of the target's function) or at
  the same position of the parameter list.

Only where the patch's evidence names one kind and exactly one variable of the target
agrees is the local renamed to the target's name; else the conflict stays, and its reason
says what the evidence was (refactor.port.reasons)."""
from __future__ import annotations

import dataclasses
import re

from refactor.port.align import norm
from refactor.port.calls import argument_spans
from refactor.port.headings import function_of
from refactor.port.lexicon import Vocabulary, declared_types, translate

_IDENT = re.compile(r"[A-Za-z_]\w*")
# The operand beside a comparison or an assignment: an lvalue chain, maybe with `&`.
_OPERAND = r"&?\s*[A-Za-z_]\w*(?:\s*(?:->|\.)\s*\w+)*"


@dataclasses.dataclass
class Evidence:
    """What the patch says one local is: the kinds its lines imply, each with the line."""

    var: str
    seen: list[tuple[str, str]] = dataclasses.field(default_factory=list)    # (kind, why)

    @property
    def kind(self) -> str | None:
        kinds = {k for k, _why in self.seen}
        return next(iter(kinds)) if len(kinds) == 1 else None

    def said(self) -> str:
        """The evidence in words, for a conflict's reason."""
        if not self.seen:
            return (f"nothing in the patch says what `{self.var}` is (no declaration, no comparison "
                    "with a walker or an MMU, no member only one of them has)")
        kinds = {k for k, _w in self.seen}
        head = f"the patch's lines disagree on what `{self.var}` is: " if len(kinds) > 1 else ""
        said = {"walker": "a walker", "mmu": "an MMU", "format": "a page format"}
        return head + "; ".join(f"{why} ({said[k]})" for k, why in dict.fromkeys(self.seen))


def _function_lines(hunk, fp, func: str | None) -> list[str]:
    """Lines (not added ones last, so a retyped parameter reads as the post-image says) of the
    patch's hunks in function `func`: this hunk, the hunks git heads with it, and a hunk
    that shows its definition, from there on."""
    out = [t for _g, t, _ in hunk.lines] + [hunk.section]
    for h in getattr(fp, "hunks", []):
        if h is hunk:
            continue
        lines = [t for _g, t, _ in h.lines]
        start = next((i for i, t in enumerate(lines) if t[:1].isalpha() and re.search(
            rf"\b{re.escape(func or '')}\s*\(", t)), None) if func else None
        if start is not None:
            out += lines[start:]
        elif func and function_of(h) == func:
            out += lines + [h.section]
    return out


def _expr_kind(expr: str, vocab: Vocabulary, declared: dict[str, str]) -> str | None:
    """'walker' or 'mmu' for an expression whose type the new layout's rules tell."""
    e = re.sub(r"\s+", "", expr)
    bare = e.lstrip("&")
    names = vocab.names
    m = re.fullmatch(r"\w+->arch\.(\w+)", bare)
    if m and e.startswith("&") and m.group(1) in (names.gva, names.ngpa):
        return "walker"
    if re.fullmatch(rf"\w+(?:(?:->|\.)\w+)*->{re.escape(vocab.walker_member)}", e):
        return "walker"
    if m:
        member = vocab.rules.vcpu_old.get(m.group(1))
        if member is not None and not member.removed and (
                member.kind == "mmu_pointer" and not e.startswith("&") or member.kind == "mmu" and e.startswith("&")):
            return "mmu"
    if re.fullmatch(r"[A-Za-z_]\w*", e) and declared.get(e) in ("walker", "mmu"):
        return declared[e]
    return None


def patch_evidence(var: str, lines: list[str], vocab: Vocabulary) -> Evidence:
    """What the patch's `lines` (of one function) say `var` is."""
    ev = Evidence(var)
    declared = declared_types(lines, vocab)
    if var in declared:
        ev.seen.append((declared[var], f"declared `struct {vocab.rules.types[declared[var]]} *{var}`"))
        return ev
    v = re.escape(var)
    fields = vocab.rules.mmu_fields.values()
    walker_only = {f.path.split(".")[0] for f in fields if f.moves_to_walker} - \
        {f.path.split(".")[0] for f in fields if not f.moves_to_walker}
    mmu_only = {f.path.split(".")[0] for f in fields if not f.moves_to_walker} - \
        {f.path.split(".")[0] for f in fields if f.moves_to_walker}
    for line in lines:
        code = re.sub(r"/\*.*?\*/|//.*", "", line)
        for m in re.finditer(rf"(?<![\w>.&*])({v})\s*(==|!=|=(?!=))\s*({_OPERAND})", code):
            kind = _expr_kind(m.group(3), vocab, declared)
            if kind:
                ev.seen.append((kind, f"`{var} {m.group(2)} {' '.join(m.group(3).split())}`"))
        for m in re.finditer(rf"({_OPERAND})\s*(==|!=)\s*({v})(?![\w(])", code):
            kind = _expr_kind(m.group(1), vocab, declared)
            if kind:
                ev.seen.append((kind, f"`{' '.join(m.group(1).split())} {m.group(2)} {var}`"))
        for m in re.finditer(rf"(?<![\w>.&*]){v}\s*->\s*(\w+)", code):
            if m.group(1) in walker_only:
                ev.seen.append(("walker", f"`{var}->{m.group(1)}` (layout.toml: a walker member)"))
            elif m.group(1) in mmu_only:
                ev.seen.append(("mmu", f"`{var}->{m.group(1)}` (layout.toml: an MMU member)"))
    return ev


def _params(signature: str) -> list[str]:
    """The parameters of a (maybe cut) signature `name(a, b, c` as written."""
    at = signature.find("(")
    closed = signature + ")"              # a signature git cut short ends inside the list
    got = argument_spans(closed, at) if at >= 0 else None
    return [closed[x:y].strip() for x, y in got[0]] if got else []


def _cut_walker_param(section: str, vocab: Vocabulary) -> int | None:
    """Where the `@@` heading's signature, cut short by git, ends in a parameter of the
    walker's type whose name is cut off (`..., struct kvm_pagewalk *`): its index."""
    params = _params(section)
    walker = vocab.rules.types["walker"]
    if params and re.fullmatch(rf"(?:const\s+)?struct\s+{walker}\s*\**", params[-1]) and ")" not in section:
        return len(params) - 1
    return None


def _target_params(body: list[str]) -> list[str]:
    """The parameter names of the target function whose lines are `body` (first line on)."""
    head = []
    for line in body:
        head.append(line)
        if line.rstrip().endswith("{") or line == "{" or line.rstrip().endswith(")"):
            break
    return [(_IDENT.findall(p) or [""])[-1] for p in _params(" ".join(head))]


def outside_renames(renames: dict[str, str], hunk, fp, body: list[str], direction: str, src: Vocabulary,
                    dst: Vocabulary, ctx):
    """Renames for the hunk's locals declared outside it, decided from evidence on both sides
    (module docstring), added to `renames` (the names the caller paired already stay), and
    the file context to port the renamed hunk with: each renamed local keeps the patch's
    kind there (the target's `mmu` standing for the patch's walker `w` is translated as the
    walker).  Only on a backport."""
    if direction != "backport":
        return renames, ctx
    func = function_of(hunk)
    lines = _function_lines(hunk, fp, func)
    hunk_text = "\n".join(t for _g, t, _ in hunk.lines)
    in_hunk = set(_IDENT.findall(hunk_text + "\n" + hunk.section))
    ttypes = declared_types(body, src)
    in_target = set(_IDENT.findall("\n".join(body)))
    known = declared_types([t for _g, t, _ in hunk.lines] + [hunk.section], src)
    candidates = [v for v in set(_IDENT.findall(hunk_text)) - in_target - set(known) - set(renames)
                  if re.search(rf"(?<![\w>.]){re.escape(v)}(?!\w)(?!\s*\()", hunk_text)]
    kinds: dict[str, str] = {}
    cut = _cut_walker_param(hunk.section, src)
    for var in sorted(candidates):
        ev = patch_evidence(var, lines, src)
        if not ev.seen and cut is not None and len(candidates) == 1:
            walker = src.rules.types["walker"]
            ev.seen.append(("walker", f"the `@@` heading's parameter {cut + 1}, `struct {walker} *`"))
        if ev.kind is None:
            continue
        cand = counterpart(var, ev.kind, hunk, body, ttypes, in_hunk, src, dst)
        if cand is not None:
            renames[var] = cand
            kinds[cand] = ev.kind
    if not kinds:
        return renames, ctx
    return renames, dataclasses.replace(ctx, patch_types={**ctx.patch_types, **kinds})


def counterpart(var: str, kind: str, hunk, body: list[str], ttypes: dict[str, str], in_hunk: set[str],
                src: Vocabulary, dst: Vocabulary) -> str | None:
    """The one variable of the target function (`body`) that is the patch's `var` of `kind`:
    of the old layout's type for it (a walker was an MMU), not named by the hunk, and used
    the same way (a pre-image line of the hunk naming `var` is, translated with its name, a
    line of the target) or at the parameter position the heading shows for it."""
    want = "format" if kind == "format" else "mmu"
    options = [t for t, k in ttypes.items() if k == want and t not in in_hunk]
    seen = {norm(x) for x in body}
    word = re.compile(rf"(?<![\w>.]){re.escape(var)}(?!\w)")
    pre = [t for g, t, _ in hunk.lines if g != "+" and word.search(t)]
    params = _target_params(body)
    at = _cut_walker_param(hunk.section, src) if kind == "walker" else None
    agree = []
    for cand in options:
        used = any(norm(word.sub(cand, translate(t, "backport", src, {var: kind}, dst.names).text)) in seen
                   for t in pre)
        placed = at is not None and at < len(params) and params[at] == cand
        if used or placed:
            agree.append(cand)
    return agree[0] if len(agree) == 1 else None


def evidence_for(var: str, hunk, vocab: Vocabulary) -> Evidence:
    """The patch's evidence for `var` in this hunk alone (for a conflict's reason)."""
    return patch_evidence(var, [t for _g, t, _ in hunk.lines] + [hunk.section], vocab)


def restore_names(h, hunk, vocab: Vocabulary) -> None:
    """A conflict found after a local was renamed to the target's name (outside_renames): the
    differing lines as the patch writes them, and the rename said, so that the reason quotes
    the patch (`update_permission_bitmask(w, ...)`, not a mix of both trees)."""
    mine = {t.strip() for _g, t, _ in hunk.lines}
    renames: dict[str, str] = {}
    fixed = []
    for a, b in h.differing:
        back = a
        if a.strip() not in mine and not a.startswith("(not in"):
            toks = re.findall(r"\w+|\S", a)
            for t in mine:
                other = re.findall(r"\w+|\S", t)
                pairs = {(x, y) for x, y in zip(toks, other) if x != y} if len(other) == len(toks) else set()
                if len(pairs) == 1 and all(_IDENT.fullmatch(x) and _IDENT.fullmatch(y)
                                           and renames.get(y, x) == x for x, y in pairs):
                    (x, y), = pairs
                    renames[y] = x
                    back = t
                    break
        fixed.append((back, b))
    if not renames or h.reason is None:
        return
    for (a, _b), (t, _b2) in zip(h.differing, fixed):
        h.reason = h.reason.replace(f"patch `{a.strip()}`", f"patch `{t.strip()}`")
    h.differing = fixed
    said = []
    for v, n in renames.items():
        ev = evidence_for(v, hunk, vocab)
        said.append(f"the patch's `{v}`, declared outside the hunk, is the target's `{n}` there"
                    + (f": {ev.said()}" if ev.kind else ""))
    h.reason = f"{h.reason}; {'; '.join(said)}"
