"""The feature cache: upstream hidden states per utterance, on disk, keyed by what produced them.

Key = sha1(upstream config id, audio content sha1, segment). A second run over the same audio with the same
upstream extracts nothing (HEAR's two-stage wall: expensive frozen extraction here, cheap training after).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from bench.audio import load_audio
from bench.data.manifest import Example, Manifest, sha1_file


class AudioHasher:
    """Content hashes of audio files; uses the manifest's recorded hash when it has one.

    Hashes of files are remembered on disk by (path, size, mtime), so a cached re-run reads no audio at all."""

    def __init__(self, index_file: Path | None = None):
        self.index_file = index_file
        self._memo: dict[str, str] = {}
        self._dirty = False
        if index_file is not None and index_file.is_file():
            try:
                self._memo = json.loads(index_file.read_text())
            except (json.JSONDecodeError, OSError):
                self._memo = {}

    def __call__(self, manifest: Manifest, ex: Example) -> str:
        if ex.audio_sha1:
            return ex.audio_sha1
        path = manifest.audio_path(ex)
        st = path.stat()
        key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
        if key not in self._memo:
            self._memo[key] = sha1_file(path)
            self._dirty = True
        return self._memo[key]

    def save(self) -> None:
        if self._dirty and self.index_file is not None:
            from bench.data.manifest import write_text_atomic

            write_text_atomic(self.index_file, json.dumps(self._memo))
            self._dirty = False


class FeatureStore:
    """Extract-once storage of (num_layers, frames, dim) float16 arrays for one upstream."""

    def __init__(self, upstream: str = "fbank", path: str | None = None, cache_dir: Path | None = None,
                 device: str = "cpu", batch_seconds: float = 32.0):
        from bench.paths import cache_dir as default_cache

        self.upstream_name = upstream
        self.upstream_path = path
        self.device = device
        self.batch_seconds = batch_seconds
        self._encoder = None
        self._config_id: str | None = None
        self.root = Path(cache_dir or default_cache()) / "features"
        self.hasher = AudioHasher(self.root / "audio-sha1-index.json")
        self.stats = {"extracted": 0, "cached": 0}

    @property
    def encoder(self):
        if self._encoder is None:
            from bench.upstream import build_upstream

            self._encoder = build_upstream(self.upstream_name, self.upstream_path, self.device)
        return self._encoder

    @property
    def info(self):
        return self.encoder.info

    def _dir(self) -> Path:
        if self._config_id is None:
            from bench.upstream import upstream_config_id

            self._config_id = upstream_config_id(self.upstream_name, self.upstream_path)
        return self.root / f"{self.upstream_name}-{self._config_id}"

    def key(self, manifest: Manifest, ex: Example) -> str:
        seg = f"{ex.start}:{ex.end}" if ex.start is not None or ex.end is not None else ""
        return hashlib.sha1(f"{self.hasher(manifest, ex)}|{seg}".encode()).hexdigest()

    def _file(self, key: str) -> Path:
        return self._dir() / key[:2] / f"{key}.npy"

    def get(self, manifest: Manifest, examples: Sequence[Example],
            advance: Callable[[int], object] | None = None) -> list[np.ndarray]:
        """Features for ``examples`` in order, extracting (in length-sorted batches) only what is missing."""
        keys = [self.key(manifest, ex) for ex in examples]
        self.hasher.save()
        missing = [i for i, k in enumerate(keys) if not self._file(k).exists()]
        self.stats["cached"] += len(examples) - len(missing)
        if missing:
            self._extract(manifest, examples, keys, missing, advance)
        elif advance:
            advance(len(examples))
        if missing and advance:
            advance(len(examples) - len(missing))
        return [np.load(self._file(k)) for k in keys]

    def _extract(self, manifest, examples, keys, missing, advance) -> None:
        """Length-sorted batches of at most ``batch_seconds`` audio; only one batch is decoded at a time."""
        from bench.audio import duration_samples

        lengths = {i: duration_samples(manifest.audio_path(examples[i]), examples[i].start, examples[i].end)
                   for i in missing}
        order = sorted(missing, key=lambda i: lengths[i])
        budget = int(self.batch_seconds * 16_000)
        batches, batch = [], []
        for i in order:
            if batch and lengths[i] * (len(batch) + 1) > budget:
                batches.append(batch)
                batch = []
            batch.append(i)
        if batch:
            batches.append(batch)
        for batch in batches:
            wavs = [load_audio(manifest.audio_path(examples[i]), examples[i].start, examples[i].end) for i in batch]
            for i, f in zip(batch, self.encoder(wavs)):
                _save_atomic(self._file(keys[i]), f.astype(np.float16))
            self.stats["extracted"] += len(batch)
            if advance:
                advance(len(batch))


def _save_atomic(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)
