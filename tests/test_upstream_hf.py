"""hf_hubert / hf_wav2vec2 read a local transformers directory: every hidden state (L+1 layers), frames at the CNN
stride, the same numbers as calling transformers directly, and features independent of the batch."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
__import__("bench.core.compat").core.compat.apply()  # transformers imports torchaudio (see bench/core/compat.py)
transformers = pytest.importorskip("transformers")

from bench.core.errors import BenchError  # noqa: E402
from bench.features.upstream import build_upstream  # noqa: E402

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
            conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
            num_conv_pos_embedding_groups=4, vocab_size=8)


def _save(tmp_path, kind: str, **over):
    torch.manual_seed(0)
    if kind == "hubert":
        model = transformers.HubertModel(transformers.HubertConfig(**{**TINY, **over}))
    else:
        model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**{**TINY, **over}))
    d = tmp_path / kind
    model.save_pretrained(d)
    return d, model.eval()


def _wavs():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (1600, 1000, 2400)]


def test_hf_hubert_returns_all_hidden_states_matching_transformers(tmp_path):
    d, ref = _save(tmp_path, "hubert")
    enc = build_upstream("hf_hubert", str(d))
    assert (enc.info.num_layers, enc.info.hidden_size, enc.info.downsample_rate) == (3, 32, 20)
    assert enc.info.num_parameters == sum(p.numel() for p in ref.parameters())
    wavs = _wavs()
    feats = enc(wavs)
    for w, f in zip(wavs, feats):
        with torch.inference_mode():
            expect = torch.stack(ref(torch.from_numpy(w)[None], output_hidden_states=True).hidden_states)[:, 0]
        assert f.shape == (3, int(ref._get_feat_extract_output_lengths(len(w))), 32) == (3, enc.num_frames(len(w)), 32)
        np.testing.assert_allclose(f, expect.numpy(), atol=1e-5)
    # per-utterance features do not depend on the batch they were computed in (group-norm CNN: one at a time)
    np.testing.assert_allclose(enc([wavs[1]])[0], feats[1], atol=1e-6)


def test_hf_wav2vec2_layer_norm_model_is_batched_with_mask_and_normalizes_input(tmp_path):
    d, ref = _save(tmp_path, "wav2vec2", feat_extract_norm="layer", do_stable_layer_norm=True)
    (d / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True, "sampling_rate": 16000}))
    enc = build_upstream("hf_wav2vec2", str(d))
    assert not enc.per_utterance and enc.normalize
    wavs = _wavs()
    batched = enc(wavs)
    for w, f in zip(wavs, batched):
        alone = enc([w])[0]
        assert f.shape == alone.shape and f.shape[1] == enc.num_frames(len(w))
        np.testing.assert_allclose(f, alone, atol=1e-4)


def test_wrong_model_type_or_missing_dir_is_a_clear_error(tmp_path):
    d, _ = _save(tmp_path, "hubert")
    with pytest.raises(BenchError, match="expects model_type 'wav2vec2'"):
        build_upstream("hf_wav2vec2", str(d))
    with pytest.raises(BenchError, match="no config.json"):
        build_upstream("hf_hubert", str(tmp_path / "nowhere"))
    with pytest.raises(BenchError, match="--upstream-path"):
        build_upstream("hf_hubert", None)
