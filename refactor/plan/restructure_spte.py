"""SPTE permission checks through the MMU's page format (rules/restructure.toml
[[spte_permissions]]), on the rewritten code.

Upstream's "use kvm_page_format to test SPTEs": once struct kvm_mmu has a
struct kvm_page_format of its own, an SPTE's access is checked like a guest
PTE's, through a permission bitmap.  Three pieces, all or nothing (a bitmap
nobody fills would fault every access):

- the old helper (is_access_allowed()) is replaced in place by the rule's
  definition (spte_permission_fault(), which answers the opposite question),
  its callers get the vCPU's MMU in a local and call the new one negated;
- the bitmap's filler (update_spte_permission_bitmask()) is the walker's
  parameterized function (__update_permission_bitmask()) called with the
  MMU's format and role bits from its root role;
- every reset of an MMU's SPTE format is preceded by the filler's call.

A tree that lacks what the definition needs (`requires`) keeps its own check.
"""
from __future__ import annotations

import re

from tree_sitter import Node

from refactor.frontend.ctype import function_params, text, walk_nodes
from refactor.frontend.parse import parse
from refactor.index.functions import top_level
from refactor.index.program import function_name
from refactor.plan.edits import Edit, Human
from refactor.plan.parameterize import fill_args
from refactor.rules import Rules

_ASSERT = re.compile(r"\(\s*(?:unlikely\s*\(\s*)?(?:WARN_ON\w*|KVM_BUG_ON\w*|BUG_ON)\s*\(")


def _line_start(data: bytes, pos: int) -> int:
    return data.rfind(b"\n", 0, pos) + 1


def _line_end(data: bytes, pos: int) -> int:
    e = data.find(b"\n", pos)
    return len(data) if e < 0 else e + 1


class _Plan:
    """Edits of one rule over the tree's texts; problems make it give up."""

    def __init__(self, rule, texts: dict[str, bytes]):
        self.rule, self.texts = rule, texts
        self.edits: dict[str, list[Edit]] = {}
        self.problems: list[Human] = []
        self._roots: dict[str, Node] = {}

    def root(self, rel: str) -> Node:
        if rel not in self._roots:
            self._roots[rel] = parse(rel, self.texts[rel], want_macros=False).main.tree.root_node
        return self._roots[rel]

    def add(self, rel: str, start: int, end: int, new: str) -> None:
        data = self.texts[rel]
        self.edits.setdefault(rel, []).append(
            Edit.span(rel, data, start, end, new, self.rule.id, self.rule.why))

    def problem(self, rel: str, node: Node | None, why: str) -> None:
        line = self.texts[rel].count(b"\n", 0, node.start_byte) + 1 if node is not None else 0
        self.problems.append(Human(rel, line, f"{self.rule.id}: {why}"))

    def definitions(self, name: str) -> list[tuple[str, Node]]:
        out = []
        for rel, data in sorted(self.texts.items()):
            if name.encode() not in data:
                continue
            out += [(rel, n) for n in top_level(self.root(rel))
                    if n.type == "function_definition" and function_name(n) == name]
        return out

    def functions_calling(self, name: str):
        """(file, function definition, call) for every call of `name` in a function body."""
        for rel, data in sorted(self.texts.items()):
            if name.encode() not in data:
                continue
            for fn in top_level(self.root(rel)):
                if fn.type != "function_definition" or function_name(fn) == name:
                    continue
                for n in walk_nodes(fn):
                    if n.type == "call_expression" and text(n.child_by_field_name("function")) == name:
                        yield rel, fn, n


def _args(call: Node) -> list[Node]:
    return [a for a in call.child_by_field_name("arguments").named_children if a.type != "comment"]


def _fill(template: str, mmu: str, args: list[str] = ()) -> str:
    out = template.replace("{mmu}", mmu)
    for i, a in enumerate(args):
        out = out.replace("{%d}" % i, a)
    return out


def plan_spte_permissions(plan, files, rules: Rules, apply) -> None:
    """Apply every [[spte_permissions]] rule in force whose requirements the tree meets."""
    off = rules.stage.restructure_off if rules.stage is not None else frozenset()
    for rule in rules.restructure.get("spte_permissions", []):
        if rule.id in off:
            continue  # a later step of the series brings it in (steps.toml restructure)
        texts = {rel: pf.src for rel, pf in files.items()}
        texts.update(plan.results)
        p = rule.params
        if not any(p["old"].encode() in t for t in texts.values()):
            continue
        if any(re.search(rb"\b%s\s*\(" % p["new"].encode(), t) for t in texts.values()):
            continue  # a half-done tree that has the new check already
        if not all(any(re.search(rb"\b%s\b" % w.encode(), t) for t in texts.values()) for w in p.get("requires", ())):
            continue  # an older tree: it keeps its own check (see the rule)
        work = _Plan(rule, texts)
        _replace_helper(work, rules)
        _callers(work)
        _bitmask(work, rules)
        if work.problems:
            plan.humans.extend(work.problems)
            continue
        for rel, edits in work.edits.items():
            plan.post_edits.extend(edits)
            plan.originals.setdefault(rel, texts[rel])
            plan.results[rel] = apply(texts[rel], edits)


