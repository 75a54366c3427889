"""The TTS layer and augmentation: espeak-ng voices really differ the way their labels claim, synthesis is a
function of (text, voice) alone, and each augmentation does what its parameters say."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data import augment as A
from bench.data.tts import ENGLISH_ACCENTS, Voice, median_f0, synthesize

SENTENCE = "you are going home today"


def test_female_variant_has_higher_f0_than_male_on_every_english_accent():
    """Guards the `en-gb+f3` gotcha: a variant whose pitch is silently ignored would fail here."""
    for accent in ENGLISH_ACCENTS:
        male, female = (median_f0(synthesize(SENTENCE, Voice(accent, v))) for v in ("m1", "f3"))
        assert female > 1.5 * male, (accent, male, female)
    assert median_f0(synthesize(SENTENCE, Voice("en-gb", "f3"))) > 150


def test_pitch_parameter_moves_f0_monotonically():
    f0 = [median_f0(synthesize(SENTENCE, Voice("en-us", "m3", pitch=p))) for p in (10, 50, 90)]
    assert f0[0] < f0[1] < f0[2]


def test_synthesis_does_not_depend_on_what_was_spoken_before():
    v = Voice("en-us", "f2", pitch=40, rate=160)
    first = synthesize("stop", v)
    synthesize("the quick brown fox", Voice("en-029", "m3", pitch=80, rate=220))
    assert np.array_equal(first, synthesize("stop", v))


def test_question_ends_higher_than_statement():
    from bench.data.tts import estimate_f0

    v = Voice("en-us")
    for text in ("you are going home", "she knows the answer"):
        final = {p: float(np.median(estimate_f0(synthesize(text + p, v))[-8:])) for p in ".?"}
        assert final["?"] > 1.1 * final["."], (text, final)


def test_gid_pitch_randomisation_removes_the_f0_shortcut():
    """With the builtin-gid pitch ranges, a median-F0 threshold cannot separate the genders well."""
    from bench.data.builtin.gid import PITCH

    rng = np.random.default_rng(0)
    f0 = {g: [median_f0(synthesize(SENTENCE, Voice(a, v, pitch=int(rng.integers(*PITCH[g]) )))) for a, v in pairs]
          for g, pairs in {"male": [("en-us", "m1"), ("en-029", "m3"), ("en", "m5"), ("en-us-nyc", "m7")] * 2,
                           "female": [("en-us", "f1"), ("en-029", "f2"), ("en", "f4"), ("en-us-nyc", "f5")] * 2}.items()}
    values = sorted(f0["male"] + f0["female"])
    best = max(np.mean([(x > t) == (g == "female") for g in f0 for x in f0[g]]) for t in values)
    assert best < 0.95, f0
    default = [median_f0(synthesize(SENTENCE, Voice("en-us", v))) for v in ("m1", "m7", "f1", "f5")]
    assert min(default[2:]) > max(default[:2])  # without randomisation F0 alone would be perfect


def test_noise_is_mixed_at_the_requested_snr():
    rng = np.random.default_rng(0)
    clean = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    noisy = A.add_noise(clean, rng, snr_db=10.0, exponent=1.0)
    snr = 10 * np.log10(np.mean(clean ** 2) / np.mean((noisy - clean) ** 2))
    assert abs(snr - 10.0) < 0.5


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
def test_coloured_noise_slope(exponent):
    x = A.coloured_noise(1 << 15, np.random.default_rng(1), exponent)
    p = np.abs(np.fft.rfft(x)) ** 2
    f = np.arange(p.size)
    lo, hi = p[(f > 100) & (f < 200)].mean(), p[(f > 1000) & (f < 2000)].mean()
    assert abs(10 * np.log10(lo / hi) - 10 * exponent) < 3.0  # one decade of frequency: 10·exponent dB


def test_rir_decays_60_db_by_rt60():
    rir = A.synthetic_rir(np.random.default_rng(0), rt60=0.4)
    power = lambda t: np.mean(rir[int((t - 0.02) * 16000):int((t + 0.02) * 16000)] ** 2)  # noqa: E731
    assert 10 * np.log10(power(0.1) / power(0.3)) == pytest.approx(30.0, abs=3.0)  # 0.2 s = RT60/2 → 30 dB


def test_augment_is_seeded_and_recorded():
    wav = synthesize("left", Voice("en-us"))
    cfg = A.AugmentConfig(reverb_prob=1.0, noise_prob=1.0)
    a, rec_a = A.augment(wav, np.random.default_rng(3), cfg)
    b, rec_b = A.augment(wav, np.random.default_rng(3), cfg)
    c, _ = A.augment(wav, np.random.default_rng(4), cfg)
    assert np.array_equal(a, b) and rec_a == rec_b and not np.array_equal(a, c)
    assert {"speed", "rt60", "snr_db", "gain_db"} <= set(rec_a) and np.max(np.abs(a)) <= 0.95 + 1e-6


def test_place_puts_the_word_inside_a_fixed_clip():
    rng = np.random.default_rng(0)
    out, offset = A.place(np.ones(4000, np.float32), rng, 16000)
    assert out.size == 16000 and out[offset:offset + 4000].sum() == 4000 and out.sum() == 4000


def test_unknown_voice_is_a_clear_error():
    from bench.core.errors import BenchError

    with pytest.raises(BenchError, match="no voice 'xx-yy'"):
        synthesize("hello", Voice("xx-yy"))
