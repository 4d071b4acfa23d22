"""An exact port of walker-field writes made in an initialiser the refactor introduced.

restructure.toml [[walker_init]]: on the new layout `to` (init_kvm_page_walk())
writes the walker's fields once; on the old layout the initialisers that do its
work (`from`, `merge`, `then_mmu`: refactor.port.counterparts) write them into
their MMU.  A fix that only adds, changes or removes such writes is made in
each of them, as one region of the target spanning them all.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from refactor.port.calls import arguments
from refactor.port.counterparts import (Place, Restructured, body, counterparts, old_line, place,
                                        rule_names, walker_vars)
from refactor.port.lexicon import Vocabulary
from refactor.port.target import Target

# The reason of a hunk made in the counterparts; ported_into() reads it back for the mail.
NOTE = "{function}() was introduced by the refactor (restructure.toml {rule}): ported to {places}"
_NOTE = re.compile(r"^(\w+)\(\) was introduced by the refactor \(restructure\.toml [\w-]+\): ported to (.+)$")


def ported_into(reason: str | None) -> tuple[str, list[str]] | None:
    """(new function, the old functions the hunk was made in) of a hunk this module ported."""
    m = _NOTE.match(reason or "")
    return (m.group(1), re.findall(r"(\w+)\(\) \(", m.group(2))) if m else None


_WRITE = re.compile(r"^\s*(\w+)->([\w.]+)\s*=[^=]")


@dataclass
class Edit:
    """The hunk as one region of the target (first line, length, new lines) spanning every
    counterpart it changes, and what it did, for the hunk's reason."""
    start: int
    length: int
    lines: list[str]
    note: str


def _role_param(p: Place, r: Restructured, target: Target) -> str | None:
    """The counterpart's parameter for `to`'s role parameter (`role_param`): the one its
    callers pass that variable as."""
    role = r.params.get("role_param")
    text = target.text(p.file) or ""
    for m in re.finditer(rf"\b{re.escape(p.function)}\s*\(", text):
        got = arguments(text, m.end() - 1)
        if got and role in [a.strip() for a in got[0]]:
            i = [a.strip() for a in got[0]].index(role)
            if i < len(p.params) and not text[:m.start()].rstrip().endswith(("void", "static")):
                return p.params[i]
    return None


def _calls(target: Target, p: Place, places: dict[str, Place], depth: int = 3) -> set[str]:
    """Counterparts `p` reaches through calls of functions of its file (a few levels)."""
    seen, todo = set(), [p.function]
    for _ in range(depth):
        nxt = []
        for name in todo:
            defs = [d for d in target.definitions(name) if d[0] == p.file]
            if not defs:
                continue
            _s, lines = body(target, p.file, defs[0][1])
            for callee in set(re.findall(r"\b(\w+)\s*\(", "\n".join(lines[1:]))) - seen - {name}:
                seen.add(callee)
                nxt.append(callee)
        todo = nxt
    return seen & set(places)


