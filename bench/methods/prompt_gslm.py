"""prompt-gslm / prompt-gslm-lv: SpeechPrompt prompt tuning of a frozen GSLM unit LM.

speech → one upstream layer → k-means units (deduplicated) → frozen ULM with input + deep prompts and a trainable
``<s>`` separator → label tokens through a verbalizer (SpeechPrompt v1, Chang et al. 2022; v2, 2303.00733).
``prompt-gslm`` uses the rule-based verbalizer (``random`` by default: the v2 paper's GSLM baseline rows);
``prompt-gslm-lv`` v2's learnable verbalizer Linear(|V| → C+4). Defaults follow v2: prompt length 5, deep prompts,
Adam lr 5e-3, batch 32. Only the prompts (and the verbalizer) train: the LM's weights are checked bit-identical
after training, and the LM's provenance (sha1, epoch) is recorded so a run without the pretrained LM is visible.
Training, decoding, verbalizers, prompts and the options they read (``separator_init``, ``loss_normalization``,
``class_order``, ``max_decode_len``, with their published sources) are the one engine of
:mod:`bench.prompt.engine`, shared with prompt-pgslm; this file only loads the ULM and reads its units.

The LM is ``lm_checkpoint`` (a fairseq ULM directory/checkpoint or a configured model name such as
``gslm_hubert100_lm``, with ``kmeans`` its quantizer, e.g. ``gslm_hubert_km100``, and ``units_upstream``
``hubert_local`` + ``units_upstream_path``) or, offline, the default tiny ULM of :mod:`bench.lms.default_lm`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.data.manifest import Manifest
from bench.core.errors import BenchError
from bench.methods.base import RunContext
from bench.prompt.engine import LoadedLM, PromptTuningConfig, PromptTuningMethod, existing_or_model, num_symbols
from bench.tasks.registry import TaskSpec

_num_symbols = num_symbols  # the name callers imported


class PromptGSLM(PromptTuningMethod):
    """Frozen GSLM ULM + input/deep prompts + trainable separator + rule-based verbalizer (SpeechPrompt v1)."""

    name = "prompt-gslm"

    @dataclass
    class Config(PromptTuningConfig):
        lm_checkpoint: str | None = None  # ULM dir / checkpoint_best.pt / model name; None: offline default ULM
        units_layer: int | None = None  # None: the LM dir's record, 6 for HuBERT (GSLM), else the last layer
        deep: bool = True  # deep prompts in every layer (always on in both public codebases)

    def _verbalizer_method(self) -> str:
        return self.verbalizer_method()

    def _lm_files(self, ctx: RunContext):
        from bench.lms.default_lm import default_lm_config, ensure_default_lm, locate_lm

        if self.config.lm_checkpoint is None:
            return locate_lm(str(ensure_default_lm(ctx, config=default_lm_config(ctx.upstream, ctx.upstream_path))))
        return locate_lm(self.config.lm_checkpoint)

    def resolved_config(self, upstream: str | None = None) -> dict[str, Any]:
        """With the offline default LM (built on ``upstream``'s units), its build config's hash too: a record made
        on another stand-in LM (other settings or an older recipe) is never reused as this one."""
        out = super().resolved_config(upstream)
        if self.config.lm_checkpoint is None:
            from bench.lms.default_lm import default_lm_config, default_lm_dir

            out["default_lm"] = default_lm_dir(default_lm_config(upstream)).name
        return out

    def prepare(self, ctx: RunContext) -> None:
        if self.config.lm_checkpoint is None:
            self._lm_files(ctx)

    def _unit_store(self, files, ctx: RunContext):
        """(UnitStore, k-means spec) of the units the LM reads: its quantizer on its upstream's layer."""
        from bench.methods.base import feature_store
        from bench.units.kmeans import KMeansQuantizer
        from bench.units.store import UnitStore

        cfg = self.config
        units_meta = files.units or {}
        km_spec = cfg.kmeans or units_meta.get("kmeans")
        if km_spec is None:
            raise BenchError(f"method '{self.name}': option 'kmeans' is required with lm_checkpoint "
                             f"{cfg.lm_checkpoint} (the LM's unit ids only mean something under its quantizer)")
        quantizer = KMeansQuantizer.load(_resolve_kmeans(km_spec))
        upstream = cfg.units_upstream or units_meta.get("upstream") or ctx.upstream
        upstream_path = cfg.units_upstream_path or units_meta.get("upstream_path") or (
            ctx.upstream_path if upstream == ctx.upstream else None)
        layer = cfg.units_layer if cfg.units_layer is not None else units_meta.get(
            "layer", 6 if "hubert" in upstream else -1)
        features = feature_store(ctx, upstream=upstream, upstream_path=upstream_path, layers=(layer,))
        return UnitStore(features, layer, quantizer, ctx.cache_dir), km_spec

    def stage(self, task: TaskSpec, manifest: Manifest, ctx: RunContext) -> None:
        """Units (and so features) of every example, cached before the cells."""
        store, _ = self._unit_store(self._lm_files(ctx), ctx)
        store.ensure(manifest, manifest.examples, ctx.track(f"{task.name}: units", len(manifest.examples)))

    def artefacts(self, ctx: RunContext) -> dict[str, str]:
        """The content of what a cell reads, for its record's identity: the LM's weights and dictionary and the
        quantizer's centroids (a k-means that came out differently on another machine is another configuration)."""
        from bench.data.manifest import sha1_file
        from bench.lms.checkpoint import checkpoint_weights_sha256
        from bench.units.kmeans import KMeansQuantizer

        files = self._lm_files(ctx)
        out = {"lm_weights_sha256": checkpoint_weights_sha256(files.checkpoint)}
        if files.dict is not None:
            out["lm_dict_sha1"] = sha1_file(Path(files.dict))
        km = self.config.kmeans or (files.units or {}).get("kmeans")
        if km:
            out["kmeans_hash"] = KMeansQuantizer.load(_resolve_kmeans(km)).hash
        return out

    # ---- what the engine asks -------------------------------------------------------------------------------
    def lm_shape(self, ctx: RunContext) -> tuple[int, int, int, int]:
        """The LM's shape (the offline default's from its config, without building it); frozen on the meta device."""
        from bench.results.params import frozen_lm_parameters

        if self.config.lm_checkpoint is None:
            from bench.lms.default_lm import DefaultLMConfig

            lm_cfg = DefaultLMConfig().lm_config()
        else:
            from bench.lms.checkpoint import load_unit_lm

            files = self._lm_files(ctx)
            lm_cfg = load_unit_lm(files.checkpoint, files.dict).cfg
        return lm_cfg.num_layers, lm_cfg.embed_dim, lm_cfg.vocab_size, frozen_lm_parameters(lm_cfg)

    def unit_count(self, ctx: RunContext) -> int:
        """From the offline default's config or the LM's ``dict.txt`` (nothing built or loaded)."""
        from bench.prompt.verbalizers import NUM_SPECIALS

        if self.config.lm_checkpoint is None:
            from bench.lms.default_lm import DefaultLMConfig

            return DefaultLMConfig().lm_config().vocab_size - NUM_SPECIALS
        from bench.lms.default_lm import locate_lm
        from bench.lms.model import UnitDictionary

        files = locate_lm(self.config.lm_checkpoint)
        if files.dict is None or not Path(files.dict).is_file():
            return super().unit_count(ctx)
        return len(UnitDictionary.load(Path(files.dict))) - NUM_SPECIALS

    def load_lm(self, ctx: RunContext) -> LoadedLM:
        from bench.prompt.engine import frozen
        from bench.lms.shipped import shipped_marker
        from bench.prompt.unit_lm import GSLMUnitLM
        from bench.lms.checkpoint import load_unit_lm

        files = self._lm_files(ctx)
        lm = load_unit_lm(files.checkpoint, files.dict)
        provenance = dict(getattr(lm, "provenance", {}) or {})
        if not provenance.get("sha1"):
            raise BenchError(f"{files.checkpoint}: the unit LM loaded without provenance; refusing to prompt an "
                             "LM whose weights are not verified as loaded")
        self._files = files
        info = {"lm": {"checkpoint": str(files.checkpoint), "dict": str(files.dict), "provenance": provenance,
                       "config": _cfg_dict(lm.cfg), "default_offline_lm": self.config.lm_checkpoint is None,
                       "shipped": shipped_marker(files.checkpoint.parent).get("shipped_from")}}
        return LoadedLM(GSLMUnitLM(frozen(lm, ctx.device)), info)

    def sources(self, task: TaskSpec, manifest: Manifest, splits: dict, ctx: RunContext, lm):
        import numpy as np

        from bench.prompt.unit_lm import SourceSplit

        store, km_spec = self._unit_store(self._files, ctx)
        if store.quantizer.num_units != len(lm.vocab) - 4:
            raise BenchError(f"k-means {km_spec} has {store.quantizer.num_units} units but the LM dictionary "
                             f"{self._files.dict} has {len(lm.vocab) - 4}")
        # every reader of a source's units takes int(u): int16 holds any K up to 32,768 in a quarter of the bytes
        # (a split of 10^5 utterances keeps them all through the cell)
        dtype = np.int16 if store.quantizer.num_units <= 2**15 else np.int64
        out = {}
        for s, exs in splits.items():  # one flat array a split, no object an utterance (SourceSplit)
            split = store.get_split(manifest, exs, ctx.track(f"{task.name}: units ({s})", len(exs)) if exs else None,
                                    dtype)
            out[s] = SourceSplit(split.units, split.offsets)
        return out, {"units": {**store.describe(), "kmeans": str(km_spec), **store.stats}}


class PromptGSLMLearnableVerbalizer(PromptGSLM):
    """prompt-gslm with SpeechPrompt v2's learnable verbalizer: Linear(|V| → C+4, no bias, dropout 0.1)."""

    name = "prompt-gslm-lv"
    learnable_verbalizer = True


def _resolve_kmeans(spec: str) -> Path:
    return existing_or_model(spec, "kmeans")


def _cfg_dict(cfg) -> dict:
    import dataclasses

    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(vars(cfg))
