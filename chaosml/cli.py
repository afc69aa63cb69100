"""The ``chaosml`` command: parses options, calls one library function, renders its result.

Exit codes: 0 every check holds, 1 a check failed (a slice test, a regression), 2 bad input or
configuration (also a command whose extra is not installed), 3 a target or component was
unreachable, 130 interrupted. ``chaosml`` with no command prints its help and exits 0.

Only typer and rich are imported up front (both in the core install); each command imports what
it uses, after checking that its extra is installed.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperOption

from chaosml.errors import ChaosmlError, InputError, SpecError

EXIT_CODES = (
    "Exit codes: 0 every check holds, 1 a check failed, 2 bad input or configuration, "
    "3 a target or component unreachable, 130 interrupted."
)
HELP = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    name="chaosml",
    help="Chaos game days and slice-based model tests for ML services.\n\n" + EXIT_CODES,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings=HELP,
)
slices_app = typer.Typer(
    help="Slice-based model tests: per-slice thresholds and paired version comparisons.",
    context_settings=HELP,
)


def _flag_type(self: TyperOption, ctx: Any) -> str | None:
    """No type placeholder (``<bool>``) after an on/off flag in ``--help``: it takes no value."""
    return None if self.is_flag else _option_type(self, ctx)


_option_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]


def _version(value: bool) -> None:
    if value:
        from chaosml import __version__

        stdout.out(f"chaosml {__version__}", highlight=False)
        raise typer.Exit(0)


def _help_without_command(ctx: typer.Context) -> None:
    """A group given no command prints its help and exits 0: asking for help is not a failed
    check (exit 1) nor bad input (exit 2)."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    _help_without_command(ctx)


@slices_app.callback(invoke_without_command=True)
def _slices(ctx: typer.Context) -> None:
    _help_without_command(ctx)


demo_app = typer.Typer(
    help="The built-in demo: a game day on the reference stack, then slice tests of two model "
    "versions, on synthetic credit data.",
    invoke_without_command=True,
    context_settings=HELP,
)
app.add_typer(slices_app, name="slices")
app.add_typer(demo_app, name="demo")

# Piped output keeps whole rows rather than wrapping at 80 columns.
stdout = Console(width=None if sys.stdout.isatty() else 160)
stderr = Console(stderr=True)


class Correction(StrEnum):
    holm = "holm"
    bh = "bh"


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Project config (default: ./chaosml.yaml or \\[tool.chaosml] in ./pyproject.toml).",
    ),
]
DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        "-d",
        help="Evaluation data: a Parquet or CSV file, a folder or a quoted glob of Parquet files, "
        "or with --engine spark a table name (default: `data` from the project config).",
    ),
]


class EngineName(StrEnum):
    local = "local"
    dask = "dask"
    spark = "spark"


EngineOption = Annotated[
    EngineName,
    typer.Option(
        "--engine",
        help="Where the pass over the data runs: local (this process), dask (the --scheduler's "
        "cluster, else a LocalCluster of 2 worker processes) or spark (pyspark on the "
        "--scheduler's master, else local[2]). Same answer on each; dask and spark need "
        "chaosml\\[dask] / chaosml\\[spark].",
    ),
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="The Dask scheduler's address (tcp://host:8786) or the Spark master URL "
        "(local[4], spark://host:7077).",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")
]
JunitOption = Annotated[Path | None, typer.Option("--junit", help="Also write JUnit XML here.")]
HtmlOption = Annotated[Path | None, typer.Option("--html", help="Also write an HTML report here.")]


