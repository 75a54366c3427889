"""bench from Python: run a grid and read its records as a table, for scripts and notebooks.

```python
from bench.api import run, load_results

paths = run(tasks="builtin-ks", methods="linear,prompt-gslm", seeds=[0, 1, 2], results="results")
df = load_results("results")                      # one row per record
df.pivot_table(index="task", columns="method", values="score")   # mean main score over seeds
```

:func:`run` is ``bench run`` without the printing: the same checks before any work (unknown task, method, option,
size or device raise :class:`bench.core.errors.BenchError`), the same run plan, the same records; it returns the
paths of the records of every requested cell (written now or reused). :func:`load_results` reads any results
directory (``bench run``'s, this module's, the committed ``leaderboards/records/``). Importing this module
imports neither torch nor pandas; :func:`run` imports torch, :func:`load_results` pandas. :func:`run` first sets
up this process's numerics (``numerics=``, bench.core.numerics): pinned by default when it runs before anything
imported torch or numpy, as in a script whose first bench call it is; otherwise fast, with a warning.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, Union

from bench.core.errors import BenchError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["run", "load_results", "RunFailed"]

Names = Union[str, Sequence[str]]
Options = Union[Mapping[str, Mapping[str, Any]], Sequence[str], None]


class RunFailed(BenchError):
    """Some requested cells have no record (a task skipped, a cell failed); ``paths`` are those that do."""

    def __init__(self, message: str, paths: list[Path], skipped: list[tuple[str, str]],
                 failed: list[tuple[str, str]]):
        super().__init__(message)
        self.paths, self.skipped, self.failed = paths, skipped, failed


def _names(value: Names) -> str:
    return value if isinstance(value, str) else ",".join(value)


def _option_items(options: Options) -> list[str]:
    """``{"linear": {"lr": 1e-3}}`` or ``["linear.lr=1e-3"]`` → the ``-o METHOD.KEY=VALUE`` items."""
    if options is None:
        return []
    if isinstance(options, Mapping):
        items = []
        for method, values in options.items():
            for key, value in values.items():
                text = value if isinstance(value, str) else json.dumps(list(value) if isinstance(value, tuple)
                                                                        else value)
                items.append(f"{method}.{key}={text}")
        return items
    return list(options)


def run(tasks: Names = "builtin", methods: Names = "linear", seeds: Iterable[int] = (0,),
        results: str | os.PathLike = "results", *, upstream: str | None = None, upstream_path: str | None = None,
        size: str = "default", data_seed: int = 0, limit: int | None = None, max_epochs: int | None = None,
        options: Options = None, recipe: str = "cpu-default", force: bool = False, device: str = "cpu",
        bf16: bool = False, jobs: int = 1, cell_threads: int = 1, skip_bad_audio: bool = False,
        task_dirs: Sequence[str | os.PathLike] | None = None, log: bool = False,
        raise_on_failure: bool = True, search: str | None = None, allow_stand_in: bool = False,
        max_seconds: float | None = None, long_audio: str | None = None,
        numerics: str | None = None) -> list[Path]:
    """Run every selected task with every selected method and seed; one record per cell under ``results``.

    Cells run on this machine (``bench run``'s local executor); Slurm is the command line's (``--executor slurm``).

    Args:
        tasks: a group (``"builtin"``, ``"all"``, ``"ks"``), a task name, or several (list or comma-separated).
        methods: ``"all"`` or method names (``linear``, ``lstm``, ``prompt-gslm``, ``prompt-gslm-lv``,
            ``prompt-pgslm``, ``prompt-pgslm-lv``).
        seeds: one record per seed.
        results: the results directory (records at ``<task>/<method>/<upstream>/<group>/seed-N.json``).
        upstream: the speech encoder (default: bench's, ``whisper_tiny_en``).
        size, data_seed, limit, max_epochs: the built-in suite's size and seed; the first ``limit``
            utterances per split and an epoch cap (smoke runs, marked as such in every table).
        options: method options, ``{"linear": {"lr": 1e-3}}`` or ``["linear.lr=1e-3"]``, checked against
            each method's typed ``Config`` before anything runs.
        recipe, force, device, bf16, jobs, cell_threads, skip_bad_audio: as ``bench run``'s options
            (``jobs`` defaults to 1 here: cells in this process).
        task_dirs: extra task directories (``--task-dir``).
        log: print bench's progress messages (cells done, cached, failed).
        raise_on_failure: raise :class:`RunFailed` when a task was skipped or a cell failed (its ``paths``
            hold the records that exist); False returns those paths.
        search: ``"lr=1e-4,1e-3,1e-2"`` as ``bench run --search`` (docs/search.md): every value's records, then
            one selection record per (task, method, seed) chosen on valid; the paths include both.
        allow_stand_in: under a published recipe whose models are not configured, run bench's offline
            stand-ins (recorded as ``stand_in``) instead of raising (``bench run --allow-stand-in``).
        max_seconds, long_audio: ``bench run --max-seconds`` / ``--long-audio``: a length limit on every split
            of every task and its policy, ``"crop"`` or ``"refuse"`` (bench.data.long_audio).
        numerics: ``"pinned"`` or ``"fast"`` (``bench run --numerics``), chosen for this whole process, since the
            libraries read it when they load: the first call sets it up if torch and numpy are not imported yet,
            later calls must ask for the same mode. None (the default) is ``BENCH_NUMERICS``, else pinned where
            it can be had and otherwise fast with a warning saying why (torch or numpy imported before this
            call, not x86-64); every record says which (``environment.numerics``). An explicit mode that cannot
            be had raises BenchError.

    Returns:
        The record paths of the requested cells, written now or reused from an earlier run, in plan order.
    """
    import warnings

    from bench.core.numerics import apply as apply_numerics

    # first, before this call imports torch or numpy: they read the pinned code paths when they load
    numerics = apply_numerics(numerics, note=lambda line: warnings.warn(line, RuntimeWarning, stacklevel=4))
    from bench.data.sources import SIZES, is_available
    from bench.lms.default_lm import DEFAULT_UPSTREAM
    from bench.methods import method_class, select_methods
    from bench.runner.plan import RunOptions, check_device, run_benchmark
    from bench.runner.recipes import load_recipe, options_for, published_models, split_pending
    from bench.tasks.registry import TaskRegistry

    from bench.cli import _parse_options

    task_expr = _names(tasks)
    reg = TaskRegistry([Path(d) for d in task_dirs] if task_dirs else None)
    specs = reg.select(task_expr)
    named = {t.strip() for t in task_expr.split(",")} & set(reg.tasks)
    specs = [s for s in specs if s.name in named or is_available(s)]  # as bench run: groups leave absent corpora out
    from bench.core.heap import bound_heap_for

    bound_heap_for((s.data.source for s in specs), size)  # freed feature arrays go back (bench/core/heap.py)
    method_names = select_methods(_names(methods))
    if size not in SIZES:
        raise BenchError(f"size must be one of {', '.join(SIZES)}, not '{size}'")
    device = check_device(device)
    from bench.cli import _check_long_audio

    _check_long_audio(max_seconds, long_audio)
    method_options = _parse_options(_option_items(options), method_names)
    # the published models a recipe names: configured, or refused before any work (as bench run)
    published = published_models(recipe, method_names, specs, upstream, upstream_path, method_options,
                                 allow_stand_in=allow_stand_in)
    upstream = published.upstream or DEFAULT_UPSTREAM
    load_recipe(recipe)
    for name in method_names:
        method_class(name)(method_options.get(name))
        for spec in specs:
            method_class(name)(split_pending(name, options_for(recipe, spec, name, method_options.get(name)))[0])
    from bench.core.model_paths import upstream_checkpoint

    upstream_path = upstream_checkpoint(upstream, explicit=upstream_path)  # a configured local checkpoint, if any
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise BenchError("seeds is empty: give at least one seed")
    opts = RunOptions(upstream=upstream, upstream_path=upstream_path, seeds=seeds, size=size, data_seed=data_seed,
                      limit=limit, force=force, device=device, max_epochs=max_epochs, method_options=method_options,
                      skip_bad_audio=skip_bad_audio, jobs=jobs, cell_threads=cell_threads, bf16=bf16, recipe=recipe,
                      published=published if published.files or published.stand_in else None,
                      max_seconds=max_seconds, long_audio=long_audio,
                      numerics=numerics)  # this process's, set up above; checked against torch's
    if search is None:
        summary = run_benchmark(specs, method_names, opts, Path(results),
                                log=print if log else (lambda message: None))
        selections = []
    else:
        from bench.runner.search import parse_search, run_search

        summary, found = run_search(specs, method_names, opts, parse_search(search, method_names, method_options),
                                    Path(results), log=print if log else (lambda message: None))
        summary.failed += found.unselected
        selections = found.selections
    paths = sorted({*summary.written, *summary.skipped_existing, *selections})
    if raise_on_failure and (summary.skipped or summary.failed or not paths):
        what = [f"skipped {w}: {why.splitlines()[0]}" for w, why in summary.skipped]
        what += [f"failed {w}: {why.splitlines()[0] if why else ''}" for w, why in summary.failed]
        raise RunFailed("; ".join(what) or "nothing ran: no record was written or reused", paths,
                        summary.skipped, summary.failed)
    return paths


FIXED_COLUMNS = ("task", "method", "upstream", "recipe", "seed", "config_hash", "group", "main_metric", "score",
                 "higher_is_better", "trainable", "frozen", "stored_per_task", "synthetic", "origin", "kind",
                 "family", "size", "limit", "smoke", "search_key", "search_chosen", "wall_time_s", "git_revision",
                 "path")


def load_results(path: str | os.PathLike) -> "pd.DataFrame":
    """Every record under ``path`` as a pandas DataFrame, one row per record.

    Columns: ``task``, ``method``, ``upstream``, ``recipe``, ``seed``, ``config_hash`` (the resolved
    configuration), ``group`` (the configuration without the seed: rows with equal ``group`` differ by seed alone,
    as ``bench compare`` averages them), ``main_metric`` and its value ``score``, ``higher_is_better`` (of the main
    metric), one column per metric (``accuracy``, ``wer``, ...; empty where a task lacks it), the parameter
    counts ``trainable``, ``frozen``, ``stored_per_task``, ``synthetic`` (a generated task standing in for a
    published one), ``origin``, ``kind``, ``family``, ``size``, ``limit`` and ``smoke`` (a ``--limit`` run),
    ``search_key`` and ``search_chosen`` (a ``--search`` selection record: the key and the value chosen on valid;
    None elsewhere), ``wall_time_s``, ``git_revision`` and ``path`` (the record file). Scores are as stored:
    fractions, not ×100.
    """
    import pandas as pd

    from bench.results.records import read_records, record_group

    rows, metrics = [], []
    for rec in read_records(Path(path)):
        config, data = rec.get("config") or {}, rec.get("data") or {}
        limit = (config.get("data") or {}).get("limit", data.get("limit"))
        main = rec.get("main_metric")
        row: dict[str, Any] = {
            "task": rec["task"], "method": rec["method"], "upstream": rec["upstream"],
            "recipe": config.get("recipe", ""), "seed": rec["seed"], "config_hash": rec.get("config_hash", ""),
            "group": record_group(rec), "main_metric": main, "score": rec["scores"].get(main),
            "higher_is_better": (rec.get("higher_is_better") or {}).get(main, True),
            "trainable": rec["params"]["trainable"], "frozen": rec["params"]["frozen"],
            "stored_per_task": rec["params"]["stored_per_task"],
            "synthetic": rec.get("task_origin") == "synthetic", "origin": rec.get("task_origin", ""),
            "kind": rec.get("task_kind", ""), "family": rec.get("task_family", ""),
            "size": data.get("size", (config.get("data") or {}).get("size")), "limit": limit,
            "smoke": limit is not None,
            "search_key": (rec.get("search") or {}).get("key"),
            "search_chosen": (rec.get("search") or {}).get("chosen"),
            "wall_time_s": rec.get("wall_time_s"),
            "git_revision": rec.get("git_revision", ""), "path": rec["_path"],
        }
        for metric, value in rec["scores"].items():
            column = metric if metric not in FIXED_COLUMNS else f"score_{metric}"
            if column not in metrics:
                metrics.append(column)
            row[column] = value
        rows.append(row)
    if not rows:
        raise BenchError(f"no result records under {path}", hint="run bench.api.run(...) or `bench run` first")
    df = pd.DataFrame(rows, columns=[*FIXED_COLUMNS[:10], *metrics, *FIXED_COLUMNS[10:]])
    return df.sort_values(["task", "method", "upstream", "group", "seed"], kind="stable").reset_index(drop=True)
