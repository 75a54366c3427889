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
    shards = [p for p in (tmp_path / "cache" / "features").rglob("shards/*.npy")]
    assert len(shards) == 1, "4 short clips go into one shard, not one file each"
    assert len(list((tmp_path / "cache" / "features").rglob("pooled/*.npy"))) == 1, "and their means into one"
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


def test_reader_streams_the_same_arrays_get_returns_and_pooled_means_are_exact(tmp_path):
    import shutil

    from bench.core.arrayfile import ShardedArrayStore

    m = _manifest(tmp_path, n=5)
    store = FeatureStore("mfcc", cache_dir=tmp_path / "cache", shard_seconds=1.0)  # several shards
    feats = store.get(m, m.examples)
    reader = FeatureStore("mfcc", cache_dir=tmp_path / "cache").reader(m, m.examples[::-1])
    assert len(reader) == 5 and reader.lengths.tolist() == [f.shape[1] for f in feats[::-1]]
    assert reader.dims == (feats[0].shape[0], feats[0].shape[2])
    for i, f in enumerate(feats[::-1]):
        got = reader[i]
        assert got.dtype == np.float16 and got.flags.c_contiguous and np.array_equal(got, f)
        assert np.array_equal(reader.layer(i, -1), f[-1])
    # the pooled means: computed at extraction, bit-identical to the linear probe's former in-memory mean
    want = np.stack([f.astype(np.float32).mean(axis=1) for f in feats])
    again = FeatureStore("mfcc", cache_dir=tmp_path / "cache")
    pooled, frames = again.pooled(m, m.examples)
    assert pooled.dtype == np.float32 and np.array_equal(pooled, want)
    assert frames.tolist() == [f.shape[1] for f in feats]
    assert again.stats == {"extracted": 0, "cached": 5} and again._encoder is None
    # a cache written before the pooled store existed: means computed from the cached frames, same numbers
    shutil.rmtree(ShardedArrayStore(again.pooled_arrays.dir).dir)
    old = FeatureStore("mfcc", cache_dir=tmp_path / "cache")
    pooled2, frames2 = old.pooled(m, m.examples)
    assert np.array_equal(pooled2, want) and frames2.tolist() == frames.tolist()
    assert old.stats == {"extracted": 0, "cached": 5} and old._encoder is None


def test_pooled_only_cache_keeps_no_frames(tmp_path):
    m = _manifest(tmp_path, n=3)
    want = np.stack([f.astype(np.float32).mean(axis=1)
                     for f in FeatureStore("fbank", cache_dir=tmp_path / "a").get(m, m.examples)])
    store = FeatureStore("fbank", cache_dir=tmp_path / "b", keep="pooled")
    pooled, _ = store.pooled(m, m.examples)
    assert np.array_equal(pooled, want) and store.stats == {"extracted": 3, "cached": 0}
    assert not list((tmp_path / "b").rglob("shards/*.npy"))
    # frames read under pooled are computed on the fly, the cached numbers, and still nothing is written
    cached = FeatureStore("fbank", cache_dir=tmp_path / "a").get(m, m.examples)
    reader = store.reader(m, m.examples)
    assert reader.lengths.tolist() == [f.shape[1] for f in cached]
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(reader, cached))
    assert not list((tmp_path / "b").rglob("shards*/*.npy"))


def test_a_shard_closes_at_shard_bytes_so_extraction_memory_does_not_depend_on_the_upstream_size(tmp_path):
    m = _manifest(tmp_path, n=4)
    store = FeatureStore("fbank", cache_dir=tmp_path / "cache", batch_seconds=1.0, shard_bytes=1)
    feats = store.get(m, m.examples)
    assert len(list((tmp_path / "cache").rglob("shards/*.npy"))) == 4  # one batch (of one clip) per shard
    again = FeatureStore("fbank", cache_dir=tmp_path / "cache2").get(m, m.examples)
    assert all(np.array_equal(a, b) for a, b in zip(feats, again))


def test_a_shard_deleted_by_hand_is_extracted_again(tmp_path):
    m = _manifest(tmp_path, n=3)
    feats = FeatureStore("fbank", cache_dir=tmp_path / "cache").get(m, m.examples)
    for p in (tmp_path / "cache").rglob("shards/*.npy"):
        p.unlink()
    store = FeatureStore("fbank", cache_dir=tmp_path / "cache")
    again = store.get(m, m.examples)
    assert store.stats == {"extracted": 3, "cached": 0}
    assert all(np.array_equal(a, b) for a, b in zip(feats, again))
    third = FeatureStore("fbank", cache_dir=tmp_path / "cache")
    third.get(m, m.examples)
    assert third.stats == {"extracted": 0, "cached": 3}, "the orphaned sidecar must not bring the entries back"
