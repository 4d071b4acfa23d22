"""restructure.toml [[walker_init]] inverted for the MMU initialisers, on a backport.

Once `to` (init_kvm_page_walk()) initialises the walker first, the forward rewrite
(refactor/plan/walker_writes.py, walker_init.py) takes from the MMU initialisers that run
after it (`then_mmu`) their walker writes, the if/else chains that only write the walker,
the calls `to` makes on the walker, and the test of the walker's role in their early
return; the role parameter (`role_param`) that only those used goes from the definition and
from every call; a caller outside the dispatcher (`walker_first`) calls `to` for its MMU's
walker itself, declared before it; the set-up a merge keeps takes the initialisers' name
(`rename`).  On the old layout no `to` exists: the initialisers are where the walker is
initialised.  A hunk whose pre-image, rewritten so, is its post-image (walker locals read
through their values on both sides: where the new layout names a walker is presentation) is
the old code on an old tree: its changed lines leave the target's as they are.
"""
from __future__ import annotations

import re

from refactor.port.calls import argument_spans, call_of, drop_argument
from refactor.port.images import changed_lines, same_lines
from refactor.port.lexicon import Vocabulary
from refactor.port.locals import function_span
from refactor.port.old_walkers import hoisted, inline
from refactor.port.target import Target

_HEADER = re.compile(r"^(?!(?:if|for|while|switch|return|else)\b)[A-Za-z_][\w\s\*]*?\b(\w+)\s*\(")
_CALL = re.compile(r"^\s*(\w+)\((.*)\);\s*$")


def _segments(lines: list[str], first: str | None) -> list[tuple[str | None, list[str]]]:
    """The lines of each function an image spans: (its name, its lines)."""
    out: list[tuple[str | None, list[str]]] = [(first, [])]
    for t in lines:
        m = _HEADER.match(t)
        if m and not t.rstrip().endswith(";"):
            out.append((m.group(1), []))
        out[-1][1].append(t)
        if t.startswith("}"):
            out.append((None, []))
    return [(n, ls) for n, ls in out if ls]


def _inline_walker_locals(seg: list[str], vocab) -> list[str]:
    """The function's lines with its walker locals read through their values (and their
    declarations, with a blank line they leave first in the body, gone)."""
    out: list[str] = []
    gone: list[tuple[str, str]] = []
    skip_blank = False
    for t in seg:
        h = hoisted(t, vocab)
        if h and h[0] and re.match(r"\s*struct\s+" + re.escape(vocab.rules.types["walker"]) + r"\b", t):
            gone.append(h)
            skip_blank = bool(out) and out[-1].startswith("{")
            continue
        if skip_blank and not t.strip():
            skip_blank = False
            continue
        skip_blank = False
        for var, init in gone:
            t = inline(t, var, init)
        out.append(t)
    return out


