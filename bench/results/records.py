"""The results store: one JSON record per (task, method, upstream, configuration, seed), written atomically.

A record holds every metric, the per-utterance test outputs (``outputs``: ids, references, hypotheses and, where the
method returns them, per-class scores), parameter counts, wall time, peak memory, the environment (device, CPU and
ISA flags, torch build and threads), package versions, the git revision and two hashes of the resolved
configuration:

- ``config_hash``: sha256 of the whole resolved configuration, seed included: the identity of one record. A re-run
  skips a record whose file exists with the same config hash, so an interrupted ``bench run`` resumes where it
  stopped and loses nothing already finished (``--force`` recomputes).
- ``group_hash``: the same without the seed: records sharing it differ by seed alone, and ``bench compare``
  averages only those.

Layout (schema 2)::

    <results>/<task>/<method>/<upstream>/<group_hash[:12]>/seed-<N>.json

so runs of one cell with other options (``-o``, ``--max-epochs``, ``--limit``, ``--size``, other artefacts) land in
another directory and never overwrite each other. Records of schema 1 (``<task>/<method>/<upstream>/seed-<N>.json``,
no outputs, no group hash) still read: their group hash is computed from their stored ``config``.
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
from bench.core.errors import BenchError

SCHEMA_VERSION = 2
_PACKAGES = ("torch", "torchaudio", "s3prl", "fairseq-fixed", "numpy", "scikit-learn", "jiwer", "soundfile",
             "espeakng-loader", "pyworld", "transformers")
REQUIRED_FIELDS = ("schema_version", "task", "method", "upstream", "seed", "scores", "params", "config_hash")


GROUP_DIGITS = 12  # hex digits of the group hash naming a record's directory


@dataclass(frozen=True)
class RecordKey:
    """Where a record lives. ``group`` is its group hash (configuration without the seed); without one the path is
    the schema-1 layout, kept for reading old result directories."""

    task: str
    method: str
    upstream: str
    seed: int
    group: str | None = None

    def path(self, results_dir: Path) -> Path:
        safe = self.upstream.replace("/", "_")
        d = Path(results_dir) / self.task / self.method / safe
        if self.group:
            d = d / self.group[:GROUP_DIGITS]
        return d / f"seed-{self.seed}.json"


def config_hash(resolved: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the resolved configuration (not of versions or timings)."""
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()


def without_seed(resolved: dict[str, Any]) -> dict[str, Any]:
    """The resolved configuration less its top-level ``seed``: what records of one group share."""
    return {k: v for k, v in resolved.items() if k != "seed"}


def group_hash(resolved: dict[str, Any]) -> str:
    """sha256 of the resolved configuration without the seed: records with equal group hashes differ by seed alone."""
    return config_hash(without_seed(resolved))


def record_group(rec: dict[str, Any]) -> str:
    """A record's group hash: stored (schema 2), else computed from its stored config (schema 1), else ''."""
    if rec.get("group_hash"):
        return rec["group_hash"]
    if isinstance(rec.get("config"), dict):
        return group_hash(rec["config"])
    return ""


def _sig(x: float, digits: int = 6) -> float:
    return x if x != x or x in (float("inf"), float("-inf")) else float(f"{x:.{digits}g}")


def outputs_record(ids, references, hypotheses, scores=None, digits: int = 6, seconds=None) -> dict[str, Any]:
    """Per-utterance test outputs as stored in a record: parallel lists, and per-class scores as a matrix
    ``{"labels": [...], "values": [[one row per utterance]]}`` rounded to ``digits`` significant digits (a label an
    utterance has no score for is null). ``seconds``: each utterance's duration (:func:`utterance_seconds`), stored
    as ``seconds`` when given (records written before it lack the key; no hash covers it)."""
    out: dict[str, Any] = {"ids": list(ids), "references": list(references), "hypotheses": list(hypotheses)}
    if seconds is not None:
        out["seconds"] = list(seconds)
    if scores:
        labels = sorted({k for d in scores for k in d})
        out["scores"] = {"labels": labels,
                         "values": [[None if k not in d else _sig(float(d[k]), digits) for k in labels]
                                    for d in scores]}
    return out


def utterance_seconds(manifest, ids) -> list[float] | None:
    """Duration in seconds (3 decimals) of each utterance ``ids`` names: ``end - start`` for a segment, else the
    audio file's frames / samplerate from its header (``soundfile.info``, no samples read). None when an id is not
    in ``manifest`` or a header cannot be read (the record then has no ``seconds``; a report shows no duration axis)."""
    import soundfile as sf

    by_id = {e.id: e for e in manifest}
    out = []
    try:
        for i in ids:
            e = by_id[i]
            if e.start is not None and e.end is not None:
                d = e.end - e.start
            else:
                info = sf.info(str(manifest.audio_path(e)))
                d = info.frames / info.samplerate
                if e.end is not None:
                    d = min(d, e.end)
                if e.start is not None:
                    d -= e.start
            out.append(round(float(d), 3))
    except (KeyError, RuntimeError, OSError, ValueError, ZeroDivisionError):
        return None
    return out


