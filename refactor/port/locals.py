"""The locals of a ported hunk: which function it is in, the layout-typed variables there,
and the locals that only name a walker or a page format.

Locals are named per function and the two layouts name them differently (`mmu` and
`w`, `rsvd_check` and `fmt`); a local that only names a walker (`struct kvm_pagewalk *w =
mmu->w;`) has no counterpart in an old tree.  These helpers find the function around a
target line and its typed variables, learn the renames a patch's own replaced lines show,
and inline walker-naming locals a backport adds.
"""
from __future__ import annotations

import re

from refactor.frontend.patch import Hunk
from refactor.port.align import Learner
from refactor.port.lexicon import Vocabulary, declared_types
from refactor.port.old_walkers import HOISTED, hoisted, inline, inline_removed_locals  # noqa: F401 (re-exported)
from refactor.port.outside_locals import outside_renames  # noqa: F401 (re-exported)

_IDENT = re.compile(r"[A-Za-z_]\w*")


def function_span(tlines: list[str], at: int) -> tuple[int, int]:
    """First and last line of the function around line `at` (by the kernel's layout)."""
    def head(i: int) -> bool:
        return (tlines[i][:1].isalpha() or tlines[i][:1] == "_") and "(" in tlines[i]

    # A hunk that starts at (or just above) a function's first line is in that function,
    # not in the one before it.
    start = at
    for k in range(at, min(at + 4, len(tlines))):
        if head(k):
            start = k + 1
            break
    while start > 0 and not head(start - 1):
        start -= 1
    end = max(at, start)
    while end < len(tlines) and tlines[end] != "}":
        end += 1
    return max(start - 1, 0), end


def target_types(tlines: list[str], at: int, vocab: Vocabulary) -> dict[str, str]:
    """Layout-typed variables of the target function around `at`.

    Declarations say walker or MMU; in an old-layout function, where every
    context is a struct kvm_mmu, the field a variable reaches tells which one
    it is where that field exists in one role only (shadow_zero_check: the
    builder's; guest_rsvd_check: the walker's).
    """
    lo, hi = function_span(tlines, at)
    body = tlines[lo:hi + 1]
    types = declared_types(body, vocab)
    rules = vocab.rules
    for f in rules.mmu_fields.values():
        if f.path == f.name:
            continue
        for m in re.finditer(rf"(\w+)->{re.escape(f.name)}(?!\w)", "\n".join(body)):
            types[m.group(1)] = "walker" if f.moves_to_walker else "mmu"
    return types

DECLARES = re.compile(r"^\s*(?:const\s+)?(?:struct\s+|unsigned\s+)?\w+[\s*]+(\w+)\s*(?:=|;|\[)")


def _replaced_runs(hunk: Hunk, pre_t, pair_of: dict[int, int]):
    """Runs of removed lines followed by added ones: ([target line of each removed line, None
    where the layout drops it], [(index in hunk.lines, text) of each added line]), and the
    patch's text of the removed line paired with each target line."""
    runs: list[tuple[list[int | None], list[tuple[int, str]]]] = []
    minus: list[int | None] = []
    removed_text: dict[int, str] = {}
    plus: list[tuple[int, str]] = []
    pi = k = 0
    for idx, (tag, text, _) in enumerate(hunk.lines + [(" ", "", 0)]):
        if tag == "-":
            if plus:
                runs.append((minus, plus))
                minus, plus = [], []
            p = pre_t[pi]
            pi += 1
            if p.dropped:
                minus.append(None)
                continue
            minus.append(pair_of.get(k))
            if pair_of.get(k) is not None:
                removed_text[pair_of[k]] = text
            k += 1
        elif tag == "+":
            plus.append((idx, text))
        else:
            if minus or plus:
                runs.append((minus, plus))
                minus, plus = [], []
            if tag == " " and pi < len(pre_t):
                if not pre_t[pi].dropped:
                    k += 1
                pi += 1
    return runs, removed_text


