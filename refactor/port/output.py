"""What a port prints: the ported mail (stable conventions) and the analysis as text.

The mail keeps the original author and date, names the upstream commit on
its own line above the body ("commit <sha> upstream."), and explains every
deviation from the original in a bracketed note placed right before the
porter's Signed-off-by, as the stable trees do.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from refactor import __version__
from refactor.rules import Rules


def _name_pairs(original: str, ported: str) -> list[str]:
    import difflib

    tok = re.compile(r"->|[A-Za-z_]\w*(?:(?:->|\.)[A-Za-z_]\w*)*|\S")
    a, b = tok.findall(original), tok.findall(ported)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "replace":
            out.append(f"{''.join(a[i1:i2])} -> {''.join(b[j1:j2])}")
    return out


def deviation_note(pr, original_diff: str, rules: Rules | None = None) -> str | None:
    from refactor.port.counterparts import old_calls
    from refactor.port.initialisers import ported_into

    if pr.direction == "same" and not any(h.status == "relocated" or h.notes for h in pr.hunks):
        return None
    orig_added = [ln[1:] for ln in original_diff.split("\n") if ln.startswith("+") and not ln.startswith("+++")]
    # Calls of a helper the old layout lacks, restated as the old one: said once, below.
    restated = {}
    for i, a in enumerate(orig_added):
        new, rid = old_calls(a, rules) if rules is not None else (a, None)
        if rid:
            restated[rid] = [r for r in rules.restructure["spte_permissions"] if r.id == rid][0]
            orig_added[i] = new
    new_added = [ln[1:] for ln in pr.diff.split("\n") if ln.startswith("+") and not ln.startswith("+++")]
    pairs: list[str] = []
    for a, b in zip(orig_added, new_added):
        for p in _name_pairs(a, b):
            if p not in pairs:
                pairs.append(p)
    parts = []
    if pr.direction != "same" and pairs:
        what = {"backport": "translated to the old MMU layout",
                "forward": "translated to the struct kvm_pagewalk layout",
                "rename": "walker names changed"}[pr.direction]
        parts.append(f"{what}: {', '.join(pairs[:6])}" + (", ..." if len(pairs) > 6 else ""))
    elif pr.direction != "same":
        parts.append({"backport": "context translated to the old MMU layout",
                      "forward": "context translated to the struct kvm_pagewalk layout",
                      "rename": "walker names changed"}[pr.direction])
    for r in restated.values():
        parts.append(f"{r.params['new']}() restated as the negation of {r.params['old']}() "
                     f"(restructure.toml {r.id})")
    for h in pr.hunks:
        into = ported_into(h.reason) if h.status != "conflict" else None
        if into:
            parts.append(f"{into[0]}() is not in this tree: made in {', '.join(f + '()' for f in into[1])}")
    parts += list(dict.fromkeys(n for h in pr.hunks if h.status != "conflict" for n in h.notes))
    moved = sorted({f"{h.file} -> {h.target_file}" for h in pr.hunks
                    if h.status == "relocated" and h.target_file != h.file})
    if moved:
        parts.append("moved: " + ", ".join(moved))
    return "[ " + "; ".join(parts) + " ]" if parts else None


def mail_text(pr, target, porter: tuple[str, str] | None, subject_prefix: str | None, rules: Rules) -> str:
    m = pr.mail
    prefix = subject_prefix or "PATCH"
    lines = ["From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001"]
    # A plain diff has no author or subject; git am needs both (without a Subject it takes
    # the first body line as the title, without From it stops): the porter is the author and
    # the subject says it is to be written, naming the input.
    author = m.author or (f"{porter[0]} <{porter[1]}>" if porter else None)
    if author:
        lines.append(f"From: {author}")
    if m.date:
        lines.append(f"Date: {m.date}")
    subject = m.subject or f"(no subject: a plain diff, {Path(m.source).name})"
    lines += [f"Subject: [{prefix}] {subject}", ""]
    if m.upstream:
        lines += [f"commit {m.upstream} upstream.", ""]
    body = m.body.rstrip("\n")
    note = deviation_note(pr, m.diff, rules)
    trailers = []
    if note:
        trailers.append(note)
    if porter:
        sob = f"Signed-off-by: {porter[0]} <{porter[1]}>"
        if sob not in body.split("\n"):
            trailers.append(sob)
    if body:
        lines.append(body)
    if trailers:
        # The note and the porter's sign-off follow the original trailers directly.
        lines += trailers
    lines.append("---")
    lines.append(f" port: {pr.direction} onto {target.version}; rules: "
                 + (", ".join(sorted({r for h in pr.hunks for r in h.rules})) or "none"))
    lines.append("")
    text = "\n".join(lines) + "\n" + pr.diff
    if not text.endswith("\n"):
        text += "\n"
    return text + f"-- \nkvm-refactor {__version__}\n\n"


def analysis_text(report) -> str:
    out = []
    for tr in report.targets:
        t = tr.target
        out.append(f"target: {t.root} ({t.version}, {t.layout} layout)")
        for pr in tr.patches:
            counts = Counter(h.status for h in pr.hunks)
            summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            out.append(f"  {pr.result:9s} {pr.mail.label}  [{pr.direction}; {summary}]")
            for h in pr.hunks:
                where = f"{h.target_file}:{h.target_start + 1}" if h.target_start is not None else h.file
                line = f"    {h.status:10s} {h.file} @@ -{h.old_start} -> {where}"
                if h.rules:
                    line += f"  rules: {', '.join(h.rules)}"
                out.append(line)
                if h.reason:
                    out.append(f"      {where}: {h.reason}")
                for a, b in h.differing[:5]:
                    out.append(f"        patch:  {a.strip()}")
                    out.append(f"        target: {b.strip()}")
    out.append("")
    out.append("summary:")
    width = max((len(tr.target.version) for tr in report.targets), default=7)
    for tr in report.targets:
        ported = sum(p.result == "ported" for p in tr.patches)
        out.append(f"  {tr.target.version:<{width}}  {ported}/{len(tr.patches)} ported, "
                   f"{len(tr.patches) - ported} with conflicts")
    return "\n".join(out) + "\n"
