"""What the hunks of one file of a patch share: the declarations of the whole file patch,
the names the patch defines itself, the walker locals a hunk adds, and the functions whose
constant walker parameter it drops."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from refactor.frontend.patch import FilePatch
from refactor.port.headings import heading
from refactor.port.inverse import constant_params, format_params
from refactor.port.lexicon import Vocabulary, declared_types
from refactor.port.locate import Offsets
from refactor.port.locals import added_walker_locals
from refactor.port.parameterize_inverse import parameterized_hunks
from refactor.port.spte_inverse import spte_hunks
from refactor.port.target import Target


@dataclass
class FileContext:
    """What the hunks of one file share: declarations and learned substitutions."""

    patch_types: dict[str, str]
    words: set[str]                # tokens whose differences the layout explains
    defined_by_patch: set[str]
    # Per function: walker or page-format locals a hunk adds (inlined in the others on a backport).
    walker_locals: dict = field(default_factory=dict)
    # Functions whose constant walker parameter the patch drops (inverse.constant_params).
    constant_params: dict = field(default_factory=dict)
    # Functions whose walker parameter the patch retypes to its page format (inverse.format_params).
    format_params: dict = field(default_factory=dict)
    # Hunks that only make [[parameterize]]'s change (parameterize_inverse.parameterized_hunks).
    parameterized: dict = field(default_factory=dict)
    # Hunks that only make [[spte_permissions]]'s change (spte_inverse.spte_hunks).
    spte: dict = field(default_factory=dict)
    # Where the file's hunks already ported stand in the target (the offset patch(1) learns).
    offsets: Offsets = field(default_factory=Offsets)


def walker_uses(lines: list[str], rules) -> set[str]:
    """Variables of a new-layout patch that no line of it declares (a function's local declared
    above its hunks) but that it uses only to reach members the new layout has on the walker
    alone (`gva_walk->get_pdptr`, `w->cpu_role`): walkers, as layout.toml `mmu_fields` says."""
    walker = {f.path.split(".")[0] for f in rules.mmu_fields.values() if f.moves_to_walker}
    mmu = {f.path.split(".")[0] for f in rules.mmu_fields.values() if not f.moves_to_walker}
    only = walker - mmu
    seen: dict[str, set[str]] = {}
    for line in lines:
        for m in re.finditer(r"(?<![\w>.])([A-Za-z_]\w*)->(\w+)", line):
            seen.setdefault(m.group(1), set()).add(m.group(2))
    return {v for v, members in seen.items() if members & only and not members & mmu}


def file_context(fp: FilePatch, src: Vocabulary, dst: Vocabulary, target: Target) -> FileContext:
    # The post-image's declarations last: they say what the added lines mean (a parameter
    # the patch narrows to a walker is one there, whatever the `@@` headings still say).
    all_lines = ([h.section for h in fp.hunks] + [t for h in fp.hunks for tag, t, _ in h.lines if tag != "+"]
                 + [t for h in fp.hunks for tag, t, _ in h.lines if tag == "+"])
    types = declared_types(all_lines, src)
    if target.layout == "old":      # a backport (or no translation at all)
        for var in walker_uses(all_lines, src.rules):
            types.setdefault(var, "walker")
    words = set()
    for v in (src, dst):
        words |= v.old_markers() | v.new_markers()
        words |= set(v.rules.vcpu_old) | set(v.rules.new_fields) | {"vcpu", "arch"}
        words |= {f.name for f in v.rules.mmu_fields.values()}
        words |= {p for f in v.rules.mmu_fields.values() for p in f.path.split(".")}
        words |= {"struct", v.rules.types["mmu"], v.rules.types["walker"]}
        words |= {c.function for c in v.rules.calls} | {c.new for c in v.rules.calls}
    words |= set(types)
    defined = set()
    for _h in fp.hunks:
        for tag, text, _ in _h.lines:
            if tag != " ":
                m = re.match(r"^(?:static\s+|inline\s+|const\s+|struct\s+|unsigned\s+)*\w+[\s\*]+(\w+)\s*\(", text)
                if m:
                    defined.add(m.group(1))
                m = re.match(r"^\s*#\s*define\s+(\w+)", text)
                if m:
                    defined.add(m.group(1))
    walker_locals: dict = {}
    for h in fp.hunks:
        found = added_walker_locals(h, src)
        if found:
            walker_locals.setdefault(heading(h), []).extend(found)
    return FileContext(patch_types=types, words=words, defined_by_patch=defined, walker_locals=walker_locals,
                       constant_params=constant_params(fp, src.rules), format_params=format_params(fp, src.rules),
                       parameterized=parameterized_hunks(fp, src.rules) if target.layout == "old" else {},
                       spte=spte_hunks(fp, src.rules, target) if target.layout == "old" else {})
