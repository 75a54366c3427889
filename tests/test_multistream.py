"""pGSLM's MS-TLM: bench's model reproduces fairseq's ``transformer_ulm`` on every stream, imports and exports
fairseq checkpoints, builds shifted streams exactly like fairseq's CodeDataset, and pretrains."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from bench.core.errors import BenchError
from bench.lms.multistream import (
    MultiStreamLMConfig,
    MultiStreamUnitLM,
    collate_streams,
    encode_streams,
)
from bench.lms.multistream_checkpoint import (
    load_multistream_lm,
    pretrain_multistream_lm,
    save_multistream_lm,
)

fairseq = pytest.importorskip("fairseq")

N_UNITS, F0_BINS, MAX_DUR = 20, 8, 6


def build_fairseq_ulm(tmp_path, *, discrete: bool, arch: str = "transformer_ulm_tiny", **arch_kw):
    """fairseq's own TransformerUnitLanguageModel, built through its task like ``fairseq-train`` does."""
    from fairseq.models import transformer_ulm as tu
    from fairseq.tasks.speech_ulm_task import SpeechUnitLanguageModelingTask, SpeechUnitModelingConfig

    data_cfg = tmp_path / "data_config.json"
    data_cfg.write_text(json.dumps({"manifests": {}, "n_units": N_UNITS, "sampling_rate": 16000,
                                    "code_hop_size": 320, "f0_vq_type": "naive", "f0_vq_n_units": F0_BINS,
                                    "f0_vq_name": "naive"}))
    task_kw = dict(discrete_duration=discrete, discrete_f0=discrete, stream_shifts="1,1",
                   max_token_duration=MAX_DUR, log_f0=True, normalize_f0_mean=True, interpolate_f0=True)
    task = SpeechUnitLanguageModelingTask(SpeechUnitModelingConfig(data=str(data_cfg), **task_kw))
    args = argparse.Namespace(arch=arch, dropout=0.0, attention_dropout=0.0, **arch_kw)
    {"transformer_ulm_tiny": tu.transformer_ulm_tiny, "transformer_ulm_big": tu.transformer_ulm_big,
     "transformer_ulm": tu.base_ulm_architecture}[arch](args)
    torch.manual_seed(0)
    model = tu.TransformerUnitLanguageModel.build_model(args, task)
    with torch.no_grad():  # fairseq zero-initialises some biases; randomise everything so parity is not vacuous
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    return model, args, task_kw


def save_fairseq_checkpoint(path, model, args, task_kw):
    """A checkpoint in the layout fairseq's trainer writes: omegaconf ``cfg`` with model/task sections."""
    from omegaconf import OmegaConf

    model_cfg = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}
    model_cfg["_name"] = args.arch
    cfg = OmegaConf.create({"model": model_cfg, "task": {"_name": "speech_unit_modeling", "data": "x", **task_kw}})
    torch.save({"args": None, "cfg": cfg, "model": model.state_dict(),
                "optimizer_history": [{"num_updates": 1234}], "extra_state": {"train_iterator": {"epoch": 7}}},
               path)


def random_utterances(cfg, n, seed, discrete=True):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        length = int(rng.integers(3, 12))
        units = rng.integers(0, cfg.num_units, length)
        durs = rng.integers(1, 10, length)  # some above max_duration: clipped
        f0 = rng.integers(0, cfg.f0_bins, length) if discrete else rng.normal(0, 0.2, length).astype(np.float32)
        rows.append((units, durs, f0))
    return rows


def assert_matches_on_real_positions(got, want, padding_mask):
    """fairseq's outputs at padded input steps are not defined (a pad query's attention row can be all-masked);
    bench lets a pad query attend to itself (bench.lms.model.attention_mask), so only real steps are compared,
    as in the GSLM ULM parity test. Nothing scores a padded step."""
    real = ~padding_mask
    for ch in ("token", "duration", "f0"):
        assert got[ch].shape == want[ch].shape
        torch.testing.assert_close(got[ch][real], want[ch][real], atol=1e-5, rtol=1e-5)
        assert torch.isfinite(got[ch]).all()


