"""prompt-pgslm / prompt-pgslm-lv: SpeechPrompt prompt tuning on the prosody-aware unit LM (pGSLM MS-TLM).

SpeechPrompt v2 (arXiv 2303.00733, §3) prompts pGSLM as it prompts GSLM: input prompts are
concatenated in front of the (here: summed multi-stream) input embedding, every layer gets key/value prompts, a
trainable separator replaces the ``<s>`` embedding, and labels are read from the **unit-stream** logits through
a verbalizer (rule-based: one unit per label word; ``-lv``: a learnable Linear(|V| → C+4)). Its prompting code was
never released, so this attachment is the inferred one (docs/papers.md, "pGSLM"), recorded in every result.

Per utterance the LM sees ``[<s>, u_1..u_n, SEP, y_1..y_k, </s>]`` on the unit stream, with the units' durations
and 32-bin speaker-normalised log-F0 (``bench.units.prosody``) on the prosody streams, shifted by the LM's stream shifts;
SEP and label steps carry no prosody (the streams' padding symbols, whose embeddings are zero). The loss is the
cross-entropy of the label part only (SpeechPrompt §2.2): predicting y_1 at SEP, ..., ``</s>`` after y_k.

Rows, training, decoding (with a key/value cache), verbalizers and prompts are the one engine of
:mod:`bench.prompt.engine` (:class:`bench.prompt.unit_lm.PGSLMUnitLM` is the LM's side of it), shared with
prompt-gslm, so the two methods differ only in their LM and its input streams; generation tasks run too.

The LM is ``lm`` (an MS-TLM directory whose ``units.json`` names its quantizer and F0 bins; or a released fairseq
checkpoint / configured model name, with ``kmeans`` its quantizer) or, offline, the default of
:mod:`bench.lms.default_pgslm`: built once on the units of prompt-gslm's default ULM, so the GSLM vs pGSLM
comparison differs only in the prosody streams. The LM is fixed across seeds; a seed varies the prompt
initialisation, the random verbalizer and the data order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.data.manifest import Example, Manifest
from bench.core.errors import BenchError
from bench.methods.base import RunContext
from bench.prompt.engine import LoadedLM, PromptTuningConfig, PromptTuningMethod, existing_or_model
from bench.prompt.unit_lm import SourceSplit, SourceUnits
from bench.tasks.registry import TaskSpec


class PromptPGSLM(PromptTuningMethod):
    """Frozen MS-TLM + input/deep prompts + trainable separator + rule-based verbalizer (SpeechPrompt on pGSLM)."""

    name = "prompt-pgslm"

    @dataclass
    class Config(PromptTuningConfig):
        lm: str | None = None  # MS-TLM directory (its units.json gives upstream, layer, k-means, F0 bins), fairseq
        #                        checkpoint file, or configured model name (`bench models`: pgslm_ms_tlm);
        #                        None: the offline default (bench.lms.default_pgslm, recorded as a stand-in)
        #                        (with a released lm, option kmeans is required: its unit ids mean something
        #                        only under its quantizer, e.g. gslm_hubert_km100)
        f0_bins: str | None = None  # pGSLM bins (.th) / bench bins (.json) / model name (pgslm_f0_bins);
        #                             None: the LM directory's, else 32 bins fitted on the task's train split
        unit_layer: int | None = None  # None: the LM directory's record, 6 for HuBERT (GSLM), else the last layer
        f0_method: Literal["dio", "harvest"] | None = None  # pyworld; None: the LM directory's tracker, else dio
        deep_prompt: bool = True
        fit_f0_bins: bool = True  # without the LM's bins: fit 32 on the task's train split; False (published
        #                           recipes): refuse, the released MS-TLM only knows its own bins

    def deep(self) -> bool:
        return bool(self.config.deep_prompt)

    # ---- what the engine asks -------------------------------------------------------------------------------
    def lm_shape(self, ctx: RunContext) -> tuple[int, int, int, int]:
        """The MS-TLM's shape; the offline default from its configured shape on the meta device (nothing built)."""
        if self.config.lm is None:
            from bench.lms.default_pgslm import DefaultPGSLMConfig

            lm_cfg = DefaultPGSLMConfig().lm_config()
            frozen = _meta_parameters(lm_cfg)
        else:
            from bench.lms.multistream_checkpoint import load_multistream_lm

            lm = load_multistream_lm(_locate_lm(self.config.lm).checkpoint)
            lm_cfg, frozen = lm.cfg, lm.num_parameters()
        return lm_cfg.num_layers, lm_cfg.embed_dim, len(lm_cfg.unit_vocab), frozen

    def unit_count(self, ctx: RunContext) -> int:
        """From the offline default's config, or the released MS-TLM's (loaded once per process)."""
        from bench.prompt.verbalizers import NUM_SPECIALS

        if self.config.lm is None:
            from bench.lms.default_pgslm import DefaultPGSLMConfig

            return len(DefaultPGSLMConfig().lm_config().unit_vocab) - NUM_SPECIALS
        return _checkpoint_units(str(_locate_lm(self.config.lm).checkpoint)) - NUM_SPECIALS

    def load_lm(self, ctx: RunContext) -> LoadedLM:
        from bench.prompt.engine import frozen
        from bench.lms.shipped import shipped_marker
        from bench.prompt.unit_lm import PGSLMUnitLM
        from bench.lms.multistream_checkpoint import load_multistream_lm

        source = self._source(ctx)
        lm = load_multistream_lm(source.checkpoint)
        self._lm_source = source
        info = {"lm": "pGSLM MS-TLM", "lm_checkpoint": str(source.checkpoint), "lm_units_record": source.units,
                "default_offline_lm": self.config.lm is None, "lm_config": lm.cfg.to_dict(),
                "lm_provenance": {**lm.provenance,
                                  "offline_stand_in": bool((source.units or {}).get("offline_stand_in"))},
                "lm_shipped": shipped_marker(source.checkpoint.parent).get("shipped_from"),
                "prompt_attachment": "input prompt prepended to the summed multi-stream embedding + per-layer K/V "
                                     "prompts; labels from unit-stream logits (inferred, docs/papers.md)"}
        return LoadedLM(PGSLMUnitLM(frozen(lm, ctx.device)), info)

    def sources(self, task: TaskSpec, manifest: Manifest, splits: dict, ctx: RunContext, lm):
        streams, prosody = _unit_prosody_streams(self, manifest, splits, ctx, lm.cfg, self._lm_source)
        return streams, {"prosody": prosody}

    # ---- the LM's files -------------------------------------------------------------------------------------
    def resolved_config(self, upstream: str | None = None) -> dict:
        """With the offline default MS-TLM, its build config's hash too (as prompt-gslm's default LM)."""
        out = super().resolved_config(upstream)
        if self.config.lm is None:
            from bench.lms.default_pgslm import default_pgslm_config, default_pgslm_dir

            out["default_lm"] = default_pgslm_dir(default_pgslm_config(upstream)).name
        return out

    def _source(self, ctx: RunContext):
        if self.config.lm is None:
            from bench.lms.default_pgslm import default_pgslm_config, ensure_default_pgslm

            return _locate_lm(str(ensure_default_pgslm(ctx, default_pgslm_config(ctx.upstream, ctx.upstream_path))))
        return _locate_lm(self.config.lm)

    def stage(self, task: TaskSpec, manifest: Manifest, ctx: RunContext) -> None:
        """Units, durations and F0 of every split, cached before the cells (F0 is the expensive part)."""
        from bench.lms.multistream_checkpoint import load_multistream_lm

        source = self._source(ctx)
        splits = {s: manifest.split(s) for s in ("train", "valid", "test")}
        _unit_prosody_streams(self, manifest, splits, ctx, load_multistream_lm(source.checkpoint).cfg, source)

    def artefacts(self, ctx: RunContext) -> dict[str, str]:
        """The content of what a cell reads (as prompt-gslm's): MS-TLM weights, k-means centroids, F0 bins."""
        from bench.data.manifest import sha1_file
        from bench.lms.checkpoint import checkpoint_weights_sha256
        from bench.units.kmeans import KMeansQuantizer

        source = self._source(ctx)
        meta = source.units or {}
        out = {"lm_weights_sha256": checkpoint_weights_sha256(source.checkpoint)}
        km = self.config.kmeans or meta.get("kmeans")
        if km:
            out["kmeans_hash"] = KMeansQuantizer.load(existing_or_model(km, "kmeans")).hash
        bins = self.config.f0_bins or meta.get("f0_bins")
        if bins:
            out["f0_bins_sha1"] = sha1_file(existing_or_model(bins, "f0_bins"))
        return out

    def prepare(self, ctx: RunContext) -> None:
        """Builds the offline default LM; refuses, before any work, a run that would fit F0 bins it may not."""
        source = self._source(ctx)
        require_lm_f0_bins(self, source)



