"""Restructurings of the refactor seen from the old layout: what a backported hunk must keep,
and what it must not do to a function the target's other code depends on.

A new-layout patch that only moved code to the new layout ports back onto an old tree as
nothing.  Translating names is not enough where the refactor restructured code
(rules/restructure.toml): a line the new layout drops because another function now does
its work is still the old layout's work, and a function whose parameters the refactor
changed keeps the old ones on an old tree, since every caller there passes them.
"""
from __future__ import annotations

import re

from refactor.port.calls import drop_call_argument
from refactor.port.headings import heading
from refactor.port.locals import function_span
from refactor.port.target import Target
from refactor.port.walker_init_inverse import restated_walker_init
from refactor.port.walker_param_inverse import restated_walker_param

_IDENT = re.compile(r"[A-Za-z_]\w*")
_ASSIGN = re.compile(r"^\s*([^=;]*?)\s*=\s*[^=][^;]*;\s*$")


def kept_removals(lines: list[tuple[str, str, int]], rules, walker_member: str, names) -> dict[int, str]:
    """Removed lines (index into `lines`) the old layout keeps, with the restructure rule:

    - a write to a walker field through an MMU's walker (`context->w->gva_to_gpa = f;`):
      [[walker_init]] moved the walker's initialisation into `to` (init_kvm_page_walk()), so
      the MMU initialisers no longer write them; the old layout has no `to`, its MMU
      initialisers are where the walker fields are written;
    - one of two identical writes close together ([[walker_init]] dedupe_id): two old
      objects became the same walker and the second write was dropped; on the old layout they
      are two objects again."""
    inits = rules.restructure.get("walker_init", [])
    if not inits:
        return {}
    rule = inits[0]
    fields = [re.escape(f.name) for f in rules.mmu_fields.values() if f.moves_to_walker]
    write = re.compile(rf"(?:->|\.){re.escape(walker_member)}->(?:{'|'.join(fields)})\b[\w.\[\]]*\s*=[^=]")
    out: dict[int, str] = {}
    for i, (tag, text, _n) in enumerate(lines):
        if tag != "-" or not _ASSIGN.match(text):
            continue
        # Only a line the patch deletes outright: one it replaces is the patch's own change.
        lo = hi = i
        while lo > 0 and lines[lo - 1][0] in "-+":
            lo -= 1
        while hi + 1 < len(lines) and lines[hi + 1][0] in "-+":
            hi += 1
        if any(g == "+" for g, _t, _ in lines[lo:hi + 1]):
            continue
        if write.search(text):
            out[i] = rule.id
            continue
        # Only a write to one of the vCPU's walkers: a fix that removes a duplicated statement
        # of any other kind is a change.
        near = [t for g, t, _ in lines[max(i - 3, 0):i + 4] if g == " "]
        if rule.params.get("dedupe_id") and text in near and re.match(
                rf"\s*vcpu->arch\.(?:{'|'.join(names.as_dict().values())})\.", text):
            out[i] = rule.params["dedupe_id"]
    return out


def _header(lines: list[str], at: int) -> str | None:
    """The text of a function header that starts at lines[at], to its closing parenthesis."""
    text = ""
    for x in lines[at:at + 8]:
        text += x + "\n"
        if text.count("(") and text.count("(") == text.count(")"):
            return text
    return None


_HEAD = re.compile(r"^(?!(?:if|for|while|switch|return)\b)[A-Za-z_][\w\s\*]*?\b(?:FNAME\((\w+)\)|(\w+))\s*\(")


def _params(header: str) -> list[str]:
    """The parameter types of a header (names dropped, spacing normalised)."""
    m = _HEAD.match(header)
    inner = header[m.end():header.rindex(")")]
    out = []
    depth, cur = 0, ""
    for c in inner + ",":
        if c == "," and depth == 0:
            p = " ".join(cur.replace("*", " * ").split())
            out.append(re.sub(r"\s*\b\w+$", "", p) if len(p.split()) > 1 else p)
            cur = ""
            continue
        depth += (c == "(") - (c == ")")
        cur += c
    return [] if out == ["void"] or out == [""] else out


