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
from bench.lms.default_lm import DEFAULT_UPSTREAM
from bench.tasks.registry import TaskSpec


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
    trained: dict[str, Any] | None = None  # the trained head / prompt set (tensors + what rebuilds it), kept
    # beside the record as seed-N.pt (bench.methods.checkpointing.save_trained) for `bench evaluate`


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
    resume_dir: Path | None = None  # per-configuration training state kept across runs (bench.methods.checkpointing)
    progress: Callable[[str, int], Any] | None = None  # progress(description, total) -> advance(n) callable
    log: Callable[[str], None] = print
    max_epochs: int | None = None  # override of a method's epoch budget (smoke runs)
    feature_cache: str = "all"  # --feature-cache: all | pooled | none (bench.features.store.FEATURE_CACHE_MODES)

    def track(self, description: str, total: int):
        """A callable advancing a progress bar; a no-op outside the CLI."""
        if self.progress is None:
            return lambda n=1: None
        return self.progress(description, total)


class Method(ABC):
    """Subclasses set ``name``, ``kinds`` and ``Config`` (a dataclass of hyper-parameters with defaults). Option
    values are checked against the fields' declared types (int, float, bool, str, Optional, Literal, tuples) and
    converted to them before anything runs (:func:`validate_options`)."""

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]] = ("classification",)

    @dataclass
    class Config:
        pass

    def __init__(self, config: dict | None = None):
        self.config = self.Config(**validate_options(self.name, self.Config, config or {}))

    def supports(self, task: TaskSpec) -> bool:
        return task.kind in self.kinds

    def not_applicable(self, task: TaskSpec, ctx: RunContext) -> str | None:
        """Why this method cannot run ``task`` at all although it takes its kind (the plan then lists the pair as
        not applicable, the reason shown once, instead of failing its cells), or None. Called before any data or
        build work, so it must be cheap. Default: None."""
        return None

    def resolved_config(self, upstream: str | None = None) -> dict[str, Any]:
        """Everything that defines this method's run on ``upstream``; hashed into the result record."""
        return {"method": self.name, **dataclasses.asdict(self.config)}

    def prepare(self, ctx: RunContext) -> None:
        """Build shared, cached prerequisites (e.g. the offline default unit LM) before the timed run, so a
        record's wall time is its own work and not a one-off build shared by every task. Default: nothing."""

    def stage(self, task: TaskSpec, manifest: Manifest, ctx: RunContext) -> None:
        """Compute and cache what every cell of this method on this task reads (features, units, F0), once,
        before the cells run (the run plan's per-task stage: two cells running at once never extract the same
        thing twice, and a cell's time is its own training). Default: nothing."""

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


def feature_store(ctx: RunContext, task: str | None = None):
    """The run upstream's :class:`bench.features.store.FeatureStore` as ``--feature-cache`` says, logging its
    size estimate to ``ctx.log`` and its use under ``task`` (for ``bench cache``)."""
    from bench.features.store import FeatureStore

    return FeatureStore(ctx.upstream, ctx.upstream_path, ctx.cache_dir, device=ctx.device,
                        keep=ctx.feature_cache, log=ctx.log, task=task)


def stage_features(manifest: Manifest, ctx: RunContext, pooled: bool = False, task: str | None = None) -> None:
    """Extract (and cache) the run upstream's features of every example of ``manifest``: the stage of the
    baselines, which read nothing else. ``pooled``: the method reads the pooled means only (``--feature-cache
    pooled`` then keeps nothing else, ``none`` extracts in the run)."""
    store = feature_store(ctx, task)
    advance = ctx.track(f"features {ctx.upstream}", len(manifest.examples))
    if pooled:
        store.prepare_pooled(manifest, manifest.examples, advance)
    else:
        store.ensure(manifest, manifest.examples, advance)


