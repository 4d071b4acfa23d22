"""`kvm-refactor emulate ...`: run traces, fuzz, mutants (click group `emulate`).

Exit codes: 0 equal / all killed, 1 divergence / a mutant survived,
2 bad input (one line naming the file and line, never a traceback).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from refactor.cli.rules_option import rules_option

from refactor.rules import RulesError, load_rules


class EmulateError(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"kvm-refactor emulate: error: {self.format_message()}", err=True)


def _names(spec: str):
    try:
        rules = load_rules()
        return rules, rules.names(spec)
    except RulesError as exc:
        raise EmulateError(str(exc)) from None


def _emit(data: dict, fmt: str, text: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=False))
    else:
        click.echo(text)


def _mutant(name: str | None, rules, names):
    """(rules, module) for the new layout: the real one, or a named mutant."""
    if not name:
        return rules, None
    from .mutants import MUTANTS, find, mutant_model

    try:
        return mutant_model(find(name), rules, names)
    except KeyError:
        raise EmulateError(f"unknown mutant {name!r} (known: "
                           f"{', '.join(m.name for m in MUTANTS)})") from None


NAMES_OPT = click.option("--names", "names_spec", default="upstream", show_default=True,
                         help="walker names: a preset (upstream, v1, cr3) or gva=X,ngpa=Y")
FORMAT_OPT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                          show_default=True)
ENGINE_OPT = click.option("--engine", type=click.Choice(["python", "native"]), default="python",
                          show_default=True,
                          help="native: execute kernel trees' own C (docs/native-engine.md)")
JOBS_OPT = click.option("--jobs", "-j", "jobs", type=click.IntRange(1), default=None,
                        help="local worker processes (default: the number of cores)")
CLUSTER_OPT = click.option("--cluster", default=None, metavar="ADDRESS",
                           help="run the units on a Dask scheduler (tcp://HOST:PORT; needs "
                                "kvm-refactor[cluster]; docs/cluster.md)")
TREE_OPT = click.option("--tree", "trees", multiple=True,
                        type=click.Path(file_okay=False, exists=True, path_type=Path),
                        help="full kernel tree for --engine native; one: the Python model "
                             "against it; two: the first against the second")


def _native_pair(trees: tuple[Path, ...], rules):
    """(make_old, make_new, labels) for --engine native; bad input exits 2."""
    from .machine import old_model
    from .native.engines import EngineError, build_all, factory, label

    if not 1 <= len(trees) <= 2:
        raise EmulateError("--engine native takes one or two --tree")
    try:
        builds = build_all(trees)
    except EngineError as exc:
        raise EmulateError(str(exc)) from None
    if len(builds) == 1:
        return (lambda: old_model(rules)), factory(builds[0]), ("python model", label(builds[0]))
    return factory(builds[0]), factory(builds[1]), (label(builds[0]), label(builds[1]))


def _check_stub(*results: dict) -> None:
    from .native.engines import stub_hit

    for r in results:
        msg = stub_hit(r)
        if msg:
            raise EmulateError(f"native engine: {msg} (a gap of the harness, not a result)")


@click.group("emulate")
def emulate() -> None:
    """Executable model of guest paging and of KVM's MMU plumbing in both layouts."""