def learn_replaced_locals(hunk: Hunk, pre_t, pair_of: dict[int, int], tlines: list[str], learner: Learner,
                          tr, types: dict[str, str]) -> None:
    """Locals renamed by the layout change in the patch's own replaced lines: a run of
    removed lines followed by as many added ones pairs 1:1, and where an added line differs
    from the target's counterpart of the removed one only by a local's name (`w` for `mmu`,
    `gva_walk` for `mmu`), the target's name is kept.  This is how a patch that moved code to
    the other layout ports back onto it: as nothing."""
    runs, _texts = _replaced_runs(hunk, pre_t, pair_of)
    paired = [(j, t) for m, ps in runs if len(m) == len(ps) for j, (_i, t) in zip(m, ps) if j is not None]
    # Names the patch declares in lines of its own (not replacing a line) are new locals.
    fresh = {d.group(1) for m, ps in runs if len(m) != len(ps) for _i, t in ps for d in [DECLARES.match(t)] if d}
    for j, text in paired:
        learner.learn_rename(tr(text, types).text, tlines[j], fresh)


INIT = re.compile(r"^\s*(?:const\s+)?struct\s+\w+\s*\*\s*(\w+)\s*=\s*([^;]+);\s*$")


def pointer_inits(lines: list[str]) -> dict[str, str]:
    """Pointer locals declared with their value and never assigned again: name -> value."""
    found = {m.group(1): m.group(2).strip() for x in lines for m in [INIT.match(x)] if m}
    text = "\n".join(lines)
    return {v: init for v, init in found.items()
            if not re.search(rf"(?<![\w>.&*]){re.escape(v)}\s*=[^=]", text)}


def inits_around(tlines: list[str], j: int) -> dict[str, str]:
    """pointer_inits() of the function around line `j` (of a hunk that spans two)."""
    lo, hi = function_span(tlines, j)
    return pointer_inits(tlines[lo:hi + 1])


def through_locals(line: str, inits: dict[str, str]) -> str:
    """`line` with pointer locals declared with their value written as that value
    (`g_context->sync_spte` is `vcpu->arch.nested_mmu.sync_spte` after
    `struct kvm_mmu *g_context = &vcpu->arch.nested_mmu;`)."""
    def one(m: re.Match) -> str:
        init, arrow = inits[m.group(1)], m.group(2)
        if arrow and init.startswith("&"):
            return init[1:] + "."
        return init + (arrow or "")
    if not inits:
        return line
    pat = rf"(?<![\w>.])({'|'.join(map(re.escape, inits))})(?!\w)(\s*->)?"
    return re.sub(pat, one, line)


def _objects(chain: str, vocab: Vocabulary, inits: dict[str, str], depth: int = 0) -> set[str]:
    """What an old-layout expression chain may denote, as the walker a mappings.toml base
    makes of it (`&vcpu->arch.root_mmu`, `vcpu->arch.walk_mmu` and `&vcpu->arch.nested_mmu`
    all denote the {gva} walker), members reached through it following; a pointer local
    declared with its value stands for that value."""
    amp = chain.startswith("&")
    body = chain[1:] if amp else chain
    out = {chain}
    head = re.match(r"[A-Za-z_]\w*", body)
    if head and head.group(0) in inits and depth < 3:
        init, rest = inits[head.group(0)], body[head.end():]
        if not rest:
            value = init
        elif init.startswith("&") and rest.startswith("->"):
            value = init[1:] + "." + rest[2:]
        else:
            value = init + rest
        out |= _objects(("&" if amp else "") + re.sub(r"\s+", "", value), vocab, inits, depth + 1)
    for base in vocab.member_bases():
        m = re.match(rf"{re.escape(base.old)}(?:(->|\.)(.*))?$", body)
        if not m:
            continue
        member = base.old.rsplit(".", 1)[-1]
        vm = vocab.rules.vcpu_old.get(member)
        pointer = vm is not None and vm.kind in ("walker_pointer", "mmu_pointer")
        if m.group(2) is None and amp == pointer:
            continue            # an MMU object, not a pointer to it
        walkers = [base.new] + ([base.known_guest_mmu] if getattr(base, "known_guest_mmu", None) else [])
        for new in walkers:
            new = vocab.names.fill(new)
            if new.endswith("->w") or "{" in new:
                continue
            out.add(f"W:{new}" + (f".{m.group(2)}" if m.group(2) is not None else ""))
    return out


