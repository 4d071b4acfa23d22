"""Calls through an MMU's function pointers whose argument list differs on the target.

5.10's `gva_to_gpa` hook takes no MMU (`mmu->gva_to_gpa(vcpu, addr, access,
exception)`); 6.x and 7.3 pass the MMU or walker the call goes through as
its second argument.  What the target takes is read from its own
declaration of the hook (struct kvm_mmu, or struct kvm_pagewalk, in its
kvm_host.h), never from a version number.  A call that passes one argument
more than the target's hook takes, that argument being the very object the
call goes through, drops it (the target's hook knows its MMU from which hook
it is); one argument fewer, where the target's hook has a parameter of the
MMU or walker type, passes the object there.  Calls may be wrapped over
several lines: only the argument's text goes, the line breaks and the
continuation alignment stay.  Any other difference in a call the patch adds
is a missing prerequisite the porter must resolve.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from refactor.frontend.patch import Hunk
from refactor.port.calls import argument_spans
from refactor.port.target import Target
from refactor.rules import Rules, cite

HOOK_ARGUMENTS = cite("port-hook-arguments")

_CHAIN = r"[A-Za-z_]\w*(?:\s*(?:->|\.)\s*[A-Za-z_]\w*)*"


@dataclass
class HookCalls:
    hunk: Hunk
    rules: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # calls the patch adds that do not fit
    notes: list[str] = field(default_factory=list)      # what fitting changed in the added lines
    original: Hunk | None = None                        # the hunk before fitting

    def unfit(self, res):
        """A conflict found on the fitted hunk (a HunkResult), its patch lines shown as the patch
        writes them: the maintainer looks for those, not for the argument list fitting made."""
        if res.status != "conflict" or self.original is None or self.original is self.hunk:
            return res
        back, k = {}, 0
        for g, t, n in self.original.lines:      # the fitted lines are the original's, some dropped
            if k < len(self.hunk.lines) and self.hunk.lines[k][0] == g and self.hunk.lines[k][2] == n:
                if self.hunk.lines[k][1] != t:
                    back[self.hunk.lines[k][1]] = t
                k += 1
        if not back:
            return res
        res.differing = [(back.get(a, a), b) for a, b in res.differing]
        for fitted, text in back.items():
            if fitted.strip():
                res.reason = (res.reason or "").replace(f"`{fitted.strip()}`", f"`{text.strip()}`")
        return res


def _target_hooks(target: Target, rules: Rules) -> dict[str, tuple[str, int, list[str], str]]:
    """Hook name -> (file, line, parameters, struct) for the target's MMU and walker structs."""
    out = {}
    for kind in ("walker", "mmu"):
        struct = rules.types[kind]
        for name, (rel, line, params) in target.hooks(struct).items():
            out.setdefault(name, (rel, line, params, struct))
    return out


def _names(hook: str, rules: Rules) -> list[str]:
    """The hook as the target may call it: its own name, or the field it was on the other side
    of the layout change (layout.toml mmu_fields: name <-> path)."""
    out = [hook]
    for f in rules.mmu_fields.values():
        if f.path == hook and f.name not in out:
            out.append(f.name)
        if f.name == hook and f.path not in out and "." not in f.path:
            out.append(f.path)
    return out


def _args(text: str, open_at: int) -> tuple[list[tuple[int, int]], list[int], int] | None:
    """(start, end) of each argument (whitespace trimmed), the offsets of the commas between
    them and the offset of the closing parenthesis of the call opened at `open_at`."""
    got = argument_spans(text, open_at, stop=";")
    if got is None:
        return None
    spans, close = got
    trimmed = []
    for a, b in spans:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        trimmed.append((a, b))
    return trimmed, [b for _a, b in spans[:-1]], close


def _squash(expr: str) -> str:
    return re.sub(r"\s+", "", expr)


def _view(hunk: Hunk, tags: tuple[str, ...]) -> tuple[str, list[tuple[int, int]]]:
    """The text of the hunk's lines with `tags`, and (hunk line index, offset) per line."""
    parts, where, pos = [], [], 0
    for idx, (tag, text, _) in enumerate(hunk.lines):
        if tag in tags:
            where.append((idx, pos))
            parts.append(text)
            pos += len(text) + 1
    return "\n".join(parts), where


def _line_of(where: list[tuple[int, int]], offset: int) -> tuple[int, int]:
    k = max(i for i, (_idx, pos) in enumerate(where) if pos <= offset)
    return where[k][0], offset - where[k][1]


