"""SUPERB baselines: parameter counts follow SUPERB's heads; both heads learn tiny synthetic problems from fbank
features through the feature cache; a rerun reproduces the numbers without extracting anything."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from bench.data.audio import write_audio
from bench.core.errors import BenchError
from bench.data.manifest import Example, Manifest
from bench.methods.base import RunContext
from bench.tasks.registry import DataSpec, TaskSpec

SR = 16_000


# ---- parameter counts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim,layers,outputs,want", [
    (768, 13, 12, 199_961),  # HuBERT Base, KS (SUPERB / SpeechPrompt "0.2M")
    (240, 1, 12, 64_780),  # fbank, KS
    (240, 1, 24, 67_864),  # fbank, IC: one Linear(256, 6+14+4)
    (256, 1, 12, 68_876),  # modified CPC, KS ("0.07M")
    (768, 13, 1251, 518_384),  # HuBERT Base, SID
])
def test_linear_head_parameters_equal_superb_formula(dim, layers, outputs, want):
    from bench.methods.linear import head_parameter_count

    pc = head_parameter_count(dim, layers, outputs)
    assert pc.trainable == want == (layers if layers > 1 else 0) + 256 * dim + 256 + 257 * outputs
    assert pc.breakdown["featurizer"] == (13 if layers == 13 else 0)


def test_lstm_superb_size_is_about_43m_and_small_is_cpu_sized():
    from bench.methods.lstm_ctc import ASSUMED_CHARACTERS, ctc_parameter_count

    vocab = 3 + ASSUMED_CHARACTERS  # blank, unk, delimiter, a-z, '
    hubert = ctc_parameter_count(768, 13, vocab, 1024, 1024).trainable
    fbank = ctc_parameter_count(240, 1, vocab, 1024, 1024).trainable
    assert round(hubert / 1e6, 1) == 42.8 and round(fbank / 1e6, 1) == 42.3
    # by hand: proj D·1024+1024; BiLSTM 1: 2·4·(1024·1024 + 1024·1024 + 2·1024); BiLSTM 2: input 2048
    lstm = 2 * 4 * (1024 * 1024 * 2 + 2048) + 2 * 4 * (2048 * 1024 + 1024 * 1024 + 2048)
    assert hubert == 13 + 768 * 1024 + 1024 + lstm + 2048 * vocab + vocab
    assert ctc_parameter_count(240, 1, vocab, 256, 256).trainable < 3_000_000


def test_methods_take_their_defaults_from_the_baseline_yaml():
    from bench.methods.linear import LinearBaseline
    from bench.methods.lstm_ctc import LSTMCTCBaseline
    from bench.methods.training import baseline_defaults

    assert LinearBaseline().resolved_config() == {"method": "linear", **baseline_defaults("linear.yaml")}
    lstm = LSTMCTCBaseline({"size": "superb"})
    assert lstm.architecture() == baseline_defaults("lstm.yaml", "sizes")["superb"]
    assert lstm.resolved_config()["architecture"]["hidden_size"] == 1024
    assert LSTMCTCBaseline().config.size == "small"
    from bench.core.errors import BenchError

    with pytest.raises(BenchError, match="size 'huge'"):
        LSTMCTCBaseline({"size": "huge"})


def test_count_parameters_from_context_for_a_known_upstream(bench_home):
    from bench.methods.linear import LinearBaseline

    task = _task("ks", labels=[str(i) for i in range(12)])
    pc = LinearBaseline().count_parameters(task, RunContext(seed=0, upstream="hubert"))
    assert pc.trainable == 199_961


# ---- the featurizer ---------------------------------------------------------------------------------------
def test_featurizer_is_softmax_weighted_sum_and_identity_for_one_layer():
    import torch

    from bench.features.featurizer import build_featurizer

    torch.manual_seed(0)
    hs = [torch.randn(2, 5, 4) for _ in range(3)]
    lens = [torch.tensor([5, 3])] * 3
    f = build_featurizer(3, 4)
    assert [p.shape for p in f.parameters()] == [torch.Size([3])]
    out, out_lens = f(hs, lens)
    assert torch.allclose(out, sum(hs) / 3, atol=1e-6)  # zero-initialised weights: uniform average
    with torch.no_grad():
        f.weights.copy_(torch.tensor([0.0, 1.0, 2.0]))
    w = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
    assert torch.allclose(f(hs, lens)[0], sum(wi * h for wi, h in zip(w, hs)), atol=1e-6)
    one = build_featurizer(1, 4)
    assert list(one.parameters()) == [] and one(hs[:1], lens[:1])[0] is hs[0]


def test_pooling_first_gives_the_same_logits_as_the_frame_level_head():
    """The linear probe is linear up to the pooling, so averaging frames first is exact (linear.py)."""
    import torch

    from bench.methods.linear import build_head

    torch.manual_seed(0)
    model = build_head(3, 8, 5, projector_dim=16)
    with torch.no_grad():
        model.featurizer.weights.copy_(torch.tensor([0.3, -1.0, 0.5]))
    lens = torch.tensor([7, 4])
    hs = [torch.randn(2, 7, 8) for _ in range(3)]
    full = model(hs, [lens] * 3)
    means = [torch.stack([h[i, : lens[i]].mean(0) for i in range(2)])[:, None] for h in hs]
    pooled = model(means, [torch.ones(2, dtype=torch.long)] * 3)
    assert torch.allclose(full, pooled, atol=1e-5)


# ---- tiny synthetic problems -------------------------------------------------------------------------------
def _task(name, kind="classification", **kw) -> TaskSpec:
    metrics = kw.pop("metrics", ["accuracy"] if kind == "classification" else ["wer", "cer"])
    return TaskSpec(name=name, version=1, family=kw.pop("family", "KS"), kind=kind, origin="synthetic",
                    description="test task", metrics=metrics, data=DataSpec(source="manifest", path="m.jsonl"), **kw)


def _tone(rng, freq, seconds, noise=0.02):
    t = np.arange(int(seconds * SR)) / SR
    f = freq * rng.uniform(0.93, 1.07)
    return 0.3 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) + noise * rng.standard_normal(len(t))


def _sound(rng, kind: str) -> np.ndarray:
    seconds = rng.uniform(0.35, 0.6)
    if kind == "low":
        return _tone(rng, 300, seconds)
    if kind == "high":
        return _tone(rng, 1500, seconds)
    return 0.2 * rng.standard_normal(int(seconds * SR))  # "noise"


def _classification_manifest(root, labels_fn, combos, per_split=(6, 3, 3), seed=0) -> Manifest:
    rng = np.random.default_rng(seed)
    exs = []
    for combo in combos:
        for split, n in zip(("train", "valid", "test"), per_split):
            for i in range(n):
                uid = f"{'_'.join(combo)}-{split}-{i}"
                write_audio(root / f"{uid}.wav", labels_fn(rng, combo))
                exs.append(Example(id=uid, path=f"{uid}.wav", label=" ".join(combo), split=split, speaker=uid))
    return Manifest(exs, root=root)


def _ctx(tmp_path, seed=0, upstream="fbank_no_cmvn", **kw):
    return RunContext(seed=seed, upstream=upstream, cache_dir=tmp_path / "cache", workdir=tmp_path / "work",
                      log=lambda m: None, **kw)


def test_linear_learns_three_sound_classes_through_the_feature_cache(tmp_path, bench_home):
    from bench.features.store import FeatureStore
    from bench.methods.linear import LinearBaseline
    from bench.runner.plan import score

    labels = ["low", "high", "noise"]
    manifest = _classification_manifest(tmp_path / "audio", lambda rng, c: _sound(rng, c[0]),
                                        [(c,) for c in labels])
    task = _task("tones", labels=labels, metrics=["accuracy", "macro_f1"])
    method = LinearBaseline({"max_epochs": 60, "patience": 60, "lr": 3e-3})
    out = method.run(task, manifest, _ctx(tmp_path))
    scores = score(task, out)
    assert scores["accuracy"] >= 0.8 > 1 / 3  # chance is 1/3
    assert out.info["features"] == {"extracted": 36, "cached": 0}
    assert out.params.trainable == 64_780 - 257 * 12 + 257 * 3 and out.params.frozen == 0  # 240 dims, 1 layer
    assert all(set(s) == set(labels) and math.isclose(sum(math.exp(v) for v in s.values()), 1, rel_tol=1e-5)
               for s in out.predictions.scores)  # per-class log-probabilities
    assert not (tmp_path / "work" / "linear-best.pt").exists()  # the best weights stay in memory (never read back)

    # the cache holds everything now: a second run extracts nothing and reproduces the predictions exactly
    again = method.run(task, manifest, _ctx(tmp_path))
    assert again.info["features"] == {"extracted": 0, "cached": 36}
    assert again.predictions.hypotheses == out.predictions.hypotheses
    assert again.predictions.scores == out.predictions.scores
    store = FeatureStore("fbank_no_cmvn", None, tmp_path / "cache")
    store.get(manifest, manifest.split("test"))
    assert store.stats["extracted"] == 0


def test_mean_pooled_cmvn_fbank_is_nearly_constant_so_the_linear_probe_sees_little(tmp_path, bench_home):
    """Why SUPERB's FBANK row is near chance on KS/IC/SID: per-utterance CMVN makes every utterance's frame mean
    (almost) zero, and the linear probe only sees that mean; hence the tests above use fbank_no_cmvn. (Not
    exactly zero: s3prl pads fbank's frame count up to (N-1)//160+1, adding one or two frames after CMVN: copies of
    the last frame, since bench extracts s3prl upstreams one utterance at a time; zeros in a batch.)"""
    from bench.features.store import FeatureStore

    manifest = _classification_manifest(tmp_path / "audio", lambda rng, c: _sound(rng, c[0]), [("low",), ("high",)],
                                        per_split=(2, 0, 0))
    exs = manifest.split("train")

    def pooled(upstream):
        feats = FeatureStore(upstream, None, tmp_path / "cache").get(manifest, exs)
        return np.stack([f.astype(np.float32).mean(axis=1)[0] for f in feats])

    cmvn, raw = pooled("fbank"), pooled("fbank_no_cmvn")
    assert np.abs(cmvn).max() < 0.25  # features have unit variance per dimension (raw: > 2 below)
    low, high = raw[[e.label == "low" for e in exs]], raw[[e.label == "high" for e in exs]]
    assert np.abs(low.mean(0) - high.mean(0)).max() > 2.0


def test_linear_multi_slot_and_eer_from_scores(tmp_path, bench_home):
    from bench.methods.linear import LinearBaseline
    from bench.runner.plan import score

    def make(rng, combo):
        pitch, texture = combo
        wav = _sound(rng, pitch)
        return wav + (0.25 * rng.standard_normal(len(wav)) if texture == "noisy" else 0)

    combos = [(p, t) for p in ("low", "high") for t in ("clean", "noisy")]
    manifest = _classification_manifest(tmp_path / "audio", make, combos, per_split=(5, 2, 3))
    task = _task("ic-like", family="IC", slots={"pitch": ["low", "high"], "texture": ["clean", "noisy"]})
    out = LinearBaseline({"max_epochs": 60, "patience": 60, "lr": 3e-3}).run(task, manifest, _ctx(tmp_path))
    assert out.params.breakdown["classifier"] == 257 * 4  # one Linear(256, 2+2)
    assert score(task, out)["accuracy"] > 0.5  # chance: 1/4 (both slots right)
    assert set(out.predictions.scores[0]) == {"pitch=low", "pitch=high", "texture=clean", "texture=noisy"}

    # a binary task on the same audio: EER from the positive class's scores
    binary = Manifest([dataclasses.replace(e, label=e.label.split()[0], extra={}) for e in manifest],
                      root=manifest.root)
    btask = _task("pitch", family="GID", labels=["low", "high"], positive_label="high",
                  metrics=["eer", "binary_f1"])
    bout = LinearBaseline({"max_epochs": 40, "patience": 40, "lr": 3e-3}).run(btask, binary, _ctx(tmp_path))
    s = score(btask, bout)
    assert s["eer"] < 0.25 and s["binary_f1"] > 0.75


# ---- LSTM-CTC ----------------------------------------------------------------------------------------------
CHAR_HZ = {"a": 500, "b": 1100, "c": 2300}


def _spell(rng, text: str) -> np.ndarray:
    """Each character a 0.1-s tone of its own pitch; 0.05 s between characters, 0.3 s between words."""
    parts = [np.zeros(int(0.1 * SR))]
    for w, word in enumerate(text.split(" ")):
        if w:
            parts.append(np.zeros(int(0.3 * SR)))
        for k, ch in enumerate(word):
            if k:
                parts.append(np.zeros(int(0.05 * SR)))
            parts.append(_tone(rng, CHAR_HZ[ch], 0.1, noise=0.0))
    parts.append(np.zeros(int(0.1 * SR)))
    wav = np.concatenate(parts)
    return wav + 0.01 * rng.standard_normal(len(wav))


def _spelling_manifest(root, sizes=(48, 8, 8), seed=0) -> Manifest:
    rng = np.random.default_rng(seed)
    exs = []
    for split, n in zip(("train", "valid", "test"), sizes):
        for i in range(n):
            words = ["".join(rng.choice(list(CHAR_HZ), size=rng.integers(1, 4))) for _ in range(rng.integers(1, 3))]
            text = " ".join(words)
            uid = f"{split}-{i}"
            write_audio(root / f"{uid}.wav", _spell(rng, text))
            exs.append(Example(id=uid, path=f"{uid}.wav", label=text, split=split, speaker=uid))
    return Manifest(exs, root=root)


def test_lstm_ctc_learns_to_spell_tone_sequences(tmp_path, bench_home):
    from bench.methods.lstm_ctc import LSTMCTCBaseline
    from bench.runner.plan import score

    manifest = _spelling_manifest(tmp_path / "audio")
    task = _task("spell", kind="generation", family="ASR")
    method = LSTMCTCBaseline({"project_dim": 32, "hidden_size": 32, "lr": 1e-2, "batch_size": 8,
                              "max_epochs": 30, "patience": 30})
    out = method.run(task, manifest, _ctx(tmp_path, upstream="fbank"))
    scores = score(task, out)
    assert scores["cer"] < 0.5  # an all-blank model scores CER 1.0
    assert out.info["vocabulary"]["characters"] == ["a", "b", "c"] and out.info["vocabulary"]["size"] == 6
    assert out.info["size"] == "small" and out.info["architecture"]["hidden_size"] == 32
    assert out.params.trainable == sum(out.params.breakdown.values())
    assert out.info["features"]["extracted"] == 64


def test_frame_stride_averages_runs_of_frames_and_adds_no_parameters():
    from bench.methods.lstm_ctc import LSTMCTCBaseline, average_frames

    x = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    y = average_frames(x, 2)
    assert y.shape == (2, 3, 3)
    np.testing.assert_allclose(y[:, 0], (x[:, 0] + x[:, 1]) / 2)
    np.testing.assert_allclose(y[:, 2], x[:, 4])  # the last, shorter run is its own mean
    assert average_frames(x, 1) is x
    assert LSTMCTCBaseline().architecture()["frame_stride"] == 2  # the CPU size
    assert LSTMCTCBaseline({"size": "superb"}).architecture()["frame_stride"] == 1  # SUPERB's head
    with pytest.raises(BenchError, match="frame_stride"):
        LSTMCTCBaseline({"frame_stride": 0}).architecture()


def test_dense_bilstm_equals_s3prls_packed_rnn_encoder():
    """The CTC head's dense BiLSTM computes exactly what s3prl's RNNEncoder (packed sequences) computes, on a
    batch of different lengths, forward and gradients; padded frames are zero as after pad_packed_sequence."""
    import torch

    from bench.methods.lstm_ctc import build_ctc_head

    torch.manual_seed(0)
    head = build_ctc_head(1, 12, 7, 10, 6, 2, dropout=0.0).eval()
    lens = torch.tensor([9, 4, 7])
    x = torch.randn(3, 9, 12, requires_grad=True)
    ours, our_lens = head([x], [lens])
    ref, ref_lens = head.encoder(head.featurizer([x], [lens])[0], lens)
    assert torch.equal(our_lens, ref_lens)
    real = torch.arange(9)[None, :] < lens[:, None]
    torch.testing.assert_close(ours[real], ref[real], atol=1e-6, rtol=1e-5)
    g1 = torch.autograd.grad(ours[real].sum(), x)[0]
    g2 = torch.autograd.grad(ref[real].sum(), x)[0]
    torch.testing.assert_close(g1, g2, atol=1e-6, rtol=1e-5)


def test_lstm_streaming_from_the_cache_equals_in_memory(tmp_path, bench_home, monkeypatch):
    """A split read batch by batch from the feature cache every epoch (no memory budget) trains and decodes
    exactly as one kept in memory: same history, same hypotheses."""
    from bench.methods import lstm_ctc
    from bench.methods.lstm_ctc import LSTMCTCBaseline

    manifest = _spelling_manifest(tmp_path / "audio", sizes=(16, 4, 4))
    task = _task("spell", kind="generation", family="ASR")
    method = LSTMCTCBaseline({"project_dim": 16, "hidden_size": 16, "lr": 1e-2, "batch_size": 4,
                              "max_epochs": 3, "patience": 3, "frame_stride": 2})
    kept = method.run(task, manifest, _ctx(tmp_path, upstream="fbank"))
    seen = []
    real = lstm_ctc.StridedFeatures.__init__

    def no_budget(self, reader, stride, memory_bytes=None):
        real(self, reader, stride, 0)
        seen.append(self.in_memory)

    monkeypatch.setattr(lstm_ctc.StridedFeatures, "__init__", no_budget)
    streamed = method.run(task, manifest, _ctx(tmp_path, upstream="fbank"))
    assert seen == [False, False, False]
    assert streamed.predictions.hypotheses == kept.predictions.hypotheses
    assert streamed.info["history"] == kept.info["history"]
    assert streamed.info["mean_frames_per_token"] == kept.info["mean_frames_per_token"]


def test_linear_streaming_its_pooled_means_equals_in_memory(tmp_path, bench_home, monkeypatch):
    """Splits too large to hold (no memory budget) are read from the pooled cache batch by batch and evaluated
    in the same chunks: the same history, scores and hypotheses as splits held in memory; a chunked evaluation
    (a real corpus's valid split) trains and predicts too, and `bench evaluate`'s reader gives the run's outputs."""
    from bench.methods import linear
    from bench.methods.linear import LinearBaseline, PooledSplit

    labels = ["low", "high", "noise"]
    manifest = _classification_manifest(tmp_path / "audio", lambda rng, c: _sound(rng, c[0]),
                                        [(c,) for c in labels])
    task = _task("tones", labels=labels, metrics=["accuracy"])
    method = LinearBaseline({"max_epochs": 8, "patience": 8, "lr": 3e-3})
    kept = method.run(task, manifest, _ctx(tmp_path))
    assert kept.info["pooled_in_memory"] == {"train": True, "valid": True, "test": True}

    real = PooledSplit.__init__
    monkeypatch.setattr(PooledSplit, "__init__", lambda self, reader, limit=0: real(self, reader, 0))
    streamed = method.run(task, manifest, _ctx(tmp_path))
    assert streamed.info["pooled_in_memory"] == {"train": False, "valid": False, "test": False}
    assert streamed.info["history"] == kept.info["history"]
    assert streamed.predictions.scores == kept.predictions.scores
    assert streamed.predictions.hypotheses == kept.predictions.hypotheses

    monkeypatch.setattr(linear, "eval_chunk_rows", lambda layers, dim: 2)  # valid and test in chunks of 2
    chunked = method.run(task, manifest, _ctx(tmp_path))
    assert len(chunked.predictions.scores) == len(kept.predictions.scores)
    assert chunked.predictions.hypotheses == kept.predictions.hypotheses  # the last bits may move, not the argmax
    for a, b in zip(chunked.predictions.scores, kept.predictions.scores):
        assert all(abs(a[k] - b[k]) < 1e-4 for k in labels)


def test_linear_under_every_feature_cache_mode_gives_the_same_predictions(tmp_path, bench_home):
    """--feature-cache all | layers | pooled | none: the same pooled means, so the same record numbers; the record
    says which mode ran; lstm, which reads frames, computes them in its run under pooled (its stage writes none)."""
    from bench.methods.linear import LinearBaseline
    from bench.methods.lstm_ctc import LSTMCTCBaseline

    labels = ["low", "high"]
    manifest = _classification_manifest(tmp_path / "audio", lambda rng, c: _sound(rng, c[0]),
                                        [(c,) for c in labels], per_split=(4, 2, 2))
    task = _task("tones", labels=labels, metrics=["accuracy"])
    method = LinearBaseline({"max_epochs": 3, "patience": 3})
    outs = {}
    for mode in ("all", "layers", "pooled", "none"):
        ctx = _ctx(tmp_path / mode, feature_cache=mode)
        method.stage(task, manifest, ctx)
        outs[mode] = method.run(task, manifest, ctx)
        assert outs[mode].info["feature_cache"] == mode
    for mode in ("layers", "pooled", "none"):
        assert outs[mode].predictions.scores == outs["all"].predictions.scores
        assert outs[mode].info["history"] == outs["all"].info["history"]
    assert not list((tmp_path / "pooled" / "cache").rglob("shards/*.npy"))
    assert not list((tmp_path / "none" / "cache").rglob("*.npy"))
    LSTMCTCBaseline().stage(_task("spell", kind="generation", family="ASR"), manifest,
                            _ctx(tmp_path / "pooled", feature_cache="pooled"))
    assert not list((tmp_path / "pooled" / "cache").rglob("shards*/*.npy"))


@pytest.mark.parametrize("upstream", ["fbank_no_cmvn", "whisper_tiny_en"])
def test_lstm_under_feature_cache_none_and_layers_gives_the_records_of_all(tmp_path, bench_home, upstream):
    """--feature-cache none computes the frames in the run (nothing on disk), batched as the stage's extraction
    batches them (Whisper's last bits depend on its batch), cast to float16 as the cache is: the same history and
    hypotheses as from the cache; with and without a memory budget. layers (lstm reads every layer) is all."""
    from bench.methods import lstm_ctc
    from bench.methods.lstm_ctc import LSTMCTCBaseline

    manifest = _spelling_manifest(tmp_path / "audio", sizes=(16, 4, 4))
    task = _task("spell", kind="generation", family="ASR")
    method = LSTMCTCBaseline({"project_dim": 16, "hidden_size": 16, "lr": 1e-2, "batch_size": 4,
                              "max_epochs": 2, "patience": 2, "frame_stride": 2})
    outs = {}
    for mode in ("all", "none", "layers"):
        ctx = _ctx(tmp_path / mode, upstream=upstream, feature_cache=mode)
        method.stage(task, manifest, ctx)
        outs[mode] = method.run(task, manifest, ctx)
        assert outs[mode].info["feature_cache"] == mode
    real = lstm_ctc.StridedFeatures.__init__
    try:  # no memory budget: every batch computed again each epoch
        lstm_ctc.StridedFeatures.__init__ = lambda self, reader, stride, memory_bytes=None: real(self, reader,
                                                                                                 stride, 0)
        outs["none, streamed"] = method.run(task, manifest, _ctx(tmp_path / "none", upstream=upstream,
                                                                 feature_cache="none"))
    finally:
        lstm_ctc.StridedFeatures.__init__ = real
    for mode in ("none", "layers", "none, streamed"):
        assert outs[mode].predictions.hypotheses == outs["all"].predictions.hypotheses, mode
        assert outs[mode].info["history"] == outs["all"].info["history"], mode
    # kept in memory: each utterance computed once (Whisper: with the rest of its extraction batches, which hold
    # other splits' utterances too); streamed: again at each epoch
    once = outs["none"].info["features"]["extracted"]
    assert once == 24 if upstream == "fbank_no_cmvn" else once > 24
    assert outs["none, streamed"].info["features"]["extracted"] > 2 * 16
    assert not list((tmp_path / "none" / "cache").rglob("*.npy")), "--feature-cache none writes no features"
    assert outs["layers"].info["features"] == outs["all"].info["features"]