@pytest.mark.parametrize("discrete,arch,kw", [
    (True, "transformer_ulm_tiny", {}),
    (False, "transformer_ulm_tiny", {}),
    (True, "transformer_ulm", dict(decoder_layers=2, decoder_embed_dim=32, decoder_attention_heads=4,
                                   decoder_ffn_embed_dim=48)),
])
def test_imported_fairseq_checkpoint_matches_fairseq_on_every_stream(tmp_path, discrete, arch, kw):
    ref, args, task_kw = build_fairseq_ulm(tmp_path, discrete=discrete, arch=arch, **kw)
    ckpt = tmp_path / "checkpoint_best.pt"
    save_fairseq_checkpoint(ckpt, ref, args, task_kw)

    model = load_multistream_lm(ckpt)
    cfg = model.cfg
    assert (cfg.num_units, cfg.discrete_f0, cfg.stream_shifts) == (N_UNITS, discrete, (1, 1))
    assert cfg.f0_bins == F0_BINS or not discrete
    assert model.provenance["epoch"] == 7 and model.provenance["num_updates"] == 1234
    assert model.provenance["ignored_keys"] == ["decoder.output_projection.weight", "decoder.version"]

    batch = collate_streams(cfg, [encode_streams(cfg, *r) for r in random_utterances(cfg, 3, 1, discrete)])
    assert batch.padding_mask.any(), "the batch must exercise padding"
    with torch.no_grad():
        want = ref(batch.tokens, batch.durations, batch.f0)
        got = model(batch.tokens, batch.durations, batch.f0)
    assert_matches_on_real_positions(got, want, batch.padding_mask)


def test_exported_checkpoint_loads_strictly_into_fairseq_and_matches(tmp_path):
    cfg = MultiStreamLMConfig.tiny(N_UNITS, f0_bins=F0_BINS, max_duration=MAX_DUR)
    torch.manual_seed(3)
    ours = MultiStreamUnitLM(cfg).eval()
    path = save_multistream_lm(ours, tmp_path / "out", {"f0_edges": [0.1]}, epoch=2, num_updates=5)
    state = torch.load(path, weights_only=True)  # plain data: no pickled classes
    ref, _, _ = build_fairseq_ulm(tmp_path, discrete=True)
    ref.load_state_dict(state["model"], strict=True)
    batch = collate_streams(cfg, [encode_streams(cfg, *r) for r in random_utterances(cfg, 2, 5)])
    with torch.no_grad():
        want, got = ref(batch.tokens, batch.durations, batch.f0), ours(batch.tokens, batch.durations, batch.f0)
    assert_matches_on_real_positions(got, want, batch.padding_mask)
    again = load_multistream_lm(path)
    assert again.provenance["bench"]["f0_edges"] == [0.1] and again.provenance["epoch"] == 2


def test_streams_are_shifted_exactly_like_fairseq_codedataset():
    from fairseq.data.codedataset import Paddings, Shifts

    cfg = MultiStreamLMConfig.tiny(N_UNITS, f0_bins=F0_BINS, max_duration=MAX_DUR)
    units, durs, f0 = np.array([3, 7, 1]), np.array([2, 9, 1]), np.array([5, 0, 7])
    tok, dur, f = encode_streams(cfg, units, durs, f0)
    assert tok == [cfg.unit_vocab.bos, 3, 7, 1, cfg.unit_vocab.eos]
    assert dur == [0, 2, MAX_DUR, 1, 0]  # clipped to --max-token-duration
    shifts = Shifts("1,1", Paddings(cfg.unit_vocab.pad, 0, cfg.f0_vocab.pad))
    c, cm, d, dm, g, gm = shifts(torch.tensor(tok), torch.tensor(dur), torch.tensor(f))
    batch = collate_streams(cfg, [(tok, dur, f)])
    assert batch.tokens[0].tolist() == c[:-1].tolist() and batch.target[0].tolist() == c[1:].tolist()
    assert batch.durations[0].tolist() == d[:-1].tolist() and batch.dur_target[0].tolist() == d[1:].tolist()
    assert batch.f0[0].tolist() == g[:-1].tolist() and batch.f0_target[0].tolist() == g[1:].tolist()
    assert batch.mask[0].tolist() == (cm[1:] | cm[:-1]).tolist()
    assert batch.dur_mask[0].tolist() == (dm[1:] | dm[:-1]).tolist()
    # the step holding unit u_t sees the prosody of u_{t-1} and predicts u_{t+1} with the prosody of u_t
    t = 2  # input token 7
    assert batch.tokens[0, t] == 7 and batch.durations[0, t] == 2 and batch.target[0, t] == 1
    assert batch.dur_target[0, t] == MAX_DUR and batch.f0_target[0, t] == 0