def _definition(target: Target, rel: str, name: str, fname: bool) -> tuple[str, int, str] | None:
    """(file, 0-based line, header text) of the target's definition of `name`, the hunk's file first."""
    spelled = f"FNAME[(]{re.escape(name)}[)]" if fname else re.escape(name)
    pat = re.compile(rf"^[A-Za-z_][\w\s\*]*?\b{spelled}\s*\(", re.M)
    files = [rel] + sorted(f for f in target.files if f != rel and (not fname or f.endswith(".h")))
    for f in files:
        text = target.text(f) or ""
        if name not in text:
            continue
        for m in pat.finditer(text):
            line = text.count("\n", 0, m.start())
            head = _header(target.lines(f), line)
            if head and not head.rstrip().endswith(";") and "{" in "\n".join(target.lines(f)[line:line + 10]):
                return f, line, head
    return None


def _callers(target: Target, name: str, skip: tuple[str, int, int]) -> list[str]:
    """file:line of calls of `name` in the target, outside the lines the hunk replaces."""
    out = []
    pat = re.compile(rf"(?<![\w>.]){re.escape(name)}\)?\s*\(")
    for f in sorted(target.files):
        data = target.files[f]
        if name.encode() not in data:
            continue
        for i, x in enumerate(target.lines(f)):
            if x[:1].isspace() and pat.search(x) and not (f == skip[0] and skip[1] <= i < skip[2]):
                out.append(f"{f}:{i + 1}")
    return out


def _rule_of(old: list[str], new: list[str], rules) -> list[str]:
    """restructure.toml rules that change parameters this way (they name no function)."""
    t = rules.types
    walkers = {f"struct {t['walker']} *", f"struct {t['mmu']} *"}
    formats = {f"struct {t['format']} *", f"struct {t['old_format']} *"}
    out = []
    if len(new) < len(old) and any(p in walkers for p in old) and rules.restructure.get("const_walker_param"):
        out.append(rules.restructure["const_walker_param"][0].id)
    if len(new) == len(old) and any(a in walkers and b in formats for a, b in zip(old, new)) \
            and rules.restructure.get("format_param"):
        out.append(rules.restructure["format_param"][0].id)
    return out


def signature_change(new_lines: list[str], added: set[int], target: Target, frel: str, span: tuple[int, int],
                     rules) -> tuple[str, list[str]] | None:
    """A function definition the ported lines give other parameters than the target's, while the
    target's callers pass the target's: (reason, restructure rule ids).  The refactor narrowed,
    dropped and retyped parameters ([[const_walker_param]], [[format_param]], [[walker_init]]
    then_mmu...); on the old tree every caller still passes what the old function takes."""
    for i, x in enumerate(new_lines):
        m = _HEAD.match(x)
        if not m or x.rstrip().endswith(";"):
            continue
        head = _header(new_lines, i)
        if head is None:    # a header the hunk leaves as it is has the target's parameters
            continue
        name = m.group(1) or m.group(2)
        found = _definition(target, frel, name, bool(m.group(1)))
        if found is None:
            continue
        f, line, theirs = found
        mine_p, theirs_p = _params(head), _params(theirs)
        if mine_p == theirs_p:
            continue
        shown = f"FNAME({name})" if m.group(1) else name
        callers = _callers(target, name, (frel, *span))
        if not callers:
            continue
        reason = (f"the patch changes the parameters of {shown}(): the target's ({f}:{line + 1}) are "
                  f"({', '.join(theirs_p)}), the patch's ({', '.join(mine_p)}), and the target's callers "
                  f"({', '.join(callers[:3])}{', ...' if len(callers) > 3 else ''}) pass the target's: "
                  "keep the target's parameters, or port every caller with it")
        return reason, _rule_of(theirs_p, mine_p, rules)
    return None



