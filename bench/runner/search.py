"""``bench run --search lr=1e-4,1e-3,1e-2``: a hyper-parameter searched on valid, as SUPERB tunes its learning rate.

SUPERB picks the learning rate per upstream × task on the dev set and reports test at the best dev point (s3prl
``downstream/runner.py`` keeps ``dev-best.ckpt``; the paper searched lr per upstream, s3prl's configs carry one lr).
bench does the same in two steps, both ordinary parts of the results store:

1. **Grid points**: the run plan runs once per value, with the value as a ``-o`` option of every searched method.
   Each (task, method, seed, value) is an ordinary cell writing an ordinary record (the value is in its
   configuration, so a point equal to an earlier ``-o linear.lr=...`` run reuses that record). Features, units and
   F0 are cached per task and upstream, so only the first point extracts them; the others retrain heads/prompts.
2. **Selection**: per (task, method, upstream, seed) the point with the best *valid* score (what the method
   selected its own checkpoint on: ``info.best_valid`` / ``info.best_valid_loss``) is chosen, and a *selection
   record* is written: the chosen point's test outputs and scores, a configuration in which the searched key reads
   ``"search"`` and a top-level ``search`` block (key, grid) names the search, and the record's ``search`` field holds
   every point's valid score, the chosen value and the points' record paths. The test split is never read by the
   selection (:func:`choose` sees valid scores only).

``bench compare`` shows the selection records (``[lr=0.001 on valid]``) and hides the grid points they name, so
the leaderboard reports test at the best valid only, as SUPERB does.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from bench.core.errors import BenchError

SEARCHED = "search"  # what the searched key reads in a selection record's configuration


@dataclass(frozen=True)
class Search:
    """One key searched over a grid: ``values[method]`` are the grid converted to that method's field type."""

    key: str
    values: dict[str, tuple]
    raw: tuple[str, ...]

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.values)

    def __len__(self) -> int:
        return len(self.raw)

    def label(self, i: int) -> str:
        return f"{self.key}={format_value(next(iter(self.values.values()))[i])}"


def format_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def parse_search(spec: str, methods: list[str], user_options: dict[str, dict] | None = None) -> Search:
    """``KEY=v1,v2,...`` (every selected method with a ``KEY`` field) or ``METHOD.KEY=v1,v2,...`` (that method
    only), each value converted to the field's declared type. Refused with one line, before any work: bad syntax,
    fewer than two or repeated values, a key no selected method has (or one of them lacks), a value of the wrong
    type, the same key also given by ``-o``."""
    from bench.methods import METHODS, method_class
    from bench.methods.base import option_types, parse_option_value

    spec = spec.strip()
    if "=" not in spec:
        raise BenchError(f"--search '{spec}' must look like KEY=V1,V2,... (e.g. lr=1e-4,1e-3,1e-2) or "
                         "METHOD.KEY=V1,V2,...")
    lhs, rhs = (s.strip() for s in spec.split("=", 1))
    raw = tuple(v.strip() for v in rhs.split(","))
    if not lhs or any(not v for v in raw):
        raise BenchError(f"--search '{spec}': empty key or value; e.g. lr=1e-4,1e-3,1e-2")
    if "." in lhs:
        method, key = lhs.split(".", 1)
        if method not in METHODS:
            raise BenchError(f"--search '{spec}': unknown method '{method}'; known methods: {', '.join(METHODS)}")
        if method not in methods:
            raise BenchError(f"--search '{spec}': method '{method}' is not selected by --methods "
                             f"({', '.join(methods)})")
        targets = [method]
    else:
        key, targets = lhs, list(methods)
        lacking = [m for m in targets if key not in option_types(method_class(m).Config)]
        if len(lacking) == len(targets):
            raise BenchError(f"--search '{spec}': no selected method has an option '{key}' "
                             f"({', '.join(methods)}); `bench params`/baselines/*.yaml list the options")
        if lacking:
            raise BenchError(f"--search '{spec}': {', '.join(lacking)} has no option '{key}'; search "
                             f"METHOD.{key}=... for one method or drop the others from --methods")
    if len(raw) < 2:
        raise BenchError(f"--search '{spec}': a search needs at least two values")
    values = {}
    for m in targets:
        conv = tuple(parse_option_value(m, method_class(m).Config, key, v) for v in raw)
        if len({json.dumps(v, sort_keys=True, default=str) for v in conv}) < len(conv):
            raise BenchError(f"--search '{spec}': a value is repeated ({', '.join(map(format_value, conv))})")
        if key in (user_options or {}).get(m, {}):
            raise BenchError(f"--search '{spec}' and -o {m}.{key}=... both set {m}.{key}; keep one")
        values[m] = conv
    return Search(key, values, raw)