def _needs(command: str, *extras: str) -> None:
    """Exit 2 with one line naming the extra to install, unless ``extras`` are all installed."""
    from chaosml.errors import MissingExtraError
    from chaosml.extras import require

    try:
        for extra in extras:
            require(extra)
    except MissingExtraError as error:
        line = f"chaosml {command}: {error}"
        stderr.print(line, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(error.exit_code) from None


def _optional(*, html: Path | None = None) -> list[str]:
    """The extras a command's options add: plots for --html. (The dask and spark engines say
    which extra they need themselves.)"""
    return ["report"] if html is not None else []


PortOption = Annotated[int, typer.Option(min=0, max=65535, help="Port to bind (0: a free one).")]


def fail(error: ChaosmlError) -> NoReturn:
    lines = error.problems if isinstance(error, SpecError) else str(error).splitlines() or [""]
    for line in lines:
        stderr.print(f"chaosml: error: {line}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(error.exit_code)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except ChaosmlError as error:
        fail(error)
    except KeyboardInterrupt:
        stderr.print("chaosml: interrupted")
        raise typer.Exit(130) from None


@contextmanager
def _progress(
    enabled: bool, unit: str = "rows"
) -> Iterator[Callable[[int, int | None], None] | None]:
    """A progress bar on stderr for long passes over the data (only on a terminal): rows read
    locally, partitions done on a distributed engine."""
    if not enabled or not stderr.is_terminal:
        yield None
        return
    from rich.progress import MofNCompleteColumn, Progress

    columns = [*Progress.get_default_columns(), MofNCompleteColumn()]
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task("reading rows" if unit == "rows" else unit, total=None)

        def update(rows: int, total: int | None) -> None:
            bar.update(task, completed=rows, total=total)

        yield update


def _check_outputs(*paths: Path | None) -> None:
    """Refuse unwritable output paths before the work starts, so no result is computed and lost."""
    for path in paths:
        if path is not None and not path.parent.is_dir():
            raise InputError(f"{path}: cannot write: folder {path.parent} does not exist")


def _finish(
    result: Any,
    as_json: bool,
    render: Callable[[Any, Console], None],
    files: dict[Path | None, Callable[[Any, Path], None]],
) -> NoReturn:
    """Print the result (table or JSON), then write the requested files, then exit 0 or 1."""
    if as_json:  # as it is: rich would scan every character of a large report for markup
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        sys.stdout.flush()
    else:
        render(result, stdout)
    with _errors():
        for path, writer in files.items():
            if path is not None:
                try:
                    writer(result, path)
                except OSError as exc:
                    raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    raise typer.Exit(getattr(result, "exit_code", 0 if result.passed else 1))


SuiteArgument = Annotated[
    Path | None,
    typer.Argument(
        help="Slice suite YAML, e.g. slices/credit.yaml (or give it as --suite).",
        metavar="SUITE",
        show_default=False,
    ),
]
SuiteOption = Annotated[
    Path | None,
    typer.Option("--suite", "-s", help="Slice suite YAML (or give it as the last argument)."),
]


def _suite(argument: Path | None, option: Path | None) -> Path:
    """The suite, given as the argument or as --suite (one of them)."""
    if argument is not None and option is not None and argument != option:
        raise InputError(f"two suites given: {argument} and --suite {option}; give one")
    suite = argument or option
    if suite is None:
        raise InputError(
            "no slice suite: give it as an argument or --suite, e.g. slices/credit.yaml"
        )
    return suite


def _data(data: Path | None, config: Any) -> Path:
    if data is not None:
        return data
    if config.data is None:
        raise InputError("no data: pass --data FILE or set `data:` in chaosml.yaml")
    return Path(config.resolve(config.data))


CodecOption = Annotated[
    str,
    typer.Option(
        help="How a version given as an http:// URL is spoken to: records, mlflow, kserve or "
        "tfserving.",
    ),
]


@slices_app.command("test")
def slices_test(
    suite_argument: SuiteArgument = None,
    *,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="Version name from the config, a "
            "model artifact (.joblib/.skops) or a predictions file.",
        ),
    ],
    suite_option: SuiteOption = None,
    data: DataOption = None,
    as_json: JsonOption = False,
    junit: JunitOption = None,
    html: HtmlOption = None,
    scenarios: Annotated[
        list[Path] | None,
        typer.Option(
            "--scenarios",
            help="Also evaluate every slice under these scenario files' faults (files or "
            "folders, e.g. scenarios/), applied offline; tests with `under:` run there.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the faults' random choices.")] = 0,
    engine_name: EngineOption = EngineName.local,
    scheduler: SchedulerOption = None,
    config_path: ConfigOption = None,
    codec: CodecOption = "records",
) -> None:
    """Evaluate one model version per slice and run the suite's tests.

    Exits 0 if every test holds, 1 if a test fails, 2 on bad input (suite, data, version), 3 if
    a scenario could not run (the version failed to predict on its faulted rows).
    """
    _needs("slices test", "slices", *_optional(html=html))
    from chaosml.config import load_config
    from chaosml.report.console import render_test_report
    from chaosml.report.html import write_test_html
    from chaosml.report.junit import write_test_junit
    from chaosml.slices.checks import run_slice_tests
    from chaosml.slices.engines import make_engine
    from chaosml.slices.offline import offline_scenarios
    from chaosml.slices.suite import load_suite
    from chaosml.versions import named_versions, resolve_version

    with _errors():
        _check_outputs(junit, html)
        loaded = load_suite(_suite(suite_argument, suite_option))
        config = load_config(config_path)
        version = resolve_version(model, config, codec=codec)
        engine = make_engine(engine_name.value, scheduler)
        with closing(engine), _progress(not as_json, engine.unit) as progress:
            report = run_slice_tests(
                loaded,
                version,
                _data(data, config),
                scenarios=offline_scenarios(scenarios) if scenarios else (),
                others=named_versions(config),
                seed=seed,
                config=config,
                progress=progress,
                engine=engine,
            )
    _finish(report, as_json, render_test_report, {junit: write_test_junit, html: write_test_html})


