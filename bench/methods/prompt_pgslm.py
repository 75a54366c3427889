"""prompt-pgslm / prompt-pgslm-lv: SpeechPrompt prompt tuning on the prosody-aware unit LM (pGSLM MS-TLM).

SpeechPrompt v2 (arXiv 2303.00733, §3; speechprompt.md §1.3) prompts pGSLM as it prompts GSLM: input prompts are
concatenated in front of the (here: summed multi-stream) input embedding, every layer gets key/value prompts, a
trainable separator replaces the ``<s>`` embedding, and labels are read from the **unit-stream** logits through
a verbalizer (rule-based: one unit per label word; ``-lv``: a learnable Linear(|V| → C+4)). Its prompting code was
never released, so this attachment is the inferred one (speechprompt.md §1.3), recorded in every result.

Per utterance the LM sees ``[<s>, u_1..u_n, SEP, y_1..y_k, </s>]`` on the unit stream, with the units' durations
and 32-bin speaker-normalised log-F0 (``bench.prosody``) on the prosody streams, shifted by the LM's stream shifts;
SEP and label steps carry no prosody (the streams' padding symbols, whose embeddings are zero). The loss is the
cross-entropy of the label part only (SpeechPrompt §2.2): predicting y_1 at SEP, ..., ``</s>`` after y_k.

The LM is ``lm`` (an MS-TLM directory whose ``units.json`` names its quantizer and F0 bins; or a released fairseq
checkpoint / configured model name, with ``kmeans`` its quantizer) or, offline, the default of
:mod:`bench.prompt.default_pgslm`: built once on the units of prompt-gslm's default ULM, so the GSLM vs pGSLM
comparison differs only in the prosody streams. The LM is fixed across seeds; a seed varies the prompt
initialisation, the random verbalizer and the data order.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bench.data.manifest import Example, Manifest
from bench.errors import BenchError
from bench.methods.base import Method, MethodOutput, ParamCount, Predictions, RunContext
from bench.registry import TaskSpec

PROMPT_DROPOUT = 0.1  # SpeechPrompt hard-codes dropout 0.1 on prompts (and on the learnable verbalizer output)


class PromptPGSLM(Method):
    """Frozen MS-TLM + input/deep prompts + trainable separator + rule-based verbalizer (SpeechPrompt on pGSLM)."""

    name = "prompt-pgslm"
    kinds = ("classification",)
    learnable_verbalizer = False

    @dataclass
    class Config:
        lm: str | None = None  # MS-TLM directory (its units.json gives upstream, layer, k-means, F0 bins), fairseq
        #                        checkpoint file, or configured model name (`bench models`: pgslm_ms_tlm);
        #                        None: the offline default (bench.prompt.default_pgslm, recorded as a stand-in)
        kmeans: str | None = None  # km.bin / .npy / model name (gslm_hubert_km100); None: the LM directory's.
        #                            Required with a released lm, whose unit ids only mean something under it
        f0_bins: str | None = None  # pGSLM bins (.th) / bench bins (.json) / model name (pgslm_f0_bins);
        #                             None: the LM directory's, else 32 bins fitted on the task's train split
        units_upstream: str | None = None  # None: the LM directory's record, else --upstream
        units_upstream_path: str | None = None
        unit_layer: int | None = None  # None: the LM directory's record, 6 for HuBERT (GSLM), else the last layer
        f0_method: Literal["dio", "harvest"] | None = None  # pyworld; None: the LM directory's tracker, else dio
        prompt_length: int = 5  # SpeechPrompt v2: l = 5
        deep_prompt: bool = True
        verbalizer: Literal["random", "freq"] = "random"  # random: v2 paper's v1 rows; ignored by -lv
        lr: float = 5e-3
        batch_size: int = 32  # fairseq --batch-size
        max_tokens: int = 4096  # fairseq --max-tokens: batches are fairseq-train's, as prompt-gslm's
        max_epochs: int = 50  # as prompt-gslm
        patience: int = 5

    # ---- parameter counts ----------------------------------------------------------------------------------
    def _prompt_sizes(self, lm_cfg, num_classes: int) -> dict[str, int]:
        L, d = self.config.prompt_length, lm_cfg.embed_dim
        sizes = {"input_prompt": L * d, "separator": d}
        if self.config.deep_prompt:
            sizes["deep_prompts"] = 2 * lm_cfg.num_layers * L * d
        if self.learnable_verbalizer:
            sizes["verbalizer"] = len(lm_cfg.unit_vocab) * (num_classes + 4)
        return sizes

    def count_parameters(self, task: TaskSpec, ctx: RunContext) -> ParamCount:
        """Input prompt L·d + deep prompts 2·layers·L·d + separator d (+ |V|·(C+4) for -lv); for
        transformer_ulm_big that is 25,600·L + 1,024, as for GSLM (SpeechPrompt §2.3). Nothing is trained: the
        offline default is counted from its configured shape on the meta device."""
        if self.config.lm is None:
            from bench.prompt.default_pgslm import DefaultPGSLMConfig

            lm_cfg = DefaultPGSLMConfig().lm_config()
            frozen = _meta_parameters(lm_cfg)
        else:
            from bench.ulm.multistream_checkpoint import load_multistream_lm

            lm = load_multistream_lm(_locate_lm(self.config.lm, self.name).checkpoint)
            lm_cfg, frozen = lm.cfg, lm.num_parameters()
        sizes = self._prompt_sizes(lm_cfg, len(task.class_labels))
        trainable = sum(sizes.values())
        return ParamCount(trainable=trainable, frozen=frozen, stored_per_task=trainable, breakdown=sizes)

    def resolved_config(self, upstream: str | None = None) -> dict:
        """With the offline default MS-TLM, its build config's hash too (as prompt-gslm's default LM)."""
        out = super().resolved_config(upstream)
        if self.config.lm is None:
            from bench.prompt.default_pgslm import default_pgslm_config, default_pgslm_dir

            out["default_lm"] = default_pgslm_dir(default_pgslm_config(upstream)).name
        return out

    def _source(self, ctx: RunContext):
        if self.config.lm is None:
            from bench.prompt.default_pgslm import default_pgslm_config, ensure_default_pgslm

            return _locate_lm(str(ensure_default_pgslm(ctx, default_pgslm_config(ctx.upstream, ctx.upstream_path))),
                              self.name)
        return _locate_lm(self.config.lm, self.name)

    def stage(self, task: TaskSpec, manifest: Manifest, ctx: RunContext) -> None:
        """Units, durations and F0 of every split, cached before the cells (F0 is the expensive part)."""
        from bench.ulm.multistream_checkpoint import load_multistream_lm

        source = self._source(ctx)
        splits = {s: manifest.split(s) for s in ("train", "valid", "test")}
        _unit_prosody_streams(self, manifest, splits, ctx, load_multistream_lm(source.checkpoint).cfg, source)

    def artefacts(self, ctx: RunContext) -> dict[str, str]:
        """The content of what a cell reads (as prompt-gslm's): MS-TLM weights, k-means centroids, F0 bins."""
        from bench.data.manifest import sha1_file
        from bench.ulm.checkpoint import checkpoint_weights_sha256
        from bench.units.kmeans import KMeansQuantizer

        source = self._source(ctx)
        meta = source.units or {}
        out = {"lm_weights_sha256": checkpoint_weights_sha256(source.checkpoint)}
        km = self.config.kmeans or meta.get("kmeans")
        if km:
            out["kmeans_hash"] = KMeansQuantizer.load(_existing_or_model(km, "kmeans")).hash
        bins = self.config.f0_bins or meta.get("f0_bins")
        if bins:
            out["f0_bins_sha1"] = sha1_file(_existing_or_model(bins, "f0_bins"))
        return out

    def prepare(self, ctx: RunContext) -> None:
        if self.config.lm is None:
            self._source(ctx)

    # ---- run -----------------------------------------------------------------------------------------------
    def run(self, task: TaskSpec, manifest: Manifest, ctx: RunContext) -> MethodOutput:
        import torch

        from bench.prompt.shipped import shipped_marker
        from bench.ulm.multistream_checkpoint import load_multistream_lm

        cfg = self.config
        if cfg.prompt_length < 1:
            raise BenchError(f"method '{self.name}': prompt_length must be >= 1")
        splits = {s: manifest.split(s) for s in ("train", "valid", "test")}
        if not splits["train"] or not splits["test"]:
            raise BenchError(f"task '{task.name}': prompt-pgslm needs train and test examples")

        source = self._source(ctx)
        lm = load_multistream_lm(source.checkpoint)
        provenance = {**lm.provenance, "offline_stand_in": bool((source.units or {}).get("offline_stand_in"))}
        lm_cfg = lm.cfg
        streams, prosody_info = _unit_prosody_streams(self, manifest, splits, ctx, lm_cfg, source)
        lm.to(ctx.device).eval()
        for p in lm.parameters():
            p.requires_grad_(False)

        verbalizer = _build_verbalizer(self, task, streams["train"], [e.label for e in splits["train"]], lm_cfg,
                                       ctx.seed)
        torch.manual_seed(ctx.seed)  # the seed varies prompts, verbalizer and data order; the LM is fixed
        prompts = PromptParameters(lm_cfg, cfg.prompt_length, cfg.deep_prompt, len(task.class_labels),
                                   self.learnable_verbalizer).to(ctx.device)
        rows = {s: [_row(lm_cfg, streams[s][i], verbalizer.encode(ex.label), verbalizer)
                    for i, ex in enumerate(splits[s])] for s in splits}
        epochs = ctx.max_epochs if ctx.max_epochs is not None else cfg.max_epochs
        history = _train(lm, prompts, rows["train"], rows["valid"] or rows["train"], verbalizer, cfg, epochs, ctx)
        hyps, scores, unmapped = _predict(lm, prompts, rows["test"], verbalizer, task, cfg.batch_size, ctx)
        preds = Predictions(ids=[e.id for e in splits["test"]], references=[e.label for e in splits["test"]],
                            hypotheses=hyps, scores=scores, unmapped=unmapped)
        sizes = self._prompt_sizes(lm_cfg, len(task.class_labels))
        params = ParamCount(trainable=sum(sizes.values()), frozen=lm.num_parameters(),
                            stored_per_task=sum(sizes.values()), breakdown=sizes)
        assert params.trainable == sum(p.numel() for p in prompts.parameters())
        info = {
            "lm": "pGSLM MS-TLM",
            "lm_checkpoint": str(source.checkpoint),
            "lm_units_record": source.units,
            "default_offline_lm": cfg.lm is None,
            "lm_config": lm_cfg.to_dict(),
            "lm_provenance": provenance,
            "lm_shipped": shipped_marker(source.checkpoint.parent).get("shipped_from"),
            "prosody": prosody_info,
            "prompt_attachment": "input prompt prepended to the summed multi-stream embedding + per-layer K/V "
                                 "prompts; labels from unit-stream logits (inferred, speechprompt.md §1.3)",
            "verbalizer": verbalizer.describe(),
            **history,
        }
        return MethodOutput(predictions=preds, params=params, info=info)


class PromptPGSLMLearnableVerbalizer(PromptPGSLM):
    """prompt-pgslm with SpeechPrompt v2's learnable verbalizer: Linear(|V| → C+4, no bias) on the unit logits."""

    name = "prompt-pgslm-lv"
    learnable_verbalizer = True


# ================================================================================================================
# the frozen LM and the files that define its inputs
# ================================================================================================================

@dataclass(frozen=True)
class _LMSource:
    checkpoint: Path
    units: dict[str, Any] | None  # the directory's units.json (file names made absolute), when there is one


def _locate_lm(spec: str, method_name: str) -> _LMSource:
    """An MS-TLM directory (``checkpoint_best.pt``, maybe ``units.json``), a checkpoint file, or a model name."""
    from bench.prompt.default_lm import UNITS_FILE

    path = Path(spec).expanduser()
    if not path.exists():
        if "/" in spec or spec.endswith(".pt"):
            raise BenchError(f"method '{method_name}': lm={spec} not found (expected an MS-TLM directory, a fairseq "
                             "checkpoint file or a configured model name)")
        from bench.models import resolve_model

        path = resolve_model(spec, kind="fairseq_checkpoint").file
    ckpt = path / "checkpoint_best.pt" if path.is_dir() else path
    if not ckpt.is_file():
        raise BenchError(f"method '{method_name}': MS-TLM directory {path} has no checkpoint_best.pt")
    meta_file = ckpt.parent / UNITS_FILE
    units = None
    if meta_file.is_file():
        try:
            units = json.loads(meta_file.read_text())
        except ValueError as err:
            raise BenchError(f"{meta_file}: not valid JSON ({err}); expected the LM's unit record") from None
        for key in ("kmeans", "f0_bins"):
            if isinstance(units.get(key), str) and not Path(units[key]).is_absolute():
                units[key] = str(ckpt.parent / units[key])
    return _LMSource(ckpt, units)


def _meta_parameters(lm_cfg) -> int:
    """Parameters of an MS-TLM of this shape, built on the meta device (no weights, no memory)."""
    import torch

    from bench.ulm.multistream import MultiStreamUnitLM

    with torch.device("meta"):
        return MultiStreamUnitLM(lm_cfg).num_parameters()


def _existing_or_model(spec: str, kind: str) -> Path:
    """A file given by path, else a configured model name (``bench models``) of this kind."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    from bench.models import resolve_model

    return resolve_model(spec, kind=kind).file


def _load_f0_bins(spec: str, num_bins: int):
    """bench's JSON bins (``F0Quantizer.save``) or pGSLM's torch-saved ``{n_bins: edges}`` file."""
    from bench.prosody import F0Quantizer

    path = _existing_or_model(spec, "f0_bins")
    return F0Quantizer.load(path) if path.suffix == ".json" else F0Quantizer.load_pgslm(path, num_bins)


# ================================================================================================================
# units + prosody
# ================================================================================================================

@dataclass
class UtteranceStreams:
    units: np.ndarray
    durations: np.ndarray
    f0_bins: np.ndarray
    log_f0: np.ndarray


def _unit_prosody_streams(method: PromptPGSLM, manifest: Manifest, splits: dict[str, list[Example]],
                          ctx: RunContext, lm_cfg, source: _LMSource) -> tuple[dict[str, list[UtteranceStreams]], dict]:
    """Deduplicated units with durations (``bench.units.store.UnitStore``, cached) and per-unit F0 bins
    (``bench.prosody.ProsodyStore``, cached) for every split, with the LM's own quantizers."""
    from dataclasses import asdict, fields

    from bench.features import FeatureStore
    from bench.prosody import F0Config, ProsodyStore, speaker_key, speaker_log_f0_means
    from bench.units.kmeans import KMeansQuantizer
    from bench.units.store import UnitStore

    cfg = method.config
    meta = source.units or {}
    km_spec = cfg.kmeans or meta.get("kmeans")
    if km_spec is None:
        raise BenchError(f"method '{method.name}': lm={cfg.lm} was trained on the units of one quantizer; "
                         "give kmeans=<km.bin or gslm_hubert_km100> (and units_upstream hubert_local) so unit ids "
                         "match")
    km_path = _existing_or_model(str(km_spec), "kmeans")
    quantizer = KMeansQuantizer.load(km_path)
    if quantizer.num_units != lm_cfg.num_units:
        raise BenchError(f"method '{method.name}': k-means {km_spec} has {quantizer.num_units} units but the LM "
                         f"{source.checkpoint} models {lm_cfg.num_units} (option kmeans)")
    upstream = cfg.units_upstream or meta.get("upstream") or ctx.upstream
    upstream_path = cfg.units_upstream_path or meta.get("upstream_path") or (
        ctx.upstream_path if upstream == ctx.upstream else None)
    layer = cfg.unit_layer if cfg.unit_layer is not None else meta.get("layer", 6 if "hubert" in upstream else -1)
    features = FeatureStore(upstream, upstream_path, ctx.cache_dir, device=ctx.device)
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
    n_train = len(splits["train"])
    if cfg.f0_bins is not None:
        quantizer_f0, bins_source = _load_f0_bins(cfg.f0_bins, lm_cfg.f0_bins), str(cfg.f0_bins)
    elif meta.get("f0_bins"):
        from bench.prosody import F0Quantizer

        quantizer_f0, bins_source = F0Quantizer.load(Path(meta["f0_bins"])), str(meta["f0_bins"])
    else:
        quantizer_f0 = pstore.quantizer(manifest, splits["train"], f0s[:n_train], means, num_bins=lm_cfg.f0_bins)
        bins_source = "fitted on the task's train split (equal-mass, pGSLM quantize_f0)"
    if lm_cfg.discrete_f0 and quantizer_f0.num_bins != lm_cfg.f0_bins:
        raise BenchError(f"method '{method.name}': F0 bins {bins_source} have {quantizer_f0.num_bins} bins but the LM "
                         f"{source.checkpoint} has {lm_cfg.f0_bins} (option f0_bins)")

    out: dict[str, list[UtteranceStreams]] = {"train": [], "valid": [], "test": []}
    i = 0
    for s in ("train", "valid", "test"):
        for ex in splits[s]:
            seq = units[i]
            p = pstore.unit_prosody(f0s[i], seq.durations, means[speaker_key(ex)], quantizer_f0)
            out[s].append(UtteranceStreams(seq.units, seq.durations, p.f0_bins, p.log_f0))
            i += 1
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


# ================================================================================================================
# verbalizer
# ================================================================================================================

class _Verbalizer:
    """Label words ↔ output ids. Rule-based (SpeechPrompt v1/v2 ``freq``/``random``): each label word is one unit
    token. Learnable (v2 ``build_linear_verbalizer``): class i is output slot i of Linear(|V| → C+4), with the
    pGSLM dictionary's specials after the classes, and is fed back as unit i's embedding."""

    def __init__(self, words: list[str], word_to_unit: dict[str, int], learnable: bool, method: str, eos: int,
                 multi_slot: bool):
        self.multi_slot = multi_slot  # IC: a label is one word per slot, joined by spaces
        self.words = words
        self.word_to_unit = word_to_unit
        self.unit_to_word = {u: w for w, u in word_to_unit.items()}
        self.learnable = learnable
        self.method = method
        self.eos_out = len(words) + 2 if learnable else eos  # output id of </s>
        self.eos_in = eos

    def encode(self, label: str) -> list[int]:
        try:
            return [self.word_to_unit[w] for w in (label.split(" ") if self.multi_slot else [label])]
        except KeyError as err:
            raise BenchError(f"label word {err} is not in the task's class labels") from None

    def out_id(self, unit: int) -> int:
        """Output index of a label token (the target id in the loss)."""
        return self.words.index(self.unit_to_word[unit]) if self.learnable else unit

    def describe(self) -> dict[str, Any]:
        return {"kind": "learnable" if self.learnable else self.method,
                "mapping": {w: int(u) for w, u in self.word_to_unit.items()}}


def _build_verbalizer(method: PromptPGSLM, task: TaskSpec, train_streams, train_labels: list[str], lm_cfg,
                      seed: int) -> _Verbalizer:
    words = list(dict.fromkeys(task.class_labels))
    multi = bool(task.slots)
    if method.learnable_verbalizer:
        if len(words) > lm_cfg.num_units:
            raise BenchError(f"task '{task.name}': {len(words)} classes exceed the LM's {lm_cfg.num_units} units, "
                             "which feed predicted classes back as input")
        return _Verbalizer(words, {w: i for i, w in enumerate(words)}, True, "learnable", lm_cfg.unit_vocab.eos,
                           multi)
    counts = np.bincount(np.concatenate([s.units for s in train_streams]), minlength=lm_cfg.num_units)
    seen = [int(u) for u in np.argsort(-counts, kind="stable") if counts[u] > 0]
    if len(seen) <= len(words):  # SpeechPrompt v2 asserts #source units > #labels
        raise BenchError(f"task '{task.name}': {len(words)} label words but only {len(seen)} distinct units in "
                         "the training split; a rule-based verbalizer needs more units than labels")
    if method.config.verbalizer == "freq":
        # SpeechPrompt v1 verbalizer.py: the i-th most frequent label word -> the i-th most frequent unit
        label_counts: dict[str, int] = {w: 0 for w in words}
        for label in train_labels:
            for w in (label.split(" ") if multi else [label]):
                label_counts[w] += 1
        ranked = sorted(words, key=lambda w: -label_counts[w])  # stable: ties keep class order
        mapping = {w: seen[i] for i, w in enumerate(ranked)}
    elif method.config.verbalizer == "random":
        rng = random.Random(seed)
        mapping = dict(zip(words, rng.sample(seen, len(words))))
    else:
        raise BenchError(f"method '{method.name}': verbalizer '{method.config.verbalizer}', expected random or freq")
    return _Verbalizer(words, mapping, False, method.config.verbalizer, lm_cfg.unit_vocab.eos, multi)


# ================================================================================================================
# prompts, rows, training, prediction
# ================================================================================================================

def PromptParameters(lm_cfg, length: int, deep: bool, num_classes: int, learnable_verbalizer: bool):
    """Input prompt (L×d), per-layer key/value prompts (2·layers·L×d), separator (d) and, for -lv, the verbalizer
    Linear(|V| → C+4, no bias); SpeechPrompt initialises embeddings N(0, 1) (nn.Embedding) and the verbalizer
    with nn.Linear's default."""
    import torch
    from torch import nn

    class _Prompts(nn.Module):
        def __init__(self):
            super().__init__()
            d = lm_cfg.embed_dim
            self.input_prompt = nn.Parameter(torch.randn(length, d))
            self.separator = nn.Parameter(torch.randn(d))
            self.deep_key = nn.ParameterList([nn.Parameter(torch.randn(length, d)) for _ in range(lm_cfg.num_layers)]
                                             if deep else [])
            self.deep_value = nn.ParameterList([nn.Parameter(torch.randn(length, d))
                                                for _ in range(lm_cfg.num_layers)] if deep else [])
            self.verbalizer = nn.Linear(len(lm_cfg.unit_vocab), num_classes + 4, bias=False) \
                if learnable_verbalizer else None

        def kv(self):
            if not len(self.deep_key):
                return None
            drop = lambda t: nn.functional.dropout(t, PROMPT_DROPOUT, self.training)  # noqa: E731
            return [(drop(k), drop(v)) for k, v in zip(self.deep_key, self.deep_value)]

    return _Prompts()


@dataclass
class _Row:
    tok: list
    dur: list
    f0: list
    sep: int  # index of SEP in tok
    label: list  # label token ids (unit ids)


def _row(lm_cfg, s: UtteranceStreams, label_units: list[int], verbalizer: _Verbalizer, generated: int | None = None):
    """``[<s>, u.., SEP, y.., </s>]`` with the units' prosody and no prosody on SEP / label steps."""
    uv = lm_cfg.unit_vocab
    f0_none = lm_cfg.f0_vocab.pad if lm_cfg.discrete_f0 else 0.0
    n, k = len(s.units), len(label_units)
    f0_vals = s.f0_bins if lm_cfg.discrete_f0 else s.log_f0
    tok = [uv.bos, *s.units.tolist(), uv.bos, *label_units, verbalizer.eos_in]
    dur = [0, *np.minimum(s.durations, lm_cfg.max_duration).tolist(), 0, *([0] * k), 0]
    f0 = [lm_cfg.f0_vocab.bos if lm_cfg.discrete_f0 else 0.0, *np.asarray(f0_vals).tolist(), *([f0_none] * (k + 2))]
    return _Row(tok, dur, f0, n + 1, list(label_units))


def _forward(lm, prompts, rows: list[_Row], device):
    """Unit-stream outputs (or learnable-verbalizer outputs) for a batch of rows, and the collated batch."""
    import torch

    from bench.ulm.multistream import collate_streams

    batch = collate_streams(lm.cfg, [(r.tok, r.dur, r.f0) for r in rows]).to(device)
    emb = lm.embed_tokens(batch.tokens)
    sep = torch.zeros_like(batch.tokens, dtype=torch.bool)
    for b, r in enumerate(rows):
        sep[b, r.sep] = True
    emb = torch.where(sep.unsqueeze(-1), prompts.separator.to(emb.dtype).expand_as(emb), emb)
    ip = torch.nn.functional.dropout(prompts.input_prompt, PROMPT_DROPOUT, prompts.training).unsqueeze(0)
    out = lm(batch.tokens, batch.durations, batch.f0, padding_mask=batch.padding_mask, token_embeddings=emb,
             input_prompt=ip, deep_prompts=prompts.kv())["token"]
    if prompts.verbalizer is not None:
        out = torch.nn.functional.dropout(prompts.verbalizer(out), PROMPT_DROPOUT, prompts.training)
    return out, batch


def _label_loss(lm, prompts, rows: list[_Row], verbalizer: _Verbalizer, device):
    """Summed cross-entropy of the label part (targets from SEP on), and the number of scored tokens."""
    import torch

    out, batch = _forward(lm, prompts, rows, device)
    targets = torch.full_like(batch.target, -100)
    for b, r in enumerate(rows):
        ids = [verbalizer.out_id(u) for u in r.label] + [verbalizer.eos_out]
        targets[b, r.sep:r.sep + len(ids)] = torch.tensor(ids, device=device)
    loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.size(-1)), targets.reshape(-1),
                                             ignore_index=-100, reduction="sum")
    return loss, int((targets != -100).sum())