@pytest.mark.parametrize("breakage,match", [
    ("arch", "not a pGSLM MS-TLM"),
    ("learned_pos", "decoder_learned_pos"),
    ("missing", "missing"),
    ("extra", "unexpected"),
    ("shape", "fc1"),
])
def test_unsupported_or_mismatched_checkpoints_are_refused(tmp_path, breakage, match):
    cfg = MultiStreamLMConfig.tiny(N_UNITS, f0_bins=F0_BINS, max_duration=MAX_DUR)
    path = save_multistream_lm(MultiStreamUnitLM(cfg), tmp_path)
    state = torch.load(path, weights_only=True)
    if breakage == "arch":
        state["cfg"]["model"]["_name"] = "transformer_lm_big"
    elif breakage == "learned_pos":
        state["cfg"]["model"]["decoder_learned_pos"] = True
    elif breakage == "missing":
        del state["model"]["decoder.layers.1.fc2.bias"]
    elif breakage == "extra":
        state["model"]["decoder.layers.0.self_attn.extra"] = torch.zeros(1)
    elif breakage == "shape":
        state["model"]["decoder.layers.1.fc1.weight"] = torch.zeros(65, 64)
    torch.save(state, path)
    with pytest.raises(BenchError, match=match):
        load_multistream_lm(path)


def test_not_a_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BenchError, match="x.pt"):
        load_multistream_lm(bad)
    with pytest.raises(BenchError, match="not found"):
        load_multistream_lm(tmp_path / "missing.pt")


def test_architecture_sizes_match_fairseq():
    big = MultiStreamUnitLM(MultiStreamLMConfig.transformer_ulm_big(100, num_layers=1))
    d = 1024
    layer = 4 * (d * d + d) + 2 * (2 * d) + (d * 4096 + 4096) + (4096 * d + d)
    embeds = 104 * d + 25 * d + 36 * d
    assert big.num_parameters() == embeds + layer + 2 * d + (104 + 25 + 36) * d


def test_pretraining_learns_the_streams_and_saves_a_loadable_checkpoint(tmp_path):
    """A tiny MS-TLM trained on a deterministic language (unit k is followed by k+1, lasts k%3+1 frames, and its
    F0 bin is k%4) predicts all three streams far better than chance."""
    cfg = MultiStreamLMConfig.tiny(8, f0_bins=4, max_duration=4, embed_dim=32, ffn_dim=64)
    rows = []
    for start in range(8):
        units = [(start + i) % 8 for i in range(10)]
        rows.append((units, [u % 3 + 1 for u in units], [u % 4 for u in units]))
    path = pretrain_multistream_lm(rows, cfg, tmp_path / "lm", epochs=40, lr=3e-3, warmup_updates=10,
                                   batch_size=4, seed=0, log=lambda s: None)
    model = load_multistream_lm(path)
    batch = collate_streams(model.cfg, [encode_streams(model.cfg, *r) for r in rows])
    with torch.no_grad():
        out = model(batch.tokens, batch.durations, batch.f0)
    inner = ~batch.mask
    inner[:, 0] = False  # the first prediction after <s> cannot be known
    acc = {
        "token": (out["token"].argmax(-1) == batch.target)[inner].float().mean(),
        "duration": (out["duration"].argmax(-1) == batch.dur_target)[~batch.dur_mask].float().mean(),
        "f0": (out["f0"].argmax(-1) == batch.f0_target)[~batch.f0_mask].float().mean(),
    }
    assert all(v > 0.9 for v in acc.values()), acc
    assert model.provenance["bench"]["loss_weights"] == [1.0, 0.5, 0.5]
