"""One prompt engine for both unit LMs (issue #13): every behaviour the GSLM and pGSLM engines once disagreed on is
decided once, to the published SpeechPrompt code, and holds for both LMs; incremental decoding with a key/value
cache gives the outputs of full recomputation; a new LM, adapter or method plugs in from outside the engine."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from bench.core.errors import BenchError
from bench.prompt.adapters import Adapter, AdapterSpec, register_adapter
from bench.prompt.modules import PromptedLM, PromptSet
from bench.prompt.trainer import IGNORE, TrainConfig, greedy_decode, label_loss, make_row, train_prompts
from bench.prompt.unit_lm import FrozenUnitLM, GSLMUnitLM, PGSLMUnitLM, SourceUnits, StreamVocabulary, UnitLM
from bench.prompt.verbalizers import ClassLabels, SlotLabels, build_verbalizer, label_space_for

K = 12
LMS = ("gslm", "pgslm")


def tiny_lm(kind: str, seed: int = 0):
    from bench.lms.model import UnitDictionary, UnitLanguageModel, UnitLMConfig
    from bench.lms.multistream import MultiStreamLMConfig, MultiStreamUnitLM

    torch.manual_seed(seed)
    if kind == "gslm":
        module = UnitLanguageModel(UnitLMConfig.tiny(K + 4), UnitDictionary.from_units(K))
    else:
        module = MultiStreamUnitLM(MultiStreamLMConfig.tiny(K, f0_bins=8, num_heads=4))
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return GSLMUnitLM(module) if kind == "gslm" else PGSLMUnitLM(module)


def source(units, rng=None) -> SourceUnits:
    rng = rng or np.random.default_rng(len(units))
    u = np.asarray(units, dtype=np.int64)
    return SourceUnits(u, {"duration": rng.integers(1, 5, len(u)), "f0": rng.integers(0, 8, len(u))})


def sources(n=12, seed=0, lengths=(3, 9)):
    rng = np.random.default_rng(seed)
    return [source(rng.integers(0, K, int(rng.integers(*lengths))), rng) for _ in range(n)]


def prompted(lm, verbalizer, deep=True, length=3, separator_init="bos_row", seed=1):
    torch.manual_seed(seed)
    spec = AdapterSpec(length, deep, separator_init)
    return PromptedLM(lm, PromptSet.build(lm, spec, verbalizer.output_size if verbalizer.learnable else None))


# ---- the divergences of issue #13, each decided once --------------------------------------------------------
@pytest.mark.parametrize("kind", LMS)
def test_random_verbalizer_is_the_same_draw_for_both_lms(kind):
    """A seeded draw of distinct seen units (v2 verbalizer.py:55-58 draws per label, unseeded, and may collide);
    the draw depends on the seed and the units seen, not on the LM: both LMs get the same units."""
    lm, ref = tiny_lm(kind), tiny_lm("gslm")
    srcs, space = sources(), ClassLabels(["a", "b", "c", "d"])
    v = build_verbalizer("random", space, lm.vocab, [s.units for s in srcs], [], seed=3)
    r = build_verbalizer("random", space, ref.vocab, [s.units for s in srcs], [], seed=3)
    assert v.info["units"] == r.info["units"] and len(set(v.info["units"])) == 4
    assert v.outputs == [lm.vocab.unit_to_index(u) for u in v.info["units"]]


@pytest.mark.parametrize("kind", LMS)
def test_freq_verbalizer_ties_keep_first_seen_order(kind):
    """v1/v2 rank with a stable sort over insertion-ordered counts: among equally frequent units and labels the
    first seen wins (v2 GSLM/prompt/verbalizer.py:10-19,38-39)."""
    lm = tiny_lm(kind)
    srcs = [source([7, 3, 7, 3, 5])]  # 7 and 3 tie (2 each), 7 first; then 5
    space = ClassLabels(["x", "y", "z"])
    v = build_verbalizer("freq", space, lm.vocab, [s.units for s in srcs], ["y", "x", "y", "x", "z"], seed=0)
    assert v.info["units"] == [3, 7, 5]  # y (first of the tied labels) -> 7 (first of the tied units)


@pytest.mark.parametrize("kind", LMS)
@pytest.mark.parametrize("order", ["frequency", "label"])
def test_learnable_verbalizer_layout_is_specials_then_classes(kind, order):
    """v2's C+4 outputs: slots 0..3 are <s> <pad> </s> <unk> whatever the LM's special ids (the MS-TLM's come after
    its units), class of rank j at slot 4+j fed back as unit j; ``frequency`` ranks by training counts (v2)."""
    lm = tiny_lm(kind)
    space = ClassLabels(["a", "b", "c"])
    v = build_verbalizer("learnable", space, lm.vocab, [np.arange(K)], ["c", "c", "b"], seed=0, class_order=order)
    rank = {"frequency": {"c": 0, "b": 1, "a": 2}, "label": {"a": 0, "b": 1, "c": 2}}[order]
    assert v.outputs == [4 + rank[c] for c in "abc"] and v.output_size == 7
    assert v.feed == [lm.vocab.unit_to_index(rank[c]) for c in "abc"]
    assert (v.bos_out, v.eos_out) == (0, 2)
    assert [v.output_to_token(j) for j in range(4)] == [lm.vocab.bos, lm.vocab.pad, lm.vocab.eos, lm.vocab.unk]
    row, _ = make_row(source([1, 2]), "b", v, 64, lm)
    assert row.targets == [IGNORE, IGNORE, 0, 4 + rank["b"], 2]


@pytest.mark.parametrize("kind", LMS)
def test_ic_label_space_keeps_one_symbol_per_slot_value(kind):
    """v1 gen_labelspace.py ``no_overlap``: ``none`` of the object slot and ``none`` of the location slot are two
    symbols (24 for FSC), for either LM."""
    lm = tiny_lm(kind)
    slots = {"action": ["go", "stop"], "object": ["lamp", "none"], "location": ["home", "none"]}
    from bench.tasks.registry import TaskSpec

    task = TaskSpec(name="ic", version=1, family="IC", kind="classification", origin="synthetic", description="x",
                    slots=slots, metrics=["accuracy"], data={"source": "manifest", "path": "x"})
    space = label_space_for(task, [])
    assert isinstance(space, SlotLabels) and len(space) == 6 == task.num_outputs
    v = build_verbalizer("learnable", space, lm.vocab, [np.arange(K)], ["go none none"], seed=0)
    assert len(set(v.target_outputs("go none none"))) == 3
    assert v.decode(v.target_outputs("stop lamp none")) == ("stop lamp none", True)


@pytest.mark.parametrize("kind", LMS)
def test_separator_init_published_and_bos_row(kind):
    """``normal_scaled``: a fresh N(0, 1) row (v2 model.py:128), scaled by √d with the tokens; ``bos_row``: the
    LM's own <s> embedding row."""
    lm = tiny_lm(kind)
    bos = lm.embed_tokens(torch.tensor([lm.vocab.bos]))[0]
    torch.manual_seed(0)
    fresh = PromptSet.build(lm, AdapterSpec(2, True, "normal_scaled"), None).separator.embed
    assert not torch.allclose(fresh, bos) and 0.7 < float(fresh.detach().std()) < 1.3
    row = PromptSet.build(lm, AdapterSpec(2, True, "bos_row"), None).separator.embed
    torch.testing.assert_close(row, bos)
    with pytest.raises(BenchError, match="separator_init"):
        PromptSet.build(lm, AdapterSpec(2, True, "zeros"), None)


