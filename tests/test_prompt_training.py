"""Prompt tuning trains prompts only: the frozen LM is bit-identical after training while prompts moved; the loss
covers <s>, the label and </s> only; batched greedy decoding equals one-at-a-time decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.core.errors import BenchError
from bench.prompt.modules import PromptedLM, PromptSet
from bench.prompt.trainer import (IGNORE, TrainConfig, greedy_decode, make_row, to_predictions, train_prompts)
from bench.prompt.verbalizers import ClassLabels, build_verbalizer


def _lm(k=12, seed=0):
    from bench.lms.model import UnitDictionary, UnitLanguageModel, UnitLMConfig

    torch.manual_seed(seed)
    lm = UnitLanguageModel(UnitLMConfig.tiny(k + 4), UnitDictionary.from_units(k)).eval()
    for p in lm.parameters():
        p.requires_grad_(False)
    return lm


def _setup(method="random", deep=True):
    lm = _lm()
    d = lm.dictionary
    space = ClassLabels(["a", "b", "c"])
    v = build_verbalizer(method, space, d, [np.arange(12)], ["a", "b", "c"], seed=0)
    torch.manual_seed(1)
    ps = PromptSet(lm.cfg.num_layers, lm.cfg.embed_dim, 3, deep, lm.embed_tokens.weight[d.bos],
                   len(d), v.output_size if v.learnable else None)
    return lm, v, PromptedLM(lm, ps, d.bos)


def test_row_layout_and_label_only_targets():
    lm, v, _ = _setup()
    d = lm.dictionary
    src = [d.unit_to_index(u) for u in (3, 1, 4, 1, 5)]
    row, cut = make_row(src, "b", v, max_tokens=64)
    assert not cut
    assert row.inputs == [d.eos, *src, d.bos, *v.input_tokens("b")]
    assert row.targets == [IGNORE] * 5 + [d.bos, *v.target_outputs("b"), d.eos]  # <s>, label, </s>
    short, cut = make_row(list(range(4, 40)), "b", v, max_tokens=10)
    assert cut and len(short.inputs) == 10
    with pytest.raises(BenchError, match="does not fit"):
        make_row(src, "b", v, max_tokens=3)


@pytest.mark.parametrize("method, deep", [("random", True), ("learnable", True), ("random", False)])
def test_training_moves_prompts_and_leaves_the_lm_bit_identical(method, deep):
    lm, v, model = _setup(method, deep)
    before = {k: t.clone() for k, t in lm.state_dict().items()}
    prompts_before = {k: t.clone() for k, t in model.prompts.state_dict().items()}
    rng = np.random.default_rng(0)
    rows = [make_row(list(rng.integers(4, 16, size=6)), lbl, v, 64)[0] for lbl in "abcabc"]
    hist = train_prompts(model, rows, rows, TrainConfig(max_epochs=2, batch_size=4, patience=5), lm.dictionary.pad,
                         log=lambda s: None)
    assert hist["epochs_run"] == 2 and len(hist["valid_loss"]) == 2
    for k, t in lm.state_dict().items():
        assert torch.equal(t, before[k]), k  # bit-identical frozen LM
    changed = {k for k, t in model.prompts.state_dict().items() if not torch.equal(t, prompts_before[k])}
    expected = {"separator.embed"}
    expected |= {"deep_prompt.keys.0.weight", "deep_prompt.values.1.weight"} if deep else {"input_prompt.embed.weight"}
    if method == "learnable":
        expected.add("verbalizer.linear.weight")
    assert expected <= changed


def test_with_deep_prompts_the_input_prompt_is_inert():
    """A property of SpeechPrompt's deep prompting (§2.1 item 5): every layer's K/V at the prompt positions are
    replaced by that layer's prompts, and token positions see prompt positions only through K/V, so the input
    prompt cannot reach the logits: it is counted in 25,600·L + 1,024 but receives no gradient."""
    lm, v, model = _setup("random", deep=True)
    model.eval()
    tokens = torch.tensor([[2, 5, 9, 7, 0, 4]])
    ref = model(tokens)
    with torch.no_grad():
        model.prompts.input_prompt.embed.weight.normal_()
    assert torch.allclose(model(tokens), ref, atol=1e-5)
    _, _, shallow = _setup("random", deep=False)
    shallow.eval()
    ref = shallow(tokens)
    with torch.no_grad():
        shallow.prompts.input_prompt.embed.weight.normal_()
    assert not torch.allclose(shallow(tokens), ref, atol=1e-3)


def test_trainable_lm_weight_is_refused():
    lm, v, model = _setup()
    next(lm.parameters()).requires_grad_(True)
    rows = [make_row([5, 6], "a", v, 64)[0]]
    with pytest.raises(BenchError, match="frozen"):
        train_prompts(model, rows, rows, TrainConfig(max_epochs=1), lm.dictionary.pad)


def test_prompt_tuning_fits_a_toy_mapping():
    """Prompts alone, on a randomly initialised frozen LM, lower the label loss of a toy mapping substantially."""
    lm, v, model = _setup("random")
    d = lm.dictionary
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        lbl = "abc"[i % 3]
        key = {"a": 0, "b": 1, "c": 2}[lbl]
        src = [d.unit_to_index(int(u)) for u in rng.integers(3, 12, size=5)] + [d.unit_to_index(key)]
        rows.append(make_row(src, lbl, v, 64)[0])
    hist = train_prompts(model, rows, rows, TrainConfig(max_epochs=25, batch_size=8, lr=2e-2, patience=25),
                         d.pad, log=lambda s: None)
    assert hist["best_valid_loss"] < 0.8 * hist["valid_loss"][0]


@pytest.mark.parametrize("method", ["random", "learnable"])
def test_batched_greedy_decoding_equals_single(method):
    lm, v, model = _setup(method)
    rng = np.random.default_rng(3)
    sources = [list(rng.integers(4, 16, size=n)) for n in (3, 9, 5, 1, 7)]
    batched = greedy_decode(model, sources, v, max_len=4, max_tokens=64, batch_size=5)
    single = [greedy_decode(model, [s], v, max_len=4, max_tokens=64, batch_size=1)[0] for s in sources]
    for a, b in zip(batched, single):
        assert a.outputs == b.outputs and a.finished == b.finished
        np.testing.assert_allclose(a.first_logprobs, b.first_logprobs, atol=1e-5)
    hyps, scores, unmapped = to_predictions(batched, v, with_scores=True)
    assert len(hyps) == 5 and set(scores[0]) == {"a", "b", "c"}
    assert unmapped == sum(h == "" for h in hyps)


def test_row_split_reads_back_the_rows_it_packs_in_fewer_bytes():
    """A split's training rows are kept packed (issue #23: 10^5 utterances): every reader sees the same lists."""
    import sys

    from bench.prompt.trainer import collate_targets, row_batches
    from bench.prompt.unit_lm import Row, RowSplit

    rows = [Row([2, *np.arange(4, 60).tolist(), 0, 70], [IGNORE] * 56 + [0, 71, 2], sep=57,
                streams={"duration": [0, *[1] * 57, 0], "f0": [0.0, *np.linspace(-1, 1, 57).tolist(), 0.0]}),
            Row([2, 5, 0, 71], [IGNORE, 0, 72, 2], sep=2, streams={"duration": [0, 3, 0, 0], "f0": [0.0, 0.25, 0.0,
                                                                                                      0.0]})]
    split = RowSplit()
    for r in rows:
        split.append(r)
    assert len(split) == 2 and split.lengths() == [59, 4]
    for r, back in zip(rows, split):
        assert (back.inputs, back.targets, back.sep, back.streams) == (r.inputs, r.targets, r.sep, r.streams)
        assert all(type(v) is int for v in back.inputs + back.targets + back.streams["duration"])
        assert all(type(v) is float for v in back.streams["f0"])
    assert split[-1].inputs == rows[-1].inputs
    assert torch.equal(collate_targets(list(split), "cpu"), collate_targets(rows, "cpu"))
    cfg = TrainConfig(batch_size=1)
    assert row_batches(split, cfg) == row_batches(rows, cfg)
    lists = sum(sys.getsizeof(x) for r in rows for x in (r.inputs, r.targets, *r.streams.values()))
    assert split.nbytes() < lists / 2  # the lists' pointers alone, not counting the int and float objects
    big = RowSplit()
    big.append(Row([1, 40_000], [IGNORE, 2**40]))  # beyond int16: kept exactly
    assert (big[0].inputs, big[0].targets) == ([1, 40_000], [IGNORE, 2**40])
    with pytest.raises(IndexError):
        big[1]


def test_source_split_reads_back_each_utterances_units_and_streams():
    from bench.prompt.unit_lm import SourceSplit, SourceUnits

    sources = [SourceUnits(np.array([3, 1, 4], dtype=np.int64), {"duration": np.array([1, 2, 1]),
                                                                 "f0": np.array([0.5, -0.25, 0.0])}),
               SourceUnits(np.array([], dtype=np.int64), {"duration": np.array([], dtype=np.int64),
                                                          "f0": np.array([])}),
               SourceUnits(np.array([9], dtype=np.int64), {"duration": np.array([7]), "f0": np.array([1.5])})]
    split = SourceSplit.from_sources(sources, np.int16)
    assert len(split) == 3 and split.lengths().tolist() == [3, 0, 1] and split.units.dtype == np.int16
    for a, b in zip(sources, split):
        assert a.units.tolist() == b.units.tolist()
        assert {k: v.tolist() for k, v in a.streams.items()} == {k: v.tolist() for k, v in b.streams.items()}
    assert split[-1].units.tolist() == [9] and split[0].clip(2).units.tolist() == [3, 1]
    with pytest.raises(IndexError):
        split[3]
