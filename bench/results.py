"""The results store: one JSON record per (task, method, upstream, seed), written atomically.

A record holds every metric, parameter counts, wall time, peak memory, device, package versions, the git revision and
the hash of the resolved configuration. A re-run skips a record whose file exists with the same config hash, so an
interrupted ``bench run`` resumes where it stopped and loses nothing already finished.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import __version__
from bench.data.manifest import write_text_atomic
from bench.errors import BenchError

SCHEMA_VERSION = 1
_PACKAGES = ("torch", "torchaudio", "s3prl", "fairseq-fixed", "numpy", "scikit-learn", "jiwer", "soundfile",
             "espeakng-loader", "pyworld", "transformers")
REQUIRED_FIELDS = ("schema_version", "task", "method", "upstream", "seed", "scores", "params", "config_hash")


@dataclass(frozen=True)
class RecordKey:
    task: str
    method: str
    upstream: str
    seed: int

    def path(self, results_dir: Path) -> Path:
        safe = self.upstream.replace("/", "_")
        return Path(results_dir) / self.task / self.method / safe / f"seed-{self.seed}.json"


def config_hash(resolved: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the resolved configuration (not of versions or timings)."""
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()


def existing_record(path: Path, expected_hash: str) -> dict | None:
    """The record at ``path`` if it is complete and was produced by the same configuration."""
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return None
    return rec if rec.get("config_hash") == expected_hash else None


def write_record(path: Path, record: dict[str, Any]) -> None:
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        raise ValueError(f"result record lacks {missing}")
    write_text_atomic(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")


def read_records(results_dir: Path) -> list[dict[str, Any]]:
    """Every complete record under ``results_dir`` (temporary and foreign JSON files are ignored)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise BenchError(f"results directory not found: {results_dir}", hint="run `bench run` first, or pass --results")
    out = []
    for p in sorted(results_dir.rglob("seed-*.json")):
        try:
            rec = json.loads(p.read_text())
        except json.JSONDecodeError as err:
            raise BenchError(f"{p}: not a valid result record ({err})") from None
        if isinstance(rec, dict) and all(k in rec for k in REQUIRED_FIELDS):
            rec["_path"] = str(p)
            out.append(rec)
    return out


def package_versions() -> dict[str, str]:
    v = {"bench": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            v[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return v


# What decides a result: the code, the task and baseline definitions, the pins. Result records written into a
# tracked directory (leaderboards/records/) or an edited README do not make a number "from uncommitted code".
RESULT_DEFINING_PATHS = ("bench", "tasks", "baselines", "pyproject.toml", "requirements")


def git_revision(repo: Path | None = None) -> str:
    """HEAD's sha, with ``-dirty`` when the code or definitions differ from it (modified or untracked files under
    :data:`RESULT_DEFINING_PATHS`): a number from uncommitted code says so."""
    from bench.paths import repo_root

    cwd = repo or repo_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *RESULT_DEFINING_PATHS], cwd=cwd,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def device_description(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(0)})"
    import os

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


class PeakMemory:
    """Peak resident memory of this process while the block runs, sampled every 50 ms (psutil)."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self.peak_bytes = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            self.peak_bytes = max(self.peak_bytes, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._proc.memory_info().rss)
        return False


class Stopwatch:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False