# ---- typed options --------------------------------------------------------------------------------------------
def option_types(config_cls) -> dict[str, Any]:
    """Field name -> declared type of a method's ``Config`` dataclass (string annotations resolved)."""
    import typing

    hints = typing.get_type_hints(config_cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(config_cls)}


def type_name(tp) -> str:
    """A short human name of a type annotation, for error messages: 'a number', 'one of a, b', 'an integer or null'."""
    import types
    import typing

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number (e.g. 0.001 or 1e-3)"
    if tp is str:
        return "a string"
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        names = " or ".join(type_name(a) for a in rest)
        return names + " or null" if len(rest) < len(args) else names
    if origin in (tuple, list):
        inner = args[0] if args else Any
        return f"a list of {type_name(inner).removeprefix('a ').removeprefix('an ')}s, e.g. [1, 2]"
    if origin is dict or tp is dict:
        return "a mapping, e.g. {a: 1}"
    return getattr(tp, "__name__", str(tp))


# value ranges every method's options share by name (types come from each Config): a learning rate of -1 or NaN,
# a batch of 0 or an epoch budget of 0 is refused before any work, not found after the data is built
POSITIVE = {"lr", "batch_size", "max_epochs", "max_tokens", "prompt_length", "projector_dim", "project_dim",
            "hidden_size", "frame_stride", "max_decode_len", "max_total_len"}
NON_NEGATIVE = {"patience"}  # layers may count from the end (-1: the last)


def check_option_range(method: str, key: str, value: Any, raw: Any = None) -> Any:
    """``value`` when it is in the range its option allows; else a BenchError naming the option and the range."""
    import math

    from bench.core.errors import BenchError

    shown = value if raw is None else raw
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise BenchError(f"option {method}.{key}={shown!r}: expected a finite number")
    if key in POSITIVE and value <= 0:
        raise BenchError(f"option {method}.{key}={shown!r}: expected a number > 0")
    if key in NON_NEGATIVE and value < 0:
        raise BenchError(f"option {method}.{key}={shown!r}: expected a number ≥ 0")
    return value


def validate_options(method: str, config_cls, options: dict) -> dict:
    """``options`` checked and converted to ``config_cls``'s field types; a BenchError naming the first bad
    option (``method.key``), the value and the expected type, or the unknown key and the known ones."""
    from pydantic import TypeAdapter, ValidationError

    from bench.core.errors import BenchError

    types_ = option_types(config_cls)
    unknown = sorted(set(options) - set(types_))
    if unknown:
        raise BenchError(f"method '{method}': unknown option(s) {unknown}; known options: {sorted(types_)}")
    out = {}
    for key, value in options.items():
        try:
            out[key] = TypeAdapter(types_[key]).validate_python(value)
        except ValidationError:
            raise BenchError(f"option {method}.{key}={value!r}: expected {type_name(types_[key])}") from None
        check_option_range(method, key, out[key])
    return out


def parse_option_value(method: str, config_cls, key: str, raw: str) -> Any:
    """One ``-o method.key=RAW`` value from the command line, converted to the field's type: RAW read as YAML
    (``5``, ``1e-4``, ``true``, ``null``, ``[1, 2]``) and, where that does not fit the type (a string field given
    ``5``), as the plain string. A BenchError naming the option and the expected type when neither fits."""
    import yaml
    from pydantic import TypeAdapter, ValidationError

    from bench.core.errors import BenchError

    types_ = option_types(config_cls)
    if key not in types_:
        raise BenchError(f"method '{method}': unknown option '{key}'; known options: {sorted(types_)}")
    adapter = TypeAdapter(types_[key])
    try:
        candidates = [yaml.safe_load(raw), raw]
    except yaml.YAMLError:
        candidates = [raw]
    for value in candidates:
        try:
            converted = adapter.validate_python(value)
        except ValidationError:
            continue
        return check_option_range(method, key, converted, raw)
    raise BenchError(f"option {method}.{key}={raw!r}: expected {type_name(types_[key])}")