def _function(hunk) -> set[str]:
    """The function the hunk changes: the header its first change is (both names, where the
    patch renames it), else the one git names it by (the nearest header above, or `@@`)."""
    first = next((i for i, (g, _t, _) in enumerate(hunk.lines) if g != " "), 0)
    names = set()
    for g, t, _ in hunk.lines[first:]:
        if g == " ":
            break
        m = _HEAD.match(t)
        if m and not t.rstrip().endswith(";"):
            names.add(m.group(1) or m.group(2))
    if not names:
        m = _HEAD.match(heading(hunk))
        if m:
            names.add(m.group(1) or m.group(2))
    return names


def _defines(hunk, tag: str) -> set[str]:
    return {m.group(1) or m.group(2) for g, t, _ in hunk.lines if g == tag
            for m in [_HEAD.match(t)] if m and not t.rstrip().endswith(";")}


def dependent_conflicts(pairs: list, target: Target) -> None:
    """Hunks that cannot go without a conflicting hunk of the same patch become conflicts too:
    a change to a function whose other hunk conflicts (half a restructured function is
    neither layout's), a use of a function the patch defines only in a conflicting hunk, a
    removal of a function the target still calls where the conflicting hunk would have
    removed the call.  `pairs`: (HunkResult, Hunk, file) of one patch, in order.  First, a
    hunk that only declares locals whose uses the port took away (unused_locals)."""
    unused_locals(pairs, target)
    changed = True
    while changed:
        changed = False
        bad = [(h, hk, f) for h, hk, f in pairs if h.status == "conflict"]
        if not bad:
            return
        spans = [(h.target_file, h.target_start, h.target_start + h.target_len) for h, _hk, _f in pairs
                 if h.status != "conflict" and h.target_start is not None]
        for h, hunk, rel in pairs:
            # A hunk that leaves the target's lines as they are cannot break anything.
            if h.status == "conflict" or h.new_lines == target.lines(h.target_file)[
                    h.target_start:h.target_start + h.target_len]:
                continue
            why = None
            mine = _function(hunk)
            for b, bh, brel in bad:
                where = f"{brel}:{bh.old_start}"
                if brel == rel and mine & _function(bh):
                    name = sorted(mine & _function(bh))[0]
                    why = (f"the patch's hunk at {where}, in the same function {name}(), conflicts: "
                           "the function's hunks go together")
                    break
                uses = set(_IDENT.findall("\n".join(t for g, t, _ in hunk.lines if g == "+")))
                needed = sorted(n for n in _defines(bh, "+") & uses if not target.definitions(n))
                if needed:
                    why = (f"uses {needed[0]}(), which the patch defines in its hunk at {where}, "
                           "which conflicts")
                    break
            if why is None:
                for name in sorted(_defines(hunk, "-") - _defines(hunk, "+")):
                    still = [c for c in _callers(target, name, (h.target_file, h.target_start,
                                                                h.target_start + h.target_len))
                             if not any(c.rsplit(":", 1)[0] == f and a <= int(c.rsplit(":", 1)[1]) - 1 < e
                                        for f, a, e in spans)]
                    if still:
                        why = f"removes {name}(), which the target still calls at {', '.join(still[:3])}"
                        break
            if why:
                h.status, h.reason, changed = "conflict", why, True


_LOCAL = re.compile(r"^\s*(?:const\s+)?(?:struct\s+|union\s+|unsigned\s+)?\w+[\s*]+(\w+)\s*(?:=[^;]*)?;\s*$")


