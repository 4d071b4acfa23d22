"""Port patches onto target trees: the library entry point behind `kvm-refactor port`.

For each target and each patch: which way the layouts differ (a new-layout
patch onto an old-layout tree is a backport, the reverse a forward port, the
same layout an application with analysis only, or a renaming when the
walkers are named differently), then every hunk through refactor.port.hunks,
then the ported patch as a diff against the target's own text.  The user's
trees are only read.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from refactor.port.context import file_context
from refactor.port.counterparts import counterpart_hunk, new_layout_functions, old_calls, touched
from refactor.port.counterparts import reason as counterpart_reason
from refactor.port.diff import region_diff
from refactor.port.forward_image import port_on_image
from refactor.port.headings import function_of
from refactor.port.collapsed import collapsed_tests
from refactor.port.hunks import HunkResult, port_hunk
from refactor.port.initialisers import NOTE, walker_writes_port
from refactor.port.inverse import dependent_conflicts
from refactor.port.lexicon import Vocabulary
from refactor.port.mail import Mail, read_mails
from refactor.port.prereq import missing_names, prerequisites, restructured_by, restructuring_causes
from refactor.port.reasons import unseen_locals, with_unseen_locals, with_walker_writes
from refactor.port.series_deps import blame_earlier, unported
from refactor.port.spte_inverse import calls_of_unported, nothing_to_port
from refactor.port.target import Target, load_target
from refactor.rules import Rules, RulesError, WalkerNames, load_rules

# A function definition's first line (kernel style: the type at column 0, then the name).
_DEFINITION = re.compile(r"^[A-Za-z_][\w \t*]*\b\w+\(")

@dataclass
class PatchResult:
    mail: Mail
    direction: str
    hunks: list[HunkResult] = field(default_factory=list)
    diff: str = ""
    output: str | None = None   # the ported mail (None when a hunk conflicts)
    files: dict[str, str] = field(default_factory=dict, repr=False)  # patched target files

    @property
    def result(self) -> str:
        return "conflict" if any(h.status == "conflict" for h in self.hunks) else "ported"

    def to_json(self) -> dict:
        return {"subject": self.mail.subject, "upstream": self.mail.upstream, "result": self.result,
                "direction": self.direction, "hunks": [h.to_json() for h in self.hunks],
                "output": self.output}


@dataclass
class TargetResult:
    target: Target
    patches: list[PatchResult] = field(default_factory=list)
    build: object | None = None   # refactor.kernel.build.BuildResult with --build

    @property
    def changed(self) -> dict[str, bytes]:
        """The target's files after every ported patch, in order."""
        out: dict[str, bytes] = {}
        for p in self.patches:
            out.update({rel: text.encode() for rel, text in p.files.items()})
        return out

    def to_json(self) -> dict:
        t = self.target
        out = {"tree": str(t.root), "version": t.version, "layout": t.layout,
               "patches": [p.to_json() for p in self.patches]}
        if self.build is not None:
            b = self.build
            out["build"] = {"ok": b.ok, "seconds": round(b.seconds, 1), "reason": b.reason,
                            "errors": [{"file": e.file, "line": e.line, "message": e.message}
                                       for e in b.errors]}
        return out


@dataclass
class PortReport:
    targets: list[TargetResult]

    @property
    def conflicts(self) -> int:
        return sum(p.result == "conflict" for t in self.targets for p in t.patches)

    def to_json(self) -> dict:
        return {"targets": [t.to_json() for t in self.targets]}


