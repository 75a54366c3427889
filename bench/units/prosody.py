"""Prosody streams for pGSLM: per-unit duration and speaker-normalised log-F0, optionally quantised to 32 bins.

pGSLM (Kharitonov et al., 2022, §3.1; fairseq ``examples/textless_nlp/pgslm``) models three aligned streams per
deduplicated unit: the unit, its duration (the run length removed by deduplication, in unit frames) and its F0 —
log-F0 minus the speaker's mean log-F0, interpolated over unvoiced frames, averaged over the unit's frames and, for
the discrete model, quantised into 32 equal-mass bins fitted on training data (``quantize_f0.py``).

Pitch tracker: pGSLM used YAAPT (``amfm-decompy``), which is not installed here; bench uses WORLD (``pyworld``:
DIO + StoneMask by default, or Harvest) at the same 5 ms frame period, with YAAPT's default 60–400 Hz search
range. Frame F0 is cached per audio content hash and tracker settings (HEAR's extract-once wall); speaker means,
per-unit values and bins are cheap and recomputed from the cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from bench.core.arrayfile import save_array_atomic
from bench.data.audio import SAMPLE_RATE, load_audio
from bench.core.errors import BenchError

PGSLM_F0_BINS = 32  # pGSLM's discrete-F0 vocabulary (--nbins 32)
PGSLM_MAX_DURATION = 20  # fairseq speech_unit_modeling --max-token-duration: longer runs are clipped


@dataclass(frozen=True)
class F0Config:
    """Pitch-tracker settings; every field enters the cache key."""

    method: str = "dio"  # "dio" (DIO + StoneMask refinement) or "harvest" (~20x slower, steadier voicing on
    #                      real speech; it marks pure sinusoids unvoiced, so tones need "dio")
    frame_period_ms: float = 5.0  # pGSLM's F0_FRAME_SPACE
    f0_floor: float = 60.0  # YAAPT's default f0_min
    f0_ceil: float = 400.0  # YAAPT's default f0_max
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self):
        if self.method not in ("harvest", "dio"):
            raise BenchError(f"F0 method '{self.method}': expected 'harvest' or 'dio'")
        if not 0 < self.f0_floor < self.f0_ceil:
            raise BenchError(f"F0 range [{self.f0_floor}, {self.f0_ceil}] Hz: expected 0 < floor < ceil")

    def config_id(self) -> str:
        payload = json.dumps({"tracker": "pyworld-0.3", **asdict(self)}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]


def extract_f0(wav: np.ndarray, cfg: F0Config = F0Config()) -> np.ndarray:
    """Frame F0 in Hz (0 = unvoiced), one value every ``frame_period_ms`` starting at t=0."""
    from bench.core.compat import import_pyworld

    pyworld = import_pyworld()

    x = np.ascontiguousarray(wav, dtype=np.float64)
    if cfg.method == "harvest":
        f0, _ = pyworld.harvest(x, cfg.sample_rate, f0_floor=cfg.f0_floor, f0_ceil=cfg.f0_ceil,
                                frame_period=cfg.frame_period_ms)
    else:
        f0, t = pyworld.dio(x, cfg.sample_rate, f0_floor=cfg.f0_floor, f0_ceil=cfg.f0_ceil,
                            frame_period=cfg.frame_period_ms)
        f0 = pyworld.stonemask(x, f0, t, cfg.sample_rate)
    return f0.astype(np.float32)


def interpolate_unvoiced(f0: np.ndarray) -> np.ndarray:
    """Linear interpolation of F0 across unvoiced gaps between voiced frames.

    Frames before the first / after the last voiced frame stay 0, as in fairseq's ``interpolate_f0``
    (``interp1d(..., fill_value=0)``); downstream they read as the speaker mean."""
    f0 = np.asarray(f0, dtype=np.float32)
    voiced = np.flatnonzero(f0 > 0)
    if voiced.size < 2:
        return f0.copy()
    out = np.zeros_like(f0)
    span = np.arange(voiced[0], voiced[-1] + 1)
    out[span] = np.interp(span, voiced, f0[voiced])
    return out


def voiced_log_f0(f0: np.ndarray) -> np.ndarray:
    """log F0 of the voiced frames (the values speaker statistics and bin edges are fitted on)."""
    f0 = np.asarray(f0)
    return np.log(f0[f0 > 0].astype(np.float64))


def speaker_log_f0_means(f0s: Sequence[np.ndarray], speakers: Sequence[str]) -> dict[str, float]:
    """Mean log-F0 over all voiced frames of each speaker (pGSLM ``F0Stat`` → ``logf0_mean``).

    ``speakers`` are grouping keys (see ``speaker_key``: an utterance without a speaker id is its own group). A
    group with no voiced frame gets mean 0: its values stay raw log-F0."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for f0, spk in zip(f0s, speakers, strict=True):
        lf = voiced_log_f0(f0)
        sums[spk] = sums.get(spk, 0.0) + float(lf.sum())
        counts[spk] = counts.get(spk, 0) + int(lf.size)
    return {s: (sums[s] / counts[s] if counts[s] else 0.0) for s in sums}