@pytest.mark.parametrize("kind", LMS)
def test_untrained_prompts_never_win_and_the_lm_stays_frozen(kind):
    """fairseq writes checkpoint_best after an epoch: with lr 0 nothing improves and epoch 1 is still selected;
    a trainable LM weight is refused before training."""
    lm = tiny_lm(kind)
    v = build_verbalizer("random", ClassLabels(["a", "b"]), lm.vocab, [np.arange(K)], [], seed=0)
    model = prompted(lm, v)
    rows = [make_row(s, "ab"[i % 2], v, 64, lm)[0] for i, s in enumerate(sources(6))]
    hist = train_prompts(model, rows, rows, TrainConfig(lr=0.0, max_epochs=3, patience=1, batch_size=4),
                         log=lambda s: None)
    # lr 0 leaves the prompts bitwise unchanged; the per-epoch history keeps losses to 5 decimals
    assert hist["best_epoch"] == 1 and hist["best_valid_loss"] == hist["valid_loss_untrained"]
    assert hist["valid_loss"][0] == round(hist["valid_loss_untrained"], 5)
    next(lm.module.parameters()).requires_grad_(True)
    with pytest.raises(BenchError, match="frozen"):
        train_prompts(model, rows, rows, TrainConfig(max_epochs=1), log=lambda s: None)


