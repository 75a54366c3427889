"""Bad audio found before compute: every audio file of a manifest decoded once, problems named by path.

A file is bad when it is missing, empty (0 bytes), a WAV whose data is shorter than its header declares (cut
short: libsndfile would read the rest silently), not decodable by libsndfile (text, random bytes, a header
with no data, a truncated header), has 0 samples, holds NaN or Inf samples, or when the utterance (the file or
its ``start``/``end`` segment) is shorter than :data:`MIN_SECONDS` (0.05 s: five 10-ms frames, the least a
frame-level upstream and a pooled or CTC head can use; HuBERT's first frame alone needs 25 ms).

Decoding runs on threads (libsndfile releases the GIL). Results are cached per file in
``<cache>/audio_check.json`` keyed by (absolute path, size, mtime), so a second check of unchanged files only
stats them; the cache is written atomically and merged with what another process wrote meanwhile.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from bench.data.manifest import Manifest, write_text_atomic

MIN_SECONDS = 0.05
CACHE_FILE = "audio_check.json"
CACHE_VERSION = 2  # 2: WAV data shorter than its header declares is bad (libsndfile reads what is there)
_BLOCK = 1 << 16  # frames read per block when scanning for NaN/Inf


@dataclass(frozen=True)
class BadAudio:
    id: str
    path: str
    problem: str


@dataclass
class AudioCheckReport:
    checked: int = 0  # examples
    files: int = 0  # distinct files
    decoded: int = 0  # files decoded now (the rest came from the cache)
    bad: list[BadAudio] = field(default_factory=list)
    min_seconds: float = MIN_SECONDS
    seconds: dict[str, float] = field(default_factory=dict)  # example id -> its audio's length (readable ones)

    @property
    def ok(self) -> bool:
        return not self.bad

    def lines(self) -> list[str]:
        """One line per bad example: ``path (id): problem``."""
        return [f"{b.path} ({b.id}): {b.problem}" for b in self.bad]

    def summary(self, show: int = 5) -> str:
        if not self.bad:
            return f"{self.checked} utterance(s) in {self.files} audio file(s): all readable"
        shown = "; ".join(f"{b.path}: {b.problem}" for b in self.bad[:show])
        more = f"; and {len(self.bad) - show} more" if len(self.bad) > show else ""
        return f"{len(self.bad)} of {self.checked} utterance(s) have bad audio: {shown}{more}"


def inspect_file(path: str | os.PathLike) -> dict:
    """File-level facts: ``{"problem": str | None, "frames": int, "sample_rate": int}`` (decodes every sample)."""
    import soundfile as sf

    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return {"problem": "missing (no such file)", "frames": 0, "sample_rate": 0}
    except OSError as err:
        return {"problem": f"cannot stat: {err.strerror or err}", "frames": 0, "sample_rate": 0}
    if path.is_dir():
        return {"problem": "is a directory, not an audio file", "frames": 0, "sample_rate": 0}
    if size == 0:
        return {"problem": "empty file (0 bytes)", "frames": 0, "sample_rate": 0}
    short = wav_data_shortfall(path, size)
    if short is not None:
        return {"problem": short, "frames": 0, "sample_rate": 0}
    try:
        with sf.SoundFile(str(path)) as f:
            sr, frames, read = f.samplerate, f.frames, 0
            finite = True
            while True:
                block = f.read(_BLOCK, dtype="float32", always_2d=True)
                if block.size == 0:
                    break
                read += block.shape[0]
                if finite and not np.isfinite(block).all():
                    finite = False
    except (RuntimeError, sf.LibsndfileError, OSError) as err:
        reason = str(err).split(": ", 1)[-1] if str(err) else type(err).__name__
        if "does not exist" in reason:  # libsndfile's words for data no decoder accepts, on a file that exists
            reason = "unrecognised or corrupt data"
        return {"problem": f"not decodable audio ({reason})", "frames": 0, "sample_rate": 0}
    if read == 0 or frames == 0:
        return {"problem": "no samples (header only / 0 frames)", "frames": 0, "sample_rate": sr}
    if read < frames:
        return {"problem": f"truncated: header says {frames} frames, {read} decodable", "frames": read,
                "sample_rate": sr}
    if not finite:
        return {"problem": "contains NaN or Inf samples", "frames": read, "sample_rate": sr}
    return {"problem": None, "frames": read, "sample_rate": sr}


def wav_data_shortfall(path: Path, size: int) -> str | None:
    """The problem of a RIFF/WAVE file whose ``data`` chunk holds fewer bytes than its header declares (a copy or
    download cut short), else None. libsndfile silently reads the bytes that are there, so decoding alone passes
    it; a ``data`` size of 0 or 0xFFFFFFFF (left unset by streaming writers) declares nothing."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                chunk = f.read(8)
                cid, n = chunk[:4], int.from_bytes(chunk[4:8], "little")
                if cid == b"data":
                    have = size - (pos + 8)
                    if n in (0, 0xFFFFFFFF) or have >= n:
                        return None
                    return f"truncated: the WAV header declares {n} bytes of audio data, the file holds {have}"
                pos += 8 + n + (n & 1)
    except OSError:
        return None
    return None


