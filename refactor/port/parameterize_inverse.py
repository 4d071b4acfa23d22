"""restructure.toml [[parameterize]] inverted, on a backport, over all hunks of a file.

The forward rewrite (refactor/plan) makes `inner` of `function`: its walker parameter
(`param`) becomes a pointer to the walker's `member` (the page format), the locals that
read role bits from the walker (`bool cr4_smep = is_cr4_smep(mmu);`) become parameters
after the others, `walker->member.x` is `fmt->x`; after its body `function` is defined
again as the call of `inner` on `&w->member`, the other arguments and the role bits read
from `w`.  A function's change may be split over several hunks (header and locals at the
top, the writes further down, the new wrapper after the body): the facts (the header,
the locals, the wrapper) come from the whole file patch, then each hunk is replayed on its
own.  A hunk whose pre-image, so rewritten, is its post-image is the old code on an old
tree: its changed lines leave the target's as they are.
"""
from __future__ import annotations

import re

from refactor.frontend.patch import FilePatch

_HEAD = re.compile(r"^(?:static\s+)?(?:inline\s+)?\w+[\s\*]+(\w+)\s*\(")


def _definition(lines: list[str], name: str) -> tuple[int, int, list[str]] | None:
    """(first, last line index, parameter texts) of the header of `name`'s definition."""
    for k, t in enumerate(lines):
        m = _HEAD.match(t)
        if not m or m.group(1) != name:
            continue
        end = k
        while end < len(lines) and ")" not in lines[end]:
            end += 1
        if end >= len(lines) or lines[end].rstrip().endswith(";"):
            continue
        head = " ".join(x.strip() for x in lines[k:end + 1])
        params = [p.strip() for p in head[head.index("(") + 1:head.rindex(")")].split(",")]
        return k, end, params
    return None


def _flat(lines: list[str]) -> str:
    """The lines as one string, spacing aside and blank lines kept (a header wrapped
    otherwise is the same header)."""
    return " ".join("\u00b6" if not t.strip() else " ".join(t.split()) for t in lines)


def _param_name(p: str) -> str:
    return re.search(r"(\w+)\s*$", p).group(1)


def parameterized_hunks(fp: FilePatch, rules) -> dict[int, tuple[list, dict[int, str]]]:
    """old_start -> (the hunk's lines, {changed line index: rule id}) for each hunk of `fp`
    that only makes [[parameterize]]'s change."""
    out: dict[int, tuple[list, dict[int, str]]] = {}
    for r in rules.restructure.get("parameterize", []):
        p = r.params
        func, inner, member = p["function"], p["inner"], p["member"]
        pre_all = [t for h in fp.hunks for g, t, _ in h.lines if g != "+"]
        post_all = [t for h in fp.hunks for g, t, _ in h.lines if g != "-"]
        old, new, wrap = _definition(pre_all, func), _definition(post_all, inner), _definition(post_all, func)
        if not (old and new and wrap) or len(old[2]) <= p.get("param", 0):
            continue
        k = p.get("param", 0)
        walker = _param_name(old[2][k])
        rest = old[2][:k] + old[2][k + 1:]
        fmt_param = new[2][k]
        fmt = _param_name(fmt_param)
        bits = new[2][len(old[2]):]
        if new[2][:k] + new[2][k + 1:len(old[2])] != rest or not all(b.startswith("bool ") for b in bits):
            continue
        # The role-bit locals the function had, in the order of the new parameters.
        local = re.compile(rf"^\s*bool\s+(\w+)\s*=\s*(\w+)\({re.escape(walker)}\);\s*$")
        reads = {m.group(1): m.group(2) for t in pre_all for m in [local.match(t)] if m}
        names = [_param_name(b) for b in bits]
        if sorted(reads) != sorted(names):
            continue
        # The wrapper: `inner(&w->member, <the other parameters>, <the role bits of w>);`.
        w = _param_name(wrap[2][k])
        args = [f"&{w}->{member}"] + [_param_name(x) for x in rest] + [f"{reads[n]}({w})" for n in names]
        end = next((e for e in range(wrap[1] + 1, len(post_all)) if post_all[e] == "}"), None)
        if end is None or len(wrap[2]) != len(old[2]) or wrap[2][:k] + wrap[2][k + 1:] != rest \
                or wrap[2][k].rsplit("*", 1)[0].strip() != old[2][k].rsplit("*", 1)[0].strip():
            continue
        wrapper = post_all[wrap[0]:end + 1]
        if _flat(wrapper[wrap[1] - wrap[0] + 1:]) != _flat(["{", f"{inner}({', '.join(args)});", "}"]):
            continue
        header_new = post_all[new[0]:new[1] + 1]
        for h in fp.hunks:
            got = _replay(h, func, walker, fmt, member, set(names), header_new, wrapper)
            if got is not None:
                out[h.old_start] = (list(h.lines), {i: r.id for i, (g, _t, _n) in enumerate(h.lines) if g != " "})
    return out


def _replay(h, func: str, walker: str, fmt: str, member: str, names: set[str], header_new: list[str],
            wrapper: list[str]) -> list[str] | None:
    """The hunk's post-image as [[parameterize]] makes it of its pre-image, where that is the
    patch's post-image; else None."""
    pre = [t for g, t, _ in h.lines if g != "+"]
    post = [t for g, t, _ in h.lines if g != "-"]
    inside = bool(re.search(rf"\b{re.escape(func)}\(", h.section))
    fwd: list[str] = []
    i = 0
    role = re.compile(rf"^\s*bool\s+(\w+)\s*=\s*\w+\({re.escape(walker)}\);\s*$")
    while i < len(pre):
        t = pre[i]
        m = _HEAD.match(t)
        if m and m.group(1) == func and not t.rstrip().endswith(";"):
            while ")" not in pre[i]:
                i += 1
            fwd += header_new
            inside = True
            i += 1
            continue
        if inside and (rm := role.match(t)) and rm.group(1) in names:
            i += 1
            # The blank line that set the role locals off goes with them.
            if i < len(pre) and not pre[i].strip() and fwd and not fwd[-1].strip():
                i += 1
            continue
        if inside:
            t = re.sub(rf"&{re.escape(walker)}->{re.escape(member)}(?!\w)", fmt, t)
            t = re.sub(rf"(?<![\w>.]){re.escape(walker)}->{re.escape(member)}\.", f"{fmt}->", t)
        fwd.append(t)
        if inside and t == "}":
            inside = False
            if i + 1 < len(pre) and not pre[i + 1].strip():
                fwd.append(pre[i + 1])
                i += 1
            fwd += wrapper + [""]
        i += 1
    if fwd == pre or _flat(fwd) != _flat(post):
        return None
    return fwd