class _Target:
    """What the inverse reads from the old tree: a definition's body and parameters."""

    def __init__(self, target: Target, rules):
        self.target, self.rules = target, rules

    def body(self, name: str) -> tuple[list[str], list[str]] | None:
        """(parameter texts, body lines) of the target's definition of `name`."""
        for rel, line, _arity in self.target.definitions(name):
            tl = self.target.lines(rel)
            at = line - 1
            brace = next((k for k in range(at, min(at + 8, len(tl))) if tl[k].startswith("{")), None)
            if brace is None or any(tl[k].rstrip().endswith(";") for k in range(at, brace)):
                continue
            head = " ".join(tl[at:brace])
            params = [p.strip() for p in head[head.index("(") + 1:head.rindex(")")].split(",")]
            _lo, hi = function_span(tl, brace)
            return params, tl[brace:hi + 1]
        return None

    def calls_with_identifiers(self, name: str) -> set[str]:
        """Functions that `name` calls with an identifier argument (what `to` does to its walker)."""
        found = self.body(name)
        out = set()
        for t in found[1] if found else []:
            for m in re.finditer(r"(\w+)\(([^()]*)\)", t):
                if any(re.fullmatch(r"\s*\w+\s*", a) for a in m.group(2).split(",")):
                    out.add(m.group(1))
        return out

    def only_setup_and_walker(self, name: str, setup: str) -> bool:
        """The target's `name` is declarations, one call of `setup` and walker-field writes
        (walker_init.py's test for a `merge`)."""
        found = self.body(name)
        if found is None:
            return False
        fields = {f.name for f in self.rules.mmu_fields.values() if f.moves_to_walker}
        calls = 0
        for t in found[1][1:-1]:
            t = t.strip()
            if not t or t.startswith(("/*", "*")) or re.match(r"struct\s+\w+\s*\*\s*\w+\s*(?:=[^;]*)?;$", t):
                continue
            if re.fullmatch(rf"{re.escape(setup)}\([^;]*\);", t):
                calls += 1
                continue
            m = re.fullmatch(r"\w+->(\w+)\s*=\s*\w+;", t)
            if not (m and m.group(1) in fields):
                return False
        return calls == 1

    def role_index(self, name: str, role: str) -> tuple[int, int] | None:
        """(index of the role parameter, number of parameters) of the target's `name`, where its
        role is only tested against and written to the role its MMU holds: the parameter the
        forward rewrite drops."""
        found = self.body(name)
        if found is None:
            return None
        params, body = found
        k = next((i for i, p in enumerate(params) if re.search(rf"\b{re.escape(role)}$", p)), None)
        uses = [t for t in body if re.search(rf"(?<![\w>.]){re.escape(role)}\b", t)]
        ok = [t for t in uses if re.search(rf"{re.escape(role)}\.as_u64\s*==\s*[\w>.\-]+cpu_role\.as_u64", t)
              or re.search(rf"cpu_role\.as_u64\s*=\s*{re.escape(role)}\.as_u64;", t)]
        return (k, len(params)) if k is not None and uses and ok == uses else None