def same_object_pairs(hunk: Hunk, pre_t, pair_of: dict[int, int], tlines: list[str], learner: Learner,
                      tr, types: dict[str, str], vocab: Vocabulary, target_inits: dict[str, str],
                      patch_inits: dict[str, str], format_args: dict | None = None) -> dict[int, int]:
    """Added lines that only restate, in the new layout, the line they replace: the patch's
    removed line is the target's own (untouched by the translation), the added line is new
    layout, and, translated back, it differs from the target's line only in expressions that
    denote the same walker under mappings.toml's bases (`vcpu->arch.gva_walk.x` for
    `vcpu->arch.walk_mmu->x`, through locals declared with their value on either side).
    Index of each such added line -> the target line that stays."""
    from refactor.port.align import chains

    out: dict[int, int] = {}
    patch_inits = {v: tr(i, types).text for v, i in patch_inits.items()}
    removed = [t for tag, t, _ in hunk.lines if tag == "-"]
    params = {}
    for r in vocab.rules.restructure.get("macro_param", []):
        params.update({r.params["name"]: set(r.params["from"])})

    # mappings.toml [[calls]]: the call the new layout makes where the old one made another.
    calls = {(c.new, c.function) for c in vocab.rules.calls}
    # restructure.toml [[walker_param]] inverted: the function takes the walker of the MMU its
    # callers passed; an old caller passes the MMU, whichever walker the new one names.
    walker_args = {(f, r.params["param"]) for r in vocab.rules.restructure.get("walker_param", [])
                   for f in ([r.params["function"]] if isinstance(r.params["function"], str)
                             else r.params["function"])}

    def same(x: str, y: str, inits: dict[str, str], line: str) -> bool:
        if x == y or (x, y) in calls or _objects(x, vocab, inits) & _objects(y, vocab, target_inits):
            return True
        if any(argument(line, f, k) == x and mmu_argument[0].get((f, k)) for f, k in walker_args):
            return True
        # restructure.toml [[format_param]] inverted: the function takes the format of the
        # walker (or MMU) its old callers passed.
        for f, (k, _o, _n) in (format_args or {}).items():
            if argument(line, f, k) != x or not removed_arg[0].get(f) or removed_arg[0][f][0] != y:
                continue
            # The format of the walker or MMU the old caller passed: named through a local the
            # patch set to it, or through the walker the patch put in its place.
            v = re.match(r"&(\w+)->", x)
            if {x, through_locals(x, inits)} & formats_of(y) or (v and types.get(v.group(1)) == "walker"
                                                                and removed_arg[0][f][1]):
                return True
        # restructure.toml [[macro_param]] inverted: the macro's walker parameter had its old name.
        return line.lstrip().startswith("#") and y in params.get(x, ())

    mmu_argument: list[dict] = [{}]
    removed_arg: list[dict] = [{}]
    fmt_entries = vocab.rules.restructure.get("format_param", [])
    fmt_member = fmt_entries[0].params["member"] if fmt_entries else None
    fmt_names = [f.name for f in vocab.rules.mmu_fields.values() if f.moves_to_walker and f.path == fmt_member]

    def formats_of(y: str) -> set[str]:
        return {f"&{y}->{n}" for n in fmt_names} | {f"&{y}->{vocab.walker_member}->{fmt_member}"}

    runs, removed_text = _replaced_runs(hunk, pre_t, pair_of)
    for minus, plus in runs:
        joined = []
        if len(minus) == 1 and len(plus) > 1 and statement(t for _i, t in plus):
            # One statement the patch wrapped over several lines (a longer argument): compare
            # it whole; its continuation lines go with it (-1).
            joined = [(i, -1) for i, _t in plus[1:]]
            plus = [(plus[0][0], " ".join(t.strip() if k else t for k, (_i, t) in enumerate(plus)))]
        if len(minus) != len(plus):
            continue
        spacing = []
        for j, (idx, text) in zip(minus, plus):
            if j is None:
                continue
            # Only where the patch's own removed line passed an MMU there (a fix that passes
            # another walker than the one it removes is a change).
            mmu_argument[0] = {(f, k): _passes_mmu(argument(removed_text[j], f, k), types, vocab)
                               for f, k in walker_args}
            # A call of a format-param function whose removed line passed a walker or an MMU:
            # (that argument as the target has it, whether it was one).
            removed_arg[0] = {f: (learner.apply(tr(a, types).text) if a else None, _passes_mmu(a, {}, vocab))
                              for f, (k, _o, _n) in (format_args or {}).items()
                              for a in [argument(removed_text[j], f, k)]
                              if a and not re.match(r"&.*->\w+$", a)}
            back = unrestated(tr(text, types).text, vocab)
            if learner.apply(back) == learner.apply(tr(removed_text[j], types).text):
                out[idx] = j        # the same line as the one it replaces, in the target's layout
                continue
            # What the added line restates: the target's line where the patch removes it as the
            # target has it, else the removed line as translated.
            ref = tlines[j] if tlines[j] in removed else learner.apply(tr(removed_text[j], types).text)
            for mine, inits in ((back, patch_inits), (learner.apply(back), {**target_inits, **patch_inits})):
                a, b = chains(mine), chains(ref)
                if a == b:
                    # Only the spacing differs: the patch re-indented a line it restated
                    # (or a continuation line under one).
                    if mine != tlines[j] and ref == tlines[j]:
                        spacing.append((idx, j))
                    break
                if len(a) == len(b) and all(same(x, y, inits, mine) or same(x, y, inits, ref)
                                            for x, y in zip(a, b)):
                    out[idx] = j
                    out.update(joined)
                    break
        if any(idx in out for _j, (idx, _t) in zip(minus, plus)) or any(
                tr(t, types).text != t for _i, t in plus):
            out.update(spacing)
    return out


