"""The ``bench`` command line. Heavy libraries are imported inside commands so that help and listing are instant."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from bench.core.errors import BenchError
from bench.lms.default_lm import DEFAULT_UPSTREAM

app = typer.Typer(
    help="bench: prompt tuning of frozen spoken language models vs s3prl downstream baselines, per task and per "
    "trainable parameter.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Build the built-in suite, check real corpora.", no_args_is_help=True)
pretrain_app = typer.Typer(help="Pretrain models bench needs offline (unit LMs).", no_args_is_help=True)
units_app = typer.Typer(help="Speech-to-units: k-means quantizers.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(pretrain_app, name="pretrain")
app.add_typer(units_app, name="units")

console = Console()
err_console = Console(stderr=True)
STATE = {"debug": False}


@app.callback()
def _main(ctx: typer.Context, debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    STATE["debug"] = debug
    from bench.core.heap import bound_heap

    if ctx.invoked_subcommand != "run":  # `bench run` decides once it knows its tasks (bound_heap_for)
        bound_heap()  # freed feature arrays go back to the system (bench/core/heap.py), here and in children
    if ctx.invoked_subcommand in COMPUTING:  # `bench run` chooses its own, with --numerics
        _numerics(None)


COMPUTING = ("evaluate", "data", "units", "pretrain", "params", "cache")  # commands that compute what records
# are made of, or read the mode's caches


def _numerics(requested: str | None) -> str:
    """This process's numerics (bench.core.numerics), before anything loads torch or numpy: BENCH_NUMERICS or
    --numerics, else pinned where it can be had, else fast with a one-line note."""
    from bench.core import numerics

    return numerics.apply(requested, note=lambda line: err_console.print(f"[yellow]note[/]: {line}",
                                                                         highlight=False, soft_wrap=True))


def _registry(task_dirs: list[Path] | None):
    from bench.tasks.registry import TaskRegistry

    return TaskRegistry(task_dirs or None)


TASK_DIRS = typer.Option(None, "--task-dir", help="Extra/alternative directory of task YAML files (repeatable).")


def _parse_options(options: list[str], selected: list[str] | None = None) -> dict[str, dict]:
    """``-o METHOD.KEY=VALUE`` items, each value converted to the type its method's Config declares. Refused
    before any work: bad syntax, an unknown method, a method the run does not select, an unknown key, a value
    of the wrong type (all one line naming the option)."""
    from bench.methods import METHODS, method_class
    from bench.methods.base import parse_option_value

    out: dict[str, dict] = {}
    for item in options:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise BenchError(f"--option '{item}' must look like METHOD.KEY=VALUE, e.g. prompt-gslm.prompt_length=6")
        lhs, value = item.split("=", 1)
        method, key = lhs.split(".", 1)
        if method not in METHODS:
            raise BenchError(f"--option '{item}': unknown method '{method}'; known methods: {', '.join(METHODS)}")
        if selected is not None and method not in selected:
            raise BenchError(f"--option '{item}': method '{method}' is not selected by --methods "
                             f"({', '.join(selected) or 'none'}); add it or drop the option")
        out.setdefault(method, {})[key] = parse_option_value(method, method_class(method).Config, key, value)
    return out


def _parse_seeds(seeds: str) -> tuple[int, ...]:
    try:
        if "-" in seeds and "," not in seeds:
            a, b = seeds.split("-")
            out = tuple(range(int(a), int(b) + 1))
        else:
            out = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise BenchError(f"--seeds '{seeds}' must be a list like 0,1,2 or a range like 0-4") from None
    if not out:
        raise BenchError(f"--seeds '{seeds}' selects no seed; expected a list like 0,1,2 or a range like 0-4 "
                         "(first ≤ last)")
    return out


def _check_counts(limit: int | None, max_epochs: int | None) -> None:
    """``--limit`` and ``--max-epochs`` are positive when given (0 or -1 would run something else than asked)."""
    if limit is not None and limit < 1:
        raise BenchError(f"--limit {limit}: expected a positive number of utterances per split (leave it out for "
                         "all the data)")
    if max_epochs is not None and max_epochs < 1:
        raise BenchError(f"--max-epochs {max_epochs}: expected a positive number of epochs (leave it out for each "
                         "method's own budget)")


def _check_long_audio(max_seconds: float | None, policy: str | None) -> None:
    """``--max-seconds`` is a positive finite number, ``--long-audio`` crop or refuse (bench.data.long_audio)."""
    import math

    from bench.data.long_audio import POLICIES

    if max_seconds is not None and not (math.isfinite(max_seconds) and max_seconds > 0):
        raise BenchError(f"--max-seconds {max_seconds:g}: expected a positive number of seconds")
    if policy is not None and policy not in POLICIES:
        raise BenchError(f"--long-audio must be one of {', '.join(POLICIES)}, not '{policy}'")


def _check_model_options(name: str, options: dict) -> None:
    """Model files named by a method's options exist (a path) or are configured (a model name), before any work."""
    from bench.prompt.engine import existing_or_model, looks_like_path

    for key, kind in (("kmeans", "kmeans"), ("lm_checkpoint", None), ("units_upstream_path", None)):
        value = options.get(key)
        if not isinstance(value, str) or not value:
            continue
        if kind is not None:
            existing_or_model(value, kind, option=f"{name}.{key}")
        elif looks_like_path(value) and not Path(value).expanduser().exists():
            raise BenchError(f"option {name}.{key}={value!r}: no such file or directory "
                             f"({Path(value).expanduser().absolute()})")