class PromptPGSLMLearnableVerbalizer(PromptPGSLM):
    """prompt-pgslm with SpeechPrompt v2's learnable verbalizer: Linear(|V| → C+4, no bias) on the unit logits."""

    name = "prompt-pgslm-lv"
    learnable_verbalizer = True


# ================================================================================================================
# the frozen LM and the files that define its inputs
# ================================================================================================================

@functools.lru_cache(maxsize=None)
def _checkpoint_units(checkpoint: str) -> int:
    from bench.lms.multistream_checkpoint import load_multistream_lm

    return len(load_multistream_lm(Path(checkpoint)).cfg.unit_vocab)


def _locate_lm(spec: str):
    """An MS-TLM directory, a checkpoint file or a configured model name (:func:`bench.lms.default_lm.locate_lm`,
    the one locator)."""
    from bench.lms.default_lm import locate_lm

    return locate_lm(spec, kind="fairseq_checkpoint", option="lm")


def _meta_parameters(lm_cfg) -> int:
    """Parameters of an MS-TLM of this shape, built on the meta device (no weights, no memory)."""
    import torch

    from bench.lms.multistream import MultiStreamUnitLM

    with torch.device("meta"):
        return MultiStreamUnitLM(lm_cfg).num_parameters()


def _load_f0_bins(spec: str, num_bins: int):
    """bench's JSON bins (``F0Quantizer.save``) or pGSLM's torch-saved ``{n_bins: edges}`` file."""
    from bench.units.prosody import F0Quantizer

    path = existing_or_model(spec, "f0_bins")
    return F0Quantizer.load(path) if path.suffix == ".json" else F0Quantizer.load_pgslm(path, num_bins)


