"""The ``fedsim`` command line: run, validate, profiles, plot, compare."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fedsim.core.errors import FedsimError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Simulate federated fine-tuning of language models on device fleets.")
err_console = Console(stderr=True)
console = Console()


def say(message: str, err: bool = False) -> None:
    """Print a message as plain text: no console markup (a ``[/x]`` in a path or value
    must print as it is), no wrapping at the terminal's width."""
    typer.echo(message, err=err)


def _fail(exc: Exception) -> None:
    say(f"error: {exc}", err=True)
    raise typer.Exit(2)


def _os_error(exc: OSError) -> FedsimError:
    """A file-system failure (an output folder that is a file, a full disk) as a message."""
    return FedsimError(f"cannot write {exc.filename or 'the output'} ({exc.strerror or exc})")


@contextmanager
def _failing_cleanly() -> Iterator[None]:
    """Bad records or a file-system failure end the command with one line, exit status 2."""
    try:
        yield
    except FedsimError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(_os_error(exc))


def _point_error(exc: Exception, run_dir: Path) -> str:
    """Why one run of a sweep failed: bad input, the file system, or a bug."""
    if isinstance(exc, FedsimError):
        return f"{exc} (records in {run_dir})"
    if isinstance(exc, OSError):
        return str(_os_error(exc))
    return f"unexpected {type(exc).__name__}: {exc}; its traceback is in {run_dir / 'summary.json'}"


def _row(*cells: str) -> list[Text]:
    # Table cells are rich markup unless given as Text: class names, descriptions and
    # labels come from user files, and "[/x]" in them must print as written.
    return [Text(str(c)) for c in cells]