@slices_app.command("compare")
def slices_compare(
    v1: Annotated[
        str,
        typer.Argument(
            help="Baseline version: a config name, an artifact or a predictions file.",
            metavar="V1",
        ),
    ],
    v2: Annotated[str, typer.Argument(help="Candidate version, likewise.", metavar="V2")],
    suite_argument: SuiteArgument = None,
    suite_option: SuiteOption = None,
    data: DataOption = None,
    as_json: JsonOption = False,
    junit: JunitOption = None,
    html: HtmlOption = None,
    n_boot: Annotated[
        int,
        typer.Option(
            "--n-boot",
            min=0,
            help="Bootstrap replicates for the intervals of the fragility deltas with "
            "--scenarios (0: none). The clean comparison's intervals are score intervals and "
            "need none.",
        ),
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    correction: Annotated[
        Correction | None,
        typer.Option(
            help="Multiple-testing correction across slices (default: the suite's, else holm)."
        ),
    ] = None,
    scenarios: Annotated[
        list[Path] | None,
        typer.Option(
            "--scenarios",
            help="Also evaluate every slice under these scenario files' faults (files or "
            "folders, e.g. scenarios/), applied offline, and flag where V2 loses more than V1 "
            "(--seed also seeds the faults).",
        ),
    ] = None,
    engine_name: EngineOption = EngineName.local,
    scheduler: SchedulerOption = None,
    config_path: ConfigOption = None,
    codec: CodecOption = "records",
    tolerance: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Also check that the versions answer the same: every row the same label and "
            "scores within this (default 1e-6 when a version is an http:// endpoint).",
        ),
    ] = None,
) -> None:
    """Compare V2 against V1 per slice, paired on the same rows.

    Regressed: p adjusted across slices below alpha, and worse by more than max_drop (compare:).
    With --scenarios the slices and every (slice, scenario) cell are one family. A version may
    be a served model's URL (http://host:port/predict, spoken to with --codec): then the report
    also says, per slice, whether it answers as the other version does (equivalence).

    Exits 0 if no slice regressed (and, with an endpoint or --tolerance, the versions are
    equivalent), 1 if one did (or they are not), 2 on bad input (suite, data, versions), 3 if
    a scenario could not run (a version failed to predict on its faulted rows).
    """
    _needs("slices compare", "slices", *_optional(html=html))
    from chaosml.config import load_config
    from chaosml.report.console import render_comparison, render_under_faults
    from chaosml.report.html import write_compare_html, write_under_faults_html
    from chaosml.report.junit import write_compare_junit, write_under_faults_junit
    from chaosml.slices.compare import compare_versions
    from chaosml.slices.engines import make_engine
    from chaosml.slices.suite import load_suite
    from chaosml.versions import distinct_versions, named_versions, resolve_version

    with _errors():
        _check_outputs(junit, html)
        loaded = load_suite(_suite(suite_argument, suite_option))
        config = load_config(config_path)
        first, second, warning = distinct_versions(
            resolve_version(v1, config, codec=codec),
            resolve_version(v2, config, codec=codec),
            (v1, v2),
        )
        if warning is not None:
            stderr.print(
                f"chaosml: warning: {warning}", markup=False, highlight=False, soft_wrap=True
            )
        engine = make_engine(engine_name.value, scheduler)
        options: dict[str, Any] = {
            "n_boot": n_boot,
            "seed": seed,
            "correction": correction.value if correction else None,
            "config": config,
            "engine": engine,
        }
        with closing(engine), _progress(not as_json, engine.unit) as progress:
            if scenarios:
                from chaosml.slices.fragility import compare_under_faults
                from chaosml.slices.offline import offline_scenarios

                result = compare_under_faults(
                    loaded,
                    first,
                    second,
                    _data(data, config),
                    offline_scenarios(scenarios),
                    others=named_versions(config),
                    progress=progress,
                    **options,
                )
            else:
                comparison = compare_versions(
                    loaded,
                    first,
                    second,
                    _data(data, config),
                    progress=progress,
                    tolerance=tolerance,
                    **options,
                )
    if scenarios:
        _finish(
            result,
            as_json,
            render_under_faults,
            {junit: write_under_faults_junit, html: write_under_faults_html},
        )
    _finish(
        comparison,
        as_json,
        render_comparison,
        {junit: write_compare_junit, html: write_compare_html},
    )


TargetOption = Annotated[
    Path,
    typer.Option(
        "--target",
        "-t",
        help="Target file: the service URL and codec, its fault points and alert sources "
        "(`chaosml demo up --write-target FILE` writes one for the reference stack).",
    ),
]
TimeScaleOption = Annotated[
    float,
    typer.Option(
        "--time-scale",
        min=0.001,
        max=1000,
        help="Multiply every duration and deadline of the scenarios (and probe rules' for:) by "
        "this factor; the target's alert rules must be scaled alike (demo up does).",
    ),
]
SeedOption = Annotated[
    int, typer.Option(help="Seed of the faults' random choices and the load's row order.")
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        help="Locust worker processes for the load (default: each scenario's load.workers).",
        min=0,
    ),
]
RunsOption = Annotated[
    Path, typer.Option("--runs", help="Where each run's journal folder is written.")
]