def helper_and_caller_edits(rule, texts: dict[str, bytes], rules: Rules) -> dict[str, list[Edit]]:
    """The rule's edits but the bitmap's filler: the helper replaced (and what only it used)
    and its callers, on `texts`; {} where the rule gives up.  A backport's inverse
    (refactor/port/spte_inverse.py) compares hunks with them on an old tree, which has no
    parameterized function for the filler."""
    work = _Plan(rule, texts)
    _replace_helper(work, rules)
    _callers(work)
    return {} if work.problems else work.edits


def _replace_helper(work: _Plan, rules: Rules) -> None:
    p = work.rule.params
    defs = work.definitions(p["old"])
    if len(defs) != 1:
        work.problem(defs[0][0] if defs else next(iter(work.texts)), defs[0][1] if defs else None,
                     f"{p['old']}() is defined {len(defs)} times, not once")
        return
    rel, fn = defs[0]
    params = [text(x) for x in function_params(fn)]
    want = p.get("old_params", [])
    if len(params) != len(want) or any(not re.sub(r"\s", "", t).startswith(re.sub(r"\s", "", w))
                                       for t, w in zip(params, want)):
        work.problem(rel, fn, f"{p['old']}({', '.join(params)}) is not the helper the rule replaces")
        return
    data = work.texts[rel]
    start = fn.start_byte
    prev = fn.prev_sibling
    if prev is not None and prev.type == "comment" and not data[prev.end_byte:fn.start_byte].strip() \
            and data[prev.end_byte:fn.start_byte].count(b"\n") == 1:
        start = prev.start_byte  # its comment says what the old helper returns: it goes with it
    work.add(rel, start, fn.end_byte, p["definition"].strip("\n"))
    # Helpers only the old one read go with it.
    for name in p.get("drop_unused", ()):
        others = work.definitions(name)
        if len(others) != 1:
            continue
        drel, dfn = others[0]
        uses = sum(len(re.findall(rb"\b%s\b" % name.encode(), t)) for t in work.texts.values())
        inside = len(re.findall(rb"\b%s\b" % name.encode(), data[start:fn.end_byte]))
        if uses - inside != 1:
            continue  # named elsewhere (e.g. a tracepoint): kept
        ddata = work.texts[drel]
        s, e = _line_start(ddata, dfn.start_byte), _line_end(ddata, dfn.end_byte)
        if ddata[s - 2:s] == b"\n\n" and ddata[e:e + 1] == b"\n":
            e += 1  # one blank line stays between its neighbours
        work.add(drel, s, e, "")


def _callers(work: _Plan) -> None:
    p = work.rule.params
    by_fn: dict[tuple[str, int], tuple[Node, list[Node]]] = {}
    for rel, fn, call in work.functions_calling(p["old"]):
        by_fn.setdefault((rel, fn.start_byte), (fn, []))[1].append(call)
    mmu_t = re.escape(f"struct {work.rule.params.get('mmu_type', 'kvm_mmu')}")
    value = p["mmu_value"]
    base = re.match(r"\w+", value).group()
    for (rel, _), (fn, calls) in sorted(by_fn.items()):
        data = work.texts[rel]
        body = fn.child_by_field_name("body")
        src = text(body)
        if not re.search(rf"\b{base}\b", " ".join(text(x) for x in function_params(fn))):
            work.problem(rel, fn, f"{function_name(fn)}() has no {base} to reach {value}")
            continue
        have = re.search(rf"{mmu_t}\s*\*\s*(\w+)\s*=\s*{re.escape(value)}\s*;", src)
        mmu = have.group(1) if have else "mmu"
        if have is None and re.search(r"\bmmu\b", src):
            work.problem(rel, fn, f"{function_name(fn)}() already names something mmu")
            continue
        for call in calls:
            args = [text(a) for a in _args(call)]
            new = f"{p['new']}({_fill(p['call'], mmu, args)})"
            par = call.parent
            if par is not None and par.type == "unary_expression" and text(par).startswith("!"):
                work.add(rel, par.start_byte, par.end_byte, new)
            else:
                work.add(rel, call.start_byte, call.end_byte, "!" + new)
        for n in walk_nodes(body):
            if n.type == "comment" and f"{p['old']}()" in text(n):
                m = re.finditer(rf"\b{re.escape(p['old'])}\(\)", text(n))
                for x in m:
                    s = n.start_byte + len(text(n)[:x.start()].encode())
                    work.add(rel, s, s + len(p["old"]), p["new"])
        if have is None:
            _declare(work, rel, data, fn, body, calls, mmu, value)


