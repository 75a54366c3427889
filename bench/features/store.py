"""The feature cache: upstream hidden states per utterance, on disk, keyed by what produced them.

Key = sha1(upstream config id, audio content sha1, segment). A second run over the same audio with the same
upstream extracts nothing (HEAR's two-stage wall: expensive frozen extraction here, cheap training after).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from bench.core.arrayfile import ShardedArrayStore
from bench.data.audio import load_audio
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
    """Extract-once storage of (num_layers, frames, dim) float16 arrays for one upstream.

    Arrays live in shards of about ``shard_seconds`` of audio (see :class:`bench.core.arrayfile.ShardedArrayStore`:
    one file per utterance made the cache writes cost more than fbank itself)."""

    def __init__(self, upstream: str = "fbank", path: str | None = None, cache_dir: Path | None = None,
                 device: str = "cpu", batch_seconds: float = 32.0, shard_seconds: float = 600.0):
        from bench.core.paths import cache_dir as default_cache

        self.upstream_name = upstream
        self.upstream_path = path
        self.device = device
        self.batch_seconds = batch_seconds
        self.shard_seconds = shard_seconds
        self._arrays: ShardedArrayStore | None = None
        self._encoder = None
        self._config_id: str | None = None
        self.root = Path(cache_dir or default_cache()) / "features"
        self.hasher = AudioHasher(self.root / "audio-sha1-index.json")
        self.stats = {"extracted": 0, "cached": 0}

    @property
    def encoder(self):
        if self._encoder is None:
            from bench.features.upstream import build_upstream

            self._encoder = build_upstream(self.upstream_name, self.upstream_path, self.device)
        return self._encoder

    @property
    def info(self):
        return self.encoder.info

    def _dir(self) -> str:
        if self._config_id is None:
            from bench.features.upstream import upstream_config_id

            self._config_id = upstream_config_id(self.upstream_name, self.upstream_path)
        return os.path.join(self.root, f"{self.upstream_name}-{self._config_id}")

    @property
    def arrays(self) -> ShardedArrayStore:
        if self._arrays is None:
            self._arrays = ShardedArrayStore(os.path.join(self._dir(), "shards"), axis=1)
        return self._arrays

    def key(self, manifest: Manifest, ex: Example) -> str:
        seg = f"{ex.start}:{ex.end}" if ex.start is not None or ex.end is not None else ""
        return hashlib.sha1(f"{self.hasher(manifest, ex)}|{seg}".encode()).hexdigest()

    def get(self, manifest: Manifest, examples: Sequence[Example],
            advance: Callable[[int], object] | None = None) -> list[np.ndarray]:
        """Features for ``examples`` in order, extracting (in length-sorted batches) only what is missing."""
        keys = [self.key(manifest, ex) for ex in examples]
        self.hasher.save()
        out = self.arrays.get_many(keys)
        missing = [i for i, f in enumerate(out) if f is None]
        self.stats["cached"] += len(examples) - len(missing)
        if advance and len(missing) < len(examples):
            advance(len(examples) - len(missing))
        if missing:
            first: dict[str, int] = {}  # a resampled split repeats utterances: extract each key once
            for i in missing:
                first.setdefault(keys[i], i)
            unique = sorted(first.values())
            self._extract(manifest, examples, keys, unique, out, advance)
            for i in missing:
                if out[i] is None:
                    out[i] = out[first[keys[i]]]
                    if advance:
                        advance(1)
        return out  # type: ignore[return-value]

    @contextlib.contextmanager
    def _io_core(self):
        """A weight-free upstream (fbank, mfcc) on CPU is cheap enough that the I/O thread's decoding and writes
        are a large share of the work: give that thread a core of its own instead of a second torch thread
        (measured on 2 cores: 290x vs 255x real time, median of 3 cold runs each). Models with weights keep
        every thread."""
        import torch

        n = torch.get_num_threads()
        light = self.device == "cpu" and self.info.num_parameters == 0 and n > 1
        if light:
            torch.set_num_threads(n - 1)
        try:
            yield
        finally:
            if light:
                torch.set_num_threads(n)

    def _extract(self, manifest, examples, keys, missing, out, advance) -> None:
        """Length-sorted batches of at most ``batch_seconds`` audio, pipelined: one I/O thread decodes the next
        batch and writes each finished shard (~``shard_seconds`` of audio) while the upstream computes."""
        from concurrent.futures import ThreadPoolExecutor

        from bench.data.audio import duration_samples

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

        def decode(batch):
            return [load_audio(manifest.audio_path(examples[i]), examples[i].start, examples[i].end) for i in batch]

        def write(rows):
            self.arrays.put_many([keys[i] for i in rows], [out[i] for i in rows], save_index=False)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-feature-io") as io, self._io_core():
            decoded = io.submit(decode, batches[0])
            writes, unwritten, unwritten_samples = [], [], 0
            for b, batch in enumerate(batches):
                wavs = decoded.result()
                if b + 1 < len(batches):
                    decoded = io.submit(decode, batches[b + 1])
                for i, f in zip(batch, self.encoder(wavs)):
                    out[i] = f.astype(np.float16)
                unwritten += batch
                unwritten_samples += sum(lengths[i] for i in batch)
                if unwritten_samples >= self.shard_seconds * 16_000 or b + 1 == len(batches):
                    writes.append(io.submit(write, unwritten))
                    unwritten, unwritten_samples = [], 0
                self.stats["extracted"] += len(batch)
                if advance:
                    advance(len(batch))
            for w in writes:
                w.result()  # a failed cache write is an error, not a silent miss next time
        self.arrays.save_index()