@pytest.mark.parametrize("kind", LMS)
def test_loss_normalization_divides_by_all_target_tokens_or_label_tokens(kind):
    """fairseq's criterion returns sample_size = ntokens (v2 loss.py:62-64): every target token of the batch."""
    lm = tiny_lm(kind)
    v = build_verbalizer("random", ClassLabels(["a", "b"]), lm.vocab, [np.arange(K)], [], seed=0)
    model = prompted(lm, v).eval()
    rows = [make_row(s, "a", v, 64, lm)[0] for s in sources(3)]
    loss, n_all = label_loss(model, rows, normalization="all_tokens")
    _, n_label = label_loss(model, rows, normalization="label_tokens")
    assert n_all == sum(len(r.inputs) for r in rows) and n_label == 3 * 3  # <s>, label, </s>
    with pytest.raises(BenchError, match="loss_normalization"):
        label_loss(model, rows, normalization="mean")


def test_both_methods_do_classification_and_generation():
    from bench.methods import method_class

    for name in ("prompt-gslm", "prompt-gslm-lv", "prompt-pgslm", "prompt-pgslm-lv"):
        assert set(method_class(name).kinds) == {"classification", "generation"}


# ---- incremental decoding ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", LMS)
@pytest.mark.parametrize("method, deep", [("random", True), ("learnable", True), ("random", False)])
def test_kv_cache_decoding_equals_full_recomputation(kind, method, deep):
    """Generation with the key/value cache gives exactly the outputs of SpeechPrompt's full recomputation (ragged
    prefixes, rows finishing at different steps), with first-step scores equal to float precision."""
    lm = tiny_lm(kind)
    space = ClassLabels([f"c{i}" for i in range(6)])
    v = build_verbalizer(method, space, lm.vocab, [np.arange(K)], [], seed=0)
    model = prompted(lm, v, deep=deep, separator_init="normal_scaled").eval()
    srcs = sources(7, seed=5, lengths=(1, 15))
    fast = greedy_decode(model, srcs, v, max_len=40, max_tokens=256, batch_size=4, cache=True)
    slow = greedy_decode(model, srcs, v, max_len=40, max_tokens=256, batch_size=4, cache=False)
    assert [d.outputs for d in fast] == [d.outputs for d in slow]
    assert [d.finished for d in fast] == [d.finished for d in slow]
    if method == "random":
        assert max(len(d.outputs) for d in fast) > 5  # really generated a sequence
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a.first_logprobs, b.first_logprobs, atol=1e-5)


@pytest.mark.parametrize("kind", LMS)
def test_kv_cache_step_logits_match_the_full_forward(kind):
    lm = tiny_lm(kind)
    v = build_verbalizer("random", ClassLabels(["a", "b"]), lm.vocab, [np.arange(K)], [], seed=0)
    model = prompted(lm, v).eval()
    rows = [make_row(s, "a", v, 64, lm)[0] for s in sources(3, lengths=(2, 8))]
    prefixes = [type(r)(r.inputs[:-1], [], r.sep, {k: x[:-1] for k, x in r.streams.items()}) for r in rows]
    with torch.no_grad():
        full = model(lm.collate(rows, "cpu"))
        _, cache = model.prefill(lm.collate(prefixes, "cpu"))
        for p, r in zip(prefixes, rows):
            lm.append(p, r.inputs[-1])
        step = model.step(prefixes, cache, "cpu")
    last = full[torch.arange(3), torch.tensor([len(r.inputs) - 1 for r in rows])]
    torch.testing.assert_close(step, last, atol=1e-5, rtol=1e-5)


# ---- extension points: a toy LM (protocol), a toy adapter and a toy method, all defined here -------------------
class ToyLM(FrozenUnitLM):
    """A 1-layer LM with its specials after the units and no positions: everything the engine needs is here."""

    name = "toy LM"

    def __init__(self):
        from torch import nn

        from bench.lms.model import DecoderLayer

        torch.manual_seed(0)
        self.vocab = StreamVocabulary(K)
        self.num_layers, self.embed_dim, self.max_positions = 1, 16, 128
        self.module = nn.Module()
        self.module.embed = nn.Embedding(len(self.vocab), 16)
        self.module.layers = nn.ModuleList([DecoderLayer(16, 2, 32)])
        self.module.eval().requires_grad_(False)
        self.layers = self.module.layers

    def source_row(self, src):
        from bench.prompt.unit_lm import Row

        return Row([self.vocab.bos, *[int(u) for u in src.units]], [])

    def append(self, row, token):
        row.inputs.append(int(token))

    def collate(self, rows, device):
        from bench.prompt.unit_lm import _right_pad, Batch

        tokens, mask, sep, lengths = _right_pad(rows, self.vocab.pad)
        return Batch(tokens, mask, sep, lengths)

    def embed_tokens(self, tokens):
        return self.module.embed(tokens)

    def embed_inputs(self, batch, emb):
        return emb

    def embed_step(self, rows, emb, device):
        return emb

    def logits(self, hidden):
        return hidden @ self.module.embed.weight.T

    def describe(self):
        return {"name": self.name}


