"""The unit cache: one upstream layer → k-means → dedup, stored per utterance as (units, durations).

Key = sha1(upstream config id, layer, quantizer hash, audio hash + segment) — the same audio quantized by the same
centroids on the same upstream layer is computed once (the expensive step of SpeechPrompt's pipeline,
docs/papers.md). Features come from :class:`bench.features.store.FeatureStore`, so they are shared with the
baselines' cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from bench.core.errors import BenchError
from bench.data.manifest import Example, Manifest
from bench.units.dedup import dedup
from bench.units.kmeans import KMeansQuantizer


@dataclass(frozen=True)
class UnitSequence:
    """Deduplicated units of one utterance and the frame count of each run (pGSLM's duration stream)."""

    units: np.ndarray  # int64 [n]
    durations: np.ndarray  # int64 [n], sum = frames

    def __len__(self) -> int:
        return len(self.units)


class UnitStore:
    """Extract-once units for (upstream, layer, quantizer)."""

    def __init__(self, features, layer: int, quantizer: KMeansQuantizer, cache_dir: Path | None = None):
        from bench.core.paths import cache_dir as default_cache

        self.features = features  # bench.features.store.FeatureStore
        self.layer = int(layer)
        self.quantizer = quantizer
        self.root = Path(cache_dir or default_cache()) / "units"
        self.stats = {"computed": 0, "cached": 0}
        self._arrays = None

    @property
    def config_id(self) -> str:
        from bench.features.store import feature_cache_id

        up = feature_cache_id(self.features.upstream_name, self.features.upstream_path)  # units follow features
        return hashlib.sha1(f"{up}|layer={self.layer}|km={self.quantizer.hash}".encode()).hexdigest()[:16]

    def describe(self) -> dict:
        return {"upstream": self.features.upstream_name, "layer": self.layer, "K": self.quantizer.num_units,
                "quantizer_hash": self.quantizer.hash, "unit_cache_id": self.config_id,
                "feature_cache": self.features.keep}

    @property
    def arrays(self):
        from bench.core.arrayfile import ShardedArrayStore

        if self._arrays is None:
            self._arrays = ShardedArrayStore(self.root / f"{self.features.upstream_name}-{self.config_id}", axis=1)
        return self._arrays

    def get(self, manifest: Manifest, examples: Sequence[Example],
            advance: Callable[[int], object] | None = None) -> list[UnitSequence]:
        """Units for ``examples`` in order; features are extracted (and cached) only for missing ones."""
        keys = [self.features.key(manifest, ex) for ex in examples]
        stored = self.arrays.get_many(keys)
        missing = [i for i, a in enumerate(stored) if a is None]
        self._count(len(keys), missing, advance)
        for chunk, arrays in self._compute(manifest, examples, keys, missing, advance):
            for i, a in zip(chunk, arrays):
                stored[i] = a
        out = []
        for i, a in enumerate(stored):  # each stored array is let go once converted: not both lists at once
            out.append(UnitSequence(a[0].astype(np.int64), a[1].astype(np.int64)))
            stored[i] = None
        return out

    def ensure(self, manifest: Manifest, examples: Sequence[Example],
               advance: Callable[[int], object] | None = None) -> None:
        """Compute and cache the units of ``examples`` not cached yet, reading none that are (staging before the
        cells: loading a corpus's cached units only to drop them cost a Speech Commands run 100 MB)."""
        self._entries(manifest, examples, advance)

    def get_split(self, manifest: Manifest, examples: Sequence[Example],
                  advance: Callable[[int], object] | None = None, dtype=np.int64) -> "UnitSplit":
        """The units and durations of ``examples`` as two flat arrays and offsets (:class:`UnitSplit`): no Python
        object per utterance, for cells that keep a split of 10^5 utterances (``dtype``: the units' type; every
        value is checked to fit). Counts what was cached and computed as :meth:`get` does."""
        entries = self._entries(manifest, examples, advance)
        offsets = np.zeros(len(entries) + 1, dtype=np.int64)
        np.cumsum([e[2] for e in entries], out=offsets[1:])
        units = np.empty(int(offsets[-1]), dtype=dtype)
        durations = np.empty(int(offsets[-1]), dtype=np.int32)
        limit = np.iinfo(dtype).max
        reader = self.arrays.reader()
        try:
            for i, (shard, off, n) in enumerate(entries):
                try:
                    block = reader.read(shard, off, n)
                except (FileNotFoundError, ValueError) as e:
                    raise BenchError(f"unit cache shard {shard}.npy in {self.arrays.dir}: {e} (pruned or damaged "
                                     "while it was read?); run again to recompute it") from None
                if n and block[0].max() > limit:
                    raise BenchError(f"unit {int(block[0].max())} does not fit {np.dtype(dtype).name}")
                units[offsets[i]:offsets[i + 1]] = block[0]
                durations[offsets[i]:offsets[i + 1]] = block[1]
        finally:
            reader.close()
        return UnitSplit(units, durations, offsets)

    # -- shared ---------------------------------------------------------------------------------------------
    def _entries(self, manifest, examples, advance) -> list[tuple[str, int, int]]:
        """The cache entries (shard, offset, length) of ``examples``' units, computing the missing ones first; no
        stored array is read."""
        keys = [self.features.key(manifest, ex) for ex in examples]
        entries = self.arrays.entries(keys)
        missing = [i for i, e in enumerate(entries) if e is None]
        self._count(len(keys), missing, advance)
        if missing:
            for _ in self._compute(manifest, examples, keys, missing, advance):
                pass
            entries = self.arrays.entries(keys)
        if any(e is None for e in entries):
            raise BenchError(f"unit cache {self.arrays.dir}: units of {sum(e is None for e in entries)} utterance(s) "
                             "went missing while they were read (pruned by another process?); run again")
        return entries

    def _count(self, n: int, missing: list[int], advance) -> None:
        self.stats["cached"] += n - len(missing)
        if advance and len(missing) < n:
            advance(n - len(missing))

    def _compute(self, manifest, examples, keys, missing, advance):
        """Quantize the ``missing`` examples in chunks, so features of a whole split are never all in memory; one
        shard per chunk, yielded as (indices, [2, n] int32 arrays) once written. Only the unit layer is read (all
        that --feature-cache layers keeps; on the fly under pooled / none)."""
        for chunk in _chunks(self.features.extraction_groups(manifest, keys, missing), 256):
            arrays: list = [None] * len(chunk)
            reader = self.features.reader(manifest, [examples[i] for i in chunk], advance, plan=manifest.examples)
            try:
                for j, h in reader.iter_layer(self.layer):
                    u, d = dedup(self.quantizer.predict(h.astype(np.float32)))
                    arrays[j] = np.stack([u, d]).astype(np.int32)
            finally:
                reader.close()
            self.arrays.put_many([keys[i] for i in chunk], arrays)
            self.stats["computed"] += len(chunk)
            yield chunk, arrays


def _chunks(groups: list[list[int]], size: int) -> Iterator[list[int]]:
    """Whole groups (a batched upstream's extraction batches) gathered into chunks of about ``size``; a group
    larger than ``size`` is cut (features of its utterances come from its whole batch either way)."""
    chunk: list[int] = []
    for group in groups:
        for start in range(0, len(group), size):
            part = group[start:start + size]
            if chunk and len(chunk) + len(part) > size:
                yield chunk
                chunk = []
            chunk += part
    if chunk:
        yield chunk


@dataclass(frozen=True)
class UnitSplit:
    """A split's deduplicated units and run lengths, concatenated; utterance i is ``[offsets[i], offsets[i+1])``."""

    units: np.ndarray
    durations: np.ndarray  # int32
    offsets: np.ndarray  # int64 [n + 1]

    def __len__(self) -> int:
        return len(self.offsets) - 1


def fit_quantizer(features, items: Sequence[tuple[Manifest, Sequence[Example]]], layer: int, num_units: int,
                  seed: int, models_dir: Path | None = None, max_frames: int | None = 200_000,
                  n_init: int | None = None) -> KMeansQuantizer:
    """k-means on one layer of the given (training) examples of one or more manifests, cached under
    ``models_dir/kmeans/`` by a hash of (upstream config id, layer, K, seed, fitting options, the audio keys)."""
    from bench.core.paths import models_dir as default_models
    from bench.features.upstream import upstream_config_id

    keys = sorted(features.key(m, ex) for m, exs in items for ex in exs)
    up = upstream_config_id(features.upstream_name, features.upstream_path)
    ident = json.dumps({"upstream": up, "layer": layer, "K": num_units, "seed": seed, "max_frames": max_frames,
                        "n_init": n_init, "audio": hashlib.sha1("|".join(keys).encode()).hexdigest()},
                       sort_keys=True)
    h = hashlib.sha1(ident.encode()).hexdigest()[:16]
    path = Path(models_dir or default_models()) / "kmeans" / f"{features.upstream_name}-L{layer}-K{num_units}-{h}.npy"
    if path.is_file():
        return KMeansQuantizer.load(path)
    from bench.core.locks import build_lock

    with build_lock(path, f"the k-means quantizer {path}"):
        if path.is_file():  # fitted by another process while this one waited
            return KMeansQuantizer.load(path)
        return _fit(features, items, layer, num_units, seed, max_frames, n_init, keys, up, h, path)


def _fit(features, items, layer, num_units, seed, max_frames, n_init, keys, up, h, path) -> KMeansQuantizer:
    """The subsample's frame indices are drawn from the utterance lengths first (as :func:`fit_kmeans` draws
    them from the stacked frames: the same frames, the same quantizer), then only those frames of ``layer`` are
    read from the feature cache: memory is the subsample, not the training split."""
    from bench.units.kmeans import fit_kmeans_frames, sample_frames

    readers = [features.reader(manifest, list(exs), plan=manifest.examples) for manifest, exs in items]
    lengths = np.concatenate([r.lengths for r in readers]) if readers else np.zeros(0, dtype=np.int64)
    n_frames = int(lengths.sum())
    picked = sample_frames(n_frames, num_units, seed, max_frames)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
    parts: dict[int, np.ndarray] = {}  # utterance number -> its sampled frames (read in the reader's order)
    first = 0
    for reader in readers:
        want: dict[int, np.ndarray | None] = {}  # utterances with sampled frames -> which (None: every frame)
        for i in range(len(reader)):
            start, n = int(starts[first + i]), int(lengths[first + i])
            if n == 0:
                continue
            if picked is None:
                want[i] = None
                continue
            lo, hi = np.searchsorted(picked, [start, start + n])
            if hi > lo:
                want[i] = picked[lo:hi] - start
        for i, frames in reader.iter_layer(layer, want):
            parts[first + i] = (frames if want[i] is None else frames[want[i]]).astype(np.float32)
        first += len(reader)
        reader.close()
    x = np.concatenate([parts[u] for u in sorted(parts)], 0)
    q = fit_kmeans_frames(x, n_frames, num_units, seed, n_init=n_init,
                          meta={"upstream": features.upstream_name, "upstream_config_id": up, "layer": layer,
                                "utterances": len(keys), "fit_id": h})
    q.save(path)
    q.meta["source"] = str(path)  # as KMeansQuantizer.load would set it
    return q