def unit_frames_ratio(unit_hop: int, cfg: F0Config) -> float:
    """F0 frames per unit frame: 320-sample hop at 16 kHz over 5 ms F0 frames = 4 (pGSLM ``f0_code_ratio``)."""
    return unit_hop / (cfg.sample_rate * cfg.frame_period_ms / 1000.0)


def unit_log_f0(f0: np.ndarray, durations: np.ndarray, mean_log_f0: float, ratio: float) -> np.ndarray:
    """Per-unit speaker-normalised log-F0: interpolate over unvoiced frames, take log, subtract the speaker mean,
    average over each unit's run of frames (pGSLM ``align_f0_to_durations``). A unit with no (interpolated) voiced
    frame gets 0, i.e. the speaker mean, as in pGSLM where unvoiced values are left at 0 after normalisation."""
    durations = np.asarray(durations, dtype=np.int64)
    if durations.ndim != 1 or (durations < 0).any():
        raise BenchError("prosody: durations must be a 1-D array of non-negative run lengths")
    f0 = interpolate_unvoiced(f0)
    target = int(round(ratio * int(durations.sum())))
    # unit extractors drop partial frames at the edges: trim, or repeat the last value (fairseq does the same)
    if f0.size >= target:
        f0 = f0[:target]
    else:
        f0 = np.concatenate([f0, np.full(target - f0.size, f0[-1] if f0.size else 0.0, np.float32)])
    norm = np.zeros(target, dtype=np.float64)
    voiced = f0 > 0
    norm[voiced] = np.log(f0[voiced]) - mean_log_f0
    bounds = np.round(np.concatenate([[0], np.cumsum(durations)]) * ratio).astype(np.int64)
    out = np.zeros(durations.size, dtype=np.float32)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        v = voiced[a:b]
        if v.any():
            out[i] = norm[a:b][v].mean()
    return out


