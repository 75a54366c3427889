"""One prompt-tuning engine for every unit LM: the shared :class:`PromptTuningMethod` (a :class:`Method`) and its
options, so ``prompt-gslm`` and ``prompt-pgslm`` differ only in how they load their LM and read their units.

A method subclass supplies :meth:`PromptTuningMethod.load_lm` (a frozen :class:`bench.prompt.unit_lm.UnitLM` and
what to record about it), :meth:`PromptTuningMethod.sources` (each split's :class:`SourceUnits`) and
:meth:`PromptTuningMethod.lm_shape` (for parameter counts without loading weights). The engine does the rest:
label space and verbalizer (:mod:`bench.prompt.verbalizers`), the adapter (``adapter``: :mod:`bench.prompt.adapters`),
rows, training, the frozen-LM sha1 check, decoding, predictions, parameter counts against the adapter's formula.

Options whose published value differs from bench's earlier one (each a ``Literal`` so a recipe can pick either).
The defaults are the ``cpu-default`` recipe's (recipes/cpu-default.yaml); the published recipes
(recipes/speechprompt-v1.yaml, -v2.yaml) set the published values. ``class_order`` keeps bench's label order
by default: on the built-in grid the frequency order moved builtin-asr × prompt-gslm-lv from CER 0.811 to 1.002
(seed 0) and builtin-ic × prompt-gslm-lv from 0.129 to 0.134. ``separator_init`` and ``loss_normalization`` keep
bench's earlier values because the published ones break the small CPU default LMs: on the 2-layer toy of
tests/test_prompt_gslm.py (prompt-gslm, seed 0, 150 epochs) accuracy is 0.96 with ``bos_row`` +
``label_tokens``, 0.25 (chance) with ``normal_scaled`` + ``all_tokens``, 0.29 with ``normal_scaled`` alone and
0.62 with ``all_tokens`` alone (an N(0, 1) separator scaled by √d dwarfs a small LM's N(0, d^-1/2) token rows; a
published-recipe layer on the 151M ULM sets both):

- ``separator_init``: ``normal_scaled`` (published: a fresh ``nn.Embedding(1, d)`` row, N(0, 1), scaled by √d
  with the tokens; SpeechPrompt-v2 GSLM/prompt/fairseq_usr/model.py:128, transformer_prompt_decoder.py:371-379)
  or ``bos_row`` (the frozen LM's ``<s>`` row);
- ``loss_normalization``: ``all_tokens`` (published: fairseq divides the summed label loss by all target tokens
  of the batch, ``sample_size = ntokens``, GSLM/prompt/fairseq_usr/loss.py:62-64) or ``label_tokens``;
- ``class_order``: ``frequency`` (published: v2 numbers the learnable verbalizer's classes by training-frequency
  rank, GSLM/prompt/verbalizer.py:38-39,68-70) or ``label`` (label-space order);
- ``max_decode_len``: the number of generated tokens after ``<s>``; None: 1.2 × the longest training target + 5
  for generation. fairseq's ``--max-len-b`` (v2 sample.py 150, v1 1500) is a limit on the whole sequence, the
  source prefix included (SequenceGenerator: max_len = max_len_a · src_len + max_len_b, steps counted from the
  first prefix token), so the released script cuts long utterances short. ``max_total_len`` applies that limit
  (source units + ``<s>`` + generated tokens, the leading ``</s>`` not counted: with 150, a source of 149 units or
  more generates nothing; with 148, one label token then the forced ``</s>``, scored as finished, as fairseq does,
  :func:`cap_total_length`);
  None (default): no such limit.
- ``stopping_rule``: ``fairseq`` (published: select and stop on fairseq's valid loss, in bits rounded to 3
  decimals, strict ``<`` for patience, ties kept for the best checkpoint; :class:`bench.prompt.trainer.EarlyStopping`)
  or ``bench`` (the unrounded per-label-token loss, better by more than 1e-6);
- ``random_draw``: ``independent`` (published: v2 draws each label's unit on its own, GSLM/prompt/verbalizer.py:55-58,
  so labels may share a unit) or ``distinct`` (a one-to-one draw);
- ``ic_labels``: for slot-value tasks (IC), ``words`` (v2: the label ``"{action} {object} {location}"`` split on
  spaces, one symbol per word, GSLM/preprocess/IC_fluent_commands/preprocessor.py:70-77) or ``slots`` (v1: one
  symbol per slot value, disjoint ranges per slot).

Options added after the default grid's records existed (:data:`LATER_OPTIONS`) are left out of the resolved
configuration at their default value, so those records keep their config hashes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench.data.manifest import Manifest
from bench.core.errors import BenchError
from bench.methods.base import Method, MethodOutput, ParamCount, Predictions, RunContext
from bench.tasks.registry import TaskSpec


@dataclass
class PromptTuningConfig:
    """Options every prompt-tuning method shares (SpeechPrompt v2 defaults)."""

    prompt_length: int = 5  # v2: l = 5 (v1: KS 3, IC 6)
    verbalizer: Literal["random", "freq", "identity"] = "random"  # rule-based; the -lv methods: learnable
    lr: float = 5e-3
    batch_size: int = 32  # fairseq --batch-size
    max_tokens: int = 4096  # fairseq --max-tokens: batches are fairseq-train's (bench.methods.batching)
    max_epochs: int = 50  # SpeechPrompt: up to 300 with patience 1-5; 50 fits `bench run --tasks all`
    patience: int = 0  # 0: no early stop, the best valid epoch of all max_epochs kept (v1 5, v2 1; docs/recipes.md)
    max_decode_len: int | None = None  # generated tokens after <s>; None: 1.2 × longest target + 5
    max_total_len: int | None = None  # fairseq --max-len-b: source + <s> + generated; None: no such limit
    separator_init: Literal["normal_scaled", "bos_row"] = "bos_row"  # published: normal_scaled (see above)
    loss_normalization: Literal["all_tokens", "label_tokens"] = "label_tokens"  # published: all_tokens
    class_order: Literal["frequency", "label"] = "label"  # published (v2): frequency
    stopping_rule: Literal["bench", "fairseq"] = "bench"  # published: fairseq (bench.prompt.trainer.EarlyStopping)
    random_draw: Literal["distinct", "independent"] = "distinct"  # published (v2): independent (may share units)
    ic_labels: Literal["slots", "words"] = "slots"  # slot-value tasks: v1's slot symbols or v2's words
    adapter: str = "prompt"  # what trains (bench.prompt.adapters.ADAPTERS)
    kmeans: str | None = None  # the LM's quantizer (km.bin / .npy / model name); None: the LM directory's own
    units_upstream: str | None = None  # upstream the units come from; None: the LM directory's record, else --upstream
    units_upstream_path: str | None = None


# option -> default value: omitted from the resolved configuration (record identity) when at the default
LATER_OPTIONS: dict[str, Any] = {"stopping_rule": "bench", "random_draw": "distinct", "ic_labels": "slots",
                                 "fit_f0_bins": True}


@dataclass
class LoadedLM:
    lm: Any  # a frozen UnitLM on the run's device
    info: dict  # what the record says about it (merged into MethodOutput.info)


class PromptTuningMethod(Method):
    """Prompt tuning of a frozen unit LM; subclasses load the LM and read the units."""

    kinds = ("classification", "generation")
    learnable_verbalizer = False
    Config = PromptTuningConfig

    # ---- what a subclass supplies -----------------------------------------------------------------------------
    def load_lm(self, ctx: RunContext) -> LoadedLM:
        raise NotImplementedError

    def sources(self, task: TaskSpec, manifest: Manifest, splits: dict, ctx: RunContext, lm) -> tuple[dict, dict]:
        """({split: [SourceUnits]}, what the record says about the units)."""
        raise NotImplementedError

    def lm_shape(self, ctx: RunContext) -> tuple[int, int, int, int]:
        """(layers, d, vocabulary size, frozen parameters) without training anything."""
        raise NotImplementedError

    def unit_count(self, ctx: RunContext) -> int:
        """Units of the LM's vocabulary, what every verbalizer maps classes onto (subclasses read it cheaply)."""
        from bench.prompt.verbalizers import NUM_SPECIALS

        return self.lm_shape(ctx)[2] - NUM_SPECIALS

    def not_applicable(self, task: TaskSpec, ctx: RunContext) -> str | None:
        """A classification task with more classes than the LM has units (VoxCeleb1 SID's 1,251 speakers on a
        100-unit LM): every verbalizer feeds each class back to the LM as one of its units, so no cell can run."""
        if task.kind != "classification":
            return None
        symbols, units = num_symbols(task, self.config.ic_labels), self.unit_count(ctx)
        if symbols <= units:
            return None
        return (f"{symbols:,} label symbols but the unit LM has {units} units (each class is fed back to the LM as "
                "one of its units; an LM with more units would be needed)")

    def deep(self) -> bool:
        return bool(getattr(self.config, "deep", True))

    def resolved_config(self, upstream: str | None = None) -> dict[str, Any]:
        out = super().resolved_config(upstream)
        for key, default in LATER_OPTIONS.items():
            if key in out and out[key] == default:
                del out[key]
        if self.learnable_verbalizer or self.config.verbalizer != "random":
            out.pop("random_draw", None)  # only the random verbalizer draws
        return out

    # ---- shared ---------------------------------------------------------------------------------------------
    def verbalizer_method(self) -> str:
        if self.learnable_verbalizer:
            return "learnable"
        from bench.prompt.verbalizers import VERBALIZERS

        if self.config.verbalizer == "learnable":
            raise BenchError(f"method '{self.name}': verbalizer 'learnable' is the method {self.name}-lv")
        if self.config.verbalizer not in VERBALIZERS:
            raise BenchError(f"method '{self.name}': unknown verbalizer '{self.config.verbalizer}'; "
                             f"expected freq, random or identity")
        return self.config.verbalizer

    def adapter_spec(self):
        from bench.prompt.adapters import AdapterSpec

        return AdapterSpec(self.config.prompt_length, self.deep(), self.config.separator_init)

    def count_parameters(self, task: TaskSpec, ctx: RunContext) -> ParamCount:
        """The adapter's formula on the LM's shape (bench.results.params for prompts); the frozen LM on the meta device."""
        from bench.prompt.adapters import adapter_class

        self.verbalizer_method()
        layers, dim, vocab, frozen = self.lm_shape(ctx)
        outputs = None
        if self.learnable_verbalizer:
            outputs = num_symbols(task, self.config.ic_labels) + 4
        parts = adapter_class(self.config.adapter).formula(layers, dim, vocab, self.adapter_spec(), outputs)
        n = sum(parts.values())
        return ParamCount(trainable=n, frozen=frozen, stored_per_task=n, breakdown=parts)

    def run(self, task: TaskSpec, manifest: Manifest, ctx: RunContext) -> MethodOutput:
        splits = {s: manifest.split(s) for s in ("train", "valid", "test")}
        if not splits["train"] or not splits["test"]:
            raise BenchError(f"task '{task.name}': {self.name} needs train and test examples")
        loaded = self.load_lm(ctx)
        sources, units_info = self.sources(task, manifest, splits, ctx, loaded.lm)
        return run_engine(self, task, splits, sources, loaded, units_info, ctx)