@emulate.command("run")
@rules_option
@click.argument("trace", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--mutant", default=None, help="compare against a built-in mutant instead")
@ENGINE_OPT
@TREE_OPT
@NAMES_OPT
@FORMAT_OPT
def run_cmd(trace: Path, mutant: str | None, engine: str, trees: tuple[Path, ...],
            names_spec: str, fmt: str) -> None:
    """Run TRACE (JSON Lines) through both layouts and compare every result."""
    from .machine import new_model, old_model
    from .trace import TraceError, jsonable, read_events, run_pair

    rules, names = _names(names_spec)
    new_rules, module = _mutant(mutant, rules, names)
    labels = None
    if engine == "native":
        make_old, make_new, labels = _native_pair(trees, rules)
        old, new = make_old(), make_new()
    else:
        if trees:
            raise EmulateError("--tree needs --engine native")
        old, new = old_model(rules), new_model(new_rules, names, module)
    from .native.build import EngineError

    try:
        report = run_pair(read_events(trace), old, new, str(trace))
    except (TraceError, EngineError) as exc:
        raise EmulateError(str(exc)) from None
    if report.divergence is not None and labels:
        _check_stub(report.divergence.old, report.divergence.new)
    data = {"trace": str(trace), "names": names.as_dict(), "events": report.events,
            "translations": report.translations, "equal": report.divergence is None}
    if labels:
        data["engine"] = "native"
        data["compared"] = list(labels)
    if report.divergence is None:
        _emit(data, fmt, f"{trace}: {report.events} events, {report.translations} translations: "
                         f"both layouts agree")
        return
    d = report.divergence
    data["divergence"] = jsonable(d.as_dict())
    _emit(data, fmt, f"{trace}:{d.line}: divergence at event {d.event} ({d.ev['ev']})\n"
                     f"  event: {json.dumps(d.ev)}\n"
                     f"  old:   {json.dumps(jsonable(d.old))}\n"
                     f"  new:   {json.dumps(jsonable(d.new))}")
    sys.exit(1)


@emulate.command("fuzz")
@rules_option
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--events", "count", type=click.IntRange(1), default=100000, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where a shrunk divergence is written (default: current directory)")
@click.option("--mutant", default=None, help="fuzz against a built-in mutant (demo of shrinking)")
@ENGINE_OPT
@TREE_OPT
@NAMES_OPT
@FORMAT_OPT
@JOBS_OPT
@CLUSTER_OPT
def fuzz_cmd(seed: int, count: int, out_dir: Path | None, mutant: str | None, engine: str,
             trees: tuple[Path, ...], names_spec: str, fmt: str, jobs: int | None,
             cluster: str | None) -> None:
    """Random valid page tables, mutated and probed; both layouts compared."""
    from refactor.execute import ExecuteError
    from refactor.execute.fuzz_campaign import run_fuzz
    from refactor.progress import bar
    from .machine import new_model, old_model

    rules, names = _names(names_spec)
    new_rules, module = _mutant(mutant, rules, names)
    make_old, make_new = (lambda: old_model(rules)), (lambda: new_model(new_rules, names, module))
    labels = None
    if engine == "native":
        make_old, make_new, labels = _native_pair(trees, rules)
    elif trees:
        raise EmulateError("--tree needs --engine native")
    from .native.build import EngineError

    models = {"engine": engine, "names": names_spec, "mutant": mutant,
              "trees": [str(t.resolve()) for t in trees]}
    try:
        with bar(count, "fuzz", unit="event") as step:
            report = run_fuzz(seed, count, models, make_old, make_new, out_dir, jobs=jobs,
                              cluster=cluster, progress=step)
    except (EngineError, ExecuteError) as exc:
        raise EmulateError(str(exc)) from None
    if labels and report.first:
        _check_stub(report.first["old"], report.first["new"])
    summary = report.summary()
    summary["names"] = names.as_dict()
    if labels:
        summary["engine"] = "native"
        summary["compared"] = list(labels)
    if mutant:
        summary["mutant"] = mutant
    text = (f"seed {seed}: {summary['events']} events, {summary['translations']} translations, "
            f"{summary['divergences']} divergences, "
            f"{summary['translations_per_second']} translations/s "
            f"(old {summary['translations_per_second_by_layout'].get('old')}, "
            f"new {summary['translations_per_second_by_layout'].get('new')})")
    if report.shrunk:
        text += f"\nfirst divergence shrunk to {report.shrunk_events} events: {report.shrunk}"
    _emit(summary, fmt, text)
    if report.divergences:
        sys.exit(1)


@emulate.command("mutants")
@rules_option
@click.option("--corpus", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, help="directory of *.jsonl traces (default: emulator/corpus)")
@click.option("--only", multiple=True, help="run only this mutant (repeatable)")
@NAMES_OPT
@FORMAT_OPT
def mutants_cmd(corpus: Path | None, only: tuple[str, ...], names_spec: str, fmt: str) -> None:
    """Run the built-in wrong rules / wrong wirings against the trace corpus."""
    from .mutants import MutantError, run_mutants
    from .trace import TraceError

    rules, names = _names(names_spec)
    try:
        result = run_mutants(rules, names, corpus, list(only) or None)
    except (MutantError, FileNotFoundError, TraceError) as exc:
        raise EmulateError(str(exc)) from None
    lines = [f"{r['name']:<36} {'killed' if r['killed'] else 'SURVIVED'}"
             f"{'  by ' + r['by'] if r.get('by') else ''}" for r in result["results"]]
    lines.append(f"{result['killed']}/{result['mutants']} mutants killed")
    _emit(result, fmt, "\n".join(lines))
    if result["killed"] != result["mutants"]:
        sys.exit(1)


@emulate.command("scenarios")
@click.option("--write", "write_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="write every scenario as DIR/NAME.jsonl")
def scenarios_cmd(write_dir: Path | None) -> None:
    """List the scenario library, or write it out as traces."""
    from .scenarios import SCENARIOS, scenario_events
    from .trace import write_events

    for name in SCENARIOS:
        if write_dir:
            write_dir.mkdir(parents=True, exist_ok=True)
            n = write_events(write_dir / f"{name}.jsonl", scenario_events(name))
            click.echo(f"{write_dir / (name + '.jsonl')}: {n} events")
        else:
            click.echo(f"{name}: {(SCENARIOS[name].__doc__ or '').strip()}")


@emulate.command("derive")
@rules_option
@NAMES_OPT
def derive_cmd(names_spec: str) -> None:
    """Print the new-layout plumbing derived from kvm_old.py with the rules."""
    from .derive import derive_source

    rules, names = _names(names_spec)
    click.echo(derive_source(rules, names), nl=False)