def duration(seconds: float) -> str:
    """A simulated duration in the unit that reads best: ``82 s``, ``12.5 min``, ``3.42 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"

@app.command()
def run(
    scenario: Annotated[Optional[Path], typer.Argument(help="scenario YAML file (optional with --resume)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output folder (default runs/<scenario name>)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="override the scenario's seed")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="dotted.key=value override (repeatable)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    force: Annotated[bool, typer.Option("--force", help="replace the records already in the output folder")] = False,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="continue the run (or sweep) in this folder from its last checkpoint")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option("--checkpoint-every", min=1, help="write a checkpoint every this many rounds (default: automatic, at most ~5% of the run's time)")] = None,
) -> None:
    """Run a scenario (every sweep combination) and write its records."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from fedsim.study.plot import plot_time_to_accuracy
    from fedsim.engine.rundir import Interrupted, child, has_records, safe_name, signals_interrupt
    from fedsim.study.simulate import simulate

    if force and resume is not None:
        _fail(FedsimError("--force and --resume contradict each other; give one"))
    if resume is not None and out is not None and out != resume:
        _fail(FedsimError(f"--out {out} and --resume {resume} name different folders; give one"))
    try:
        variants = _variants(scenario, resume, set_ or [], seed)
    except FedsimError as exc:
        _fail(exc)
    root = resume or out or Path("runs") / safe_name(variants[0].scenario.name)
    one_run = resume is not None and scenario is None and (resume / "config.yaml").is_file()
    try:
        dirs = [resume] if one_run else [child(root, v.label) for v in variants]
    except FedsimError as exc:
        _fail(exc)
    if not force and resume is None:
        taken = [d for d in [root, *dirs] if has_records(d) or (d / "sweep.yaml").exists()]
        if taken:
            _fail(FedsimError(f"{taken[0]} already holds a run's records; resume it (--resume {root}) or replace it (--force)"))
    existing = "resume" if resume is not None else "overwrite" if force else "refuse"
    if not one_run:
        with _failing_cleanly():
            _write_sweep(root, variants, existing)
    results = []
    failed = False
    with signals_interrupt():
        for v, run_dir in zip(variants, dirs):
            total = v.scenario.engine.max_rounds
            with Progress(
                TextColumn(escape(v.label).replace("{", "{{").replace("}", "}}"), style="bold"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("left ~"), TimeRemainingColumn(),
                console=err_console, disable=quiet, transient=False,
            ) as progress:
                task = progress.add_task(v.label, total=total, status="")

                def on_round(row, task=task):
                    acc = row["accuracy"]
                    status = f"t={duration(row['sim_time_s'])}" + (f" acc={acc:.3f}" if acc is not None else "")
                    progress.update(task, completed=row["round"] + 1, status=status)

                try:
                    res = simulate(v.scenario, run_dir, label=v.label, on_round=on_round, existing=existing,
                                   checkpoint_every=checkpoint_every)
                except (KeyboardInterrupt, Interrupted) as exc:
                    say(f"interrupted; records so far are in {run_dir}; continue with: fedsim run --resume {root}", err=True)
                    raise typer.Exit(143 if isinstance(exc, Interrupted) else 130)
                except Exception as exc:  # reported; the other points of a sweep still run
                    say(f"error in {v.label}: {_point_error(exc, run_dir)}", err=True)
                    failed, res = True, None
            results.append(res)
    from rich import box

    # Numbers never wrap; a long variant label folds instead (80 columns stay readable).
    table = Table(title=Text(f"{variants[0].scenario.name}: {root}"), box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    for col in ("variant", "rounds", "sim time", "acc", "to target", "stop", "wall s", "overhead"):
        table.add_column(col, no_wrap=col != "variant", overflow="fold" if col == "variant" else "ellipsis",
                         justify="left" if col in ("variant", "stop") else "right",
                         min_width=min(16, max(len(v.label) for v in variants)) if col == "variant" else None)
    for v, res in zip(variants, results):
        if res is None:
            table.add_row(*_row(v.label, "-", "-", "-", "-", "failed", "-", "-"))
            continue
        tta = "-" if res.time_to_target_s is None else duration(res.time_to_target_s)
        acc = "-" if res.final_accuracy is None else f"{res.final_accuracy:.3f}"
        outside = (res.wall_s - res.train_wall_s) / res.wall_s if res.wall_s > 0 else 0.0
        table.add_row(*_row(v.label, res.rounds, duration(res.sim_time_s), acc, tta, res.stop_reason.replace("target_accuracy", "target"), f"{res.wall_s:.0f}", f"{outside:.1%}"))
    console.print(table)
    ok_dirs = [d for d, r in zip(dirs, results) if r is not None]
    if ok_dirs:
        try:
            say(f"plot: {plot_time_to_accuracy(ok_dirs, root / 'time_to_accuracy.png')}")
        except FedsimError as exc:
            say(f"error: {exc}", err=True)
            failed = True
        except OSError as exc:
            say(f"error: {_os_error(exc)}", err=True)
            failed = True
    if failed:
        raise typer.Exit(1)


def _variants(scenario: Path | None, resume: Path | None, overrides: list[str], seed: int | None):
    """The runs to do: from the scenario file, or, resuming without one, from the folder's
    ``sweep.yaml`` (what ``fedsim run`` wrote there) or ``config.yaml`` (one run's folder)."""
    import yaml

    from fedsim.study.scenario import Scenario, Variant, load_scenario

    if scenario is not None:
        return load_scenario(scenario, overrides=overrides, seed=seed)
    if resume is None:
        raise FedsimError("give a scenario file, or --resume RUN_DIR")
    if overrides or seed is not None:
        raise FedsimError("--set and --seed need the scenario file; a resumed run keeps its configuration")
    source = resume / "sweep.yaml" if (resume / "sweep.yaml").is_file() else resume / "config.yaml"
    if not source.is_file():
        raise FedsimError(f"{resume} holds no run to resume (no config.yaml or sweep.yaml)")
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    configs = data["variants"] if source.name == "sweep.yaml" else [data]
    out = []
    for config in configs:
        config = dict(config)
        label = config.pop("variant", "") or ""
        out.append(Variant(label=label or config.get("method", {}).get("name", "run"), scenario=Scenario.model_validate(config)))
    return out


def _write_sweep(root: Path, variants, existing: str) -> None:
    from fedsim.study.sweep import write_sweep_file

    try:
        write_sweep_file(root, variants, existing)
    except FedsimError as exc:
        _fail(exc)


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="scenario YAML files")],
    grid: Annotated[Optional[list[str]], typer.Option("--grid", help="check this sweep grid too (as fedsim sweep takes it)")] = None,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="seeds of the grid, e.g. 0,1,2 or 0-4")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="dotted.key=value override (repeatable)")] = None,
) -> None:
    """Check scenario files (and the profiles they use), or a whole sweep grid, without running them."""
    from fedsim.study.scenario import load_scenario

    bad = 0
    for f in files:
        try:
            if grid or seeds:
                plan = _plan(f, Path("."), grid, seeds, set_, None)
                say(f"{f}: OK ({_count(len(plan.points), 'point')} x {_count(len(plan.seeds), 'seed')} = {_count(len(plan.runs), 'run')}; points: {', '.join(plan.points)})")
                continue
            variants = load_scenario(f, overrides=set_ or [])
        except FedsimError as exc:
            say(f"error: {exc}", err=True)
            bad += 1
            continue
        say(f"{f}: OK ({len(variants)} run{'s' if len(variants) != 1 else ''}: {', '.join(v.label for v in variants)})")
    if bad:
        raise typer.Exit(2)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _plan(scenario: Path, out: Path, grid, seeds, set_, names):
    from fedsim.study.grid import parse_seeds
    from fedsim.study.sweep import plan_sweep

    return plan_sweep(scenario, out, grid or [], parse_seeds(seeds) if seeds else None, set_ or [], names)


