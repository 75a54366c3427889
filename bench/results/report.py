"""``bench report``: one static HTML page of a result directory, with its figures beside it, for a paper's appendix.

Everything is computed from the records alone (no task files, audio or models are read):

- the leaderboard with 95 % intervals and significance against each task's best, built by
  :mod:`bench.results.compare` (``records_frame`` → ``summarize`` → ``build_leaderboard``) exactly as
  ``bench compare`` builds it (main metrics), and the parameter-efficiency plot (score against trainable
  parameters, :func:`bench.results.compare.plot_score_vs_params`);
- per classification task, the confusion matrix of each system (per-utterance outputs, counts summed over seeds,
  rows normalised by reference);
- per generation task, every metric by reference-length bucket (SpeechPrompt v1's "curse of long sequences": CER
  against label length on LibriSpeech test-clean), each bucket's value the seed mean with its 95 % bootstrap
  interval from :func:`bench.results.stats.bootstrap_ci` on that bucket's utterances, and the same by utterance
  duration (quantile buckets of ``outputs.seconds``, :func:`utterance_durations`) where records store durations
  (an older record of the same test set borrows them; a task none of whose records has them gets a note instead);
- the learned layer weights of the weighted-sum featurizer per upstream (``info.layer_weights``; SUPERB's figure);
- the verbalizer's label → unit map of every prompt method (``info.verbalizer``), and for the learnable
  verbalizer its weight matrix as a heat map where the records hold it (``info.verbalizer.weights``);
- learning curves: train and valid loss per epoch (``info.history`` of the baselines, ``info.train_loss`` /
  ``info.valid_loss`` of the prompt methods), every seed, best epoch marked.

The page needs no network and no script from elsewhere; one inline script sets ``data-figures-loaded`` /
``data-figures-total`` / ``data-errors`` on ``<body>`` once the page has loaded (what the browser test reads).
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.core.errors import BenchError
from bench.data.manifest import write_text_atomic

MAX_CONFUSION_CLASSES = 20  # more reference labels than this: the most frequent ones, the rest pooled as "(other)"
LENGTH_BUCKETS = 4
UNMAPPED = "(no label)"  # an empty hypothesis: the output did not map to a label (records count them as unmapped)


@dataclass
class Report:
    index: Path
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---- small helpers -------------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """PNG written atomically; no timestamps in the file, so a re-run on the same records writes the same bytes."""
    plt = _pyplot()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100, metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)
    return path


def _grid(n: int, ncol_max: int = 3):
    ncol = max(1, min(ncol_max, n))
    return (n + ncol - 1) // ncol, ncol


def _seed_records(df: pd.DataFrame) -> dict[tuple[str, str], list[dict]]:
    """(task, system) → its records (one per seed, lowest seed first), systems named as the leaderboard names
    them (:func:`bench.results.compare._system`)."""
    from bench.results.compare import _system

    main = df[df["main"]].copy()
    main["system"] = main.apply(_system, axis=1)
    out: dict[tuple[str, str], list[dict]] = {}
    for (task, system), grp in main.groupby(["task", "system"], sort=False):
        out[(task, system)] = sorted(grp["_rec"], key=lambda r: r["seed"])
    return out


# ---- confusion matrices --------------------------------------------------------------------------------------
def confusion_counts(records: list[dict], max_classes: int = MAX_CONFUSION_CLASSES):
    """(reference labels, hypothesis labels, counts[ref, hyp]) summed over the records' per-utterance outputs.
    Hypotheses outside the reference labels get their own columns (an empty one, which did not map to a label,
    is ``(no label)``); beyond
    ``max_classes`` reference labels the least frequent are pooled into ``(other)`` on both axes."""
    refs, hyps = [], []
    for rec in records:
        o = rec.get("outputs") or {}
        refs += [str(x) for x in o.get("references", [])]
        hyps += [str(x) if x not in (None, "") else UNMAPPED for x in o.get("hypotheses", [])]
    freq = pd.Series(refs).value_counts(sort=False) if refs else pd.Series(dtype=int)
    labels = sorted(freq.index)
    if len(labels) > max_classes:
        labels = sorted(sorted(labels, key=lambda x: (-freq[x], x))[:max_classes]) + ["(other)"]
        cols = labels  # every other reference or hypothesis is pooled
    else:
        cols = labels + sorted({h for h in hyps if h not in set(labels)})
    row = {lab: i for i, lab in enumerate(labels)}
    col = {lab: i for i, lab in enumerate(cols)}
    counts = np.zeros((len(labels), len(cols)), dtype=np.int64)
    for r, h in zip(refs, hyps):
        i = row[r] if r in row else row["(other)"]
        j = col[h] if h in col else col["(other)"]
        counts[i, j] += 1
    return labels, cols, counts


def plot_confusions(task: str, systems: dict[str, list[dict]], path: Path) -> Path:
    plt = _pyplot()
    names = list(systems)
    nrow, ncol = _grid(len(names))
    mats = {s: confusion_counts(systems[s]) for s in names}
    size = max(len(m[1]) for m in mats.values())
    cell = 0.28 if size > 8 else 0.45
    w = max(4.0, 1.8 + cell * size)
    fig, axes = plt.subplots(nrow, ncol, figsize=(w * ncol, (w - 0.3) * nrow), squeeze=False)
    for ax, s in zip(axes.flat, names):
        labels, cols, counts = mats[s]
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        fs = 6 if len(cols) > 8 else 8
        ax.set_xticks(range(len(cols)), [c[:28] for c in cols], rotation=90, fontsize=fs)
        ax.set_yticks(range(len(labels)), [c[:28] for c in labels], fontsize=fs)
        if len(cols) <= 13:
            for i in range(len(labels)):
                for j in range(len(cols)):
                    if counts[i, j]:
                        ax.text(j, i, f"{share[i, j] * 100:.0f}", ha="center", va="center", fontsize=6,
                                color="white" if share[i, j] > 0.5 else "black")
        n_seeds = len(systems[s])
        ax.set_title(f"{s}\n({n_seeds} seed{'s' if n_seeds > 1 else ''}, % of reference)", fontsize=8)
        ax.set_xlabel("hypothesis", fontsize=7)
        ax.set_ylabel("reference", fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"{task}: confusion matrices", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# ---- error by reference length -------------------------------------------------------------------------------
def reference_length(text: str) -> int:
    """Length of a generation reference in label characters, slot tags (``B-x``/``E-x``) left out."""
    from bench.tasks.text import is_tag

    return len(" ".join(w for w in str(text).split() if not is_tag(w)))


def length_buckets(lengths: list[int], k: int = LENGTH_BUCKETS) -> list[tuple[int, int]]:
    """Up to ``k`` contiguous [low, high] ranges of reference length holding about equal numbers of utterances
    (quantile edges on the test set, which every system of a task shares)."""
    if not lengths:
        return []
    a = np.sort(np.asarray(lengths))
    edges = sorted({int(a[min(len(a) - 1, int(round(q * len(a))))]) for q in np.linspace(0, 1, k + 1)[1:-1]})
    out, lo = [], int(a[0])
    for e in edges:
        if e > lo:
            out.append((lo, e - 1))
            lo = e
    out.append((lo, int(a[-1])))
    return out


def utterance_durations(records: list[dict]) -> dict[str, float] | None:
    """id → duration in seconds from the records' ``outputs.seconds`` (a property of the utterance: records written
    before ``seconds`` existed take it from the others). None when no record stores durations, when one of the
    records' utterances has none, or when records disagree on an utterance's duration (not the same test audio)."""
    out: dict[str, float] = {}
    for r in records:
        o = r.get("outputs") or {}
        if o.get("seconds") and len(o["seconds"]) == len(o.get("ids") or []):
            for i, x in zip(o["ids"], o["seconds"]):
                if out.setdefault(i, float(x)) != float(x):
                    return None
    if not out or any(i not in out for r in records for i in (r.get("outputs") or {}).get("ids") or []):
        return None
    return out


def duration_buckets(seconds: list[float], k: int = LENGTH_BUCKETS) -> list[tuple[float, float]]:
    """Up to ``k`` disjoint [shortest, longest] duration ranges holding about equal numbers of utterances (quantile
    edges; equal durations always share a bucket)."""
    if not seconds:
        return []
    a = np.sort(np.asarray(seconds, dtype=float))
    edges = sorted({float(a[min(len(a) - 1, int(round(q * len(a))))]) for q in np.linspace(0, 1, k + 1)[1:-1]})
    out, lo = [], float(a[0])
    for e in edges:
        if e > lo:
            out.append((lo, float(a[a < e].max())))
            lo = e
    out.append((lo, float(a[-1])))
    return out


def metric_by_length(records: list[dict], metric: str, buckets: list[tuple[int, int]],
                     positive_label: str | None = None, B: int | None = None,
                     axis: dict[str, float] | None = None) -> list[dict]:
    """Per bucket: the seed mean of ``metric`` on its utterances and the 95 % bootstrap interval
    (:func:`bench.results.stats.bootstrap_ci`, resampling the bucket's utterances jointly across seeds).
    Buckets are of reference length, or of ``axis[id]`` when given (utterance durations)."""
    from bench.results import stats as st

    systems = [st.System(r["outputs"]["ids"], r["outputs"]["references"], r["outputs"]["hypotheses"])
               for r in records]
    systems = st.align(systems)
    lengths = ([axis[i] for i in systems[0].ids] if axis is not None
               else [reference_length(x) for x in systems[0].references])
    out = []
    for lo, hi in buckets:
        keep = [i for i, n in enumerate(lengths) if lo <= n <= hi]
        if not keep:
            continue
        sub = [st.System([s.ids[i] for i in keep], [s.references[i] for i in keep],
                         [s.hypotheses[i] for i in keep]) for s in systems]
        try:
            iv = st.bootstrap_ci(metric, sub, positive_label, B=B or st.DEFAULT_B)
        except (ValueError, KeyError):
            continue
        out.append({"low": lo, "high": hi, "n": len(keep), "value": iv.point, "ci_low": iv.low, "ci_high": iv.high})
    return out


def plot_length(task: str, systems: dict[str, list[dict]], path: Path, B: int | None = None,
                by_duration: bool = False) -> Path | None:
    """Every metric by reference-length bucket, or by utterance-duration bucket (``by_duration``: the records'
    ``outputs.seconds``; None when a record lacks them)."""
    plt = _pyplot()
    first = next(iter(systems.values()))[0]
    metrics = list(first["scores"])
    axis = None
    if by_duration:
        axis = utterance_durations([r for recs in systems.values() for r in recs])
        if axis is None:
            return None
        lengths = [axis[i] for i in first["outputs"]["ids"]]
        buckets = duration_buckets(lengths)
        tick = "{:.2f}–{:.2f}".format
        xlabel, what = "utterance duration (seconds)", "utterance duration"
    else:
        lengths = [reference_length(x) for x in first["outputs"]["references"]]
        buckets = length_buckets(lengths)
        tick = "{}–{}".format
        xlabel, what = "reference length (characters, slot tags left out)", "reference length"
    pos = first.get("positive_label")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for k, (s, recs) in enumerate(systems.items()):
            rows = metric_by_length(recs, metric, buckets, pos, B, axis=axis)
            if not rows:
                continue
            x = np.arange(len(rows)) + (k - (len(systems) - 1) / 2) * 0.06
            y = np.array([r["value"] for r in rows])
            err = np.array([[max(r["value"] - r["ci_low"], 0) if r["ci_low"] == r["ci_low"] else 0 for r in rows],
                            [max(r["ci_high"] - r["value"], 0) if r["ci_high"] == r["ci_high"] else 0 for r in rows]])
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=s, linewidth=1)
        ax.set_xticks(range(len(buckets)), [f"{tick(lo, hi)}\n(n={sum(lo <= n <= hi for n in lengths)})"
                                            for lo, hi in buckets], fontsize=7)
        hib = first.get("higher_is_better", {}).get(metric, True)
        ax.set_ylabel(f"{metric} {'↑' if hib else '↓'}", fontsize=8)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, max(len(labels), 1)), fontsize=7)
    fig.suptitle(f"{task}: error by {what} (95 % bootstrap intervals)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(labels) - 1) // 3), 1, 1))
    return _save(fig, path)


# ---- layer weights ---------------------------------------------------------------------------------------------
def layer_weight_rows(seed_records: dict[tuple[str, str], list[dict]]) -> dict[str, list[tuple[str, np.ndarray]]]:
    """upstream → [(\"task · system\", weights averaged over seeds)] for every system whose records hold
    ``info.layer_weights`` (the softmax-normalised weights of the weighted-sum featurizer)."""
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for (task, system), recs in seed_records.items():
        ws = [np.asarray((r.get("info") or {}).get("layer_weights") or [], dtype=float) for r in recs]
        ws = [w for w in ws if w.size > 1]
        if not ws or len({w.size for w in ws}) != 1:
            continue
        out.setdefault(recs[0]["upstream"], []).append((f"{task} · {recs[0]['method']}", np.mean(ws, axis=0)))
    return out


def plot_layer_weights(upstream: str, rows: list[tuple[str, np.ndarray]], path: Path) -> Path:
    plt = _pyplot()
    m = np.stack([w for _, w in rows])
    fig, ax = plt.subplots(figsize=(2.6 + 0.55 * m.shape[1], 1.0 + 0.28 * len(rows)))
    im = ax.imshow(m, cmap="viridis", aspect="auto", vmin=0)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="black" if m[i, j] > 0.6 * m.max() else "white")
    ax.set_xticks(range(m.shape[1]), [str(j) for j in range(m.shape[1])], fontsize=7)
    ax.set_yticks(range(len(rows)), [n for n, _ in rows], fontsize=7)
    ax.set_xlabel("hidden state (0 = input to the first block)", fontsize=8)
    ax.set_title(f"{upstream}: learned layer weights (softmax, mean over seeds)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    return _save(fig, path)


# ---- learning curves -----------------------------------------------------------------------------------------
def loss_curves(rec: dict) -> tuple[list[float], list[float], int | None]:
    """(train loss per epoch, valid loss per epoch, best epoch) from a record's ``info``: the baselines' ``history``
    (one dict per epoch) or the prompt methods' ``train_loss`` / ``valid_loss`` lists."""
    info = rec.get("info") or {}
    hist = info.get("history")
    if isinstance(hist, list) and hist and isinstance(hist[0], dict):
        train = [float(h.get("train_loss", math.nan)) for h in hist]
        valid = [float(h.get("valid_loss", math.nan)) for h in hist]
    else:
        train = [float(x) for x in info.get("train_loss") or []]
        valid = [float(x) for x in info.get("valid_loss") or []]
    best = info.get("best_epoch")
    return train, valid, int(best) if isinstance(best, (int, float)) else None


def plot_curves(task: str, systems: dict[str, list[dict]], path: Path) -> Path | None:
    plt = _pyplot()
    names = [s for s in systems if any(loss_curves(r)[0] for r in systems[s])]
    if not names:
        return None
    nrow, ncol = _grid(len(names))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.0 * nrow), squeeze=False)
    for ax, s in zip(axes.flat, names):
        for k, rec in enumerate(systems[s]):
            train, valid, best = loss_curves(rec)
            c = f"C{k % 10}"
            ax.plot(range(1, len(train) + 1), train, color=c, linewidth=1, label=f"seed {rec['seed']} train")
            if valid:
                ax.plot(range(1, len(valid) + 1), valid, color=c, linewidth=1, linestyle="--",
                        label=f"seed {rec['seed']} valid")
            if best and valid and best <= len(valid):
                ax.plot([best], [valid[best - 1]], marker="o", color=c, markersize=4)
        ax.set_title(s, fontsize=8)
        ax.set_xlabel("epoch", fontsize=7)
        ax.set_ylabel("loss", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=5, ncol=2)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"{task}: learning curves (solid train, dashed valid, ● best valid epoch)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# ---- verbalizers -------------------------------------------------------------------------------------------------
def verbalizer_units(rec: dict) -> dict[str, str]:
    """label symbol → what the verbalizer maps it to, as text. A rule-based verbalizer maps each label to an LM
    token (``info.verbalizer.mapping``); records write the mapping with sorted keys, so its order says nothing, and
    the unit of a token is read off ``info.verbalizer.units`` (the drawn units) only where one offset relates every
    token to those units (a unit-ordered dictionary: GSLM's ``dict.txt`` puts 4 specials first, the MS-TLM none);
    otherwise the token is named. The learnable verbalizer maps each label to an output slot; where the record holds
    its weights, the LM output weighing most in that slot follows the arrow."""
    v = (rec.get("info") or {}).get("verbalizer") or {}
    mapping = v.get("mapping") or {}
    out = {}
    if v.get("method") == "learnable":
        w = v.get("weights")
        for sym, slot in mapping.items():
            text = f"slot {slot}"
            if w and slot < len(w.get("values", [])):
                row = np.asarray(w["values"][slot], dtype=float)
                cols = w.get("columns") or [str(i) for i in range(len(row))]
                best = cols[int(np.argmax(row))]
                text += f" → {'unit ' + best if best.isdigit() else best}"
            out[sym] = text
        return out
    units = sorted(int(u) for u in v.get("units") or [])
    tokens = [int(t) for t in mapping.values()]
    offset = next((o for o in (4, 0) if units and sorted(t - o for t in tokens) == units), None)
    for sym, tok in mapping.items():
        out[sym] = f"unit {int(tok) - offset}" if offset is not None else f"token {tok}"
    return out


def plot_verbalizer_weights(task: str, system: str, rec: dict, path: Path) -> Path | None:
    v = (rec.get("info") or {}).get("verbalizer") or {}
    w = v.get("weights")
    if not w or not w.get("values"):
        return None
    plt = _pyplot()
    m = np.asarray(w["values"], dtype=float)
    rows = w.get("rows") or [str(i) for i in range(m.shape[0])]
    cols = w.get("columns") or [str(i) for i in range(m.shape[1])]
    fig, ax = plt.subplots(figsize=(min(16, 2 + 0.09 * m.shape[1]), 1.2 + 0.22 * m.shape[0]))
    lim = float(np.abs(m).max()) or 1.0
    im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    step = max(1, m.shape[1] // 40)
    ax.set_xticks(range(0, m.shape[1], step), cols[::step], rotation=90, fontsize=5)
    ax.set_yticks(range(m.shape[0]), rows, fontsize=6)
    ax.set_xlabel("LM output (unit logit)", fontsize=7)
    ax.set_title(f"{task} · {system}, seed {rec['seed']}: learnable verbalizer weights (outputs × LM vocabulary)",
                 fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    return _save(fig, path)


# ---- the page ----------------------------------------------------------------------------------------------------
_CSS = """
body { font-family: -apple-system, 'Helvetica Neue', Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.5em; }
table { border-collapse: collapse; font-size: 0.78em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
td.best { font-weight: bold; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, p.note { font-size: 0.85em; color: #555; }
code { background: #f4f4f4; padding: 0 3px; }
.scroll { overflow-x: auto; }
"""

# Set before anything else on the page: every script error, console error/warning and failed resource load is
# counted into body[data-errors]; once the page has loaded, body[data-figures-loaded] counts the <img> with a
# decoded image (naturalWidth > 0) out of body[data-figures-total].
_SCRIPT_HEAD = """<script>
window.__reportErrors = [];
window.addEventListener('error', function (e) {
  var t = e.target && e.target.tagName ? e.target.tagName + ' ' + (e.target.src || e.target.href) : e.message;
  window.__reportErrors.push(String(t));
}, true);
['error', 'warn'].forEach(function (k) {
  var f = console[k];
  console[k] = function () { window.__reportErrors.push(k + ': ' + Array.prototype.join.call(arguments, ' '));
                             return f.apply(console, arguments); };
});
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-figures-total', String(imgs.length));
  document.body.setAttribute('data-figures-loaded', String(ok.length));
  document.body.setAttribute('data-errors', String(window.__reportErrors.length));
  document.body.setAttribute('data-error-list', window.__reportErrors.join(' | '));
});
</script>"""


def _esc(x) -> str:
    return html.escape(str(x))


def _figure(path: Path, caption: str) -> str:
    return (f'<figure><img src="{_esc(path.name)}" alt="{_esc(caption)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _table(header: list[str], rows: list[list[str]], best: list[set[int]] | None = None) -> str:
    out = ['<div class="scroll"><table><thead><tr>', *[f"<th>{_esc(h)}</th>" for h in header], "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cells = "".join(f'<td class="best">{_esc(c)}</td>' if best and j in best[i] else f"<td>{_esc(c)}</td>"
                        for j, c in enumerate(row))
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _leaderboard_html(lb) -> str:
    from bench.results.compare import _best_index

    s = lb.scores_numeric
    best_system = {}
    for label in lb.scores.index:
        task = label.split(" ")[0]
        grp = s[s["task"] == task]
        if len(grp):
            best_system[label] = grp.loc[_best_index(grp), "system"]
    header = ["task [metric]", *lb.scores.columns]
    rows, best = [], []
    for label, row in lb.scores.iterrows():
        rows.append([label, *["–" if not isinstance(v, str) else v for v in row]])
        best.append({j + 1 for j, c in enumerate(lb.scores.columns) if best_system.get(label) == c})
    table = _table(header, rows, best)
    note = lb.markdown_scores.split("\n\n", 1)[-1] if "\n\n" in lb.markdown_scores else ""
    note = re.sub(r"\*\*(.+?)\*\*", r"\1", note).strip()
    params = _table(["task", *lb.params.columns],
                    [[t, *["–" if v != v else f"{int(v):,}" for v in row]] for t, row in lb.params.iterrows()])
    return (f"{table}<p class=\"note\">{_esc(note)}</p>"
            f"<h3>Trainable parameters</h3>{params}"
            "<p class=\"note\">Trainable parameters per task (featurizer weights, heads, prompts, verbalizers; "
            "frozen models excluded).</p>")


def build_report(results: list[Path], out_dir: Path, labels: list[str] | None = None,
                 B: int | None = None, progress=None) -> Report:
    """Write ``out_dir/index.html`` and its PNG figures from the records under ``results``. ``progress``
    (``progress(description, total) -> advance``, :mod:`bench.core.progress`) follows the bootstrap and the
    figures (about 3 minutes for the committed 216 records on 2 cores)."""
    from bench.results.compare import build_leaderboard, plot_score_vs_params, records_frame, summarize

    results = [Path(r) for r in results]
    if labels and len(labels) != len(results):
        raise BenchError(f"--label given {len(labels)} time(s) for {len(results)} result directories")
    if len(results) > 1 and not labels:
        labels = [r.name or str(r) for r in results]
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BenchError(f"cannot create the report directory {out_dir}: {err.strerror or err}") from err
    df = records_frame(results, labels)
    summary = summarize(df[df["main"]], B=B, progress=progress)  # the main metrics, as `bench compare` shows them
    lb = build_leaderboard(summary)
    report = Report(out_dir / "index.html")
    seeds = _seed_records(df)
    by_task: dict[str, dict[str, list[dict]]] = {}
    for (task, system), recs in seeds.items():
        by_task.setdefault(task, {})[system] = recs

    parts: list[str] = []
    n_records = int(df.drop_duplicates(subset=["run", "task", "method", "upstream", "group", "seed"]).shape[0])
    revisions = sorted({str(r.get("git_revision") or "?")[:10] for r in df["_rec"]})
    parts.append(f"<h1>bench report: {_esc(', '.join(str(r) for r in results))}</h1>")
    parts.append(f"<p>{n_records} records, {len(by_task)} tasks, {lb.scores.shape[1]} systems; written by "
                 f"<code>bench report {_esc(' '.join(str(r) for r in results))} -o {_esc(out_dir)}</code> from the "
                 f"records alone (git revisions of the records: {_esc(', '.join(revisions))}).</p>")
    toc = ["leaderboard", "parameter efficiency", *by_task, "layer weights"]
    parts.append("<p>" + " · ".join(f'<a href="#{_slug(t)}">{_esc(t)}</a>' for t in toc) + "</p>")

    parts.append('<h2 id="leaderboard">Leaderboard</h2>' + _leaderboard_html(lb))
    pe = plot_score_vs_params(lb.scores_numeric, out_dir / "score-vs-params.png")
    report.figures.append(pe)
    parts.append('<h2 id="parameter-efficiency">Parameter efficiency</h2>'
                 + _figure(pe, "Main score against trainable parameters (log scale), one panel per task; error bars: "
                               "the 95 % bootstrap interval of the seed mean (± std over seeds without outputs)."))

    advance = progress("report figures", len(by_task)) if progress else (lambda n=1: None)
    for task, systems in by_task.items():
        advance(1)
        with_outputs = {s: r for s, r in systems.items() if all((x.get("outputs") or {}).get("ids") for x in r)}
        first = next(iter(systems.values()))[0]
        kind = first.get("task_kind", "classification" if "accuracy" in first["scores"] else "generation")
        parts.append(f'<h2 id="{_slug(task)}">{_esc(task)} <small>({_esc(kind)}, '
                     f'{_esc(first.get("task_origin", ""))})</small></h2>')
        if not with_outputs:
            parts.append("<p class=\"note\">No per-utterance outputs in these records (schema 1): no confusion "
                         "matrix or length analysis.</p>")
        elif kind == "classification":
            f = plot_confusions(task, with_outputs, out_dir / f"confusion-{_slug(task)}.png")
            report.figures.append(f)
            parts.append(_figure(f, f"{task}: confusion matrix per system, counts summed over seeds, each row as a "
                                    "percentage of its reference label."))
        else:
            f = plot_length(task, with_outputs, out_dir / f"length-{_slug(task)}.png", B)
            report.figures.append(f)
            parts.append(_figure(f, f"{task}: every metric by reference length (characters; quantile buckets of the "
                                    "test set), seed mean with its 95 % bootstrap interval (utterances of the bucket "
                                    "resampled jointly across seeds)."))
            f = plot_length(task, with_outputs, out_dir / f"duration-{_slug(task)}.png", B, by_duration=True)
            if f:
                report.figures.append(f)
                parts.append(_figure(f, f"{task}: every metric by utterance duration (seconds; quantile buckets of "
                                        "the test set), seed mean with its 95 % bootstrap interval (utterances of "
                                        "the bucket resampled jointly across seeds)."))
            else:
                parts.append("<p class=\"note\">By utterance duration: not shown; these records' per-utterance "
                             "outputs hold ids, references and hypotheses, not durations (records written before "
                             "<code>outputs.seconds</code> existed).</p>")
        f = plot_curves(task, systems, out_dir / f"curves-{_slug(task)}.png")
        if f:
            report.figures.append(f)
            parts.append(_figure(f, f"{task}: train and valid loss per epoch for every seed (the baselines' and "
                                    "the prompt methods' losses are on different scales: one panel per system)."))
        parts.append(_verbalizer_section(task, systems, out_dir, report))

    parts.append('<h2 id="layer-weights">Learned layer weights</h2>')
    lw = layer_weight_rows(seeds)
    if not lw:
        parts.append("<p class=\"note\">No record holds <code>info.layer_weights</code> with more than one layer.</p>")
    for upstream, rows in lw.items():
        f = plot_layer_weights(upstream, rows, out_dir / f"layer-weights-{_slug(upstream)}.png")
        report.figures.append(f)
        parts.append(_figure(f, f"{upstream}: the weighted-sum featurizer's softmax weights per hidden state, "
                                "mean over seeds, per task and baseline (SUPERB's layer-weight figure)."))
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>bench report</title>{_SCRIPT_HEAD}<style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    write_text_atomic(report.index, page)
    return report


def _verbalizer_section(task: str, systems: dict[str, list[dict]], out_dir: Path, report: Report) -> str:
    prompt = {s: r for s, r in systems.items() if (r[0].get("info") or {}).get("verbalizer")}
    if not prompt:
        return ""
    names = list(prompt)
    symbols = list(dict.fromkeys(sym for s in names for r in prompt[s]
                                 for sym in ((r.get("info") or {}).get("verbalizer") or {}).get("mapping", {})))
    maps = {s: [verbalizer_units(r) for r in prompt[s]] for s in names}
    def cell(values: list[str]) -> str:  # one value when every seed agrees, else every seed's in seed order
        return values[0] if len(set(values)) == 1 else " / ".join(values)

    rows = [[sym, *[cell([m.get(sym, "–") for m in maps[s]]) for s in names]] for sym in symbols]
    out = [f"<h3>{_esc(task)}: verbalizer (label → LM output)</h3>", _table(["label", *names], rows),
           "<p class=\"note\">Rule-based verbalizers map each label to one unit of the frozen LM; where seeds drew "
           "different maps, they are listed in seed order (a / b / c). The learnable verbalizer (v2) maps each "
           "label to an output slot of a linear layer on the unit logits; the unit named after the arrow weighs "
           "most in that slot.</p>"]
    missing = []
    for s in names:
        rec = prompt[s][0]
        v = rec["info"]["verbalizer"]
        if v.get("method") != "learnable":
            continue
        f = plot_verbalizer_weights(task, s, rec, out_dir / f"verbalizer-{_slug(task)}-{_slug(s)}.png")
        if f:
            report.figures.append(f)
            out.append(_figure(f, f"{task} · {s}: learnable verbalizer weights, seed {rec['seed']}."))
        else:
            missing.append(s)
    if missing:
        out.append(f"<p class=\"note\">{_esc(', '.join(missing))}: these records do not hold the learnable "
                   "verbalizer's weights (<code>info.verbalizer.weights</code>, recorded by newer runs), so no heat "
                   "map.</p>")
    return "".join(out)