def _then_mmu(seg: list[str], step, rules, names, walker_member: str, to_calls: set[str]) -> list[str]:
    """[[walker_init]]'s change to an MMU initialiser that runs after `to`: no walker writes,
    no walker role test, no role parameter only those used."""
    mmu_t = rules.types["mmu"]
    mmu, member = None, None
    for t in seg:
        m = re.search(rf"\bstruct\s+{mmu_t}\s*\*\s*(\w+)(?:\s*=\s*&\w+->arch\.(\w+))?", t)
        if m:
            mmu, member = m.group(1), m.group(2)
            break
    if mmu is None:
        return seg
    walker = getattr(names, rules.vcpu_old[member].walker) if member in rules.vcpu_old and \
        rules.vcpu_old[member].walker else None
    fa = rf"(?:{re.escape(mmu)}->{walker_member}->" + (rf"|\w+->arch\.{walker}\." if walker else "") + ")"
    bare = rf"(?:{re.escape(mmu)}->{walker_member}" + (rf"|&\w+->arch\.{walker}" if walker else "") + ")"
    fields = {f.name for f in rules.mmu_fields.values() if f.moves_to_walker and f.path == f.name}

    def write(t: str) -> bool:
        m = re.match(rf"^\s*{fa}(\w+)[\w.\[\]]*\s*=[^=].*;\s*$", t)
        if m and m.group(1) in fields:
            return True
        c = _CALL.match(t)
        return bool(c and c.group(1) in to_calls and any(re.fullmatch(rf"\s*{bare}\s*", a) for a in c.group(2).split(",")))

    drop: set[int] = set()
    out = list(seg)
    i = 0
    while i < len(seg):
        t = seg[i]
        m = re.match(r"^(\s*)if \(.*\)$", t)
        if m:                   # an if/else chain whose every branch writes the walker
            k, chain, has_else = i, [], False
            while k + 1 < len(seg) and write(seg[k + 1]):
                chain += [k, k + 1]
                nxt = seg[k + 2] if k + 2 < len(seg) else ""
                if re.match(rf"^{m.group(1)}else if \(.*\)$", nxt):
                    k, has_else = k + 2, True
                    continue
                if nxt == f"{m.group(1)}else" and k + 3 < len(seg) and write(seg[k + 3]):
                    chain += [k + 2, k + 3]
                    has_else = True
                break
            if has_else and chain:
                drop |= set(chain)
                i = max(chain) + 1
                continue
        if write(t):
            drop.add(i)
        c = re.match(rf"^(\s*)if \(\w+\.as_u64\s*==\s*{fa}cpu_role\.as_u64\s*&&\s*(.*)$", t)
        if c and c.group(2):
            out[i] = f"{c.group(1)}if ({c.group(2)}"
        elif c and i + 1 < len(seg):
            out[i] = f"{c.group(1)}if ({seg[i + 1].strip()}"
            drop.add(i + 1)
        i += 1
    if not drop:
        return seg
    # The blank lines the dropped ones leave doubled, first or last in a block (walker_writes._Lines).
    kept = [k for k in range(len(seg)) if k not in drop]
    body = next((n for n, k in enumerate(kept) if seg[k].startswith("{")), 0)
    for n in range(body + 1, len(kept)):
        k = kept[n]
        if out[k].strip():
            continue
        before = out[kept[n - 1]]
        after = out[kept[n + 1]] if n + 1 < len(kept) else None
        if after is None and not seg[-1].startswith("}"):
            continue            # the hunk ends here, not the function
        if not before.strip() or before.rstrip().endswith("{") or after is None or after.strip() == "}":
            drop.add(k)
    res = [x for k, x in enumerate(out) if k not in drop]
    # The role parameter, where nothing in the function uses it any more.
    role = step.get("role_param")
    brace = next((n for n, x in enumerate(res) if x.startswith("{")), None)
    if role and brace and res[-1].startswith("}") and _HEADER.match(res[0]) and not any(
            re.search(rf"(?<![\w>.]){re.escape(role)}\b", x) for x in res[brace:]):
        head = "\n".join(res[:brace])
        new = re.sub(rf",\s*[^,()]*\b{re.escape(role)}(?=\s*[,)])", "", head, count=1)
        res = new.split("\n") + res[brace:]
    return res


def _dispatcher(seg: list[str], step, names, old: "_Target") -> list[str]:
    """[[walker_init]]'s change to the dispatcher (walker_init.py): `to` on the {gva} walker
    first, then the MMU initialisers, renamed where merged, only outside nesting."""
    test, frm = re.escape(step["nested_test"]), re.escape(step["from"])
    for i in range(len(seg) - 2):
        m = re.match(rf"^(\s*)if \({test}\)$", seg[i])
        c = re.match(rf"^\s*{frm}\((\w+)((?:,[^;]*)?)\);$", seg[i + 1])
        if not m or not c or not seg[i + 2].startswith(f"{m.group(1)}else "):
            continue
        indent = m.group(1)
        end = i + 3
        while end < len(seg) and (len(seg[end]) - len(seg[end].lstrip()) > len(indent) and seg[end].strip()
                                  or seg[end].startswith(f"{indent}else")):
            end += 1
        if seg[i + 2].rstrip().endswith("{"):
            return seg          # a compound alternative: not the shape the rule rewrites
        rest = [indent + seg[i + 2].strip()[len("else "):]] + seg[i + 3:end]
        for o, target in step.get("merge", {}).items():
            if old.only_setup_and_walker(o, target):
                rest = [re.sub(rf"(?<![\w>.]){re.escape(o)}(?=\()", target, t) for t in rest]
        call = f"{indent}{step['to']}({c.group(1)}, &{c.group(1)}->arch.{names.gva}{c.group(2)});"
        return seg[:i] + [call, "", f"{indent}if (!{step['nested_test']}) {{"] + \
            ["\t" + t if t.strip() else t for t in rest] + [f"{indent}}}"] + seg[end:]
    return seg