@app.command("validate")
def validate_command(
    paths: Annotated[list[Path], typer.Argument(help="Scenario files or folders of them.")],
    target: Annotated[
        Path | None,
        typer.Option(
            "--target", "-t", help="Also check against this target: fault points, data, rules."
        ),
    ] = None,
    time_scale: TimeScaleOption = 1.0,
) -> None:
    """Check scenario files (and a target file) and run nothing.

    Reports every problem of every file, one line each (file:line: field: what was expected),
    and exits 2 if there is one; exits 3 if a fault point or a rule source cannot be reached.
    """
    _needs("validate", "gameday")
    from chaosml.gameday import validate

    with _errors():
        checked = validate(paths, target, time_scale=time_scale)
    for file in checked.scenarios:
        s = file.scenario
        faults = ", ".join(f"{f.type}@{f.point}" for f in s.faults) or "no faults"
        expects = ", ".join(e.describe() for e in s.expect) or "nothing"
        stdout.print(f"{file.path}: {s.name}: {faults}; expects {expects}", highlight=False)
    for note in checked.notes:
        stderr.print(f"chaosml: note: {note}")
    where = f" against {target}" if target else ""
    stderr.print(f"{len(checked.scenarios)} scenario(s) valid{where}")


UntilDetectedOption = Annotated[
    bool,
    typer.Option(
        "--until-detected",
        help="End each fault as soon as every alert its scenario expects has fired at every "
        "alert source, so a game day hurts no longer than it must. A scenario that expects an "
        "alert to stay quiet, or expects nothing, still runs its whole fault phase; alerts "
        "that would have fired later go unseen (the report says how long each fault ran).",
    ),
]


def _gameday(
    paths: list[Path],
    target: Path,
    *,
    as_json: bool,
    junit: Path | None,
    html: Path | None,
    command: str,
    **options: Any,
) -> NoReturn:
    """Run ``paths`` against ``target`` with ``RunOptions(**options)``; report and exit."""
    _needs(command, "gameday", *_optional(html=html))
    from chaosml.gameday import RunOptions, run_files
    from chaosml.report.gameday import (
        LiveDisplay,
        render_gameday,
        write_gameday_html,
        write_gameday_junit,
    )

    display = LiveDisplay(stderr)
    with _errors():
        _check_outputs(junit, html)
        try:
            report = run_files(paths, target, RunOptions(**options), display)
        finally:
            display.close()
    if report.interrupted:
        stderr.print(f"chaosml: {report.interrupted}")
    _finish(
        report,
        as_json,
        render_gameday,
        {junit: write_gameday_junit, html: write_gameday_html},
    )


@app.command("run")
def run_command(
    scenario: Annotated[Path, typer.Argument(help="One scenario file.")],
    target: TargetOption,
    as_json: JsonOption = False,
    junit: JunitOption = None,
    html: HtmlOption = None,
    time_scale: TimeScaleOption = 1.0,
    seed: SeedOption = 0,
    workers: WorkersOption = None,
    runs: RunsOption = Path(".chaosml/runs"),
    until_detected: UntilDetectedOption = False,
) -> None:
    """Run one scenario against a target: load, inject, observe, roll back, recover.

    Exits 0 if every expectation held, 1 if one failed, 2 on bad input, 3 if the target or a
    component is unreachable, 130 when stopped by Ctrl-C or SIGTERM (after rolling back).
    """
    _gameday(
        [scenario],
        target,
        as_json=as_json,
        junit=junit,
        html=html,
        command="run",
        time_scale=time_scale,
        seed=seed,
        workers=workers,
        runs=runs,
        until_detected=until_detected,
    )


@app.command("gameday")
def gameday_command(
    paths: Annotated[list[Path], typer.Argument(help="Scenario files or folders, run in order.")],
    target: TargetOption,
    as_json: JsonOption = False,
    junit: JunitOption = None,
    html: HtmlOption = None,
    time_scale: TimeScaleOption = 1.0,
    seed: SeedOption = 0,
    workers: WorkersOption = None,
    runs: RunsOption = Path(".chaosml/runs"),
    until_detected: UntilDetectedOption = False,
) -> None:
    """Run a game day: every scenario in order against one target, then the alert coverage.

    For each scenario: steady state under load (an expected alert already firing is a finding),
    inject the faults, watch the alert sources (time to detect), roll back (always: also on a
    stop condition, Ctrl-C, SIGTERM or an error), and watch them resolve (time to resolve).
    The journal goes to .chaosml/runs/<run-id>/. Exit codes as for `chaosml run`.
    """
    _gameday(
        paths,
        target,
        as_json=as_json,
        junit=junit,
        html=html,
        command="gameday",
        time_scale=time_scale,
        seed=seed,
        workers=workers,
        runs=runs,
        until_detected=until_detected,
    )


@app.command("coverage")
def coverage_command(
    run: Annotated[Path, typer.Argument(help="A run folder, .chaosml/runs/<run-id>/.")],
    as_json: JsonOption = False,
    html: HtmlOption = None,
) -> None:
    """Show a finished game day's report and coverage matrix again, from its journal."""
    _needs("coverage", "gameday", *_optional(html=html))
    from chaosml.gameday import GamedayReport, load_journal
    from chaosml.report.gameday import render_gameday, write_gameday_html

    with _errors():
        _check_outputs(html)
        report = GamedayReport(load_journal(run))
    _finish(report, as_json, render_gameday, {html: write_gameday_html})


