"""restructure.toml [[spte_permissions]] inverted, on a backport, over all hunks of a file.

The forward rewrite (refactor/plan/restructure_spte.py) replaces the old helper `old`
(is_access_allowed()) by the rule's `definition` of `new` (spte_permission_fault()), drops
the helpers only `old` read (`drop_unused`), gives `old`'s callers the vCPU's MMU in a local
and calls `new` negated (comments that name `old()` name `new()`), defines `bitmask`
(update_spte_permission_bitmask()) after `after` as the call of the parameterized `inner`
on the MMU's page format, and calls it before every reset of an MMU's SPTE format
(`before`).  On the old layout none of it exists: a hunk that makes exactly that change is
nothing there.

What the forward rule would make of a hunk's pre-image is computed, not restated here:
the helper and its callers by the forward code itself, run on the old tree (where they read
as on the new one: the helper, its callers and what only it used are the same code); the
bitmap's filler, which the old tree cannot be given (it has no `inner`), by replaying the
rule's text on the hunk, its facts read from the rule, the target (`after`'s parameters,
the role bits `inner` takes, in the order of [[parameterize]]'s locals) and the whole file
patch (which must define `bitmask` as the rule does: the rule's pieces go together).  A
hunk whose pre-image, so rewritten, is its post-image (calls of `new` read as the old helper
on both sides, as the port restates them) is the old code, also where its context is
another restructuring's (nothing_to_port); any other hunk (a fix to `new`'s body, a call of
`bitmask` with other arguments, a caller's local set otherwise by another hunk of the
function) is no such hunk and is ported, or conflicts, as before, and a hunk that still
calls what the rule introduced beside a definition that ported as nothing conflicts
(calls_of_unported).  Only on a tree the forward rule runs on (the old helper there, the
new one not yet, `requires` met).
"""
from __future__ import annotations

import re

from refactor.plan.parameterize import fill_args
from refactor.plan.restructure_spte import helper_and_caller_edits
from refactor.port.align import norm
from refactor.port.calls import arguments, call_of
from refactor.port.counterparts import old_calls
from refactor.port.headings import function_of
from refactor.port.images import changed_lines, same_lines
from refactor.port.target import Target, split_args

_HEADER = re.compile(r"^(?!(?:if|for|while|switch|return|else)\b)[A-Za-z_][\w\s\*]*?\b(\w+)\s*\(")

# The forward edits of the helper and its callers on a target, and the byte offset of each
# of its lines, per file: computed once per target object (a series patches a copy).
_CACHE: list[tuple[Target, str, tuple[dict, dict] | None]] = []


def _forward_on_target(rule, target: Target, rules) -> tuple[dict, dict] | None:
    """(edits, line offsets) per file; None where the forward rule would not run on the target."""
    for t, rid, got in _CACHE:
        if t is target and rid == rule.id:
            return got
    p, texts = rule.params, target.files
    # Where the forward rule runs at all (plan_spte_permissions): the old helper, not the new
    # one yet, and what the new one's definition needs (`requires`: 6.1 keeps its own check).
    runs = any(p["old"].encode() in t for t in texts.values()) \
        and not any(re.search(rb"\b%s\s*\(" % p["new"].encode(), t) for t in texts.values()) \
        and all(any(re.search(rb"\b%s\b" % w.encode(), t) for t in texts.values()) for w in p.get("requires", ()))
    edits = helper_and_caller_edits(rule, dict(texts), rules) if runs else None
    got = (edits, {rel: [0] + [m.end() for m in re.finditer(rb"\n", texts[rel])] for rel in edits}) \
        if edits else None
    _CACHE[:] = _CACHE[-3:] + [(target, rule.id, got)]
    return got