def unused_locals(pairs: list, target: Target) -> None:
    """A hunk that only adds local declarations no line of the function uses once ported: its
    uses were in hunks the port restated as the target's own code ([[spte_permissions]]'s
    `{mmu}` local, declared for a spte_permission_fault() call that is is_access_allowed() on
    the old layout; `pairs` hold the hunks as restated).  Where hunks of the same function
    ported as nothing under a rule, the declaration is that rule's too: nothing; otherwise it
    is a conflict, never a local the target would not use."""
    for h, hunk, rel in pairs:
        if h.status == "conflict" or h.target_start is None:
            continue
        tl = target.lines(h.target_file)
        before = tl[h.target_start:h.target_start + h.target_len]
        added = [t for g, t, _ in hunk.lines if g == "+" and t.strip()]
        if h.new_lines == before or not added or any(g == "-" for g, _t, _ in hunk.lines):
            continue
        names = [m.group(1) if m else None for t in added for m in [_LOCAL.match(t)]]
        if None in names:
            continue
        word = re.compile(rf"(?<![\w>.])(?:{'|'.join(map(re.escape, names))})(?!\w)")
        mine = _function(hunk)
        same = [(u, uh) for u, uh, urel in pairs if urel == rel and uh is not hunk and _function(uh) & mine]
        lo, hi = function_span(tl, h.target_start)
        if any(word.search(t) for _u, uh in same for g, t, _ in uh.lines if g != "-") \
                or any(word.search(t) for t in tl[lo:hi + 1]) \
                or sum(bool(word.search(t)) for t in h.new_lines) > len(names):
            continue
        restated = [r for u, _uh in same if u.status != "conflict" and u.rules
                    and u.new_lines == target.lines(u.target_file)[u.target_start:u.target_start + u.target_len]
                    for r in u.rules]
        if restated:
            h.new_lines, h.status = before, "translated"
            h.rules = list(dict.fromkeys(h.rules + restated))
        else:
            h.status, h.reason = "conflict", (f"declares {', '.join(names)}, which no line of the function uses "
                                              "once ported: the target would not use it")


def change_runs(lines: list[tuple[str, str, int]]):
    """(start, end, removed texts, added texts) of each run of changed lines of a hunk."""
    i = 0
    while i < len(lines):
        if lines[i][0] == " ":
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j][0] != " ":
            j += 1
        yield (i, j, [t for g, t, _ in lines[i:j] if g == "-"],
               [t for g, t, _ in lines[i:j] if g == "+"])
        i = j


def restated_guards(lines: list[tuple[str, str, int]], rules, names) -> tuple[set[int], str | None]:
    """restructure.toml [[nested_guard]] inverted: a run of removed lines testing `test(vcpu)`
    only to call the nested `hook`, replaced by the same code calling `helper` with the
    {walker} walker (which makes the test itself), is the same code on an old tree: the
    indices (into `lines`) of the run's lines, which leave the target's lines as they are."""
    out: set[int] = set()
    rule_id = None
    for r in rules.restructure.get("nested_guard", []):
        p = r.params
        walker = names.fill("{" + p["walker"] + "}")
        for i, j, removed, added in change_runs(lines):
            minus, plus = "".join(removed), "".join(added)
            fwd = re.sub(rf"\s*&&\s*{re.escape(p['test'])}\(vcpu\)", "", minus)
            fwd = re.sub(rf"[\w.>\-]*->{re.escape(p['hook'])}\(\s*vcpu,",
                         f"{p['helper']}(vcpu, &vcpu->arch.{walker},", fwd)
            same = re.sub(r"\s+", "", fwd) == re.sub(r"\s+", "", plus)
            if p["hook"] in minus and p["helper"] in plus and same:
                out |= set(range(i, j))
                rule_id = r.id
    return out, rule_id


def introduced(lines: list[tuple[str, str, int]], target: Target, rules) -> str | None:
    """A hunk that defines a function the refactor introduced (restructure.toml: `inner`, `to`,
    `new`, `bitmask`, `helper`), which the old target lacks: it ports the restructuring itself.
    The reason names the rule and where the target has what the function replaced."""
    for kind, entries in rules.restructure.items():
        for r in entries:
            p = r.params
            pairs = [(p.get("inner"), p.get("function")), (p.get("to"), p.get("from")),
                     (p.get("new"), p.get("old")), (p.get("bitmask"), p.get("after")),
                     (p.get("helper"), p.get("hook") or p.get("field"))]
            for new, old in pairs:
                if not isinstance(new, str) or target.definitions(new):
                    continue
                added = [t for g, t, _ in lines if g == "+"]
                # A definition, not a prototype (`to` declared before its first caller).
                if any((m := _HEAD.match(t)) and (m.group(1) or m.group(2)) == new
                       and not (_header(added, k) or t).rstrip().endswith(";") for k, t in enumerate(added)):
                    where = ([f"{f}:{line}" for f, line, _a in target.definitions(old)]
                             if isinstance(old, str) else [])
                    return (f"the patch defines {new}(), which the refactor introduced (restructure.toml "
                            f"{r.id}); the target has "
                            + (f"{old}() instead ({', '.join(where[:2])})" if where else "no such function")
                            + ": keep the target's code, or port the restructuring first")
    return None


