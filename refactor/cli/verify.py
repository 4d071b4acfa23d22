"""`kvm-refactor verify`: run the tree's own MMU code, pristine and rewritten, on the same events."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from refactor.cli.rules_option import rules_option


@click.command("verify")
@rules_option
@click.argument("tree", type=click.Path(path_type=Path))
@click.option("--names", default="upstream", show_default=True,
              help="walker names of the rewrite (preset or gva=X,ngpa=Y)")
@click.option("--branch", default=None,
              help="verify every commit of BASE..BRANCH of the git repository TREE instead")
@click.option("--base", default="HEAD", show_default=True, help="with --branch: the pristine commit")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--events", "count", type=click.IntRange(0), default=100_000, show_default=True,
              help="fuzz events (0: the corpus only)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where shrunk divergences are written (default ./verify-out)")
@click.option("--mutants", "mutants", is_flag=True,
              help="instead: apply every wrong-rule mutant (refactor/verify/mutants.py) to TREE "
                   "and execute it; exit 1 if one that changes the C survives")
@click.option("--model", "fidelity", is_flag=True,
              help="instead: the Python model (emulator) against the native engine of the "
                   "pristine TREE; differences are classified (model fidelity)")
@click.option("--only", multiple=True, help="with --mutants: only this mutant (repeatable)")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("-j", "--jobs", type=click.IntRange(1), default=None,
              help="worker processes, one series step each (default: the number of cores)")
@click.option("--cluster", default=None, metavar="ADDRESS",
              help="run the steps on a Dask scheduler (docs/cluster.md)")
def verify_cmd(tree: Path, names: str, branch: str | None, base: str, seed: int, count: int,
               out_dir: Path | None, mutants: bool, fidelity: bool, only: tuple[str, ...],
               fmt: str, jobs: int | None, cluster: str | None) -> None:
    """Build TREE's own MMU code natively, pristine and rewritten, and compare every event.

    Runs emulator/corpus/*.jsonl and a seeded fuzz campaign (generated once,
    fed to every engine). Exit 0: no divergence; 1: some (each with its
    shrunk trace and the rewrite sites of the functions involved); 2: bad input.
    """
    from refactor.cli.errors import UserError
    from refactor.execute import ExecuteError
    from refactor.execute.verify_steps import executor
    from refactor.verify import VerifyError, verify_branch, verify_tree

    def say(msg: str) -> None:
        click.echo(f"verify: {msg}", err=True)

    try:
        if mutants:
            from refactor.verify.mutants import run_mutants

            result = run_mutants(tree, names, seed=seed, events=count, only=list(only) or None,
                                 progress=say, out_dir=Path(out_dir) if out_dir else None)
            click.echo(json.dumps(result.as_dict(), indent=1) if fmt == "json" else result.text())
            sys.exit(0 if result.survivors == 0 else 1)
        if fidelity:
            from refactor.verify.check import check_tree
            from refactor.verify.fidelity import model_fidelity

            result = model_fidelity(check_tree(tree), seed=seed, events=count, out_dir=out_dir,
                                    progress=say)
            click.echo(json.dumps(result.as_dict(), indent=1) if fmt == "json" else result.text())
            sys.exit(1 if result.differences else 0)
        execute = executor(jobs, cluster, lambda uid, n=1: say(f"{uid} done"))
        if branch:
            report = verify_branch(tree, base, branch, names=names, seed=seed, events=count,
                                   out_dir=out_dir, progress=say, execute=execute)
        else:
            report = verify_tree(tree, names, seed=seed, events=count, out_dir=out_dir,
                                 progress=say, execute=execute)
    except (VerifyError, ExecuteError) as exc:
        raise UserError(str(exc)) from None
    click.echo(json.dumps(report.as_dict(), indent=1) if fmt == "json" else report.text())
    if report.incomplete:
        raise UserError(report.incomplete)
    sys.exit(1 if report.divergences else 0)
