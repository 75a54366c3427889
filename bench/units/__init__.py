"""Speech-to-units (GSLM speech2unit): one upstream layer → k-means → run-length dedup with durations, cached.

- :mod:`bench.units.kmeans`: fit (sklearn MiniBatchKMeans, GSLM's settings), nearest-centroid prediction, and
  loading GSLM's joblib ``km.bin`` by its ``cluster_centers_`` only (no sklearn-version coupling at predict time).
- :mod:`bench.units.dedup`: collapse repeated units, keeping run lengths (pGSLM's duration stream).
- :mod:`bench.units.store`: :class:`UnitStore`, units + durations per utterance, keyed by what produced them.
"""
