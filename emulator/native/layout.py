"""layout.h for the harness glue: the few layout-specific expressions, from rules/.

The glue is written once against the old layout's meaning ("the walker the
CPU uses", "its cached PDPTEs"); for a tree in the new layout the same
expressions are mapped with the rules that map the kernel itself
(`Rules.walker_pointer`, `Rules.walker_access`), under the walker names the
tree really declares.
"""
from __future__ import annotations

import re
from pathlib import Path

from refactor.rules import Rules, WalkerNames

from .features import tree_features

HEADER = "arch/x86/include/asm/kvm_host.h"
GVA_OLD = "vcpu->arch.{member}"


class LayoutError(ValueError):
    pass


def tree_names(rules: Rules, text: str) -> WalkerNames | None:
    """The walker names a new-layout kvm_host.h declares (None: old layout)."""
    walker_t = rules.types["walker"]
    if not re.search(rf"\bstruct\s+{walker_t}\s*{{", text):
        return None
    members = set(re.findall(rf"\bstruct\s+{walker_t}\s+(\w+)\s*;", text))
    for names in rules.presets.values():
        if names.gva in members and names.ngpa in members:
            return names
    # One member only (a rewrite that attached no MMU to the nGPA walker, or a wrong rule
    # that did so): the harness names only the GVA walker, so the tree can still be driven
    # with its own code; whatever refers to the undeclared walker fails to compile, as it
    # would in a kernel build.
    if len(members) == 1:
        for names in rules.presets.values():
            if names.gva in members:
                return names
    if len(members) == 2:
        raise LayoutError(f"{HEADER}: walker members {sorted(members)} match no names preset; "
                          "pass the names used for the rewrite")
    raise LayoutError(f"{HEADER}: cannot find the two struct {walker_t} members")


def _enclosing_struct(text: str, pos: int) -> str | None:
    heads = list(re.finditer(r"^struct\s+(\w+)\s*\{", text[:pos], re.M))
    return heads[-1].group(1) if heads else None


# Where kvm_translate_gpa() may be declared (7.x: mmu.h; a rewrite of 5.10: x86.h).
TRANSLATE_HEADERS = ("arch/x86/kvm/mmu.h", "arch/x86/kvm/x86.h")


def _translate_decl(tree: Path) -> re.Match | None:
    """kvm_translate_gpa()'s definition in the tree's headers, if it has one."""
    for rel in TRANSLATE_HEADERS:
        try:
            text = (tree / rel).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        m = re.search(r"\bkvm_translate_gpa\s*\(([^)]*)\)\s*\{", text)
        if m:
            return m
    return None


def translate_extra(tree: Path) -> int:
    """Arguments kvm_translate_gpa() takes beyond (vcpu, walker, gpa, access, exception):
    7.x added pte_access (0 as hyperv.c passes it)."""
    m = _translate_decl(tree)
    if not m:
        return 0
    return max(0, m.group(1).count(",") + 1 - 5)


def translate_macro(tree: Path, features: dict[str, int]) -> str:
    """H_TRANSLATE_GPA(): kvm_translate_gpa() where the tree has it; a tree without it
    (5.10) translates through the walked MMU's own translate_gpa hook, which is what its
    callers (kvm_read_guest_page_mmu(), the walker) do."""
    head = "#define H_TRANSLATE_GPA(vcpu, w, gpa, access, e) "
    if _translate_decl(tree) is None and features.get("H_HAS_kvm_mmu__translate_gpa"):
        return head + "(w)->translate_gpa(vcpu, gpa, access, e)"
    return head + f"kvm_translate_gpa(vcpu, w, gpa, access, e{', 0' * translate_extra(tree)})"


def layout_header(rules: Rules, tree: Path, names: WalkerNames | None = None) -> tuple[str, dict]:
    """(text of layout.h, description) for the tree."""
    path = tree / HEADER
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise LayoutError(f"{path}: cannot read: {exc.strerror}") from None
    found = tree_names(rules, text)
    new = found is not None
    names = names or found
    walk_member = rules.member_of_kind("walker_pointer")
    old_walker = GVA_OLD.format(member=walk_member)
    # A series step can sit between the layouts (struct kvm_pagewalk declared while the
    # PDPTEs or kvm_translate_gpa()'s struct kvm_mmu * are still old): ask the tree.
    walker_body = re.search(rf"\bstruct\s+{rules.types['walker']}\s*{{(.*?)\n}};", text, re.S)
    decl = _translate_decl(tree)
    param = decl and re.match(r"\s*struct\s+kvm_vcpu\s*\*\s*\w+\s*,\s*struct\s+(\w+)\s*\*",
                              decl.group(1))
    if new and (param is None or param.group(1) == rules.types["walker"]):
        walker = rules.walker_pointer(old_walker, names)
    else:
        walker = old_walker
    if new and walker_body and re.search(r"\bpdptrs\s*\[", walker_body.group(1)):
        pdptrs = rules.walker_access(old_walker, "pdptrs", names)
    else:
        pdptrs = f"{old_walker}->pdptrs"
    # 6.1 caches the PDPTEs in the walked context, 7.x in the vCPU's registers.
    m = re.search(r"\bu64\s+pdptrs\s*\[\s*4\s*\]\s*;", text)
    holder = _enclosing_struct(text, m.start()) if m else None
    has_pdptrs = holder is not None
    if holder == rules.types["vcpu_arch"]:
        pdptrs = "(vcpu)->arch.pdptrs"
    has_vmexit = "exception_vmexit;" in text
    lines = ["/* Generated by emulator/native/layout.py for this tree; do not edit. */",
             f"#define H_GVA_WALKER(vcpu) ({walker})"]
    if has_pdptrs:
        lines += [f"#define H_SAVE_PDPTRS(vcpu, a) memcpy((a), {pdptrs}, 32)",
                  f"#define H_RESTORE_PDPTRS(vcpu, a) memcpy({pdptrs}, (a), 32)"]
    else:
        lines += ["#define H_SAVE_PDPTRS(vcpu, a) ((void)0)",
                  "#define H_RESTORE_PDPTRS(vcpu, a) ((void)0)"]
    if has_vmexit:
        lines += ["#define H_CLEAR_EXCEPTION_VMEXIT(vcpu) memset(&(vcpu)->arch.exception_vmexit, 0, "
                  "sizeof((vcpu)->arch.exception_vmexit))",
                  "#define H_EXCEPTION_VMEXIT_PENDING(vcpu) ((vcpu)->arch.exception_vmexit.pending)"]
    else:
        lines += ["#define H_CLEAR_EXCEPTION_VMEXIT(vcpu) ((void)0)",
                  "#define H_EXCEPTION_VMEXIT_PENDING(vcpu) 0"]
    # 5.x's struct kvm_mmu role (page role and walked CPU state in one), which a rewrite
    # moves to the walker: the glue reads its page role where the tree has no root_role.
    role = rules.walker_access("(mmu)", "mmu_role", names) if new else "(mmu)->mmu_role"
    lines.append(f"#define H_MMU_MMU_ROLE(mmu) ({role})")
    features = tree_features(tree)
    lines.append(translate_macro(tree, features))
    # What the tree declares (features.py): the glue #if's on it, never on a version.
    lines += [f"#define {k} {v}" for k, v in sorted(features.items())]
    desc = {"layout": "new" if new else "old", "names": names.as_dict() if names else None,
            "gva_walker": walker}
    return "\n".join(lines) + "\n", desc
