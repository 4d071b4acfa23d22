"""Commit messages as a KVM maintainer writes them, and what goes below `---`.

The subject and body come from rules/steps.toml with the walker names filled
in; the body is wrapped at 75 columns *after* filling (a longer name must not
give checkpatch's "Possible unwrapped commit description").  Nothing about the
tool goes into the message: the rules behind a patch are a note below the
`---` line of the patch file, which `git am` drops.
"""
from __future__ import annotations

import re

WIDTH = 75  # checkpatch's COMMIT_LOG_LONG_LINE limit and maintainer-kvm-x86.rst's


def fill(text: str, names) -> str:
    return names.fill(text)  # WalkerNames.fill: {gva}/{ngpa} replaced, other braces kept


def wrap(text: str, width: int = WIDTH) -> str:
    """Reflow each prose paragraph; paragraphs with indented lines are kept as written."""
    out = []
    for para in re.split(r"\n[ \t]*\n", text.strip()):
        lines = para.splitlines()
        if any(line[:1].isspace() for line in lines):
            out.append(para.rstrip())
            continue
        # A sentence end keeps its two spaces (the kernel's habit), a line end
        # after a full stop becomes two spaces too; other gaps are one space.
        text = "\n".join(line.strip() for line in lines)
        tokens = [(m.group(1), m.group(2)) for m in re.finditer(r"(\S+)(\s*)", text)]
        para_lines, cur = [], ""
        for k, (word, gap) in enumerate(tokens):
            if cur and len(cur) + len(word) > width:
                para_lines.append(cur.rstrip())
                cur = ""
            cur += word
            if k + 1 < len(tokens):
                two = gap.startswith("  ") or ("\n" in gap and word.endswith("."))
                cur += "  " if two else " "
        if cur:
            para_lines.append(cur.rstrip())
        out.append("\n".join(para_lines))
    return "\n\n".join(out)


def subject_line(template: str, names) -> str:
    subject = fill(template, names)
    prefix, sep, rest = subject.rpartition(": ")
    if sep and rest[:1].islower():
        subject = f"{prefix}: {rest[0].upper()}{rest[1:]}"
    return subject


NFC = "No functional change intended."


def step_body(body: str, when, applied) -> str:
    """The step's body plus the paragraphs of the rules this commit applied.

    A paragraph for a rule that changes behaviour takes "No functional change
    intended." out: the step body says it for the trees the rule does not touch."""
    extra = [(text, functional) for rule, text, functional in when if rule in applied]
    if not extra:
        return body
    paras = [p for p in re.split(r"\n[ \t]*\n", body.strip())]
    functional = any(f for _, f in extra)
    tail = [p for p in paras if p.strip() == NFC]
    paras = [p for p in paras if p.strip() != NFC] + [t for t, _ in extra]
    return "\n\n".join(paras + ([] if functional else tail))


def commit_message(subject: str, body: str, names, name: str, email: str) -> str:
    return f"{subject}\n\n{wrap(fill(body, names))}\n\nSigned-off-by: {name} <{email}>\n"


def note(rule_ids: list[str], step_id: str) -> str:
    """What goes below `---`: the step and rules behind the patch (dropped by git am)."""
    text = f"kvm-refactor step '{step_id}'"
    text += f"; rules: {', '.join(rule_ids)}" if rule_ids else ""
    return wrap(text + ".")


def add_note(patch_text: str, note_text: str) -> str:
    """Insert note_text right after the first `---` line of a format-patch file."""
    head, sep, tail = patch_text.partition("\n---\n")
    if not sep:
        return patch_text
    return f"{head}\n---\n{note_text}\n\n{tail}"