_DEF_HEAD = re.compile(r"^(?:static\s+)?[A-Za-z_][\w\s\*]*?\b(\w+)\(([^()]*)\)\s*\n\{", re.M)


def constant_params(fp, rules) -> dict[str, tuple[int, str]]:
    """restructure.toml [[const_walker_param]] as a patch shows it: functions whose walker (or
    MMU) parameter the patch drops, naming a vCPU walker's `member` instead: name -> (index of
    the parameter, its name)."""
    entries = rules.restructure.get("const_walker_param", [])
    if not entries:
        return {}
    member = entries[0].params["member"]
    t = rules.types
    out = {}
    for h in fp.hunks:
        pre = "\n".join(x for g, x, _ in h.lines if g != "+")
        post = "\n".join(x for g, x, _ in h.lines if g != "-")
        if not re.search(rf"&vcpu->arch\.\w+\.{re.escape(member)}\b", post):
            continue
        before = {m.group(1): [p.strip() for p in m.group(2).split(",")] for m in _DEF_HEAD.finditer(pre)}
        for m in _DEF_HEAD.finditer(post):
            old, new = before.get(m.group(1)), [p.strip() for p in m.group(2).split(",")]
            if old is None or len(old) != len(new) + 1:
                continue
            for k, p in enumerate(old):
                pm = re.fullmatch(rf"struct\s+(?:{t['walker']}|{t['mmu']})\s*\*\s*(\w+)", p)
                if pm and old[:k] + old[k + 1:] == new:
                    out[m.group(1)] = (k, pm.group(1))
    return out


def restated_constant_params(lines: list[tuple[str, str, int]], params: dict[str, tuple[int, str]],
                             rules) -> tuple[set[int], str | None]:
    """[[const_walker_param]] inverted: runs of changed lines that only drop such a parameter
    (from the definition, with its uses named by the vCPU walker's member, or from a call):
    the indices (into `lines`) of the runs, which leave the target's lines as they are."""
    if not params:
        return set(), None
    member = rules.restructure["const_walker_param"][0].params["member"]
    names = [member] + [f.name for f in rules.mmu_fields.values() if f.moves_to_walker and f.path == member]
    out: set[int] = set()
    for i, j, removed, added in change_runs(lines):
        minus, plus = "\n".join(removed), "\n".join(added)
        const = re.search(rf"&vcpu->arch\.\w+\.{re.escape(member)}\b", plus)
        fwd = minus
        for name, (k, var) in params.items():
            fwd = re.sub(rf"struct\s+\w+\s*\*\s*{re.escape(var)}\s*,\s*", "", fwd)
            if const:       # the member, or the old field that became it (guest_rsvd_check)
                fwd = re.sub(rf"&{re.escape(var)}(?:->\w+)*->(?:{'|'.join(map(re.escape, names))})\b",
                             const.group(0), fwd)
            fwd = drop_call_argument(fwd, name, k)
        if minus and plus and fwd != minus and re.sub(r"\s+", "", fwd) == re.sub(r"\s+", "", plus):
            out |= set(range(i, j))
    return out, rules.restructure["const_walker_param"][0].id if out else None