def _passes_mmu(arg: str | None, types: dict[str, str], vocab: Vocabulary) -> bool:
    """Whether a patch's argument is an MMU (an MMU local, a vCPU member), not a walker."""
    walkers = {f"&vcpu->arch.{w}" for w in vocab.names.as_dict().values()}
    if not arg or arg in walkers or arg.endswith(f"->{vocab.walker_member}"):
        return False
    head = re.match(r"&?([A-Za-z_]\w*)", arg)
    return head is not None and types.get(head.group(1)) != "walker"


def argument(line: str, func: str, index: int) -> str | None:
    """The `index`th argument (squashed) of the call of `func` in `line`, if the line has one."""
    m = re.search(rf"(?<![\w>.]){re.escape(func)}\)?\s*\(", line)     # FNAME(func)(...) too
    if not m:
        return None
    depth, cur, args = 0, "", []
    for c in line[m.end():]:
        if c in "([":
            depth += 1
        elif c in ")]":
            if depth == 0:
                args.append(cur)
                break
            depth -= 1
        elif c == "," and depth == 0:
            args.append(cur)
            cur = ""
            continue
        cur += c
    return re.sub(r"\s+", "", args[index]) if index < len(args) else None


def statement(lines) -> bool:
    """Lines that are one statement: only the last ends it."""
    lines = [t.rstrip() for t in lines]
    return lines[-1].endswith(";") and not any(t.endswith((";", "{", "}")) for t in lines[:-1])


def unrestated(line: str, vocab: Vocabulary) -> str:
    """`line` with the expressions mappings.toml [[exprs]] restates on the new layout written
    as the old layout wrote them (`vcpu->arch.mmu == &vcpu->arch.guest_mmu` was
    `vcpu->arch.walk_mmu == &vcpu->arch.nested_mmu`): both are valid on an old tree, and a
    patch that only restated one is no change there."""
    for e in vocab.rules.exprs:
        new = vocab.names.fill(e.new)
        if e.old and new and not re.search(r"\b(?:EXPR|FIELD)\b|[{}]", e.old + new) and new in line:
            line = line.replace(new, e.old)
    return line


