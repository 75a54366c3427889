"""Statistics over test utterances: bootstrap intervals and paired significance, from a record's stored outputs.

- :func:`bootstrap_ci`: 95 % percentile-bootstrap interval of a metric, resampling test utterances with replacement
  (B = 1000, seeded). Several seeds of one configuration are resampled *jointly* (the same utterances drawn for
  every seed) and the statistic is the mean over seeds, so the interval is that of the number in the table (the
  mean over seeds) under utterance sampling. Every metric is recomputed on each resample exactly as
  :func:`bench.tasks.metrics.compute` computes it on the full set: corpus WER/CER as total edits / total reference
  words (characters) of the drawn utterances, macro-F1 over the labels seen in the drawn references and
  hypotheses, EER from the drawn scores, slot-type F1 as the mean over drawn utterances; a metric without a fast
  form here (slot-value CER) is recomputed by ``compute`` on the expanded resample.
- :func:`paired_bootstrap`: two systems scored on the same test utterances (and the same draws), two-sided
  p-value of the difference of their (seed-mean) metric under the null-centred bootstrap
  (p = (1 + #{|δ_b − δ| ≥ |δ|}) / (B + 1)); identical systems give p = 1.
- :func:`mcnemar`: the exact (binomial) McNemar test for accuracy-type classification of two systems on the same
  utterances: the discordant pairs b (only A right) and c (only B right), p = min(1, 2·P[X ≤ min(b, c)]) with
  X ~ Binomial(b + c, 1/2).

A resample is a row of counts (how many times each utterance is drawn); every metric here is a function of a
(B, n) count matrix, with the all-ones row giving the metric of the full set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from bench.tasks.metrics import compute

DEFAULT_B = 1000
DEFAULT_SEED = 0


@dataclass(frozen=True)
class System:
    """One seed's test outputs, aligned by utterance id."""

    ids: list[str]
    references: list[str]
    hypotheses: list[str]
    scores: list[dict[str, float]] | None = None


@dataclass(frozen=True)
class Interval:
    point: float  # the metric on the full test set (mean over seeds)
    low: float
    high: float
    B: int
    level: float = 0.95


def chance_accuracy(references: Sequence[str]) -> tuple[float, float]:
    """(accuracy of the best constant guess, i.e. the majority class of ``references``; its binomial standard error
    on these ``n`` references): the yardstick of "above chance by k standard errors" (benchmarks/offline_evidence.py,
    benchmarks/probe_unit_layer.py). Seeds that share a test set are not more draws, so ``n`` is the references."""
    n = len(references)
    if n == 0:
        raise ValueError("chance accuracy of an empty test set")
    chance = max(references.count(c) for c in set(references)) / n
    return chance, math.sqrt(chance * (1 - chance) / n)