def _edits(hunk: Hunk, tags: tuple[str, ...], hooks: dict, rules: Rules, problems: list[str] | None,
           notes: list[str] | None = None):
    """Edits (hunk line, start column, end column, inserted text) that bring each hook call of
    the view to the target's argument list; calls that cannot be are listed in `problems`."""
    text, where = _view(hunk, tags)
    edits: list[tuple[int, int, int, str]] = []
    if not where:
        return edits
    known = {}
    for hook in {m.group(1) for m in re.finditer(r"(?:->|\.)\s*([A-Za-z_]\w*)\s*\(", text)}:
        name = next((n for n in _names(hook, rules) if n in hooks), None)
        if name:
            known[hook] = name
    if not known:
        return edits
    structs = "|".join(re.escape(rules.types[k]) for k in ("mmu", "walker"))
    object_param = re.compile(rf"\bstruct\s+(?:{structs})\s*\*")
    call = re.compile(rf"(?<![\w.>])({_CHAIN})\s*(->|\.)\s*({'|'.join(map(re.escape, known))})\s*\(")
    for m in call.finditer(text):
        parsed = _args(text, m.end() - 1)
        if parsed is None:
            continue
        args, commas, close = parsed
        rel, line, params, struct = hooks[known[m.group(3)]]
        if any("..." in p for p in params) or len(args) == len(params):
            continue
        receiver = _squash(m.group(1)) if m.group(2) == "->" else "&" + _squash(m.group(1))
        same = [i for i, (a, b) in enumerate(args) if _squash(text[a:b]) in (receiver, f"({receiver})")]
        typed = [i for i, p in enumerate(params) if object_param.search(p)]
        span = None
        if len(args) == len(params) + 1 and len(same) == 1 and not typed:
            i = same[0]
            a, b = args[i]
            if i + 1 < len(args):
                nxt = args[i + 1][0]
                span = (a, nxt) if "\n" not in text[a:nxt] else (a, commas[i] + 1)
            elif i > 0 and "\n" not in text[commas[i - 1]:b]:
                span = (commas[i - 1], b)
            if span:
                idx, col = _line_of(where, span[0])
                edits.append((idx, col, col + span[1] - span[0], ""))
                if notes is not None and hunk.lines[idx][0] == "+":
                    notes.append(f"{known[m.group(3)]}() called as this tree declares it ({rel}:{line}): "
                                 f"`{_squash(text[a:b])}` not passed")
        elif len(args) + 1 == len(params) and len(typed) == 1 and not same:
            i = typed[0]
            if i < len(args):
                idx, col = _line_of(where, args[i][0])
                edits.append((idx, col, col, f"{receiver}, "))
            elif args:
                idx, col = _line_of(where, args[-1][1])
                edits.append((idx, col, col, f", {receiver}"))
            if notes is not None and args and hunk.lines[idx][0] == "+":
                notes.append(f"{known[m.group(3)]}() called as this tree declares it ({rel}:{line}): "
                             f"`{receiver}` passed")
            span = True
        if not span and problems is not None and any(
                hunk.lines[_line_of(where, o)[0]][0] == "+" for o in (m.start(), close)):
            extra = (" and none of them is the object it is called through"
                     if len(args) == len(params) + 1 else "")
            problems.append(f"the target's struct {struct} hook {known[m.group(3)]}() takes {len(params)} "
                            f"arguments ({rel}:{line}), the patch passes {len(args)}{extra}")
    return edits


def fit_hook_calls(hunk: Hunk, target: Target, rules: Rules) -> HookCalls:
    """The hunk with its calls through MMU hooks fitted to the target's declarations."""
    hooks = _target_hooks(target, rules)
    res = HookCalls(hunk, original=hunk)
    if not hooks:
        return res
    problems: list[str] = []
    pre = _edits(hunk, (" ", "-"), hooks, rules, None)
    notes: list[str] = []
    post = _edits(hunk, (" ", "+"), hooks, rules, problems, notes)
    res.problems = list(dict.fromkeys(problems))
    context = {e for e in pre + post if hunk.lines[e[0]][0] == " "}
    # A call spanning context and changed lines fits in both views or in neither.
    if {e for e in pre if hunk.lines[e[0]][0] == " "} != {e for e in post if hunk.lines[e[0]][0] == " "}:
        return res
    edits = sorted(set(pre) | set(post) | context, key=lambda e: (e[0], -e[1]))
    if not edits:
        return res
    lines = [list(x) for x in hunk.lines]
    for idx, a, b, new in edits:
        t = lines[idx][1]
        t = t[:a] + new + t[b:]
        lines[idx][1] = t.rstrip() if not new and t[a:].strip() == "" else t
    # A line that held only the argument goes.
    kept = [tuple(x) for x, (_g, old, _n) in zip(lines, hunk.lines) if x[1].strip() or not old.strip()]
    old_len = sum(1 for g, _t, _n in kept if g != "+")
    new_len = sum(1 for g, _t, _n in kept if g != "-")
    res.hunk = Hunk(hunk.old_start, old_len, hunk.new_start, new_len, hunk.section, kept)
    res.rules = [HOOK_ARGUMENTS]
    res.notes = list(dict.fromkeys(notes))
    return res
