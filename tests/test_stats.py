"""bench.results.stats on constructed cases with known answers: bootstrap intervals, McNemar, the paired bootstrap, and
every fast resample metric equal to bench.tasks.metrics.compute on the expanded resample."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.tasks.metrics import compute
from bench.results.stats import (System, bootstrap_ci, compare_to_best, mcnemar, metric_function, paired_bootstrap,
                         resample_counts)


def clf(correct: list[bool], ids=None) -> System:
    ids = ids or [f"u{i}" for i in range(len(correct))]
    return System(ids, ["a"] * len(correct), ["a" if c else "b" for c in correct])


def test_all_correct_gives_the_degenerate_interval():
    iv = bootstrap_ci("accuracy", [clf([True] * 50)])
    assert (iv.point, iv.low, iv.high) == (1.0, 1.0, 1.0)


def test_interval_of_a_known_vector_is_close_to_the_binomial_one_and_seeded():
    correct = [True] * 70 + [False] * 30  # p = 0.7, n = 100: Wald 95 % interval 0.7 ± 1.96·sqrt(.21/100)
    iv = bootstrap_ci("accuracy", [clf(correct)], B=2000, seed=1)
    half = 1.96 * math.sqrt(0.7 * 0.3 / 100)
    assert iv.point == pytest.approx(0.7)
    assert iv.low == pytest.approx(0.7 - half, abs=0.02) and iv.high == pytest.approx(0.7 + half, abs=0.02)
    assert bootstrap_ci("accuracy", [clf(correct)], B=2000, seed=1) == iv  # reproducible
    assert (resample_counts(100, 50, seed=2) != resample_counts(100, 50, seed=1)).any()  # the seed decides draws


def test_seeds_are_resampled_jointly_and_averaged():
    a, b = clf([True] * 60 + [False] * 40), clf([True] * 80 + [False] * 20)
    iv = bootstrap_ci("accuracy", [a, b])
    assert iv.point == pytest.approx(0.7) and iv.low < 0.7 < iv.high
    # the same utterances drawn for both seeds: the spread is that of a paired mean, not of independent draws
    shuffled = System(list(reversed(b.ids)), list(reversed(b.references)), list(reversed(b.hypotheses)))
    assert bootstrap_ci("accuracy", [a, shuffled]) == iv  # aligned by id, whatever the stored order
    with pytest.raises(ValueError, match="different test utterances"):
        bootstrap_ci("accuracy", [a, clf([True] * 100, ids=[f"x{i}" for i in range(100)])])


def test_mcnemar_is_the_exact_binomial_test():
    from scipy.stats import binomtest

    # 12 discordant pairs: A alone right on 9, B alone right on 3; 20 concordant
    a = [True] * 9 + [False] * 3 + [True] * 10 + [False] * 10
    b = [False] * 9 + [True] * 3 + [True] * 10 + [False] * 10
    bb, cc, p = mcnemar(a, b)
    assert (bb, cc) == (9, 3)
    assert p == pytest.approx(binomtest(3, 12, 0.5).pvalue)
    assert p == pytest.approx(2 * sum(math.comb(12, k) for k in range(4)) / 2**12)  # = 0.14599609375
    assert mcnemar(a, a)[2] == 1.0
    t = compare_to_best("accuracy", [clf(b)], [clf(a)])
    assert t.test == "mcnemar-exact" and t.p == pytest.approx(p)


def test_paired_bootstrap_of_identical_systems_gives_p_one_and_of_distant_ones_p_small():
    x = clf([True] * 50 + [False] * 50)
    t = paired_bootstrap("accuracy", [x], [x])
    assert t.delta == 0 and t.p == pytest.approx(1.0)
    worse = clf([True] * 20 + [False] * 80)
    t = paired_bootstrap("accuracy", [x], [worse])
    assert t.delta == pytest.approx(0.3) and t.p < 0.01
    assert compare_to_best("accuracy", [x, x], [worse]).test == "paired-bootstrap"  # several seeds: bootstrap


RNG = np.random.default_rng(0)
LABELS = ["yes", "no", "up", "down"]
REFS = list(RNG.choice(LABELS, 40))
HYPS = [r if RNG.random() < 0.6 else str(RNG.choice(LABELS + ["zzz"])) for r in REFS]
SCORES = [{"yes": float(RNG.normal(1.0 if r == "yes" else 0.0)), "no": 0.0} for r in REFS]
WORDS = "the cat sat on a mat with big red hat".split()
TREFS = [" ".join(RNG.choice(WORDS, RNG.integers(1, 6))) for _ in range(30)]
THYPS = [" ".join(w for w in t.split() if RNG.random() < 0.8) + (" extra" if RNG.random() < 0.3 else "")
         for t in TREFS]
SF_REFS = ["B-place paris E-place now", "go B-time now E-time", "B-place rome E-place B-time today E-time", "hi"]
SF_HYPS = ["B-place pari E-place now", "go now", "B-place rome E-place B-time today E-time", "B-time hi E-time"]


@pytest.mark.parametrize("metric,refs,hyps,scores,pos", [
    ("accuracy", REFS, HYPS, None, None),
    ("macro_f1", REFS, HYPS, None, None),
    ("binary_f1", REFS, HYPS, None, "yes"),
    ("eer", REFS, HYPS, SCORES, "yes"),
    ("wer", TREFS, THYPS, None, None),
    ("cer", TREFS, THYPS, None, None),
    ("slot_type_f1", SF_REFS * 5, SF_HYPS * 5, None, None),
    ("slot_value_cer", SF_REFS * 5, SF_HYPS * 5, None, None),
])
def test_resampled_metric_is_the_metric_of_the_resample(metric, refs, hyps, scores, pos):
    f = metric_function(metric, refs, hyps, scores, pos)
    n = len(refs)
    assert f(np.ones((1, n)))[0] == pytest.approx(compute(metric, refs, hyps, scores=scores, positive_label=pos))
    W = resample_counts(n, B=5, seed=3)
    for w, v in zip(W, f(W)):
        idx = np.repeat(np.arange(n), w.astype(int))
        try:
            want = compute(metric, [refs[i] for i in idx], [hyps[i] for i in idx],
                           scores=None if scores is None else [scores[i] for i in idx], positive_label=pos)
        except ValueError:
            want = math.nan
        assert v == pytest.approx(want, nan_ok=True)


def test_resample_counts_draw_n_with_replacement_and_are_seeded():
    W = resample_counts(7, B=20, seed=5)
    assert W.shape == (20, 7) and (W.sum(1) == 7).all()
    assert (resample_counts(7, B=20, seed=5) == W).all()


def test_chance_accuracy_is_the_majority_class_and_its_binomial_se():
    from bench.results.stats import chance_accuracy

    chance, se = chance_accuracy(["a"] * 25 + ["b"] * 25)
    assert chance == 0.5 and se == pytest.approx(math.sqrt(0.25 / 50))
    chance, se = chance_accuracy(["a"] * 30 + ["b"] * 10)  # unbalanced: the best constant guess is "a"
    assert chance == 0.75 and se == pytest.approx(math.sqrt(0.75 * 0.25 / 40))
    with pytest.raises(ValueError):
        chance_accuracy([])
