"""``bench compare``: result records → score and parameter-count leaderboards (CSV, markdown, a plot).

Scores are mean ± std over seeds (sample std, n shown), with ↑/↓ for the metric's direction and the best method per
task in bold in markdown (among full runs: a ``--limit`` smoke run is never a task's best). Synthetic tasks are marked as such in every table.

Only records that differ by seed alone are averaged: records of one (task, method, upstream) with different group
hashes (other options, epochs, data size or limit, artefacts) are separate systems, labelled by the settings in
which their resolved configurations differ (``linear (fbank) [lr=0.01]``); ``--limit`` runs are marked (smoke).

From the per-utterance outputs stored in the records (schema 2) every cell is re-scored and gets a 95 %
percentile-bootstrap interval of its mean over seeds, resampling test utterances jointly across the seeds
(:mod:`bench.results.stats`, B = 1000, seed 0), and each system is tested against the task's best system on the same test
utterances (exact McNemar for accuracy with one seed each, the paired bootstrap otherwise): ``≈`` marks a system
not significantly different from the best (p ≥ 0.05, no correction for multiple comparisons). Records without
outputs (schema 1) show '–' for both.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.data.manifest import write_text_atomic
from bench.core.errors import BenchError
from bench.results.records import outputs_scores, read_records, record_group

ORIGIN_MARK = {"synthetic": " (synthetic)", "real-human": " (real human)", "mixed": " (mixed)", "corpus": ""}
ALPHA = 0.05
SIMILAR_MARK = "≈"
# keys of the resolved configuration that name the task or derive from the data rather than being settings
_TASK_KEYS = {"seed", "task", "task_version", "task_fingerprint", "manifest_sha256",
              "recipe", "recipe_data", "recipe_unapplied",  # the recipe has its own label and column
              "models", "stand_in",  # published model files (their content is in artefacts); stand-ins: own mark
              "search"}  # a --search selection is labelled by its chosen value (_search_labels)
DEFAULT_RECIPE = "cpu-default"


def _flatten(d: dict, prefix: tuple = ()) -> dict[tuple, object]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, (*prefix, str(k))))
        else:
            out[(*prefix, str(k))] = v
    return out


def _short(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, float):
        return f"{v:g}"
    s = str(v)
    return s[:8] if len(s) > 16 and all(c in "0123456789abcdef" for c in s) else (s if len(s) <= 24 else s[:21] + "…")


def config_labels(configs: dict[str, dict]) -> dict[str, str]:
    """group hash → the settings in which its configuration differs from the other groups (``lr=0.01, limit=3``);
    '' when there is one group. A key is named by the shortest dotted suffix that is unambiguous."""
    if len(configs) < 2:
        return {g: "" for g in configs}
    flat = {g: {k: v for k, v in _flatten(c).items() if k[0] not in _TASK_KEYS} for g, c in configs.items()}
    keys = sorted({k for f in flat.values() for k in f}, key=lambda k: (len(k), k))
    missing = object()
    differing = [k for k in keys if len({repr(f.get(k, missing)) for f in flat.values()}) > 1]

    def name(k):
        for n in range(1, len(k) + 1):
            if sum(o[-n:] == k[-n:] for o in differing) == 1:
                return ".".join(k[-n:])
        return ".".join(k)

    return {g: ", ".join(f"{name(k)}={_short(f.get(k))}" for k in differing) for g, f in flat.items()}


def stand_in(rec: dict) -> bool:
    """A record made under a published recipe without its published models: ``--allow-stand-in`` (config
    ``stand_in``), or a record from before that switch whose prompt method ran bench's offline stand-in LM."""
    config = rec.get("config") or {}
    if config.get("stand_in"):
        return True
    if config.get("recipe", DEFAULT_RECIPE) in ("", DEFAULT_RECIPE):
        return False
    info = rec.get("info") or {}
    lm = info.get("lm") if isinstance(info.get("lm"), dict) else info
    return bool(lm.get("default_offline_lm"))


PER_TASK = "per task (recipe)"