def _on_target(pre: list[str], rel: str, target: Target, edits: list, starts: list[int]) -> list[str] | None:
    """The pre-image as the forward rule leaves it, where it stands in the target (spacing
    aside) and holds whole forward edits: the target's lines of that place so edited."""
    if not pre or target.text(rel) is None:
        return None
    want = [norm(x) for x in pre]
    normed = target.norm_lines(rel)
    data = target.files[rel]
    for s in target.positions(rel, exact=False).get(want[0], []):
        if normed[s:s + len(want)] != want or s + len(want) >= len(starts):
            continue
        b0, b1 = starts[s], starts[s + len(want)]
        inside = [e for e in edits if b0 <= e.start and e.end <= b1 and not (e.start == e.end == b1)]
        if not inside or any(e.start < b1 and e.end > b0 and e not in inside for e in edits):
            continue
        region = data[b0:b1]
        for e in sorted(inside, key=lambda e: e.start, reverse=True):
            region = region[:e.start - b0] + e.new.encode() + region[e.end - b0:]
        return region.decode("utf-8", "replace").split("\n")[:-1]
    return None


def _fill(template: str, mmu: str) -> str:
    return template.replace("{mmu}", mmu)


def _bitmask_facts(rule, rules, target: Target, fp) -> dict | None:
    """What the filler's definition and calls are made of, where the file patch defines it."""
    p = rule.params
    added = [t for h in fp.hunks for g, t, _ in h.lines if g == "+"]
    if not any((m := _HEADER.match(t)) and m.group(1) == p["bitmask"] and not t.rstrip().endswith(";")
               for t in added):
        return None
    par = next((x.params for x in rules.restructure.get("parameterize", [])
                if x.params.get("inner") == p["inner"]), None)
    head = _target_header(target, p["after"])
    locals_of = _target_body(target, par["function"]) if par else None
    if par is None or head is None or locals_of is None:
        return None
    before, params = head
    rest = [re.search(r"(\w+)\s*$", x).group(1) for x in params[1:]]
    role_local = re.compile(r"^\s*bool\s+(\w+)\s*=\s*\w+\(\w+\);\s*$")
    roles = [m.group(1) for t in locals_of for m in [role_local.match(t)] if m]
    if sorted(roles) != sorted(p["role"]):
        return None
    mmu_param = f"struct {rules.types['mmu']} *mmu"
    sig = f"{before}{p['bitmask']}({', '.join([mmu_param] + params[1:])})"
    call = fill_args(f"\t{p['inner']}(", [f"&mmu->{par.get('member', 'fmt')}"] + rest
                     + [_fill(p["role"][r], "mmu") for r in roles], ");")
    return {"definition": ["", sig, "{", *call.split("\n"), "}"], "rest": rest}


def _target_header(target: Target, name: str) -> tuple[str, list[str]] | None:
    """(what precedes the name, parameter texts) of the target's definition of `name`."""
    for rel, line, _arity in target.definitions(name):
        tl = target.lines(rel)
        text = ""
        for x in tl[line - 1:line + 7]:
            text += x.strip() + " "
            if text.count("(") and text.count("(") == text.count(")"):
                break
        if text.rstrip().endswith(";") or name + "(" not in text:
            continue
        at = text.index(name + "(")
        return text[:at].strip() + " ", [x.strip() for x in split_args(text[at + len(name) + 1:text.rindex(")")])]
    return None


def _target_body(target: Target, name: str) -> list[str] | None:
    for rel, line, _arity in target.definitions(name):
        tl = target.lines(rel)
        end = next((k for k in range(line - 1, len(tl)) if tl[k].startswith("}")), None)
        if end is not None and any(tl[k].startswith("{") for k in range(line - 1, end)):
            return tl[line - 1:end + 1]
    return None


