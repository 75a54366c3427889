"""Every metric against hand-computed cases; the SF metrics also against s3prl's own ``ctc/metric.py``."""

from __future__ import annotations

import importlib.util
import math
import random
import sys
import types

import pytest

from bench.tasks.metrics import METRIC_FUNCTIONS, METRICS, compute


def test_every_declared_metric_is_implemented():
    assert set(METRIC_FUNCTIONS) == set(METRICS)


def test_accuracy_is_exact_match_of_the_whole_label():
    assert compute("accuracy", ["a", "b", "c", "a"], ["a", "b", "a", "a"]) == 0.75
    # IC: all three slots must be right
    assert compute("accuracy", ["activate lights kitchen"], ["activate lights bedroom"]) == 0.0


def test_macro_f1_averages_per_class_f1_unweighted():
    # class a: TP 1, FN 1 -> F1 2/3; class b: TP 2, FP 1 -> F1 4/5
    assert compute("macro_f1", ["a", "a", "b", "b"], ["a", "b", "b", "b"]) == pytest.approx((2 / 3 + 4 / 5) / 2)
    # a predicted class that never occurs in the references counts as F1 0 (sklearn's convention)
    assert compute("macro_f1", ["a", "a"], ["a", "z"]) == pytest.approx((2 / 3 + 0) / 2)


def test_macro_f1_matches_sklearn_on_random_labels():
    from sklearn.metrics import f1_score

    rng = random.Random(0)
    refs = [rng.choice("abcde") for _ in range(200)]
    hyps = [r if rng.random() < 0.6 else rng.choice("abcdef") for r in refs]
    assert compute("macro_f1", refs, hyps) == pytest.approx(f1_score(refs, hyps, average="macro"))
    assert compute("binary_f1", refs, hyps, positive_label="c") == pytest.approx(
        f1_score(refs, hyps, labels=["c"], average=None)[0])


def test_binary_f1_is_the_positive_class_f1():
    assert compute("binary_f1", ["a", "a", "b", "b"], ["a", "b", "b", "b"], positive_label="b") == pytest.approx(0.8)
    assert compute("binary_f1", ["a", "a", "b", "b"], ["a", "b", "b", "b"], positive_label="a") == pytest.approx(2 / 3)


def _eer(pos, neg):
    refs = ["spoof"] * len(pos) + ["bonafide"] * len(neg)
    scores = [{"spoof": s, "bonafide": -s} for s in [*pos, *neg]]
    return compute("eer", refs, ["x"] * len(refs), scores=scores, positive_label="spoof")