def resample_counts(n: int, B: int = DEFAULT_B, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(B, n) counts: row b says how often each of n utterances is drawn in resample b (n draws with replacement)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(B, n))
    counts = np.zeros((B, n), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(B), n), idx.ravel()), 1.0)
    return counts


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _edits(refs: Sequence[str], hyps: Sequence[str], chars: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-utterance edit counts and reference lengths (words, or characters with spaces) as jiwer counts them."""
    import jiwer

    out = (jiwer.process_characters if chars else jiwer.process_words)(list(refs), list(hyps))
    errors = np.zeros(len(refs))
    for i, chunks in enumerate(out.alignments):
        for c in chunks:
            if c.type == "substitute" or c.type == "delete":
                errors[i] += c.ref_end_idx - c.ref_start_idx
            elif c.type == "insert":
                errors[i] += c.hyp_end_idx - c.hyp_start_idx
    lengths = np.array([len(r) for r in out.references], dtype=np.float64)
    return errors, lengths


def _weighted_eer(s: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """:func:`bench.tasks.metrics.eer` of the multiset where utterance i appears w[i] times."""
    keep = w > 0
    s, y, w = s[keep], y[keep], w[keep]
    n_pos, n_neg = w[y].sum(), w[~y].sum()
    if n_pos == 0 or n_neg == 0:
        return math.nan
    su, inv = np.unique(s, return_inverse=True)  # ascending
    pos = np.bincount(inv, weights=w * y, minlength=len(su))[::-1]  # descending thresholds
    neg = np.bincount(inv, weights=w * ~y, minlength=len(su))[::-1]
    far = np.concatenate([[0.0], np.cumsum(neg) / n_neg])  # accept s >= t: first point is t = +inf
    frr = np.concatenate([[1.0], 1.0 - np.cumsum(pos) / n_pos])
    diff = frr - far
    k = int(np.argmax(diff <= 1e-15))
    if abs(diff[k]) <= 1e-15:
        return float(far[k])
    a, b = diff[k - 1], diff[k]
    return float(far[k - 1] + a / (a - b) * (far[k] - far[k - 1]))


def metric_function(name: str, refs: Sequence[str], hyps: Sequence[str], scores=None,
                    positive_label: str | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``f(W) -> values``: the metric ``name`` of each resample (row of counts) of these outputs."""
    r, h = np.asarray(refs, dtype=object), np.asarray(hyps, dtype=object)
    n = len(r)
    if name == "accuracy":
        c = (r == h).astype(np.float64)
        return lambda W: _ratio(W @ c, W.sum(1))
    if name == "binary_f1":
        p = positive_label
        tp, fp, fn = ((r == p) & (h == p)) * 1.0, ((r != p) & (h == p)) * 1.0, ((r == p) & (h != p)) * 1.0

        def f(W):
            t, a, b = W @ tp, W @ fp, W @ fn
            den = 2 * t + a + b
            return np.where(den > 0, 2 * t / np.where(den > 0, den, 1), 0.0)

        return f
    if name == "macro_f1":
        labels = sorted(set(refs) | set(hyps))
        R = np.stack([(r == c) for c in labels], 1).astype(np.float64)
        H = np.stack([(h == c) for c in labels], 1).astype(np.float64)
        RH = R * H

        def f(W):
            tp, nr, nh = W @ RH, W @ R, W @ H
            den = nr + nh  # 2TP + FP + FN
            f1 = np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0)
            present = den > 0
            return (f1 * present).sum(1) / present.sum(1)

        return f
    if name in ("wer", "cer"):
        e, length = _edits(refs, hyps, chars=name == "cer")
        return lambda W: _ratio(W @ e, W @ length)
    if name == "slot_type_f1":
        v = np.array([compute(name, [a], [b]) for a, b in zip(refs, hyps)])
        return lambda W: _ratio(W @ v, W.sum(1))
    if name == "eer":
        if scores is None or positive_label is None:
            raise ValueError("eer needs scores and the positive label")
        s = np.array([float(d[positive_label]) for d in scores])
        y = np.array([x == positive_label for x in refs])
        return lambda W: np.array([_weighted_eer(s, y, w) for w in W])

    def generic(W):  # expand each resample and let bench.tasks.metrics compute it
        out = np.empty(len(W))
        for b, w in enumerate(W):
            idx = np.repeat(np.arange(n), w.astype(int))
            try:
                out[b] = compute(name, [refs[i] for i in idx], [hyps[i] for i in idx],
                                 scores=None if scores is None else [scores[i] for i in idx],
                                 positive_label=positive_label)
            except ValueError:
                out[b] = math.nan
        return out

    return generic


def align(systems: Sequence[System], ids: Sequence[str] | None = None) -> list[System]:
    """The systems reordered to the ids of ``ids`` (default: the first system's); ValueError if the test sets
    differ (different utterances cannot be paired or resampled jointly)."""
    order = list(ids if ids is not None else systems[0].ids)
    want = set(order)
    out = []
    for s in systems:
        if len(s.ids) != len(order) or set(s.ids) != want:
            raise ValueError("systems were scored on different test utterances")
        pos = {u: i for i, u in enumerate(s.ids)}
        ix = [pos[u] for u in order]
        out.append(System(order, [s.references[i] for i in ix], [s.hypotheses[i] for i in ix],
                          None if s.scores is None else [s.scores[i] for i in ix]))
    return out


