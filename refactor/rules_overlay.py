"""User rules over the packaged rules/ (`--rules FILE_OR_DIR`).

A fork maintainer says what their own fields and helpers are in a file of
their own, the way Coccinelle takes a user's macro file.  The overlay is
merged into each rules file as refactor.rules reads it, so it is validated
by the same loader with the same errors as the packaged rules:

- a directory: each `NAME.toml` in it is merged over the packaged `NAME.toml`;
- a file named like a packaged one (`layout.toml`): merged over that file;
- any other `.toml` file: its top-level tables are named after the packaged
  files (`[layout.mmu_fields.pkr_mask]`, `[[mappings.calls]]`).

Merging: tables merge key by key (the overlay wins); an array of tables whose
entries have an `id` replaces the entry with the same id and appends the
others; a list of names (macros.toml) is extended; any other value is
replaced.  See docs/rules-overlay.md.
"""
from __future__ import annotations

import copy
import tomllib
from pathlib import Path

from refactor.errors import RulesError

# file name ("layout.toml") -> (overlay table, where it came from)
_ACTIVE: dict[str, tuple[dict, str]] = {}


def _load(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise RulesError(f"{path}: no such rules file") from None
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{path}: {exc}") from None
    except OSError as exc:
        raise RulesError(f"{path}: {exc.strerror}") from None


def packaged_names() -> list[str]:
    from refactor.rules import RULES_DIR

    return sorted(p.name for p in Path(RULES_DIR).glob("*.toml"))


def read_overlay(path: str | Path) -> dict[str, tuple[dict, str]]:
    """The overlay tables of FILE_OR_DIR, by packaged file name."""
    path = Path(path).expanduser()
    known = packaged_names()
    out: dict[str, tuple[dict, str]] = {}
    if path.is_dir():
        files = sorted(path.glob("*.toml"))
        if not files:
            raise RulesError(f"{path}: no .toml rules files in this directory")
        for f in files:
            out[f.name] = (_load(f), str(f))
        return out
    data = _load(path)
    if path.name in known:
        return {path.name: (data, str(path))}
    for key, table in data.items():
        name = f"{key}.toml"
        if name not in known or not isinstance(table, dict):
            raise RulesError(f"{path}: top-level table [{key}] names no rules file "
                             f"(expected one of: {', '.join(n[:-5] for n in known)})")
        out[name] = (table, str(path))
    return out


def merge(base: dict, over: dict) -> dict:
    """`over` merged into a copy of `base` (see the module docstring)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            out[key] = merge(old, value)
        elif isinstance(old, list) and isinstance(value, list) and value \
                and all(isinstance(v, dict) for v in old + value):
            merged = list(old)
            index = {e.get("id"): i for i, e in enumerate(merged) if e.get("id") is not None}
            for entry in value:
                i = index.get(entry.get("id"))
                if i is None:
                    merged.append(copy.deepcopy(entry))
                else:
                    merged[i] = copy.deepcopy(entry)
            out[key] = merged
        elif isinstance(old, list) and isinstance(value, list) \
                and all(isinstance(v, str) for v in old + value):
            out[key] = old + [v for v in value if v not in old]  # name lists grow (macros)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply(name: str, data: dict) -> dict:
    """What refactor.rules reads for rules file `name`: the packaged data with the overlay."""
    hit = _ACTIVE.get(name)
    return merge(data, hit[0]) if hit else data


def overlay_files(name: str | None = None) -> list[str]:
    """Where the active overlay came from (for messages)."""
    return sorted({src for n, (_, src) in _ACTIVE.items() if name is None or n == name})


def activate(path: str | Path | None) -> None:
    """Use FILE_OR_DIR over rules/ from now on in this process, and check the result.

    Raises RulesError naming the user's file when it or the merged rules are bad.
    """
    from refactor.rules import load_rules

    _ACTIVE.clear()
    if path is not None:
        _ACTIVE.update(read_overlay(path))
    _clear_caches()
    if path is None:
        return
    try:
        rules = load_rules()
        if "lint.toml" in _ACTIVE:
            from refactor.lint.registry import load_lint_rules

            load_lint_rules()
        if "macros.toml" in _ACTIVE:
            from refactor.frontend.macros import tables

            tables()
        if "steps.toml" in _ACTIVE:
            from refactor.rules import load_steps

            load_steps(rules)
    except RulesError as exc:
        _ACTIVE.clear()
        _clear_caches()
        raise RulesError(f"{exc} (with --rules {path})") from None


def _clear_caches() -> None:
    import sys

    from refactor.rules import load_rules

    load_rules.cache_clear()
    from refactor.frontend import macros

    macros.tables.cache_clear()
    registry = sys.modules.get("refactor.lint.registry")
    if registry is not None:
        registry.load_lint_rules.cache_clear()
