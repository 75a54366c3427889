"""pGSLM prosody streams: F0 tracking, unvoiced interpolation, speaker normalisation, 32-bin quantisation, caching."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.audio import write_audio
from bench.data.manifest import Example, Manifest
from bench.core.errors import BenchError
from bench.units.prosody import (
    F0Config,
    F0Quantizer,
    ProsodyStore,
    extract_f0,
    interpolate_unvoiced,
    speaker_key,
    speaker_log_f0_means,
    unit_frames_ratio,
    unit_log_f0,
)
from bench.units.dedup import dedup

SR = 16_000


def tone(f0_hz: float, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * f0_hz * t)).astype(np.float32)


def harmonic_glide(f_start: float, f_end: float, seconds: float = 1.0, harmonics: int = 10) -> np.ndarray:
    """A speech-like source: a 1/k harmonic complex whose pitch glides exponentially from f_start to f_end."""
    t = np.arange(int(seconds * SR)) / SR
    inst = f_start * (f_end / f_start) ** (t / seconds)
    phase = 2 * np.pi * np.cumsum(inst) / SR
    return (0.3 * sum(np.sin(k * phase) / k for k in range(1, harmonics + 1))).astype(np.float32)


@pytest.mark.parametrize("freq", [150.0, 220.0])
def test_pure_tone_f0_within_a_few_hz(freq):
    f0 = extract_f0(tone(freq), F0Config(method="dio"))
    assert f0.size == 201  # 1 s at a 5 ms frame period, frames at t = 0 .. 1 s
    inner = f0[10:-10]
    assert (inner > 0).all(), "a steady tone is voiced throughout"
    assert np.abs(inner - freq).max() < 3.0


@pytest.mark.parametrize("method", ["dio", "harvest"])
def test_pitch_glide_of_harmonic_complex_is_tracked(method):
    f0 = extract_f0(harmonic_glide(120.0, 240.0), F0Config(method=method))
    t = np.arange(f0.size) * 0.005
    truth = 120.0 * 2.0 ** np.clip(t, 0.0, 1.0)
    inner = slice(10, -10)
    assert (f0[inner] > 0).mean() > 0.95
    voiced = f0[inner] > 0
    assert np.abs(f0[inner][voiced] - truth[inner][voiced]).max() < 3.0


def test_silence_is_unvoiced():
    f0 = extract_f0(np.zeros(SR // 2, dtype=np.float32))
    assert (f0 == 0).all()


def test_interpolation_bridges_gaps_and_leaves_edges_unvoiced():
    f0 = np.array([0, 0, 100, 0, 0, 130, 0], dtype=np.float32)
    out = interpolate_unvoiced(f0)
    np.testing.assert_allclose(out, [0, 0, 100, 110, 120, 130, 0])


def test_speaker_normalisation_makes_each_speaker_zero_mean():
    rng = np.random.default_rng(0)
    # speaker a speaks around 110 Hz, speaker b around 210 Hz; 20 % of frames unvoiced
    f0s, spk = [], []
    for s, base in (("a", 110.0), ("b", 210.0)):
        for _ in range(3):
            f = base * np.exp(rng.normal(0, 0.1, 400))
            f[rng.random(400) < 0.2] = 0.0
            f0s.append(f.astype(np.float32))
            spk.append(s)
    means = speaker_log_f0_means(f0s, spk)
    assert abs(np.exp(means["a"]) - 110) < 5 and abs(np.exp(means["b"]) - 210) < 8
    for s in ("a", "b"):
        vals = np.concatenate([np.log(f[f > 0].astype(np.float64)) - means[s] for f, k in zip(f0s, spk) if k == s])
        assert abs(vals.mean()) < 1e-9


def test_unit_log_f0_is_the_normalised_mean_over_each_run():
    ratio = unit_frames_ratio(320, F0Config())
    assert ratio == 4.0  # 20 ms unit frames over 5 ms F0 frames, pGSLM's f0_code_ratio
    durations = np.array([2, 1, 3])  # unit frames -> 8, 4, 12 F0 frames
    f0 = np.concatenate([np.full(8, 100.0), np.full(4, 200.0), np.zeros(12)]).astype(np.float32)
    mean = np.log(150.0)
    out = unit_log_f0(f0, durations, mean, ratio)
    np.testing.assert_allclose(out[:2], [np.log(100 / 150), np.log(200 / 150)], rtol=1e-6)
    assert out[2] == 0.0  # trailing unvoiced run: the speaker mean
    # extra F0 frames beyond the units are trimmed; missing ones repeat the last value
    assert unit_log_f0(np.concatenate([f0, np.full(5, 300.0, np.float32)]), durations, mean, ratio).shape == (3,)


def test_deduplication_gives_units_and_durations():
    units, dur = dedup([5, 5, 5, 7, 2, 2, 5])
    assert units.tolist() == [5, 7, 2, 5] and dur.tolist() == [3, 1, 2, 1]


def test_quantizer_edges_are_equal_mass_and_monotonic():
    rng = np.random.default_rng(1)
    values = rng.normal(0.0, 0.2, 20_000)
    q = F0Quantizer.fit(values, 32)
    assert q.num_bins == 32 and q.edges.shape == (31,)
    assert (np.diff(q.edges) > 0).all()
    bins = q.quantize(values)
    assert bins.min() == 0 and bins.max() == 31
    counts = np.bincount(bins, minlength=32)
    assert counts.min() > 0.8 * len(values) / 32 and counts.max() < 1.2 * len(values) / 32
    xs = np.linspace(-1, 1, 200)
    assert (np.diff(q.quantize(xs)) >= 0).all(), "higher pitch never gets a lower bin"


def test_quantizer_roundtrip_and_bad_file(tmp_path):
    q = F0Quantizer.fit(np.linspace(-1, 1, 1000), 8)
    q.save(tmp_path / "b.json")
    q2 = F0Quantizer.load(tmp_path / "b.json")
    np.testing.assert_array_equal(q.edges, q2.edges)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(BenchError, match="bad.json"):
        F0Quantizer.load(tmp_path / "bad.json")
    with pytest.raises(BenchError, match="too little voiced"):
        F0Quantizer.fit(np.zeros(3), 32)


def test_store_caches_frame_f0_and_fits_bins_on_train(tmp_path, bench_home):
    examples = []
    for i, (spk, f) in enumerate([("a", 120), ("a", 130), ("b", 200), ("b", 230)]):
        write_audio(tmp_path / f"{i}.wav", harmonic_glide(f, f * 1.3, seconds=0.5))
        examples.append(Example(id=f"u{i}", path=f"{i}.wav", label="x", split="train", speaker=spk))
    manifest = Manifest(examples, root=tmp_path)
    store = ProsodyStore(F0Config(), cache_dir=bench_home / "cache")
    f0s = store.frame_f0(manifest, examples)
    assert store.stats == {"extracted": 4, "cached": 0}
    again = ProsodyStore(F0Config(), cache_dir=bench_home / "cache")
    f0s2 = again.frame_f0(manifest, examples)
    assert again.stats == {"extracted": 0, "cached": 4}
    np.testing.assert_array_equal(f0s[2], f0s2[2])
    # a different tracker setting is a different cache entry
    other = ProsodyStore(F0Config(f0_floor=70.0), cache_dir=bench_home / "cache")
    other.frame_f0(manifest, examples[:1])
    assert other.stats["extracted"] == 1

    means = speaker_log_f0_means(f0s, [speaker_key(e) for e in examples])
    q = store.quantizer(manifest, examples, f0s, means, num_bins=8)
    assert (bench_home / "cache" / "prosody" / "f0-bins" / f"{q.fitted_on['cache_key']}.json").is_file()
    assert np.array_equal(store.quantizer(manifest, examples, f0s, means, num_bins=8).edges, q.edges)

    frames = np.repeat(np.arange(12), 2)[:24]  # 24 unit frames = 0.48 s
    units, dur = dedup(frames)
    p = store.unit_prosody(f0s[0], dur, means["a"], q)
    assert p.log_f0.shape == units.shape == p.f0_bins.shape
    # a rising glide: the per-unit normalised log-F0 rises, and so do its bins
    assert p.log_f0[-2] > p.log_f0[1] and p.f0_bins[-2] >= p.f0_bins[1]


def test_published_pgslm_bins_format_is_read(tmp_path):
    """quantize_f0.py saves {n_bins: edges}; the released mean_norm_log_f0_seg_bin.th has that layout."""
    import torch

    edges = np.linspace(-0.5, 0.5, 31)
    torch.save({32: edges, 64: np.linspace(-1, 1, 63)}, tmp_path / "bins.th")
    q = F0Quantizer.load_pgslm(tmp_path / "bins.th")
    np.testing.assert_allclose(q.edges, edges)
    assert q.quantize(np.array([-1.0, 0.0, 0.01, 1.0])).tolist() == [0, 15, 16, 31]  # edge value: lower bin
    torch.save({16: np.linspace(-1, 1, 15)}, tmp_path / "other.th")
    with pytest.raises(BenchError, match="no entry for 32"):
        F0Quantizer.load_pgslm(tmp_path / "other.th")