def _seed_means(name: str, systems: Sequence[System], W: np.ndarray, positive_label) -> np.ndarray:
    vals = [metric_function(name, s.references, s.hypotheses, s.scores, positive_label)(W) for s in systems]
    return np.mean(vals, axis=0)


def bootstrap_ci(name: str, systems: Sequence[System], positive_label: str | None = None, B: int = DEFAULT_B,
                 seed: int = DEFAULT_SEED, level: float = 0.95) -> Interval:
    """Percentile-bootstrap interval of the mean over ``systems`` (the seeds of one configuration) of metric
    ``name``, resampling test utterances jointly across seeds."""
    systems = align(systems)
    n = len(systems[0].ids)
    point = float(_seed_means(name, systems, np.ones((1, n)), positive_label)[0])
    vals = _seed_means(name, systems, resample_counts(n, B, seed), positive_label)
    vals = vals[~np.isnan(vals)]
    if not len(vals):
        return Interval(point, math.nan, math.nan, B, level)
    q = (1 - level) / 2 * 100
    low, high = np.percentile(vals, [q, 100 - q])
    return Interval(point, float(low), float(high), B, level)


@dataclass(frozen=True)
class PairedTest:
    delta: float  # metric(A) - metric(B) on the full set (means over seeds)
    p: float
    test: str  # "paired-bootstrap" or "mcnemar-exact"


def paired_bootstrap(name: str, a: Sequence[System], b: Sequence[System], positive_label: str | None = None,
                     B: int = DEFAULT_B, seed: int = DEFAULT_SEED) -> PairedTest:
    """Two-sided paired-bootstrap test of metric(A) = metric(B): both systems (all their seeds) see the same
    resampled utterances; p = (1 + #{|δ_b − δ| ≥ |δ|}) / (B + 1)."""
    a = align(a)
    b = align(b, a[0].ids)
    n = len(a[0].ids)
    ones = np.ones((1, n))
    delta = float(_seed_means(name, a, ones, positive_label)[0] - _seed_means(name, b, ones, positive_label)[0])
    W = resample_counts(n, B, seed)
    d = _seed_means(name, a, W, positive_label) - _seed_means(name, b, W, positive_label)
    d = d[~np.isnan(d)]
    extreme = int(np.sum(np.abs(d - delta) >= abs(delta) - 1e-12))
    return PairedTest(delta, (1 + extreme) / (1 + len(d)), "paired-bootstrap")


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> tuple[int, int, float]:
    """Exact McNemar test: (b, c, two-sided p) where b = #(A right, B wrong), c = #(A wrong, B right)."""
    if len(correct_a) != len(correct_b):
        raise ValueError("McNemar needs the same utterances for both systems")
    b = sum(bool(x) and not bool(y) for x, y in zip(correct_a, correct_b))
    c = sum(bool(y) and not bool(x) for x, y in zip(correct_a, correct_b))
    m = b + c
    if m == 0:
        return b, c, 1.0
    tail = sum(math.comb(m, k) for k in range(min(b, c) + 1)) / 2**m
    return b, c, min(1.0, 2 * tail)


def mcnemar_test(a: System, b: System) -> PairedTest:
    """McNemar on two single-seed classification systems (exact-match correctness per utterance)."""
    a, b = align([a])[0], align([b], a.ids)[0]
    ca = [r == h for r, h in zip(a.references, a.hypotheses)]
    cb = [r == h for r, h in zip(b.references, b.hypotheses)]
    _, _, p = mcnemar(ca, cb)
    return PairedTest((sum(ca) - sum(cb)) / len(ca), p, "mcnemar-exact")


def compare_to_best(name: str, a: Sequence[System], best: Sequence[System], positive_label: str | None = None,
                    B: int = DEFAULT_B, seed: int = DEFAULT_SEED) -> PairedTest:
    """The test ``bench compare`` runs against the best system of a task: exact McNemar for accuracy with one seed
    on each side, the paired bootstrap otherwise."""
    if name == "accuracy" and len(a) == 1 and len(best) == 1:
        return mcnemar_test(a[0], best[0])
    return paired_bootstrap(name, a, best, positive_label, B, seed)