# ================================================================================================================
# units + prosody
# ================================================================================================================

def _unit_prosody_streams(method: PromptPGSLM, manifest: Manifest, splits: dict[str, list[Example]],
                          ctx: RunContext, lm_cfg, source) -> tuple[dict[str, SourceSplit], dict]:
    """Deduplicated units with durations (``bench.units.store.UnitStore``, cached) and per-unit F0 bins
    (``bench.units.prosody.ProsodyStore``, cached) for every split, with the LM's own quantizers."""
    from dataclasses import asdict, fields

    from bench.methods.base import feature_store
    from bench.units.prosody import F0Config, ProsodyStore, speaker_key, speaker_log_f0_means
    from bench.units.kmeans import KMeansQuantizer
    from bench.units.store import UnitStore

    cfg = method.config
    meta = source.units or {}
    km_spec = cfg.kmeans or meta.get("kmeans")
    if km_spec is None:
        raise BenchError(f"method '{method.name}': lm={cfg.lm} was trained on the units of one quantizer; "
                         "give kmeans=<km.bin or gslm_hubert_km100> (and units_upstream hubert_local) so unit ids "
                         "match")
    km_path = existing_or_model(str(km_spec), "kmeans")
    quantizer = KMeansQuantizer.load(km_path)
    if quantizer.num_units != lm_cfg.num_units:
        raise BenchError(f"method '{method.name}': k-means {km_spec} has {quantizer.num_units} units but the LM "
                         f"{source.checkpoint} models {lm_cfg.num_units} (option kmeans)")
    upstream = cfg.units_upstream or meta.get("upstream") or ctx.upstream
    upstream_path = cfg.units_upstream_path or meta.get("upstream_path") or (
        ctx.upstream_path if upstream == ctx.upstream else None)
    layer = cfg.unit_layer if cfg.unit_layer is not None else meta.get("layer", 6 if "hubert" in upstream else -1)
    features = feature_store(ctx, upstream=upstream, upstream_path=upstream_path, layers=(int(layer),))
    if quantizer.dim != int(features.info.hidden_size):
        raise BenchError(f"method '{method.name}': k-means {km_spec} has {quantizer.dim}-dim centroids but upstream "
                         f"'{upstream}' gives {features.info.hidden_size}-dim features (options kmeans, "
                         "units_upstream)")
    store = UnitStore(features, int(layer), quantizer, ctx.cache_dir)
    order = [ex for s in ("train", "valid", "test") for ex in splits[s]]
    units = store.get(manifest, order, ctx.track("units", len(order)))

    tracker = {k: v for k, v in (meta.get("f0_tracker") or {}).items() if k in {f.name for f in fields(F0Config)}}
    if cfg.f0_method is not None:
        tracker["method"] = cfg.f0_method
    f0cfg = F0Config(**tracker)
    hop = int(features.info.downsample_rate)
    pstore = ProsodyStore(f0cfg, ctx.cache_dir, unit_hop=hop)
    f0s = pstore.frame_f0(manifest, order, ctx.track("F0", len(order)))
    means = speaker_log_f0_means(f0s, [speaker_key(e) for e in order])  # unsupervised: all splits, per speaker
    quantizer_f0, bins_source = _f0_quantizer(method, lm_cfg, source, pstore, manifest, splits["train"],
                                              f0s[:len(splits["train"])], means)

    out: dict = {"train": [], "valid": [], "test": []}
    i = 0
    for s in ("train", "valid", "test"):
        for ex in splits[s]:
            seq = units[i]
            p = pstore.unit_prosody(f0s[i], seq.durations, means[speaker_key(ex)], quantizer_f0)
            f0 = p.f0_bins if lm_cfg.discrete_f0 else p.log_f0
            out[s].append(SourceUnits(seq.units, {"duration": seq.durations, "f0": f0}))
            units[i] = None
            i += 1
        out[s] = SourceSplit.from_sources(out[s])  # kept through the cell: flat arrays, no object an utterance
    info = {
        "units": f"k-means {km_spec} on {upstream} layer {layer}",
        "unit_store": {**store.describe(), "kmeans": str(km_path), **store.stats},
        "num_units": quantizer.num_units,
        "unit_hop_samples": hop,
        "f0_tracker": f"pyworld {f0cfg.method} (pGSLM used YAAPT), {f0cfg.frame_period_ms} ms, "
                      f"{f0cfg.f0_floor:g}-{f0cfg.f0_ceil:g} Hz",
        "f0_tracker_config": {**asdict(f0cfg), "config_id": f0cfg.config_id()},
        "f0": "log F0, interpolated over unvoiced frames, minus the speaker mean, averaged per unit",
        "f0_bins": quantizer_f0.num_bins,
        "f0_bins_source": bins_source,
        "f0_edges": quantizer_f0.edges.tolist(),
        "duration": "run length in unit frames, clipped at max_duration",
    }
    return out, info


