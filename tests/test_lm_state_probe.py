"""benchmarks/probe_lm_state.py: the state it probes is the one the learnable verbalizer reads (the final state at
the separator), the untrained twin has the LM's shape and none of its weights, and the twin it writes is an LM
directory the prompt methods load. benchmarks/pretrain_ulm_streams.py joins utterances into streams per group."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from bench.lms.checkpoint import load_unit_lm, save_unit_lm
from bench.lms.default_lm import locate_lm
from bench.lms.model import UnitLanguageModel, UnitLMConfig


def _script(name: str = "probe_lm_state"):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _lm(seed: int = 1) -> UnitLanguageModel:
    torch.manual_seed(seed)
    return UnitLanguageModel(UnitLMConfig(vocab_size=14, num_layers=2, embed_dim=16, num_heads=2, ffn_dim=32)).eval()


def test_separator_state_is_what_the_lm_outputs_at_the_separator():
    mod, lm = _script(), _lm()
    sources = [np.array([3, 1, 4, 1, 5]), np.array([9, 2])]
    sep, mean = mod.lm_states(lm, sources)
    assert sep.shape == (2, 16) and mean.shape == (2, 2 * 16)
    v = lm.dictionary
    for i, units in enumerate(sources):
        tokens = torch.tensor([[v.eos, *(v.unit_to_index(int(u)) for u in units), v.bos]])
        with torch.no_grad():
            _, hidden = lm(tokens, return_hidden=True)
        np.testing.assert_allclose(sep[i], hidden[0, -1].numpy(), atol=1e-5)


def test_untrained_twin_has_the_shape_not_the_weights(tmp_path):
    mod, lm = _script(), _lm()
    twin = mod.untrained_twin(lm, seed=0)
    assert twin.cfg == lm.cfg and twin.dictionary.symbols == lm.dictionary.symbols
    assert not torch.equal(twin.layers[0].fc1.weight, lm.layers[0].fc1.weight)
    assert torch.equal(mod.untrained_twin(lm, seed=0).layers[0].fc1.weight, twin.layers[0].fc1.weight)

    lm_dir = tmp_path / "lm"
    save_unit_lm(lm, lm_dir)
    np.save(lm_dir / "kmeans.npy", np.zeros((10, 4), dtype=np.float32))
    (lm_dir / "units.json").write_text(json.dumps({"kmeans": "kmeans.npy", "layer": 1, "K": 10}))
    mod.write_twin(twin, lm_dir, tmp_path / "twin")
    files = locate_lm(str(tmp_path / "twin"))
    assert files.units["kmeans"] == str(tmp_path / "twin" / "kmeans.npy") and files.units["layer"] == 1
    back = load_unit_lm(files.checkpoint, files.dict)
    assert torch.equal(back.layers[0].fc1.weight, twin.layers[0].fc1.weight)


def test_linear_probe_chooses_c_on_valid_and_scores_test():
    mod = _script()
    rng = np.random.default_rng(0)

    def split(n):
        y = rng.integers(0, 2, n)
        x = rng.normal(size=(n, 5))
        x[:, 0] += 3 * y  # one informative dimension
        return x, np.array(["a", "b"])[y]

    xs, ys = zip(*(split(n) for n in (200, 80, 120)))
    got = mod.linear_probe(dict(zip(("train", "valid", "test"), xs)), dict(zip(("train", "valid", "test"), ys)))
    assert got["C"] in mod.C_GRID and got["test"] >= 0.85 and got["valid"] >= 0.85


def test_offline_evidence_prints_the_lm_state_beside_its_twin(tmp_path, capsys):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "offline_evidence.py"
    spec = importlib.util.spec_from_file_location("offline_evidence", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    row = {k: {"test": v, "valid": 0.5, "C": 1.0} for k, v in
           (("lm_separator", 0.533), ("twin_separator", 0.544), ("lm_layer_mean", 0.6), ("twin_layer_mean", 0.472))}
    doc = {"lm": "ulm-default-x", "date": "2026-12-06", "git_revision": "d5dd417c3d3b", "tasks": {"builtin-ks": row}}
    (tmp_path / "state.json").write_text(json.dumps(doc))
    mod.print_lm_state(tmp_path / "state.json")
    out = capsys.readouterr().out
    assert "ulm-default-x" in out and "53.3   54.4            60.0   47.2" in out


def test_streams_join_consecutive_utterances_of_one_group():
    join = _script("pretrain_ulm_streams").join_streams
    utterances = [(("fr", "a"), [1, 2, 3]), (("en", "b"), [7, 8]), (("fr", "a"), [3, 4]), (("fr", "a"), [5, 6]),
                  (("fr", "a"), [9]), (("en", "b"), [8, 9])]
    # per group in key order; a unit repeated across a join collapsed; one-unit utterances left out
    assert join(utterances, 2) == [[7, 8, 9], [1, 2, 3, 4], [5, 6]]
    assert join(utterances, 1) == [[7, 8], [8, 9], [1, 2, 3], [3, 4], [5, 6]]
