"""The feature cache: upstream hidden states per utterance, on disk, keyed by what produced them.

Key = sha1(upstream config id, audio content sha1, segment). A second run over the same audio with the same
upstream extracts nothing (HEAR's two-stage wall: expensive frozen extraction here, cheap training after).

Memory is bounded by a batch, not by the corpus: extraction holds one batch and one unwritten shard; readers
(:meth:`FeatureStore.reader`, :meth:`FeatureStore.pooled`) read utterances from the shard files as they are asked
for. Beside the frame-level states, each utterance's per-layer mean over its frames (what the linear probe reads)
is written at extraction time to a small store of its own.

``--feature-cache`` (:data:`FEATURE_CACHE_MODES`) says what is kept: every layer (``all``), the layers the reading
method names (``layers``: a ``shards-L<i>-<j>/`` store per layer set), the pooled means only (``pooled``) or
nothing (``none``). Under ``pooled`` and ``none`` a frame reader computes frames when they are read
(:class:`OnTheFlyReader`), with the cache's numbers. docs/feature-cache.md has the modes and their costs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import weakref
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from bench.core.arrayfile import ShardedArrayStore, ShardReader
from bench.core.errors import BenchError
from bench.data.audio import duration_samples, load_audio
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


# --feature-cache: what extraction keeps. all: every layer's frames and the pooled means (every method can read
# them); layers: the frames and pooled means of the layers the reading method names (``FeatureStore(layers=...)``:
# units read one layer, lstm and linear every layer), in a store per layer set; pooled: the pooled means only
# (what linear reads); none: nothing on disk, the pooled means are computed in memory at each run. Under pooled and
# none, methods that read frames (lstm, units) get an :class:`OnTheFlyReader`: the upstream runs per batch.
FEATURE_CACHE_MODES = ("all", "layers", "pooled", "none")
FRAME_MODES = ("all", "layers")  # the modes that write frame-level states
# bytes of a cached value: frame-level states are float16, the pooled means float32
FRAME_BYTES, POOLED_BYTES = 2, 4
# the cache's bookkeeping per utterance (its entries in the shard sidecars and indexes of both stores and its frame
# count line, ~40-character keys) and per shard (.npy header, sidecar) measured on fbank/mfcc caches
INDEX_BYTES_PER_UTTERANCE, COUNT_BYTES_PER_UTTERANCE, BYTES_PER_SHARD = 140, 45, 250


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes on the file system holding ``path`` (its nearest existing parent); tests patch this."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def pooled_mean(feats: np.ndarray) -> np.ndarray:
    """(layers, frames, dim) float16 → (layers, dim) float32: the exact mean over frames the linear probe trains
    on (float32 after the float16 cache, summed along frames in numpy's order for a C-ordered array)."""
    return np.ascontiguousarray(feats).astype(np.float32).mean(axis=1)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def check_layer(layer: int, num_layers: int) -> None:
    if not -num_layers <= layer < num_layers:
        raise BenchError(f"layer {layer} does not exist; the upstream has {num_layers} hidden-state layers "
                         f"(0..{num_layers - 1}, or negative from the end)")


class FeatureReader:
    """Random access to the cached features of a list of utterances (in the order given), read from the shard
    files one utterance at a time (``os.pread``, no memory map); it holds only the index entries and a few open
    files. Made by :meth:`FeatureStore.reader`, after the features are in the cache.

    - ``len(reader)``, ``reader.keys``; ``reader.lengths``: frames per utterance (from the index: reads no data)
    - ``reader[i]``: utterance ``i``'s (layers, frames, dim) float16 array, a fresh copy
    - ``reader.batch(indices)``: a list of those; ``reader.layer(i, layer)``: (frames, dim) of one layer only
    - ``reader.dims``: (layers, dim), checked to agree across the shards read
    - ``reader.iter_layer(layer, indices=None)``: (i, one layer of utterance i) for every i (or those given), in
      the order cheapest to read

    ``layers``: the upstream layers the arrays hold, in order, when not every one (``--feature-cache layers``);
    ``rows``: where they are in the shards, when those hold every layer (then only these rows are read);
    ``num_layers``: the upstream's layer count (what a negative ``layer`` counts from).
    """

    def __init__(self, arrays: ShardedArrayStore, keys: Sequence[str], layers: Sequence[int] | None = None,
                 rows: Sequence[int] | None = None, num_layers: int | None = None):
        self.keys = list(keys)
        self.layers = None if layers is None else list(layers)
        self.rows = None if rows is None else list(rows)
        self.num_layers = num_layers
        entries = arrays.entries(self.keys)
        absent = [k for k, e in zip(self.keys, entries) if e is None]
        if absent:
            raise BenchError(f"feature cache: {len(absent)} utterances are not cached (e.g. {absent[0]}); "
                             "FeatureStore.reader reads only what FeatureStore.ensure has extracted")
        self._entries: list[tuple[str, int, int]] = entries  # type: ignore[assignment]
        self._shards = ShardReader(arrays.dir, arrays.axis)
        self.lengths = np.array([e[2] for e in self._entries], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> np.ndarray:
        shard, off, n = self._entries[i]
        try:
            return self._shards.read(shard, off, n, rows=self.rows)
        except (FileNotFoundError, ValueError) as err:
            raise BenchError(f"feature cache shard {shard} is missing or damaged ({err}); run again to re-extract "
                             "(bench cache prune, or delete the upstream's cache directory)") from None

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def batch(self, indices: Sequence[int]) -> list[np.ndarray]:
        return [self[i] for i in indices]

    def layer(self, i: int, layer: int) -> np.ndarray:
        shard, off, n = self._entries[i]
        num_layers = self._shards.shape(shard)[0] if self.layers is None else self.num_layers
        check_layer(layer, num_layers)
        row = layer % num_layers
        if self.layers is not None:
            if row not in self.layers:
                raise BenchError(f"layer {layer} is not cached: this --feature-cache layers store keeps layers "
                                 f"{self.layers} only (the layers of the method that wrote it)")
            row = self.layers.index(row)
        if self.rows is not None:
            row = self.rows[row]
        return self._shards.read(shard, off, n, rows=[row])[0]

    def iter_layer(self, layer: int, indices: Iterable[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(i, ``self.layer(i, layer)``) for every utterance (or those of ``indices``), in the order cheapest to
        read (here: in order)."""
        return ((i, self.layer(i, layer)) for i in (range(len(self)) if indices is None else sorted(indices)))

    @property
    def dims(self) -> tuple[int, int]:
        shapes = {(s[0] if self.rows is None else len(self.rows), s[2])
                  for s in (self._shards.shape(sh) for sh in {e[0] for e in self._entries})}
        if len(shapes) != 1:
            raise BenchError(f"cached features disagree in (layers, dim): {sorted(shapes)[:4]}; clear the feature "
                             "cache for this upstream")
        return shapes.pop()

    def close(self) -> None:
        self._shards.close()


def extraction_batches(indices: Sequence[int], lengths: dict[int, int], batch_seconds: float) -> list[list[int]]:
    """How :meth:`FeatureStore._extract` batches ``indices``: sorted by length (header samples), cut where a
    batch's padded audio would pass ``batch_seconds``. :class:`OnTheFlyReader` batches a batched upstream the same
    way: its features of an utterance differ in the last bits with the rest of the batch (Whisper: ~1e-5)."""
    budget = int(batch_seconds * 16_000)
    batches, batch = [], []
    for i in sorted(indices, key=lambda i: lengths[i]):
        if batch and lengths[i] * (len(batch) + 1) > budget:
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    return batches


def split_batches(examples: Sequence[Example], indices: Sequence[int], lengths: dict[int, int],
                  batch_seconds: float) -> list[list[int]]:
    """:func:`extraction_batches` of ``indices`` split by split (in the order the splits first appear): a batch
    never mixes splits, so extracting the training split (k-means, an LM's pre-training) reads training audio only,
    and a split's bits do not depend on the other splits."""
    by_split: dict[str, list[int]] = {}
    for i in indices:
        by_split.setdefault(examples[i].split, []).append(i)
    return [b for part in by_split.values() for b in extraction_batches(part, lengths, batch_seconds)]


def feature_cache_id(upstream: str, path: str | None = None) -> str:
    """The id of an upstream's feature cache directory (and of the unit caches built on it): its
    ``upstream_config_id``, and for upstreams that may batch (Whisper, HF) the batching's version. Their features
    cached before 2026-12-05 came from batches that crossed splits and depended on which caller asked first
    (:func:`split_batches`); those directories are not read again, so every cached utterance has today's bits."""
    from bench.features.contract import upstream_config_id

    cid = upstream_config_id(upstream, path)
    if upstream.startswith(("whisper_", "hf_")):
        cid = hashlib.sha1(f"{cid}|split-batches".encode()).hexdigest()[:16]
    return cid


def exact_samples(path, start: float | None = None, end: float | None = None) -> int:
    """The number of samples :func:`bench.data.audio.load_audio` returns, without decoding 16 kHz audio (its
    header and segment arithmetic); audio at another rate is decoded and resampled (its length is libsoxr's)."""
    import soundfile as sf

    from bench.core.errors import AudioReadError

    try:
        with sf.SoundFile(str(path)) as f:
            sr, total = f.samplerate, f.frames
    except (RuntimeError, sf.LibsndfileError, OSError) as err:
        raise AudioReadError(f"cannot read audio file {path}: {err}") from None
    if sr != 16_000:
        return len(load_audio(path, start, end))
    first = int(round(start * sr)) if start is not None else 0
    last = int(round(end * sr)) if end is not None else total
    return max(0, min(last, total) - first)


class OnTheFlyReader:
    """:class:`FeatureReader`'s interface over features the upstream computes when they are asked for
    (``--feature-cache pooled | none``: nothing frame-level on disk; s3prl's training loop likewise runs its
    upstream on each batch, the sensible choice on a GPU). Made by :meth:`FeatureStore.reader`.

    ``lengths`` are the exact frame counts the upstream gives (its ``num_frames`` of each utterance's sample count,
    read from the audio header; an encoder without ``num_frames`` is run once over the utterances first, keeping
    only the counts). Arrays are float16, cast as the cache casts them, so a method reads the numbers it would read
    from ``--feature-cache all``:

    - an upstream run one utterance at a time (every s3prl upstream, HF group-norm models) gives the same bits in
      any batch: ``reader[i]`` computes a window (``i`` and the utterances after it, up to the store's
      ``batch_seconds`` of padded audio) and keeps that window only; ``reader.batch(indices)`` computes those.
    - a batched upstream (Whisper, HF layer-norm models) gives bits that depend on the rest of its batch
      (~1e-5): utterances are computed in the batches a cold :meth:`FeatureStore.ensure` of ``plan`` (default:
      ``examples``; a method's stage extracts the whole manifest) would form (:func:`split_batches`: length-sorted
      within each split), one such batch in memory at a time. That costs the other utterances of those batches
      too."""

    def __init__(self, store: "FeatureStore", manifest: Manifest, examples: Sequence[Example],
                 advance: Callable[[int], object] | None = None, plan: Sequence[Example] | None = None):
        self._store, self._manifest, self._examples = store, manifest, list(examples)
        self.keys = store._keys(manifest, self._examples)
        self._samples = [exact_samples(manifest.audio_path(ex), ex.start, ex.end) for ex in self._examples]
        self.lengths = np.array(store.num_frames(self._samples, manifest, self._examples), dtype=np.int64)
        self._window: dict = {}
        self._groups: list[list[Example]] | None = None  # a batched upstream: the extraction batches of plan
        if store.batched:
            plan_exs, _, _, batches, group_of = store._batches_of(manifest, self._examples if plan is None else plan)
            absent = sorted({k for k in self.keys if k not in group_of})
            if absent:
                raise BenchError(f"on-the-fly features: {len(absent)} utterances are not in the extraction plan")
            self._groups = [[plan_exs[j] for j in b] for b in batches]
            self._group_of = group_of
            self._row: dict[str, int] = {}  # key -> reader index (for the frame-count check)
            for i, k in enumerate(self.keys):
                self._row.setdefault(k, i)
        if advance:
            advance(len(self._examples))

    def __len__(self) -> int:
        return len(self._examples)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def _chunks(self, indices: Iterable[int]) -> Iterator[list[int]]:
        """``indices`` in order, cut where a chunk's padded audio would pass the store's ``batch_seconds``."""
        budget = int(self._store.batch_seconds * 16_000)
        chunk, longest = [], 0
        for i in indices:
            longest_next = max(longest, self._samples[i])
            if chunk and longest_next * (len(chunk) + 1) > budget:
                yield chunk
                chunk, longest_next = [], self._samples[i]
            chunk.append(i)
            longest = longest_next
        if chunk:
            yield chunk

    def _compute_group(self, g: int) -> dict[str, np.ndarray]:
        """Features of extraction batch ``g`` of the plan, by key (only those this reader reads)."""
        exs = self._groups[g]
        wavs = [load_audio(self._manifest.audio_path(ex), ex.start, ex.end) for ex in exs]
        feats = self._store.encoder(wavs)
        del wavs
        self._store.stats["extracted"] += len(exs)
        out = {}
        for ex, f in zip(exs, feats):
            k = self._store.key(self._manifest, ex)
            if k in self._row:
                self._check(self._row[k], f)
                out[k] = f.astype(np.float16)  # as FeatureStore._extract casts
        return out

    def _check(self, i: int, f: np.ndarray) -> None:
        if f.shape[1] != self.lengths[i]:
            raise BenchError(f"upstream '{self._store.upstream_name}' gave {f.shape[1]} frames for "
                             f"{self._examples[i].id}, its num_frames said {self.lengths[i]}")

    def _compute(self, indices: Sequence[int]) -> list[np.ndarray]:
        if self._groups is not None:
            need = [self.keys[i] for i in indices]
            got: dict[str, np.ndarray] = {}
            for g in dict.fromkeys(self._group_of[k] for k in need):
                computed = self._compute_group(g)
                got.update((k, computed[k]) for k in need if k in computed)
            return [got[k] for k in need]
        out = []
        for chunk in self._chunks(indices):
            wavs = [load_audio(self._manifest.audio_path(self._examples[i]), self._examples[i].start,
                               self._examples[i].end) for i in chunk]
            feats = [f.astype(np.float16) for f in self._store.encoder(wavs)]  # as FeatureStore._extract casts
            del wavs
            for i, f in zip(chunk, feats):
                self._check(i, f)
            self._store.stats["extracted"] += len(chunk)
            out += feats
        return out

    def __getitem__(self, i: int) -> np.ndarray:
        if self._groups is not None:
            key = self.keys[i]
            if key not in self._window:
                self._window = {}  # one extraction batch in memory
                self._window = self._compute_group(self._group_of[key])
            return self._window[key]
        if i not in self._window:
            self._window = {}  # one window in memory
            ahead = next(self._chunks(range(i, len(self))))
            self._window = dict(zip(ahead, self._compute(ahead)))
        return self._window[i]

    def batch(self, indices: Sequence[int]) -> list[np.ndarray]:
        return self._compute(list(indices))

    def layer(self, i: int, layer: int) -> np.ndarray:
        check_layer(layer, self.dims[0])
        return self[i][layer]

    def iter_layer(self, layer: int, indices: Iterable[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(i, ``self.layer(i, layer)``) for every utterance (or those of ``indices``), each computed once: in
        index order, or extraction batch by extraction batch for a batched upstream (reading those in index
        order would compute a batch again for each of its utterances)."""
        check_layer(layer, self.dims[0])
        wanted = range(len(self)) if indices is None else sorted(indices)
        if self._groups is None:
            for i in wanted:
                yield i, self[i][layer]
            return
        rows: dict[str, list[int]] = {}
        for i in wanted:
            rows.setdefault(self.keys[i], []).append(i)
        for g in dict.fromkeys(self._group_of[k] for k in rows):
            for k, f in self._compute_group(g).items():
                for i in rows.get(k, ()):
                    yield i, f[layer]

    @property
    def dims(self) -> tuple[int, int]:
        info = self._store.info
        return int(info.num_layers), int(info.hidden_size)

    def close(self) -> None:
        self._window = {}


class PooledReader:
    """The per-utterance pooled means of a list of utterances (in the order given), read from the pooled store's
    shards as they are asked for (``os.pread``, one utterance a read): memory is what the caller keeps, so a linear
    probe on 150k utterances holds a batch, not N x layers x dim floats. Made by :meth:`FeatureStore.pooled_reader`.

    - ``len(reader)``; ``reader.lengths``: frames per utterance; ``reader.dims``: (layers, dim)
    - ``reader.rows(indices)``: an (len(indices), layers, dim) float32 array, a fresh copy
    - ``reader.nbytes``: what :meth:`rows` of every utterance would hold
    """

    def __init__(self, directory: str | None, entries: Sequence[tuple[str, int, int]], lengths: np.ndarray,
                 memory: np.ndarray | None = None):
        self._entries = list(entries)
        self._memory = memory
        self._shards = ShardReader(directory, axis=0) if directory is not None else None
        self.lengths = lengths
        if memory is not None:
            self.dims = (int(memory.shape[1]), int(memory.shape[2]))
        else:
            shapes = {self._shards.shape(sh)[1:] for sh in {e[0] for e in self._entries}}
            if len(shapes) != 1:
                raise BenchError(f"cached pooled features disagree in (layers, dim): {sorted(shapes)[:4]}; clear "
                                 "the feature cache for this upstream")
            layers, dim = shapes.pop()
            self.dims = (int(layers), int(dim))

    @classmethod
    def in_memory(cls, means: np.ndarray, lengths: np.ndarray) -> "PooledReader":
        return cls(None, [], lengths, memory=means)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def nbytes(self) -> int:
        return len(self) * self.dims[0] * self.dims[1] * POOLED_BYTES

    def rows(self, indices: Sequence[int]) -> np.ndarray:
        indices = list(indices)
        if self._memory is not None:
            return np.ascontiguousarray(self._memory[indices])
        out = np.empty((len(indices),) + self.dims, dtype=np.float32)
        for j, i in enumerate(indices):
            shard, off, n = self._entries[i]
            try:
                out[j] = self._shards.read(shard, off, n)[0]
            except (FileNotFoundError, ValueError) as err:
                raise BenchError(f"feature cache shard pooled/{shard} is missing or damaged ({err}); run again to "
                                 "re-extract (bench cache prune, or delete the upstream's cache directory)") from None
        return out

    def close(self) -> None:
        if self._shards is not None:
            self._shards.close()


class FeatureStore:
    """Extract-once storage of (num_layers, frames, dim) float16 arrays for one upstream.

    Arrays live in shards of about ``shard_seconds`` of audio or ``shard_bytes``, whichever comes first (see :class:`bench.core.arrayfile.ShardedArrayStore`:
    one file per utterance made the cache writes cost more than fbank itself). ``keep``: what extraction writes
    (``--feature-cache``, :data:`FEATURE_CACHE_MODES`): ``"all"`` (every layer's frames and the pooled means),
    ``"layers"`` (frames and means of ``layers`` only, in their own ``shards-L<i>-<j>/`` and ``pooled-L...``
    stores, so a later run reading the same layers finds them; every layer, the ``all`` stores, when ``layers`` is
    None), ``"pooled"`` (the pooled means only) or ``"none"``; under the last two :meth:`reader` computes frames
    on the fly (:class:`OnTheFlyReader`). ``layers``: the hidden-state layers the caller reads (None: every one).
    ``log``: where the one-line size estimate before an extraction goes.

    Reading API (memory bounded by what the caller holds, never a whole split):
    :meth:`ensure` (extract what is missing, return the keys), :meth:`reader` (a :class:`FeatureReader`),
    :meth:`pooled` (an (N, layers, dim) float32 array of per-utterance means), :meth:`get` (a list of whole
    arrays, for callers that want them all)."""

    def __init__(self, upstream: str = "fbank", path: str | None = None, cache_dir: Path | None = None,
                 device: str = "cpu", batch_seconds: float = 32.0, shard_seconds: float = 600.0,
                 shard_bytes: int = 64 * 2**20, keep: str = "all", log: Callable[[str], object] | None = None,
                 task: str | None = None, layers: Sequence[int] | None = None):
        from bench.core.paths import cache_dir as default_cache

        if keep not in FEATURE_CACHE_MODES:
            raise BenchError(f"feature cache mode '{keep}' is not one of {', '.join(FEATURE_CACHE_MODES)}")
        self.upstream_name = upstream
        self.upstream_path = path
        self.device = device
        self.batch_seconds = batch_seconds
        self.shard_seconds = shard_seconds
        self.shard_bytes = shard_bytes  # a shard also closes at this many bytes: a shard's buffer is what
        # extraction holds (three times, while the I/O thread concatenates and writes it), whatever the upstream
        self.keep = keep
        self.layers = None if layers is None else tuple(int(x) for x in layers)
        self.log = log
        self.task = task  # recorded in the cache's usage log (``bench cache`` lists and prunes by it)
        self._memory: dict[str, tuple[np.ndarray, int]] = {}  # keep="none": key -> (pooled mean, frames)
        self._plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # manifest -> its extraction plan
        self._arrays: ShardedArrayStore | None = None
        self._pooled: ShardedArrayStore | None = None
        self._frames: ShardedArrayStore | None = None
        self._encoder = None
        self._config_id: str | None = None
        self.root = Path(cache_dir or default_cache()) / "features"
        self.hasher = AudioHasher(self.root / "audio-sha1-index.json")
        self.stats = {"extracted": 0, "cached": 0}
        self.last_estimate: dict | None = None  # the estimate of the last extraction (bytes, free, hours)

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
            self._config_id = feature_cache_id(self.upstream_name, self.upstream_path)
        return os.path.join(self.root, f"{self.upstream_name}-{self._config_id}")

    def num_layers(self) -> int:
        """The upstream's hidden-state layer count (from the known table when it has it: no model is built)."""
        from bench.features.featurizer import KNOWN_UPSTREAMS

        if self.upstream_path is None and self.upstream_name in KNOWN_UPSTREAMS:
            return KNOWN_UPSTREAMS[self.upstream_name][1]
        return int(self.info.num_layers)

    @property
    def kept_layers(self) -> tuple[int, ...] | None:
        """The layers a ``--feature-cache layers`` store keeps for this caller (sorted, counted from 0); None:
        every layer (modes other than ``layers``, or a caller reading every layer)."""
        if self.keep != "layers" or self.layers is None:
            return None
        n = self.num_layers()
        for layer in self.layers:
            check_layer(layer, n)
        kept = tuple(sorted({layer % n for layer in self.layers}))
        return None if len(kept) == n else kept

    def _suffix(self) -> str:
        kept = self.kept_layers
        return "" if kept is None else "-L" + "-".join(str(x) for x in kept)

    @property
    def arrays(self) -> ShardedArrayStore:
        """Every layer's frames (``shards/``: ``--feature-cache all``)."""
        if self._arrays is None:
            self._arrays = ShardedArrayStore(os.path.join(self._dir(), "shards"), axis=1)
        return self._arrays

    @property
    def frame_arrays(self) -> ShardedArrayStore:
        """Where this store's extraction writes frames: :attr:`arrays`, or the kept layers' ``shards-L...``."""
        if self._frames is None:
            suffix = self._suffix()
            self._frames = self.arrays if not suffix else ShardedArrayStore(
                os.path.join(self._dir(), "shards" + suffix), axis=1)
        return self._frames

    @property
    def pooled_arrays(self) -> ShardedArrayStore:
        """Per-utterance (1, layers, dim) float32 means (of the kept layers), concatenated on axis 0."""
        if self._pooled is None:
            self._pooled = ShardedArrayStore(os.path.join(self._dir(), "pooled" + self._suffix()), axis=0)
        return self._pooled

    def key(self, manifest: Manifest, ex: Example) -> str:
        seg = f"{ex.start}:{ex.end}" if ex.start is not None or ex.end is not None else ""
        return hashlib.sha1(f"{self.hasher(manifest, ex)}|{seg}".encode()).hexdigest()

    def _keys(self, manifest: Manifest, examples: Sequence[Example]) -> list[str]:
        keys = [self.key(manifest, ex) for ex in examples]
        self.hasher.save()
        return keys

    def _fill(self, manifest, examples, keys, present: list[bool], advance) -> None:
        """Extract the utterances not ``present`` (each key once), counting stats and progress as ``get`` did."""
        missing = [i for i, p in enumerate(present) if not p]
        self.stats["cached"] += len(examples) - len(missing)
        if advance and len(missing) < len(examples):
            advance(len(examples) - len(missing))
        if missing:
            first: dict[str, int] = {}  # a resampled split repeats utterances: extract each key once
            for i in missing:
                first.setdefault(keys[i], i)
            unique = sorted(first.values())
            planned = self._planned_batches(manifest, set(first)) if self.batched else None
            if planned is None:
                lengths = {i: duration_samples(manifest.audio_path(examples[i]), examples[i].start, examples[i].end)
                           for i in unique}
                batches = split_batches(examples, unique, lengths, self.batch_seconds)
                self._extract(manifest, examples, keys, batches, lengths, set(unique), set(unique), advance)
            else:
                plan, plan_keys, lengths, batches = planned
                members = [j for b in batches for j in b]
                asked = {j for j in members if plan_keys[j] in first}
                self._extract(manifest, plan, plan_keys, batches, lengths,
                              asked | self._absent(plan_keys, [j for j in members if j not in asked]), asked, advance)
            if advance and len(missing) > len(unique):
                advance(len(missing) - len(unique))

    @property
    def batched(self) -> bool:
        """Whether the upstream's features of an utterance depend (in the last bits) on the rest of its batch:
        Whisper and HF layer-norm models run a padded batch; s3prl upstreams and HF group-norm models run one
        utterance at a time (``per_utterance``) or refuse a batch (``batch_safe`` False)."""
        enc = self.encoder
        return not (getattr(enc, "per_utterance", False) or getattr(enc, "batch_safe", True) is False)

    def _batches_of(self, manifest: Manifest, plan: Sequence[Example]):
        """(``plan`` as a list, its keys, {index: samples}, the extraction batches of a cold extraction of
        ``plan`` (each key once, at its first place; :func:`split_batches`), {key: its batch}). The plan of
        ``manifest.examples`` (what a method's stage extracts first) is kept per manifest object: its headers are
        read once, however many callers ask."""
        whole = plan is manifest.examples
        if whole and manifest in self._plans:
            return self._plans[manifest]
        plan = list(plan)
        keys = self._keys(manifest, plan)
        first: dict[str, int] = {}
        for j, k in enumerate(keys):
            first.setdefault(k, j)
        unique = sorted(first.values())
        lengths = {j: duration_samples(manifest.audio_path(plan[j]), plan[j].start, plan[j].end) for j in unique}
        batches = split_batches(plan, unique, lengths, self.batch_seconds)
        out = (plan, keys, lengths, batches, {keys[j]: g for g, b in enumerate(batches) for j in b})
        if whole:
            self._plans[manifest] = out
        return out

    def _planned_batches(self, manifest: Manifest, need: set[str]):
        """(manifest examples, their keys, {index: samples}, the batches of a cold whole-manifest extraction that
        hold a key of ``need``): a batched upstream's utterance gets the bits of its batch there (its split's
        utterances of similar length), whichever caller asks for it first (a baseline's stage, a chunk of 256 for
        units, k-means' training split). None when ``need`` holds a key the manifest does not (examples from
        elsewhere: batched as given)."""
        plan, keys, lengths, batches, group = self._batches_of(manifest, manifest.examples)
        if not need <= group.keys():
            return None
        return plan, keys, lengths, [batches[g] for g in sorted({group[k] for k in need})]

    def extraction_groups(self, manifest: Manifest, keys: Sequence[str], indices: Sequence[int]
                          ) -> list[list[int]]:
        """``indices`` (of the caller's examples, whose cache ``keys`` it has) grouped by their batch of a cold
        whole-manifest extraction, in that extraction's order, for a caller that reads them a chunk at a time
        (units): a chunk of whole groups computes each batch once. One group in the given order for an upstream
        that does not batch."""
        if not self.batched or not indices:
            return [list(indices)]
        group = self._batches_of(manifest, manifest.examples)[4]
        mine = [keys[i] for i in indices]
        if not set(mine) <= group.keys():
            return [list(indices)]
        out: dict[int, list[int]] = {}
        for i, k in sorted(zip(indices, mine), key=lambda ik: group[ik[1]]):
            out.setdefault(group[k], []).append(i)
        return list(out.values())

    def _absent(self, keys: Sequence[str], indices: Sequence[int]) -> set[int]:
        """The ``indices`` whose key the store this mode writes does not hold yet (under ``none``: all of them,
        their means go to memory)."""
        if self.keep in FRAME_MODES:
            held = self.frame_arrays.entries([keys[i] for i in indices])
        elif self.keep == "pooled":
            held = self.pooled_arrays.entries([keys[i] for i in indices])
        else:
            return set(indices)
        return {i for i, e in zip(indices, held) if e is None}

    def ensure(self, manifest: Manifest, examples: Sequence[Example],
               advance: Callable[[int], object] | None = None) -> list[str]:
        """Extract (in length-sorted batches) and cache the frame-level features of ``examples`` that are not
        cached yet (of the kept layers under ``layers``); return their cache keys in order. Holds at most a batch
        and one unwritten shard in memory. Under ``pooled`` and ``none`` nothing frame-level is cached: nothing
        is extracted here (:meth:`reader` computes frames when they are read)."""
        keys = self._keys(manifest, examples)
        if self.keep in FRAME_MODES:
            self._frame_source(manifest, examples, keys, advance)
        return keys

    def _frame_source(self, manifest, examples, keys, advance) -> tuple[ShardedArrayStore, list[int] | None]:
        """(the store holding every key's frames, the rows of the kept layers in it when it holds every layer),
        extracting what is missing into :attr:`frame_arrays`. A ``layers`` reader whose utterances are all in
        the every-layer store (written by ``--feature-cache all``) reads its layers from there."""
        store = self.frame_arrays
        present = [e is not None for e in store.entries(keys)]
        kept = self.kept_layers
        if kept is not None and not all(present) and all(e is not None for e in self.arrays.entries(keys)):
            self.stats["cached"] += len(keys)
            if advance:
                advance(len(keys))
            self._note_use(["shards/" + e[0] for e in self.arrays.entries(keys) if e is not None])
            return self.arrays, list(kept)
        self._fill(manifest, examples, keys, present, advance)
        if self.task:
            frames, pooled = os.path.basename(store.dir), os.path.basename(self.pooled_arrays.dir)
            self._note_use([f"{frames}/" + e[0] for e in store.entries(keys) if e is not None]
                           + [f"{pooled}/" + e[0] for e in self.pooled_arrays.entries(keys) if e is not None])
        return store, None

    def reader(self, manifest: Manifest, examples: Sequence[Example],
               advance: Callable[[int], object] | None = None,
               plan: Sequence[Example] | None = None) -> FeatureReader | OnTheFlyReader:
        """A reader over ``examples`` (in order): a :class:`FeatureReader` of the cache, extracting first what is
        missing, or under ``pooled`` / ``none`` an :class:`OnTheFlyReader` (nothing written) that batches a
        batched upstream as an extraction of ``plan`` would (the examples the method's stage would extract)."""
        if self.keep not in FRAME_MODES:
            return OnTheFlyReader(self, manifest, examples, advance, plan)
        keys = self._keys(manifest, examples)
        store, rows = self._frame_source(manifest, examples, keys, advance)
        return FeatureReader(store, keys, layers=self.kept_layers, rows=rows,
                             num_layers=self.num_layers() if self.kept_layers is not None else None)

    def num_frames(self, samples: Sequence[int], manifest: Manifest | None = None,
                   examples: Sequence[Example] | None = None) -> list[int]:
        """Frames the upstream gives for utterances of these sample counts: the encoder's ``num_frames`` where
        it has one (every bench encoder: s3prl, HF, Whisper); else one pass of the upstream over ``examples``
        (a batch at a time, keeping the counts only)."""
        encoder = self.encoder
        if hasattr(encoder, "num_frames"):
            return [int(encoder.num_frames(int(n))) for n in samples]
        if manifest is None or examples is None:
            raise BenchError(f"upstream '{self.upstream_name}' has no num_frames; its frame counts need the audio")
        counts: list[int] = []
        for start in range(0, len(examples), 16):
            wavs = [load_audio(manifest.audio_path(ex), ex.start, ex.end) for ex in examples[start:start + 16]]
            counts += [int(f.shape[1]) for f in encoder(wavs)]
        return counts

    def get(self, manifest: Manifest, examples: Sequence[Example],
            advance: Callable[[int], object] | None = None) -> list[np.ndarray]:
        """Features for ``examples`` in order, extracting only what is missing: every array in memory at once,
        so for a bounded number of utterances (a chunk); stream larger sets with :meth:`reader`."""
        reader = self.reader(manifest, examples, advance)
        try:
            return [reader[i] for i in range(len(reader))]
        finally:
            reader.close()

    def pooled(self, manifest: Manifest, examples: Sequence[Example],
               advance: Callable[[int], object] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(per-utterance means over frames, (N, layers, dim) float32 — :func:`pooled_mean` of each cached
        array; frames per utterance, (N,) int64), all in memory: N x layers x dim floats. For a split of a real
        corpus read them as they are needed instead, with :meth:`pooled_reader`."""
        reader = self.pooled_reader(manifest, examples, advance)
        try:
            return reader.rows(range(len(reader))), reader.lengths
        finally:
            reader.close()

    def pooled_reader(self, manifest: Manifest, examples: Sequence[Example],
                      advance: Callable[[int], object] | None = None) -> "PooledReader":
        """A :class:`PooledReader` over the per-utterance means of ``examples`` (in order). Read from the pooled
        store; means missing there are computed from cached frames (and stored), or extracted. Never holds more
        than one utterance's frames; under ``--feature-cache none`` the means are computed here and held."""
        keys = self._keys(manifest, examples)
        if not keys:
            raise BenchError("pooled features of no utterances asked for")
        if self.keep == "none":
            self._fill(manifest, examples, keys, [False] * len(keys), advance)  # extracted into self._memory
            out = np.stack([self._memory[k][0] for k in keys])
            lengths = np.array([self._memory[k][1] for k in keys], dtype=np.int64)
            self._memory.clear()
            return PooledReader.in_memory(out, lengths)
        pooled = self.pooled_arrays.entries(keys)
        need = [i for i, e in enumerate(pooled) if e is None]
        frames = self.frame_arrays.entries([keys[i] for i in need]) if need else []
        from_frames = {keys[i] for i, e in zip(need, frames) if e is not None}
        present = [e is not None or keys[i] in from_frames for i, e in enumerate(pooled)]
        self._fill(manifest, examples, keys, present, advance)
        if from_frames:
            self._pool_cached(sorted(from_frames))
        entries = self.pooled_arrays.entries(keys)
        self._note_use(["pooled/" + e[0] for e in entries])
        return PooledReader(self.pooled_arrays.dir, entries, np.array(self._frame_counts(keys), dtype=np.int64))

    def prepare_pooled(self, manifest: Manifest, examples: Sequence[Example],
                       advance: Callable[[int], object] | None = None) -> None:
        """Extract what :meth:`pooled` will read (the stage of a method that reads pooled means only)."""
        if self.keep == "none":
            return  # computed in the run itself
        if self.keep in FRAME_MODES:
            self.ensure(manifest, examples, advance)
        else:
            self.pooled(manifest, examples, advance)

    def _note_use(self, shards: Sequence[str]) -> None:
        """Append (task, time, shards read or written) to the upstream's ``usage.jsonl`` (one ``write``: lines of
        processes running at once do not mix); ``bench cache`` reads it."""
        if not self.task or self.keep == "none":
            return
        import time

        line = json.dumps({"task": self.task, "time": round(time.time(), 1), "shards": sorted(set(shards))},
                          separators=(",", ":")) + "\n"
        try:
            os.makedirs(self._dir(), exist_ok=True)
            fd = os.open(os.path.join(self._dir(), "usage.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError:
            pass  # bookkeeping for `bench cache`; never a reason to fail a run

    def _frame_counts(self, keys: Sequence[str]) -> list[int]:
        """Frames per utterance, from the pooled store's sidecar ``frames`` file."""
        counts = _read_counts(self.pooled_arrays.dir)
        lost = [k for k in keys if k not in counts]
        if lost:
            for k, e in zip(lost, self.frame_arrays.entries(lost)):
                if e is None:
                    raise BenchError(f"feature cache: no frame count for {k} in {self.pooled_arrays.dir}; "
                                     "delete that directory to rebuild it")
                counts[k] = e[2]
        return [counts[k] for k in keys]

    def _pool_cached(self, keys: Sequence[str], chunk: int = 512) -> None:
        """Pooled means of utterances whose frames are cached but whose means are not (caches written before
        the pooled store existed), in chunks: one shard per chunk."""
        reader = FeatureReader(self.frame_arrays, keys)
        try:
            for start in range(0, len(keys), chunk):
                rows = range(start, min(start + chunk, len(keys)))
                self._put_pooled([keys[i] for i in rows], [reader[i] for i in rows])
        finally:
            reader.close()

    def _put_pooled(self, keys: Sequence[str], feats: Sequence[np.ndarray], save_index: bool = True) -> None:
        _write_counts(self.pooled_arrays.dir, {k: int(f.shape[1]) for k, f in zip(keys, feats)})  # counts first
        self.pooled_arrays.put_many(list(keys), [pooled_mean(f)[None] for f in feats], save_index=save_index)

    # -- the cache budget ---------------------------------------------------------------------------------
    def estimate(self, samples: Sequence[int]) -> dict:
        """Bytes extraction of utterances of these lengths (16 kHz samples) writes: hours × frames/s × layers ×
        dim × 2 bytes (float16) of frames (when kept), plus layers × dim × 4 bytes of pooled means each; layers =
        the kept layers under ``layers``."""
        info = self.info
        rate = int(info.downsample_rate)
        frames = sum(-(-int(n) // rate) for n in samples)
        layers = len(self.kept_layers or ()) or info.num_layers
        per_frame = layers * info.hidden_size * FRAME_BYTES
        frame_bytes = frames * per_frame if self.keep in FRAME_MODES else 0
        pooled_bytes = len(samples) * layers * info.hidden_size * POOLED_BYTES
        hours = sum(samples) / 16_000 / 3600
        stores = 2 if self.keep in FRAME_MODES else 1
        shards = 1 + int(sum(samples) / 16_000 / max(self.shard_seconds, self.batch_seconds))
        overhead = (len(samples) * (stores * INDEX_BYTES_PER_UTTERANCE + COUNT_BYTES_PER_UTTERANCE)
                    + stores * shards * BYTES_PER_SHARD)
        return {"bytes": frame_bytes + pooled_bytes + overhead, "hours": hours, "frames_per_second": 16_000 / rate,
                "layers": layers, "dim": info.hidden_size, "utterances": len(samples), "keep": self.keep}

    def _check_budget(self, samples: Sequence[int]) -> None:
        est = self.estimate(samples)
        free = free_bytes(self.root)
        est["free"] = free
        self.last_estimate = est
        if self.keep in FRAME_MODES:  # one short line (it must fit 80 columns): the formula and the free space
            what = (f"{est['hours']:.2f} h x {est['frames_per_second']:g}/s x {est['layers']} x {est['dim']} x "
                    f"{FRAME_BYTES} B")
        else:
            what = f"{est['utterances']} x {est['layers']} x {est['dim']} x {POOLED_BYTES} B"
        mode = "" if self.keep == "all" else f" ({self.keep})"
        line = f"feature cache{mode}: ~{human_bytes(est['bytes'])} ({what}); {human_bytes(free)} free"
        if self.log:
            self.log(line)
        if est["bytes"] > free:
            raise BenchError(f"the feature cache would not fit: {human_bytes(est['bytes'])} needed, "
                             f"{human_bytes(free)} free on {self.root}",
                             hint="free space (bench cache prune), point BENCH_HOME at a larger disk, or keep less: "
                                  "--feature-cache layers (the layers methods read), pooled (pooled means only) "
                                  "or none (frames computed in the run)")

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

    def _extract(self, manifest, examples, keys, batches, lengths, cached: set[int], asked: set[int],
                 advance) -> None:
        """Run the upstream over ``batches`` (indices of ``examples``, :func:`extraction_batches`) and cache the
        features of the indices in ``cached`` (progress and ``stats`` count those ``asked`` for), pipelined: one
        I/O thread decodes the next batch and writes each finished shard (~``shard_seconds`` of audio) while the
        upstream computes. Only the current batch and the unwritten shard are in memory; the pooled means are
        written with each shard."""
        from concurrent.futures import ThreadPoolExecutor

        if self.keep != "none":
            self._check_budget([lengths[i] for b in batches for i in b if i in cached])
        kept = list(self.kept_layers) if self.kept_layers is not None else None

        def decode(batch):
            return [load_audio(manifest.audio_path(examples[i]), examples[i].start, examples[i].end) for i in batch]

        def write(rows, feats):
            ks = [keys[i] for i in rows]
            if self.keep == "none":
                self._memory.update({k: (pooled_mean(f), int(f.shape[1])) for k, f in zip(ks, feats)})
                return
            if self.keep in FRAME_MODES:
                self.frame_arrays.put_many(ks, feats, save_index=False)
            self._put_pooled(ks, feats, save_index=False)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-feature-io") as io, self._io_core():
            decoded = io.submit(decode, batches[0])
            writes, unwritten, pending, unwritten_samples, unwritten_bytes = [], [], [], 0, 0
            for b, batch in enumerate(batches):
                wavs = decoded.result()
                if b + 1 < len(batches):
                    decoded = io.submit(decode, batches[b + 1])
                feats = [f.astype(np.float16) for f in self.encoder(wavs)]
                del wavs
                feats = [f if kept is None else np.ascontiguousarray(f[kept])  # --feature-cache layers
                         for i, f in zip(batch, feats) if i in cached]
                done = sum(i in asked for i in batch)
                batch = [i for i in batch if i in cached]  # co-members already cached keep their entry
                pending += feats
                unwritten += batch
                unwritten_samples += sum(lengths[i] for i in batch)
                unwritten_bytes += sum(f.nbytes for f in feats)
                if (unwritten_samples >= self.shard_seconds * 16_000 or unwritten_bytes >= self.shard_bytes
                        or b + 1 == len(batches)):
                    if writes:  # at most one shard waits to be written while the next one fills
                        writes[-1].result()  # (a failed cache write is an error, not a silent miss next time)
                    writes.append(io.submit(write, unwritten, pending))
                    unwritten, pending, unwritten_samples, unwritten_bytes = [], [], 0, 0
                self.stats["extracted"] += done
                if advance:
                    advance(done)
            for w in writes:
                w.result()  # a failed cache write is an error, not a silent miss next time
        if self.keep in FRAME_MODES:
            self.frame_arrays.save_index()
        if self.keep != "none":
            self.pooled_arrays.save_index()


def _counts_file(directory: str) -> str:
    return os.path.join(directory, "frames.jsonl")


def _write_counts(directory: str, counts: dict[str, int]) -> None:
    """Append ``key frames`` lines (the frame count of each pooled utterance: the pooled store keeps no frames)."""
    os.makedirs(directory, exist_ok=True)
    with open(_counts_file(directory), "a", encoding="utf-8") as f:
        f.write("".join(f"{k} {n}\n" for k, n in counts.items()))


def _read_counts(directory: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    try:
        with open(_counts_file(directory), encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit():
                    counts[parts[0]] = int(parts[1])
    except FileNotFoundError:
        pass
    return counts