@dataclass
class F0Quantizer:
    """Equal-mass bins over training log-F0 (pGSLM ``quantize_f0.py``: n−1 edges at the 100/n-percentiles).

    ``quantize`` is fairseq's ``naive_quantize``: bin = number of edges strictly below the value, in [0, n)."""

    edges: np.ndarray
    fitted_on: dict = field(default_factory=dict)  # provenance: number of values, cache key

    @property
    def num_bins(self) -> int:
        return int(self.edges.size) + 1

    @classmethod
    def fit(cls, values: np.ndarray, num_bins: int = PGSLM_F0_BINS, **provenance) -> "F0Quantizer":
        values = np.asarray(values, dtype=np.float64).ravel()
        if num_bins < 2:
            raise BenchError(f"F0 quantizer: num_bins={num_bins}, expected at least 2")
        if values.size < num_bins:
            raise BenchError(
                f"F0 quantizer: {values.size} voiced values cannot fit {num_bins} bins; "
                "the training split has too little voiced speech"
            )
        edges = np.quantile(values, np.arange(1, num_bins) / num_bins)
        return cls(edges=edges.astype(np.float64), fitted_on={"values": int(values.size), **provenance})

    def quantize(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return (x[..., None] > self.edges).sum(axis=-1).astype(np.int64)

    def save(self, path: Path) -> None:
        _write_json_atomic(Path(path), {"edges": self.edges.tolist(), "fitted_on": self.fitted_on})

    @classmethod
    def load(cls, path: Path) -> "F0Quantizer":
        try:
            d = json.loads(Path(path).read_text())
            edges = np.asarray(d["edges"], dtype=np.float64)
        except (OSError, ValueError, KeyError) as err:
            raise BenchError(f"F0 quantizer file {path}: unreadable ({err}); expected JSON with 'edges'") from None
        if edges.ndim != 1 or (np.diff(edges) < 0).any():
            raise BenchError(f"F0 quantizer file {path}: edges must be a non-decreasing list")
        return cls(edges=edges, fitted_on=d.get("fitted_on", {}))

    @classmethod
    def load_pgslm(cls, path: Path, num_bins: int = PGSLM_F0_BINS) -> "F0Quantizer":
        """pGSLM's published bins (``mean_norm_log_f0_seg_bin.th``): ``quantize_f0.py`` saves ``{n_bins: edges}``;
        a bare 1-D tensor of edges is accepted too. Needed to feed a released discrete-F0 checkpoint."""
        from bench.core.safe_load import torch_load

        try:
            obj = torch_load(path)  # a dict of numpy arrays or tensors; no code from the file runs
        except BenchError:
            raise
        except Exception as err:  # noqa: BLE001
            raise BenchError(f"F0 bins file {path}: cannot be read by torch.load ({err})") from None
        if isinstance(obj, dict):
            if num_bins not in obj:
                raise BenchError(f"F0 bins file {path}: no entry for {num_bins} bins (has {sorted(obj)})")
            obj = obj[num_bins]
        edges = np.asarray(obj.numpy() if hasattr(obj, "numpy") else obj, dtype=np.float64)
        if edges.ndim != 1 or edges.size != num_bins - 1 or (np.diff(edges) < 0).any():
            raise BenchError(f"F0 bins file {path}: expected {num_bins - 1} sorted edges, got shape {edges.shape}")
        return cls(edges=edges, fitted_on={"file": str(path)})


@dataclass
class UnitProsody:
    """Prosody of one utterance, aligned with its deduplicated units."""

    durations: np.ndarray  # int64 run lengths in unit frames
    log_f0: np.ndarray  # float32 speaker-normalised log-F0 per unit
    f0_bins: np.ndarray | None = None  # int64 in [0, num_bins) when a quantizer is given


class ProsodyStore:
    """Frame F0 per utterance, cached on disk by (audio hash, segment, tracker settings), plus the cheap stages.

    Usage: ``f0s = store.frame_f0(manifest, examples)``; speaker means from those; ``store.quantizer(...)`` fits
    (or loads) the bin edges for a training set; ``store.unit_prosody(...)`` aligns to unit durations."""

    def __init__(self, cfg: F0Config = F0Config(), cache_dir: Path | None = None, unit_hop: int = 320):
        from bench.features.store import AudioHasher
        from bench.core.paths import cache_dir as default_cache

        self.cfg = cfg
        self.unit_hop = unit_hop
        self.root = Path(cache_dir or default_cache()) / "prosody"
        self.hasher = AudioHasher(Path(cache_dir or default_cache()) / "features" / "audio-sha1-index.json")
        self.stats = {"extracted": 0, "cached": 0}

    @property
    def ratio(self) -> float:
        return unit_frames_ratio(self.unit_hop, self.cfg)

    def key(self, manifest, ex) -> str:
        seg = f"{ex.start}:{ex.end}" if ex.start is not None or ex.end is not None else ""
        return hashlib.sha1(f"{self.hasher(manifest, ex)}|{seg}".encode()).hexdigest()

    def _file(self, key: str) -> Path:
        return self.root / f"f0-{self.cfg.config_id()}" / key[:2] / f"{key}.npy"

    def frame_f0(self, manifest, examples, advance: Callable[[int], object] | None = None) -> list[np.ndarray]:
        """Frame-level F0 of each example, from the cache or extracted (on worker threads: WORLD runs in C)."""
        from bench.core.threads import ordered_map

        def one(ex) -> tuple[np.ndarray, bool]:
            path = self._file(self.key(manifest, ex))
            if path.exists():
                return np.load(path), True
            wav = load_audio(manifest.audio_path(ex), ex.start, ex.end, sample_rate=self.cfg.sample_rate)
            f0 = extract_f0(wav, self.cfg)
            save_array_atomic(path, f0)
            return f0, False

        out = []
        for f0, cached in ordered_map(one, examples, name="f0"):
            self.stats["cached" if cached else "extracted"] += 1
            out.append(f0)
            if advance:
                advance(1)
        self.hasher.save()
        return out

    def quantizer(self, manifest, train_examples, f0s: Sequence[np.ndarray], means: dict[str, float],
                  num_bins: int = PGSLM_F0_BINS) -> F0Quantizer:
        """Bin edges fitted on the speaker-normalised voiced log-F0 frames of ``train_examples``; saved under a key
        of (tracker settings, training audio hashes, bins) and reloaded on the next run."""
        h = hashlib.sha1(f"{self.cfg.config_id()}|{num_bins}".encode())
        for ex in sorted(train_examples, key=lambda e: e.id):
            h.update(f"{self.key(manifest, ex)}|{speaker_key(ex)}\n".encode())
        key = h.hexdigest()[:16]
        path = self.root / "f0-bins" / f"{key}.json"
        if path.exists():
            return F0Quantizer.load(path)
        values = np.concatenate(
            [voiced_log_f0(f0) - means[speaker_key(ex)] for ex, f0 in zip(train_examples, f0s, strict=True)]
            or [np.zeros(0)]
        )
        q = F0Quantizer.fit(values, num_bins, cache_key=key, tracker=self.cfg.config_id())
        q.save(path)
        return q

    def unit_prosody(self, f0: np.ndarray, durations: np.ndarray, mean_log_f0: float,
                     quantizer: F0Quantizer | None = None) -> UnitProsody:
        lf = unit_log_f0(f0, durations, mean_log_f0, self.ratio)
        return UnitProsody(np.asarray(durations, dtype=np.int64), lf,
                           quantizer.quantize(lf) if quantizer is not None else None)


def speaker_key(ex) -> str:
    """Speaker id for F0 normalisation; an utterance without one is normalised by its own mean."""
    return ex.speaker if ex.speaker else f"utt:{ex.id}"


def _write_json_atomic(path: Path, obj) -> None:
    from bench.data.manifest import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=1))