class OutputBias(Adapter):
    """A toy parameter-efficient method: one trainable bias on the LM's logits (and nothing else)."""

    name = "output-bias"

    def __init__(self, vocab_size):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(vocab_size))

    @classmethod
    def build(cls, lm, spec, verbalizer_outputs):
        return cls(len(lm.vocab))

    @classmethod
    def formula(cls, num_layers, embed_dim, vocab_size, spec, verbalizer_outputs):
        return {"bias": vocab_size}

    def outputs(self, logits):
        return logits + self.bias

    def breakdown(self):
        return {"bias": self.bias.numel()}


def test_a_new_lm_and_a_new_adapter_plug_in_from_one_file(monkeypatch):
    """ToyLM implements UnitLM; OutputBias is an Adapter registered by name; a toy method subclasses the engine's
    PromptTuningMethod and is registered in METHODS. The engine trains the bias only and decodes."""
    from bench.data.manifest import Example, Manifest
    from bench.methods import METHODS, method_class
    from bench.methods.base import RunContext
    from bench.prompt.engine import LoadedLM, PromptTuningConfig, PromptTuningMethod
    from bench.tasks.registry import TaskSpec

    assert isinstance(ToyLM(), UnitLM)
    register_adapter("output-bias", OutputBias)

    class ToyMethod(PromptTuningMethod):
        name = "toy-prompt"

        @dataclass
        class Config(PromptTuningConfig):
            adapter: str = "output-bias"

        def load_lm(self, ctx):
            return LoadedLM(ToyLM(), {"lm": "toy"})

        def sources(self, task, manifest, splits, ctx, lm):
            return {s: [source([int(e.id[-1]), 3, 4]) for e in exs] for s, exs in splits.items()}, {}

        def lm_shape(self, ctx):
            return 1, 16, K + 4, 0

    import sys

    monkeypatch.setitem(METHODS, "toy-prompt", f"{__name__}:_ToyMethod")
    monkeypatch.setattr(sys.modules[__name__], "_ToyMethod", ToyMethod, raising=False)
    task = TaskSpec(name="toy", version=1, family="KS", kind="classification", origin="synthetic", description="x",
                    labels=["a", "b"], metrics=["accuracy"], data={"source": "manifest", "path": "x"})
    exs = [Example(id=f"{s}{i}", path="x.wav", label="ab"[i % 2], split=s, speaker="s")
           for s in ("train", "valid", "test") for i in range(4)]
    method = method_class("toy-prompt")({"max_epochs": 2, "batch_size": 4})
    out = method.run(task, Manifest(exs, root="."), RunContext(seed=0, log=lambda s: None))
    assert out.params.trainable == K + 4 and out.params.breakdown == {"bias": K + 4}
    assert len(out.predictions.hypotheses) == 4 and out.info["epochs_run"] == 2


def test_the_released_whole_sequence_limit_cuts_long_sources():
    """max_total_len = fairseq's --max-len-b on an LM prompt (source + <s> + generated): with 150, a source of
    149 units generates nothing (scored wrong, as SpeechPrompt v2's released sample.py does); a short one is kept;
    one cut at the limit ends with fairseq's forced </s> (finished). tests/test_released_behaviour.py checks it
    against fairseq's step loop."""
    import numpy as np

    from bench.prompt.engine import cap_total_length
    from bench.prompt.trainer import Decoded

    d = Decoded(outputs=[7, 8, 9], first_logprobs=np.zeros(3), finished=True)
    assert cap_total_length(d, 10, 150) is d
    assert cap_total_length(d, 146, 150) is d  # 146 + <s> + 3 outputs at steps 147-149, </s> at step 150
    cut = cap_total_length(d, 147, 150)
    assert cut.outputs == [7, 8] and cut.finished
    none = cap_total_length(d, 149, 150)
    assert none.outputs == [] and none.finished