def patch_layout(mail: Mail, rules: Rules, spec: str | None) -> tuple[str, WalkerNames]:
    """The layout a patch is written on, and its walker names (from --names or its own text)."""
    text = "\n".join([t for f in mail.patch.files for h in f.hunks for _tag, t, _ in h.lines]
                     + [h.section for f in mail.patch.files for h in f.hunks])
    words = set(re.findall(r"[A-Za-z_]\w*", text))
    if spec:
        names = rules.names(spec)
    else:
        counts = {p: len(re.findall(rf"\b(?:{p.gva}|{p.ngpa})\b", text)) for p in rules.presets.values()}
        best = max(counts, key=lambda p: counts[p])
        names = best if counts[best] else rules.presets.get("upstream") or next(iter(rules.presets.values()))
    vocab = Vocabulary(rules, names)
    old = bool(words & vocab.old_markers())
    # A field that moved to the walker, read through a vcpu MMU member (`vcpu->arch.mmu->cpu_role`).
    moved = [re.escape(f.name) for f in rules.mmu_fields.values() if f.moves_to_walker]
    bases = "|".join(re.escape(b.old) for b in vocab.member_bases())
    old = old or bool(moved and re.search(rf"(?:{bases})(?:->|\.)(?:{'|'.join(moved)})(?!\w)", text))
    # A member only the new layout's struct kvm_mmu has, read through a vcpu MMU
    # (`vcpu->arch.mmu->fmt`: layout.toml new_fields; the old layout has no such name).
    only_new = [re.escape(n) for n, f in rules.new_fields.items()
                if rules.types["mmu"] in f.struct.split() and n not in rules.mmu_fields]
    mmu_only_new = bool(only_new and re.search(rf"(?:{bases})(?:->|\.)(?:{'|'.join(only_new)})(?!\w)", text))
    # Paths that only the new layout has (w->fmt.permissions, mmu->w->cpu_role).
    paths = [re.escape(f.path) for f in rules.mmu_fields.values() if f.moves_to_walker and "." in f.path]
    # A hunk that defines, sits in or calls a function only the new layout has
    # (restructure.toml: init_kvm_page_walk(), spte_permission_fault()...).
    new = (mmu_only_new or bool(words & vocab.new_markers()) or bool(words & set(new_layout_functions(rules)))
           or bool(re.search(rf"(?:->|\.){re.escape(vocab.walker_member)}->", text))
           or bool(paths and re.search(rf"->(?:{'|'.join(paths)})(?!\w)", text)))
    if old and not new:
        return "old", names
    if new:
        return "new", names
    return "neutral", names


def _direction(patch: str, target: str, src: WalkerNames, dst: WalkerNames | None) -> str:
    if patch == "new" and target == "old":
        return "backport"
    if patch == "old" and target == "new":
        return "forward"
    if patch == "new" and target == "new" and dst is not None and (src.gva, src.ngpa) != (dst.gva, dst.ngpa):
        return "rename"
    return "same"