@app.command()
def tasks(
    group: Optional[str] = typer.Option(None, "--tasks", "-t", help="Only these tasks/groups (e.g. builtin, ks,ic)."),
    details: bool = typer.Option(False, "--details", help="Also what each task stands in for, its family and where "
                                 "to get missing data."),
    task_dir: Optional[list[Path]] = TASK_DIRS,
):
    """List registered tasks: name, kind, metrics, whether the data is available and its origin (synthetic,
    corpus, ...); --details: what each stands in for and where to get missing data."""
    from rich.table import Table

    from bench.data.sources import is_available
    from bench.results.terminal import wrap

    reg = _registry(task_dir)
    specs = reg.select(group) if group else list(reg)
    # fits 80 columns with every name and word whole: one metric per line, the long texts under --details
    t = Table(title=f"{len(specs)} tasks", box=None, show_lines=False, pad_edge=False, header_style="bold")
    for col in ("task", "kind", "metrics", "data"):
        t.add_column(col, overflow="fold", no_wrap=col == "task")
    from bench.tasks.metrics import METRICS

    missing = 0
    for s in specs:
        metrics = "\n".join(f"{m} {'↑' if METRICS[m].higher_is_better else '↓'}" for m in s.metrics)
        if s.data.source == "builtin":
            data = "[green]built in[/]"
        elif is_available(s):
            data = "[green]available[/]"
        else:
            data, missing = "[yellow]missing[/]", missing + 1
        if s.origin != "corpus":
            data += f", {s.origin}"  # synthetic: generated, standing in for a published task
        t.add_row(s.name, s.kind, metrics, data)
    console.print(t)
    if details:
        for s in specs:
            console.print(f"[bold]{s.name}[/] ({s.family})", highlight=False)
            texts = [f"stands in for: {s.stands_in_for}"] if s.stands_in_for else []
            if s.data.source != "builtin" and not is_available(s):
                texts.append(f"data: {s.data.where or 'see bench data check ' + s.name}")
            for text in texts:
                for line in wrap(text, console.width, indent="  ", subsequent="    "):
                    console.print(line, markup=False, highlight=False, soft_wrap=True)
    elif missing:
        console.print(f"[dim]{missing} task(s) without local data: `bench tasks --details` or `bench data check "
                      "TASK` says where to get it[/]")
    groups = ", ".join(sorted(reg.groups))
    console.print(f"[dim]groups: {groups}[/]")