def _declare(work: _Plan, rel: str, data: bytes, fn: Node, body: Node, calls: list[Node], mmu: str,
             value: str) -> None:
    """`struct kvm_mmu *mmu` first among the declarations; its value after the bail-out checks."""
    stmts = [c for c in body.named_children if c.type != "comment"]
    decls = [s for s in stmts if s.type == "declaration"]
    first_use = min(c.start_byte for c in calls)
    guards, after = [], None
    for s in stmts[len(decls):]:
        if s.end_byte > first_use or s.start_byte > first_use:
            after = s
            break
        cons = s.child_by_field_name("consequence") if s.type == "if_statement" else None
        if cons is None or s.child_by_field_name("alternative") is not None \
                or not re.fullmatch(r"\{?\s*return\b[^;]*;\s*\}?", text(cons).strip()):
            after = s
            break
        guards.append(s)
    indent = "\t"
    decl_t = f"struct {work.rule.params.get('mmu_type', 'kvm_mmu')} *{mmu}"
    bail = [g for g in guards if not _ASSERT.match(text(g.child_by_field_name("condition")))]
    at = _line_start(data, decls[0].start_byte) if decls else _line_end(data, body.start_byte)
    if bail and after is not None:
        # Read the vCPU's MMU after the cheap checks that let the function bail out.
        work.add(rel, at, at, f"{indent}{decl_t};\n" + ("" if decls else "\n"))
        first = after
        while first.prev_sibling is not None and first.prev_sibling.type == "comment":
            first = first.prev_sibling  # a comment says what its statement does: it stays above it
        s = _line_start(data, first.start_byte)
        work.add(rel, s, s, f"{indent}{mmu} = {value};\n")
    else:
        work.add(rel, at, at, f"{indent}{decl_t} = {value};\n" + ("" if decls else "\n"))


def _bitmask(work: _Plan, rules: Rules) -> None:
    p = work.rule.params
    walker_t = f"struct {rules.types['walker']}"
    mmu_t = f"struct {rules.types['mmu']}"
    member = next((x.params.get("member", "fmt") for x in rules.restructure.get("parameterize", [])
                   if x.params.get("inner") == p["inner"]), None)
    if member is None or not any(f.path == member and not f.moves_to_walker for f in rules.mmu_fields.values()):
        work.problem(next(iter(work.texts)), None, f"struct kvm_mmu has no {member} for {p['bitmask']}()")
        return
    after, inner = work.definitions(p["after"]), work.definitions(p["inner"])
    if len(after) != 1 or len(inner) != 1:
        where = (after or inner or [(next(iter(work.texts)), None)])[0]
        work.problem(where[0], where[1], f"{p['bitmask']}() needs {p['inner']}() and {p['after']}() defined once")
        return
    rel, fn = after[0]
    params = [text(x) for x in function_params(fn)]
    if not params or not params[0].replace(" ", "").startswith(walker_t.replace(" ", "") + "*"):
        work.problem(rel, fn, f"{p['after']}() does not take the walker first")
        return
    rest = [re.search(r"(\w+)\s*$", x).group(1) for x in params[1:]]
    role_params = [re.search(r"(\w+)\s*$", text(x)).group(1) for x in function_params(inner[0][1])][1 + len(rest):]
    missing = [r for r in role_params if r not in p["role"]]
    if missing:
        work.problem(rel, fn, f"no SPTE value for {', '.join(missing)} of {p['inner']}()")
        return
    data = work.texts[rel]
    head = text(fn)[:text(fn).index(p["after"])]
    sig = f"{head}{p['bitmask']}({', '.join([f'{mmu_t} *mmu'] + params[1:])})"
    call = fill_args(f"\t{p['inner']}(", [f"&mmu->{member}"] + rest + [_fill(p["role"][r], "mmu") for r in role_params],
                     ");")
    e = _line_end(data, fn.end_byte)
    work.add(rel, e, e, f"\n{sig}\n{{\n{call}\n}}\n")
    # Every reset of an MMU's SPTE format fills its permission bitmap first.
    found = 0
    for reset, spec in p["before"].items():
        for crel, cfn, call_node in work.functions_calling(reset):
            stmt = call_node.parent
            args = _args(call_node)
            if stmt is None or stmt.type != "expression_statement" or len(args) <= spec["mmu"]:
                work.problem(crel, call_node, f"{reset}() is not called as a statement with its MMU")
                continue
            vals = [_fill(spec[r], text(args[spec["mmu"]])) for r in rest if r in spec]
            if len(vals) != len(rest):
                work.problem(crel, call_node, f"no value for every parameter of {p['bitmask']}() at {reset}()")
                continue
            cdata = work.texts[crel]
            s = _line_start(cdata, stmt.start_byte)
            indent = re.match(rb"[ \t]*", cdata[s:]).group().decode()
            prev = cdata[_line_start(cdata, s - 1):s].strip()
            lead = "\n" if prev and not prev.endswith(b"{") else ""
            work.add(crel, s, s, f"{lead}{indent}{p['bitmask']}({', '.join([text(args[spec['mmu']])] + vals)});\n")
            found += 1
    if not found:
        work.problem(rel, fn, f"no reset of an MMU's SPTE format found: {p['bitmask']}() would have no caller")