def _from_to(seg: list[str], step, rules, names, old: "_Target", walker_name: str | None) -> list[str]:
    """[[walker_init]]'s change to `from` (walker_init.py, walker_writes._role_selection): it
    is `to`, taking its walker local as its second parameter, picking gva_to_gpa from the
    walker's role as the MMU initialisers did (the comments on the old choice go), its role
    parameter named `role_param`.  `walker_name`: what the post-image calls that parameter."""
    walker_t = f"struct {rules.types['walker']}"
    frm, to = re.escape(step["from"]), step["to"]
    brace = next((k for k, t in enumerate(seg) if t.startswith("{")), None)
    decl = next((k for k, t in enumerate(seg) if re.match(rf"^\s*{walker_t}\s*\*\s*\w+\s*=\s*&\w+->arch\."
                                                       rf"{re.escape(names.gva)};$", t)), None)
    if brace is None or decl is None or not re.match(rf"^\S.*\b{frm}\(", seg[0]):
        return seg
    var = re.search(r"\*\s*(\w+)", seg[decl]).group(1)
    out = list(seg)
    out[0] = re.sub(rf"\b{frm}\(([^,]*),", rf"{to}(\1, {walker_t} *{var},", out[0], count=1)
    gone = {decl} | ({decl + 1} if decl + 1 < len(seg) and not seg[decl + 1].strip() else set())
    # The selection: the first MMU initialiser's, on this walker.
    first = old.body(step["then_mmu"][0]) if step.get("then_mmu") else None
    chain_at = next((k for k in range(brace, len(seg)) if re.match(r"^\s*if \(.*\)$", seg[k])
                     and any(re.search(rf"\b{var}->gva_to_gpa\s*=", t) for t in seg[k:k + 2])), None)
    if first is None or chain_at is None:
        return seg
    indent = re.match(r"\s*", seg[chain_at]).group()
    end = chain_at + 1
    while end < len(seg) and (seg[end].startswith(indent + "\t") or seg[end].startswith(f"{indent}else")):
        end += 1
    mine = _selection(first[1], rules)
    if mine is None:
        return seg
    mmu, lines = mine
    new = [re.sub(rf"(?<![\w>.]){re.escape(mmu)}(?!\w)", var, t) for t in lines]
    start = chain_at
    while start > brace + 1 and (seg[start - 1].strip().startswith(("/*", "*")) or not seg[start - 1].strip()
                                 and seg[start - 2].strip().endswith("*/")):
        start -= 1
    out[start:end] = new
    out = [t for k, t in enumerate(out) if k not in gone or k >= start]
    params = re.sub(r"\s+", " ", " ".join(out[:out.index("{")]))
    role = re.search(r"(\w+)\s*\)\s*$", params)
    want = step.get("role_param")
    if role and want and role.group(1) != want and not any(re.search(rf"(?<![\w>.]){want}\b", t) for t in out):
        out = [re.sub(rf"(?<![\w>.]){re.escape(role.group(1))}(?!\w)", want, t) for t in out]
    if walker_name and walker_name != var:
        out = [re.sub(rf"(?<![\w>.]){re.escape(var)}(?!\w)", walker_name, t) for t in out]
    return out


def _selection(body: list[str], rules) -> tuple[str, list[str]] | None:
    """(the MMU variable, the lines) of the if/else chain an old MMU initialiser picks its
    gva_to_gpa with."""
    for k, t in enumerate(body):
        m = re.match(r"^(\s*)if \(.*\)$", t)
        w = re.match(r"^\s*(\w+)->gva_to_gpa\s*=", body[k + 1]) if m and k + 1 < len(body) else None
        if w:
            end = k + 1
            while end < len(body) and (body[end].startswith(m.group(1) + "\t") or body[end].startswith(f"{m.group(1)}else")):
                end += 1
            return w.group(1), body[k:end]
    return None


def _calls_without_role(seg: list[str], then_roles: dict[str, tuple[int, int]], role: str) -> list[str]:
    out = []
    for t in seg:
        for name, (k, n) in then_roles.items():
            m = call_of(t, name)
            found = argument_spans(t, m.end() - 1) if m else None
            if found and len(found[0]) == n and t[found[0][k][0]:found[0][k][1]].strip() == role:
                t = drop_argument(t, found[0], k)
        out.append(t)
    return out