def port_one(mail: Mail, target: Target, rules: Rules, names_spec: str | None = None) -> PatchResult:
    layout, src_names = patch_layout(mail, rules, names_spec)
    dst_names = target.names or src_names
    direction = _direction(layout, target.layout, src_names, target.names)
    src, dst = Vocabulary(rules, src_names), Vocabulary(rules, dst_names)
    res = PatchResult(mail=mail, direction=direction)
    edits: dict[str, list[HunkResult]] = {}
    contexts = {id(fp): file_context(fp, src, dst, target) for fp in mail.patch.files}
    # What one file of the patch defines (a helper in a header) another may use.
    defined = set().union(*(c.defined_by_patch for c in contexts.values())) if contexts else set()
    for c in contexts.values():
        c.defined_by_patch |= defined
    pairs: list = []
    restructure_ids = {r.id for entries in rules.restructure.values() for r in entries}
    for fp in mail.patch.files:
        if fp.binary or fp.old_path is None or fp.new_path is None or fp.old_path != fp.new_path:
            res.hunks.append(HunkResult(file=fp.path, target_file=None, old_start=0, status="conflict",
                                        reason="new, deleted, renamed or binary files are not ported: "
                                               "apply that part by hand"))
            continue
        ctx = contexts[id(fp)]
        for hunk in fp.hunks:
            original = hunk
            hunk, restated = _restate_calls(hunk, rules) if direction == "backport" else (hunk, None)
            h = port_hunk(hunk, fp, target, direction, src, dst, ctx)
            collapsed_tests(h, hunk, target)        # a test the translation made constant
            if direction == "backport":
                nothing_to_port(h, hunk, ctx.spte, target, fp.old_path or fp.path)
                port_on_image(h, hunk, target, src, dst, ctx)   # the rules' image of the target
            ctx.offsets.settle(hunk, h, fp.path, target)    # its offset guides the later hunks
            if restated and h.status != "conflict":
                h.rules.append(restated)
                h.status = "translated" if h.status == "clean" else h.status
            moved, hint = _into_counterparts(h, original, fp, target, rules, (src, dst), ctx) \
                if h.status == "conflict" and direction == "backport" else (False, None)
            if moved:
                res.hunks.append(h)
                pairs.append((h, hunk, fp.path))
                continue
            # What the hunk changes and the function it sits in (a function the context only
            # calls, next to the change, is not what the change restructures).
            named = [t for g, t, _ in hunk.lines if g != " " or _DEFINITION.match(t)]
            first = next((i for i, (g, _t, _) in enumerate(hunk.lines) if g != " "), 0)
            if not any(_DEFINITION.match(t) for _g, t, _ in hunk.lines[:first + 1]):
                named.append(hunk.section)     # else the change is in the function defined here
            restructured = restructured_by(named, rules) \
                if h.status == "conflict" and direction in ("backport", "forward") else []
            restructured += [r for r in h.rules if r in restructure_ids and r not in restructured] \
                if h.status == "conflict" else []
            func = function_of(original)
            # Only a restructuring that stops the hunk is its cause: not one the hunk merely
            # names while unrelated lines differ (those lead the reason already).
            # The original's changed lines too: a call restated as the old helper
            # (spte_permission_fault()) is still one the target lacks.
            changed = named + [t for g, t, _ in original.lines if g != " "]
            restructured = restructuring_causes(restructured, h.differing, func, changed, target,
                                                h.target_start is not None, rules) if restructured else []
            where = counterpart_reason(touched(original, func, rules), original, target, rules, src,
                                       fp.path, direction, func) if restructured else None
            renamed = unseen_locals(hunk, direction, src, dst, target, fp.path, func) \
                if h.status == "conflict" and h.target_start is None else None
            if renamed:
                h.reason = with_unseen_locals(h.reason, renamed, func)
            elif h.status == "conflict" and h.differing and direction == "backport":
                h.reason = with_walker_writes(h, src, dst, rules)
            if where:
                h.reason = f"{h.reason}; {where}" + (f"; the added lines would go {hint}" if hint else "")
            elif restructured:
                h.reason = (f"{h.reason}; the refactor restructured this code (restructure.toml "
                            f"{', '.join(restructured)}): it has no line-for-line counterpart on the "
                            f"{'old' if direction == 'backport' else 'new'} layout, port it by hand")
            res.hunks.append(h)
            pairs.append((h, hunk, fp.path))
    if direction == "backport":
        calls_of_unported(pairs, target, rules)
        dependent_conflicts(pairs, target)
    for h in res.hunks:
        if h.status != "conflict":
            edits.setdefault(h.target_file, []).append(h)
    diffs = []
    for rel, hs in edits.items():
        original = target.text(rel)
        hs = sorted(hs, key=lambda h: h.target_start)
        for a, b in zip(hs, hs[1:]):
            if a.target_start + a.target_len > b.target_start:
                b.status, b.reason = "conflict", f"overlaps the hunk at {rel}:{a.target_start + 1} in the target"
        regions = [(h.target_start, h.target_len, h.new_lines) for h in hs if h.status != "conflict"]
        new, diff = region_diff(rel, original, regions)
        if new != original:
            res.files[rel] = new
            diffs.append(diff)
    res.diff = "".join(diffs)
    return res


