"""Published reference leaderboards (SpeechPrompt v1/v2, SUPERB) as validated data.

The numbers live in ``leaderboards/reference/<name>.csv`` (long format, one published cell per row, with its
citation and a ``verified`` flag); this module only reads and checks them. Cells that nobody has checked against
the source (``verified=unverified``) stay flagged in every rendering (a † in markdown), never silently confirmed.

``bench compare --reference NAME`` puts :func:`reference_table` beside local results: same shape as a local
leaderboard (a ``task`` column, one column per published system), on the same scale (fractions ×100).
"""

from __future__ import annotations

import csv
import difflib
import math
import re
from pathlib import Path

import pandas as pd

from bench.core.errors import BenchError
from bench.tasks.metrics import METRICS
from bench.core.paths import repo_root

COLUMNS = (
    "source", "table", "published_task", "task", "dataset", "system", "method", "upstream", "metric",
    "published_metric", "higher_is_better", "value", "scale", "trainable_params", "params_qualifier",
    "verified", "note", "citation",
)
REQUIRED = ("source", "task", "system", "method", "metric", "higher_is_better", "value", "scale", "verified",
            "citation")
SCALES = {"percent": 1.0, "fraction": 100.0}  # factor to the percent scale used by local leaderboards
VERIFIED = ("yes", "unverified")
# Published metrics whose exact definition the source does not pin down (SpeechPrompt v2 says only "F1").
UNSPECIFIED_METRICS = {"f1": True}
METHODS = ("prompt-gslm", "prompt-pgslm", "prompt-gslm-lv", "prompt-pgslm-lv", "linear", "lstm", "prior-work")
PARAMS_QUALIFIERS = ("", "exact", "rounded", "computed", "computed-approx", "lower-bound", "model-size",
                     "published-budget")
UNVERIFIED_MARK = "†"


def reference_dir() -> Path:
    return repo_root() / "leaderboards" / "reference"


def available_references() -> list[str]:
    """Names of the shipped reference tables (file stems), sorted."""
    d = reference_dir()
    return sorted(p.stem for p in d.glob("*.csv")) if d.is_dir() else []


def _path_for(name: str) -> Path:
    names = available_references()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise BenchError(f"unknown reference '{name}'{hint}; available: {', '.join(names) or 'none'}",
                         hint=f"reference tables are the CSV files in {reference_dir()}")
    return reference_dir() / f"{name}.csv"


def load_reference(name: str) -> pd.DataFrame:
    """One published cell per row, validated. Raises BenchError naming the file and CSV line of a bad row."""
    return read_reference_file(_path_for(name), expected_source=name)


def read_reference_file(path: Path, expected_source: str | None = None) -> pd.DataFrame:
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in COLUMNS if c not in header]
        extra = [c for c in header if c not in COLUMNS]
        if missing or extra:
            raise BenchError(f"{path}: header must be {','.join(COLUMNS)}"
                             + (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else ""))
        rows = [_check_row(path, i + 2, raw, expected_source) for i, raw in enumerate(reader)]
    if not rows:
        raise BenchError(f"{path}: no rows")
    seen: dict[tuple, int] = {}
    for r in rows:
        key = (r["table"], r["task"], r["system"], r["metric"])
        if key in seen:
            raise BenchError(f"{path}, line {r['line']}: duplicate cell {key} (also on line {seen[key]})")
        seen[key] = r["line"]
    df = pd.DataFrame(rows)
    df["trainable_params"] = df["trainable_params"].astype("Int64")
    return df


