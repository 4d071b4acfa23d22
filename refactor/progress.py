"""Progress for long work: a bar on a terminal, nothing in CI or when piped."""
from __future__ import annotations

import contextlib
import os
import sys

from tqdm import tqdm


def interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


@contextlib.contextmanager
def bar(total: int | None, desc: str, unit: str = "file"):
    """Yield a callable(label, n=1) that advances the bar by n steps."""
    if not interactive():
        yield lambda label=None, n=1: None
        return
    with tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr) as t:
        def step(label=None, n=1):
            if label:
                t.set_postfix_str(str(label)[-40:], refresh=False)
            t.update(n)
        yield step