def _into_counterparts(h: HunkResult, hunk, fp, target: Target, rules: Rules,
                       vocabs: tuple[Vocabulary, Vocabulary], ctx) -> tuple[bool, str | None]:
    """A conflicting hunk in a function the refactor introduced, made where the old layout
    does its work when that is exact (refactor.port.counterparts, initialisers): (True,
    None); else (False, where the added lines would go, or None)."""
    rel, (src, dst) = fp.path, vocabs
    for r in touched(hunk, function_of(hunk), rules):
        there = counterpart_hunk(hunk, r, target, rules, src, rel)
        got = port_hunk(there, fp, target, "backport", src, dst, ctx) if there is not None else None
        if got is not None and got.status != "conflict":
            got.status, got.rules = "relocated", list(dict.fromkeys(got.rules + [r.rule_id]))
            name = function_of(there) or "?"
            got.reason = NOTE.format(function=r.function, rule=r.rule_id,
                                     places=f"{name}() ({got.target_file}:{got.target_start + 1})")
            vars(h).update(vars(got))
            return True, None
        edit, hint = walker_writes_port(hunk, r, target, rules, src, rel)
        if edit is not None:
            old = target.lines(rel)[edit.start:edit.start + edit.length]
            new = [x for x in edit.lines if x not in old]
            lacking = prerequisites(new, target, ctx) + missing_names(new, target, ctx)
            if lacking:
                h.reason = f"missing prerequisite: {'; '.join(dict.fromkeys(lacking))}; {h.reason}"
                return False, edit.note.split(": ported to ", 1)[-1].join(("in ", ""))
            h.status, h.target_file, h.rules = "relocated", rel, [r.rule_id]
            h.target_start, h.target_len, h.new_lines = edit.start, edit.length, edit.lines
            h.reason, h.differing = edit.note, []
            return True, None
        if hint:
            return False, hint
    return False, None


def _restate_calls(hunk, rules):
    """The hunk with calls of helpers the refactor replaced written as the old helper
    (restructure.toml [[spte_permissions]]), and the rule id, or (hunk, None)."""
    lines, used = [], None
    for g, t, n in hunk.lines:
        new, rid = old_calls(t, rules)
        used = used or rid
        lines.append((g, new, n))
    return (dataclasses.replace(hunk, lines=lines), used) if used else (hunk, None)


def read_inputs(paths: list[str], stdin: bytes | None = None) -> list[Mail]:
    """The mails of every patch file (or of `stdin` for "-").  Raises PatchError."""
    from refactor.frontend.patch import read_patch_file

    mails: list[Mail] = []
    for p in paths:
        mails += read_mails(*read_patch_file(p, stdin))
    return mails


def port_patches(mails: list[Mail], targets: list[str | Path], names_spec: str | None = None,
                 target_names: str | None = None, rules: Rules | None = None,
                 porter: tuple[str, str] | None = None, subject_prefix: str | None = None) -> PortReport:
    """Port every patch onto every target.  Raises TreeError/RulesError on bad input."""
    from refactor.port.output import mail_text

    rules = rules or load_rules()
    if names_spec:
        rules.names(names_spec)  # a bad specification is bad input before any work
    report = PortReport(targets=[])
    for tpath in targets:
        target = load_target(tpath, rules, target_names)
        if target.layout == "unknown":
            raise RulesError(f"{tpath}: cannot tell the target's MMU layout (no kvm_vcpu_arch in "
                             "arch/x86/include/asm/kvm_host.h)")
        tr = TargetResult(target=target)
        current = target
        earlier: list = []              # the series' patches that conflicted, in order
        for n, mail in enumerate(mails):
            # A series: each patch goes onto the target as the ones before it left it.
            pr = port_one(mail, current, rules, names_spec)
            if pr.result == "ported":
                pr.output = mail_text(pr, target, porter, subject_prefix, rules)
                current = current.patched(pr.files)
            else:
                pr.files = {}
                blame_earlier(pr, earlier)
                earlier.append(unported(mail, n, len(mails)))
            tr.patches.append(pr)
        report.targets.append(tr)
    return report


def build_ported(tr: TargetResult, jobs: int = 2, progress=None):
    """Build KVM of the target with every ported patch applied, in a farm (the tree is never
    written).  Raises BuildError (one line) when the target cannot be built."""
    import hashlib

    from refactor.kernel.build import build_kvm, claim, farm, work_dir

    files = tr.changed
    root = tr.target.root.resolve()
    key = hashlib.sha1(str(root).encode()).hexdigest()[:12]
    base = work_dir()
    name, lock = claim(base, f"port-{key}")
    with lock:
        src = farm(root, base / f"{name}-src", files)
        tr.build = build_kvm(src, base / f"{name}-out", jobs)
    return tr.build