@app.command()
def run(
    tasks: str = typer.Option("all", "--tasks", "-t", help="'all', a group, or comma-separated task names."),
    methods: str = typer.Option("all", "--methods", "-m", help="'all' or comma-separated: linear,lstm,prompt-gslm,..."),
    upstream: Optional[str] = typer.Option(None, "--upstream", "-u",
                                           help="Speech encoder: whisper_tiny_en (default, pretrained, offline; a "
                                           "published recipe's own: hubert_local), whisper_base, an s3prl name "
                                           "(offline: fbank, mfcc; fbank is SUPERB's floor row) or hf_*."),
    upstream_path: Optional[str] = typer.Option(None, help="Checkpoint for *_local upstreams / hf_* directories."),
    seeds: str = typer.Option("0", help="Seeds, e.g. 0,1,2 or 0-4; one record per seed."),
    size: str = typer.Option("default", help="Built-in suite size: tiny, default, large."),
    data_seed: int = typer.Option(0, help="Seed of the built-in data generation (splits are fixed by it)."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N utterances per split (smoke runs)."),
    max_epochs: Optional[int] = typer.Option(None, help="Cap every method's epoch budget (smoke runs)."),
    results: Path = typer.Option(Path("results"), help="Directory of result records."),
    leaderboard_dir: Optional[Path] = typer.Option(None, "--leaderboard-dir", "--leaderboards",
                                                   help="Where to write the tables (default: <results>/leaderboards)."),
    force: bool = typer.Option(False, help="Recompute records that already exist with the same config."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="METHOD.KEY=VALUE (repeatable)."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or mps (checked before anything runs)."),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast in every cell's training and inference (on "
                              "cuda; on cpu too, slower on most CPUs). Recorded: its records are separate systems."),
    compare: bool = typer.Option(True, help="Write and print the leaderboard afterwards."),
    skip_bad_audio: bool = typer.Option(False, "--skip-bad-audio", help="Drop unreadable/empty/too-short/NaN audio "
                                        "files from a task (recorded in its records) instead of refusing the task."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Cells run at once, each in a worker "
                                       "process on --cell-threads threads (default: min(2, cores)). Records do not "
                                       "depend on it; data, features and LMs are built once, before the cells."),
    cell_threads: int = typer.Option(1, min=1, help="torch threads of each cell (recorded in its environment)."),
    executor: str = typer.Option("local", help="Where cells run: local (this machine, --jobs at a time) or slurm "
                                 "(one Slurm job array through submitit; shared builds first as one job)."),
    slurm: Optional[list[str]] = typer.Option(None, "--slurm", help="Slurm setting KEY=VALUE (repeatable; also the "
                                              "user config's slurm: section): partition, gpus_per_node, "
                                              "cpus_per_task, mem_gb, timeout_min, array_parallelism, qos, account, "
                                              "constraint, exclude, additional_parameters.NAME, setup, "
                                              "submitit_folder, stage_job."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="slurm: follow the jobs to the end, or submit and "
                              "return (`bench status RESULTS` follows; re-running the command collects)."),
    recipe: str = typer.Option("cpu-default", "--recipe", help="Published settings to run (recipes/*.yaml: "
                               "cpu-default, speechprompt-v1, speechprompt-v2, superb; docs/recipes.md); "
                               "-o options override it."),
    allow_stand_in: bool = typer.Option(False, "--allow-stand-in", help="Under a published recipe whose models "
                                        "are not configured (docs/real-checkpoints.md), run bench's offline "
                                        "stand-in LMs / upstream instead of refusing; every record, table column "
                                        "and --reference comparison says stand-in."),
    search: Optional[str] = typer.Option(None, "--search", help="KEY=V1,V2,... (or METHOD.KEY=...): one cell per "
                                         "value and seed, the value chosen on valid per task, method and seed, "
                                         "test reported there (SUPERB's lr search; docs/search.md)."),
    feature_cache: str = typer.Option("all", "--feature-cache", help="What the feature cache keeps: all (every "
                                      "layer's frames + pooled means), layers (only the layers each method reads: "
                                      "units one, lstm/linear all), pooled (pooled means only), none (nothing on "
                                      "disk). Under pooled and none, lstm and units compute frames in the run "
                                      "(the upstream per batch; the same numbers). Recorded, not hashed."),
    trust_model_files: bool = typer.Option(False, "--trust-model-files", help="Load model files (checkpoints, "
                                           "km.bin, F0 bins) that need more than the published formats' data "
                                           "types by full unpickling, which can run code from them; recorded."),
    numerics: Optional[str] = typer.Option(None, "--numerics", envvar="BENCH_NUMERICS", help="pinned (the "
                                           "default: AVX2 code paths in ATen, MKL, oneDNN and OpenBLAS, the same "
                                           "records on every x86-64 machine; where it cannot be had, e.g. on "
                                           "aarch64, fast with a note) or fast (the libraries pick the CPU's best "
                                           "kernels). Recorded; pinned records have their own config hash."),
    max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help="Longest utterance allowed, in seconds, "
                                                "in every split of every task (replaces a task card's or recipe's "
                                                "long_audio limit); longer ones are cropped or refused (--long-audio)."
                                                " Recorded (config long_audio), only when set."),
    long_audio: Optional[str] = typer.Option(None, "--long-audio", help="crop (keep the first max_seconds) or "
                                             "refuse (skip the task before extraction, naming the longest file) "
                                             "above the limit; default: the limit's own policy, refuse."),
    task_dir: Optional[list[Path]] = TASK_DIRS,
):
    """Run every selected task with every selected method; one result record per (task, method, upstream, seed).

    Exit status: 0 when every requested cell has a record, 1 when a task was skipped (missing data, bad audio) or a
    cell failed (each is named in the summary), 2 for a usage error found before anything ran. Corpus tasks a group
    selects (`all`, `corpus`, a family) whose data is not present are left out, not skipped; a task named
    explicitly is required."""
    numerics = _numerics(numerics)  # before anything loads torch or numpy: they read the variables when they load
    from bench.data.sources import SIZES, is_available
    from bench.methods import method_class, select_methods
    from bench.core.progress import live_progress
    from bench.runner.plan import RunOptions, check_device, run_benchmark

    from bench.core.model_paths import upstream_checkpoint

    # everything a user typed is checked before any data is built or any feature extracted
    reg = _registry(task_dir)
    specs = reg.select(tasks)
    # a corpus the user has not got is no failure when a group (all, corpus, ks, ...) selected it; a task named
    # explicitly must run, and is a skip (exit 1) when its data is missing
    named = {t.strip() for t in tasks.split(",")} & set(reg.tasks)
    absent = [s.name for s in specs
              if s.name not in named and not is_available(s, allow_missing_audio=skip_bad_audio)]
    specs = [s for s in specs if s.name not in absent]
    from bench.core.heap import bound_heap_for

    bound_heap_for((s.data.source for s in specs), size)  # before any worker starts: workers inherit it
    method_names = select_methods(methods)
    if size not in SIZES:
        raise BenchError(f"--size must be one of {', '.join(SIZES)}, not '{size}'")
    seed_list = _parse_seeds(seeds)
    _check_counts(limit, max_epochs)
    device = check_device(device)
    from bench.features.store import FEATURE_CACHE_MODES

    if feature_cache not in FEATURE_CACHE_MODES:
        raise BenchError(f"--feature-cache must be one of {', '.join(FEATURE_CACHE_MODES)}, not '{feature_cache}'")
    _check_long_audio(max_seconds, long_audio)
    method_options = _parse_options(option or [], method_names)
    from bench.runner.recipes import load_recipe, options_for, published_models, split_pending

    # the published models the recipe names: configured (refused in one line before any work) or stand-ins
    published = published_models(recipe, method_names, specs, upstream, upstream_path, method_options,
                                 allow_stand_in=allow_stand_in)
    upstream = published.upstream
    load_recipe(recipe)
    for name in method_names:  # the merged config (baseline defaults + recipe + options) of each method is valid
        method_class(name)(method_options.get(name))
        for spec in specs:
            passed = split_pending(name, options_for(recipe, spec, name, method_options.get(name)))[0]
            method_class(name)(passed)
            _check_model_options(name, passed)
    searched = None
    if search is not None:
        from bench.runner.search import parse_search

        searched = parse_search(search, method_names, method_options)
        if not wait:
            raise BenchError("--search needs the grid points' records to choose from: drop --no-wait")
    from bench.features.upstream import check_upstream_name

    check_upstream_name(upstream)
    upstream_path = upstream_checkpoint(upstream, explicit=upstream_path)  # configured local checkpoint, if any
    slurm_settings = _slurm_settings(executor, slurm or [], wait)
    opts = RunOptions(upstream=upstream, upstream_path=upstream_path, seeds=seed_list, size=size,
                      data_seed=data_seed, limit=limit, force=force, device=device, max_epochs=max_epochs,
                      method_options=method_options, debug=STATE["debug"], skip_bad_audio=skip_bad_audio,
                      jobs=jobs or min(2, os.cpu_count() or 1), cell_threads=cell_threads, executor=executor,
                      slurm=slurm_settings, wait=wait, bf16=bf16, recipe=recipe, feature_cache=feature_cache,
                      trust_model_files=trust_model_files, numerics=numerics, max_seconds=max_seconds,
                      long_audio=long_audio,
                      published=published if published.files or published.stand_in else None)
    console.print(f"bench run: {len(specs)} task(s) × {len(method_names)} method(s) × {len(opts.seeds)} seed(s) "
                  f"on [bold]{upstream}[/], recipe {recipe}, results in {results}/")
    for name, replaced in published.stand_in.items():
        console.print(f"  [yellow]stand-in[/]: {name} runs bench's offline stand-in for {', '.join(replaced)} "
                      f"({recipe}'s published models are not configured; its records say stand_in)")
    from bench.data.long_audio import unlimited

    no_limit = unlimited(specs, recipe, max_seconds, long_audio)
    if no_limit:
        console.print(f"  [yellow]note[/]: --long-audio {long_audio} does nothing for {len(no_limit)} task(s) "
                      f"without a max_seconds (give --max-seconds, or long_audio in the task card or recipe): "
                      f"{', '.join(no_limit[:6])}{' ...' if len(no_limit) > 6 else ''}", highlight=False)
    if absent:
        console.print(f"  [dim]{len(absent)} selected corpus task(s) have no local data and are left out "
                      f"(`bench tasks` says where to get them): {', '.join(absent)}[/]")
    import time

    started = time.perf_counter()
    with live_progress(console) as progress:
        if searched is None:
            summary = run_benchmark(specs, method_names, opts, results, progress=progress, log=console.print)
        else:
            from bench.runner.search import run_search

            summary, found = run_search(specs, method_names, opts, searched, results, progress=progress,
                                        log=console.print)
    minutes, seconds = divmod(round(time.perf_counter() - started), 60)
    console.print(f"grid time: {minutes} min {seconds:02d} s (data, features, LMs and cells; set-up not included)")
    if searched is not None:
        summary.failed += found.unselected
    console.print(f"[bold]{len(summary.written)}[/] record(s) written, {len(summary.skipped_existing)} reused, "
                  f"{len(summary.skipped)} skipped, {len(summary.failed)} failed"
                  + (f"; {len(summary.not_applicable)} task × method pair(s) not applicable (e.g. linear on a "
                     "generation task)" if summary.not_applicable else ""))
    for what, why in summary.skipped:
        console.print(f"  [yellow]skipped[/] {what}: {why.splitlines()[0]}")
    from rich.markup import escape

    for what, why in summary.failed:
        console.print(f"  [red]failed[/] {what}: {escape(why)}")
    for why in summary.errors:
        console.print(f"  [red]error[/] {escape(why)}")
    if summary.submitted:
        console.print(f"[bold]{len(summary.submitted)}[/] cell(s) submitted to Slurm and not waited for: "
                      f"`bench status {results}` shows them; the same command again collects them (it submits "
                      "only cells with neither a record nor a live job)")
        if not (summary.failed or summary.skipped):
            return
    if compare and (summary.written or summary.skipped_existing):
        _compare([results], None, leaderboard_dir or results / "leaderboards", all_metrics=False, reference=None,
                 plot=True, tasks={s.name for s in specs})
    if searched is not None:  # last, under the leaderboard: what was chosen and what the search cost
        _print_search(found, results)
    if not (summary.written or summary.skipped_existing):
        console.print("[red]nothing ran[/]: no record was written or reused")
    if summary.failed or summary.skipped or summary.errors or not (summary.written or summary.skipped_existing):
        console.print(f"[red]exit 1[/]: {len(summary.skipped)} task(s) skipped, {len(summary.failed)} cell(s) failed"
                      + (f", {len(summary.errors)} error(s)" if summary.errors else ""))
        raise typer.Exit(1)