def point_options(opts, search: Search, i: int):
    """The run options of grid point ``i``: the value as a ``-o`` option of every searched method (the user's
    options win over the recipe's, so the value also overrides a recipe's own setting)."""
    method_options = {m: dict(o) for m, o in opts.method_options.items()}
    for m, vals in search.values.items():
        method_options.setdefault(m, {})[search.key] = vals[i]
    return replace(opts, method_options=method_options)


# ---------------------------------------------------------------------------------------------------------------
# selection (valid only)
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValidScore:
    metric: str
    value: float
    higher_is_better: bool
    loss: float = math.nan  # the tie-break, as the methods' own selection uses it


def valid_score(rec: dict) -> ValidScore:
    """The best valid score a record's method selected its checkpoint on, from what methods already record:
    ``info.best_valid`` (linear: ``accuracy``, exact match over all slots, and ``loss``; lstm: the task's main
    metric and ``loss``) or ``info.best_valid_loss`` (prompt methods select on valid loss)."""
    from bench.tasks.metrics import METRICS

    info = rec.get("info") or {}
    best = info.get("best_valid") or {}
    main = rec.get("main_metric")
    loss = best.get("loss", info.get("best_valid_loss", math.nan))
    loss = math.nan if loss is None else float(loss)
    if main in best:
        return ValidScore(main, float(best[main]), METRICS[main].higher_is_better, loss)
    if "accuracy" in best:
        return ValidScore("accuracy", float(best["accuracy"]), True, loss)
    if not math.isnan(loss):
        return ValidScore("loss", loss, False, loss)
    raise BenchError(f"{rec.get('method')}: its records hold no valid score (info.best_valid or "
                     "info.best_valid_loss), so a search cannot select on valid")


def valid_scores(points: list[dict]) -> list[ValidScore]:
    """Every grid point's valid score on one metric: the one the points report (a score before the loss); a point
    that lacks it (e.g. an lstm whose valid WER was NaN records only its loss) scores NaN on it, the worst."""
    found: list[ValidScore | None] = []
    for r in points:
        try:
            found.append(valid_score(r))
        except BenchError:
            found.append(None)
    ranked = [s for s in found if s and s.metric != "loss"] or [s for s in found if s]
    if not ranked:
        valid_score(points[0])  # raises, naming the method
    metric, higher = ranked[0].metric, ranked[0].higher_is_better
    return [s if s and s.metric == metric else ValidScore(metric, math.nan, higher, s.loss if s else math.nan)
            for s in found]


def choose(scores: list[ValidScore]) -> int:
    """Index of the best valid score (NaN worst); ties go to the lower valid loss, then to the earlier point."""
    def key(i: int):
        s = scores[i]
        v = s.value if not math.isnan(s.value) else (-math.inf if s.higher_is_better else math.inf)
        return (-v if s.higher_is_better else v, s.loss if not math.isnan(s.loss) else math.inf, i)

    return min(range(len(scores)), key=key)


def selection_config(config: dict, search: Search, method: str) -> dict:
    """A selection record's configuration: a grid point's, with the searched key reading ``"search"`` and the grid
    named; equal for every point (so for every seed, whatever each chose), hence one group in ``bench compare``."""
    out = copy.deepcopy(config)
    out["method"][search.key] = SEARCHED
    out["search"] = {"key": search.key, "grid": list(search.values[method]), "select_on": "valid"}
    return out


def selection_record(points: list[dict], search: Search, results_dir: Path) -> dict:
    """The selection record of one (task, method, upstream, seed) from its grid points' records (grid order):
    the chosen point's record (test outputs and scores included) under the selection configuration, plus
    ``search``: every point's valid score, the chosen value, the points' record paths and wall times."""
    from bench.results.records import config_hash, group_hash

    first = points[0]
    method = first["method"]
    scores = valid_scores(points)
    i = choose(scores)
    chosen = {k: v for k, v in points[i].items() if not k.startswith("_")}
    names = [format_value(v) for v in search.values[method]]
    config = selection_config(points[i]["config"], search, method)
    for r in points:  # the points must differ by the searched value alone
        if selection_config(r["config"], search, method) != config:
            raise BenchError(f"{first['task']} × {method} × seed {first['seed']}: the grid points' configurations "
                             f"differ in more than {search.key}; re-run the search with --force")
    rel = [str(Path(r["_path"]).resolve().relative_to(Path(results_dir).resolve())) for r in points]
    point_times = [float(r.get("wall_time_s") or 0.0) for r in points]
    return {
        **chosen,
        "config": config,
        "config_hash": config_hash(config),
        "group_hash": group_hash(config),
        "wall_time_s": round(sum(point_times), 3),  # what the selected result cost: every point's training
        "search": {
            "key": search.key,
            "grid": list(search.values[method]),
            "valid": {n: (None if math.isnan(s.value) else float(f"{s.value:.6g}")) for n, s in zip(names, scores)},
            "valid_metric": scores[i].metric,
            "higher_is_better": scores[i].higher_is_better,
            "chosen": search.values[method][i],
            "chosen_record": rel[i],
            "records": dict(zip(names, rel)),
            "wall_time_s": dict(zip(names, point_times)),
        },
    }


