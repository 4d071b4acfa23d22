"""One hunk onto one target: locate, translate, classify.

A hunk's pre-image (context and removed lines) is looked for in the target
file as it is (`clean`), after translation through the layout rules
(`translated`), or in another file that defines the same function
(`relocated`).  Lines that still differ are paired with the target's and
their differences split in two: differences the layout explains (a local
that the other layout names differently, a walker reached another way) are
learned and applied to the added lines too; any other difference is a
`conflict` whose reason shows both lines.  Added lines are then checked for
prerequisites the target lacks (an identifier it never defines, a function
it defines with another number of parameters).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from refactor.frontend.patch import FilePatch, Hunk
from refactor.port.align import (Learner, fit_width, indent_shift, norm, pairings, realign, reindent, rejoin,
                                 width)
from refactor.port.context import FileContext
from refactor.port.headings import function_of, heading
from refactor.port.hooks import fit_hook_calls
from refactor.port.inverse import (introduced, kept_removals, restated_constant_params, restated_format_params,
                                   restated_guards, restated_restructurings, signature_change)
from refactor.port.lexicon import Vocabulary, declared_types, dropped_by, translate
from refactor.port.locals import (function_span, hoisted, inline, inline_added_locals, inits_around,
                                  learn_replaced_locals, match_unseen_locals, outside_renames, pointer_inits,
                                  same_object_pairs, target_types, through_locals)
from refactor.port.locate import locate, named_function
from refactor.port.old_walkers import own_mmu_hunk, own_walker
from refactor.port.prereq import format_members, missing_names, prerequisites, redeclared
from refactor.port.structs import moved_declarations, struct_lines
from refactor.port.target import Target
from refactor.rules import cite

LOCAL_NAMES = cite("port-local-names")
INLINE_LOCAL = cite("port-inline-local")
USE_LOCAL = cite("port-use-local")
SAME_OBJECT = cite("port-same-walker")

_IDENT = re.compile(r"[A-Za-z_]\w*")
_FUNC_HEAD = re.compile(r"([A-Za-z_]\w*)\s*\(")


@dataclass
class HunkResult:
    file: str
    target_file: str | None
    old_start: int
    status: str                    # clean | translated | relocated | conflict
    rules: list[str] = field(default_factory=list)
    reason: str | None = None
    differing: list[tuple[str, str]] = field(default_factory=list)   # (patch, target) lines
    target_start: int | None = None   # 0-based line of the target where the pre-image starts
    target_len: int = 0
    new_lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)     # deviations for the mail's bracketed note

    def to_json(self) -> dict:
        out = {"file": self.file, "target_file": self.target_file, "old_start": self.old_start,
               "status": self.status, "rules": self.rules, "reason": self.reason}
        if self.differing:
            out["differing"] = [{"patch": a, "target": b} for a, b in self.differing]
        return out


def _retry_with_local_names(hunk: Hunk, fp: FilePatch, target: Target, direction: str, src: Vocabulary,
                            dst: Vocabulary, ctx: FileContext, res: HunkResult) -> HunkResult:
    """A hunk found nowhere, in a function the target defines: its locals may be named
    otherwise there (`fmt` for `rsvd_check`, `w` for `mmu`: the rewrite renames them, and a
    hunk in the middle of the function does not show their declarations).  Where the patch
    and the target function each have exactly one layout-typed variable of a kind that the
    other lacks, they are the same variable: retry under the target's name.  If it still
    fails, say where the function is, so that a human knows where to look."""
    func = function_of(hunk)
    rel = fp.old_path or fp.path
    if func == "FNAME":     # paging_tmpl.h's FNAME(name)(...): the name inside is the function
        func = named_function(hunk, func)
        inner = func[len("FNAME("):-1] if func else None
        text = target.text(rel) or ""
        m = re.search(rf"^\S.*\bFNAME\({inner}\)\s*\(", text, re.M) if inner else None
        defs = [(rel, text.count("\n", 0, m.start()) + 1, None)] if m else []
    else:
        defs = sorted(target.definitions(func) if func else [], key=lambda d: d[0] != rel)
        defs = [d for d in defs if d[2] is not None or d[0].endswith(".c")]
    if not defs:
        if func and func.startswith("FNAME("):
            res.reason = f"code absent from the target: no place in {rel} matches, and it defines no {func}"
            # The same function defined once for all paging modes (5.10's is_last_gpte() in mmu.c).
            plain = [(frel, lo + 1) for frel, _line, _ar in target.definitions(inner)
                     for lo, _hi in target.territories(frel, inner)]
            if plain:
                res.reason += (f"; the target defines {inner}() at {plain[0][0]}:{plain[0][1]}, one function "
                               "for all paging modes: port the change there by hand")
        return res
    frel, line, _ar = defs[0]
    tlines = target.lines(frel)
    lo, hi = function_span(tlines, line - 1)
    body = tlines[lo:hi + 1]
    vocab = dst if direction == "forward" else src
    ttypes = declared_types(body, vocab)
    hunk_lines = [t for _tag, t, _ in hunk.lines] + [hunk.section]
    ptypes = {**ctx.patch_types, **declared_types(hunk_lines, src if direction != "forward" else vocab)}
    in_target = set(_IDENT.findall("\n".join(body)))
    in_hunk = set(_IDENT.findall("\n".join(hunk_lines)))
    group = {"walker": "pointer", "mmu": "pointer", "format": "format"}
    renames = {}
    for kind in ("pointer", "format"):
        mine = [v for v, k in ptypes.items() if group[k] == kind and v in in_hunk and v not in in_target]
        theirs = [v for v, k in ttypes.items() if group[k] == kind and v not in in_hunk]
        if len(mine) == 1 and len(theirs) == 1:
            renames[mine[0]] = theirs[0]
        elif kind == "pointer" and direction == "backport" and (own := own_walker(mine, ptypes, ttypes, hunk_lines)):
            renames[mine[0]] = own
    renames, ctx = outside_renames(renames, hunk, fp, body, direction, src, dst, ctx)   # declared above the hunk
    if renames:
        pat = re.compile(r"(?<![\w>.])(" + "|".join(map(re.escape, renames)) + r")(?!\w)")
        lines = [(tag, pat.sub(lambda m: renames[m.group(1)], t), n) for tag, t, n in hunk.lines]
        section = pat.sub(lambda m: renames[m.group(1)], hunk.section)
        retry = _port_hunk(Hunk(hunk.old_start, hunk.old_len, hunk.new_start, hunk.new_len, section, lines),
                           fp, target, direction, src, dst, ctx)
        if retry.status != "conflict":
            retry.rules.append(LOCAL_NAMES)
            return retry
        if retry.target_start is not None:
            return retry
    # The hunk's lines beside the most similar lines of the target function.
    norm_body = [norm(x) for x in body]
    shown = []
    for _tag, t, _ in hunk.lines:
        if _tag == "+" or len(norm(t)) < 8 or norm(t) in norm_body:
            continue
        close = difflib.get_close_matches(norm(t), norm_body, n=1, cutoff=0.6)
        if close:
            shown.append(f"patch `{t.strip()}` vs target `{close[0]}`")
        if len(shown) == 2:
            break
    vocab_t = dst if direction == "forward" else src
    missing = missing_names([translate(t, direction, vocab_t, dict(ctx.patch_types), other=dst.names).text
                              for _g, t, _ in hunk.lines], target, ctx)
    res.reason = ((f"missing prerequisite: {'; '.join(missing)}; " if missing else "")
                  + f"context differs for non-layout reasons: {func}() is at {frel}:{line} in the target, "
                  + "but no place in it matches the hunk's lines"
                  + (f" ({'; '.join(shown)})" if shown else ""))
    return res


def port_hunk(hunk: Hunk, fp: FilePatch, target: Target, direction: str, src: Vocabulary,
              dst: Vocabulary, ctx: FileContext) -> HunkResult:
    # Calls through MMU hooks first take the argument list the target declares.
    fitted = fit_hook_calls(hunk, target, src.rules)
    res = fitted.unfit(_port_fitted(fitted.hunk, fp, target, direction, src, dst, ctx))
    if fitted.problems:
        why = "missing prerequisite: " + "; ".join(fitted.problems)
        if res.status != "conflict":
            res.status, res.reason = "conflict", why
        elif why not in (res.reason or ""):
            res.reason = f"{why}; {res.reason}"
    if fitted.rules and res.status != "conflict":
        res.rules = list(dict.fromkeys(res.rules + fitted.rules))
        res.notes += fitted.notes
    return res


def _port_fitted(hunk: Hunk, fp: FilePatch, target: Target, direction: str, src: Vocabulary,
                 dst: Vocabulary, ctx: FileContext) -> HunkResult:
    inlined = False
    original = hunk
    if direction == "backport":
        hunk, inlined = inline_added_locals(hunk, src)
    res = _port_hunk(hunk, fp, target, direction, src, dst, ctx)
    if res.status == "conflict" and res.target_start is None:
        res = _retry_with_local_names(hunk, fp, target, direction, src, dst, ctx, res)
    # A walker local declared by another hunk of the function, still named in the output
    # (nothing in this hunk's context says what the target calls it): inline it too.
    elsewhere = ctx.walker_locals.get(heading(original), []) if direction == "backport" else []
    if elsewhere and res.status != "conflict":
        tl = target.lines(res.target_file)
        lo, hi = function_span(tl, res.target_start)
        in_function = set(_IDENT.findall("\n".join(tl[lo:hi + 1])))
        names = set(_IDENT.findall("\n".join(res.new_lines)))
    if elsewhere and res.status != "conflict" and any(v in names and v not in in_function
                                                      for v, _init in elsewhere):
        again, inlined = inline_added_locals(original, src, elsewhere)
        retry = _port_hunk(again, fp, target, direction, src, dst, ctx)
        if retry.status != "conflict":
            res = retry
    if inlined and res.status != "conflict":
        res.rules.append(INLINE_LOCAL)
    if res.status != "conflict" or direction != "backport":
        return res
    own = own_mmu_hunk(original, target, src)     # walker locals that are the target's MMU locals
    retry = _port_hunk(own, fp, target, direction, src, dst, ctx) if own is not None else None
    if retry is not None and retry.status != "conflict":
        retry.rules.append(LOCAL_NAMES)
        return retry
    # Locals that exist only to name a walker or a page format (upstream's style) have
    # no counterpart in an old tree: inline them and try again.
    gone = [hoisted(a, src) for a, b in res.differing if b == "(not in the target)"]
    gone = [g for g in gone if g]
    if not gone:
        return res
    for blank_too in (False, True):     # with the blank line that set the declaration off, or not
        lines, skipped = [], None
        for tag, text, n in hunk.lines:
            h = hoisted(text, src)
            if h and h in gone:
                skipped = tag
                continue
            if blank_too and skipped == tag and not text.strip():
                skipped = None
                continue
            skipped = None
            for var, init in gone:
                text = inline(text, var, init)
            lines.append((tag, text, n))
        retry = _port_hunk(Hunk(hunk.old_start, hunk.old_len, hunk.new_start, hunk.new_len, hunk.section,
                                lines), fp, target, direction, src, dst, ctx)
        if retry.status != "conflict":
            retry.rules.append(INLINE_LOCAL)
            return retry
    return res


def _port_hunk(hunk: Hunk, fp: FilePatch, target: Target, direction: str, src: Vocabulary,
               dst: Vocabulary, ctx: FileContext) -> HunkResult:
    rel = fp.old_path or fp.path
    res = HunkResult(file=rel, target_file=rel, old_start=hunk.old_start, status="clean")
    pre_raw = [t for tag, t, _ in hunk.lines if tag != "+"]
    func = function_of(hunk)
    # Declarations of struct definitions that the old layout lacks (dropped) or keeps.
    decls = struct_lines(hunk, src) if direction == "backport" else {}
    human = [d[1] for d in decls.values() if d[0] == "conflict"]
    if human:
        res.status, res.reason = "conflict", "; ".join(dict.fromkeys(human))
        return res

    def tr(line: str, types: dict[str, str]):
        vocab = dst if direction == "forward" else src
        return translate(line, direction, vocab, types, other=dst.names)

    pre_tags = [tag for tag, _t, _ in hunk.lines if tag != "+"]
    pre_at = [i for i, (tag, _t, _) in enumerate(hunk.lines) if tag != "+"]

    def pre_image(types: dict[str, str]):
        out = [tr(x, types) for x in pre_raw]
        for k, i in enumerate(pre_at):
            if decls.get(i, ("",))[0] == "drop":
                out[k].dropped, out[k].rules = True, [decls[i][1]]
        # A removed blank line that set off a removed statement the layout drops goes with it.
        for i in range(1, len(out)):
            if out[i - 1].dropped and pre_tags[i - 1] == pre_tags[i] == "-" and not pre_raw[i].strip():
                out[i].dropped = True
        return out

    types = dict(ctx.patch_types)
    pre_t = pre_image(types)
    kept_idx = [i for i, p in enumerate(pre_t) if not p.dropped]
    located = locate(hunk, rel, func, target, pre_raw, [pre_t[i].text for i in kept_idx], ctx.offsets)
    if located is None:
        res.status, res.target_file = "conflict", None if target.text(rel) is None else rel
        where = f"{rel} does not exist" if target.text(rel) is None else f"no place in {rel} matches"
        res.reason = (f"code absent from the target: {where}"
                      + (f", and no other file defines {func}()" if func else ""))
        return res
    frel, at, how = located
    if how == "ambiguous":
        res.status, res.target_file, res.target_start = "conflict", frel, at[0]
        res.reason = (f"the hunk's lines stand {len(at)} times in " + (f"{func}()" if func else frel) + " in the "
                      "target (" + ", ".join(f"{frel}:{i + 1}" for i in sorted(at)) + "): say which by hand")
        return res
    tlines = target.lines(frel)
    res.target_file = frel

    ttypes = target_types(tlines, at, dst if direction == "forward" else src)
    lo, hi = function_span(tlines, at)
    learner = Learner(ctx.words | set(ttypes), set(ttypes), set(_IDENT.findall("\n".join(tlines[lo:hi + 1]))),
                      tlines[lo:hi + 1], direction == "backport")
    t = src.rules.types
    learner.type_kinds = {t["mmu"]: "pointer", t["walker"]: "pointer", t["format"]: "format",
                          t["old_format"]: "format"}
    inits = pointer_inits(tlines[lo:hi + 1]) if direction == "backport" else {}
    patch_inits: dict[str, str] = {}
    if direction == "backport":
        # Locals the patch declares with their value in any hunk of the same function.
        fn = _FUNC_HEAD.findall(heading(hunk))[:1]       # git cuts `@@` headings: compare names
        patch_inits = pointer_inits([t for h in fp.hunks if fn and _FUNC_HEAD.findall(heading(h))[:1] == fn
                                     for _g, t, _ in h.lines] + [t for _g, t, _ in hunk.lines])
        for var, init in ctx.walker_locals.get(heading(hunk), []):
            patch_inits.setdefault(var, init)
        # Variables the hunk does not declare take the type the target gives them.
        for var, kind in ttypes.items():
            types.setdefault(var, kind)
        pre_t = pre_image(types)
        kept_idx = [i for i, p in enumerate(pre_t) if not p.dropped]
    kept = [pre_t[i].text for i in kept_idx]
    for k, j in pairings(kept, tlines, at, how)[2]:
        if kept[k] != tlines[j] and norm(kept[k]) != norm(tlines[j]):
            learner.learn(kept[k], tlines[j])
    if direction == "forward":
        # Old MMU pointers that the target has narrowed to walkers: translate them as walkers.
        for old_var, new_var in list(learner.subs.items()):
            if _IDENT.fullmatch(old_var) and ttypes.get(new_var) == "walker":
                types[old_var] = "walker"
        pre_t = pre_image(types)
        kept_idx = [i for i, p in enumerate(pre_t) if not p.dropped]
        kept = [pre_t[i].text for i in kept_idx]
    moved_here = (moved_declarations(tlines, src) if direction == "backport"  # not in the patch's context
                  and f"struct {src.rules.types['mmu']} {{" in target.text(frel) else set())
    best = None
    for cand in (pairings(kept, tlines, at, "window"), pairings(kept, tlines, at, "fuzzy")):
        first, _end, pairs, missing, extra = cand
        # A statement the two sides wrap over different lines is one line pair.
        tail, absorbed = rejoin(kept, [pre_tags[i] for i in kept_idx], tlines, pairs, missing, extra,
                                lambda a, b: norm(learner.apply(a)) == b or learner.learn(a, b))
        missing = [k for k in missing if k not in absorbed]
        extra = [j for j in extra if not any(j0 < j <= tail[k] for k, j0 in pairs if k in tail)]
        differing = []
        for k, j in pairs:
            if k in tail:
                continue
            mine = learner.apply(kept[k])
            if mine != tlines[j] and norm(mine) != norm(tlines[j]) and not learner.learn(kept[k], tlines[j]):
                differing.append((pre_raw[kept_idx[k]], tlines[j]))
        # A blank context line beside a line the layout drops separated it from the rest; one
        # at either end of the hunk only says where a declaration above it ended (a local the
        # new layout hoists there).
        differing += [(pre_raw[kept_idx[k]], "(not in the target)") for k in missing
                      if pre_raw[kept_idx[k]].strip() or pre_tags[kept_idx[k]] != " " or not (
                          k in (0, len(kept_idx) - 1) or any(0 <= x < len(pre_t) and pre_t[x].dropped
                                                           for x in (kept_idx[k] - 1, kept_idx[k] + 1)))]
        # A target line the patch lacks is fine when it only names a walker or a format
        # (a forward port onto upstream's style); any other is a difference.
        allowed = [j for j in extra if learner.declares(tlines, j) or direction != "backport" and hoisted(tlines[j], dst)
                   or direction == "backport" and (j in moved_here or dropped_by(
                       through_locals(tlines[j], inits if lo <= j <= hi else inits_around(tlines, j)), src.rules))]
        differing += [("(not in the patch)", tlines[j]) for j in extra if j not in allowed]
        # A pair of unlike lines says less than a line missing on one side: weigh it more.
        cost = sum(1 if a.startswith("(not in") or b.startswith("(not in") or
                   difflib.SequenceMatcher(None, norm(a), norm(b)).ratio() >= 0.5 else 2.5
                   for a, b in differing)
        if best is None or cost < best[4]:
            best = (first, differing, dict(pairs), allowed, cost, tail)
        if not differing:
            break
    first, res.differing, pair_of, allowed, _cost, tail = best
    res.target_start = first

    rules: list[str] = [r for p in pre_t for r in p.rules]
    if res.differing:
        res.status = "conflict"
        missing = missing_names([pre_t[i].text for i in kept_idx]
                                 + [tr(t, types).text for tag, t, _ in hunk.lines if tag == "+"], target, ctx)
        res.reason = ((f"missing prerequisite: {'; '.join(missing)}; " if missing else "")
                      + "context differs for non-layout reasons: " + "; ".join(
                          f"patch `{a.strip()}` vs target `{b.strip()}`" for a, b in res.differing[:3]))
        res.rules = list(dict.fromkeys(rules))
        return res
    for var, init in filter(None, (hoisted(tlines[j], dst) for j in allowed)):
        learner.add(init, var)
        rules.append(USE_LOCAL)
    restated: dict[int, int] = {}
    # A backport's removed line that the new layout has no counterpart for (the patch
    # dropped it under a rule: walk-mmu-assign) is what the old layout still says: it stays.
    stays = ({i: r for i, x in enumerate(pre_raw) if pre_tags[i] == "-"
              for r in [dropped_by(through_locals(x, inits), src.rules)] if r} if direction == "backport" else {})
    stays.update({k: decls[i][1] for k, i in enumerate(pre_at) if decls.get(i, ("",))[0] == "stay"})
    if direction == "backport":
        kept = kept_removals(hunk.lines, src.rules, src.walker_member, src.names)
        guards, guard_rule = restated_guards(hunk.lines, src.rules, src.names)
        kept.update({i: guard_rule for i in guards if hunk.lines[i][0] == "-"})
        consts, const_rule = restated_constant_params(hunk.lines, ctx.constant_params, src.rules)
        kept.update({i: const_rule for i in consts if hunk.lines[i][0] == "-"})
        guards |= consts
        formats, format_rule = restated_format_params(hunk.lines, ctx.format_params, src.rules, src.walker_member)
        kept.update({i: format_rule for i in formats if hunk.lines[i][0] == "-"})
        guards |= formats
        more = restated_restructurings(hunk, src, target, {**ctx.parameterized, **ctx.spte})
        kept.update({i: r for i, r in more.items() if hunk.lines[i][0] == "-"})
        guards |= set(more)
        stays.update({k: kept[i] for k, i in enumerate(pre_at) if i in kept})
    if direction in ("backport", "forward"):
        learn_replaced_locals(hunk, pre_t, pair_of, tlines, learner, tr, types)
    if direction == "backport":
        restated = same_object_pairs(hunk, pre_t, pair_of, tlines, learner, tr, types, src,
                                     inits, patch_inits, ctx.format_params)
        restated.update({i: -1 for i in guards if hunk.lines[i][0] == "+"})
    match_unseen_locals(hunk, tlines, first, ttypes, learner, tr, types, target.file_identifiers(frel))

    # Post-image: the target's own lines for context, translated added lines.
    out: list[str] = []
    added: list[str] = []
    added_at: set[int] = set()
    ti = first           # next target line not yet emitted or skipped
    k = 0                # index into kept
    pi = 0
    this_prev: str | None = None
    prev_patch: str | None = None
    blank_goes = False
    split: tuple[int, str] | None = None     # (len(out) after a wrapped line, its first part)
    # The target's code one block deeper or shallower (a body inside an `if` there): the
    # added lines move with it, by the one difference all its context lines agree on.
    shift = indent_shift([(pre_raw[kept_idx[k]], tlines[j]) for k, j in pair_of.items()
                          if pre_tags[kept_idx[k]] == " "])
    for idx, (tag, text, _) in enumerate(hunk.lines):
        if blank_goes and tag == "+" and not text.strip():
            blank_goes = False      # the blank line that set off a statement the layout drops
            continue
        blank_goes = False
        if tag != "-":
            prev_patch, this_prev = text, prev_patch
        if tag in (" ", "-"):
            p = pre_t[pi]
            pi += 1
            if p.dropped:
                continue
            j = pair_of.get(k)
            k += 1
            if j is None:           # a blank line the target does not have (allowed above)
                continue
            end = tail.get(k - 1, j) + 1    # the target's lines of a statement it wraps
            out.extend(tlines[ti:j])        # target-only lines kept (hoisted locals)
            if tag == " " or pi - 1 in stays:
                out.extend(tlines[j:end])
                if tag == "-":
                    rules.append(stays[pi - 1])
                    blank_goes = True       # nor does the blank line the patch put in its place
            ti = end
            continue
        if idx in decls and decls[idx][0] == "rename":     # the field's old name
            t = tr(text, types)
            out.append(re.sub(rf"(?<![\w>.]){re.escape(text.split(';')[0].split()[-1])}(?=\s*;)",
                              decls[idx][2], t.text))
            rules += t.rules + [decls[idx][1]]
            continue
        if idx in decls:            # a declaration the old layout does not have
            rules.append(decls[idx][1])
            continue
        if idx in restated:         # the patch only restated the target's line: it stays
            if restated[idx] >= 0:  # (-1: a continuation line of a statement that stays)
                out.append(tlines[restated[idx]])
            rules.append(SAME_OBJECT)
            continue
        t = tr(text, types)
        rules += t.rules
        if t.dropped:
            blank_goes = True
            continue
        new = learner.apply(t.text)
        if new != t.text:
            rules.append(LOCAL_NAMES)
        moved = realign(new, this_prev, split[1] if split and split[0] == len(out) else out[-1] if out else None)
        new = moved if moved != new else reindent(new, shift)
        # A line the translation made wider than the kernel's 100 columns is wrapped as it wraps.
        parts = fit_width(new) if width(new) > 100 >= width(text) else [new]
        split = (len(out) + len(parts), parts[0]) if len(parts) > 1 else None
        for part in parts:
            out.append(part)
            added.append(part)
            added_at.add(len(out) - 1)
    res.target_len = ti - first
    res.new_lines = out
    res.rules = list(dict.fromkeys(r for r in rules if r))

    missing_pre = prerequisites(added, target, ctx)
    missing_pre += format_members(added, target, src.rules, types) if direction == "backport" else []
    # The target's lines of the function that the port keeps: all but those the hunk replaces.
    replaced = {pair_of[k] for k, i in enumerate(kept_idx) if pre_tags[i] == "-" and k in pair_of}
    again = redeclared(added, tlines[lo:hi + 1], [x for j, x in enumerate(tlines[lo:hi + 1], lo)
                                                  if j not in replaced], tuple(src.rules.types.values()))
    changed = signature_change(out, added_at, target, frel, (first, ti), src.rules) \
        if direction == "backport" and not missing_pre else None
    new_function = introduced([x for i, x in enumerate(hunk.lines) if i not in restated],  # (not written)
                              target, src.rules) if direction == "backport" else None
    if new_function and not missing_pre:
        changed = (new_function, [])
    if changed:
        res.status, res.reason = "conflict", changed[0]
        res.rules = list(dict.fromkeys(res.rules + changed[1]))
        return res
    if again and not missing_pre:
        res.status = "conflict"
        m = next((_FUNC_HEAD.search(x) for x in tlines[lo:hi] if x[:1].isalpha() and not x.endswith(";")), None)
        res.reason = (f"the patch restructures {m.group(1) if m else func}(): its lines declare {', '.join(again)},"
                      " which the target's function already declares; port that function by hand")
        return res
    if missing_pre:
        res.status = "conflict"
        res.reason = "missing prerequisite: " + "; ".join(missing_pre)
    elif frel != rel:
        res.status = "relocated"
        res.reason = f"{func}() is in {frel} in the target, not in {rel}"
    elif how == "clean" and not res.rules:
        res.status = "clean"
    else:
        res.status = "translated"
    return res