@app.command()
def sweep(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder: one run folder per point and seed, the study table and plots")],
    grid: Annotated[Optional[list[str]], typer.Option("--grid", help="KEY=v1,v2,... or KIND.CLASS.FIELD*=f1,f2,... (repeatable), e.g. 'network.*.up_mbps*=1,0.5,0.25'")] = None,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="seeds of every point, e.g. 0,1,2 or 0-4 (default: the scenario's)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="dotted.key=value override of the scenario (repeatable)")] = None,
    names: Annotated[Optional[str], typer.Option("--name-points", help="folder names of the points, comma-separated, in the order 'fedsim validate --grid' lists them")] = None,
    executor: Annotated[Optional[str], typer.Option("--executor", help="local, process or ray (default: local, or process with --jobs > 1)")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="runs side by side")] = 1,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="an existing Ray cluster (ray executor)")] = None,
    target: Annotated[Optional[float], typer.Option("--target", min=0.0, max=1.0, help="time to this accuracy in the table (default: the scenario's target)")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace the records already in the output folder")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="finish a sweep stopped in --out (finished runs are kept)")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="draw the study plots")] = True,
) -> None:
    """Run a what-if grid: every point of the scenario's sweep and the --grid keys, for every seed; then its study table and plots."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from fedsim.engine.rundir import Interrupted, signals_interrupt
    from fedsim.study.sweep import run_sweep

    if force and resume:
        _fail(FedsimError("--force and --resume contradict each other; give one"))
    with _failing_cleanly():
        plan = _plan(scenario, out, grid, seeds, set_, names)
        name = executor or ("process" if jobs > 1 else "local")
        existing = "resume" if resume else "overwrite" if force else "refuse"
        failed = []
        say(f"{_count(len(plan.points), 'point')} x {_count(len(plan.seeds), 'seed')} = {_count(len(plan.runs), 'run')} in {out}", err=True)
        with Progress(TextColumn("{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(), TextColumn("{task.fields[last]}"), TimeElapsedColumn(),
                      TextColumn("left ~"), TimeRemainingColumn(), console=err_console, disable=quiet) as progress:
            task = progress.add_task("runs", total=len(plan.runs), last="")
            rounds_task = progress.add_task("rounds", total=None, last="", visible=False)

            def on_round(run, row):
                progress.update(rounds_task, visible=True, total=run.scenario.engine.max_rounds, completed=row["round"] + 1,
                                last=f"{run.label}: round {row['round'] + 1}, t={duration(row['sim_time_s'])}")

            def on_done(run, result):
                if isinstance(result, BaseException):
                    failed.append(run)
                    say(f"error in {run.label}: {_point_error(result, run.run_dir)}", err=True)
                progress.update(task, advance=1, last=run.label)
                progress.reset(rounds_task, visible=False, last="")

            with signals_interrupt():
                try:
                    run_sweep(plan, executor=name, jobs=jobs, address=ray_address, existing=existing, on_done=on_done,
                              on_round=on_round)
                except (KeyboardInterrupt, Interrupted) as exc:
                    say(f"interrupted; finish it with: fedsim sweep {scenario} --out {out} --resume (same options)", err=True)
                    raise typer.Exit(143 if isinstance(exc, Interrupted) else 130)
        _study_outputs(plan.root, [r.run_dir for r in plan.runs if r not in failed], target, plots)
    if failed:
        raise typer.Exit(1)


def _study_outputs(root: Path, run_dirs: list[Path], target: float | None, plots: bool) -> None:
    """The study table (printed, ``study.csv``) and, with ``plots``, the study figures."""
    from fedsim.engine.rundir import finished_ok
    from fedsim.study.table import render, study_rows, write_study_csv

    done = [d for d in run_dirs if finished_ok(d)]
    if not done:
        return
    rows, differ = study_rows(done, target)
    say(render(rows).rstrip("\n"))
    if differ:
        say(f"points differ in: {', '.join(differ)}")
    say(f"wrote {write_study_csv(rows, differ, root / 'study.csv')}")
    if plots:
        from fedsim.study.figures import study_figures

        for path in study_figures(done, root / "plots", target=target):
            say(f"plot: {path}")


@app.command()
def profiles(
    name: Annotated[Optional[str], typer.Argument(help="a class to show in full")] = None,
    dir_: Annotated[Optional[Path], typer.Option("--dir", help="profile folder (default device_profiles/)")] = None,
    check: Annotated[Optional[Path], typer.Option("--check", help="scenario: per device class, predicted round time and memory, and who cannot take part")] = None,
    availability: Annotated[Optional[Path], typer.Option("--availability", help="scenario: plot the available share of its fleet over --days")] = None,
    days: Annotated[float, typer.Option(min=0.01, max=366, help="with --availability: simulated days to plot")] = 1.0,
    out: Annotated[Path, typer.Option("--out", "-o", help="with --availability: image file")] = Path("availability.png"),
) -> None:
    """List the device and network classes, or show one; check a scenario's fleet (--check)
    or plot its availability (--availability)."""
    import yaml

    from fedsim.fleet.profiles import load_profiles

    if check is not None or availability is not None:
        from fedsim.study.fleet_check import check_fleet, report
        from fedsim.study.plot_availability import plot_availability
        from fedsim.study.scenario import load_scenario

        with _failing_cleanly():
            for v in load_scenario(check) if check is not None else []:
                say(report(v.label, *check_fleet(v.scenario)))
            if availability is not None:
                say(f"wrote {plot_availability(load_scenario(availability)[0].scenario, out, days)}")
        return

    try:
        ps = load_profiles(dir_)
    except FedsimError as exc:
        _fail(exc)
    if name:
        cls = ps.devices.get(name) or ps.networks.get(name)
        if cls is None:
            _fail(FedsimError(f"no device or network class named {name!r} in {ps.directory}; known: {sorted(ps.devices) + sorted(ps.networks)}"))
        say(f"# {name} (from {ps.files[name]})")
        say(yaml.safe_dump(cls.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False, allow_unicode=True).rstrip("\n"))
        return
    t = Table(title=Text(f"device classes ({ps.directory})"))
    for col in ("class", "GFLOP/s (mean)", "app memory GB (mean)", "straggle p", "dropout p", "description"):
        t.add_column(col)
    for n, d in ps.devices.items():
        t.add_row(*_row(n, f"{d.train_gflops_per_s.mean():.1f}", f"{d.app_memory_gb.mean():.2f}", f"{d.straggle_prob:g}", f"{d.dropout_prob:g}", d.description))
    console.print(t)
    t = Table(title="network classes")
    for col in ("class", "down Mbit/s (mean)", "up Mbit/s (mean)", "latency ms (mean)", "dropout p", "description"):
        t.add_column(col)
    for n, c in ps.networks.items():
        t.add_row(*_row(n, f"{c.downlink_mbps.mean():.1f}", f"{c.uplink_mbps.mean():.1f}", f"{c.latency_ms.mean():.0f}", f"{c.dropout_prob:g}", c.description))
    console.print(t)


@app.command()
def calibrate(
    model: Annotated[str, typer.Option("--model", "-m", help="minilm-l6, tiny-bert or a local model directory")] = "minilm-l6",
    out: Annotated[Path, typer.Option("--out", "-o", help="profile file to write")] = Path("device_profiles/this-host.yaml"),
    name: Annotated[Optional[str], typer.Option(help="device class name (default: the file's stem)")] = None,
    configs: Annotated[Optional[str], typer.Option(help="SEQxBATCH[xLAYERS],... (default: 7 configurations)")] = None,
    steps: Annotated[int, typer.Option(min=1, max=1000, help="timed steps per configuration")] = 4,
    threads: Annotated[int, typer.Option(min=1, max=1024, help="torch threads while measuring (more than the idle cores makes them spin)")] = 1,
    watts: Annotated[float, typer.Option(min=0.1, max=1e5, help="assumed power while training, for joules_per_gflop")] = 30.0,
    force: Annotated[bool, typer.Option("--force", help="replace --out if it exists")] = False,
) -> None:
    """Measure this host's training step time and memory for a model, fit the cost model's
    host figures and write a device profile; prints predicted against measured."""
    from fedsim.study.calibrate import DEFAULT_CONFIGS, calibrate as run_calibration, parse_configs, table

    try:
        grid = parse_configs(configs) if configs else DEFAULT_CONFIGS
    except ValueError as exc:
        _fail(FedsimError(f"--configs {configs!r}: {exc}"))

    def on_row(m) -> None:
        say(f"  seq {m.config.seq_len} batch {m.config.batch_size} layers {m.layers_run}: {m.step_s:.4f} s/step, "
            f"{m.peak_train_bytes / 1e6:.0f} MB", err=True)

    with _failing_cleanly():
        fitted = run_calibration(model, out, configs=grid, name=name, steps=steps, threads=threads, watts=watts,
                                 force=force, on_row=on_row)
    say(table(fitted))
    say(f"wrote {out}")


def _finished_runs(run_dirs: list[Path]) -> list[Path]:
    """Finished runs at or below ``run_dirs`` (others are named on stderr); an error if none."""
    from fedsim.engine.rundir import finished_ok
    from fedsim.study.compare import find_runs

    found = find_runs(run_dirs)
    dirs = [d for d in found if finished_ok(d)]
    for d in found:
        if d not in dirs:
            say(f"skipped {d}: not a finished run (its summary.json does not say status: ok)", err=True)
    if not found:
        _fail(FedsimError(f"{run_dirs[0]} is not a run directory (no rounds.csv and summary.json at or below it); give folders written by 'fedsim run' or 'fedsim sweep'"))
    if not dirs:
        _fail(FedsimError(f"no finished run directories (summary.json with status ok + rounds.csv) at or below {[str(d) for d in run_dirs]}"))
    return dirs


def _say_differences(differ: list[str]) -> None:
    if differ:
        say(f"groups differ in: {', '.join(differ)} (runs that differ in the seed alone are one group)")


@app.command()
def plot(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories, or folders holding them (seeds are aggregated)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="an image file (.png/.pdf: accuracy over time only) or a folder for every study plot")] = Path("plots"),
    x: Annotated[str, typer.Option(help="x axis of the accuracy plot: time or round")] = "time",
    target: Annotated[Optional[float], typer.Option("--target", min=0.0, max=1.0, help="time to this accuracy (default: the runs' target)")] = None,
) -> None:
    """Plot runs: accuracy over simulated time (seeds aggregated), time to target against the swept value, resources, participation and failures by device class, a timeline."""
    from fedsim.study.figures import study_figures
    from fedsim.study.groups import group_runs
    from fedsim.study.plot import plot_time_to_accuracy

    if x not in ("time", "round"):
        _fail(FedsimError(f"--x must be 'time' or 'round', got {x!r}"))
    dirs = [d for d in run_dirs if (d / "rounds.csv").is_file()] if all((d / "rounds.csv").is_file() for d in run_dirs) else _finished_runs(run_dirs)
    with _failing_cleanly():
        _say_differences(group_runs(dirs)[1])
        if out.suffix.lower() in (".png", ".pdf", ".svg"):
            say(f"wrote {plot_time_to_accuracy(dirs, out, x=x, target=target)}")
            return
        for path in study_figures(dirs, out, target=target):
            say(f"wrote {path}")


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories, or folders holding them")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="folder for compare.csv and compare.md (default: first argument)")] = None,
    target: Annotated[Optional[float], typer.Option("--target", min=0.0, max=1.0, help="time to this accuracy, recomputed from rounds.csv (default: each run's target)")] = None,
) -> None:
    """Table of run groups over seeds (mean ± std): time to target, accuracy, memory, traffic, energy, failures."""
    from fedsim.study.compare import compare_groups, to_markdown, write_csv

    dirs = _finished_runs(run_dirs)
    with _failing_cleanly():
        rows, differ = compare_groups(dirs, target)
        md = to_markdown(rows)
        dest = out or (run_dirs[0] if run_dirs[0].is_dir() else run_dirs[0].parent)
        write_csv(rows, dest / "compare.csv")
        (dest / "compare.md").write_text(md, encoding="utf-8")
    # markup=False: method labels such as droppeft[compression=caesar] are not rich tags.
    console.print(md, highlight=False, soft_wrap=True, markup=False)
    if target is not None:
        say(f"time to target: to accuracy {target:g}, from rounds.csv")
    _say_differences(differ)
    say(f"wrote {dest / 'compare.csv'} and {dest / 'compare.md'} ({len(dirs)} runs)")


cache_app = typer.Typer(no_args_is_help=True, help="The training-reuse cache (train.reuse.cache_dir).")
app.add_typer(cache_app, name="cache")


@cache_app.command("clear")
def cache_clear(cache_dir: Annotated[Path, typer.Argument(help="the cache folder (train.reuse.cache_dir)")]) -> None:
    """Remove every entry of a reuse cache (only a folder fedsim made as one)."""
    from fedsim.learning.reuse import clear_cache

    try:
        files, nbytes = clear_cache(cache_dir)
    except ValueError as exc:
        _fail(FedsimError(str(exc)))
    say(f"removed {files} entries ({nbytes / 2**20:.1f} MiB) from {cache_dir}")


def main() -> None:
    try:
        app()
    except FedsimError as exc:  # anything not caught by a command
        say(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
