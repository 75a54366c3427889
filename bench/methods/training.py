"""The training loop both baselines share: seeded mini-batches over cached features, Adam, gradient clipping,
model selection on the valid split with early stopping, best weights restored before testing.

SUPERB's recipe (s3prl ``downstream/runner.py``): Adam, grad-norm clip 1, no scheduler, evaluate on dev
periodically and keep the best dev checkpoint. We evaluate once per epoch and stop after ``patience`` epochs
without improvement (the built-in suite is small; SUPERB instead runs a fixed 200k steps).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class TrainSettings:
    lr: float
    batch_size: int
    max_epochs: int
    patience: int
    grad_clip: float = 1.0


@dataclass
class FitResult:
    epochs_run: int
    best_epoch: int  # 1-based; 0 = the untrained model was never beaten
    best_valid: dict[str, float]
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)

    def as_info(self) -> dict:
        return {"epochs_run": self.epochs_run, "best_epoch": self.best_epoch, "best_valid": self.best_valid,
                "steps": self.steps, "history": self.history}


def batches(n: int, batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """A seeded permutation of range(n) cut into mini-batches (the last may be smaller)."""
    order = rng.permutation(n).tolist()
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def fit(model, n_train: int, train_loss: Callable[[Sequence[int]], "object"],
        validate: Callable[[], tuple[tuple, dict[str, float]]], settings: TrainSettings, seed: int,
        log: Callable[[str], None] = print, advance: Callable[[int], object] | None = None,
        layout: Sequence[Sequence[int]] | None = None, resume: Path | None = None) -> FitResult:
    """Train ``model`` in place and leave it holding the weights that scored best on valid.

    ``train_loss(batch_indices)`` returns the mean loss of one mini-batch (model in train mode);
    ``validate()`` runs in eval mode under no_grad and returns (selection key, numbers to log), a lower key
    being better (e.g. ``(-accuracy, loss)``). The best weights are kept in memory only: nothing read them back
    from the per-epoch ``*-best.pt`` file once written, which only cost disk (and failed on a full one).
    ``layout``: fixed mini-batches (e.g. s3prl's length buckets) visited in a seeded random order each epoch;
    None: a fresh seeded permutation cut into ``batch_size`` batches each epoch. ``resume``: the cell's resume
    directory: the loop's state is saved there after an epoch (at most every ``BENCH_RESUME_EVERY_S`` seconds)
    and a saved one is continued (:mod:`bench.methods.checkpointing`).
    """
    from bench.methods import checkpointing
    import torch

    torch.manual_seed(seed)  # dropout masks
    rng = np.random.default_rng(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=settings.lr)

    def evaluate() -> tuple[tuple, dict[str, float]]:
        model.eval()
        with torch.no_grad():
            key, numbers = validate()
        model.train()
        return key, numbers

    saved = checkpointing.load_state(resume, rng, log)
    if saved is None:
        best_key, best_numbers = evaluate()
        best_state, best_epoch = copy.deepcopy(model.state_dict()), 0
        history, steps, stale, epoch, stopped = [], 0, 0, 0, False
    else:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        best_key, best_numbers, best_state = tuple(saved["best_key"]), saved["best_numbers"], saved["best_state"]
        best_epoch, history, steps, stale = saved["best_epoch"], saved["history"], saved["steps"], saved["stale"]
        epoch, stopped = saved["epoch"], saved["stopped"]
        if advance:
            advance(epoch)
    for epoch in range(epoch + 1, 0 if stopped else settings.max_epochs + 1):
        model.train()
        total, count = 0.0, 0
        epoch_batches = (batches(n_train, settings.batch_size, rng) if layout is None
                         else [list(layout[i]) for i in rng.permutation(len(layout))])
        for batch in epoch_batches:
            loss = train_loss(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at epoch {epoch}, step {steps}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
            opt.step()
            steps += 1
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        key, numbers = evaluate()
        history.append({"epoch": epoch, "train_loss": round(total / max(count, 1), 6),
                        **{f"valid_{k}": round(v, 6) for k, v in numbers.items()}})
        if advance:
            advance(1)
        if key < best_key:
            best_key, best_numbers, best_epoch, stale = key, numbers, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            stopped = 0 < settings.patience <= stale  # 0: never stop early (fairseq's --patience)
        checkpointing.save_state(resume, {
            "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(), "best_key": list(best_key),
            "best_numbers": best_numbers, "best_state": best_state, "best_epoch": best_epoch, "history": history,
            "steps": steps, "stale": stale, "stopped": stopped}, rng)
        if stopped:
            log(f"early stop at epoch {epoch}: no valid improvement for {settings.patience} epochs")
            break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(epochs_run=epoch, best_epoch=best_epoch,
                     best_valid={k: float(v) for k, v in best_numbers.items() if not math.isnan(v)},
                     steps=steps, history=history)


def pad_layers(feats: Sequence[np.ndarray]):
    """Cached (L, T_i, D) arrays → per-layer list of (B, T_max, D) float32 tensors and a (B,) length tensor
    (the ``all_hs, all_lens`` that s3prl's ``Featurizer`` takes)."""
    import torch

    lens = torch.tensor([f.shape[1] for f in feats], dtype=torch.long)
    L, D = feats[0].shape[0], feats[0].shape[2]
    x = torch.zeros(L, len(feats), int(lens.max()), D)
    for i, f in enumerate(feats):
        x[:, i, : f.shape[1]] = torch.from_numpy(np.asarray(f, dtype=np.float32))
    return list(x.unbind(0)), [lens] * L, lens


def feature_dims(feats: Sequence[np.ndarray]) -> tuple[int, int]:
    """(num_layers, hidden_size) of cached features, checked to agree across utterances."""
    from bench.core.errors import BenchError

    shapes = {(f.shape[0], f.shape[2]) for f in feats}
    if len(shapes) != 1 or any(f.ndim != 3 for f in feats):
        raise BenchError(f"cached features disagree in (layers, dim): {sorted(shapes)[:4]}; clear the feature "
                         "cache for this upstream")
    return shapes.pop()


def baseline_defaults(filename: str, section: str = "defaults") -> dict:
    """A baseline's hyper-parameter defaults from ``baselines/<filename>`` (configuration is data: the YAML file
    is where they are chosen and documented; user options override them)."""
    from bench.core.errors import BenchError
    from bench.core.paths import repo_root
    from bench.tasks.registry import read_yaml

    path = repo_root() / "baselines" / filename
    if not path.is_file():
        raise BenchError(f"baseline config not found: {path}")
    raw = read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get(section), dict):
        raise BenchError(f"{path}: expected a mapping '{section}:' of hyper-parameters")
    return dict(raw[section])
