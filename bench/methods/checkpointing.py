"""Per-epoch training state of a long cell, so a killed or timed-out cell continues where it stopped.

After an epoch (at most every ``BENCH_RESUME_EVERY_S`` seconds) a training loop (``bench.methods.training.fit``,
``bench.prompt.trainer.train_prompts``) saves what the next epoch depends on: the trainable weights, the optimiser's state, every random generator (python,
numpy's global and the loop's own ``Generator``, torch's CPU and CUDA), the epoch, and the best-so-far weights
with their epoch and patience counter. A re-run of the same cell (same configuration hash, so the same
directory: :func:`resume_dir`) loads it and runs the remaining epochs, which then see the same weights, optimiser
moments, batch orders and dropout masks as an uninterrupted run: the record is the same
(tests/test_resume.py kills a cell with SIGKILL mid-training). Saving reads the generators' states without
drawing from them, so a run that saves writes the same record as one that does not.

The trained head or prompt set is also kept beside its record (``seed-N.pt``, :func:`save_trained`), so
``bench evaluate`` can score it on another task's test split (s3prl's ``-m evaluate -e dev-best.ckpt``).
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.errors import BenchError
from bench.data.manifest import save_torch_atomic

STATE_FILE = "train-state.pt"
TRAINED_FORMAT = 1
# An epoch's state is saved unless the previous save (or the start of training) is younger than this many
# seconds: a long epoch is always saved, while short cells (the built-in suite's linear probe runs an epoch in
# ~15 ms; a save with its fsync takes ~25 ms) save rarely or never, so they are no slower. A killed cell loses at
# most this long plus one epoch. BENCH_RESUME_EVERY_S=0 saves every epoch.
DEFAULT_EVERY_S = 10.0
_last_save: dict[str, float] = {}


def resume_dir(results_dir: Path, record_path: Path, config_hash: str) -> Path:
    """Where one cell's training state lives between runs: under ``<results>/.work/resume/``, named by the
    record's place and its configuration hash, so only a run of the very same configuration picks it up (a
    changed option starts over) and its path is the same in every process."""
    rel = Path(record_path).relative_to(results_dir).with_suffix("")
    return Path(results_dir) / ".work" / "resume" / rel.parent / f"{rel.name}-{config_hash[:16]}"


def capture_rng(generator: np.random.Generator | None = None) -> dict[str, Any]:
    """Every random generator a training epoch may draw from (read, not advanced)."""
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy_global": [name, torch.from_numpy(np.asarray(keys).copy()), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.bit_generator.state
    return state


def restore_rng(state: dict[str, Any], generator: np.random.Generator | None = None) -> None:
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy_global"]
    np.random.set_state((name, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.bit_generator.state = state["generator"]


def save_every_s() -> float:
    raw = os.environ.get("BENCH_RESUME_EVERY_S")
    try:
        return DEFAULT_EVERY_S if raw is None else max(0.0, float(raw))
    except ValueError:
        raise BenchError(f"BENCH_RESUME_EVERY_S={raw!r}: expected a number of seconds (0: save every epoch)") from None


def save_state(directory: Path | None, state: dict[str, Any], generator: np.random.Generator | None = None) -> None:
    """Save a loop's state after an epoch (with every generator's state) when the last save is at least
    ``BENCH_RESUME_EVERY_S`` old; nothing when ``directory`` is None."""
    if directory is None:
        return
    import time

    key, now = str(directory), time.monotonic()
    if now - _last_save.setdefault(key, now) < save_every_s() and save_every_s() > 0:
        return
    save_torch_atomic({**state, "rng": capture_rng(generator)}, Path(directory) / STATE_FILE, what="training state")
    _last_save[key] = time.monotonic()


def load_state(directory: Path | None, generator: np.random.Generator | None = None,
               log=print) -> dict[str, Any] | None:
    """The state a killed run of this cell saved (its generators restored), or None (none saved: start over).
    An unreadable file (not one of ours) is set aside with a line saying so, and training starts over."""
    if directory is None:
        return None
    import time

    _last_save[str(directory)] = time.monotonic()  # the save interval counts from the start of training
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        return None
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable state means: start over
        log(f"resume: cannot read {path} ({type(e).__name__}); training from the first epoch")
        return None
    restore_rng(state.pop("rng"), generator)
    log(f"resume: continuing after epoch {state['epoch']} from {path}")
    return state


def clear_state(directory: Path | None) -> None:
    """Remove a cell's resume directory once its record is written (and parents left empty under .work)."""
    import shutil

    if directory is None:
        return
    directory = Path(directory)
    shutil.rmtree(directory, ignore_errors=True)
    parent = directory.parent
    while parent.name != ".work" and parent != parent.parent:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
    if parent.name == ".work":
        try:
            parent.rmdir()
        except OSError:
            pass


def trained_path(record_path: Path) -> Path:
    """``seed-N.pt`` beside ``seed-N.json``."""
    return Path(record_path).with_suffix(".pt")


def save_trained(record_path: Path, trained: dict[str, Any]) -> dict[str, Any]:
    """Keep a cell's trained head / prompt set beside its record; returns the record's ``trained_state`` entry
    (file name, sha256, bytes), written before the record so a record never names a missing file."""
    path = trained_path(record_path)
    save_torch_atomic({"format": TRAINED_FORMAT, **trained}, path, what="trained state")
    data = path.read_bytes()
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def load_trained(record_path: Path, record: dict) -> dict[str, Any]:
    """The trained state a record names, checked against the sha256 the record holds."""
    import torch

    entry = record.get("trained_state")
    if not entry:
        raise BenchError(f"{record_path}: this record keeps no trained state (written before bench kept heads "
                         "beside records, or by a method that keeps none); re-run the cell with --force")
    path = Path(record_path).with_name(entry["file"])
    if not path.is_file():
        raise BenchError(f"{path}: the trained state this record names is missing")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry["sha256"]:
        raise BenchError(f"{path}: sha256 {digest[:12]}… differs from the record's {entry['sha256'][:12]}…; "
                         "the file was changed or belongs to another run")
    return torch.load(path, map_location="cpu", weights_only=True)