def _replay_bitmask(lines: list[str], section: str, rule, facts: dict) -> list[str] | None:
    """The lines with the filler defined after `after` and called before each `before` reset,
    as the forward rule writes them; None where the hunk does not show enough to tell."""
    p = rule.params
    if any(re.search(rf"\b(?:{re.escape(p['bitmask'])}|{re.escape(p['new'])})\s*\(", t) for t in lines):
        return None     # the rule has been made already: the forward rewrite does not run
    m = re.search(r"\b(\w+)\s*\(", section)
    func = m.group(1) if m else None
    out: list[str] = []
    for i, t in enumerate(lines):
        h = _HEADER.match(t)
        if h and not t.rstrip().endswith(";"):
            func = h.group(1)
        c = re.match(r"^(\s*)(\w+)\s*\(", t)
        spec = p["before"].get(c.group(2)) if c else None
        if spec is not None:
            stmt = " ".join(x.strip() for x in lines[i:i + 4])
            got = arguments(stmt, call_of(stmt, c.group(2)).end() - 1)
            if got is None or i == 0 or len(got[0]) <= spec["mmu"] or not stmt[got[1]:].lstrip().startswith(";"):
                return None
            mmu = got[0][spec["mmu"]].strip()
            vals = [_fill(spec[r], mmu) for r in facts["rest"] if r in spec]
            if len(vals) != len(facts["rest"]):
                return None
            prev = lines[i - 1].strip()
            out += ([""] if prev and not prev.endswith("{") else []) + [
                f"{c.group(1)}{p['bitmask']}({', '.join([mmu] + vals)});"]
        out.append(t)
        if t.startswith("}"):
            if func == p["after"]:
                out += facts["definition"]
            func = None
    return out


def _matches(h, rule, rules, rel: str, target: Target, forward: tuple[list, list], facts: dict | None):
    """The hunk's lines (calls of `new` read as the old helper) where its pre-image, rewritten
    as the forward rule rewrites it, is its post-image; else None."""
    lines = [(g, old_calls(t, rules)[0], n) for g, t, n in h.lines]
    pre = [t for g, t, _ in lines if g != "+"]
    post = [t for g, t, _ in lines if g != "-"]
    fwd = _on_target(pre, rel, target, *forward) or pre
    fwd = [old_calls(t, rules)[0] for t in fwd]
    if facts is not None:
        fwd = _replay_bitmask(fwd, h.section, rule, facts) or fwd
    return lines if same_lines(fwd, post) and not same_lines(fwd, pre) else None


# A local declared, or set, by a line of its own.
_LOCAL = re.compile(r"^\s*(?:(?:const\s+)?(?:struct\s+|union\s+|unsigned\s+)?\w+[\s*]+)?(\w+)\s*(?:=[^=][^;]*)?;\s*$")


def spte_hunks(fp, rules, target: Target) -> dict[int, tuple[list, dict[int, str]]]:
    """old_start -> (the hunk's lines, its calls of `new` read as the old helper; {changed line
    index: rule id}) for each hunk of `fp` that only makes [[spte_permissions]]'s change."""
    out: dict[int, tuple[list, dict[int, str]]] = {}
    rel = fp.old_path or fp.path
    for rule in rules.restructure.get("spte_permissions", []):
        p = rule.params
        names = [p["new"], p.get("bitmask", p["new"])]
        if not any(re.search(rf"\b(?:{'|'.join(map(re.escape, names))})\b", t)
                   for h in fp.hunks for g, t, _ in h.lines if g == "+"):
            continue
        got = _forward_on_target(rule, target, rules)
        if got is None:
            continue    # the old tree the rule does not apply to keeps its check: no inverse
        edits, starts = got
        forward = (edits.get(rel, []), starts.get(rel, []))
        facts = _bitmask_facts(rule, rules, target, fp) if p.get("bitmask") else None
        # The filler's calls are the rule's only beside the rule's filler: its definition too.
        defining = [h for h in fp.hunks if any(g == "+" and (m := _HEADER.match(t)) and m.group(1) == p["bitmask"]
                                                for g, t, _ in h.lines)] if facts else []
        if facts and not all(_matches(h, rule, rules, rel, target, forward, facts) for h in defining):
            facts = None
        mine = {h.old_start: got for h in fp.hunks
                for got in [_matches(h, rule, rules, rel, target, forward, facts)] if got}
        # A local the rule's hunks declare or set (the callers' `{mmu}`) that another hunk of
        # the function changes otherwise: the function's change is not the rule's alone.
        for func in {function_of(h) for h in fp.hunks if h.old_start in mine}:
            same = [h for h in fp.hunks if function_of(h) == func]
            added = {m.group(1) for h in same if h.old_start in mine for g, t, _ in h.lines if g == "+"
                     for m in [_LOCAL.match(t)] if m}
            word = re.compile(rf"(?<![\w>.])(?:{'|'.join(map(re.escape, added))})(?!\w)") if added else None
            if word and any(word.search(old_calls(t, rules)[0]) for h in same if h.old_start not in mine
                            for g, t, _ in h.lines if g != " "):
                for h in same:
                    mine.pop(h.old_start, None)
        for start, lines in mine.items():
            out[start] = (lines, {i: rule.id for i in changed_lines(lines)})
    return out