def run_engine(method: PromptTuningMethod, task: TaskSpec, splits: dict, sources: dict, loaded: LoadedLM,
               units_info: dict, ctx: RunContext) -> MethodOutput:
    """Verbalizer → adapter → rows → training (LM sha1-checked) → decoding → predictions and counts."""
    import torch

    from bench.prompt.adapters import adapter_class
    from bench.prompt.modules import PromptedLM
    from bench.prompt.unit_lm import split_lengths
    from bench.prompt.verbalizers import build_verbalizer, label_space_for

    cfg, lm = method.config, loaded.lm
    train_labels = [e.label for e in splits["train"]]
    space = label_space_for(task, train_labels, cfg.ic_labels)
    verbalizer = build_verbalizer(method.verbalizer_method(), space, lm.vocab, [s.units for s in sources["train"]],
                                  train_labels, ctx.seed, cfg.class_order, cfg.random_draw)
    torch.manual_seed(ctx.seed)  # the seed varies prompts, verbalizer and data order; the LM is fixed
    outputs = verbalizer.output_size if verbalizer.learnable else None
    adapter = adapter_class(cfg.adapter).build(lm, method.adapter_spec(), outputs).to(ctx.device)
    model = PromptedLM(lm, adapter)
    lm_before = weights_digest(lm.module)
    history, truncated = _train(method, model, verbalizer, splits, sources, ctx)
    if weights_digest(lm.module) != lm_before:
        raise BenchError("internal error: the frozen unit LM changed during prompt tuning")
    preds, decoding = _predict(method, task, model, verbalizer, space, splits, sources, ctx)
    params = _checked_params(method, lm, adapter, outputs)
    lengths = [n for split in sources.values() for n in split_lengths(split)]
    info = {**loaded.info, **units_info,
            "source_units": {"mean_per_utt": float(sum(lengths) / max(len(lengths), 1)),
                             "max_per_utt": int(max(lengths)), "truncated_sources": truncated},
            "verbalizer": {**verbalizer.describe(), **learnable_verbalizer_weights(adapter, verbalizer, lm)},
            "prompt": {"adapter": cfg.adapter, "length": cfg.prompt_length, "deep": method.deep(),
                       "separator": f"trainable <s> ({cfg.separator_init})",
                       "input_prompt_affects_output": not method.deep(),
                       "sequence": "start units <s> label </s> (loss on <s>, label, </s>)"},
            "decoding": decoding, "lm_frozen_sha1": lm_before, **history}
    import dataclasses

    trained = {"method": method.name, "adapter": cfg.adapter, "prompts": model.prompts.state_dict(),
               "options": dataclasses.asdict(cfg), "labels": [str(x) for x in verbalizer.space.symbols],
               "space_kind": verbalizer.space.kind,
               "verbalizer": {"method": verbalizer.method, "outputs": [int(x) for x in verbalizer.outputs],
                              "feed": [int(x) for x in verbalizer.feed], "eos": int(verbalizer.eos),
                              "bos": int(verbalizer.bos), "output_size": int(verbalizer.output_size),
                              "learnable": bool(verbalizer.learnable),
                              "specials": [int(x) for x in verbalizer.specials]}}
    return MethodOutput(predictions=preds, params=params, info=info, trained=trained)


