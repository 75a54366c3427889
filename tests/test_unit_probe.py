"""The order-aware unit probe reads what a bag of units cannot: two classes with the same unit bag, told apart only
by the order of their units; trained on train, its epoch chosen on valid, the same digits for the same seed."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from bench.units.probe import SequenceProbeConfig, fit_sequence_probe, unit_histogram

K = 12


def order_only(n: int, seed: int):
    """Every sequence is a permutation of the same 8 units; the label is whether unit 0 comes before unit 1."""
    rng = np.random.default_rng(seed)
    bag = np.array([0, 1, 2, 3, 5, 7, 9, 11])
    seqs = [rng.permutation(bag) for _ in range(n)]
    labels = ["before" if list(s).index(0) < list(s).index(1) else "after" for s in seqs]
    return seqs, labels


def test_unit_histogram_is_the_normalised_bag():
    h = unit_histogram([np.array([3, 1, 3]), np.array([], dtype=np.int64)], 4)
    assert h.shape == (2, 4)
    np.testing.assert_allclose(h[0], [0, 1 / 3, 0, 2 / 3])
    assert h[1].sum() == 0


def test_sequence_probe_learns_an_order_only_signal_the_bag_probe_cannot():
    xtr, ytr = order_only(400, 0)
    xva, yva = order_only(100, 1)
    xte, yte = order_only(200, 2)
    bag = LogisticRegression(max_iter=2000, C=10.0).fit(unit_histogram(xtr, K), ytr)
    bag_acc = np.mean(bag.predict(unit_histogram(xte, K)) == np.array(yte))
    assert bag_acc <= 0.6  # every bag is the same: the bag probe can only guess one class

    cfg = SequenceProbeConfig(epochs=12, seed=0)
    probe = fit_sequence_probe(xtr, ytr, xva, yva, K, cfg)
    seq_acc = np.mean(np.array(probe.predict(xte)) == np.array(yte))
    assert seq_acc >= 0.9, (seq_acc, probe.history)
    assert len(probe.history) == 12 and probe.valid_accuracy == max(probe.history)
    assert probe.history[probe.best_epoch - 1] == probe.valid_accuracy  # the kept epoch is the best on valid

    again = fit_sequence_probe(xtr, ytr, xva, yva, K, cfg)
    assert again.history == probe.history and again.predict(xte) == probe.predict(xte)  # seeded, 1 thread