def _check_row(path: Path, line: int, raw: dict, expected_source: str | None) -> dict:
    def bad(msg: str) -> BenchError:
        return BenchError(f"{path}, line {line}: {msg}")

    if None in raw or any(v is None for v in raw.values()):
        raise bad(f"expected {len(COLUMNS)} fields")
    r = {k: (v or "").strip() for k, v in raw.items()}
    for c in REQUIRED:
        if not r[c]:
            raise bad(f"column '{c}' is empty")
    if expected_source and r["source"] != expected_source:
        raise bad(f"source '{r['source']}' differs from the file name '{expected_source}'")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", r["task"]):
        raise bad(f"task '{r['task']}' is not a bench task name (lower-case slug)")
    if r["method"] not in METHODS:
        raise bad(f"method '{r['method']}' is not one of {', '.join(METHODS)}")
    if r["metric"] not in METRICS and r["metric"] not in UNSPECIFIED_METRICS:
        close = difflib.get_close_matches(r["metric"], [*METRICS, *UNSPECIFIED_METRICS], n=1)
        raise bad(f"unknown metric '{r['metric']}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    if r["higher_is_better"] not in ("true", "false"):
        raise bad(f"higher_is_better must be true or false, got '{r['higher_is_better']}'")
    hib = r["higher_is_better"] == "true"
    direction = METRICS[r["metric"]].higher_is_better if r["metric"] in METRICS else UNSPECIFIED_METRICS[r["metric"]]
    if hib != direction:
        raise bad(f"higher_is_better={r['higher_is_better']} contradicts metric '{r['metric']}'")
    try:
        value = float(r["value"])
    except ValueError:
        raise bad(f"value '{r['value']}' is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise bad(f"value {value} must be a finite non-negative number")
    if r["scale"] not in SCALES:
        raise bad(f"scale must be one of {', '.join(SCALES)}, got '{r['scale']}'")
    if r["scale"] == "fraction" and value > 1:
        raise bad(f"value {value} exceeds 1 on the fraction scale")
    if r["scale"] == "percent" and value > 100 and r["metric"] not in ("wer", "cer", "slot_value_cer"):
        raise bad(f"value {value} exceeds 100 on the percent scale")
    if r["verified"] not in VERIFIED:
        raise bad(f"verified must be 'yes' or 'unverified', got '{r['verified']}'")
    params = None
    if r["trainable_params"]:
        if not r["trainable_params"].isdigit():
            raise bad(f"trainable_params '{r['trainable_params']}' is not a non-negative integer")
        params = int(r["trainable_params"])
    if r["params_qualifier"] not in PARAMS_QUALIFIERS:
        raise bad(f"params_qualifier '{r['params_qualifier']}' is not one of {PARAMS_QUALIFIERS}")
    if (params is None) != (r["params_qualifier"] == ""):
        raise bad("trainable_params and params_qualifier must be both set or both empty")
    return {**r, "higher_is_better": hib, "value": value, "trainable_params": params, "line": line}


def _select(df: pd.DataFrame, tasks: list[str] | None, metric: str | None) -> pd.DataFrame:
    if tasks is not None:
        df = df[df["task"].isin(list(tasks))]
    if metric is not None:
        return df[df["metric"] == metric]
    # the main metric of each task = the first metric listed for it in the file (files list it first)
    main = df.groupby("task", sort=False)["metric"].first()
    return df[df["metric"] == df["task"].map(main)]


def reference_table(name: str, tasks: list[str] | None = None, *, metric: str | None = None,
                    percent: bool = True, numeric: bool = False, label: str = "system") -> pd.DataFrame:
    """Wide table like a local leaderboard: a ``task`` column, then one column per published system.

    Values are on the percent scale when ``percent`` (fractions ×100, as ``bench compare`` shows local scores).
    By default cells are strings with a trailing † on unverified values; ``numeric=True`` gives floats and puts
    the unverified (task, system) pairs in ``df.attrs["unverified"]``. ``label="method"`` names the columns
    ``method (upstream)`` like local systems. A task with several metrics uses the first one listed in the file
    unless ``metric`` is given.
    """
    if label not in ("system", "method"):
        raise BenchError(f"reference_table: label must be 'system' or 'method', got '{label}'")
    df = _select(load_reference(name), tasks, metric).copy()
    if df.empty:  # none of the requested tasks is in this reference
        empty = pd.DataFrame(columns=["task"])
        empty.attrs.update(unverified=set(), source=name, metrics={})
        return empty
    factor = df["scale"].map(SCALES) if percent else 1.0
    df["shown"] = df["value"] * factor
    df["column"] = df["system"] if label == "system" else df["method"] + " (" + df["upstream"].replace("", "-") + ")"
    if df.duplicated(["task", "column"]).any():
        dup = df[df.duplicated(["task", "column"], keep=False)][["task", "column", "metric"]].values.tolist()
        raise BenchError(f"reference '{name}': several cells per (task, column): {dup[:3]}; pass metric=...")
    columns = list(dict.fromkeys(df["column"]))
    task_order = list(dict.fromkeys(df["task"]))
    unverified = {(t, c) for t, c, v in zip(df["task"], df["column"], df["verified"]) if v != "yes"}
    if numeric:
        wide = df.pivot(index="task", columns="column", values="shown")
    else:
        df["cell"] = [_fmt(v, s, (t, c) in unverified, percent)
                      for v, s, t, c in zip(df["shown"], df["scale"], df["task"], df["column"])]
        wide = df.pivot(index="task", columns="column", values="cell")
    wide = wide.reindex(index=task_order, columns=columns).reset_index()
    wide.columns.name = None
    wide.attrs["unverified"] = unverified
    wide.attrs["source"] = name
    wide.attrs["metrics"] = dict(zip(df["task"], df["metric"]))
    return wide


def _fmt(value: float, scale: str, unverified: bool, percent: bool) -> str:
    if percent or scale == "percent":
        text = f"{value:.2f}" if value >= 0.01 or value == 0 else f"{value:.1e}"
    else:
        text = f"{value:.3f}"
    return text + (UNVERIFIED_MARK if unverified else "")


def reference_markdown(name: str, tasks: list[str] | None = None, *, percent: bool = True) -> str:
    """The wide reference table as markdown, with the † legend and the citations it draws on."""
    wide = reference_table(name, tasks, percent=percent)
    df = load_reference(name)
    metrics = wide.attrs["metrics"]
    hib = dict(zip(df["metric"], df["higher_is_better"]))
    header = ["task [metric]", *[c for c in wide.columns if c != "task"]]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in wide.iterrows():
        m = metrics[row["task"]]
        cells = ["–" if pd.isna(row[c]) else str(row[c]) for c in header[1:]]
        lines.append(f"| {row['task']} [{m} {'↑' if hib[m] else '↓'}] | " + " | ".join(cells) + " |")
    used = df[df["task"].isin(wide["task"])]
    notes = [f"\n{UNVERIFIED_MARK} unverified: recalled, not checked against the source; verify before citing.",
             "Values ×100 for fractions; – = not reported." if percent else "– = not reported.", "", "Sources:"]
    notes += [f"- {c}" for c in dict.fromkeys(used["citation"])]
    return "\n".join(lines) + "\n" + "\n".join(notes) + "\n"