def predict_trained(trained: dict, task: TaskSpec, manifest: Manifest, ctx: RunContext) -> "Predictions":
    """A kept prompt set (``seed-N.pt``) on the same frozen LM, decoding ``task``'s test split (``bench evaluate``;
    classification with one symbol per class). The LM and quantizer must be the ones the record hashed."""
    import torch

    from bench.methods import method_class
    from bench.prompt.adapters import adapter_class
    from bench.prompt.modules import PromptedLM
    from bench.prompt.verbalizers import ClassLabels, Verbalizer

    if trained.get("space_kind") != "class":
        raise BenchError("`bench evaluate` scores prompt sets of classification tasks with one label per class "
                         f"only; this one's label space is '{trained.get('space_kind')}'")
    method = method_class(trained["method"])(trained["options"])
    method.prepare(ctx)
    artefacts = method.artefacts(ctx)
    if artefacts != trained.get("record_artefacts", artefacts):
        raise BenchError("the frozen LM or quantizer here differs from the one the record's prompts were trained "
                         f"on: {sorted(artefacts.items())} vs {sorted(trained['record_artefacts'].items())}")
    splits = {s: manifest.split(s) for s in ("train", "valid", "test")}
    if not splits["test"]:
        raise BenchError(f"task '{task.name}': the test split is empty")
    method.stage(task, manifest, ctx)
    loaded = method.load_lm(ctx)
    sources, _ = method.sources(task, manifest, splits, ctx, loaded.lm)
    space = ClassLabels(trained["labels"])
    v = trained["verbalizer"]
    verbalizer = Verbalizer(method=v["method"], space=space, outputs=v["outputs"], feed=v["feed"], eos=v["eos"],
                            bos=v["bos"], output_size=v["output_size"], learnable=v["learnable"],
                            specials=tuple(v["specials"]))
    outputs = verbalizer.output_size if verbalizer.learnable else None
    adapter = adapter_class(trained["adapter"]).build(loaded.lm, method.adapter_spec(), outputs).to(ctx.device)
    model = PromptedLM(loaded.lm, adapter)
    model.prompts.load_state_dict(trained["prompts"])
    model.eval()
    splits["train"] = [e for e in splits["train"] if e.label in space.index] or splits["test"]  # label lengths
    with torch.no_grad():
        preds, _ = _predict(method, task, model, verbalizer, space, splits, sources, ctx)
    return preds


