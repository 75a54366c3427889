"""Pretraining (GSLM's recipe, small): a tiny ULM learns a synthetic unit grammar, is written in fairseq's layout,
loads back through the same path as an imported GSLM release, and reruns bit-identically from the same seed."""

from __future__ import annotations

import math
import random

import pytest
import torch

from bench.core.errors import BenchError
from bench.lms.checkpoint import load_unit_lm, read_checkpoint
from bench.lms.model import UnitLMConfig
from bench.lms.pretrain import encode_sequences, inverse_sqrt_lr, pretrain_unit_lm

K = 8


def _grammar(n, seed=0):
    """Deduplicated unit sequences from a deterministic grammar u_{t+1} = (3·u_t + 1) mod K (no fixed point, so
    no consecutive repeats): after the first unit every step is predictable."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        u, seq = rng.randrange(K), []
        for _ in range(rng.randint(8, 24)):
            seq.append(u)
            u = (3 * u + 1) % K
        out.append(seq)
    return out


def _cfg():
    return UnitLMConfig.tiny(K + 4, num_layers=2, embed_dim=32, num_heads=2, ffn_dim=64, max_positions=64)


def _train(out, seed=0, **kw):
    args = dict(max_epochs=15, valid_fraction=0.1, lr=3e-3, batch_tokens=512, warmup_updates=10)
    args.update(kw)
    return pretrain_unit_lm(_grammar(240), _cfg(), out, seed=seed, **args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("ulm") / "lm")


def test_tiny_lm_learns_the_grammar(trained):
    state = read_checkpoint(trained)
    hist = state["extra_state"]["bench"]["pretrain"]["history"]
    first, best = hist[0]["valid_loss"], min(h["valid_loss"] for h in hist)
    # the grammar's entropy: ln K for the first unit + ln 17 for the length (8..24), over 17 tokens on average
    floor = (math.log(K) + math.log(17)) / 17
    assert best < first and best < floor + 0.1  # ≈0.29 floor; uniform over 12 symbols would be ln 12 ≈ 2.48
    lm = load_unit_lm(trained)
    d = lm.dictionary
    seq = [5, (3 * 5 + 1) % K, (3 * ((3 * 5 + 1) % K) + 1) % K]
    tokens = torch.tensor([[d.eos] + [d.unit_to_index(u) for u in seq]])
    with torch.no_grad():
        pred = lm(tokens).argmax(-1)[0, 1:].tolist()
    assert pred == [d.unit_to_index((3 * u + 1) % K) for u in seq]


def test_checkpoint_is_fairseq_layout_with_training_position(trained):
    state = read_checkpoint(trained)
    assert set(state) >= {"cfg", "model", "optimizer_history", "extra_state"}
    assert state["cfg"]["model"]["_name"] == "transformer_lm" and state["cfg"]["task"]["_name"] == "language_modeling"
    assert all(k.startswith("decoder.") for k in state["model"])
    lm = load_unit_lm(trained)
    best = state["extra_state"]["bench"]["pretrain"]["history"]
    chosen = min(best, key=lambda h: h["valid_loss"])
    assert lm.provenance["epoch"] == chosen["epoch"] and lm.provenance["num_updates"] == chosen["num_updates"]
    assert math.isclose(state["extra_state"]["val_loss"], chosen["valid_loss"] / math.log(2))
    assert (trained.parent / "dict.txt").read_text().splitlines()[:2] == ["0 1", "1 1"]


def test_loads_back_with_identical_logits_and_reruns_identically(trained, tmp_path):
    a, b = load_unit_lm(trained), load_unit_lm(trained)
    tokens = torch.randint(4, K + 4, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(tokens), b(tokens))
    again = load_unit_lm(_train(tmp_path / "again"))
    for (name, p), q in zip(a.state_dict().items(), again.state_dict().values()):
        assert torch.equal(p, q), name


def test_inputs_are_checked_and_schedule_is_fairseqs():
    from bench.lms.model import UnitDictionary

    d = UnitDictionary.from_units(K)
    with pytest.raises(BenchError, match="deduplicated"):
        encode_sequences([[1, 2, 2, 3]], d, 64)
    with pytest.raises(BenchError, match="unit 9 is not in the unit dictionary"):
        encode_sequences([[1, 9]], d, 64)
    assert encode_sequences([[0, 1, 2]], d, 2) == [[4, 5], [6, d.eos]]
    assert inverse_sqrt_lr(0, 5e-4, 4000) == 1e-7
    assert math.isclose(inverse_sqrt_lr(4000, 5e-4, 4000), 5e-4)
    assert math.isclose(inverse_sqrt_lr(16000, 5e-4, 4000), 2.5e-4)
    with pytest.raises(BenchError, match="at least 2"):
        pretrain_unit_lm([[1, 2]], _cfg(), "unused", max_epochs=1)
    with pytest.raises(BenchError, match="exceeds batch_tokens=4"):
        pretrain_unit_lm([[1, 2, 3, 4, 5], [1, 2]], _cfg(), "unused", max_epochs=1, batch_tokens=4)
