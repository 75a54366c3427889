"""Which unit LM prompt-gslm prompts: a configured one, or the offline default built (once) by bench.

The published GSLM ULM (HuBERT-100, 151M parameters, LibriLight 6k h) cannot be downloaded offline, so the default
is a stand-in with the same pipeline at small scale: units = k-means (K=100) on one hidden state of the run's
upstream (``whisper_tiny_en`` by default, the layer in ``UNIT_LAYERS``) fitted on the **training** audio of the
built-in tasks, then a small ULM (``UnitLMConfig.small``) pretrained by
``bench.lms.pretrain.pretrain_unit_lm`` on the deduplicated units of that audio. No test or validation audio is
used. The directory is cached under ``$BENCH_HOME/models/ulm-default-<config hash>/`` and holds what a GSLM release
holds plus its quantizer: ``checkpoint_best.pt``, ``dict.txt``, ``kmeans.npy`` and ``units.json`` (upstream, layer).
Every result records the LM's sha1, so numbers from the stand-in are never mistaken for GSLM's. prompt-pgslm's
offline default (:mod:`bench.lms.default_pgslm`) reuses this directory's ``kmeans.npy``: both read the same units.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.data.manifest import atomic_directory, write_text_atomic
from bench.core.errors import BenchError

UNITS_FILE = "units.json"
KMEANS_FILE = "kmeans.npy"


DEFAULT_UPSTREAM = "whisper_tiny_en"  # the built-in grid's encoder (docs/upstreams.md)
# The hidden state the offline default's k-means reads, per upstream: for Whisper encoders chosen by the probe in
# benchmarks/probe_unit_layer.py (docs/upstreams.md has its figures); others use their last state.
UNIT_LAYERS = {"whisper_tiny_en": 3, "whisper_base": 4}


@dataclass(frozen=True)
class DefaultLMConfig:
    """Everything that defines the offline default LM; its hash names the cache directory."""

    tasks: str = "builtin"  # registry selection whose TRAIN audio trains k-means and the LM
    size: str = "default"  # built-in suite size
    data_seed: int = 0
    upstream: str = DEFAULT_UPSTREAM
    upstream_path: str | None = None
    layer: int | None = None  # None: UNIT_LAYERS of the upstream, else its last hidden state
    num_units: int = 100  # GSLM's HuBERT-100; above every built-in label space (SF: 42 symbols)
    kmeans_max_frames: int = 100_000
    kmeans_n_init: int = 5
    lm_size: str = "small"
    max_epochs: int = 20
    seed: int = 0
    pretrain: dict = field(default_factory=dict)  # extra keyword arguments of pretrain_unit_lm
    # hours of the rendered pretraining corpus (bench.data.pretrain_speech) added to the LM's training units; its
    # k-means stays fitted on the suite's training audio, so the tasks' units do not change
    speech_hours: float = 0.0
    # bumped when bench's code would train a different LM from the same settings, so a cached LM from older code
    # is not reused under the same name (2: fairseq-train's batches, bench.methods.batching; 3: Whisper units, K=100, small)
    recipe: int = 3

    @property
    def unit_layer(self) -> int:
        return self.layer if self.layer is not None else UNIT_LAYERS.get(self.upstream, -1)

    def lm_config(self):
        from bench.lms.model import UnitLMConfig

        makers = {"tiny": UnitLMConfig.tiny, "small": UnitLMConfig.small, "medium": UnitLMConfig.medium,
                  "big": UnitLMConfig.transformer_lm_big}
        if self.lm_size not in makers:
            raise BenchError(f"default LM: lm_size '{self.lm_size}' unknown; expected one of {', '.join(makers)}")
        return makers[self.lm_size](self.num_units + 4)

    def hashed_fields(self) -> dict:
        """The fields the hash covers: fields added later only when set, so existing LMs keep their names."""
        d = asdict(self)
        for name, absent in _ADDED_FIELDS.items():
            if d[name] == absent:
                del d[name]
        if self.speech_hours:  # and what that speech is: a new corpus recipe is a new LM
            d["speech_corpus"] = self.speech_corpus().key()
        return d

    def units_base(self) -> "DefaultLMConfig":
        """The default LM of the same units (every LM setting at its default): the one whose k-means an LM with
        pretraining speech reuses, shipped for the default upstream, so no k-means is fitted again."""
        from dataclasses import fields

        lm_fields = {"lm_size", "max_epochs", "pretrain", "speech_hours", "recipe"}
        return DefaultLMConfig(**{f.name: getattr(self, f.name) for f in fields(self) if f.name not in lm_fields})

    def speech_corpus(self):
        from bench.data.pretrain_speech import PretrainSpeechConfig

        return PretrainSpeechConfig(hours=self.speech_hours, seed=self.data_seed)

    def hash(self) -> str:
        return hashlib.sha1(json.dumps(self.hashed_fields(), sort_keys=True).encode()).hexdigest()[:12]


_ADDED_FIELDS = {"speech_hours": 0.0}


def default_lm_config(upstream: str | None = None, upstream_path: str | None = None) -> DefaultLMConfig:
    """The offline default LM of a run on ``upstream``: its units come from that encoder."""
    return DefaultLMConfig(upstream=upstream or DEFAULT_UPSTREAM, upstream_path=upstream_path)


@dataclass(frozen=True)
class LMFiles:
    checkpoint: Path
    dict: Path | None
    units: dict[str, Any] | None  # upstream/layer/kmeans the LM's units were made with, when recorded


def locate_lm(spec: str, kind: str = "ulm_dir", option: str = "lm_checkpoint") -> LMFiles:
    """A unit LM directory, a checkpoint file (``dict.txt`` beside it, when there is one), or a configured model name
    (``bench models``, of ``kind``: ``ulm_dir`` for GSLM, ``fairseq_checkpoint`` for an MS-TLM). The directory's
    ``units.json`` (its quantizer, F0 bins) comes with file names made absolute. The one locator of both methods."""
    p = Path(spec).expanduser()
    if p.is_dir():
        ckpt, dct = p / "checkpoint_best.pt", p / "dict.txt"
        if not ckpt.is_file():
            raise BenchError(f"unit LM directory {p} has no checkpoint_best.pt")
    elif p.is_file():
        ckpt, dct = p, p.parent / "dict.txt"
    else:
        if "/" in spec or spec.endswith(".pt"):
            raise BenchError(f"unit LM checkpoint not found: {spec} (option {option})")
        from bench.core.model_paths import resolve_model

        resolved = resolve_model(spec, kind=kind)
        if kind == "ulm_dir":
            ckpt, dct = resolved.files["checkpoint"], resolved.files.get("dict")
        else:
            ckpt, dct = resolved.file, None
    units = None
    meta = ckpt.parent / UNITS_FILE
    if meta.is_file():
        try:
            units = json.loads(meta.read_text())
        except ValueError as err:
            raise BenchError(f"{meta}: not valid JSON ({err}); expected the LM's unit record") from None
        for key in ("kmeans", "f0_bins"):
            if isinstance(units.get(key), str) and not Path(units[key]).is_absolute():
                units[key] = str(ckpt.parent / units[key])
    return LMFiles(ckpt, dct if dct is not None and Path(dct).is_file() else None, units)


def default_lm_dir(config: DefaultLMConfig | None = None, models_dir: Path | None = None) -> Path:
    from bench.core.paths import models_dir as default_models

    config = config or DefaultLMConfig()
    return Path(models_dir or default_models()) / f"ulm-default-{config.hash()}"


def builtin_training_items(config: DefaultLMConfig, registry=None) -> list[tuple[Any, Any, list]]:
    """(task spec, manifest, training examples) of the built-in tasks ``config.tasks`` selects, generating their
    audio if needed; the default LMs (GSLM and pGSLM) are trained on exactly these examples."""
    from bench.data.sources import prepare_manifest
    from bench.tasks.registry import TaskRegistry

    registry = registry or TaskRegistry()
    specs = [s for s in registry.select(config.tasks) if s.data.source == "builtin"]
    if not specs:
        raise BenchError(f"default LM: '{config.tasks}' selects no built-in task to train on")
    out = []
    for spec in specs:
        manifest = prepare_manifest(spec, config.size, config.data_seed)
        out.append((spec, manifest, manifest.split("train")))
    return out


def ensure_default_lm(ctx, registry=None, config: DefaultLMConfig | None = None,
                      lm_checkpoint: str | None = None, rebuild: bool = False) -> Path:
    """The configured LM directory (``lm_checkpoint``), else the offline default: cached, else shipped with bench
    (:mod:`bench.lms.shipped`, sha256-checked), else built on first use.

    Building: prepare the selected built-in tasks (generating their audio if needed), fit k-means on their
    training audio, pretrain the ULM on its units, write everything to a temporary directory and rename.
    ``rebuild`` builds it here even where a shipped copy exists (``bench pretrain ulm --rebuild``)."""
    if lm_checkpoint is not None:
        return locate_lm(lm_checkpoint).checkpoint.parent
    from bench.lms import shipped

    config = config or DefaultLMConfig()
    return shipped.ensure(default_lm_dir(config, ctx.models_dir), "the offline default unit LM", _is_built,
                          lambda out: _build_default_lm(ctx, registry, config, out), rebuild,
                          log=getattr(ctx, "log", None))


def _is_built(out: Path) -> bool:
    return (out / "checkpoint_best.pt").is_file() and (out / UNITS_FILE).is_file()


def _build_default_lm(ctx, registry, config: DefaultLMConfig, out: Path) -> Path:
    from bench.features.store import FeatureStore
    from bench.lms.pretrain import pretrain_unit_lm
    from bench.units.store import UnitStore, fit_quantizer

    started = stage = time.monotonic()
    stages: dict[str, float] = {}

    def done(name: str) -> None:
        nonlocal stage
        stages[name], stage = round(time.monotonic() - stage, 1), time.monotonic()

    training = builtin_training_items(config, registry)
    done("built-in suite audio")
    specs = [spec for spec, _, _ in training]
    items = [(manifest, exs) for _, manifest, exs in training]
    log = getattr(ctx, "log", print)
    layer = config.unit_layer
    log(f"building the offline default unit LM ({config.upstream} layer {layer}, K={config.num_units}, "
        f"{config.lm_size} ULM) on the training audio of {len(specs)} built-in task(s) -> {out}")
    features = FeatureStore(config.upstream, config.upstream_path, ctx.cache_dir, getattr(ctx, "device", "cpu"),
                            keep=getattr(ctx, "feature_cache", "all"), layers=(layer,))  # --feature-cache
    if config.speech_hours > 0:  # the units of the LM without the extra speech (shipped or built), so the tasks'
        from bench.units.kmeans import KMeansQuantizer  # units, and every comparison on them, stay as they were

        base = ensure_default_lm(ctx, registry, config.units_base())
        quantizer = KMeansQuantizer.load(base / KMEANS_FILE)
    else:
        quantizer = fit_quantizer(features, items, layer, config.num_units, config.seed, ctx.models_dir,
                                  max_frames=config.kmeans_max_frames, n_init=config.kmeans_n_init)
    done("k-means")
    store = UnitStore(features, layer, quantizer, ctx.cache_dir)
    sequences = []
    for manifest, exs in items:
        sequences += [seq.units.tolist() for seq in store.get(manifest, exs)]
    sequences = [s for s in sequences if len(s) > 1]
    done("built-in units")
    speech = _pretraining_speech_units(ctx, config, quantizer, [m for m, _ in items], log, done) \
        if config.speech_hours > 0 else None
    if speech is not None:
        sequences += speech["sequences"]

    with atomic_directory(out) as tmp:
        pretrain_unit_lm(sequences, config.lm_config(), tmp, seed=config.seed, max_epochs=config.max_epochs,
                         log=log, **config.pretrain)
        done("LM pretraining")
        quantizer.save(tmp / KMEANS_FILE)
        units = {"upstream": config.upstream, "upstream_path": config.upstream_path, "layer": layer,
                 "kmeans": KMEANS_FILE, "K": config.num_units, "quantizer_hash": quantizer.hash,
                 "trained_on": {s.name: len(exs) for s, (_, exs) in zip(specs, items)},
                 "sequences": len(sequences), "default_lm_config": asdict(config)}
        if speech is not None:
            units["pretraining_speech"] = {k: v for k, v in speech.items() if k != "sequences"}
        write_text_atomic(tmp / UNITS_FILE, json.dumps(units, indent=1), what="unit LM metadata")
        write_build_record(tmp, "bench pretrain ulm", asdict(config), stages, time.monotonic() - started)
    return out


def write_build_record(directory: Path, command: str, config: dict, stages: dict, seconds: float) -> None:
    """``BUILD.json``: how and where an LM directory was built, and how long each stage took (stages that found
    their work cached take seconds; a build from an empty ``$BENCH_HOME`` states the full cost)."""
    import datetime

    from bench.core.numerics import effective
    from bench.results.records import cpu_info, git_revision

    cpu = cpu_info()
    record = {"command": command, "config": config, "build_seconds": round(seconds), "stage_seconds": stages,
              "built_with_git_revision": git_revision(),
              "built_on": f"{cpu.get('model', '?')}, {cpu.get('cores', '?')} cores",
              "numerics": effective().get("mode"), "date": datetime.date.today().isoformat()}
    write_text_atomic(Path(directory) / "BUILD.json", json.dumps(record, indent=1), what="LM build record")


def pretraining_speech_examples(speech, builtin_manifests, log, data_dir: Path | None = None,
                                progress=None) -> tuple[Any, list]:
    """The rendered pretraining corpus ``speech`` (a ``PretrainSpeechConfig``; rendered or extended if needed) and
    its utterances whose text is no built-in valid/test transcript: what both stand-in LMs pretrain on."""
    from bench.data.pretrain_speech import build_pretrain_speech, held_out_texts, normalise

    corpus = build_pretrain_speech(speech, data_dir, progress, log)
    held_out = held_out_texts(builtin_manifests)
    return corpus, [e for e in corpus if normalise(e.extra.get("text", "")) not in held_out]


def pretraining_speech_record(corpus, kept, hours: float) -> dict:
    """What an LM's ``units.json`` says of the pretraining corpus it saw."""
    return {"corpus": corpus.root.name, "hours": hours, "utterances": len(kept),
            "dropped_held_out": len(corpus) - len(kept), "manifest_sha256": corpus.checksum()}