def learnable_verbalizer_weights(adapter, verbalizer, lm) -> dict:
    """``{"weights": {rows, columns, values}}``: the trained learnable verbalizer's (C+4) × |V| matrix (rows: its
    output slots, ``<s> <pad> </s> <unk>`` then the labels; columns: the LM's tokens), 6 significant digits, for
    ``bench report``'s heat map (v2 reads its verbalizer through this map). Kept in the record's ``info``, not in
    the configuration, so config hashes do not change. ``{}`` for rule-based verbalizers."""
    layer = getattr(getattr(adapter, "verbalizer", None), "linear", None)
    if not verbalizer.learnable or layer is None:
        return {}
    from bench.prompt.verbalizers import SPECIAL_SLOTS

    w = layer.weight.detach().cpu().double().numpy()
    names = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
    rows = [""] * w.shape[0]
    for k, slot in SPECIAL_SLOTS.items():
        rows[slot] = names[k]
    for sym, slot in zip(verbalizer.space.symbols, verbalizer.outputs):
        rows[slot] = sym
    vocab = lm.vocab
    columns = [str(x) for x in getattr(vocab, "symbols", [])]
    if len(columns) != w.shape[1]:  # the MS-TLM's vocabulary: unit u is token u, the specials after them
        columns = [str(i) for i in range(w.shape[1])]
        for name, tok in (("<s>", vocab.bos), ("<pad>", vocab.pad), ("</s>", vocab.eos), ("<unk>", vocab.unk)):
            if 0 <= tok < len(columns):
                columns[tok] = name
    return {"weights": {"rows": rows, "columns": columns,
                        "values": [[float(f"{x:.6g}") for x in r] for r in w]}}