def _print_search(found, results: Path) -> None:
    """What the search chose (per task, method and seed, with every point's valid score) and what it cost."""
    for line in found.chosen[:30]:
        console.print(f"  chosen {line}", markup=False, highlight=False)
    if len(found.chosen) > 30:
        console.print(f"  ... and {len(found.chosen) - 30} more (each selection record's `search` field)")
    console.print(f"{len(found.selections)} selection record(s) written; `bench compare` shows them, not the grid "
                  "points")
    for line in found.cost_lines():
        console.print(line, markup=False, highlight=False)


def _slurm_settings(executor: str, items: list[str], wait: bool):
    from bench.runner.plan import EXECUTORS

    if executor not in EXECUTORS:
        raise BenchError(f"--executor must be one of {', '.join(EXECUTORS)}, not '{executor}'")
    if executor != "slurm":
        if items:
            raise BenchError("--slurm settings need --executor slurm")
        if not wait:
            raise BenchError("--no-wait needs --executor slurm (a local run is its own process)")
        return None
    from bench.runner.slurm import check_available, user_settings

    settings = user_settings(items)
    check_available()
    return settings


@app.command()
def status(
    results: Path = typer.Argument(Path("results"), help="The results directory of a `bench run`."),
    run_id: Optional[str] = typer.Option(None, "--run", help="Which run (a name under RESULTS/.runs/; default: the "
                                         "latest)."),
    all_cells: bool = typer.Option(False, "--all", help="List every cell, also those done or reused."),
):
    """Where each cell of a run stands: queued, running, done or failed (Slurm jobs from squeue and their result
    files; done means its record exists with the planned configuration); interrupted or not started when the local
    run was stopped (signal, kill -9) before it ended. Exit 1 when a cell failed, is missing or was interrupted."""
    from collections import Counter

    from rich.markup import escape
    from rich.table import Table

    from bench.runner.runfile import cell_states, latest_run

    run = latest_run(results, run_id)
    states = cell_states(run)
    counts = Counter(s.state for s in states)
    console.print(f"run {run.run_id} ({run.executor}, {run.created}"
                  + (", detached" if not run.waited else "") + (", client finished" if run.finished else "") + "): "
                  + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    shown = [s for s in states if all_cells or s.state not in ("done", "reused")]
    if shown:  # the cell's label is long and whole: the table holds it, the detail goes on its own lines
        from bench.results.terminal import wrap

        table = Table("state", "job", "cell", box=None, pad_edge=False, header_style="bold")
        for s in shown:
            colour = {"failed": "red", "missing": "red", "interrupted": "red", "not started": "yellow",
                      "running": "cyan", "queued": "yellow"}.get(s.state, "green")
            table.add_row(f"[{colour}]{s.state}[/]", escape(s.job_id or ""), escape(s.label))
            if s.detail:
                table.add_row("", "", escape("\n".join(wrap(s.detail, max(20, console.width - 20)))))
        console.print(table)
    if counts.get("interrupted") or counts.get("not started"):
        console.print(f"[red]the run was stopped[/] before its cells ended ({counts.get('interrupted', 0)} "
                      f"interrupted, {counts.get('not started', 0)} not started)")
    if counts.get("failed") or counts.get("missing") or counts.get("interrupted") or counts.get("not started"):
        console.print("re-run the same `bench run` command: it submits only the cells without a record")
        raise typer.Exit(1)


@app.command("compare")
def compare_cmd(
    results: Optional[list[Path]] = typer.Argument(None, help="Result directories (default: results). Two or more "
                                                    "are compared side by side."),
    label: Optional[list[str]] = typer.Option(None, help="Names for the result directories, in order."),
    out: Optional[Path] = typer.Option(None, "--out", "--leaderboard-dir", "--leaderboards",
                                       help="Where to write CSV, markdown and the plot (default: RESULTS/leaderboards "
                                       "for one results directory; with several, only when given)."),
    all_metrics: bool = typer.Option(False, help="Every metric of every task, not only the main one."),
    reference: Optional[str] = typer.Option(None, help="Published table to show beside ours, e.g. speechprompt-v2."),
    plot: bool = typer.Option(True, help="Also write score-vs-parameters plots."),
    details: bool = typer.Option(False, "--details", help="Also print every cell in full: mean ± std (n), the "
                                 "95 % bootstrap interval and p against the best."),
):
    """Turn result records into score (mean ± std over seeds, 95 % bootstrap interval, significance against the best)
    and parameter-count leaderboards; records that differ by more than the seed are separate systems. The printed
    table fits the terminal (systems are codes with a legend, one heading per metric); the files keep full names."""
    results = results or [Path("results")]
    if out is None and len(results) == 1:
        out = Path(results[0]) / "leaderboards"  # beside the records, as `bench run` writes it; never the cwd
    _compare(results, label, out, all_metrics, reference, plot, details=details)


@app.command("report")
def report_cmd(
    results: list[Path] = typer.Argument(..., help="Result directories (records under <task>/<method>/...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for index.html and its PNG figures."),
    label: Optional[list[str]] = typer.Option(None, help="Names for the result directories, in order."),
):
    """One static HTML page (figures beside it, no network needed) from the records alone: the leaderboard with
    intervals and significance, confusion matrices or error by reference length, layer weights, verbalizer maps,
    learning curves and the parameter-efficiency plot."""
    from bench.core.progress import live_progress
    from bench.results.report import build_report

    with live_progress(console) as progress:
        rep = build_report(results, out, label, progress=progress)
    console.print(f"wrote {rep.index} and {len(rep.figures)} figures beside it (opens offline)")


def _compare(results, labels, out, all_metrics, reference, plot, tasks: set[str] | None = None,
             details: bool = False):
    from rich.markup import escape

    from bench.results.compare import build_leaderboard, records_frame, rescore_mismatches, summarize, write_leaderboard

    if labels and len(labels) != len(results):
        raise BenchError(f"--label given {len(labels)} time(s) for {len(results)} result directories")
    if len(results) > 1 and not labels:
        labels = [Path(r).name or str(r) for r in results]
    skipped: list[tuple[str, str]] = []
    df = records_frame(list(results), labels, skipped)
    for path, why in skipped:  # one damaged record costs its own cell, not the whole table
        err_console.print(f"[yellow]warning[/]: skipped {escape(path)}: {escape(why)}", soft_wrap=True)
    if tasks:
        df = df[df["task"].isin(tasks)]
    ref = None
    if reference:
        from bench.results.reference import reference_table

        ref = reference_table(reference, tasks=sorted(set(df["task"])))
        if bool(df["stand_in"].any()):
            err_console.print(f"[yellow]warning[/]: columns marked (stand-in) ran bench's offline stand-in models, "
                              f"not the published ones: not comparable with the '{reference}' rows")
    from bench.core.progress import live_progress

    with live_progress(console) as progress:
        summary = summarize(df, progress=progress)
    for line in rescore_mismatches(summary):
        err_console.print(f"[yellow]warning[/]: {escape(line)}")
    lb = build_leaderboard(summary, all_metrics=all_metrics, reference=ref)
    files = write_leaderboard(lb, out, plot=plot) if out is not None else []
    from bench.results.terminal import leaderboard_lines

    for line in leaderboard_lines(lb.scores_numeric, lb.params, ref, width=console.width, details=details):
        console.print(line, markup=False, highlight=False, soft_wrap=True)  # already fitted to the width
    if files:
        console.print("wrote:\n" + "\n".join(f"  {f}" for f in files), markup=False, highlight=False, soft_wrap=True)
    else:
        console.print("no files written (several result directories: --out DIR writes the tables)")


@app.command()
def params(
    method: str = typer.Option(..., "--method", "-m", help="Method name, e.g. linear, lstm, prompt-gslm."),
    task: str = typer.Option(..., "--task", "-t", help="Task name (its label set sizes the heads)."),
    upstream: str = typer.Option(DEFAULT_UPSTREAM, "--upstream", "-u"),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="METHOD.KEY=VALUE (repeatable)."),
    task_dir: Optional[list[Path]] = TASK_DIRS,
):
    """Parameter breakdown of a method on a task, without training."""
    from rich.table import Table

    from bench.methods import method_class
    from bench.methods.base import RunContext
    from bench.core.paths import cache_dir, models_dir

    spec = _registry(task_dir).get(task)
    opts = _parse_options(option or [], [method])
    m = method_class(method)(opts.get(method))
    if not m.supports(spec):
        raise BenchError(f"method '{method}' does not handle {spec.kind} task '{task}'")
    ctx = RunContext(seed=0, upstream=upstream, cache_dir=cache_dir(), models_dir=models_dir())
    pc = m.count_parameters(spec, ctx)
    t = Table(title=f"{method} on {task} ({upstream})")
    t.add_column("part")
    t.add_column("parameters", justify="right")
    for part, n in pc.breakdown.items():
        t.add_row(part, f"{n:,}")
    t.add_row("[bold]trainable[/]", f"[bold]{pc.trainable:,}[/]")
    t.add_row("frozen", f"{pc.frozen:,}")
    t.add_row("stored per task", f"{pc.stored_per_task:,}")
    console.print(t)


