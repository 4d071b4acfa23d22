"""`kvm-refactor series`: the rewrite as a bisectable, postable patch series."""
from __future__ import annotations

import sys

import click

from refactor.cli.errors import single_line
from refactor.cli.rules_option import rules_option


@click.command("series")
@rules_option
@click.argument("repo")
@click.option("--names", default="upstream", show_default=True, help="walker names (preset or gva=X,ngpa=Y)")
@click.option("--branch", required=True, help="new branch to create from HEAD (must not exist)")
@click.option("--outdir", default=None,
              help="write git format-patch output here (relative to the current directory), with a cover letter")
@click.option("--force", is_flag=True, help="replace the patch files an earlier run left in --outdir")
@click.option("--build", is_flag=True, help="build arch/x86/kvm/ after each commit (incremental Kbuild)")
@click.option("--reroll-count", "reroll", type=int, default=None, help="mark the patches as vN")
@click.option("--previous", default=None,
              help="branch of the previous version, for the changelog and range-diff (default: the branch "
                   "this tool recorded as version N-1)")
@click.option("--subject-prefix", default=None, callback=single_line,
              help="format-patch subject prefix (default PATCH)")
@click.option("--to", "to", multiple=True, help="recipient (default: maintainers from scripts/get_maintainer.pl)")
@click.option("--cc", "cc", multiple=True, help="copy (default: lists and reviewers from scripts/get_maintainer.pl)")
@click.option("--config", "config", type=click.Choice(["builtin", "modules"]), default="builtin",
              show_default=True, help="with --build: KVM, KVM_INTEL, KVM_AMD built in or as modules")
@click.option("--verify", "verify", type=int, default=None, metavar="EVENTS",
              help="run each commit's MMU code natively against the base on EVENTS page-walk events")
@click.option("-j", "--jobs", default=2, show_default=True)
def series_cmd(repo: str, names: str, branch: str, outdir: str | None, force: bool, build: bool,
               reroll: int | None, previous: str | None, subject_prefix: str | None, to: tuple, cc: tuple,
               config: str, verify: int | None, jobs: int) -> None:
    """Write the refactor of REPO's HEAD as one commit per step of rules/steps.toml.

    The checkout is not touched: commits are made with a private index and the
    branch is created at the end. Exit 0 when every step was made (and, with
    --build, built); 1 when a step failed to build; 2 on bad input.
    """
    from refactor.cli.errors import UserError
    from refactor.progress import interactive
    from refactor.errors import RulesError
    from refactor.series.generate import PostOptions, SeriesError, generate
    from refactor.errors import TreeError
    from refactor.kernel.build import BuildError
    from refactor.verify.trees import VerifyError

    bar = None
    if interactive():
        from tqdm import tqdm

        bar = tqdm(total=None, desc="series", unit="step", leave=False, file=sys.stderr)

    def progress(k, total, subject, state):
        # Called when a step starts ("start", "building") and when it ends: a bar
        # moves from the first second; CI gets one line when a step starts and one
        # when it ends.
        line = f"[{k}/{total}] {subject}" + (f": {state}" if state and state != "start" else "")
        if bar is not None:
            bar.total = total
            bar.set_description_str(f"[{k}/{total}] {subject[:50]}", refresh=False)
            bar.set_postfix_str("" if state == "start" else state or "", refresh=True)
            if state not in ("start", "building"):
                bar.update(1)
                bar.write(line, file=sys.stderr)
        else:
            click.echo(line + (" ..." if state == "start" else ""), err=True)

    try:
        post = PostOptions(subject_prefix, list(to) if to else None, list(cc) if cc else None, previous)
        result = generate(repo, names, branch, outdir, build, reroll, progress, jobs=jobs, force=force, post=post,
                          config=config, verify=verify)
    except (SeriesError, RulesError, TreeError, BuildError, VerifyError) as exc:
        raise UserError(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()
    made = [s for s in result.steps if s.commit]
    click.echo(f"{branch}: {len(made)} commits on {result.base[:12]}")
    for s in result.steps:
        if s.build is not None and not s.build.ok:
            first = s.build.errors[0] if s.build.errors else None
            click.echo(f"  build FAILED after '{s.subject}'"
                       + (f": {first.file}:{first.line}: {first.message}" if first else
                          f": {s.build.reason}" if s.build.reason else ""))
        if s.verify is not None and s.verify.divergences:
            click.echo(f"  verify: {s.verify.divergences} divergences from the base after '{s.subject}'")
    for p in result.patches:
        click.echo(f"  {p}")
    failed = any((s.build is not None and not s.build.ok) or (s.verify is not None and s.verify.divergences)
                 for s in result.steps)
    sys.exit(1 if failed else 0)