def _pretraining_speech_units(ctx, config: DefaultLMConfig, quantizer, builtin_manifests, log, done) -> dict:
    """Deduplicated units of the rendered pretraining corpus (``config.speech_hours``), without any utterance whose
    text is a built-in valid/test transcript. Features are extracted on the fly (50 h of one Whisper state would
    cache ~7 GB); the units are cached as any task's."""
    from bench.features.store import FeatureStore
    from bench.units.store import UnitStore

    corpus, kept = pretraining_speech_examples(config.speech_corpus(), builtin_manifests, log,
                                               getattr(ctx, "data_dir", None), getattr(ctx, "progress", None))
    done("pretraining speech audio")
    features = FeatureStore(config.upstream, config.upstream_path, ctx.cache_dir, getattr(ctx, "device", "cpu"),
                            keep="none", layers=(config.unit_layer,))
    store = UnitStore(features, config.unit_layer, quantizer, ctx.cache_dir)
    advance = ctx.track("pretraining speech units", len(kept))
    sequences = [seq.units.tolist() for seq in store.get(corpus, kept, advance)]
    sequences = [s for s in sequences if len(s) > 1]
    done("pretraining speech units")
    log(f"pretraining speech: {len(kept)} utterances ({len(corpus) - len(kept)} dropped: a held-out transcript), "
        f"{sum(map(len, sequences))} deduplicated units")
    return {"sequences": sequences, **pretraining_speech_record(corpus, kept, config.speech_hours),
            "units": sum(map(len, sequences))}
