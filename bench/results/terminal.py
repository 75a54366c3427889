"""The leaderboard as a terminal or a log shows it: every line fits the console's width (80 columns when stdout
is not a terminal) and no task, method or word is cut.

Systems are columns named by short codes (``S1``, ``S2``, ...; published ones ``P1``, ...) with a legend that
gives each code's full name; rows are tasks, grouped under one heading per metric (``accuracy ↑``), so the cells
hold only the mean over seeds. When the columns do not fit, the systems are split over several tables with the
same rows. ``details`` adds, per task, every system's full cell: mean ± std (n) [95 % interval] and p against
the best. The CSV and markdown leaderboards keep the full names and cells; this is only what is printed.
"""

from __future__ import annotations

import math
import textwrap

import pandas as pd

BEST_MARK = "*"
ORIGIN_FOOTNOTE = {"synthetic": "†", "real-human": "‡", "mixed": "§"}
ORIGIN_WORDS = {"synthetic": "synthetic (generated offline; it stands in for the published task, it is not it)",
                "real-human": "real human speech collected for bench, not the published corpus",
                "mixed": "mixed: part synthetic, part real speech"}
_GAP = 2  # spaces between columns


def wrap(text: str, width: int, indent: str = "", subsequent: str | None = None) -> list[str]:
    """Lines of at most ``width`` characters, broken between words only (a word longer than the line stays
    whole on a line of its own)."""
    return textwrap.wrap(text, width=width, initial_indent=indent,
                         subsequent_indent=indent if subsequent is None else subsequent,
                         break_long_words=False, break_on_hyphens=False) or [indent.rstrip()]


def short_count(n: float) -> str:
    """A parameter count in at most 5 characters: 964, 6.13k, 200k, 1.5M (three significant digits)."""
    if n != n:
        return "–"
    n = int(n)
    for div, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if abs(n) >= div:
            v = n / div
            text = f"{v:.3g}"
            if "e" in text:  # 1000k → 1e+03k: move up a unit instead
                continue
            return text + unit
    return str(n)


def _codes(names: list[str], prefix: str) -> dict[str, str]:
    return {name: f"{prefix}{i + 1}" for i, name in enumerate(names)}


def _grid(label_title: str, rows: list[tuple[str, list[str]]], codes: list[str], width: int,
          headings: dict[int, str] | None = None) -> list[str]:
    """A right-aligned grid of ``rows`` (label, one cell per code), split into as many tables as the codes need
    to fit ``width``; ``headings`` (row index → text) are lines printed before a row, flush left."""
    headings = headings or {}
    label_w = max([len(label_title), *(len(label) for label, _ in rows)])
    col_w = [max([len(code), *(len(cells[j]) for _, cells in rows)]) for j, code in enumerate(codes)]
    chunks, current, used = [], [], label_w
    for j, w in enumerate(col_w):
        if current and used + _GAP + w > width:
            chunks.append(current)
            current, used = [], label_w
        current.append(j)
        used += _GAP + w
    if current or not chunks:
        chunks.append(current)
    out = []
    for k, chunk in enumerate(chunks):
        if k:
            out.append("")
        out.append((label_title.ljust(label_w) + "".join(" " * _GAP + codes[j].rjust(col_w[j]) for j in chunk))
                   .rstrip())
        for i, (label, cells) in enumerate(rows):
            if i in headings:
                out.append(headings[i])
            out.append(label.ljust(label_w) + "".join(" " * _GAP + cells[j].rjust(col_w[j]) for j in chunk))
    return out


def _legend(codes: dict[str, str], width: int) -> list[str]:
    code_w = max(len(c) for c in codes.values())
    out = []
    for name, code in codes.items():
        out += wrap(name, width, indent=f"  {code.ljust(code_w)}  ", subsequent=" " * (code_w + 4))
    return out