def nothing_to_port(res, hunk, spte: dict, target: Target, rel: str) -> bool:
    """A hunk that only makes [[spte_permissions]]'s change (`spte`: spte_hunks of its file):
    where the port restated it as the target's code, the rule is cited; where it conflicts
    because its context is the new layout's own (the initialisers [[walker_init]] rewrote,
    [[parameterize]]'s wrapper), there is still nothing to make on the old layout, wherever it
    stands: `res` (a HunkResult) becomes that empty change, at the place the port found or the
    target's definition of the hunk's function.  True when made so."""
    whole = spte.get(hunk.old_start)
    if not whole or whole[0] != hunk.lines:
        return False
    rid = sorted(set(whole[1].values()))
    if res.status != "conflict":    # located and restated (restated_restructurings): say why
        if res.new_lines == target.lines(res.target_file)[res.target_start:res.target_start + res.target_len]:
            res.rules = list(dict.fromkeys(res.rules + rid))
        return False
    at, where = res.target_start, res.target_file or rel
    if at is None:
        func = function_of(hunk)
        defs = [(f, line) for f, line, _a in (target.definitions(func) if func else []) if f == rel]
        if not defs:
            return False
        where, at = rel, defs[0][1] - 1
    res.status, res.target_file, res.target_start, res.target_len, res.new_lines = "translated", where, at, 0, []
    res.rules, res.differing = rid, []
    res.reason = (f"the refactor's own change (restructure.toml {', '.join(rid)}): the old layout has none "
                  "of it, nothing to port")
    return True


def calls_of_unported(pairs: list, target: Target, rules) -> None:
    """A hunk that still changes the target and calls a function of the rule (`new`,
    `bitmask`) the target lacks, whose definition in the patch ported as nothing (the rule's
    own change): a conflict, never a call of a function the old tree does not have.
    `pairs`: (HunkResult, Hunk, file) of one patch."""
    names = [n for r in rules.restructure.get("spte_permissions", []) for n in (r.params["new"],
                                                                                 r.params.get("bitmask"))
             if n and not target.definitions(n)]
    if not names:
        return
    call = re.compile(rf"(?<![\w>.])({'|'.join(map(re.escape, names))})\s*\(")
    for h, _hunk, _rel in pairs:
        if h.status == "conflict" or h.target_start is None:
            continue
        before = target.lines(h.target_file)[h.target_start:h.target_start + h.target_len]
        m = next((m for x in h.new_lines if x not in before and not x.lstrip().startswith(("*", "/*", "//"))
                  for m in [call.search(x)] if m), None)
        if m:
            h.status = "conflict"
            h.reason = (f"missing prerequisite: {m.group(1)}() is not defined in the target: the refactor "
                        "introduced it (restructure.toml [[spte_permissions]]), and the patch's definition "
                        "of it does not port onto the old layout")