def _train(method, model, verbalizer, splits, sources, ctx: RunContext) -> tuple[dict, int]:
    from bench.prompt.trainer import TrainConfig, make_row, train_prompts
    from bench.prompt.unit_lm import RowSplit

    cfg, lm = method.config, model.unit_lm
    rows, truncated = {}, 0
    for s in ("train", "valid"):
        rows[s] = RowSplit()
        for src, ex in zip(sources[s], splits[s]):
            row, cut = make_row(src, ex.label, verbalizer, lm.max_positions, lm)
            rows[s].append(row)
            truncated += cut
    epochs = ctx.max_epochs if ctx.max_epochs is not None else cfg.max_epochs
    tcfg = TrainConfig(lr=cfg.lr, batch_size=cfg.batch_size, max_tokens=cfg.max_tokens, max_epochs=epochs,
                       patience=cfg.patience, seed=ctx.seed, loss_normalization=cfg.loss_normalization,
                       stopping_rule=cfg.stopping_rule)
    history = train_prompts(model, rows["train"], rows["valid"] or rows["train"], tcfg, None, ctx.device, ctx.log,
                            ctx.track(f"{method.name} epochs", epochs), resume=ctx.resume_dir)
    return history, truncated


def _predict(method, task, model, verbalizer, space, splits, sources, ctx: RunContext):
    from bench.prompt.trainer import greedy_decode, to_predictions

    cfg = method.config
    label_lens = [len(space.encode(e.label)) for e in splits["train"]]
    if task.kind == "generation":
        max_len = cfg.max_decode_len or int(1.2 * max(label_lens)) + 5
    else:
        max_len = cfg.max_decode_len or max(label_lens) + 2  # room for an over-long (wrong) output to show
    decoded = greedy_decode(model, sources["test"], verbalizer, max_len, model.unit_lm.max_positions,
                            cfg.batch_size, ctx.device)
    if cfg.max_total_len is not None:
        decoded = [cap_total_length(d, len(src), cfg.max_total_len) for d, src in zip(decoded, sources["test"])]
    with_scores = task.kind == "classification" and space.kind == "class"
    refs = [e.label for e in splits["test"]]
    hyps, scores, unmapped = to_predictions(decoded, verbalizer, with_scores, refs)
    preds = Predictions(ids=[e.id for e in splits["test"]], references=[e.label for e in splits["test"]],
                        hypotheses=hyps, scores=scores, unmapped=unmapped)
    return preds, {"strategy": "greedy", "max_len": max_len, "kv_cache": True}