def _train(lm, prompts, train_rows, valid_rows, verbalizer, cfg, epochs: int, ctx: RunContext) -> dict:
    """Adam (β 0.9/0.98), lr 5e-3, clip-norm 1.0, fixed schedule, fairseq-train's batches (as prompt-gslm);
    early stopping on valid label loss (SpeechPrompt §2.4); the best epoch's prompts are kept."""
    import torch

    from bench.batching import fairseq_layout, shuffled

    params = [p for p in prompts.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.98))
    if epochs < 1:
        raise BenchError("prompt tuning needs at least one epoch (max_epochs)")

    def layout(rows):
        return fairseq_layout([len(r.tok) for r in rows], max_tokens=cfg.max_tokens, max_sentences=cfg.batch_size,
                              seed=ctx.seed)

    (train_batches, layout_info), (valid_batches, _) = layout(train_rows), layout(valid_rows)

    def valid_loss() -> float:
        prompts.eval()
        with torch.no_grad():
            tot, cnt = 0.0, 0
            for b in valid_batches:
                loss, n = _label_loss(lm, prompts, [valid_rows[i] for i in b], verbalizer, ctx.device)
                tot, cnt = tot + float(loss), cnt + n
        return tot / max(cnt, 1)

    before = valid_loss()
    best, best_state, best_epoch, bad = before, copy.deepcopy(prompts.state_dict()), 0, 0
    advance = ctx.track("prompt tuning", epochs)
    for epoch in range(1, epochs + 1):
        prompts.train()
        for b in shuffled(train_batches, ctx.seed + epoch):
            loss, n = _label_loss(lm, prompts, [train_rows[j] for j in b], verbalizer, ctx.device)
            opt.zero_grad()
            (loss / max(n, 1)).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        vloss = valid_loss()
        advance(1)
        if vloss < best - 1e-6:
            best, best_state, best_epoch, bad = vloss, copy.deepcopy(prompts.state_dict()), epoch, 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    prompts.load_state_dict(best_state)
    prompts.eval()
    return {"epochs_run": epoch, "best_epoch": best_epoch, "best_valid_loss": best, "valid_loss_untrained": before,
            "batching": layout_info}