def recipe_normalized(config: dict, method: str) -> dict:
    """``config`` with each method option that its published recipe sets per task (v2's batch sizes) replaced by
    a marker when it holds the recipe's value for the record's task: one recipe is one system across tasks, not a
    column per batch size. Any other difference (``-o``, another value) still names a variant."""
    recipe = config.get("recipe")
    if not recipe or recipe == DEFAULT_RECIPE or not isinstance(config.get("method"), dict):
        return config
    try:
        from bench.runner.recipes import _unchecked_recipe, options_for

        r = _unchecked_recipe(recipe)
        keys = {k for tr in r.tasks.values() for k in tr.methods.get(method, {})}
        want = options_for(r, config.get("task", ""), method) if keys else {}
    except BenchError:  # a recipe this checkout does not have: labels as before
        return config
    same = {k for k in keys if k in want and config["method"].get(k) == want[k]}
    if not same:
        return config
    return {**config, "method": {**config["method"], **{k: PER_TASK for k in same}}}


def _usable(rec: dict, skipped: list[tuple[str, str]]) -> bool:
    """Whether a record has the fields a leaderboard row reads with the types it needs; else noted in ``skipped``."""
    params = rec.get("params")
    problems = [k for k, ok in (("scores", isinstance(rec.get("scores"), dict)), ("params", isinstance(params, dict)
                and all(k in params for k in ("trainable", "frozen", "stored_per_task"))),
                ("config", isinstance(rec.get("config") or {}, dict))) if not ok]
    if not problems:
        try:
            record_group(rec)
        except Exception as err:  # noqa: BLE001 - a record this damaged is skipped, not fatal to the table
            problems.append(f"config ({type(err).__name__}: {err})")
    if problems:
        skipped.append((rec.get("_path", "?"), f"malformed result record ({', '.join(problems)})"))
    return not problems


