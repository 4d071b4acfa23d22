"""What the rewriter knows of a rebuilt expression, and the conversions between walkers and MMUs.

A RebuiltExpr (Val) is a rebuilt expression and what it designates (a walker, an MMU, or
something else); Conversions turns one into the other where a consumer needs
it, always through the rules (mappings.toml bases and *-as-builder exprs).
RewriteContext (Context) is what every function's rewrite shares: the rules, the walker
names, the narrowing decisions and the edits so far.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from tree_sitter import Node

from refactor.rules import Rules, WalkerNames


@dataclass
class RebuiltExpr:
    """A rebuilt expression and what it designates (short name in the rewriter: Val)."""

    text: str
    kind: str = "other"  # walker_obj | walker_ptr | mmu_obj | mmu_ptr | other
    old: str = ""  # squashed original text
    role: str | None = None  # walker role an MMU object stands for (gva/ngpa)
    rule: str | None = None  # rule that produced it (for edits)
    from_member: str | None = None  # vcpu-arch member it came from


@dataclass
class RewriteContext:
    """What every function's rewrite shares (short name in the rewriter: Context)."""

    rules: Rules
    names: WalkerNames
    narrowed: set  # {(function, var)}
    renames: dict  # (function, var) -> new name
    walker_params: dict  # function -> {index}
    callee: object  # name -> definition name or None
    walker_macros: object  # (macro, index) -> bool
    mmu_param_funcs: dict  # function -> {index} that stay struct kvm_mmu *
    fnptr_walker: dict  # walker fn-pointer field -> {index}
    relevant: re.Pattern = None
    edits: list = field(default_factory=list)
    hits: dict = field(default_factory=dict)  # (file, fragment start) -> offsets of relevant words

    @property
    def relevant_bytes(self) -> re.Pattern:
        if not hasattr(self, "_rb"):
            self._rb = re.compile(self.relevant.pattern.encode())
        return self._rb
    humans: list = field(default_factory=list)


_ARCH = re.compile(r"arch(?:\.|->)(\w+)\Z")


class Conversions:
    """Walker <-> MMU conversions of FunctionRewriter (needs self.ctx, self.rules, self.scope,
    self.human)."""

    def fill(self, template: str, arch: str | None = None) -> str:
        out = self.ctx.names.fill(template, base="{base}")
        if arch is not None and out.startswith("vcpu->arch"):
            out = arch + out[len("vcpu->arch"):]
        return out

    # ---- conversions (all mappings come from rules) -------------------------
    def as_walker(self, v: Val, node: Node) -> str:
        """Pointer text of the walker a value stands for."""
        if v.kind == "walker_ptr":
            return v.text
        if v.kind == "walker_obj":
            return "&" + v.text
        if v.kind == "mmu_obj":
            base = self.rules.base_for(arch_form(v.old))
            if base.generic:
                return f"{v.text}.w"
            arch = arch_prefix(v.text)
            new = self.fill(base.new, arch)
            return new if base.new_is == "ptr" else "&" + new
        if v.kind == "mmu_ptr":
            base = self.rules.base_for(arch_form(v.old))
            arch = arch_prefix(v.text)
            if base.known_guest_mmu and self._known_guest_mmu(node, v):
                return "&" + self.fill(base.known_guest_mmu, arch)
            if base.generic:
                return f"{postfix(v.text)}->w"
            new = self.fill(base.new, arch)
            return new if base.new_is == "ptr" else "&" + new
        self.human(node, "a walker is needed here but the value's type is unknown")
        return v.text

    def walker_access(self, v: Val, node: Node, path: str) -> str:
        if v.kind == "walker_obj":
            return f"{v.text}.{path}"
        if v.kind == "mmu_obj":
            ptr = self.as_walker(v, node)
            return f"{ptr[1:]}.{path}" if ptr.startswith("&") else f"{ptr}->{path}"
        ptr = self.as_walker(v, node)
        if ptr.startswith("&") and re.fullmatch(r"&[\w>.\-]+", ptr):
            return f"{ptr[1:]}.{path}"
        return f"{postfix(ptr)}->{path}"

    def as_mmu(self, v: Val, node: Node) -> str:
        """A struct kvm_mmu * for a value that became a walker (rules: *-as-builder)."""
        if v.kind in ("mmu_ptr", "other"):
            return v.text
        if v.kind == "mmu_obj":
            return "&" + v.text
        info = self.rules.vcpu_old.get(v.from_member or "")
        rule_id = info.as_builder if info is not None else None
        if rule_id is None:
            self.human(node, "a walker is passed where a struct kvm_mmu * is still required")
            return v.text
        return self.fill(self.rules.expr(rule_id).new, arch_prefix(v.text))

    def _known_guest_mmu(self, node: Node, v: Val) -> bool:
        """Was the pointer just set to the MMU whose walker is {ngpa} (nested EPT/NPT set-up)?"""
        values = self.scope.values_before(v.old, node.start_byte)
        m = re.search(r"&.*arch(?:\.|->)(\w+)\Z", values[-1]) if values else None
        info = self.rules.vcpu_old.get(m.group(1)) if m else None
        return info is not None and info.kind == "mmu" and info.walker == "ngpa"


def arch_prefix(text: str) -> str:
    """`vcpu->arch` out of `vcpu->arch.walk_mmu` (or `&svm->vcpu.arch.root_mmu`)."""
    t = text.lstrip("&")
    m = re.match(r"(.*arch)(?:\.|->)\w+\Z", t, re.S)
    return m.group(1) if m else "vcpu->arch"


def arch_form(old: str) -> str:
    """The rules' spelling of an old member expression: vcpu->arch.<member>."""
    m = _ARCH.search(old.lstrip("&"))
    return f"vcpu->arch.{m.group(1)}" if m else old


def postfix(text: str) -> str:
    return text if re.fullmatch(r"[\w>.\-\[\]]+", text) and not text.startswith("&") else f"({text})"


# The names the rewriter (and restructure.py) use.
Val = RebuiltExpr
Context = RewriteContext
