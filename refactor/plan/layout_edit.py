"""Edits to the struct definitions themselves, driven by rules/layout.toml.

- struct rsvd_bits_validate becomes struct kvm_page_format and receives the
  fields whose new path is `fmt.<field>` (permissions, pkru_mask);
- struct kvm_mmu loses the fields that move to the walker; a new struct
  kvm_pagewalk, placed just before it, gets them in their original order (with
  their comments) plus `fmt`; kvm_mmu gains `w` and its shadow_zero_check
  becomes `fmt`;
- struct kvm_vcpu_arch loses walk_mmu and nested_mmu and gains the walkers.
"""
from __future__ import annotations

import re

from tree_sitter import Node

from refactor.frontend.ctype import declared, text
from refactor.index.functions import struct_node
from refactor.frontend.parse import ParsedFile
from refactor.rules import Rules, Stage, WalkerNames, cite
from refactor.plan.edits import Edit

# Rule ids this module writes (rules/mappings.toml [[decisions]] says why).
FORMAT_TYPE = cite("rsvd-bits-validate-type")
LAYOUT_FORMAT = cite("layout-format")
LAYOUT_W = cite("layout-w")
LAYOUT_WALKER = cite("layout-walker")
LAYOUT_GVA = cite("layout-gva")
LAYOUT_NGPA = cite("layout-ngpa")
LAYOUT_MEMBER = cite("layout-{member}")


def _member_rule(name: str) -> str:
    return LAYOUT_MEMBER.replace("{member}", name)


def _line_start(src: bytes, pos: int) -> int:
    return src.rfind(b"\n", 0, pos) + 1


def _line_end(src: bytes, pos: int) -> int:
    end = src.find(b"\n", pos)
    return len(src) if end < 0 else end + 1


def _with_comment(src: bytes, node: Node) -> tuple[int, int]:
    """Whole lines of a member, with the comment block right above it."""
    start = _line_start(src, node.start_byte)
    end = _line_end(src, node.end_byte)
    prev = node.prev_sibling
    while prev is not None and prev.type == "comment" and \
            src.count(b"\n", prev.end_byte, start) <= 1 and _line_start(src, prev.start_byte) < start:
        start = _line_start(src, prev.start_byte)
        prev = prev.prev_sibling
    # Blank line before and after: take one with the member, not leave two.
    before = src[_line_start(src, max(0, start - 1)):start]
    after_end = _line_end(src, end) if end < len(src) else end
    if start > 0 and not before.strip() and not src[end:after_end].strip() and after_end > end:
        end = after_end
    return start, end


def _members(spec: Node) -> list[tuple[str, Node]]:
    out = []
    for fd in spec.child_by_field_name("body").named_children:
        if fd.type == "field_declaration":
            for name, _, _ in declared(fd):
                out.append((name, fd))
    return out


def _retype_walker_params(member_text: str, rules: Rules) -> str:
    """`gpa_t (*gva_to_gpa)(..., struct kvm_mmu *mmu, ...)` takes a walker."""
    old = f"struct {rules.types['mmu']} *"
    new = f"struct {rules.types['walker']} *"
    if old not in member_text:
        return member_text
    return re.sub(rf"struct {rules.types['mmu']} \*(\w+)", f"{new}w", member_text)


def plan_layout(files: dict[str, ParsedFile], rules: Rules, names: WalkerNames,
                stage: Stage | None = None) -> list[Edit]:
    stage = stage or Stage()
    edits: list[Edit] = []
    t = rules.types
    fmt_found = struct_node(files, t["old_format"])
    mmu_found = struct_node(files, t["mmu"])
    arch_found = struct_node(files, t["vcpu_arch"])

    def add(pfile: ParsedFile, start: int, end: int, new: str, rule: str, why: str = "") -> None:
        edits.append(Edit(pfile.rel, start, end, new, rule, why,
                          pfile.src[start:end].decode("utf-8", "replace"),
                          pfile.src.count(b"\n", 0, start) + 1))

    format_lines: list[str] = []
    if mmu_found is not None and stage.introduce_walker:
        format_lines = _split_mmu(mmu_found, rules, names, stage, add)
    if mmu_found is not None and stage.rename_format:
        _rename_member_types(mmu_found, rules, add)
    # struct rsvd_bits_validate -> struct kvm_page_format (+ moved format fields).
    if fmt_found is not None and stage.rename_format:
        fpf, fspec = fmt_found
        name = fspec.child_by_field_name("name")
        add(fpf, name.start_byte, name.end_byte, t["format"], FORMAT_TYPE)
        close = fspec.child_by_field_name("body").end_byte - 1
        if format_lines:
            at = _line_start(fpf.src, close)
            # A moved member may bring its blank line: none before the closing brace.
            add(fpf, at, at, "\n" + "".join(format_lines).rstrip("\n") + "\n", LAYOUT_FORMAT,
                rules.rule(LAYOUT_FORMAT).why)
    if arch_found is not None and stage.introduce_walker:
        _walker_members(arch_found, rules, names, add)
    return edits


def _rename_member_types(found, rules: Rules, add) -> None:
    """Members of struct kvm_mmu that stay, typed with the old format struct, take the new name."""
    pf, mmu = found
    t = rules.types
    for name, fd in _members(mmu):
        f = rules.mmu_fields.get(name)
        if f is not None and (f.dest == "walker" or f.path != name):
            continue  # moved or replaced by the layout itself
        tnode = fd.child_by_field_name("type")
        if tnode is not None and tnode.type == "struct_specifier" and \
                text(tnode.child_by_field_name("name")) == t["old_format"]:
            n = tnode.child_by_field_name("name")
            add(pf, n.start_byte, n.end_byte, t["format"], FORMAT_TYPE)