@app.command("evaluate")
def evaluate_cmd(
    record: Path = typer.Argument(..., help="A result record (seed-N.json) whose trained state is kept beside it."),
    task: str = typer.Option(..., "--task", "-t", help="The task whose test split to score (same label set)."),
    size: Optional[str] = typer.Option(None, help="Built-in suite size (default: the record's)."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N utterances per split."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or mps."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the scores and outputs to this JSON file."),
    task_dir: Optional[list[Path]] = TASK_DIRS,
):
    """Score a record's kept head (linear, lstm) or prompt set on another task's test split; nothing is trained."""
    import json

    from bench.runner.evaluate import evaluate_record
    from bench.runner.plan import check_device

    spec = _registry(task_dir).get(task)
    from bench.core import numerics

    try:  # a record made in the other --numerics mode: say so (scores may differ in the last digits)
        made = "pinned" if (json.loads(record.read_text()).get("config") or {}).get("numerics") else "fast"
    except (OSError, ValueError, AttributeError):
        made = numerics.current()  # evaluate_record says what is wrong with the file
    if made != numerics.current():
        console.print(f"[yellow]note[/]: the record was made with --numerics {made}, this process runs "
                      f"{numerics.current()}; BENCH_NUMERICS={made} scores on the record's code paths",
                      highlight=False)
    result = evaluate_record(record, spec, size=size, limit=limit, device=check_device(device),
                             log=lambda m: console.print(m, markup=False, highlight=False))
    console.print(f"{result['method']} ({result['upstream']}, seed {result['seed']}) trained on "
                  f"{result['trained_on']}, scored on {result['task']} test ({result['n']} utterances):",
                  markup=False, highlight=False)
    for metric, value in result["scores"].items():
        console.print(f"  {metric} {value:.4f}", markup=False, highlight=False)
    if out is not None:
        from bench.data.manifest import write_text_atomic

        write_text_atomic(out, json.dumps(result, indent=1) + "\n", "evaluation")
        console.print(f"wrote {out}", markup=False, highlight=False)


@data_app.command("build")
def data_build(
    tasks: str = typer.Argument("builtin", help="Tasks or groups to build (default: the whole built-in suite)."),
    size: str = typer.Option("default", help="tiny, default or large."),
    data_seed: int = typer.Option(0, help="Generation seed."),
    rebuild: bool = typer.Option(False, help="Regenerate even if a matching build exists."),
    task_dir: Optional[list[Path]] = TASK_DIRS,
):
    """Generate the built-in offline suite (or some of its tasks). Prints time and size."""
    import time

    from rich.table import Table

    from bench.data.sources import builtin_dir, prepare_manifest
    from bench.core.progress import live_progress

    specs = [s for s in _registry(task_dir).select(tasks) if s.data.source == "builtin"]
    if not specs:
        raise BenchError(f"'{tasks}' selects no built-in task")
    t = Table(title=f"built-in suite ({size}, data seed {data_seed})", box=None, pad_edge=False,
              header_style="bold")  # no rules: 80 columns hold every task name whole
    for c in ("task", "train", "valid", "test", "classes", "seconds", "MB", "manifest sha256"):
        t.add_column(c, no_wrap=c == "task", justify="left" if c in ("task", "manifest sha256") else "right")
    total_t, total_mb = 0.0, 0.0
    with live_progress(console) as progress:
        for s in specs:
            t0 = time.perf_counter()
            m = prepare_manifest(s, size, data_seed, advance_factory=progress, rebuild=rebuild)
            dt = time.perf_counter() - t0
            d = builtin_dir(s, size, data_seed)
            mb = sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) / 2**20
            total_t += dt
            total_mb += mb
            sz = m.sizes()
            t.add_row(s.name, str(sz["train"]), str(sz["valid"]), str(sz["test"]), str(len(m.labels("train"))),
                      f"{dt:.1f}", f"{mb:.1f}", m.checksum()[:12])
    console.print(t)
    console.print(f"total: {total_t:.1f} s, {total_mb:.1f} MB")