def _file_key(path: Path) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _cache_path(cache_dir: Path | None) -> Path:
    from bench.core.paths import cache_dir as default_cache

    return Path(cache_dir or default_cache()) / CACHE_FILE


def _load_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        if data.get("version") == CACHE_VERSION and isinstance(data.get("files"), dict):
            return data["files"]
    except (OSError, ValueError, AttributeError):
        pass
    return {}


def _save_cache(path: Path, new: dict) -> None:
    if not new:
        return
    merged = _load_cache(path)  # keep what another process added since we read it
    merged.update(new)
    write_text_atomic(path, json.dumps({"version": CACHE_VERSION, "files": merged}, separators=(",", ":")),
                      what="audio check cache")


def check_manifest_audio(manifest: Manifest, min_seconds: float = MIN_SECONDS, cache_dir: Path | None = None,
                         workers: int | None = None, advance_factory: Callable | None = None,
                         what: str = "audio") -> AudioCheckReport:
    """Decode every audio file of ``manifest`` (cached) and report each bad example by path."""
    from bench.core.threads import worker_threads

    report = AudioCheckReport(min_seconds=min_seconds)
    cache_file = _cache_path(cache_dir)
    cache = _load_cache(cache_file)
    paths = {}
    for e in manifest:
        paths.setdefault(str(manifest.audio_path(e)), None)
    keys = {p: _file_key(Path(p)) for p in paths}
    todo = [p for p, k in keys.items() if k is None or k not in cache]
    facts: dict[str, dict] = {p: cache[k] for p, k in keys.items() if k is not None and k in cache}
    new = {}
    if todo:
        advance = advance_factory(f"checking {what} audio", len(todo)) if advance_factory else None
        n = max(1, workers or worker_threads())
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="audio-check") as pool:
            for p, info in zip(todo, pool.map(inspect_file, todo)):
                facts[p] = info
                if keys[p] is not None:  # a missing file has no key: checked again next time
                    new[keys[p]] = info
                if advance:
                    advance(1)
        _save_cache(cache_file, new)
    report.files, report.decoded = len(paths), len(todo)
    for e in manifest:
        p = str(manifest.audio_path(e))
        info = facts[p]
        report.checked += 1
        problem = info["problem"]
        if problem is None:
            sr, frames = info["sample_rate"], info["frames"]
            total = frames / sr
            start = e.start or 0.0
            end = min(e.end, total) if e.end is not None else total
            seconds = end - start
            report.seconds[e.id] = seconds
            if start >= total and e.start is not None:
                problem = f"segment starts at {start:g} s, after the end of the file ({total:.3f} s)"
            elif seconds < min_seconds:
                problem = f"too short: {max(seconds, 0):.3f} s (minimum {min_seconds:g} s)"
        if problem is not None:
            report.bad.append(BadAudio(e.id, p, problem))
    return report


__all__ = ["check_manifest_audio", "inspect_file", "AudioCheckReport", "BadAudio", "MIN_SECONDS"]