def require_lm_f0_bins(method: PromptPGSLM, source) -> None:
    """With ``fit_f0_bins`` False (the published recipes), the LM's own F0 bins must be given: option ``f0_bins``
    (e.g. the configured model ``pgslm_f0_bins``, pGSLM's ``mean_norm_log_f0_seg_bin.th``) or the LM directory's
    ``units.json``; bins fitted on the task's data are ones the released MS-TLM never saw."""
    cfg = method.config
    if cfg.fit_f0_bins or cfg.f0_bins is not None or (source.units or {}).get("f0_bins"):
        return
    raise BenchError(f"method '{method.name}': the LM {source.checkpoint} has no F0 bins and this recipe does not "
                     "fit them on task data (fit_f0_bins false): configure pgslm_f0_bins "
                     "(mean_norm_log_f0_seg_bin.th, docs/real-checkpoints.md) and set f0_bins=pgslm_f0_bins")


def _f0_quantizer(method: PromptPGSLM, lm_cfg, source, pstore, manifest, train, train_f0s, means):
    """(F0 bins, where they came from): option f0_bins, else the LM directory's, else fitted on the train split
    (unless ``fit_f0_bins`` is False: :func:`require_lm_f0_bins`)."""
    from bench.units.prosody import F0Quantizer

    require_lm_f0_bins(method, source)
    cfg, meta = method.config, source.units or {}
    if cfg.f0_bins is not None:
        quantizer_f0, bins_source = _load_f0_bins(cfg.f0_bins, lm_cfg.f0_bins), str(cfg.f0_bins)
    elif meta.get("f0_bins"):
        quantizer_f0, bins_source = F0Quantizer.load(Path(meta["f0_bins"])), str(meta["f0_bins"])
    else:
        quantizer_f0 = pstore.quantizer(manifest, train, train_f0s, means, num_bins=lm_cfg.f0_bins)
        bins_source = "fitted on the task's train split (equal-mass, pGSLM quantize_f0)"
    if lm_cfg.discrete_f0 and quantizer_f0.num_bins != lm_cfg.f0_bins:
        raise BenchError(f"method '{method.name}': F0 bins {bins_source} have {quantizer_f0.num_bins} bins but the LM "
                         f"{source.checkpoint} has {lm_cfg.f0_bins} (option f0_bins)")
    return quantizer_f0, bins_source