def _split_mmu(found, rules: Rules, names: WalkerNames, stage: Stage, add) -> list[str]:
    """Move the walker's fields out of struct kvm_mmu; return the format fields' text."""
    pf, mmu = found
    src = pf.src
    t = rules.types
    walker_lines: list[str] = []
    format_lines: list[str] = []
    has_fmt_target = False
    for name, fd in _members(mmu):
        f = rules.mmu_fields.get(name)
        if f is None or f.dest != "walker":
            continue
        start, end = _with_comment(src, fd)
        chunk = src[start:end].decode("utf-8", "replace")
        add(pf, start, end, "", _member_rule(name), f.why)
        if f.path == name:
            narrowed = stage.narrow and stage.narrow_only is None
            walker_lines.append(_retype_walker_params(chunk, rules) if narrowed else chunk)
        elif f.path.startswith("fmt."):
            format_lines.append(chunk)
        elif f.path == "fmt":
            has_fmt_target = True
    members = dict(_members(mmu))
    # The walker pointer goes before the first data member that stays.
    anchor = next((fd for n, fd in _members(mmu)
                   if rules.mmu_fields.get(n) is not None and rules.mmu_fields[n].dest == "mmu"
                   and "(*" not in text(fd)), None)
    if anchor is not None:
        pos = _line_start(src, anchor.start_byte)
        indent = re.match(rb"[ \t]*", src[pos:]).group().decode()
        add(pf, pos, pos, f"{indent}struct {t['walker']} *w;\n\n", LAYOUT_W,
            rules.rule(LAYOUT_W).why)
    # Fields that stay in struct kvm_mmu under a new name (shadow_zero_check -> fmt).
    for name, fd in members.items():
        f = rules.mmu_fields.get(name)
        if f is not None and f.dest == "mmu" and f.path != name:
            add(pf, fd.start_byte, fd.end_byte, f"struct {t['format']} {f.path};", _member_rule(name), f.why)
    # struct kvm_pagewalk, right before struct kvm_mmu's definition.
    holder = mmu.parent if mmu.parent is not None and mmu.parent.type in ("declaration",
                                                                          "type_definition") else mmu
    pos = _line_start(src, holder.start_byte)
    body = "".join(walker_lines).rstrip("\n") + "\n" if walker_lines else ""
    if has_fmt_target or format_lines:
        indent = re.match(r"[ \t]*", walker_lines[0]).group() if walker_lines else "\t"
        body += f"{chr(10) if walker_lines else ''}{indent}struct {t['format']} fmt;\n"
    # A callback that still takes a struct kvm_mmu (before the walker is passed
    # instead) needs the tag declared ahead of the walker.
    forward = f"struct {t['mmu']};\n\n" if f"struct {t['mmu']} *" in body else ""
    add(pf, pos, pos, f"{forward}struct {t['walker']} {{\n{body}}};\n\n", LAYOUT_WALKER,
        rules.rule(LAYOUT_WALKER).why)
    return format_lines


def _walker_members(found, rules: Rules, names: WalkerNames, add) -> None:
    """kvm_vcpu_arch: the walkers come; walk_mmu and nested_mmu go once removed."""
    apf, arch = found
    t = rules.types
    amembers = dict(_members(arch))
    gva_line = f"struct {t['walker']} {names.gva};\n"
    gva_comment = "/* Walker of the CR0/CR3/CR4 page tables of the running level. */\n"
    placed_gva = False
    for member, info in rules.vcpu_old.items():
        fd = amembers.get(member)
        if fd is None or info.kind not in ("walker_pointer", "walk_only_mmu"):
            continue
        indent = re.match(rb"[ \t]*", apf.src[_line_start(apf.src, fd.start_byte):]).group().decode()
        if info.removed:
            start, end = _with_comment(apf.src, fd)
            new = indent + gva_comment + indent + gva_line if info.kind == "walker_pointer" else ""
            add(apf, start, end, new, _member_rule(member))
            placed_gva |= info.kind == "walker_pointer"
        elif info.kind == "walker_pointer":
            end = _line_end(apf.src, fd.end_byte)
            add(apf, end, end, indent + gva_comment + indent + gva_line, LAYOUT_GVA)
            placed_gva = True
    if not placed_gva and amembers:
        last = list(amembers.values())[-1]
        end = _line_end(apf.src, last.end_byte)
        add(apf, end, end, "\t" + gva_comment + "\t" + gva_line, LAYOUT_GVA)
    # The nGPA walker goes next to the MMU that shadows it.
    guest = next((amembers[n] for n, m in rules.vcpu_old.items()
                  if m.kind == "mmu" and m.walker == "ngpa" and n in amembers), None)
    if guest is not None:
        end = _line_end(apf.src, guest.end_byte)
        indent = re.match(rb"[ \t]*", apf.src[_line_start(apf.src, guest.start_byte):]).group().decode()
        add(apf, end, end, f"{indent}/* L1's EPT/NPT tables, walked for L2 GPAs: guest_mmu.w. */\n"
            f"{indent}struct {t['walker']} {names.ngpa};\n", LAYOUT_NGPA)