@app.command("sweep")
def sweep_command(
    scenario: Annotated[Path, typer.Argument(help="One scenario file.")],
    target: TargetOption,
    param: Annotated[
        str | None,
        typer.Option(
            help="The fault attribute to vary, e.g. faults[0].rate (default: the first "
            "fault's rate, by, latency or toxicity)."
        ),
    ] = None,
    span: Annotated[
        str | None,
        typer.Option("--range", help="LOW:HIGH (default: a sixteenth of the file's value to it)."),
    ] = None,
    replicates: Annotated[int, typer.Option(min=1, help="Runs per level.")] = 3,
    max_runs: Annotated[int, typer.Option(min=1, help="The budget of runs.")] = 20,
    resolution: Annotated[
        float, typer.Option(min=0.001, help="Stop when the bracket is this narrow (relative).")
    ] = 0.1,
    width: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Stop when the bracket is this narrow, in the parameter's own units (e.g. "
            "0.02 of rate), whatever --resolution says.",
        ),
    ] = None,
    time_scale: TimeScaleOption = 1.0,
    seed: SeedOption = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            help="The sweep's folder: level files and run journals (a sweep run again "
            "with it resumes). Default .chaosml/sweeps/<scenario>/."
        ),
    ] = None,
    suite: Annotated[
        Path | None, typer.Option(help="With --model: the loss per slice at each level, offline.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="The version to measure the harm of.")] = None,
    data: DataOption = None,
    config_path: ConfigOption = None,
    tolerance: Annotated[
        float | None,
        typer.Option(
            min=0.0, help="A slice loss above this is harm (default: the suite's max_drop)."
        ),
    ] = None,
    as_json: JsonOption = False,
    html: HtmlOption = None,
) -> None:
    """How small a fault does each expected alert catch, and what does the model lose below it?

    Runs the scenario at levels of one fault parameter (normal runs: rollback, leases, journals),
    bisecting for the smallest level each expected alert detects within its deadline, with
    replicates and an exact interval per level. With --suite and --model, applies each level
    offline per slice and reports the undetected-harm band. Exits 0, 2 on bad input, 3 if the
    target is unreachable, 130 when interrupted (run again with the same --out to resume).
    """
    _needs("sweep", "gameday", *_optional(html=html))
    from chaosml.sweep import offline_harm, render_sweep, run_sweep, write_sweep_html

    with _errors():
        _check_outputs(html)
        low = high = None
        if span is not None:
            try:
                low, high = (float(x) for x in span.split(":"))
            except ValueError as exc:
                raise InputError(f"--range {span!r}: expected LOW:HIGH, e.g. 0.02:0.6") from exc
        harm = metric = None
        if (suite is None) != (model is None):
            raise InputError("--suite and --model go together (the harm needs both)")
        if suite is not None and model is not None:
            harm, metric, max_drop = offline_harm(suite, model, data, config_path, seed=seed)
            tolerance = max_drop if tolerance is None else tolerance
        folder = out or Path(".chaosml/sweeps") / scenario.stem
        result = run_sweep(
            scenario,
            target,
            folder=folder,
            param=param,
            low=low,
            high=high,
            time_scale=time_scale,
            seed=seed,
            replicates=replicates,
            max_runs=max_runs,
            resolution=resolution,
            width=width,
            harm=harm,
            metric=metric,
            tolerance=tolerance if harm is not None else None,
            say=lambda line: stderr.print(f"chaosml sweep: {line}", highlight=False),
        )
    _finish(result, as_json, render_sweep, {html: write_sweep_html})


CandidateOption = Annotated[
    str,
    typer.Option(
        help="The candidate's URL, http://HOST:PORT/predict, spoken to with the target's codec."
    ),
]
ReleaseSuiteOption = Annotated[Path, typer.Option("--suite", "-s", help="Slice suite YAML.")]


@app.command("shadow")
def shadow_command(
    target: TargetOption,
    candidate: CandidateOption,
    suite: ReleaseSuiteOption,
    duration: Annotated[
        str,
        typer.Option(help="How long to shadow, e.g. 30s, 10m (Ctrl-C or SIGTERM ends it early)."),
    ] = "10m",
    labels: Annotated[
        Path | None,
        typer.Option(
            help="A CSV or Parquet file of id and label: joined by id into the "
            "recorded rows (with the labels the proxy recorded from the target's feedback URL, "
            "when it passes the proxy; the file has the last word), then the paired comparison."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Where run folders go: OUT/<run-id>/.")] = Path(
        ".chaosml/shadow"
    ),
    as_json: JsonOption = False,
) -> None:
    """Run a candidate model in the shadow of the target's: the target's proxy fault point copies
    each request it answers to the candidate (the client gets the primary's answer only), both
    answers are recorded with the rows, and each slice's disagreement is reported with an
    interval and the mean score shift, live every 10 s and at the end (with labels, from the
    target's feedback URL through the proxy or --labels, also the paired comparison).

    Exits 0, 1 if a slice disagrees on more than the suite's compare.max_drop of its rows (the
    interval's lower bound above it; with labels: the paired comparison regresses), 2 on bad
    input, 3 if the proxy or the candidate is unreachable, 130 when interrupted (after its
    report).
    """
    _needs("shadow", "gameday", "slices")
    from chaosml.durations import parse_duration
    from chaosml.release.shadow import render_shadow, run_shadow

    with _errors():
        try:
            seconds = parse_duration(duration)
        except ValueError as exc:
            raise InputError(f"--duration {duration!r}: {exc}") from None
        result = run_shadow(
            target,
            candidate,
            suite,
            duration=seconds,
            labels=labels,
            root=out,
            say=lambda line: stderr.print(f"chaosml shadow: {line}", highlight=False),
        )
    _finish(result, as_json, render_shadow, {})


@app.command("canary")
def canary_command(
    target: TargetOption,
    candidate: CandidateOption,
    suite: ReleaseSuiteOption,
    steps: Annotated[
        str,
        typer.Option(
            help="The candidate's share of traffic, step by step, each judged for its duration: "
            "5%:2m,25%:5m,50%:5m,100% (reaching a last step without a duration promotes)."
        ),
    ] = "5%:2m,25%:5m,50%:5m,100%",
    key: Annotated[
        str | None,
        typer.Option(
            help="What keeps one user on one version: header:NAME or column:NAME (the request's "
            "first row); default the client's address."
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="A CSV or Parquet file of id and label, read again at every look as feedback "
            "arrives (beside the labels the proxy records from the target's feedback URL, when "
            "it passes the proxy): the error rate per slice is judged on the labelled rows."
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Rows that name the groups of the suite's by-slices before the canary starts "
            "(default: the target's data)."
        ),
    ] = None,
    quiet: Annotated[
        list[str] | None,
        typer.Option(
            metavar="ALERT",
            help="An alert that must not fire (repeatable); '*' for any alert not already "
            "active when the canary began.",
        ),
    ] = None,
    alpha: Annotated[
        float, typer.Option(help="Family-wise false-rollback rate over every figure and look.")
    ] = 0.05,
    look: Annotated[str, typer.Option(help="Time between looks, e.g. 5s.")] = "5s",
    lease: Annotated[
        str,
        typer.Option(
            help="How long the split outlives a controller that stops renewing it (killed): "
            "then the proxy sends everything to the primary."
        ),
    ] = "15s",
    switch: Annotated[
        bool,
        typer.Option(
            help="Once promoted, make the candidate the proxy's upstream (the split is promoted "
            "in place: the listener stays, no client's request fails)."
        ),
    ] = False,
    out: Annotated[Path, typer.Option(help="Where run folders go: OUT/<run-id>/.")] = Path(
        ".chaosml/canary"
    ),
    as_json: JsonOption = False,
    junit: JunitOption = None,
    html: HtmlOption = None,
) -> None:
    """Give a candidate model a growing share of the target's traffic at its proxy fault point,
    sticky per user, and roll it back the moment a slice shows harm.

    At every look the split's lease is renewed, the target's alert sources are polled and each
    slice's figures on the rows each version answered are judged by an always-valid sequential
    test (mSPRT), Bonferroni over every figure, so looking often does not raise the false-rollback
    rate above --alpha. Exits 0 promoted, 1 rolled back, 2 on bad input, 3 if the proxy or the
    candidate is unreachable, 130 when interrupted (the split removed, after its report).
    """
    _needs("canary", "gameday", "slices")
    from chaosml.durations import parse_duration
    from chaosml.release.canary import (
        CanaryOptions,
        parse_key,
        parse_steps,
        render_canary,
        run_canary,
        write_canary_html,
        write_canary_junit,
    )

    with _errors():
        for path in (junit, html):  # before the canary runs, not after
            if path is not None and not path.parent.is_dir():
                raise InputError(f"{path}: cannot write: no folder {path.parent}")
        seconds = {}
        for name, value in (("look", look), ("lease", lease)):
            try:
                seconds[name] = parse_duration(value)
            except ValueError as exc:
                raise InputError(f"--{name} {value!r}: {exc}") from None
        options = CanaryOptions(
            steps=parse_steps(steps),
            look=seconds["look"],
            lease=seconds["lease"],
            alpha=alpha,
            key=parse_key(key),
            quiet=list(quiet or []),
            labels=labels,
            data=data,
            switch=switch,
            root=out,
        )
        result = run_canary(
            target,
            candidate,
            suite,
            options,
            say=lambda line: stderr.print(f"chaosml canary: {line}", highlight=False),
        )
    _finish(result, as_json, render_canary, {junit: write_canary_junit, html: write_canary_html})


@app.command("score")
def score_command(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Game-day run folders (.chaosml/runs/<run-id>/) or journals, and slice reports "
            "(the --json output of slices test and slices compare).",
        ),
    ],
    mapping: Annotated[
        Path | None,
        typer.Option(
            help="A YAML file whose keys replace the packaged rubric mapping (failure_modes, "
            "slices, rollback), with manual: {data.1: {points: 0.5, evidence: ...}} for what "
            "chaosml cannot see.",
        ),
    ] = None,
    as_json: JsonOption = False,
    html: HtmlOption = None,
) -> None:
    """The ML Test Score (Breck et al.) filled in from what game days and slice runs proved.

    Each rubric test gets 0, 0.5 (held once) or 1 (held in two or more runs), with its evidence;
    0 says whether there was no evidence or evidence of a gap (a blind spot, an alert that did not
    fire). The final score is the minimum over the four sections. Exits 0 (a reading, not a
    gate), 2 on bad input.
    """
    _needs("score", *_optional(html=html))
    from chaosml.report.score import render_score, scorecard, write_score_html

    with _errors():
        _check_outputs(html)
        card = scorecard(paths, mapping)
    _finish(card, as_json, render_score, {html: write_score_html})


