"""The feature cache: keyed by (upstream, its config, audio content), so a second extraction does no work."""

from __future__ import annotations

import numpy as np

from bench.data.audio import load_audio, write_audio
from bench.data.manifest import Example, Manifest
from bench.features.store import FeatureStore


def _manifest(tmp_path, n=4):
    rng = np.random.default_rng(0)
    exs = []
    for i in range(n):
        p = tmp_path / "wav" / f"u{i}.wav"
        write_audio(p, 0.1 * rng.standard_normal(8000 + 1600 * i).astype(np.float32))
        exs.append(Example(id=f"u{i}", path=str(p.relative_to(tmp_path)), label="x", split="train"))
    return Manifest(exs, root=tmp_path)


def test_fbank_features_shape_and_second_run_extracts_nothing(tmp_path):
    m = _manifest(tmp_path)
    store = FeatureStore("fbank", cache_dir=tmp_path / "cache")
    feats = store.get(m, m.examples)
    assert store.stats == {"extracted": 4, "cached": 0}
    assert [f.shape for f in feats] == [(1, 50 + 10 * i, 240) for i in range(4)]
    again = FeatureStore("fbank", cache_dir=tmp_path / "cache")
    feats2 = again.get(m, m.examples)
    assert again.stats == {"extracted": 0, "cached": 4}
    assert again._encoder is None, "a fully cached run must not even build the upstream"
    shards = [p for p in (tmp_path / "cache" / "features").rglob("*.npy")]
    assert len(shards) == 1, "4 short clips go into one shard, not one file each"
    assert all(np.array_equal(a, b) for a, b in zip(feats, feats2))


def test_extraction_leaves_torch_threads_as_it_found_them(tmp_path):
    import torch

    before = torch.get_num_threads()
    FeatureStore("fbank", cache_dir=tmp_path / "cache").get(_manifest(tmp_path, n=2), _manifest(tmp_path, n=2).examples)
    assert torch.get_num_threads() == before


def test_cache_key_follows_audio_content_not_path(tmp_path):
    m = _manifest(tmp_path, n=1)
    store = FeatureStore("fbank", cache_dir=tmp_path / "cache")
    k1 = store.key(m, m.examples[0])
    copy = tmp_path / "elsewhere.wav"
    copy.write_bytes((tmp_path / m.examples[0].path).read_bytes())
    m2 = Manifest([Example(id="c", path=str(copy), label="x", split="train")], root=tmp_path)
    assert store.key(m2, m2.examples[0]) == k1
    write_audio(copy, np.zeros(8000, dtype=np.float32) + 0.01)
    m3 = Manifest([Example(id="c", path=str(copy), label="x", split="train")], root=tmp_path)
    assert FeatureStore("fbank", cache_dir=tmp_path / "cache").key(m3, m3.examples[0]) != k1


def test_different_upstreams_do_not_share_cache_entries(tmp_path):
    m = _manifest(tmp_path, n=1)
    fb = FeatureStore("fbank", cache_dir=tmp_path / "cache").get(m, m.examples)[0]
    mf = FeatureStore("mfcc", cache_dir=tmp_path / "cache").get(m, m.examples)[0]
    assert fb.shape[-1] == 240 and mf.shape[-1] == 39


def test_audio_is_resampled_to_16k_mono(tmp_path):
    import soundfile as sf

    t = np.arange(22050) / 22050
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    sf.write(tmp_path / "s.wav", stereo, 22050)
    wav = load_audio(tmp_path / "s.wav")
    assert wav.ndim == 1 and abs(len(wav) - 16000) <= 1
    spec = np.abs(np.fft.rfft(wav))
    assert abs(np.argmax(spec) * 16000 / len(wav) - 440) < 3


def test_unreadable_audio_names_the_file(tmp_path):
    import pytest

    from bench.core.errors import AudioReadError

    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....not audio")
    with pytest.raises(AudioReadError, match="broken.wav"):
        load_audio(bad)
