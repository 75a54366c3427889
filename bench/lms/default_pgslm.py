"""Which prosody-aware LM prompt-pgslm prompts offline: a small MS-TLM on the SAME units as the default GSLM ULM.

SpeechPrompt v2 (arXiv 2303.00733, Table 1) compares GSLM with pGSLM on one unit set (HuBERT-100): the difference
between the two rows is the prosody streams, not the quantizer. The released pGSLM MS-TLM (Kharitonov et al., 2022)
cannot be downloaded offline, so the default is a stand-in built like :mod:`bench.lms.default_lm`'s ULM and on
top of it: the default ULM's k-means (``kmeans.npy``, so unit ids are identical to prompt-gslm's), durations from
run-length deduplication, speaker-normalised log-F0 (``bench.units.prosody``, WORLD instead of pGSLM's YAAPT) quantised
into 32 equal-mass bins fitted on training audio only, and ``MultiStreamLMConfig.small`` pretrained by
``bench.lms.multistream_checkpoint.pretrain_multistream_lm``. It is built once (fixed across seeds and tasks) under
``$BENCH_HOME/models/pgslm-default-<config hash>/``: ``checkpoint_best.pt`` (fairseq layout), ``kmeans.npy``,
``f0_bins.json`` (``F0Quantizer.save``) and ``units.json`` (upstream, layer, quantizer, F0 tracker, training data).
No validation or test audio is used.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bench.data.manifest import Example, Manifest, atomic_directory, write_text_atomic
from bench.core.errors import BenchError
from bench.lms.default_lm import KMEANS_FILE, UNITS_FILE, DefaultLMConfig
from bench.units.prosody import PGSLM_F0_BINS, F0Config

F0_BINS_FILE = "f0_bins.json"
CHECKPOINT_FILE = "checkpoint_best.pt"


@dataclass(frozen=True)
class DefaultPGSLMConfig:
    """Everything that defines the offline default MS-TLM; its hash names the cache directory.

    Pretraining settings are the pGSLM README recipe scaled to a 2×64 model on CPU (lr 2e-3, 20 warm-up updates,
    batch 16, 15 epochs at ~11 s each on two cores for the default-size built-in suite; a 30-epoch run measured
    validation token loss 1.691 at epoch 20 and 1.687 at 22, a flat curve, so 15 halves the build for little)."""

    units: DefaultLMConfig = field(default_factory=DefaultLMConfig)  # the GSLM default whose k-means we share
    f0_bins: int = PGSLM_F0_BINS  # pGSLM --nbins 32
    f0: F0Config = field(default_factory=F0Config)  # pyworld DIO + StoneMask at 5 ms (pGSLM: YAAPT)
    lm_size: str = "small"  # small (the GSLM default's shape) | tiny (fairseq transformer_ulm_tiny) | transformer_ulm
    epochs: int = 15
    lr: float = 2e-3
    warmup_updates: int = 20
    batch_size: int = 16
    valid_fraction: float = 0.05  # held-out training sequences that pick the best epoch
    seed: int = 0
    recipe: int = 2  # bumped when the code would train a different MS-TLM from the same settings (2: small, K=100)
    # hours of the rendered pretraining corpus (bench.data.pretrain_speech) added to the training utterances, as
    # the ULM's ``speech_hours``; the units (k-means) stay ``units``'
    speech_hours: float = 0.0

    def lm_config(self, num_units: int | None = None):
        """MS-TLM shape (discrete duration and F0, stream shifts (1, 1) as pGSLM's ``shift_1_1`` checkpoints)."""
        from bench.lms.multistream import MultiStreamLMConfig

        maker = {"small": MultiStreamLMConfig.small, "tiny": MultiStreamLMConfig.tiny,
                 "transformer_ulm": MultiStreamLMConfig.transformer_ulm, "big": MultiStreamLMConfig.transformer_ulm_big}
        if self.lm_size not in maker:
            raise BenchError(f"default pGSLM: lm_size '{self.lm_size}' unknown; expected one of {list(maker)}")
        return maker[self.lm_size](num_units if num_units is not None else self.units.num_units, f0_bins=self.f0_bins)

    def hashed_fields(self) -> dict:
        """The fields the hash covers: fields added later only when set, so existing MS-TLMs keep their names."""
        d = {**asdict(self), "units": self.units.hashed_fields()}
        if not self.speech_hours:
            d.pop("speech_hours")
        else:
            d["speech_corpus"] = self.speech_corpus().key()
        return d

    def speech_corpus(self):
        return replace(self.units, speech_hours=self.speech_hours).speech_corpus()

    def hash(self) -> str:
        d = self.hashed_fields()
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def default_pgslm_config(upstream: str | None = None, upstream_path: str | None = None) -> DefaultPGSLMConfig:
    """The offline default MS-TLM of a run on ``upstream``: on the units of that run's default GSLM ULM."""
    from bench.lms.default_lm import default_lm_config

    return DefaultPGSLMConfig(units=default_lm_config(upstream, upstream_path))


def default_pgslm_dir(config: DefaultPGSLMConfig | None = None, models_dir: Path | None = None) -> Path:
    from bench.core.paths import models_dir as default_models

    config = config or DefaultPGSLMConfig()
    return Path(models_dir or default_models()) / f"pgslm-default-{config.hash()}"


def is_built(directory: Path) -> bool:
    return all((Path(directory) / f).is_file() for f in (CHECKPOINT_FILE, UNITS_FILE, KMEANS_FILE, F0_BINS_FILE))


def ensure_default_pgslm(ctx, config: DefaultPGSLMConfig | None = None, rebuild: bool = False) -> Path:
    """The offline default MS-TLM directory: cached, else shipped with bench (sha256-checked,
    :mod:`bench.lms.shipped`), else built on first use (later calls only check its files).

    Building: the GSLM default (``ensure_default_lm``: built-in tasks' training audio, k-means), then
    :func:`build_pgslm` on the same training examples with that k-means. ``rebuild`` builds it here even where a
    shipped copy exists."""
    from bench.lms import shipped

    config = config or DefaultPGSLMConfig()
    return shipped.ensure(default_pgslm_dir(config, ctx.models_dir), "the offline default pGSLM MS-TLM", is_built,
                          lambda out: _build_default_pgslm(ctx, config, out), rebuild, log=getattr(ctx, "log", None))


def _build_default_pgslm(ctx, config: DefaultPGSLMConfig, out: Path) -> Path:
    from bench.features.store import FeatureStore
    from bench.lms.default_lm import (builtin_training_items, ensure_default_lm, locate_lm,
                                      pretraining_speech_examples, pretraining_speech_record)
    from bench.units.kmeans import KMeansQuantizer

    started = time.monotonic()
    gslm_dir = ensure_default_lm(ctx, config=config.units)
    units = locate_lm(str(gslm_dir)).units or {}
    if not units.get("kmeans"):
        raise BenchError(f"default ULM {gslm_dir}: {UNITS_FILE} names no k-means; delete the directory to rebuild it")
    quantizer = KMeansQuantizer.load(Path(units["kmeans"]))
    specs_items = builtin_training_items(config.units)
    items = [(m, exs) for _, m, exs in specs_items]
    names = [s.name for s, _, _ in specs_items]
    log = getattr(ctx, "log", print)
    stages = {"ULM, k-means and built-in suite audio": time.monotonic() - started}
    extra = {"gslm_default_lm": str(gslm_dir), "default_pgslm_config": asdict(config)}
    keep = {}
    if config.speech_hours > 0:  # 50 h of one Whisper state would cache ~7 GB: frames on the fly, units cached
        stage = time.monotonic()
        corpus, kept = pretraining_speech_examples(config.speech_corpus(), [m for m, _ in items], log,
                                                   getattr(ctx, "data_dir", None), getattr(ctx, "progress", None))
        stages["corpus audio"] = time.monotonic() - stage
        items.append((corpus, kept))
        names.append(corpus.root.name)
        extra["pretraining_speech"] = pretraining_speech_record(corpus, kept, config.speech_hours)
        keep = {"keep": "none", "layers": (int(units["layer"]),)}
    features = FeatureStore(units["upstream"], units.get("upstream_path"), ctx.cache_dir,
                            getattr(ctx, "device", "cpu"), **keep)
    log(f"building the offline default pGSLM MS-TLM ({config.lm_size}, K={quantizer.num_units}, "
        f"{config.f0_bins} F0 bins) on the units of {gslm_dir.name} -> {out}")
    return build_pgslm(items, features, int(units["layer"]), quantizer, out, config, cache_dir=ctx.cache_dir,
                       device=getattr(ctx, "device", "cpu"), names=names, log=log, extra=extra, stages=stages,
                       started=started, track=ctx.track)


def build_pgslm(items: Sequence[tuple[Manifest, Sequence[Example]]], features, layer: int, quantizer,
                out: Path, config: DefaultPGSLMConfig | None = None, *, cache_dir: Path | None = None,
                device: str = "cpu", names: Sequence[str] | None = None, log: Callable[[str], Any] = print,
                extra: dict | None = None, stages: dict | None = None, started: float | None = None,
                track: Callable[[str, int], Callable[[int], object]] | None = None) -> Path:
    """An MS-TLM directory from the training examples of one or more manifests, on ``quantizer``'s units.

    Units and durations come from :class:`bench.units.store.UnitStore`, frame F0 from
    :class:`bench.units.prosody.ProsodyStore` (both cached); speaker means and the F0 bins are fitted on these
    examples only, which must all be training examples. Written to a temporary directory and renamed; ``stages``
    (seconds of the caller's earlier stages, timed from ``started``) goes into ``BUILD.json`` with this
    function's own."""
    from bench.units.prosody import F0Quantizer, ProsodyStore, speaker_key, speaker_log_f0_means, voiced_log_f0
    from bench.lms.multistream_checkpoint import pretrain_multistream_lm
    from bench.units.store import UnitStore

    config = config or DefaultPGSLMConfig()
    started = time.monotonic() if started is None else started
    out = Path(out)
    names = list(names) if names is not None else [str(m.root) for m, _ in items]
    if len(names) != len(items):
        raise BenchError(f"build_pgslm: {len(names)} names for {len(items)} manifests")
    for name, (_, exs) in zip(names, items):
        wrong = sorted({e.split for e in exs} - {"train"})
        if wrong:
            raise BenchError(f"build_pgslm: {name} passes {wrong} examples; the LM may only see training audio")
    if not any(exs for _, exs in items):
        raise BenchError("build_pgslm: no training examples")
    lm_cfg = config.lm_config(quantizer.num_units)

    units = UnitStore(features, layer, quantizer, cache_dir)
    prosody = ProsodyStore(config.f0, cache_dir, unit_hop=int(features.info.downsample_rate))
    stages = {**(stages or {}), "units": 0.0, "F0": 0.0}  # units and F0: summed over the manifests
    per_item = []  # (unit sequences, frame F0, speaker means) per manifest
    for (manifest, exs), name in zip(items, names):
        exs = list(exs)
        stage = time.monotonic()
        seqs = units.get(manifest, exs, track(f"units of {name}", len(exs)) if track else None)
        stages["units"] += time.monotonic() - stage
        stage = time.monotonic()
        f0s = prosody.frame_f0(manifest, exs, track(f"F0 of {name}", len(exs)) if track else None)
        stages["F0"] += time.monotonic() - stage
        # speakers are grouped within a manifest: the same id in two corpora need not be the same person
        means = speaker_log_f0_means(f0s, [speaker_key(e) for e in exs])
        per_item.append((exs, seqs, f0s, means))
    values = [voiced_log_f0(f0) - means[speaker_key(e)]
              for exs, _, f0s, means in per_item for e, f0 in zip(exs, f0s)]
    f0_quantizer = F0Quantizer.fit(np.concatenate(values or [np.zeros(0)]), config.f0_bins,
                                   tracker=config.f0.config_id(), utterances=sum(len(v[0]) for v in per_item))
    rows = []
    for exs, seqs, f0s, means in per_item:
        for e, seq, f0 in zip(exs, seqs, f0s):
            if len(seq) < 2:  # nothing to predict
                continue
            p = prosody.unit_prosody(f0, seq.durations, means[speaker_key(e)], f0_quantizer)
            rows.append((seq.units.tolist(), seq.durations.tolist(), p.f0_bins.tolist()))
    if not rows:
        raise BenchError("build_pgslm: no training utterance has two or more units")
    order = list(range(len(rows)))
    random.Random(config.seed).shuffle(order)
    n_valid = int(round(config.valid_fraction * len(rows))) if len(rows) >= 10 else 0
    valid = [rows[i] for i in order[:n_valid]]
    train = [rows[i] for i in order[n_valid:]]

    trained_on = {name: len(exs) for name, (_, exs) in zip(names, items)}
    with atomic_directory(out) as tmp:
        stage = time.monotonic()
        pretrain_multistream_lm(train, lm_cfg, tmp, valid=valid or None, epochs=config.epochs, lr=config.lr,
                                warmup_updates=config.warmup_updates, batch_size=config.batch_size,
                                seed=config.seed, device=device, log=log,
                                extra={"trained_on": trained_on, "f0_edges": f0_quantizer.edges.tolist(),
                                       "quantizer_hash": quantizer.hash, "offline_stand_in": True})
        stages["MS-TLM pretraining"] = time.monotonic() - stage
        quantizer.save(tmp / KMEANS_FILE)
        f0_quantizer.save(tmp / F0_BINS_FILE)
        meta = {
            "upstream": features.upstream_name, "upstream_path": features.upstream_path, "layer": int(layer),
            "kmeans": KMEANS_FILE, "K": quantizer.num_units, "quantizer_hash": quantizer.hash,
            "unit_cache_id": units.config_id,
            "f0_bins": F0_BINS_FILE, "f0_num_bins": f0_quantizer.num_bins,
            "f0_tracker": {**asdict(config.f0), "config_id": config.f0.config_id()},
            "unit_hop_samples": prosody.unit_hop,
            "trained_on": trained_on, "sequences": {"train": len(train), "valid": len(valid)},
            "offline_stand_in": True, "pgslm_config": asdict(config), **(extra or {}),
        }
        write_text_atomic(tmp / UNITS_FILE, json.dumps(meta, indent=1), what="MS-TLM metadata")
        from bench.lms.default_lm import write_build_record

        write_build_record(tmp, "bench pretrain ulm --prosody", asdict(config),
                           {k: round(v, 1) for k, v in stages.items()}, time.monotonic() - started)
    log(f"pGSLM MS-TLM: {len(train)} training / {len(valid)} held-out sequences -> {out}")
    return out