DemoFolder = Annotated[
    Path, typer.Option("--out", "-o", help="Where the demo data, models and config are written.")
]


@demo_app.callback()
def demo(
    ctx: typer.Context,
    out: DemoFolder = Path(".chaosml/demo"),
    time_scale: Annotated[
        float,
        typer.Option(
            "--time-scale",
            min=0.001,
            max=1,
            help="Shorten the bundled scenarios and the stack's alert rules by this factor.",
        ),
    ] = 0.05,
) -> None:
    """The main job, end to end on built-in data: a game day, then slice tests.

    Trains v1 and v2 if needed, brings the reference stack up (model service with its in-service
    fault point, fault proxy, Prometheus, Alertmanager), runs the bundled scenarios (scenarios/)
    on a shortened profile and prints which alerts fired, how fast, and the blind spot; then
    tests v2 per slice and compares it with v1 (slices/credit.yaml). Stops everything it
    started. Exits 0 when the demo ran, whatever it found.
    """
    if ctx.invoked_subcommand is not None:
        return
    _needs("demo", "demo")
    from chaosml.demo.run import run_demo

    with _errors():
        run_demo(out, stdout, stderr, time_scale=time_scale)


@demo_app.command("release")
def demo_release(out: DemoFolder = Path(".chaosml/demo")) -> None:
    """Release the demo's v2 behind v1 on live traffic: 20 s in its shadow, then a canary.

    Serves v1 behind the fault proxy and v2 beside it, sends the demo's rows through the proxy as
    users (labels fed back by id as they are answered), runs `chaosml shadow` (v2 copied every
    request, judged per slice) and then `chaosml canary` (v2 given 20%, then 50% of the users,
    judged at every look). About a minute. Stops all it started. Exits 0 when it ran, whatever
    it found.
    """
    _needs("demo release", "demo", "gameday", "slices")
    from chaosml.demo.release import run_release
    from chaosml.demo.run import SUITE

    with _errors():
        run_release(out, stdout, stderr, suite=SUITE)