def leaderboard_lines(numeric: pd.DataFrame, params: pd.DataFrame | None = None,
                      reference: pd.DataFrame | None = None, width: int = 80, details: bool = False,
                      percent: bool = True) -> list[str]:
    """The printed leaderboard, as lines of at most ``width`` characters (:mod:`bench.results.compare` builds
    ``numeric``, its long form, and ``params``; ``reference`` is a published table from
    :func:`bench.results.reference.reference_table`)."""
    from bench.results.compare import ALPHA, SIMILAR_MARK, _fmt

    scale = 100.0 if percent else 1.0
    s = numeric.copy()
    systems = list(dict.fromkeys(s["system"]))
    codes = _codes(systems, "S")
    ref_cols: list[str] = []
    ref_by_task = None
    if reference is not None and not reference.empty:
        ref_cols = [c for c in reference.columns if c != "task"]
        ref_by_task = reference.set_index("task")
    ref_codes = _codes(ref_cols, "P")
    s["similar"] = [bool(p == p and p >= ALPHA) for p in s["p_vs_best"]]

    # rows: (task, metric) in order of appearance, grouped by metric
    keys = list(dict.fromkeys(zip(s["metric"], s["task"])))
    metrics = list(dict.fromkeys(m for m, _ in keys))
    keys.sort(key=lambda k: metrics.index(k[0]))
    origins = dict(zip(s["task"], s["origin"]))
    marked = {o for o in origins.values() if o in ORIGIN_FOOTNOTE}
    one_origin = len(set(origins.values())) == 1 and marked
    by_cell = {(r.metric, r.task, r.system): r for r in s.itertuples()}

    def cell(r) -> str:
        if r is None:
            return "–"
        mark = BEST_MARK if r.best else (SIMILAR_MARK if r.similar else "")
        return f"{r.mean * scale:.1f}{mark}"

    rows, headings = [], {}
    hib = dict(zip(s["metric"], s["higher_is_better"]))
    for metric, task in keys:
        if metric not in [m for m, _ in keys[:len(rows)]]:
            headings[len(rows)] = f"{metric} {'↑' if hib[metric] else '↓'}"
        label = "  " + task + ("" if one_origin else ORIGIN_FOOTNOTE.get(origins.get(task, ""), ""))
        cells = [cell(by_cell.get((metric, task, sysname))) for sysname in systems]
        for c in ref_cols:
            v = ref_by_task[c].get(task) if ref_by_task is not None and task in ref_by_task.index else None
            cells.append("–" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
        rows.append((label, cells))

    unit = " (×100 for fractions)" if percent else ""
    more = ("each cell in full below the table" if details else
            "`bench compare --details` adds ± std, seeds, the 95 % bootstrap interval and p")
    out = wrap(f"scores{unit}: mean over seeds; {BEST_MARK} best per task, {SIMILAR_MARK} not significantly "
               f"different from the best (p ≥ {ALPHA}); {more}", width)
    seeds = sorted({int(n) for n in s["n"]})
    out += wrap("seeds per cell: " + ("/".join(map(str, seeds)) if len(seeds) > 1 else str(seeds[0])), width)
    if one_origin:
        (origin,) = marked
        out += wrap(f"every task here is {ORIGIN_WORDS[origin]}", width)
    else:
        for origin in sorted(marked):
            out += wrap(f"{ORIGIN_FOOTNOTE[origin]} {ORIGIN_WORDS[origin]}", width)
    out.append("systems:")
    out += _legend({**codes, **{f"paper: {c}": code for c, code in ref_codes.items()}}, width)
    out.append("")
    out += _grid("task", rows, [*codes.values(), *ref_codes.values()], width, headings)

    if details:
        for metric, task in keys:
            out.append("")
            out += wrap(f"{task}{ORIGIN_FOOTNOTE.get(origins.get(task, ''), '') if not one_origin else ''}: "
                        f"{metric} {'↑' if hib[metric] else '↓'}", width)
            for sysname in systems:
                r = by_cell.get((metric, task, sysname))
                if r is None:
                    continue
                text = _fmt(r.mean, r.std, int(r.n), scale, r.ci_low, r.ci_high, r.similar)
                if r.best:
                    text += f" {BEST_MARK} best"
                elif r.p_vs_best == r.p_vs_best:
                    text += f" p={r.p_vs_best:.3f}"
                out += wrap(text, width, indent=f"  {codes[sysname].ljust(4)}", subsequent=" " * 6)

    if params is not None and not params.empty:
        p_codes = [codes[c] for c in params.columns if c in codes]
        p_rows = [("  " + str(task), [short_count(row[c]) for c in params.columns if c in codes])
                  for task, row in params.iterrows()]
        out.append("")
        out += wrap("trainable parameters (k thousand, M million; exact counts in leaderboard-params.csv and "
                    "`bench params`)", width)
        out += _grid("task", p_rows, p_codes, width)
    return out
