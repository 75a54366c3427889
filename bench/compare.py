"""``bench compare``: result records → score and parameter-count leaderboards (CSV, markdown, a plot).

Scores are mean ± std over seeds (sample std, n shown), with ↑/↓ for the metric's direction and the best method per
task in bold in markdown. Synthetic tasks are marked as such in every table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.data.manifest import write_text_atomic
from bench.errors import BenchError
from bench.results import read_records

ORIGIN_MARK = {"synthetic": " (synthetic)", "real-human": " (real human)", "mixed": " (mixed)", "corpus": ""}


def records_frame(results_dirs: list[Path], labels: list[str] | None = None) -> pd.DataFrame:
    """One row per (record, metric). ``labels`` name the result directories when comparing several."""
    rows = []
    for i, d in enumerate(results_dirs):
        label = labels[i] if labels else ""
        for rec in read_records(Path(d)):
            for metric, value in rec["scores"].items():
                rows.append({
                    "run": label,
                    "task": rec["task"],
                    "origin": rec.get("task_origin", ""),
                    "method": rec["method"],
                    "upstream": rec["upstream"],
                    "seed": rec["seed"],
                    "metric": metric,
                    "main": metric == rec.get("main_metric"),
                    "higher_is_better": rec.get("higher_is_better", {}).get(metric, True),
                    "value": value,
                    "trainable": rec["params"]["trainable"],
                    "frozen": rec["params"]["frozen"],
                    "stored_per_task": rec["params"]["stored_per_task"],
                    "wall_time_s": rec.get("wall_time_s"),
                })
    if not rows:
        raise BenchError(f"no result records under {', '.join(map(str, results_dirs))}",
                         hint="run `bench run --tasks ...` first")
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and n over seeds for every (run, task, method, upstream, metric)."""
    keys = ["run", "task", "origin", "method", "upstream", "metric", "main", "higher_is_better"]
    g = df.groupby(keys, sort=False)
    out = g["value"].agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    params = g[["trainable", "frozen", "stored_per_task"]].first().reset_index()
    return out.merge(params, on=keys)


def _system(row) -> str:
    name = f"{row['method']} ({row['upstream']})"
    return f"{row['run']}: {name}" if row["run"] else name


def _task_label(task: str, origin: str, metric: str, hib: bool) -> str:
    return f"{task}{ORIGIN_MARK.get(origin, '')} [{metric} {'↑' if hib else '↓'}]"


@dataclass
class Leaderboard:
    scores: pd.DataFrame  # task label × system, "mean ± std" strings
    scores_numeric: pd.DataFrame  # long form: task, system, metric, mean, std, n
    params: pd.DataFrame  # task × system, trainable parameters
    markdown_scores: str
    markdown_params: str


def _fmt(mean: float, std: float, n: int, scale: float) -> str:
    """"mean ± std (n=k)"; one seed has no spread to show, so it is "mean (n=1)", never a fake "± 0.00"."""
    if n == 1:
        return f"{mean * scale:.2f} (n=1)"
    return f"{mean * scale:.2f} ± {std * scale:.2f} (n={n})"


def build_leaderboard(summary: pd.DataFrame, all_metrics: bool = False, percent: bool = True,
                      reference: pd.DataFrame | None = None) -> Leaderboard:
    s = summary if all_metrics else summary[summary["main"]]
    s = s.copy()
    s["system"] = s.apply(_system, axis=1)
    s["task_label"] = [_task_label(t, o, m, h) for t, o, m, h in zip(s.task, s.origin, s.metric, s.higher_is_better)]
    scale = 100.0 if percent else 1.0
    s["cell"] = [_fmt(m, sd, n, scale) for m, sd, n in zip(s["mean"], s["std"], s["n"])]
    systems = list(dict.fromkeys(s["system"]))
    tasks = list(dict.fromkeys(s["task_label"]))
    table = s.pivot(index="task_label", columns="system", values="cell").reindex(index=tasks, columns=systems)

    # markdown with the best system per task in bold
    best: dict[str, str] = {}
    for label, grp in s.groupby("task_label", sort=False):
        hib = bool(grp["higher_is_better"].iloc[0])
        best[label] = grp.loc[grp["mean"].idxmax() if hib else grp["mean"].idxmin(), "system"]
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
    note = ("\nScores are mean ± std over seeds (×100 for fractions), n = number of seeds. **Bold**: best per task. "
            "Tasks marked (synthetic) are generated offline and stand in for published tasks; they are not the "
            "published corpora.\n")
    md_scores += note
    if reference is not None and not reference.empty:
        md_scores += ("Columns 'paper: …' are published values (×100 for fractions); † marks a value carried from "
                      "memory and not verified against the paper (see leaderboards/reference/README.md).\n")

    p = summary[summary["main"]].copy()
    p["system"] = p.apply(_system, axis=1)
    params = p.pivot_table(index="task", columns="system", values="trainable", aggfunc="first", sort=False)
    params = params.reindex(columns=[c for c in systems if c in params.columns])
    md_params = _markdown(["task", *params.columns],
                          [[t, *["–" if pd.isna(v) else f"{int(v):,}" for v in row]] for t, row in params.iterrows()])
    md_params += "\nTrainable parameters per task (featurizer weights, heads, prompts, verbalizers; frozen models excluded).\n"
    numeric = s[["run", "task", "origin", "method", "upstream", "system", "metric", "higher_is_better", "mean", "std",
                 "n", "trainable", "frozen", "stored_per_task"]]
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
    """Main score against trainable parameters (log scale), one panel per task: the benchmark's question."""
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
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3.2 * nrow), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        t = numeric[numeric["task"] == task]
        for _, r in t.iterrows():
            ax.errorbar(r["trainable"], r["mean"], yerr=r["std"], fmt="o", capsize=3, color=color[r["system"]])
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
    fig.legend(handles, systems, loc="lower center", ncol=min(4, len(systems)), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