def cap_total_length(decoded, source_len: int, max_total_len: int):
    """``decoded`` as fairseq's whole-sequence limit leaves it. fairseq's SequenceGenerator forces the source
    prefix (``source_len`` units and ``<s>``) at steps ``0..source_len``, generates freely until step
    ``max_total_len - 1`` and at step ``max_total_len`` allows only ``</s>`` (fairseq/sequence_generator.py:341,
    381-393), so at most ``room = max_total_len - source_len - 1`` label tokens fit; a hypothesis that reaches
    the limit is cut there and ends with the forced ``</s>``: it is *finished* and scored as decoded (a one-token
    label is still right at ``source_len = max_total_len - 2``). Greedy decoding is causal, so cutting afterwards
    equals stopping then. An output that stopped short of the room without ``</s>`` (bench's own
    ``max_decode_len``) stays unfinished."""
    from dataclasses import replace

    room = max_total_len - source_len - 1
    n = len(decoded.outputs)
    if n < room or (n == room and decoded.finished):
        return decoded
    return replace(decoded, outputs=decoded.outputs[:max(room, 0)], finished=True)


def _checked_params(method, lm, adapter, outputs) -> ParamCount:
    parts = type(adapter).formula(lm.num_layers, lm.embed_dim, len(lm.vocab), method.adapter_spec(), outputs)
    if parts != adapter.breakdown():
        raise BenchError(f"internal error: adapter parameters {adapter.breakdown()} differ from the formula {parts}")
    n = sum(parts.values())
    return ParamCount(trainable=n, frozen=sum(p.numel() for p in lm.module.parameters()), stored_per_task=n,
                      breakdown=parts)


# ---- helpers both methods use ---------------------------------------------------------------------------------
def num_symbols(task: TaskSpec, ic_labels: str = "slots") -> int:
    """C of the learnable verbalizer: classes (or slot values, or with ``ic_labels`` words their distinct words);
    for generation the train-set characters."""
    if task.kind == "classification":
        if task.slots and ic_labels == "words":
            from bench.prompt.verbalizers import SlotWordLabels

            return len(SlotWordLabels(task.slots))
        return task.num_outputs
    from bench.data.sources import is_available, prepare_manifest
    from bench.prompt.verbalizers import label_space_for

    if task.data.source == "builtin" and not is_available(task):
        raise BenchError(f"task '{task.name}': the learnable verbalizer's size depends on the training characters; "
                         f"build the data first (`bench data build {task.name}`)")
    man = prepare_manifest(task)
    return len(label_space_for(task, [e.label for e in man.split("train")]))


def looks_like_path(spec: str) -> bool:
    """Whether an option value names a file (a separator, ``~``, ``.`` or a file suffix), not a model name."""
    return "/" in spec or os.sep in spec or spec.startswith(("~", ".")) or Path(spec).suffix != ""


def existing_or_model(spec: str, kind: str, option: str | None = None) -> Path:
    """A file given by path, else a configured model name (``bench models``) of this kind. A path that does not
    exist is one line naming it (and ``option``), never a hint to configure a model named after the path."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if looks_like_path(spec):
        raise BenchError(f"option {option or kind}={spec!r}: no such file or directory ({path.absolute()}); expected "
                         f"an existing file or a model name from `bench models`")
    from bench.core.model_paths import resolve_model

    return resolve_model(spec, kind=kind).file


def weights_digest(module) -> str:
    """sha1 over every parameter and buffer of the frozen LM (bit-exact check that nothing trained it)."""
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def frozen(module, device):
    """``module`` on ``device``, in eval mode, every parameter frozen."""
    module.to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
