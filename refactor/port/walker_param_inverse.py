"""restructure.toml [[walker_param]] inverted in the function's definition, for a backport.

The forward rewrite (refactor/plan/walker_param.py) retypes the function's MMU parameter to
the walker, declares the old parameter's name as an MMU local, asks which walker it got where
the old code asked which MMU, and names each branch's MMU: the same MMU every old caller
passed, since each MMU is attached to its own walker.  A hunk that does exactly that to the
old definition (its pre-image, rewritten so, is its post-image) is the old function on an old
tree: its changed lines leave the target's as they are.  Anything else in the hunk (a fix)
makes it no such hunk.
"""
from __future__ import annotations

import re

from refactor.port.images import changed_lines, same_lines


def _other(rules, member: str) -> str | None:
    """The other vCPU MMU with a walker of its own (root_mmu <-> guest_mmu)."""
    me = rules.vcpu_old.get(member)
    return next((n for n, m in rules.vcpu_old.items() if m.kind == "mmu" and m.walker
                 and n != member and me is not None and m.walker != me.walker), None)


def _forward(pre: list[str], rule, rules, names) -> list[str] | None:
    """What the forward rewrite makes of the pre-image lines, or None where it would not apply."""
    fnames = rule.params["function"]
    fnames = [fnames] if isinstance(fnames, str) else list(fnames)
    idx, wname = rule.params.get("param", 1), rule.params.get("name", "w")
    mmu_t, walker_t = f"struct {rules.types['mmu']}", f"struct {rules.types['walker']}"
    head = next((i for i, t in enumerate(pre) if re.match(rf"^\S.*\b(?:{'|'.join(map(re.escape, fnames))})\s*\(", t)
                 and not t.rstrip().endswith(";")), None)
    if head is None:
        return None
    brace = next((i for i in range(head, min(head + 8, len(pre))) if pre[i].startswith("{")), None)
    if brace is None:
        return None
    params = re.sub(r"\s+", " ", " ".join(pre[head:brace]))
    params = params[params.index("(") + 1:params.rindex(")")].split(",")
    m = re.fullmatch(rf"\s*{re.escape(mmu_t)}\s*\*\s*(\w+)\s*", params[idx]) if len(params) > idx else None
    if m is None:
        return None
    pname = m.group(1)
    out = list(pre)
    at = next(i for i in range(head, brace) if re.search(rf"{re.escape(mmu_t)}\s*\*\s*{pname}\b", pre[i]))
    out[at] = re.sub(rf"{re.escape(mmu_t)}\s*\*\s*{pname}\b", f"{walker_t} *{wname}", pre[at], count=1)
    # The function's end, or the hunk's (a hunk shows what it changes of the function).
    end = next((i for i in range(brace + 1, len(pre)) if pre[i].startswith("}")), len(pre))
    if any(re.search(rf"(?<![\w>.]){re.escape(wname)}(?!\w)", t) for t in pre[head:end]) \
            or any(re.match(rf"\s*{pname}\s*=[^=]", t) for t in pre[brace:end]):
        return None
    test = None
    for i in range(brace + 1, end):
        t = re.match(rf"^(\s*)if \(\s*{pname}\s*(!=|==)\s*&(\w+(?:->|\.)arch)\.(\w+)\s*\) \{{$", pre[i])
        if t and _other(rules, t.group(4)):
            test = (i, t)
            break
    if test is None:
        return None
    i, t = test
    indent, op, arch, member = t.group(1), t.group(2), t.group(3), t.group(4)
    close = next((k for k in range(i + 1, end) if pre[k] == f"{indent}}}"), None)
    if close is None or (close + 1 < len(pre) and pre[close + 1].strip().startswith("else")):
        return None
    then_mmu, else_mmu = (_other(rules, member), member) if op == "!=" else (member, _other(rules, member))
    then_walker = getattr(names, rules.vcpu_old[then_mmu].walker)
    out[i] = f"{indent}if ({wname} == &{arch}.{then_walker}) {{"
    inner = indent + "\t"
    out[close:close + 1] = ["", f"{inner}{pname} = &{arch}.{then_mmu};", f"{indent}}} else {{",
                            f"{inner}{pname} = &{arch}.{else_mmu};", f"{indent}}}"]
    first = next(k for k in range(brace + 1, end) if pre[k].strip() and not pre[k].strip().startswith(("/*", "*")))
    lead = re.match(r"[ \t]*", pre[first]).group()
    declaration = re.match(r"\s*(?:const\s+|static\s+)*(?:struct\s+|union\s+|unsigned\s+)?\w+[\s*]+\w+\s*(?:=|;|\[)",
                           pre[first]) and not pre[first].lstrip().startswith("return")
    out[first:first] = [f"{lead}{mmu_t} *{pname};"] + ([] if declaration else [""])
    return out


def restated_walker_param(lines: list[tuple[str, str, int]], rules, names) -> dict[int, str]:
    """Indices (into `lines`) of the changed lines of a hunk that only makes [[walker_param]]'s
    change to the function's definition, with the rule id; empty for any other hunk."""
    for rule in rules.restructure.get("walker_param", []):
        pre = [t for g, t, _ in lines if g != "+"]
        post = [t for g, t, _ in lines if g != "-"]
        fwd = _forward(pre, rule, rules, names)
        if fwd is not None and same_lines(fwd, post):
            return {i: rule.id for i in changed_lines(lines)}
    return {}