def outputs_scores(outputs: dict[str, Any]) -> list[dict[str, float]] | None:
    """The per-utterance score dicts of a stored ``outputs`` (None when the method returned none)."""
    sc = outputs.get("scores")
    if not sc:
        return None
    labels = sc["labels"]
    return [{k: v for k, v in zip(labels, row) if v is not None} for row in sc["values"]]


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
    write_text_atomic(path, dumps(record) + "\n", what="result record")


def _scalar(x) -> bool:
    return x is None or isinstance(x, (bool, int, float))


def dumps(obj: Any, indent: int = 2) -> str:
    """JSON with sorted keys and ``indent``, except that a list of numbers is written on one line (score rows,
    histories of losses stay a line each): readable, and a record with per-utterance scores stays small."""

    def enc(o, level):
        pad, inner = " " * (indent * level), " " * (indent * (level + 1))
        if isinstance(o, dict):
            if not o:
                return "{}"
            keys = sorted(o, key=str)
            items = [f"{inner}{json.dumps(str(k))}: {enc(o[k], level + 1)}" for k in keys]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(o, (list, tuple)):
            if not o:
                return "[]"
            if all(_scalar(x) for x in o):
                return "[" + ", ".join(json.dumps(x) for x in o) + "]"
            return "[\n" + ",\n".join(inner + enc(x, level + 1) for x in o) + "\n" + pad + "]"
        if _scalar(o) or isinstance(o, str):
            return json.dumps(o)
        return json.dumps(str(o))

    return enc(obj, 0)


def read_records(results_dir: Path, skipped: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """Every complete record under ``results_dir`` (temporary and foreign JSON files are ignored). A record that
    cannot be read is an error, or, given a ``skipped`` list, appended to it as (path, why) and left out."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise BenchError(f"results directory not found: {results_dir}", hint="run `bench run` first, or pass --results")
    out = []
    for p in sorted(results_dir.rglob("seed-*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            if skipped is not None:
                skipped.append((str(p), f"not a readable result record ({type(err).__name__}: {err})"))
                continue
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
    from bench.core.paths import repo_root

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


_ISA_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4", "avx512", "neon", "asimd", "sve")


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    """CPU model and the ISA flags that decide which kernels torch runs (AVX/AVX2/AVX-512/AMX, FMA, F16C, SSE4; on
    ARM NEON/ASIMD/SVE), from /proc/cpuinfo where it exists."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, flags = None, set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and model is None:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    import os

    return {"model": model or platform.processor() or platform.machine(), "machine": platform.machine(),
            "cores": os.cpu_count(), "isa": sorted(f for f in flags if f.startswith(_ISA_PREFIXES))}


def torch_build() -> dict[str, Any]:
    """torch's version and the math libraries it was built with (BLAS, LAPACK, oneDNN/MKL-DNN, MKL), from
    ``torch.__config__.show()`` and ``torch.backends``."""
    import torch

    out: dict[str, Any] = {"version": torch.__version__, "cuda": torch.version.cuda,
                           "mkldnn": bool(torch.backends.mkldnn.is_available()),
                           "mkl": bool(torch.backends.mkl.is_available())}
    try:
        lines = [ln.strip(" -") for ln in torch.__config__.show().splitlines()]
    except Exception:  # noqa: BLE001 - a build description is informative, never required
        lines = []
    wanted = ("oneDNN", "MKL-DNN", "Math Kernel Library", "OpenBLAS", "OpenMP", "LAPACK", "CPU capability")
    out["build"] = [ln for ln in lines if any(w in ln for w in wanted) and not ln.startswith("Build settings")]
    settings = next((ln for ln in lines if ln.startswith("Build settings:")), "")
    keep = ("BLAS_INFO", "LAPACK_INFO", "USE_MKL", "USE_MKLDNN", "USE_OPENMP", "USE_CUDA", "USE_CUDNN", "USE_ROCM")
    for item in settings.removeprefix("Build settings:").split(","):
        k, _, v = item.strip().partition("=")
        if k in keep:
            out[k.lower()] = v
    return out


def thread_counts() -> dict[str, Any]:
    """torch intra-/inter-op threads and the BLAS/OpenMP pools numpy and torch load (threadpoolctl, if present)."""
    import torch

    out: dict[str, Any] = {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads()}
    try:
        from threadpoolctl import threadpool_info

        out["pools"] = sorted({f"{i.get('internal_api')}:{i.get('num_threads')}" for i in threadpool_info()})
    except Exception:  # noqa: BLE001
        pass
    return out


def environment(device: str) -> dict[str, Any]:
    """Where a record was computed: the device (with the CUDA device name when used), the CPU and its ISA flags,
    torch's build and the thread counts. Package versions are the record's ``versions``."""
    env: dict[str, Any] = {"device": device_description(device), "cpu": cpu_info()}
    try:
        env["torch"] = torch_build()
        env["threads"] = thread_counts()
        from bench.core.numerics import effective

        env["numerics"] = effective()
    except ImportError:
        pass
    if device.startswith("cuda"):
        import torch

        env["cuda_device"] = torch.cuda.get_device_name(0)
    return env


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