@data_app.command("check")
def data_check(
    task: str = typer.Argument(..., help="A corpus, manifest or built-in task."),
    root: Optional[Path] = typer.Option(None, help="Corpus root directory (overrides the configured one)."),
    size: str = typer.Option("default", help="Built-in tasks: the suite size to check (built if needed)."),
    data_seed: int = typer.Option(0, help="Built-in tasks: the generation seed."),
    task_dir: Optional[list[Path]] = TASK_DIRS,
):
    """Report exactly what is present, missing or malformed for a corpus, and where to get it; then decode every
    audio file of the task and name each unreadable, empty, header-only, NaN/Inf or too-short one (exit 1 if any)."""
    from bench.data.audio_check import MIN_SECONDS
    from bench.data.sources import check_data, check_data_audio
    from bench.core.progress import live_progress

    spec = _registry(task_dir).get(task)
    ok = True
    if spec.data.source != "builtin":
        report = check_data(spec, root)
        console.print(report.render() if hasattr(report, "render") else str(report))
        ok = report.ok
    with live_progress(console) as progress:
        audio = check_data_audio(spec, root, size, data_seed, advance_factory=progress)
    if audio is not None:
        cached = audio.files - audio.decoded
        console.print(f"audio: {audio.files} file(s) of {audio.checked} utterance(s) checked, {audio.decoded} "
                      f"decoded now" + (f", {cached} unchanged since the last check (cached)" if cached else "")
                      + f"; minimum length {MIN_SECONDS:g} s")
        for line in audio.lines():
            console.print(f"  [red]bad audio[/] {line}", soft_wrap=True)
        console.print(f"  {len(audio.bad)} bad audio file(s)" if audio.bad else "  [green]all audio readable[/]")
        ok = ok and audio.ok
    if not ok:
        raise typer.Exit(1)