# ---------------------------------------------------------------------------------------------------------------
# the search as a run
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class PointCost:
    label: str
    seconds: float  # the point's run plan, end to end (data and features checks, cells)
    trained: int  # cells trained in this run
    training_s: float  # their summed wall time (record wall_time_s)
    reused: int


@dataclass
class SearchResult:
    search: Search
    points: list[PointCost] = field(default_factory=list)
    selections: list[Path] = field(default_factory=list)
    chosen: list[str] = field(default_factory=list)  # one line per selection: cell, chosen value, valid scores
    unselected: list[tuple[str, str]] = field(default_factory=list)  # (cell, why) where no selection was made

    def cost_lines(self) -> list[str]:
        total = sum(p.seconds for p in self.points)
        width = max(len(p.label) for p in self.points)
        lines = [f"search {self.search.key}: {len(self.points)} grid points, chosen on valid (test never read)"]
        for p in self.points:
            lines.append(f"  {p.label:<{width}}  {p.seconds:7.1f} s  {p.trained} cell(s) trained "
                         f"({p.training_s:.1f} s of training), {p.reused} reused")
        lines.append(f"  {'total':<{width}}  {total:7.1f} s  ({total / max(len(self.points), 1):.1f} s per point)")
        lines.append("  (data and features are built at the first point and cached for the others)")
        return lines


def run_search(tasks, methods: list[str], opts, search: Search, results_dir: Path, progress=None,
               log: Callable[[str], None] = print):
    """Every grid point through the run plan (:func:`bench.runner.plan.run_benchmark`), then one selection record
    per (task, searched method, upstream, seed) whose points all have a record. Returns (the merged RunSummary,
    the SearchResult)."""
    from bench.results.records import RecordKey, write_record
    from bench.runner.plan import RunSummary, run_benchmark

    results_dir = Path(results_dir)
    merged, result = RunSummary(), SearchResult(search)
    cells: dict[tuple, dict[int, dict]] = {}
    for i in range(len(search)):
        label = search.label(i)
        log(f"[bold]search point {i + 1}/{len(search)}[/]: {label}")
        started = time.perf_counter()
        summary = run_benchmark(tasks, methods, point_options(opts, search, i), results_dir, progress=progress,
                                log=log)
        seconds = time.perf_counter() - started
        training = 0.0
        for path in [*summary.written, *summary.skipped_existing]:
            rec = json.loads(Path(path).read_text())
            rec["_path"] = str(path)
            if path in summary.written:
                training += float(rec.get("wall_time_s") or 0.0)
            if rec["method"] in search.values:
                cells.setdefault((rec["task"], rec["method"], rec["upstream"], rec["seed"]), {})[i] = rec
        result.points.append(PointCost(label, seconds, len(summary.written), training, len(summary.skipped_existing)))
        merged.written += summary.written
        merged.skipped_existing += summary.skipped_existing
        merged.skipped += [s for s in summary.skipped if s not in merged.skipped]
        merged.not_applicable += [s for s in summary.not_applicable if s not in merged.not_applicable]
        merged.failed += [(f"{what} [{label}]", why) for what, why in summary.failed]
        merged.errors += summary.errors
        merged.submitted += summary.submitted
        merged.run_file = summary.run_file
    for (task, method, upstream, seed), by_point in sorted(cells.items()):
        name = f"{task} × {method} × {upstream} × seed {seed}"
        missing = [search.label(i) for i in range(len(search)) if i not in by_point]
        if missing:
            result.unselected.append((name, f"no record for {', '.join(missing)}"))
            continue
        try:
            rec = selection_record([by_point[i] for i in range(len(search))], search, results_dir)
        except BenchError as err:
            result.unselected.append((name, err.message))
            continue
        path = RecordKey(task, method, upstream, seed, group=rec["group_hash"]).path(results_dir)
        write_record(path, rec)
        result.selections.append(path)
        s = rec["search"]
        valid = ", ".join(f"{k} → {'–' if v is None else f'{v:.4g}'}" for k, v in s["valid"].items())
        result.chosen.append(f"{name}: {search.key}={format_value(s['chosen'])}\n"
                             f"    valid {s['valid_metric']} by {search.key}: {valid}")
    return merged, result


__all__ = ["Search", "parse_search", "point_options", "valid_score", "valid_scores", "choose", "selection_config",
           "selection_record", "run_search", "SearchResult", "PointCost", "format_value", "SEARCHED"]