def walker_writes_port(hunk, r: Restructured, target: Target, rules, vocab: Vocabulary,
                       rel: str) -> tuple[Edit | None, str | None]:
    """A hunk in `to` ([[walker_init]]) that only adds, changes or removes single-line
    walker-field writes, made in every old counterpart at the matching place: a removed or
    changed write where the counterpart has it; an added one after the counterpart's write of
    the nearest field the hunk's context writes before it.  Added writes must reach every
    path the dispatcher and `walker_first` take, else (None, where each would go)."""
    if r.kind != "walker_init" or r.key != "to":
        return None, None
    texts = [t for _g, t, _ in hunk.lines] + [hunk.section]
    walkers = walker_vars(texts, vocab, rules)
    changed = [(i, g, t) for i, (g, t, _) in enumerate(hunk.lines) if g != " " and t.strip()]
    spread = [i for i, (g, _t, _) in enumerate(hunk.lines) if g != " "]
    if not changed or spread != list(range(spread[0], spread[-1] + 1)):
        return None, None      # one run of changed lines only: one place per counterpart
    if not walkers or any(
            not (m := _WRITE.match(t)) or m.group(1) not in walkers or not t.rstrip().endswith(";")
            for _i, _g, t in changed):
        return None, None
    places = {p.function: p for p in counterparts(r, target, rules, rel) if p.file == rel}
    if not places:
        return None, None
    lines = target.lines(rel)
    inserts: dict[int, list[str]] = {}    # 0-based target line -> lines added after it
    replaced: dict[int, str | None] = {}  # 0-based target line -> new text (None: removed)
    added_to, hints, missing = [], [], []
    role = r.params.get("role_param")
    for p in places.values():
        start, blines = body(target, rel, p.line)
        arg = _role_param(p, r, target)

        def mine(t: str) -> str | None:
            out = old_line(t, r, p, vocab, rules, walkers, set())
            if role and re.search(rf"(?<![\w>.]){re.escape(role)}\b", _rhs(out)):
                if not arg:
                    return None
                out = out[:len(out) - len(_rhs(out))] + re.sub(
                    rf"(?<![\w>.]){re.escape(role)}\b", arg, _rhs(out))
            return out
        run_removed = [t for _i, g, t in changed if g == "-"]
        run_added = [t for _i, g, t in changed if g == "+"]
        if run_removed:
            at = []
            for t in run_removed:
                want = mine(t)
                hits = [start + k for k, x in enumerate(blines) if want and " ".join(x.split()) ==
                        " ".join(want.split())]
                at.append(hits[0] if len(hits) == 1 else None)
            if all(a is None for a in at):
                continue
            if None in at or at != list(range(at[0], at[0] + len(at))):
                return None, f"{p.function}() ({p.where}) has only some of the removed lines"
            new = [mine(t) for t in run_added]
            if None in new:
                return None, None
            for k, a in enumerate(at):
                replaced[a] = None
            replaced[at[0]] = "\n".join(new) if new else None
            added_to.append(p)
            continue
        # Pure additions: after the counterpart's write of the nearest field written before.
        first = changed[0][0]
        before = [m.group(2) for _g, t, _ in reversed(hunk.lines[:first])
                  if (m := _WRITE.match(t)) and m.group(1) in walkers]
        anchor = None
        for field_path in before:
            want = mine(f"{next(iter(walkers))}->{field_path} = x;")
            if want is None:
                continue
            head = want.split("=")[0].strip()
            hits = [start + k for k, x in enumerate(blines)
                    if re.match(rf"\s*{re.escape(head)}\s*=[^=]", x) and x.rstrip().endswith(";")]
            if hits:
                anchor = hits[-1]
                break
        if anchor is None:
            missing.append(p)
            continue
        new = [mine(t) for t in run_added]
        if None in new:
            return None, None
        # A second write of a field the counterpart writes already: which one wins depends on
        # an order the hunk does not show.
        again = [x.split("=", 1)[0].strip() for x in new
                 if any(re.match(rf"\s*{re.escape(x.split('=', 1)[0].strip())}\s*=[^=]", y) for y in blines)]
        if again:
            return None, f"{p.function}() ({p.where}) writes `{again[0]}` already: place it by hand"
        indent = re.match(r"\s*", lines[anchor]).group(0)
        inserts[anchor] = [indent + x.strip() for x in new]
        added_to.append(p)
        hints.append(f"after {rel}:{anchor + 1} in {p.function}()")
    if not added_to:
        return None, None
    if inserts:
        # Every walker set-up path must get the write: the dispatcher's callees and
        # `walker_first`, directly or through a counterpart they call.
        entries = []
        for key in ("dispatcher", "walker_first"):
            for name in rule_names(r.params.get(key)):
                q = place(target, name, key, rules, rel)
                if q is None:
                    continue
                reach = _calls(target, q, places, depth=1 if key == "dispatcher" else 3)
                entries += [places[n] for n in reach] if key == "dispatcher" else [q]
        done = {p.function for p in added_to}
        uncovered = [e for e in entries
                     if e.function not in done and not (_calls(target, e, places) & done)]
        if uncovered:
            return None, ("; ".join(hints) + "; " + ", ".join(
                f"{e.function}() ({e.where}) writes none of the fields written before it"
                + (f" (nor does {', '.join(sorted(_calls(target, e, places)))}())"
                   if _calls(target, e, places) else "") for e in uncovered)
                + ": decide there by hand")
    touched_at = sorted(set(inserts) | set(replaced))
    lo, hi = touched_at[0], touched_at[-1]
    out = []
    for k in range(lo, hi + 1):
        if k in replaced:
            if replaced[k] is not None:
                out += [_restyled(x, lines[k]) for x in replaced[k].split("\n")]
        else:
            out.append(lines[k])
        out += inserts.get(k, [])
    note = NOTE.format(function=r.function, rule=r.rule_id,
                       places=", ".join(f"{p.function}() ({p.where})" for p in added_to))
    return Edit(lo, hi - lo + 1, out, note), None


def _restyled(new: str, old: str) -> str:
    """`new` indented like the target's `old`, and aligned like it where both write the same
    left-hand side (`g_context->get_pdptr         = ...`)."""
    indent = re.match(r"\s*", old).group(0)
    lhs_new, lhs_old = new.split("=", 1)[0], old.split("=", 1)[0]
    if "=" in new and "=" in old and lhs_new.split() == lhs_old.split():
        return lhs_old + "=" + new.split("=", 1)[1]
    return indent + new.strip()


def _rhs(line: str) -> str:
    return line.split("=", 1)[1] if "=" in line else ""
