"""A macro parameter that only reaches walker fields is named like a walker
(rules/restructure.toml [[macro_param]]), on the rewritten code.

`#define PT_HAVE_ACCESSED_DIRTY(mmu) (!(mmu)->cpu_role.base.ad_disabled)`
keeps working once cpu_role lives in the walker (its callers pass one), but
its parameter now names what it is not: upstream writes `(w)`.  Renamed only
where every use of the parameter in the body is `(p)->field` or `p->field`
with a field of the walker (layout.toml), and the new name is not a parameter
or word of the macro already.
"""
from __future__ import annotations

import re

from refactor.plan.edits import Edit
from refactor.rules import Rules, WalkerNames

_DEFINE = re.compile(rb"^[ \t]*#[ \t]*define[ \t]+(\w+)\(([^)]*)\)([^\n]*(?:\\\n[^\n]*)*)", re.M)


def plan_macro_params(rel: str, data: bytes, rules: Rules, names: WalkerNames) -> list[Edit]:
    edits: list[Edit] = []
    off = rules.stage.restructure_off if rules.stage is not None else frozenset()
    fields = {f.path.split(".")[0] for f in rules.mmu_fields.values() if f.moves_to_walker}
    for rule in rules.restructure.get("macro_param", []):
        if rule.id in off or b"#" not in data:
            continue
        new, olds = rule.params.get("name", "w"), set(rule.params.get("from", ("mmu",)))
        for m in _DEFINE.finditer(data):
            params = [p.strip() for p in m.group(2).decode().split(",")]
            body = m.group(3).decode("utf-8", "surrogateescape")
            for i, p in enumerate(params):
                if p not in olds or new in params or re.search(rf"\b{new}\b", body):
                    continue
                uses = list(re.finditer(rf"\b{p}\b", body))
                good = re.findall(rf"(?:\(\s*{p}\s*\)|\b{p})\s*->\s*(\w+)", body)
                if not uses or len(good) != len(uses) or not set(good) <= fields:
                    continue
                why = names.fill(rule.why)
                ps = m.start(2) + len(",".join(m.group(2).decode().split(",")[:i]).encode()) + (1 if i else 0)
                raw = m.group(2).decode().split(",")[i]
                lead = len(raw) - len(raw.lstrip())
                s = ps + lead
                edits.append(Edit(rel, s, s + len(p), new, rule.id, why, p, data.count(b"\n", 0, s) + 1))
                for u in uses:
                    s = m.start(3) + len(body[:u.start()].encode("utf-8", "surrogateescape"))
                    edits.append(Edit(rel, s, s + len(p), new, rule.id, why, p, data.count(b"\n", 0, s) + 1))
    return edits
