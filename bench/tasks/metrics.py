"""Metrics: one function each, with the definition it follows.

Every metric takes references and hypotheses (label strings or texts) and, where it needs them, per-utterance
scores for the positive class. ``METRICS`` is what task files may name; its direction drives the ↑/↓ arrows.
All values are fractions (0.37, not 37 %); tables scale them for display.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class MetricDef:
    name: str
    higher_is_better: bool
    needs_scores: bool = False  # EER is computed from scores, never from hard labels
    description: str = ""
    kind: str = "classification"  # the task kind whose outputs it scores (a task file may declare only these)


def _check(refs: Sequence[str], hyps: Sequence[str], name: str) -> None:
    if len(refs) != len(hyps):
        raise ValueError(f"{name}: {len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError(f"{name} of an empty set")


# ---- classification --------------------------------------------------------------------------------------
def accuracy(refs: Sequence[str], hyps: Sequence[str], **_) -> float:
    """Exact match of the whole label string (for IC: all three slots must match, as in SUPERB)."""
    _check(refs, hyps, "accuracy")
    return sum(r == h for r, h in zip(refs, hyps, strict=True)) / len(refs)


def _f1(tp: int, fp: int, fn: int) -> float:
    """F1 = 2TP / (2TP + FP + FN); 0 when the class never occurs in references or hypotheses."""
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def _class_f1(refs: Sequence[str], hyps: Sequence[str], label: str) -> float:
    tp = sum(r == label and h == label for r, h in zip(refs, hyps))
    fp = sum(r != label and h == label for r, h in zip(refs, hyps))
    fn = sum(r == label and h != label for r, h in zip(refs, hyps))
    return _f1(tp, fp, fn)


def macro_f1(refs: Sequence[str], hyps: Sequence[str], **_) -> float:
    """Unweighted mean of per-class F1 over every label seen in references or hypotheses
    (sklearn ``f1_score(average="macro")``'s definition: a predicted class absent from the references counts 0)."""
    _check(refs, hyps, "macro_f1")
    labels = sorted(set(refs) | set(hyps))
    return sum(_class_f1(refs, hyps, c) for c in labels) / len(labels)


def binary_f1(refs: Sequence[str], hyps: Sequence[str], positive_label: str | None = None, **_) -> float:
    """F1 of the positive class only (sklearn ``f1_score(average="binary", pos_label=...)``)."""
    _check(refs, hyps, "binary_f1")
    if positive_label is None:
        raise ValueError("binary_f1 needs the task's positive_label")
    return _class_f1(refs, hyps, positive_label)


def eer(refs: Sequence[str], hyps: Sequence[str], scores: Sequence[dict[str, float]] | None = None,
        positive_label: str | None = None, **_) -> float:
    """Equal error rate from the positive-class score (ASVspoof / SUPERB ASV convention).

    Sweep the decision threshold over every observed score (accept = score >= threshold): the false-acceptance
    rate FAR (negatives accepted) falls and the false-rejection rate FRR (positives rejected) rises. EER is
    where the two curves cross, linearly interpolated between the two neighbouring operating points
    (the same as the ROC-curve interpolation of s3prl's ``sv_voxceleb1`` EER via ``brentq``, without the solver).
    """
    import numpy as np

    _check(refs, hyps, "eer")
    if positive_label is None:
        raise ValueError("eer needs the task's positive_label")
    if scores is None or len(scores) != len(refs):
        raise ValueError("eer needs one score dict per utterance")
    s = np.array([float(d[positive_label]) for d in scores], dtype=np.float64)
    y = np.array([r == positive_label for r in refs])
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("eer needs both positive and negative references")
    # operating points from "accept nothing" (threshold +inf) down through every distinct score
    thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    far = np.array([((s >= t) & ~y).sum() / n_neg for t in thresholds])
    frr = np.array([((s < t) & y).sum() / n_pos for t in thresholds])
    diff = frr - far  # starts at 1 (accept nothing), ends <= 0 (accept everything): crosses zero once
    k = int(np.argmax(diff <= 0))
    if diff[k] == 0:
        return float(far[k])
    # interpolate between point k-1 (frr > far) and point k (frr < far)
    a, b = diff[k - 1], diff[k]
    w = a / (a - b)
    return float(far[k - 1] + w * (far[k] - far[k - 1]))


# ---- generation ------------------------------------------------------------------------------------------
def _check_texts(refs: Sequence[str], hyps: Sequence[str], name: str) -> None:
    _check(refs, hyps, name)
    if any(not r.strip() for r in refs):
        raise ValueError(f"{name}: an empty reference has no error rate")


def wer(refs: Sequence[str], hyps: Sequence[str], **_) -> float:
    """Corpus word error rate: total word edit distance / total reference words (jiwer; SUPERB ASR)."""
    import jiwer

    _check_texts(refs, hyps, "wer")
    return float(jiwer.wer(list(refs), list(hyps)))


def cer(refs: Sequence[str], hyps: Sequence[str], **_) -> float:
    """Corpus character error rate, spaces included: total edit distance / total reference characters (jiwer)."""
    import jiwer

    _check_texts(refs, hyps, "cer")
    return float(jiwer.cer(list(refs), list(hyps)))


_SLOT = re.compile(r"B\-(\S+) (.+?) E\-\1")


def _strip_tags(text: str) -> str:
    """s3prl ``clean``: drop ``B-x `` and `` E-x`` tag words, keeping the words between them."""
    text = re.sub(r"B\-(\S+) ", "", text)
    return re.sub(r" E\-(\S+)", "", text)


def _slots(text: str, strip_nested: bool) -> dict[str, list[str]]:
    """Slot type → values in order, as s3prl ``parse`` reads a tagged text (hypothesis values are cleaned of
    nested tags, reference values are not; spaces are squeezed first)."""
    out: dict[str, list[str]] = {}
    for slot, value in _SLOT.findall(re.sub(r" +", " ", text)):
        out.setdefault(slot, []).append(_strip_tags(value) if strip_nested else value)
    return out


def _edit_distance(a, b) -> int:
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.distance(a, b)


def slot_type_f1(refs: Sequence[str], hyps: Sequence[str], **_) -> float:
    """SUPERB SF slot-type F1 (s3prl ``downstream/ctc/metric.py:slot_type_f1``): per utterance, precision and
    recall over the *set* of slot types (F1 = 1 if both sets are empty, 0 if exactly one is), averaged over
    utterances."""
    _check(refs, hyps, "slot_type_f1")
    f1s = []
    for r, h in zip(refs, hyps):
        ref_types, hyp_types = set(_slots(r, False)), set(_slots(h, True))
        if not ref_types and not hyp_types:
            f1s.append(1.0)
        elif not ref_types or not hyp_types:
            f1s.append(0.0)
        else:
            common = len(ref_types & hyp_types)
            p, rc = common / len(hyp_types), common / len(ref_types)
            f1s.append(2 * p * rc / (p + rc) if p + rc > 0 else 0.0)
    return sum(f1s) / len(f1s)


def slot_value_cer(refs: Sequence[str], hyps: Sequence[str], **_) -> float:
    """SUPERB SF slot-value CER (s3prl ``downstream/ctc/metric.py:slot_value_cer``): for every reference slot
    value, the hypothesis value of the same type with the lowest CER (the first on ties; "" if the hypothesis has
    no slot of that type) is its match; the result is the corpus CER over those pairs. NaN if no reference has
    a slot."""
    _check(refs, hyps, "slot_value_cer")
    errors, total = 0, 0
    for r, h in zip(refs, hyps):
        ref_slots, hyp_slots = _slots(r, False), _slots(h, True)
        for slot, values in ref_slots.items():
            for ref_v in values:
                best = ""
                if slot in hyp_slots:
                    best_cer = math.inf
                    for hyp_v in hyp_slots[slot]:
                        c = _edit_distance(hyp_v, ref_v) / len(ref_v)
                        if c < best_cer:
                            best_cer, best = c, hyp_v
                errors += _edit_distance(best, ref_v)
                total += len(ref_v)
    return errors / total if total else math.nan


METRICS: dict[str, MetricDef] = {
    m.name: m
    for m in [
        MetricDef("accuracy", True, description="exact-match accuracy"),
        MetricDef("macro_f1", True, description="unweighted mean of per-class F1"),
        MetricDef("binary_f1", True, description="F1 of the task's positive class"),
        MetricDef("eer", False, needs_scores=True, description="equal error rate from positive-class scores"),
        MetricDef("wer", False, description="corpus word error rate (jiwer)", kind="generation"),
        MetricDef("cer", False, description="corpus character error rate (jiwer)", kind="generation"),
        MetricDef("slot_type_f1", True, description="SUPERB SF: per-utterance F1 over slot-type sets, averaged",
                  kind="generation"),
        MetricDef("slot_value_cer", False, description="SUPERB SF: CER of slot values matched by type",
                  kind="generation"),
    ]
}

METRIC_FUNCTIONS: dict[str, Callable[..., float]] = {
    "accuracy": accuracy,
    "macro_f1": macro_f1,
    "binary_f1": binary_f1,
    "eer": eer,
    "wer": wer,
    "cer": cer,
    "slot_type_f1": slot_type_f1,
    "slot_value_cer": slot_value_cer,
}
assert set(METRIC_FUNCTIONS) == set(METRICS), "every metric in METRICS needs its function"


def compute(name: str, refs: Sequence[str], hyps: Sequence[str], scores=None, positive_label=None) -> float:
    """Compute one named metric. ``scores``: per-utterance dicts label → score (EER reads ``positive_label``'s)."""
    if name not in METRIC_FUNCTIONS:
        raise KeyError(f"unknown metric '{name}'; known: {sorted(METRIC_FUNCTIONS)}")
    fn = METRIC_FUNCTIONS[name]
    return float(fn(refs, hyps, scores=scores, positive_label=positive_label))