@units_app.command("fit")
def units_fit(
    tasks: str = typer.Option("builtin", "--tasks", "-t", help="Tasks whose TRAINING audio the k-means is fitted on."),
    upstream: str = typer.Option(DEFAULT_UPSTREAM, "--upstream", "-u",
                                 help="Upstream the frames come from (GSLM: HuBERT)."),
    upstream_path: Optional[str] = typer.Option(None, help="Checkpoint for *_local upstreams / hf_* directories."),
    layer: Optional[int] = typer.Option(None, help="Hidden-state layer (GSLM: 6 for HuBERT Base; -1 = last; default: "
                                        "the upstream's probed unit layer, docs/upstreams.md)."),
    num_units: int = typer.Option(100, "--num-units", "-k", help="K, the number of units (GSLM: 50, 100, 200)."),
    seed: int = typer.Option(0, help="k-means seed (also draws the frame subsample)."),
    max_frames: int = typer.Option(200_000, help="Fit on at most this many frames (a seeded subsample)."),
    n_init: Optional[int] = typer.Option(None, help="k-means restarts (GSLM: 20)."),
    size: str = typer.Option("default", help="Built-in suite size: tiny, default, large."),
    data_seed: int = typer.Option(0, help="Seed of the built-in data generation."),
    speech_hours: float = typer.Option(0.0, "--speech-hours", help="Also fit on this many hours of the rendered "
                                       "pretraining corpus of `bench pretrain ulm --speech-hours` (its frames "
                                       "extracted on the fly, not cached)."),
    out: Optional[Path] = typer.Option(None, help="Also copy the centroids here (.npy, with a .json beside it)."),
    trust_model_files: bool = typer.Option(False, "--trust-model-files", help="Load an --upstream-path checkpoint "
                                           "that needs full unpickling (can run code from it)."),
    task_dir: Optional[list[Path]] = TASK_DIRS,
):
    """Fit a k-means quantizer (GSLM's speech2unit: MiniBatchKMeans) on the training audio of some tasks.

    Cached by (upstream, layer, K, seed, the audio): a second call loads it. Use it with
    `-o prompt-gslm.kmeans=PATH`; GSLM's released km.bin files load the same way."""
    from bench.data.sources import prepare_manifest
    from bench.features.store import FeatureStore
    from bench.core.model_paths import upstream_checkpoint
    from bench.core.paths import cache_dir, models_dir
    from bench.core.progress import live_progress
    from bench.units.store import fit_quantizer

    from bench.lms.default_lm import UNIT_LAYERS

    from bench.core.safe_load import set_trust

    set_trust(trust_model_files)
    specs = _registry(task_dir).select(tasks)
    upstream_path = upstream_checkpoint(upstream, explicit=upstream_path)
    layer = layer if layer is not None else UNIT_LAYERS.get(upstream, -1)
    with live_progress(console) as progress:
        items = []
        for s in specs:
            m = prepare_manifest(s, size, data_seed, advance_factory=progress)
            items.append((m, m.split("train")))
        what = f"{len(specs)} task(s)"
        if speech_hours > 0:  # 50 h of every state would cache ~35 GB: the frames are extracted on the fly
            from bench.data.pretrain_speech import PretrainSpeechConfig
            from bench.lms.default_lm import pretraining_speech_examples

            corpus, kept = pretraining_speech_examples(PretrainSpeechConfig(hours=speech_hours, seed=data_seed),
                                                       [m for m, _ in items], console.print, progress=progress)
            items.append((corpus, kept))
            what += f" and {speech_hours:g} h of pretraining speech ({corpus.root.name})"
        n = sum(len(exs) for _, exs in items)
        features = FeatureStore(upstream, upstream_path, cache_dir(),
                                **({"keep": "none", "layers": (layer,)} if speech_hours > 0 else {}))
        console.print(f"fitting k-means K={num_units} on {upstream} layer {layer}: {n} training utterances "
                      f"of {what}", soft_wrap=True)
        q = fit_quantizer(features, items, layer, num_units, seed, models_dir(), max_frames=max_frames,
                          n_init=n_init)
    path = Path(q.meta.get("source", ""))
    if out is not None:
        path = q.save(out)
    console.print(f"k-means: K={q.num_units}, dim {q.dim}, hash {q.hash}, {q.meta.get('fitted_frames', '?')} frames "
                  f"fitted -> {path}")


@pretrain_app.command("ulm")
def pretrain_ulm(
    prosody: bool = typer.Option(False, "--prosody", help="pGSLM's multi-stream LM (units + durations + F0)."),
    tasks: str = typer.Option("builtin", "--tasks", "-t", help="Tasks whose TRAINING audio (unlabelled) is used."),
    size: str = typer.Option("default", help="Built-in suite size: tiny, default, large."),
    data_seed: int = typer.Option(0, help="Seed of the built-in data generation."),
    upstream: str = typer.Option(DEFAULT_UPSTREAM, "--upstream", "-u", help="Upstream of the units."),
    layer: Optional[int] = typer.Option(None, help="Hidden-state layer of the units (default: the upstream's "
                                        "probed unit layer, docs/upstreams.md; -1 = last)."),
    num_units: int = typer.Option(100, "--num-units", "-k", help="K of the k-means."),
    epochs: Optional[int] = typer.Option(None, help="Pretraining epochs of the LM being built (default: 20 for the "
                                         "GSLM ULM, 15 for the MS-TLM)."),
    lm_size: str = typer.Option("small", help="LM size: small (3 x 128, the default stand-in), medium (4 x 256), "
                                "tiny (2 x 64) or big (transformer_lm_big); the --prosody MS-TLM takes the same "
                                "shape."),
    seed: int = typer.Option(0, help="Seed of k-means and LM initialisation."),
    speech_hours: float = typer.Option(0.0, "--speech-hours", help="Also pretrain on this many hours of rendered "
                                       "speech, half English, half the suite's other languages (voices and "
                                       "sentences no built-in task evaluates on; rendered once under "
                                       "$BENCH_HOME/data)."),
    out: Optional[Path] = typer.Option(None, help="Also copy the LM directory here."),
    rebuild: bool = typer.Option(False, help="Build it on this machine even where bench ships a copy "
                                 "(bench/assets/default_lms); runs then prompt the local build."),
):
    """Pretrain a unit LM offline on unlabelled training audio (never valid/test) and save it in fairseq's format.

    With the defaults this builds exactly the LM `bench run` uses for prompt-gslm (and, with --prosody, for
    prompt-pgslm); the directory holds checkpoint_best.pt, dict.txt, the k-means and units.json. Built once:
    a second call reuses it. Point a run at another one with `-o prompt-gslm.lm_checkpoint=DIR`."""
    import shutil

    from bench.core.paths import cache_dir, models_dir
    from bench.core.progress import live_progress
    from bench.lms.default_lm import DefaultLMConfig
    from bench.methods.base import RunContext

    gslm = DefaultLMConfig(tasks=tasks, size=size, data_seed=data_seed, upstream=upstream, layer=layer,
                           num_units=num_units, lm_size=lm_size, seed=seed, speech_hours=speech_hours,
                           **({"max_epochs": epochs} if epochs is not None and not prosody else {}))
    with live_progress(console) as progress:
        ctx = RunContext(seed=seed, upstream=upstream, cache_dir=cache_dir(), models_dir=models_dir(),
                         progress=progress, log=console.print)
        directory, use = _pretrain(ctx, gslm, prosody, seed, lm_size, epochs, rebuild)
    if out is not None:
        if out.exists():
            raise BenchError(f"--out {out} exists; choose a new directory")
        shutil.copytree(directory, out)
        directory = out
        use = use.split("=")[0] + f"={out}"
    console.print(f"unit LM: {directory}\nuse it with: bench run ... {use}")