def test_eer_known_score_sets():
    assert _eer([0.9, 0.8, 0.7], [0.3, 0.2, 0.1]) == 0.0  # separable
    # threshold 0.7 accepts 2/3 positives (FRR 1/3) and 1/3 negatives (FAR 1/3): an exact crossing
    assert _eer([0.9, 0.8, 0.3], [0.7, 0.2, 0.1]) == pytest.approx(1 / 3)
    # crossing between operating points: (FAR, FRR) goes (1/4, 1/2) -> (1/2, 0); lines meet at 1/3
    assert _eer([0.9, 0.5], [0.7, 0.5, 0.2, 0.1]) == pytest.approx(1 / 3)
    assert _eer([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(0.5)  # uninformative scores
    assert _eer([0.1, 0.2], [0.8, 0.9]) == 1.0  # inverted scores


def test_eer_reads_the_positive_class_score_not_the_hard_label():
    refs = ["spoof", "bonafide"]
    scores = [{"spoof": 0.9, "bonafide": 0.1}, {"spoof": 0.2, "bonafide": 0.8}]
    # hypotheses are all wrong, scores are perfect: EER only looks at scores
    assert compute("eer", refs, ["bonafide", "spoof"], scores=scores, positive_label="spoof") == 0.0
    with pytest.raises(ValueError, match="positive and negative"):
        compute("eer", ["spoof"], ["spoof"], scores=[{"spoof": 1.0}], positive_label="spoof")


def test_wer_and_cer_are_corpus_level():
    # 2 word errors over 5 reference words (a per-utterance mean would be 0.4167)
    assert compute("wer", ["a b c", "d e"], ["a x c", "d"]) == pytest.approx(0.4)
    assert compute("cer", ["abc", "de"], ["abd", "d"]) == pytest.approx(0.4)
    assert compute("cer", ["ab cd"], ["abcd"]) == pytest.approx(0.2)  # the space is a character
    assert compute("wer", ["a b"], [""]) == 1.0  # empty hypothesis: all deletions
    with pytest.raises(ValueError, match="empty reference"):
        compute("wer", [""], ["a"])


REF = "play B-artist queen E-artist in the B-room kitchen E-room"


def test_slot_type_f1_hand_cases():
    refs = [REF, "what time is it", REF]
    hyps = ["play B-artist queen E-artist in the kitchen", "what time is it", "play queen in the kitchen"]
    # utt 1: P = 1, R = 1/2 -> 2/3; utt 2: no slots on either side -> 1; utt 3: hypothesis has none -> 0
    assert compute("slot_type_f1", refs, hyps) == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert compute("slot_type_f1", [REF], [REF]) == 1.0


def test_slot_value_cer_hand_case():
    ref = "B-artist queen E-artist B-room kitchen E-room"
    hyp = "B-artist quen E-artist B-artist abba E-artist"
    # artist: best of "quen" (1/5) and "abba" -> 1 edit; room missing -> "" vs "kitchen", 7 edits; 8 / 12
    assert compute("slot_value_cer", [ref], [hyp]) == pytest.approx(8 / 12)
    assert math.isnan(compute("slot_value_cer", ["no slots here"], ["none"]))


def _s3prl_ctc_metric():
    """s3prl's downstream/ctc/metric.py, with rapidfuzz standing in for the editdistance package it imports."""
    from rapidfuzz.distance import Levenshtein

    spec = importlib.util.find_spec("s3prl")
    path = spec.submodule_search_locations[0] + "/downstream/ctc/metric.py"
    saved = sys.modules.get("editdistance")
    sys.modules["editdistance"] = types.SimpleNamespace(eval=Levenshtein.distance)
    try:
        mspec = importlib.util.spec_from_file_location("s3prl_ctc_metric", path)
        mod = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(mod)
    finally:
        if saved is None:
            del sys.modules["editdistance"]
        else:
            sys.modules["editdistance"] = saved
    return mod


def _random_tagged(rng: random.Random) -> str:
    words = []
    for _ in range(rng.randint(1, 6)):
        value = " ".join("".join(rng.choice("abcde") for _ in range(rng.randint(1, 5)))
                         for _ in range(rng.randint(1, 2)))
        if rng.random() < 0.4:
            slot = rng.choice(["artist", "room", "city"])
            words.append(f"B-{slot} {value} E-{slot}")
        else:
            words.append(value)
    return " ".join(words)


def test_sf_metrics_agree_with_s3prl_implementation():
    ref_impl = _s3prl_ctc_metric()
    rng = random.Random(1)
    refs = [_random_tagged(rng) for _ in range(150)]
    hyps = [_random_tagged(rng) if rng.random() < 0.5 else r.replace("a", "b", 1) for r in refs]
    assert compute("slot_type_f1", refs, hyps) == pytest.approx(ref_impl.slot_type_f1(hyps, refs))
    assert compute("slot_value_cer", refs, hyps) == pytest.approx(ref_impl.slot_value_cer(hyps, refs))
    # and SUPERB's plain cer/wer (editdistance over the reference length) equal jiwer's corpus rates
    assert compute("cer", refs, hyps) == pytest.approx(ref_impl.cer(hyps, refs))
    assert compute("wer", refs, hyps) == pytest.approx(ref_impl.wer(hyps, refs))
