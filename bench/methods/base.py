"""The method interface shared by baselines and prompt tuning.

A method is trained on a task's train split (model selection on valid), predicts the test split, and counts
its parameters. The runner computes metrics from its predictions and writes the result record, so every method
is scored by the same code.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from bench.data.manifest import Manifest
from bench.prompt.default_lm import DEFAULT_UPSTREAM
from bench.registry import TaskSpec


@dataclass
class Predictions:
    """Test-split outputs, aligned by utterance id.

    ``scores`` holds, per utterance, the score (log-probability or logit) of each class label; EER and other
    threshold-free metrics read it. ``unmapped`` counts outputs that map to no label (they are scored wrong).
    """

    ids: list[str]
    references: list[str]
    hypotheses: list[str]
    scores: list[dict[str, float]] | None = None
    unmapped: int = 0


@dataclass
class ParamCount:
    """Trainable: what the optimizer updates. Frozen: shared weights used but not updated.
    Stored per task: what must be saved to add one more task (for prompts: prompts + verbalizer)."""

    trainable: int
    frozen: int
    stored_per_task: int
    breakdown: dict[str, int] = field(default_factory=dict)


@dataclass
class MethodOutput:
    predictions: Predictions
    params: ParamCount
    info: dict[str, Any] = field(default_factory=dict)  # epochs run, best valid loss, LM checkpoint, ...


@dataclass
class RunContext:
    """What a method needs from the harness besides the task and its data."""

    seed: int
    upstream: str = DEFAULT_UPSTREAM
    upstream_path: str | None = None  # checkpoint for *_local upstreams
    device: str = "cpu"
    cache_dir: Path | None = None
    models_dir: Path | None = None
    workdir: Path | None = None  # per-record scratch (checkpoints); safe to delete after the record is written
    progress: Callable[[str, int], Any] | None = None  # progress(description, total) -> advance(n) callable
    log: Callable[[str], None] = print
    max_epochs: int | None = None  # override of a method's epoch budget (smoke runs)

    def track(self, description: str, total: int):
        """A callable advancing a progress bar; a no-op outside the CLI."""
        if self.progress is None:
            return lambda n=1: None
        return self.progress(description, total)


class Method(ABC):
    """Subclasses set ``name``, ``kinds`` and ``Config`` (a dataclass of hyper-parameters with defaults)."""

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]] = ("classification",)

    @dataclass
    class Config:
        pass

    def __init__(self, config: dict | None = None):
        known = {f.name for f in dataclasses.fields(self.Config)}
        unknown = sorted(set(config or {}) - known)
        if unknown:
            from bench.errors import BenchError

            raise BenchError(
                f"method '{self.name}': unknown option(s) {unknown}; known options: {sorted(known)}"
            )
        self.config = self.Config(**(config or {}))

    def supports(self, task: TaskSpec) -> bool:
        return task.kind in self.kinds

    def resolved_config(self, upstream: str | None = None) -> dict[str, Any]:
        """Everything that defines this method's run on ``upstream``; hashed into the result record."""
        return {"method": self.name, **dataclasses.asdict(self.config)}

    def prepare(self, ctx: RunContext) -> None:
        """Build shared, cached prerequisites (e.g. the offline default unit LM) before the timed run, so a
        record's wall time is its own work and not a one-off build shared by every task. Default: nothing."""

    def artefacts(self, ctx: RunContext) -> dict[str, str]:
        """Files this method's runs read whose content the configuration does not pin (a default LM, a k-means,
        a checkpoint named by path): name -> sha256 of the content. Called after :meth:`prepare`; the runner
        folds it into the resolved configuration, so the config hash (record identity and reuse) changes when an
        artefact's content does. Default: none."""
        return {}

    @abstractmethod
    def count_parameters(self, task: TaskSpec, ctx: RunContext) -> ParamCount:
        """Parameter counts without training (``bench params``)."""

    @abstractmethod
    def run(self, task: TaskSpec, manifest: Manifest, ctx: RunContext) -> MethodOutput:
        """Train on train (select on valid), predict test."""
