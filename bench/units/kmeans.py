"""k-means quantizers: fit like GSLM, predict by nearest centroid, load GSLM's ``km.bin`` by its centroids.

GSLM (``speech2unit/clustering/cluster_kmeans.py``) fits sklearn ``MiniBatchKMeans`` (k-means++ init, batch 10,000,
tol 0, max_no_improvement 100, n_init 20, reassignment_ratio 0.5) and joblib-pickles it as ``km.bin``; units are
``predict`` = nearest centroid in squared Euclidean distance. We keep only ``cluster_centers_`` (a K×D float32
array): prediction is then independent of the sklearn version that wrote the pickle (old pickles fail to
unpickle, or lack ``_n_threads``, under new sklearn; textlesslib patches that, we sidestep it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.core.errors import BenchError

# GSLM cluster_kmeans.py defaults (fairseq examples/textless_nlp/gslm/speech2unit/clustering).
GSLM_KMEANS = dict(init="k-means++", max_iter=150, batch_size=10_000, tol=0.0, max_no_improvement=100, n_init=20,
                   reassignment_ratio=0.5)


@dataclass
class KMeansQuantizer:
    """Nearest-centroid quantizer over frame features (``centers``: K×D)."""

    centers: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        c = np.asarray(self.centers)
        if c.ndim != 2 or c.shape[0] < 2 or not np.isfinite(c).all():
            raise BenchError(f"k-means centroids must be a finite K×D array with K ≥ 2, got shape {c.shape}")
        self.centers = np.ascontiguousarray(c, dtype=np.float32)
        self._sq = (self.centers.astype(np.float64) ** 2).sum(1)

    @property
    def num_units(self) -> int:
        return int(self.centers.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centers.shape[1])

    @property
    def hash(self) -> str:
        """Content hash of the centroids: the unit cache is keyed by it."""
        h = hashlib.sha1(str(self.centers.shape).encode())
        h.update(self.centers.tobytes())
        return h.hexdigest()[:16]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Unit id per frame: argmin_k ||x - c_k||² (= sklearn ``KMeans.predict``), in float64 for stable ties."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise BenchError(f"k-means expects (frames, {self.dim}) features, got {x.shape}; the quantizer was "
                             f"fitted on another upstream/layer ({self.meta.get('upstream', 'unknown')})")
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        d = self._sq[None, :] - 2.0 * x @ self.centers.T.astype(np.float64)
        return d.argmin(1).astype(np.int64)

    # ---- persistence ---------------------------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        """``<path>`` (.npy centroids) + ``<path>.json`` (meta), both written atomically."""
        from bench.core.arrayfile import save_array_atomic
        from bench.data.manifest import write_text_atomic

        path = Path(path)
        save_array_atomic(path, self.centers)
        write_text_atomic(path.with_suffix(".json"), json.dumps({**self.meta, "hash": self.hash}, indent=1))
        return path

    @classmethod
    def load(cls, path: Path) -> "KMeansQuantizer":
        """A centroid file written by :meth:`save` (``.npy``) or a joblib/pickle sklearn k-means (GSLM ``km.bin``)."""
        path = Path(path)
        if not path.is_file():
            raise BenchError(f"k-means file not found: {path} (expected GSLM's km.bin or a bench .npy centroid file)")
        if path.suffix == ".npy":
            meta_file = path.with_suffix(".json")
            meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
            return cls(np.load(path), {**meta, "source": str(path)})
        centers, cls_name = read_sklearn_centers(path)
        return cls(centers, {"source": str(path), "class": cls_name})


def read_sklearn_centers(path: Path) -> tuple[np.ndarray, str]:
    """``cluster_centers_`` of a joblib- or pickle-written sklearn k-means, whatever sklearn version wrote it.

    Read by :func:`bench.core.safe_load.load_sklearn_kmeans`: no sklearn (or any other) code runs, the k-means is
    its pickled attributes; a file that asks for other globals is refused unless ``--trust-model-files``."""
    from bench.core.safe_load import SklearnState, load_sklearn_kmeans

    try:
        obj = load_sklearn_kmeans(path)
    except BenchError:
        raise
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a k-means file"
        raise BenchError(f"{path}: not a fitted sklearn k-means pickle (GSLM km.bin): {type(err).__name__}: "
                         f"{err}") from None
    if isinstance(obj, SklearnState):
        state, cls_name = obj.state, obj.cls_name
    else:  # a trusted file, loaded in full
        state, cls_name = getattr(obj, "__dict__", {}), type(obj).__name__
    if "cluster_centers_" not in state:
        raise BenchError(f"{path}: not a fitted sklearn k-means pickle (GSLM km.bin): its {cls_name} has no "
                         f"cluster_centers_ (keys: {sorted(map(str, state))[:8]})")
    return np.asarray(state["cluster_centers_"]), cls_name


def fit_kmeans(features: Sequence[np.ndarray], num_units: int, seed: int, *, max_frames: int | None = 200_000,
               n_init: int | None = None, meta: dict | None = None) -> KMeansQuantizer:
    """MiniBatchKMeans with GSLM's settings on (a seeded subsample of) the stacked frames.

    ``max_frames`` caps the fitting set (GSLM samples a percentage of the training manifest, ``--sample_pct``);
    the subsample is drawn with ``seed``, so the quantizer is a pure function of (features, K, seed). The frames
    drawn are :func:`sample_frames` of the utterance lengths: a caller with the lengths alone reads only those
    (``bench.units.store``) and calls :func:`fit_kmeans_frames`."""
    feats = [np.asarray(f, dtype=np.float32) for f in features if len(f)]
    if not feats:
        raise BenchError("k-means: no feature frames to fit on (empty training split?)")
    x = np.concatenate(feats, 0)
    n_frames = len(x)
    if x.shape[0] < num_units:
        raise BenchError(f"k-means with K={num_units} needs at least {num_units} frames, got {x.shape[0]}")
    picked = sample_frames(n_frames, num_units, seed, max_frames)
    if picked is not None:
        x = x[picked]
    return fit_kmeans_frames(x, n_frames, num_units, seed, n_init=n_init, meta=meta)


def sample_frames(n_frames: int, num_units: int, seed: int, max_frames: int | None) -> np.ndarray | None:
    """Sorted indices (into the stacked frames) of the fitting subsample, None for all frames; checks that
    there are frames enough for ``num_units``."""
    if n_frames == 0:
        raise BenchError("k-means: no feature frames to fit on (empty training split?)")
    if n_frames < num_units:
        raise BenchError(f"k-means with K={num_units} needs at least {num_units} frames, got {n_frames}")
    rng = np.random.default_rng(seed)
    if max_frames is not None and n_frames > max_frames:
        return np.sort(rng.choice(n_frames, max_frames, replace=False))
    return None


def fit_kmeans_frames(x: np.ndarray, n_frames: int, num_units: int, seed: int, *, n_init: int | None = None,
                      meta: dict | None = None) -> KMeansQuantizer:
    """MiniBatchKMeans with GSLM's settings on ``x``, the (already drawn) fitting frames of ``n_frames``."""
    from sklearn.cluster import MiniBatchKMeans

    params = dict(GSLM_KMEANS)
    if n_init is not None:
        params["n_init"] = n_init
    params["batch_size"] = min(params["batch_size"], len(x))
    km = MiniBatchKMeans(n_clusters=num_units, random_state=seed, compute_labels=False, **params)
    km.fit(x)
    info = {"K": num_units, "seed": seed, "frames": n_frames, "fitted_frames": int(len(x)),
            "inertia": float(km.inertia_) if getattr(km, "inertia_", None) is not None else None,
            "algorithm": "sklearn MiniBatchKMeans (GSLM settings)", **{f"km_{k}": v for k, v in params.items()},
            **(meta or {})}
    return KMeansQuantizer(km.cluster_centers_, info)

