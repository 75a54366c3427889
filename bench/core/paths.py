"""Where bench keeps generated data, caches and results.

Everything lives under ``$BENCH_HOME`` (default ``./.bench``) unless a command is told otherwise,
so a checkout is self-contained and a test can point the whole tool at a temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def bench_home() -> Path:
    return Path(os.environ.get("BENCH_HOME", ".bench")).expanduser().resolve()


def data_dir() -> Path:
    """Built-in suite audio and manifests: ``<home>/data/<task>/``."""
    return bench_home() / "data"


def cache_dir() -> Path:
    """Expensive stages (features, units, prosody), keyed by what produced them. A pinned process keeps its own,
    ``cache/pinned-avx2/`` (bench.core.numerics.cache_subdir): its records never read features or units that a
    fast run computed on other code paths, nor the other way round; ``fast`` keeps ``cache/`` as before."""
    from bench.core.numerics import cache_subdir

    sub = cache_subdir()
    return bench_home() / "cache" / sub if sub else bench_home() / "cache"


def models_dir() -> Path:
    """Models bench trained itself (unit LMs, k-means quantizers)."""
    return bench_home() / "models"


def repo_root() -> Path:
    """The directory holding ``tasks/``, ``baselines/`` and ``leaderboards/``."""
    env = os.environ.get("BENCH_REPO")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]