def restated_walker_init(lines: list[tuple[str, str, int]], section: str, vocab: Vocabulary,
                         target: Target) -> dict[int, str]:
    """Indices (into `lines`) of the changed lines of a hunk that only makes [[walker_init]]'s
    change to the MMU initialisers, their callers and the set-up it renames, with the rule
    id; empty for any other hunk (one that also fixes something is no such hunk)."""
    rules, names = vocab.rules, vocab.names
    steps = rules.restructure.get("walker_init", [])
    if not steps:
        return {}
    step = steps[0].params
    then = list(step.get("then_mmu", []))
    text = "\n".join(t for _g, t, _ in lines)
    if not any(n in text for n in then + list(step.get("rename", {}).values()) + [step["to"]]):
        return {}
    old = _Target(target, rules)
    role = step.get("role_param", "")
    then_roles = {n: r for n in then for r in [old.role_index(n, role)] if r}
    to_calls = old.calls_with_identifiers(step["from"])
    first = _HEADER.match(section.strip())
    first = first.group(1) if first else None
    pre = [t for g, t, _ in lines if g != "+"]
    post = [t for g, t, _ in lines if g != "-"]

    to_param = next((m.group(1) for t in post for m in [re.search(
        rf"\b{re.escape(step['to'])}\(\s*struct\s+\w+\s*\*\s*\w+\s*,\s*struct\s+\w+\s*\*\s*(\w+)", t)]
        if m and not t.rstrip().endswith(";")), None)
    merged = {o for o, target in step.get("merge", {}).items() if old.only_setup_and_walker(o, target)}
    fwd: list[str] = []
    drop_blank = False
    for name, seg in _segments(pre, first):
        if drop_blank and seg and not seg[0].strip():
            seg = seg[1:]
        drop_blank = False
        if name in merged and seg[-1].startswith("}") and _HEADER.match(seg[0]):
            drop_blank = True   # the merged initialiser goes, with the blank line after it
            continue
        if name == step["from"]:
            fwd += _from_to(seg, step, rules, names, old, to_param)
            continue
        seg = _inline_walker_locals(seg, vocab)
        if name in then:
            seg = _then_mmu(seg, step, rules, names, vocab.walker_member, to_calls)
        if name == step["dispatcher"]:
            seg = _dispatcher(seg, step, names, old)
        fwd += _calls_without_role(seg, then_roles, role)
    renamed = {new: o for o, new in step.get("rename", {}).items()
               if old.body(o) is not None and old.body(new) is None}
    back: list[str] = []
    segs = _segments(post, first)
    for n, (name, seg) in enumerate(segs):
        seg = _inline_walker_locals(seg, vocab)
        nxt = segs[n + 1][0] if n + 1 < len(segs) else None
        if name in step.get("walker_first", []):
            # The call of `to` for the MMU's walker the forward adds (with its blank line).
            call = re.compile(rf"^\s*{re.escape(step['to'])}\(\w+,\s*&\w+->arch\.\w+,\s*{re.escape(role)}\);$")
            at = next((k for k, t in enumerate(seg) if call.match(t)), None)
            if at is not None:
                seg = seg[:at] + seg[at + (2 if at + 1 < len(seg) and not seg[at + 1].strip() else 1):]
        if name == step["to"] and nxt in step.get("walker_first", []):
            # `to` declared before its new caller: a prototype and its blank line.
            end = next((k for k, t in enumerate(seg) if t.rstrip().endswith(");")), None)
            if end is not None and not any(t.strip() for t in seg[end + 1:]):
                continue
        for new, o in renamed.items():
            seg = [re.sub(rf"(?<![\w>.]){re.escape(new)}(?=\s*\()", o, t) for t in seg]
        back += seg
    if fwd == pre or not same_lines(fwd, back):
        return {}
    return {i: steps[0].id for i in changed_lines(lines)}
