"""prompt-gslm / prompt-gslm-lv: SpeechPrompt prompt tuning of a frozen GSLM unit LM.

speech → one upstream layer → k-means units (deduplicated) → frozen ULM with input + deep prompts and a trainable
``<s>`` separator → label tokens through a verbalizer (SpeechPrompt v1, Chang et al. 2022; v2, 2303.00733).
``prompt-gslm`` uses the rule-based verbalizer (``random`` by default: the v2 paper's GSLM baseline rows);
``prompt-gslm-lv`` v2's learnable verbalizer Linear(|V| → C+4). Defaults follow v2: prompt length 5, deep prompts,
Adam lr 5e-3, batch 32. Only the prompts (and the verbalizer) train: the LM's weights are checked bit-identical
after training, and the LM's provenance (sha1, epoch) is recorded so a run without the pretrained LM is visible.

The LM is ``lm_checkpoint`` (a fairseq ULM directory/checkpoint or a configured model name such as
``gslm_hubert100_lm``, with ``kmeans`` its quantizer, e.g. ``gslm_hubert_km100``, and ``units_upstream``
``hubert_local`` + ``units_upstream_path``) or, offline, the default tiny ULM of :mod:`bench.prompt.default_lm`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench.data.manifest import Manifest
from bench.errors import BenchError
from bench.methods.base import Method, MethodOutput, ParamCount, Predictions, RunContext
from bench.registry import TaskSpec


class PromptGSLM(Method):
    """Frozen GSLM ULM + input/deep prompts + trainable separator + rule-based verbalizer (SpeechPrompt v1)."""

    name = "prompt-gslm"
    kinds = ("classification", "generation")
    learnable_verbalizer = False

    @dataclass
    class Config:
        lm_checkpoint: str | None = None  # ULM dir / checkpoint_best.pt / model name; None: offline default ULM
        kmeans: str | None = None  # km.bin / .npy / model name; None: the LM directory's own quantizer
        units_upstream: str | None = None  # upstream the units come from; None: the LM dir's record, else --upstream
        units_upstream_path: str | None = None
        units_layer: int | None = None  # None: the LM dir's record, 6 for HuBERT (GSLM), else the last layer
        prompt_length: int = 5  # v2: l = 5 (v1: KS 3, IC 6)
        deep: bool = True  # deep prompts in every layer (always on in both public codebases)
        verbalizer: Literal["random", "freq", "identity"] = "random"  # prompt-gslm-lv: learnable
        lr: float = 5e-3
        batch_size: int = 32  # fairseq --batch-size
        max_tokens: int = 4096  # fairseq --max-tokens: batches are fairseq-train's (bench.batching)
        max_epochs: int = 50  # SpeechPrompt: up to 300 with patience 1-5; 50 fits `bench run --tasks all` in ~23 min (30 left v1 prompts mostly unmapped)
        patience: int = 5  # v1 5, v2 1
        max_decode_len: int | None = None  # generation: None = 1.2 × longest training target + 5

    # ---- helpers --------------------------------------------------------------------------------------------
    def _verbalizer_method(self) -> str:
        if self.learnable_verbalizer:
            return "learnable"
        if self.config.verbalizer == "learnable":
            raise BenchError(f"method '{self.name}': verbalizer 'learnable' is the method prompt-gslm-lv")
        from bench.prompt.verbalizers import VERBALIZERS

        if self.config.verbalizer not in VERBALIZERS:
            raise BenchError(f"method '{self.name}': unknown verbalizer '{self.config.verbalizer}'; "
                             f"expected freq, random or identity")
        return self.config.verbalizer

    def _lm_files(self, ctx: RunContext):
        from bench.prompt.default_lm import default_lm_config, ensure_default_lm, locate_lm

        if self.config.lm_checkpoint is None:
            return locate_lm(str(ensure_default_lm(ctx, config=default_lm_config(ctx.upstream, ctx.upstream_path))))
        return locate_lm(self.config.lm_checkpoint)

    def resolved_config(self, upstream: str | None = None) -> dict[str, Any]:
        """With the offline default LM (built on ``upstream``'s units), its build config's hash too: a record made
        on another stand-in LM (other settings or an older recipe) is never reused as this one."""
        out = super().resolved_config(upstream)
        if self.config.lm_checkpoint is None:
            from bench.prompt.default_lm import default_lm_config, default_lm_dir

            out["default_lm"] = default_lm_dir(default_lm_config(upstream)).name
        return out

    def prepare(self, ctx: RunContext) -> None:
        if self.config.lm_checkpoint is None:
            self._lm_files(ctx)

    def _unit_store(self, files, ctx: RunContext):
        """(UnitStore, k-means spec) of the units the LM reads: its quantizer on its upstream's layer."""
        from bench.features import FeatureStore
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
        features = FeatureStore(upstream, upstream_path, ctx.cache_dir, ctx.device)
        return UnitStore(features, layer, quantizer, ctx.cache_dir), km_spec

    def stage(self, task: TaskSpec, manifest: Manifest, ctx: RunContext) -> None:
        """Units (and so features) of every example, cached before the cells."""
        store, _ = self._unit_store(self._lm_files(ctx), ctx)
        store.get(manifest, manifest.examples, ctx.track(f"{task.name}: units", len(manifest.examples)))

    def artefacts(self, ctx: RunContext) -> dict[str, str]:
        """The content of what a cell reads, for its record's identity: the LM's weights and dictionary and the
        quantizer's centroids (a k-means that came out differently on another machine is another configuration)."""
        from bench.data.manifest import sha1_file
        from bench.ulm.checkpoint import checkpoint_weights_sha256
        from bench.units.kmeans import KMeansQuantizer

        files = self._lm_files(ctx)
        out = {"lm_weights_sha256": checkpoint_weights_sha256(files.checkpoint)}
        if files.dict is not None:
            out["lm_dict_sha1"] = sha1_file(Path(files.dict))
        km = self.config.kmeans or (files.units or {}).get("kmeans")
        if km:
            out["kmeans_hash"] = KMeansQuantizer.load(_resolve_kmeans(km)).hash
        return out

    # ---- parameter counts -----------------------------------------------------------------------------------
    def count_parameters(self, task: TaskSpec, ctx: RunContext) -> ParamCount:
        """Prompt parts from the LM's shape (bench.params); the frozen LM counted on the meta device."""
        from bench.params import frozen_lm_parameters, prompt_breakdown

        self._verbalizer_method()
        if self.config.lm_checkpoint is None:
            from bench.prompt.default_lm import DefaultLMConfig

            lm_cfg = DefaultLMConfig().lm_config()
        else:
            from bench.ulm.checkpoint import load_unit_lm

            files = self._lm_files(ctx)
            lm_cfg = load_unit_lm(files.checkpoint, files.dict).cfg
        outputs = None
        if self.learnable_verbalizer:
            outputs = _num_symbols(task) + 4
        parts = prompt_breakdown(lm_cfg.num_layers, lm_cfg.embed_dim, self.config.prompt_length, self.config.deep,
                                 lm_cfg.vocab_size, outputs)
        n = sum(parts.values())
        return ParamCount(trainable=n, frozen=frozen_lm_parameters(lm_cfg), stored_per_task=n, breakdown=parts)

    # ---- run ------------------------------------------------------------------------------------------------
    def run(self, task: TaskSpec, manifest: Manifest, ctx: RunContext) -> MethodOutput:
        import numpy as np
        import torch

        from bench.params import prompt_breakdown
        from bench.prompt.modules import PromptedLM, PromptSet
        from bench.prompt.shipped import shipped_marker
        from bench.prompt.trainer import TrainConfig, greedy_decode, make_row, to_predictions, train_prompts
        from bench.prompt.verbalizers import build_verbalizer, label_space_for
        from bench.ulm.checkpoint import load_unit_lm

        cfg = self.config
        vb_method = self._verbalizer_method()
        splits = {s: manifest.split(s) for s in ("train", "valid", "test")}
        if not splits["train"] or not splits["test"]:
            raise BenchError(f"task '{task.name}': {self.name} needs train and test examples")

        # -- the frozen LM and the units it reads -------------------------------------------------------------
        files = self._lm_files(ctx)
        lm = load_unit_lm(files.checkpoint, files.dict)
        provenance = dict(getattr(lm, "provenance", {}) or {})
        if not provenance.get("sha1"):
            raise BenchError(f"{files.checkpoint}: the unit LM loaded without provenance; refusing to prompt an "
                             "LM whose weights are not verified as loaded")
        lm.to(ctx.device).eval()
        for p in lm.parameters():
            p.requires_grad_(False)
        dictionary = lm.dictionary
        store, km_spec = self._unit_store(files, ctx)
        if store.quantizer.num_units != len(dictionary) - 4:
            raise BenchError(f"k-means {km_spec} has {store.quantizer.num_units} units but the LM dictionary "
                             f"{files.dict} has {len(dictionary) - 4}")
        units = {}
        for s, exs in splits.items():
            units[s] = store.get(manifest, exs, ctx.track(f"{task.name}: units ({s})", len(exs)) if exs else None)
        tokens = {s: [[dictionary.unit_to_index(int(u)) for u in seq.units] for seq in units[s]] for s in splits}

        # -- verbalizer, prompts, rows ---------------------------------------------------------------------------
        train_labels = [e.label for e in splits["train"]]
        space = label_space_for(task, train_labels)
        verbalizer = build_verbalizer(vb_method, space, dictionary, [seq.units for seq in units["train"]],
                                      train_labels, ctx.seed)
        torch.manual_seed(ctx.seed)
        prompts = PromptSet(lm.cfg.num_layers, lm.cfg.embed_dim, cfg.prompt_length, cfg.deep,
                            separator_init=lm.embed_tokens.weight[dictionary.bos].detach().float(),
                            vocab_size=len(dictionary),
                            verbalizer_outputs=verbalizer.output_size if verbalizer.learnable else None).to(ctx.device)
        model = PromptedLM(lm, prompts, dictionary.bos)
        max_tokens = int(lm.cfg.max_positions)
        rows, truncated = {}, 0
        for s in ("train", "valid"):
            rows[s] = []
            for toks, ex in zip(tokens[s], splits[s]):
                row, cut = make_row(toks, ex.label, verbalizer, max_tokens)
                rows[s].append(row)
                truncated += cut
        valid_rows = rows["valid"] or rows["train"]
        lm_before = _weights_digest(lm)

        # -- train, then decode the test split -------------------------------------------------------------------
        epochs = ctx.max_epochs if ctx.max_epochs is not None else cfg.max_epochs
        tcfg = TrainConfig(lr=cfg.lr, batch_size=cfg.batch_size, max_tokens=cfg.max_tokens, max_epochs=epochs,
                           patience=cfg.patience, seed=ctx.seed)
        history = train_prompts(model, rows["train"], valid_rows, tcfg, dictionary.pad, ctx.device, ctx.log,
                                ctx.track(f"{task.name}: {self.name} epochs", epochs))
        if _weights_digest(lm) != lm_before:
            raise BenchError("internal error: the frozen unit LM changed during prompt tuning")
        label_lens = [len(space.encode(lbl)) for lbl in train_labels]
        if task.kind == "generation":
            max_len = cfg.max_decode_len or int(1.2 * max(label_lens)) + 5
        else:
            max_len = max(label_lens) + 2  # room for an over-long (wrong) output to show as unmapped
        decoded = greedy_decode(model, tokens["test"], verbalizer, max_len, max_tokens, cfg.batch_size, ctx.device)
        with_scores = task.kind == "classification" and space.kind == "class"
        hyps, scores, unmapped = to_predictions(decoded, verbalizer, with_scores)
        preds = Predictions(ids=[e.id for e in splits["test"]], references=[e.label for e in splits["test"]],
                            hypotheses=hyps, scores=scores, unmapped=unmapped)

        parts = prompt_breakdown(lm.cfg.num_layers, lm.cfg.embed_dim, cfg.prompt_length, cfg.deep, len(dictionary),
                                 verbalizer.output_size if verbalizer.learnable else None)
        if parts != prompts.breakdown():
            raise BenchError(f"internal error: prompt parameters {prompts.breakdown()} differ from the formula {parts}")
        n = sum(parts.values())
        params = ParamCount(trainable=n, frozen=lm.num_parameters(), stored_per_task=n, breakdown=parts)
        lengths = [len(t) for s in splits for t in tokens[s]]
        info: dict[str, Any] = {
            "lm": {"checkpoint": str(files.checkpoint), "dict": str(files.dict), "provenance": provenance,
                   "config": _cfg_dict(lm.cfg), "default_offline_lm": cfg.lm_checkpoint is None,
                   "shipped": shipped_marker(files.checkpoint.parent).get("shipped_from")},
            "units": {**store.describe(), "kmeans": str(km_spec), "mean_units_per_utt": float(np.mean(lengths)),
                      "max_units_per_utt": int(max(lengths)), "truncated_sources": truncated, **store.stats},
            "verbalizer": verbalizer.describe(),
            "prompt": {"length": cfg.prompt_length, "deep": cfg.deep, "separator": "trainable <s>",
                       # with deep prompts the input prompt cannot reach the output (bench.ulm.model.run_prompted_layers)
                       "input_prompt_affects_output": not cfg.deep,
                       "deep_prompt_form": "prefix (same logits as the published overwrite form)" if cfg.deep else None,
                       "sequence": "</s> units <s> label </s> (loss on <s>, label, </s>)"},
            "decoding": {"strategy": "greedy", "max_len": max_len},
            "lm_frozen_sha1": lm_before,
            **history,
        }
        return MethodOutput(predictions=preds, params=params, info=info)


class PromptGSLMLearnableVerbalizer(PromptGSLM):
    """prompt-gslm with SpeechPrompt v2's learnable verbalizer: Linear(|V| → C+4, no bias, dropout 0.1)."""

    name = "prompt-gslm-lv"
    learnable_verbalizer = True


# --------------------------------------------------------------------------------------------------------------
def _num_symbols(task: TaskSpec) -> int:
    """C of the learnable verbalizer: classes (or slot values); for generation the train-set characters."""
    if task.kind == "classification":
        return task.num_outputs
    from bench.data.sources import is_available, prepare_manifest
    from bench.prompt.verbalizers import label_space_for

    if task.data.source == "builtin" and not is_available(task):
        raise BenchError(f"task '{task.name}': the learnable verbalizer's size depends on the training characters; "
                         f"build the data first (`bench data build {task.name}`)")
    man = prepare_manifest(task)
    return len(label_space_for(task, [e.label for e in man.split("train")]))


def _resolve_kmeans(spec: str) -> Path:
    p = Path(spec).expanduser()
    if p.exists():
        return p
    from bench.models import resolve_model

    return resolve_model(spec, kind="kmeans").file


def _weights_digest(module) -> str:
    """sha1 over every parameter and buffer of the frozen LM (bit-exact check that nothing trained it)."""
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _cfg_dict(cfg) -> dict:
    import dataclasses

    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(vars(cfg))