@demo_app.command("up")
def demo_up(
    out: DemoFolder = Path(".chaosml/demo"),
    rules: Annotated[
        Path | None,
        typer.Option(
            help="Your own Prometheus rules file instead of chaosml's (for: scaled as well)."
        ),
    ] = None,
    write_target: Annotated[
        Path | None,
        typer.Option(help="Where to write the target file (default: OUT/target.yaml)."),
    ] = None,
    time_scale: Annotated[
        float,
        typer.Option(
            "--time-scale", min=0.001, max=1, help="Multiply the alert rules' for: by this."
        ),
    ] = 0.05,
    candidate: Annotated[
        str | None,
        typer.Option(
            help="Also serve this demo version (v1 or v2) beside the stack, as a candidate for "
            "chaosml shadow and chaosml canary."
        ),
    ] = None,
) -> None:
    """Run the reference stack in the foreground until Ctrl-C or SIGTERM.

    Starts the demo model service (v2, its in-service fault point on, v1 loaded as the stale
    version), the fault proxy in front of it and, when installed, Prometheus and Alertmanager
    with the rules' for: scaled by --time-scale; writes a target file for `chaosml gameday`.
    Without Prometheus it says so and the target uses metric probes. Stops all it started.
    """
    _needs("demo up", "demo")
    from chaosml.demo.run import demo_up as run_up

    with _errors():
        if rules is not None and not rules.is_file():
            raise InputError(f"--rules: {rules}: file not found")
        if candidate not in (None, "v1", "v2"):
            raise InputError(f"--candidate: expected v1 or v2, got {candidate!r}")
        run_up(
            out,
            target=write_target or out / "target.yaml",
            rules=rules,
            time_scale=time_scale,
            err=stderr,
            candidate=candidate,
        )


@demo_app.command("train")
def demo_train(
    out: DemoFolder = Path(".chaosml/demo"),
    force: Annotated[
        bool, typer.Option("--force", help="Train again even if nothing changed.")
    ] = False,
) -> None:
    """Generate the demo data and fit the two demo model versions (v1, v2).

    Models whose inputs (seed, data generator, training code, library versions) have not changed
    since the last run in OUT are reused."""
    _needs("demo train", "demo")
    from chaosml.demo.train import train_demo

    with _errors():
        artifacts = train_demo(out, force=force, say=lambda line: stderr.print(line))
    stderr.print(f"wrote {artifacts.v1}, {artifacts.v2}, {artifacts.data} and {artifacts.config}")