def _predict(lm, prompts, rows: list[_Row], verbalizer: _Verbalizer, task: TaskSpec, batch_size: int,
             ctx: RunContext):
    """Greedy decoding of the label part (SpeechPrompt ``sample.py``: argmax over all outputs, stop at </s>);
    a decoded sequence that is no class label is scored wrong and counted as unmapped. Per-class scores are the
    log-probabilities of each class's first label token at SEP (for threshold-free metrics)."""
    import torch

    n_words = len(task.slots) if task.slots else 1
    labels = set(task.class_labels) if not task.slots else None
    hyps, scores, unmapped = [], [], 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            prefixes = [_Row(r.tok[:r.sep + 1], r.dur[:r.sep + 1], r.f0[:r.sep + 1], r.sep, []) for r in chunk]
            done = [False] * len(chunk)
            decoded: list[list[str]] = [[] for _ in chunk]
            for step in range(n_words + 1):
                probe = [_Row(p.tok + [verbalizer.eos_in], p.dur + [0], p.f0 + [p.f0[-1]], p.sep, []) for p in prefixes]
                out, _ = _forward(lm, prompts, probe, ctx.device)
                logp = torch.log_softmax(out.float(), dim=-1)
                for b, p in enumerate(prefixes):
                    lp = logp[b, len(p.tok) - 1]
                    if step == 0:
                        scores.append({w: float(lp[verbalizer.out_id(verbalizer.word_to_unit[w])])
                                       for w in verbalizer.words})
                    if done[b]:
                        continue
                    pred = int(lp.argmax())
                    if pred == verbalizer.eos_out:
                        done[b] = True
                        continue
                    if verbalizer.learnable:
                        word = verbalizer.words[pred] if pred < len(verbalizer.words) else None
                        unit = verbalizer.word_to_unit.get(word) if word is not None else None
                    else:
                        word = verbalizer.unit_to_word.get(pred)
                        unit = pred
                    decoded[b].append(word if word is not None else f"<{pred}>")
                    if word is None or unit is None:
                        done[b] = True  # a special symbol or a unit that is no label: stop (scored unmapped)
                        continue
                    p.tok.append(unit)
                    p.dur.append(0)
                    p.f0.append(p.f0[-1])
            for words in decoded:
                hyp = " ".join(words)
                if labels is not None:
                    ok = hyp in labels
                else:
                    ok = len(words) == len(task.slots) and all(
                        w in values for w, values in zip(words, task.slots.values()))
                unmapped += 0 if ok else 1
                hyps.append(hyp)
    return hyps, scores, unmapped
