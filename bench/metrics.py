"""Metrics: one function each, with the definition it follows.

Every metric takes references and hypotheses (label strings or texts) and, where it needs them, per-utterance
scores for the positive class. ``METRICS`` is what task files may name; its direction drives the ↑/↓ arrows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class MetricDef:
    name: str
    higher_is_better: bool
    needs_scores: bool = False  # EER is computed from scores, never from hard labels
    description: str = ""


def accuracy(refs: Sequence[str], hyps: Sequence[str], **_) -> float:
    """Exact match of the whole label string (for IC: all three slots must match, as in SUPERB)."""
    if not refs:
        raise ValueError("accuracy of an empty set")
    return sum(r == h for r, h in zip(refs, hyps, strict=True)) / len(refs)


METRICS: dict[str, MetricDef] = {
    m.name: m
    for m in [
        MetricDef("accuracy", True, description="exact-match accuracy"),
        MetricDef("macro_f1", True, description="unweighted mean of per-class F1"),
        MetricDef("binary_f1", True, description="F1 of the task's positive class"),
        MetricDef("eer", False, needs_scores=True, description="equal error rate from positive-class scores"),
        MetricDef("wer", False, description="corpus word error rate (jiwer)"),
        MetricDef("cer", False, description="corpus character error rate (jiwer)"),
        MetricDef("slot_type_f1", True, description="SUPERB SF: per-utterance F1 over slot-type sets, averaged"),
        MetricDef("slot_value_cer", False, description="SUPERB SF: CER of slot values matched by type"),
    ]
}

METRIC_FUNCTIONS: dict[str, Callable[..., float]] = {"accuracy": accuracy}


def compute(name: str, refs: Sequence[str], hyps: Sequence[str], scores=None, positive_label=None) -> float:
    """Compute one named metric. ``scores``: per-utterance score of ``positive_label`` (EER only)."""
    fn = METRIC_FUNCTIONS[name]
    return float(fn(refs, hyps, scores=scores, positive_label=positive_label))