def inline_added_locals(hunk: Hunk, vocab: Vocabulary,
                        elsewhere: list[tuple[str, str]] = ()) -> tuple[Hunk, bool]:
    """A backported hunk that adds a local only naming a walker or a page format
    (`struct kvm_pagewalk *w = mmu->w;`) where it adds no removed line's replacement: the old
    layout has no such object (the MMU is its own walker), so its uses are written through
    what it was initialised to and the declaration (with the blank line after it) goes.
    `elsewhere`: such locals another hunk of the same function adds (the declaration at the
    top, the uses further down); they are inlined where this hunk does not declare the name."""
    gone, drop = [], set()
    lines = inline_removed_locals(hunk.lines, vocab)
    pre_inlined = lines != hunk.lines
    for i, (tag, text, _n) in enumerate(lines):
        h = hoisted(text, vocab) if tag == "+" else None
        if h is None or any(re.search(rf"(?<![\w>.]){re.escape(h[0])}(?!\w)", t) for g, t, _ in lines if g != "+"):
            continue        # the hunk's own code has the local already: not a new one
        k = i
        while k > 0 and lines[k - 1][0] == "+":
            k -= 1
        removed = []
        while k > 0 and lines[k - 1][0] == "-":
            k -= 1
            removed.append(lines[k][1])
        t = vocab.rules.types
        group = {t["walker"]: "pointer", t["mmu"]: "pointer", t["format"]: "format", t["old_format"]: "format"}
        kind = group.get(HOISTED.match(text).group(1))
        # A removed declaration of its kind or name makes it a rename, not a new local; unless
        # that one only named the walker of an MMU local the hunk declares too (`struct
        # kvm_pagewalk *w = mmu->w;`): the old tree has the MMU local only, and the MMU is its
        # own walker there (load_pdptrs() on 6.1).
        # A removed declaration the added lines declare again (`mmu` for `mmu`) is that one's.
        mine = {d.group(1) for g, t, _ in lines if g != "+" for d in [DECLARES.match(t)] if d}
        again = {d.group(1) for g, t, _ in lines if g == "+" for d in [DECLARES.match(t)] if d} - {h[0]}
        if any(m and (group.get(m.group(1), m.group(1)) == kind or m.group(2) == h[0])
               and m.group(2) not in again
               and not (hoisted(r, vocab) and hoisted(r, vocab)[1] in
                        {f"{v}->{vocab.walker_member}" for v in mine})
               for r in removed for m in [HOISTED.match(r)]):
            continue
        gone.append(h)
        drop.add(i)
        if i + 1 < len(lines) and lines[i + 1][0] == "+" and not lines[i + 1][1].strip():
            drop.add(i + 1)
    declared = {v for g, t, _ in lines for d in [DECLARES.match(t)] if d for v in [d.group(1)]}
    added = "\n".join(t for g, t, _ in lines if g == "+")
    for var, init in elsewhere:
        if (var, init) not in gone and var not in declared and re.search(rf"(?<![\w>.]){re.escape(var)}(?!\w)", added):
            gone.append((var, init))
    if not gone:
        return (Hunk(hunk.old_start, hunk.old_len, hunk.new_start, hunk.new_len, hunk.section, lines), True) \
            if pre_inlined else (hunk, False)
    out = []
    for i, (tag, text, n) in enumerate(lines):
        if i in drop:
            continue
        if tag == "+":
            for var, init in gone:
                text = inline(text, var, init)
        out.append((tag, text, n))
    return Hunk(hunk.old_start, hunk.old_len, hunk.new_start, hunk.new_len, hunk.section, out), True


def added_walker_locals(hunk: Hunk, vocab: Vocabulary) -> list[tuple[str, str]]:
    """(variable, initialiser) of the walker or page-format locals `inline_added_locals`
    inlines in this hunk."""
    new, changed = inline_added_locals(hunk, vocab)
    if not changed:
        return []
    return [h for tag, t, n in hunk.lines if tag == "+" for h in [hoisted(t, vocab)] if h
            and not any(t2 == t and g == "+" for g, t2, _ in new.lines)]


def match_unseen_locals(hunk: Hunk, tlines: list[str], at: int, ttypes: dict[str, str],
                         learner: Learner, tr, types: dict[str, str], file_idents: set[str]) -> None:
    """A layout-typed local the added lines use but the target function lacks, where the
    hunk's context does not show its declaration: when the target function has exactly one
    layout-typed variable the hunk never names, that one is its counterpart (`w` for the
    `mmu` of an old function whose declaration lies outside the hunk)."""
    lo, hi = function_span(tlines, at)
    body = "\n".join(tlines[lo:hi + 1])
    in_target = set(_IDENT.findall(body))
    hunk_text = "\n".join(t for _tag, t, _ in hunk.lines)
    hunk_idents = set(_IDENT.findall(hunk_text))
    added = "\n".join(learner.apply(tr(t, types).text) for tag, t, _ in hunk.lines if tag == "+")
    # Only names the target file never uses: a function or macro of the file is no local.
    unseen = [v for v in set(_IDENT.findall(added)) - in_target - file_idents
              if re.search(rf"(?<![\w>.]){re.escape(v)}\s*(->|!=|==|,|\))", added)
              and not re.search(rf"\b\w+\s*\*?\s*{re.escape(v)}\s*[=;]", added)]
    spare = [v for v in ttypes if v not in hunk_idents and v in in_target]
    if len(unseen) == 1 and len(spare) == 1 and unseen[0] not in learner.subs:
        learner.add(unseen[0], spare[0])