@demo_app.command("serve")
def demo_serve(
    out: DemoFolder = Path(".chaosml/demo"),
    version: Annotated[str, typer.Option(help="Which demo version to serve: v1 or v2.")] = "v2",
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: PortOption = 8000,
    monitors: Annotated[
        bool,
        typer.Option(help="Export the ML monitors on /metrics (off: for overhead benchmarks)."),
    ] = True,
    window: Annotated[
        int, typer.Option(min=10, help="Rows in the monitors' sliding windows.")
    ] = 500,
) -> None:
    """Serve a demo model version over HTTP: POST /predict, POST /feedback, GET /health and
    GET /metrics (the ML monitors). Trains the demo models first if needed."""
    _needs("demo serve", "demo")
    import uvicorn

    from chaosml.demo.service import create_app, load_reference
    from chaosml.demo.train import train_demo

    with _errors():
        if version not in ("v1", "v2"):
            raise InputError(f"--version: expected v1 or v2, got {version!r}")
        model = train_demo(out, say=lambda line: stderr.print(line)).folder / f"{version}.skops"
        app_ = create_app(
            model,
            version=version,
            reference=load_reference(out),
            monitors=monitors,
            window=window,
        )
        sock = _bind(host, port)
    # Serving on the socket bound here announces the port it has, also for --port 0.
    stderr.print(f"serving demo model {version} on http://{host}:{sock.getsockname()[1]}/predict")
    uvicorn.Server(uvicorn.Config(app_, log_level="warning")).run(sockets=[sock])


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family)
    except OSError as exc:
        raise InputError(f"--port: cannot bind {host}:{port}: {exc.strerror or exc}") from exc


@app.command("proxy")
def proxy(
    api: Annotated[str, typer.Option(help="host:port of the Toxiproxy-compatible control API.")] = (
        "127.0.0.1:8474"
    ),
    token: Annotated[
        str | None,
        typer.Option(
            envvar="CHAOSML_PROXY_TOKEN",
            help="Bearer token required on every control "
            "request; needed to bind the control API beyond loopback.",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of the proxies' random generators (toxicity rolls, row choices)."),
    ] = None,
    populate: Annotated[
        Path | None,
        typer.Option(
            help="A JSON list of proxies to create at start, as POST /populate takes it "
            '(e.g. [{"name": "model", "listen": "0.0.0.0:9000", "upstream": "model:8000"}]).'
        ),
    ] = None,
    listen_any: Annotated[
        bool,
        typer.Option(
            "--listen-any",
            help="Let proxies listen beyond loopback (e.g. 0.0.0.0, chaostoolkit-toxiproxy's "
            "default) without --token. Only where nobody else can reach the control API.",
        ),
    ] = False,
    idle_timeout: Annotated[
        float,
        typer.Option(help="Seconds an idle keep-alive client connection is kept open."),
    ] = 60.0,
    request_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a client has to send a whole request once it started (then 408)."
        ),
    ] = 10.0,
) -> None:
    """Run the fault proxy. Drive it with any Toxiproxy client (e.g. toxiproxy-python).

    Create a proxy in front of a model service, then add toxics: network faults (latency,
    timeout, ...) and ML faults (missing_values, bias, stale_model, ...). Stops on Ctrl-C.
    """
    from chaosml.proxy.api import ProxyServer, serve_forever
    from chaosml.proxy.server import Timeouts

    with _errors():
        proxies = None
        if populate is not None:
            try:
                proxies = json.loads(populate.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(f"--populate: {populate}: {exc}") from exc
        if idle_timeout <= 0 or request_timeout <= 0:
            raise InputError("--idle-timeout and --request-timeout: expected seconds > 0")
        server = ProxyServer(
            api=api,
            token=token,
            seed=seed,
            listen_any=listen_any,
            timeouts=Timeouts(idle=idle_timeout, request=request_timeout),
        )
        serve_forever(
            server,
            lambda s: stderr.print(f"chaosml proxy: control API on http://{s.api}"),
            proxies,
        )
    stderr.print("chaosml proxy: stopped; every toxic is gone with it")


alerts_app = typer.Typer(
    help="Alert sources: where chaosml reads which alerts fired.", context_settings=HELP
)
app.add_typer(alerts_app, name="alerts")


@alerts_app.callback(invoke_without_command=True)
def _alerts(ctx: typer.Context) -> None:
    _help_without_command(ctx)


@alerts_app.command("webhook")
def alerts_webhook(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: PortOption = 9094,
) -> None:
    """Receive Alertmanager webhooks on /alerts and print each alert as a JSON line.

    Stops on Ctrl-C or SIGTERM, after printing every alert received until then.
    """
    import signal
    import threading

    from chaosml.alerts.webhook import ReceivedAlert, WebhookReceiver

    def show(alert: ReceivedAlert) -> None:
        line = {"alert": alert.name, "status": alert.status, "labels": alert.labels}
        stdout.out(json.dumps({**line, "received_at": alert.received_at}), highlight=False)

    with _errors():
        receiver = WebhookReceiver(host=host, port=port).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stderr.print(f"receiving Alertmanager webhooks on {receiver.url}")
    try:
        receiver.follow(show, stop)
    finally:
        receiver.stop()


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # e.g. `chaosml ... --json | head`
        sys.stderr.close()
        sys.exit(0)
