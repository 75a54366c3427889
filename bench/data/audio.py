"""Audio input: soundfile decoding, mono down-mix and resampling to 16 kHz.

Every upstream and unit extractor reads audio through ``load_audio`` so that all of them see the same samples
(SpeechPrompt-v2's users lost accuracy to audio read at the wrong rate; here it cannot happen).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from bench.core.errors import AudioReadError

SAMPLE_RATE = 16_000


def load_audio(path: str | Path, start: float | None = None, end: float | None = None,
               sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Return float32 mono samples at ``sample_rate``; ``start``/``end`` in seconds select a segment."""
    try:
        with sf.SoundFile(str(path)) as f:  # one open: header and samples
            sr = f.samplerate
            first = int(round(start * sr)) if start is not None else 0
            last = int(round(end * sr)) if end is not None else f.frames
            f.seek(min(first, f.frames))
            wav = f.read(max(0, min(last, f.frames) - first), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, OSError) as err:
        raise AudioReadError(f"cannot read audio file {path}: {err}") from None
    wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if wav.size == 0:
        raise AudioReadError(f"audio file {path} has no samples in the requested range")
    return resample(wav, sr, sample_rate)


def resample(wav: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """High-quality band-limited resampling with libsoxr (5x faster than scipy's polyphase filter here)."""
    if orig_sr == target_sr:
        return np.ascontiguousarray(wav, dtype=np.float32)
    import soxr

    return soxr.resample(np.ascontiguousarray(wav, dtype=np.float32), orig_sr, target_sr, quality="HQ")


def duration_samples(path: str | Path, start: float | None = None, end: float | None = None,
                     sample_rate: int = SAMPLE_RATE) -> int:
    """Length after resampling, from the header alone (used to batch by length without decoding)."""
    try:
        with sf.SoundFile(str(path)) as f:
            frames, sr = f.frames, f.samplerate
    except (RuntimeError, sf.LibsndfileError, OSError) as err:
        raise AudioReadError(f"cannot read audio file {path}: {err}") from None
    seconds = frames / sr
    seconds = (end if end is not None else seconds) - (start or 0.0)
    return int(seconds * sample_rate)


def write_audio(path: str | Path, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit PCM WAV, written to a temporary name and renamed (atomic). An OS error (disk full, permission) is a
    BenchError naming the file; the temporary is removed."""
    from bench.data.manifest import write_error
    from bench.core.locks import temp_path

    import io

    path = Path(path)
    tmp = temp_path(path)
    # encoded in memory (the same bytes libsndfile writes to a file), written by Python: a failed write is an
    # OSError with its errno (disk full: "No space left on device"), where libsndfile says only "System error."
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        sf.write(buf, np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
        with open(tmp, "xb") as f:
            f.write(buf.getbuffer())
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise write_error(path, "audio", err) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
