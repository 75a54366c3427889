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


def test_offline_evidence_counts_the_method_against_the_order_aware_probe(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "offline_evidence.py"
    spec = importlib.util.spec_from_file_location("offline_evidence", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    seq = {"ks": 0.60, "scr": 0.50, "lid": 0.70, "ic": 0.40, "auc": 0.50}
    method = {"ks": 0.56, "scr": 0.44, "lid": 0.71, "ic": 0.10, "auc": 0.30}  # within 5: ks, lid (above); not scr
    doc = {"upstream": "whisper_tiny_en", "size": "default", "data_seed": 0, "date": "2026-12-05",
           "git_revision": "abc1234", "sequence_probe": {"seed": 0},
           "layers": [{"layer": 3, "K": 100, "tasks": {f"builtin-{t}": {"bag_of_units": 0.3, "sequence": {"test": v}}
                                                       for t, v in seq.items()}}]}
    (tmp_path / "probes.json").write_text(json.dumps(doc))
    mod.print_unit_bound(tmp_path / "probes.json", "prompt-gslm-lv", {f"builtin-{t}": v for t, v in method.items()})
    out = capsys.readouterr().out
    assert "2 of 5" in out and ": ks, lid (" in out
    assert "-6.0" in out and "+1.0" in out  # scr's gap, lid's margin
