"""Rendering an index for people (text) and programs (JSON)."""
from __future__ import annotations

import json
from collections import defaultdict

from refactor.index.indexer import Index


def scan_json(index: Index) -> str:
    data = index.to_json()
    if index.layout == "mixed":
        from refactor.index.layout_files import by_file
        from refactor.rules import load_rules

        data["layout_by_file"] = {f: {"old": dict(old), "new": dict(new)}
                                  for f, (old, new) in sorted(by_file(index, load_rules()).items())}
    return json.dumps(data, indent=1, sort_keys=False)


def scan_text(index: Index, include_text: bool = False) -> str:
    """References grouped by file and function, like a reader walks the tree."""
    out = [f"tree: {index.tree}", f"version: {index.version or 'unknown'}",
           f"layout: {index.layout}" + (f" (walkers: {', '.join(index.walkers)})" if index.walkers else "")]
    if index.layout == "mixed":
        out += _mixed_files(index)
    out += _unplaced(index)
    groups: dict[tuple[str, str], list] = defaultdict(list)
    code = comments = 0
    for ref in index.references:
        if ref.context != "code":
            comments += 1
            if not include_text:
                continue
        else:
            code += 1
        groups[(ref.file, ref.function or "(file scope)")].append(ref)
    for (file, func), refs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[1][0].line)):
        out.append("")
        out.append(f"{file}: {func}")
        for r in refs:
            extra = []
            if r.base_type:
                extra.append(f"base {r.base_type}")
            if r.callee:
                extra.append(f"arg {r.argument_index} of {r.callee}")
            if r.known_target:
                extra.append(f"set to {r.known_target}")
            if r.via != "tree":
                extra.append(f"lexer only, {r.region}")
            if r.context != "code":
                extra.append(r.context)
            tail = f"  [{'; '.join(extra)}]" if extra else ""
            out.append(f"  {r.line}:{r.column + 1}  {r.symbol:<18} {r.use:<18} {r.expression[:70]}{tail}")
    out.append("")
    regions = sum(1 for u in index.unparsed if "line" in u)
    files = [u for u in index.unparsed if "line" not in u]
    out.append(f"{code} references in code, {comments} in comments/strings"
               f"{'' if include_text else ' (shown with --all)'}; "
               f"{regions} regions read by the lexer only; {len(files)} files not parsed")
    for u in files:
        out.append(f"  not parsed: {u['file']}: {u['reason']}")
    return "\n".join(out) + "\n"


def _mixed_files(index: Index) -> list[str]:
    """A half-done tree: per file, the old-layout names it still uses and the new ones."""
    from refactor.index.layout_files import by_file, describe
    from refactor.rules import load_rules

    lines = ["", "files (old-layout names still used | new-layout names):"]
    for file, (old, new) in sorted(by_file(index, load_rules()).items()):
        state = "old" if not new else "new" if not old else "mixed"
        lines.append(f"  {state:<5} {file}: old: {describe(old)} | new: {describe(new)}")
    return lines


def _unplaced(index: Index) -> list[str]:
    """Members rules/ does not place: `rewrite` reports each use; --rules can place them."""
    from refactor.index.layout_files import unplaced_members
    from refactor.rules import load_rules

    rules = load_rules()
    fields, members = unplaced_members(index.program, rules)
    lines = [f"unplaced: struct {rules.types['mmu']} {', '.join(fields)} (not in rules/: give them "
             "with --rules, see docs/rules-overlay.md)"] if fields else []
    if members:
        lines.append(f"unplaced: struct {rules.types['vcpu_arch']} {', '.join(members)}")
    return lines