def _pretrain(ctx, gslm, prosody: bool, seed: int, lm_size: str, epochs, rebuild: bool):
    from bench.lms.default_lm import ensure_default_lm

    if prosody:  # the MS-TLM shares the GSLM default's k-means (same units), built first if needed
        from bench.lms.default_pgslm import DefaultPGSLMConfig, ensure_default_pgslm

        # with pretraining speech, the units are those of the default ULM (shipped), not of a ULM on that speech
        pgslm = DefaultPGSLMConfig(units=gslm.units_base() if gslm.speech_hours else gslm, seed=seed,
                                   lm_size=lm_size, speech_hours=gslm.speech_hours,
                                   **({"epochs": epochs} if epochs is not None else {}))
        directory = ensure_default_pgslm(ctx, config=pgslm, rebuild=rebuild)
        use = f"-o prompt-pgslm.lm={directory}"
    else:
        directory = ensure_default_lm(ctx, config=gslm, rebuild=rebuild)
        use = f"-o prompt-gslm.lm_checkpoint={directory}"
    return directory, use


@app.command("cache")
def cache_cmd(
    action: str = typer.Argument("list", help="list (default) or prune."),
    upstream: Optional[str] = typer.Option(None, help="prune: this upstream (name, or its directory name)."),
    task: Optional[str] = typer.Option(None, help="prune: the shards this task used and no other task did."),
    older_than: Optional[float] = typer.Option(None, "--older-than", help="prune: what was not used for DAYS."),
    dry_run: bool = typer.Option(False, "--dry-run", help="prune: say what would go, remove nothing."),
):
    """The feature cache: each upstream's size, the tasks that used it and when; `bench cache prune` removes by
    upstream, task and/or age."""
    import datetime

    from bench.core.paths import cache_dir
    from bench.features.cachedir import list_cache, prune_cache
    from bench.features.store import human_bytes

    if action not in ("list", "prune"):
        raise BenchError(f"bench cache: unknown action '{action}'; use list or prune")
    if action == "prune":
        removed = prune_cache(cache_dir(), upstream=upstream, task=task, older_than_days=older_than,
                              dry_run=dry_run)
        for what, n in removed:
            console.print(f"{'would remove' if dry_run else 'removed'} {what} ({human_bytes(n)})", soft_wrap=True)
        total = sum(n for _, n in removed)
        console.print(f"{len(removed)} entr{'y' if len(removed) == 1 else 'ies'}, {human_bytes(total)}"
                      f"{' (dry run)' if dry_run else ''}")
        return
    from bench.core import numerics
    from bench.core.paths import bench_home

    for mode, sub in numerics.CACHE_SUBDIRS.items():  # the other --numerics mode keeps its own cache
        if mode != numerics.current() and (bench_home() / "cache" / sub / "features").is_dir():
            console.print(f"[dim]--numerics {mode} runs keep their own cache: BENCH_NUMERICS={mode} bench cache[/]")
    entries = list_cache(cache_dir())
    if not entries:
        console.print(f"the feature cache under {cache_dir()} is empty")
        return
    for c in entries:
        when = datetime.datetime.fromtimestamp(c.last_use).strftime("%Y-%m-%d %H:%M")
        console.print(f"{c.upstream} ({c.config_id})  {human_bytes(c.bytes)}  last used {when}", soft_wrap=True)
        for t in sorted(c.tasks, key=lambda t: -c.tasks[t]):
            t_when = datetime.datetime.fromtimestamp(c.tasks[t]).strftime("%Y-%m-%d %H:%M")
            console.print(f"  {t}  {t_when}", soft_wrap=True)
    console.print(f"total {human_bytes(sum(c.bytes for c in entries))} in {cache_dir() / 'features'}",
                  soft_wrap=True)


@app.command()
def models(verify: bool = typer.Option(False, help="Open each configured file and check it is the published model."),
           trust_model_files: bool = typer.Option(False, "--trust-model-files", help="With --verify: open files "
                                                  "that need full unpickling (can run code from them).")):
    """Local model files bench knows (HuBERT, GSLM k-means and unit LMs, pGSLM): configured? usable?"""
    from rich.table import Table

    from bench.core.model_paths import model_status, user_config_path
    from bench.core.safe_load import set_trust

    set_trust(trust_model_files)

    t = Table(title=f"models (config: {user_config_path()}, or BENCH_MODEL_<NAME>)", box=None, pad_edge=False,
              header_style="bold")  # no rules: the most room for paths (folded only when longer than a line)
    for c in ("name", "kind", "status", "path / problem"):
        t.add_column(c, overflow="fold", no_wrap=c in ("name", "kind"))
    for row in model_status(verify=verify):
        status = "[green]ok[/]" if row["ok"] else "[yellow]not usable[/]"
        problem = row["problem"].split(": set ")[0]  # the full how-to is printed when a run needs the model
        t.add_row(row["name"], row["kind"], status, row["path"] if row["ok"] else problem)
    console.print(t)


def main() -> None:
    try:
        app()
    except BenchError as err:
        if STATE["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {err.message}")
        if err.hint:
            err_console.print(f"[dim]hint:[/] {err.hint}")
        err_console.print("[dim](run with --debug for a traceback)[/]")
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: finished records are kept; re-run to resume.")
        sys.exit(130)


if __name__ == "__main__":
    main()