def format_params(fp, rules) -> dict[str, tuple[int, str, str]]:
    """restructure.toml [[format_param]] as a patch shows it: functions whose walker (or MMU)
    parameter the patch retypes to the page format it only passed on: name -> (index, the old
    parameter's name, the new one's)."""
    entries = rules.restructure.get("format_param", [])
    if not entries:
        return {}
    t = rules.types
    fmt_type = t[entries[0].params["type_key"]]
    out = {}
    head = re.compile(r"^(?:static\s+)?[A-Za-z_][\w\s\*]*?\b(?:FNAME\((\w+)\)|(\w+))\(([^()]*)\)\s*\n\{", re.M)
    for h in fp.hunks:
        pre = "\n".join(x for g, x, _ in h.lines if g != "+")
        post = "\n".join(x for g, x, _ in h.lines if g != "-")
        before = {(m.group(1) or m.group(2)): [p.strip() for p in m.group(3).split(",")] for m in head.finditer(pre)}
        for m in head.finditer(post):
            name = m.group(1) or m.group(2)
            old, new = before.get(name), [p.strip() for p in m.group(3).split(",")]
            if old is None or len(old) != len(new):
                continue
            diff = [k for k, (a, b) in enumerate(zip(old, new)) if a != b]
            if len(diff) != 1:
                continue
            k = diff[0]
            a = re.fullmatch(rf"struct\s+(?:{t['walker']}|{t['mmu']})\s*\*\s*(\w+)", old[k])
            b = re.fullmatch(rf"struct\s+{fmt_type}\s*\*\s*(\w+)", new[k])
            if a and b:
                out[name] = (k, a.group(1), b.group(1))
    return out


def restated_format_params(lines: list[tuple[str, str, int]], params: dict[str, tuple[int, str, str]],
                           rules, walker_member: str) -> tuple[set[int], str | None]:
    """[[format_param]] inverted in the definition: runs of changed lines that only retype the
    parameter to the format and write its uses (`&w->fmt`, through a local that names the
    parameter's walker) as the format parameter: the old tree's function as it is."""
    if not params:
        return set(), None
    entry = rules.restructure["format_param"][0]
    member = entry.params["member"]
    fmt_type = rules.types[entry.params["type_key"]]
    names = [member] + [f.name for f in rules.mmu_fields.values() if f.moves_to_walker and f.path == member]
    out: set[int] = set()
    for i, j, removed, added in change_runs(lines):
        minus, plus = "\n".join(removed), "\n".join(added)
        fwd = minus
        for _name, (_k, old, new) in params.items():
            fwd = re.sub(rf"struct\s+\w+\s*\*\s*{re.escape(old)}\b", f"struct {fmt_type} *{new}", fwd)
            via = re.findall(rf"struct\s+\w+\s*\*\s*(\w+)\s*=\s*{re.escape(old)}->{re.escape(walker_member)};", fwd)
            fwd = re.sub(rf"[^\n]*struct\s+\w+\s*\*\s*\w+\s*=\s*{re.escape(old)}->{re.escape(walker_member)};\n?",
                         "", fwd)
            objs = "|".join(map(re.escape, [old, f"{old}->{walker_member}"] + via))
            fwd = re.sub(rf"&(?:{objs})->(?:{'|'.join(map(re.escape, names))})\b", new, fwd)
        if minus and plus and fwd != minus and re.sub(r"\s+", "", fwd) == re.sub(r"\s+", "", plus):
            out |= set(range(i, j))
    return out, entry.id if out else None


def restated_restructurings(hunk, vocab, target: Target, parameterized: dict | None = None) -> dict[int, str]:
    """Changed lines (index into hunk.lines) of a hunk that only makes one of restructure.toml's
    restructurings whose old counterpart is the target's own code, with the rule: the hunk's
    removed lines stay and its added ones are not written.  [[walker_param]] in the
    function's definition (walker_param_inverse), [[walker_init]] in the MMU initialisers
    and their callers (walker_init_inverse), [[parameterize]] (`parameterized`: the file
    patch's hunks that parameterize_inverse found).  `vocab`: the patch's."""
    whole = (parameterized or {}).get(hunk.old_start)
    if whole and whole[0] == hunk.lines:
        return dict(whole[1])
    # A hunk whose walker locals were renamed for pairing (old_walkers.own_mmu_hunk) is
    # replayed as the patch wrote it: the indices are the same.
    lines = getattr(hunk, "as_written", None) or hunk.lines
    return (restated_walker_param(lines, vocab.rules, vocab.names)
            or restated_walker_init(lines, hunk.section, vocab, target))