def records_frame(results_dirs: list[Path], labels: list[str] | None = None,
                  skipped: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """One row per (record, metric). ``labels`` name the result directories when comparing several. ``group`` is
    the record's configuration without the seed; ``variant`` names how it differs from the other configurations of
    the same method and upstream in the same result directory. Given a ``skipped`` list, a record that cannot be
    read or lacks what a row needs is left out and appended to it as (path, why); otherwise it is an error."""
    rows = []
    for i, d in enumerate(results_dirs):
        label = labels[i] if labels else ""
        recs = read_records(Path(d), skipped)
        if skipped is not None:
            recs = [rec for rec in recs if _usable(rec, skipped)]
        recs = _without_search_points(recs, Path(d))
        configs: dict[tuple, dict[str, dict]] = {}
        for rec in recs:
            rec["_group"] = record_group(rec)
            configs.setdefault((rec["method"], rec["upstream"]), {})[rec["_group"]] = recipe_normalized(
                rec.get("config") or {}, rec["method"])
        chosen = _search_labels(recs)
        variants = {k: config_labels(v) for k, v in configs.items()}
        for rec in recs:
            variant = variants[(rec["method"], rec["upstream"])][rec["_group"]]
            if rec.get("search"):
                variant = chosen[(rec["method"], rec["upstream"], rec["_group"])](variant)
            limit = (rec.get("config") or {}).get("data", {}).get("limit", (rec.get("data") or {}).get("limit"))
            for metric, value in rec["scores"].items():
                rows.append({
                    "run": label,
                    "task": rec["task"],
                    "origin": rec.get("task_origin", ""),
                    "method": rec["method"],
                    "upstream": rec["upstream"],
                    "group": rec["_group"],
                    "variant": variant,
                    "recipe": (rec.get("config") or {}).get("recipe", ""),  # '' for records before recipes
                    "limit": limit,
                    "stand_in": stand_in(rec),
                    "seed": rec["seed"],
                    "metric": metric,
                    "main": metric == rec.get("main_metric"),
                    "higher_is_better": rec.get("higher_is_better", {}).get(metric, True),
                    "value": value,
                    "trainable": rec["params"]["trainable"],
                    "frozen": rec["params"]["frozen"],
                    "stored_per_task": rec["params"]["stored_per_task"],
                    "wall_time_s": rec.get("wall_time_s"),
                    "_rec": rec,
                })
    if not rows:
        raise BenchError(f"no result records under {', '.join(map(str, results_dirs))}",
                         hint="run `bench run --tasks ...` first")
    df = pd.DataFrame(rows)
    # variants that still read the same within one task (e.g. only the data changed) are told apart by hash
    for _, grp in df.groupby(["run", "task", "method", "upstream"], sort=False):
        if grp["group"].nunique() > 1 and grp.groupby("variant")["group"].nunique().max() > 1:
            df.loc[grp.index, "variant"] = [", ".join(x for x in (v, f"cfg={g[:8]}") if x)
                                            for v, g in zip(grp["variant"], grp["group"])]
    return df


def _without_search_points(recs: list[dict], results_dir: Path) -> list[dict]:
    """The records less the grid points of ``--search`` selections in the same directory: the leaderboard reports
    test at the best valid point only (SUPERB's protocol), never every point's test score."""
    points = {(results_dir / p).resolve() for r in recs if isinstance(r.get("search"), dict)
              and isinstance(r["search"].get("records"), dict)
              for p in r["search"]["records"].values() if isinstance(p, str)}
    return [r for r in recs if Path(r["_path"]).resolve() not in points] if points else recs


def _search_labels(recs: list[dict]) -> dict[tuple, object]:
    """(method, upstream, group) of a selection → a function naming its chosen value(s) in the variant label:
    ``lr=0.001 on valid`` (``lr=0.001/0.01 on valid`` where seeds chose differently)."""
    from bench.runner.search import SEARCHED, format_value

    searches: dict[tuple, tuple[str, list, list]] = {}  # → (key, grid, chosen values)
    for r in recs:
        s = r.get("search")
        if isinstance(s, dict):
            key, grid, chosen = searches.setdefault((r["method"], r["upstream"], r["_group"]),
                                                    (s.get("key", "?"), list(s.get("grid") or []), []))
            if s.get("chosen") not in chosen:
                chosen.append(s.get("chosen"))

    def labeller(key: str, grid: list, chosen: list):
        chosen = sorted(chosen, key=lambda v: grid.index(v) if v in grid else len(grid))
        text = f"{key}={'/'.join(format_value(v) for v in chosen)} on valid"

        def label(variant: str) -> str:
            parts = [p for p in variant.split(", ") if p and p != f"{key}={SEARCHED}"]
            return ", ".join([text, *parts])

        return label

    return {k: labeller(*v) for k, v in searches.items()}


def _systems(recs: list[dict]):
    from bench.results.stats import System

    out = []
    for rec in recs:
        o = rec.get("outputs")
        if not o or not o.get("ids"):
            return None
        out.append(System(o["ids"], o["references"], o["hypotheses"], outputs_scores(o)))
    return out


def summarize(df: pd.DataFrame, stats: bool = True, B: int | None = None, progress=None) -> pd.DataFrame:
    """Mean, std and n over seeds for every (run, task, method, upstream, configuration group, metric); with
    ``stats``, re-scored from the stored outputs: the bootstrap interval (``ci_low``, ``ci_high``, ``rescored``) and
    the test against the best system of the (task, metric) (``best``, ``p_vs_best``, ``test``). ``progress``
    (``progress(description, total) -> advance``, :mod:`bench.core.progress`) follows the bootstrap, which takes
    about a minute for the full grid with three seeds."""
    from bench.results import stats as st

    B = B or st.DEFAULT_B
    keys = ["run", "task", "origin", "method", "upstream", "group", "variant", "metric", "main", "higher_is_better"]
    g = df.groupby(keys, sort=False, dropna=False)
    out = g["value"].agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    extra = [c for c in ("stand_in",) if c in df]
    firsts = g[["trainable", "frozen", "stored_per_task", "limit", "recipe", *extra]].first().reset_index()
    out = out.merge(firsts, on=keys)
    recs = g["_rec"].apply(list).reset_index(drop=True)
    for col in ("rescored", "ci_low", "ci_high", "p_vs_best"):
        out[col] = math.nan
    out["test"] = ""
    out["best"] = False
    if not stats:
        return out
    systems = [_systems(r) for r in recs]
    pos = [_positive_label(r[0]) for r in recs]
    advance = progress("bootstrap intervals and tests", 2 * len(out)) if progress else (lambda n=1: None)
    for i, row in out.iterrows():
        advance(1)
        if systems[i] is None:
            continue
        try:
            iv = st.bootstrap_ci(row["metric"], systems[i], pos[i], B=B)
        except (ValueError, KeyError):
            continue
        out.loc[i, ["rescored", "ci_low", "ci_high"]] = [iv.point, iv.low, iv.high]
    for _, grp in out.groupby(["task", "metric"], sort=False):
        b = _best_index(grp)
        out.loc[b, "best"] = True
        advance(len(grp))
        if systems[b] is None:
            continue
        for i in grp.index:
            if i == b or systems[i] is None:
                continue
            try:
                t = st.compare_to_best(grp.loc[i, "metric"], systems[i], systems[b], pos[b], B=B)
            except (ValueError, KeyError):
                continue
            out.loc[i, ["p_vs_best"]] = t.p
            out.loc[i, "test"] = t.test
    return out


def rescore_mismatches(summary: pd.DataFrame, tol: float = 1e-4) -> list[str]:
    """Cells whose score re-computed from the stored outputs differs from the stored score (mean over seeds) by more
    than ``tol`` (scores are stored to 6 significant digits, so EER may move in the last digits)."""
    bad = summary[(summary["rescored"] - summary["mean"]).abs() > tol]
    return [f"{r.task} × {r.method} ({r.upstream}) {r.metric}: stored {r.mean:.6f}, re-scored {r.rescored:.6f}"
            for r in bad.itertuples()]


def _is_smoke(limit) -> bool:
    return limit is not None and limit == limit


def _best_index(grp: pd.DataFrame):
    """The best row of one (task, metric): by mean in the metric's direction, among full runs where there are any
    (a --limit smoke run is never the reference of a task that has a full run)."""
    full = grp[[not _is_smoke(x) for x in grp["limit"]]] if "limit" in grp else grp
    cand = full if len(full) else grp
    return cand["mean"].idxmax() if bool(grp["higher_is_better"].iloc[0]) else cand["mean"].idxmin()


def _positive_label(rec: dict) -> str | None:
    """The task's positive label, for binary F1 and EER: stored by newer records, else read from the task file."""
    if "positive_label" in rec:
        return rec["positive_label"]
    return _registered_positive_label(rec["task"])


@functools.lru_cache(maxsize=None)
def _registered_positive_label(task: str) -> str | None:
    try:
        from bench.tasks.registry import TaskRegistry

        return TaskRegistry().get(task).positive_label
    except Exception:  # noqa: BLE001 - a task not registered here: metrics needing it get no interval
        return None


def _system(row) -> str:
    name = f"{row['method']} ({row['upstream']})"
    recipe = row.get("recipe") or ""
    if recipe and recipe != DEFAULT_RECIPE and isinstance(recipe, str):
        name += f" @{recipe}"  # which published recipe the column ran (cpu-default unmarked)
    if row.get("stand_in") is True:
        name += " (stand-in)"  # bench's offline stand-in models, not the recipe's published ones
    variant = row.get("variant") or ""
    if variant:
        name += f" [{variant}]"
    limit = row.get("limit")
    if _is_smoke(limit):
        name += " (smoke)" if f"limit={int(limit)}" in variant else f" (smoke: limit={int(limit)})"
    return f"{row['run']}: {name}" if row["run"] else name


def _task_label(task: str, origin: str, metric: str, hib: bool) -> str:
    return f"{task}{ORIGIN_MARK.get(origin, '')} [{metric} {'↑' if hib else '↓'}]"


@dataclass
class Leaderboard:
    scores: pd.DataFrame  # task label × system, "mean ± std (n) [ci]" strings
    scores_numeric: pd.DataFrame  # long form: task, system, metric, mean, std, n, ci_low, ci_high, p_vs_best
    params: pd.DataFrame  # task × system, trainable parameters
    markdown_scores: str
    markdown_params: str


def _fmt(mean: float, std: float, n: int, scale: float, low: float = math.nan, high: float = math.nan,
         similar: bool = False) -> str:
    """"mean ± std (n=k) [low, high]"; one seed has no spread to show, so it is "mean (n=1)", never a fake
    "± 0.00"; the interval is '–' without stored outputs; ``similar`` appends the not-significantly-worse mark."""
    cell = f"{mean * scale:.2f} (n=1)" if n == 1 else f"{mean * scale:.2f} ± {std * scale:.2f} (n={n})"
    cell += " [–]" if low != low or high != high else f" [{low * scale:.2f}, {high * scale:.2f}]"
    return cell + (f" {SIMILAR_MARK}" if similar else "")


def build_leaderboard(summary: pd.DataFrame, all_metrics: bool = False, percent: bool = True,
                      reference: pd.DataFrame | None = None) -> Leaderboard:
    s = summary if all_metrics else summary[summary["main"]]
    s = s.copy()
    for col, default in (("ci_low", math.nan), ("ci_high", math.nan), ("p_vs_best", math.nan), ("test", ""),
                         ("best", False), ("rescored", math.nan), ("variant", ""), ("limit", None), ("group", ""),
                         ("recipe", ""), ("stand_in", False)):
        if col not in s:
            s[col] = default
    s["system"] = s.apply(_system, axis=1)
    s["task_label"] = [_task_label(t, o, m, h) for t, o, m, h in zip(s.task, s.origin, s.metric, s.higher_is_better)]
    scale = 100.0 if percent else 1.0
    s["similar"] = [bool(p == p and p >= ALPHA) for p in s["p_vs_best"]]
    s["cell"] = [_fmt(m, sd, n, scale, lo, hi, sim) for m, sd, n, lo, hi, sim
                 in zip(s["mean"], s["std"], s["n"], s["ci_low"], s["ci_high"], s["similar"])]
    # systems in order of first appearance of their method, full runs before smoke runs, variants alphabetically
    first = {k: i for i, k in reversed(list(enumerate(zip(s["run"], s["method"], s["upstream"]))))}
    order = {sysname: (first[(r, m, u)], _is_smoke(lim), v)
             for sysname, r, m, u, lim, v in zip(s["system"], s["run"], s["method"], s["upstream"], s["limit"],
                                                 s["variant"])}
    systems = sorted(dict.fromkeys(s["system"]), key=lambda x: order[x])
    tasks = list(dict.fromkeys(s["task_label"]))
    table = s.pivot(index="task_label", columns="system", values="cell").reindex(index=tasks, columns=systems)

    # markdown with the best system per task in bold
    best: dict[str, str] = {}
    for label, grp in s.groupby("task_label", sort=False):
        best[label] = grp.loc[_best_index(grp), "system"]
    md_rows = []
    for label in tasks:
        cells = []
        for sysname in systems:
            v = table.loc[label, sysname]
            cells.append("–" if pd.isna(v) else (f"**{v}**" if best.get(label) == sysname else v))
        md_rows.append([label, *cells])
    header = ["task [metric]", *systems]
    if reference is not None and not reference.empty:
        ref_cols = [c for c in reference.columns if c != "task"]
        header += [f"paper: {c}" for c in ref_cols]
        ref_by_task = reference.set_index("task")
        for row, label in zip(md_rows, tasks):
            task = label.split(" ")[0]
            for c in ref_cols:
                v = ref_by_task[c].get(task) if task in ref_by_task.index else None
                row.append("–" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
    md_scores = _markdown(header, md_rows)
    note = ("\nScores are mean ± std over seeds (×100 for fractions), n = number of seeds; [low, high] is the 95 % "
            "percentile-bootstrap interval of that mean, resampling test utterances jointly across the seeds "
            "(B = 1000, seed 0; '–': the records hold no per-utterance outputs). **Bold**: best per task; "
            f"{SIMILAR_MARK}: not significantly different from the best at p < {ALPHA} (paired on the same test "
            "utterances: exact McNemar for accuracy with one seed each, paired bootstrap otherwise; no correction "
            "for multiple comparisons). Only records that differ by seed alone are averaged: [settings] name how a "
            "configuration differs from the others of its method; (smoke) marks --limit runs (the first N "
            "utterances per split), which are not benchmark numbers. Tasks marked (synthetic) are generated "
            "offline and stand in for published tasks; they are not the published corpora.\n")
    md_scores += note
    if bool(s["stand_in"].any()):
        md_scores += ("Columns marked (stand-in) ran under a published recipe on bench's offline stand-in models "
                      "(`--allow-stand-in`), not the recipe's published checkpoints"
                      + (": they are not comparable with the 'paper: …' columns" if reference is not None
                         and not reference.empty else "") + ".\n")
    if reference is not None and not reference.empty:
        md_scores += ("Columns 'paper: …' are published values (×100 for fractions); † marks a value carried from "
                      "memory and not verified against the paper (see leaderboards/reference/README.md).\n")

    p = s if not all_metrics else s[s["main"]]
    params = p.pivot_table(index="task", columns="system", values="trainable", aggfunc="first", sort=False)
    params = params.reindex(columns=[c for c in systems if c in params.columns])
    md_params = _markdown(["task", *params.columns],
                          [[t, *["–" if pd.isna(v) else f"{int(v):,}" for v in row]] for t, row in params.iterrows()])
    md_params += "\nTrainable parameters per task (featurizer weights, heads, prompts, verbalizers; frozen models excluded).\n"
    numeric = s[["run", "task", "origin", "method", "upstream", "recipe", "variant", "group", "limit", "system", "metric",
                 "higher_is_better", "mean", "std", "n", "ci_low", "ci_high", "rescored", "best", "p_vs_best", "test",
                 "trainable", "frozen", "stored_per_task"]].copy()
    numeric["group"] = numeric["group"].str[:12]
    return Leaderboard(table, numeric, params, md_scores, md_params)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_leaderboard(lb: Leaderboard, out_dir: Path, name: str = "leaderboard", plot: bool = True) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        out_dir / f"{name}-scores.csv": lb.scores_numeric.to_csv(index=False),
        out_dir / f"{name}-scores.md": lb.markdown_scores,
        out_dir / f"{name}-params.csv": lb.params.to_csv(),
        out_dir / f"{name}-params.md": lb.markdown_params,
    }
    for path, text in files.items():
        write_text_atomic(path, text)
    written = list(files)
    if plot:
        written.append(plot_score_vs_params(lb.scores_numeric, out_dir / f"{name}-score-vs-params.png"))
    return written


def plot_score_vs_params(numeric: pd.DataFrame, path: Path) -> Path:
    """Main score against trainable parameters (log scale), one panel per task: the benchmark's question. Error
    bars: the 95 % bootstrap interval (± std over seeds for records without outputs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter

    tasks = list(dict.fromkeys(numeric["task"]))
    systems = list(dict.fromkeys(numeric["system"]))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {s: palette[i % len(palette)] for i, s in enumerate(systems)}  # one colour per system in every panel
    ncol = min(4, len(tasks))
    nrow = (len(tasks) + ncol - 1) // ncol
    # the legend's columns fit the panels' width (a system's name is about 2 inches at 8 pt), its rows get their
    # own strip below them
    legend_cols = min(len(systems), 4 if ncol >= 3 else 2 * ncol - 1)
    legend_inches = 0.2 * -(-len(systems) // legend_cols) + 0.2
    height = 3.2 * nrow + legend_inches
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, height), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        t = numeric[numeric["task"] == task]
        for _, r in t.iterrows():  # the bootstrap interval where the records hold outputs, else ± std over seeds
            lo, hi = r.get("ci_low", math.nan), r.get("ci_high", math.nan)
            yerr = ([[max(r["mean"] - lo, 0.0)], [max(hi - r["mean"], 0.0)]] if lo == lo and hi == hi
                    else r["std"])
            ax.errorbar(r["trainable"], r["mean"], yerr=yerr, fmt="o", capsize=3, color=color[r["system"]])
        metric = t["metric"].iloc[0]
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels (2×10³, 3×10³, ...) overlap
        ax.set_title(f"{task}", fontsize=9)
        ax.set_xlabel("trainable parameters", fontsize=8)
        ax.set_ylabel(f"{metric} {'↑' if t['higher_is_better'].iloc[0] else '↓'}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", color=color[s]) for s in systems]
    fig.legend(handles, systems, loc="lower center", ncol=legend_cols, fontsize=8)
    fig.tight_layout(rect=(0, legend_inches / height, 1, 1))
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
