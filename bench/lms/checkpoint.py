"""fairseq checkpoints of the GSLM unit LM (``--task language_modeling --arch transformer_lm*``): import and export.

A GSLM release (``hubert100_lm.tgz``) is ``checkpoint_best.pt`` (``cfg`` or legacy ``args`` + ``model`` state dict,
keys ``decoder.*``) and ``dict.txt``. Import is all-or-nothing: every weight of bench's model must come from the
file with the right shape, and every tensor in the file must be used (or be one of fairseq's bookkeeping entries),
otherwise a :class:`BenchError` names the keys. The published SpeechPrompt silently trained prompts on a randomly
initialised LM when its load was non-strict (SpeechPrompt issue #6; docs/papers.md, "Non-strict load"):
bench never loads with ``strict=False``. Settings that would make fairseq compute something bench does not
(post-LN, learned positions, untied output, adaptive input/softmax, …) are refused rather than approximated.

Export writes the layout ``fairseq-train`` writes (``Trainer.state_dict``): ``cfg`` as a plain dict with ``model``
and ``task`` sections, ``model``, ``optimizer_history`` (``num_updates``), ``extra_state`` (``train_iterator.epoch``),
so ``fairseq.checkpoint_utils.load_model_ensemble_and_task`` loads it and ``load_unit_lm`` reads back the epoch.
"""

from __future__ import annotations

from pathlib import Path

from bench.core.errors import BenchError
from bench.lms.fairseq_io import (  # noqa: F401 - sha1_of, model_settings, checkpoint_weights_sha256: public names
    DECODER_REQUIRED, check_required, checkpoint_weights_sha256, model_settings, read_checkpoint_state, save_atomic, sha1_of,
    strict_weights, training_position)
from bench.lms.model import ACTIVATIONS, UnitDictionary, UnitLanguageModel, UnitLMConfig

CHECKPOINT_NAME = "checkpoint_best.pt"
DICT_NAME = "dict.txt"
SUPPORTED_ARCHS = ("transformer_lm", "transformer_lm_big", "transformer_lm_baevski_wiki103",
                   "transformer_lm_gbw", "transformer_lm_gpt", "transformer_lm_gpt2_small",
                   "transformer_lm_gpt2_medium", "transformer_lm_gpt2_big", "transformer_lm_wiki103")
# fairseq bookkeeping tensors the forward never reads (version flag; the sinusoid cache buffer of older fairseq)
IGNORED_KEYS = ("decoder.version", "decoder.embed_positions._float_tensor")
TIED_KEY = "decoder.output_projection.weight"
# settings bench's model implements, with the only value it supports (missing = fairseq's default, which is this)
_REQUIRED = {
    "decoder_normalize_before": True,
    "share_decoder_input_output_embed": True,
    **DECODER_REQUIRED,
    "scale_fc": False,
    "scale_attn": False,
    "scale_heads": False,
    "scale_resids": False,
    "base_layers": 0,
}
# number of heads per arch when a legacy Namespace omits it (fairseq's architecture functions)
_ARCH_HEADS = {"transformer_lm": 8, "transformer_lm_big": 16, "transformer_lm_gpt": 12, "transformer_lm_gpt2_small": 16,
               "transformer_lm_gpt2_medium": 20, "transformer_lm_gpt2_big": 25, "transformer_lm_gbw": 16,
               "transformer_lm_wiki103": 8, "transformer_lm_baevski_wiki103": 8}


def read_checkpoint(path: Path) -> dict:
    """``torch.load`` of a fairseq checkpoint (:func:`bench.lms.fairseq_io.read_checkpoint_state`)."""
    return read_checkpoint_state(Path(path))[0]


def effective_settings(model: dict, legacy_args: bool) -> dict:
    """The settings fairseq actually builds with. fairseq's architecture functions (``base_lm_architecture``, run
    for legacy ``args`` checkpoints and for every ``--arch`` other than the dataclass-registered ``transformer_lm``)
    force ``decoder_normalize_before=True`` whatever the stored flag says, and map old final-norm flags."""
    model = dict(model)
    arch = model.get("_name") or model.get("arch")
    if legacy_args or arch != "transformer_lm":
        if "no_tie_adaptive_proj" in model:
            model["no_decoder_final_norm"] = True
        if "decoder_final_norm" in model:
            model["no_decoder_final_norm"] = not model["decoder_final_norm"]
        model["decoder_normalize_before"] = True
    return model


def config_from_fairseq(model: dict, task: dict, weights: dict, path: Path | str = "checkpoint",
                        legacy_args: bool = False) -> UnitLMConfig:
    """bench config for a fairseq ``transformer_lm*`` checkpoint (dims from the weights, heads from the config)."""
    model = effective_settings(model, legacy_args)
    arch = model.get("_name") or model.get("arch")
    if arch not in SUPPORTED_ARCHS:
        raise BenchError(f"{path}: architecture '{arch}' is not a fairseq transformer_lm; supported: "
                         f"{list(SUPPORTED_ARCHS)}")
    task_name = task.get("_name") or task.get("task")
    if task_name not in (None, "language_modeling"):
        raise BenchError(f"{path}: task '{task_name}' is not language_modeling (a GSLM ULM is trained with it)")
    check_required(model, _REQUIRED, path, "GSLM ULM")
    if model.get("adaptive_softmax_cutoff"):
        raise BenchError(f"{path}: adaptive softmax is not supported by bench's GSLM ULM")
    if "decoder.embed_tokens.weight" not in weights:
        raise BenchError(f"{path}: weight 'decoder.embed_tokens.weight' missing; expected a transformer_lm state "
                         "dict (decoder.*)")
    vocab, d = (int(x) for x in weights["decoder.embed_tokens.weight"].shape)
    for key in ("decoder_embed_dim", "decoder_input_dim", "decoder_output_dim"):
        if model.get(key) not in (None, d):
            raise BenchError(f"{path}: {key}={model[key]} differs from the embedding size {d} (projections "
                             "in/out of the decoder are not supported)")
    layer_ids = {int(k.split(".")[2]) for k in weights if k.startswith("decoder.layers.")}
    if layer_ids != set(range(len(layer_ids))):
        raise BenchError(f"{path}: decoder layers {sorted(layer_ids)} are not numbered 0..N-1")
    if model.get("decoder_layers") not in (None, len(layer_ids)):
        raise BenchError(f"{path}: config says decoder_layers={model['decoder_layers']} but the state dict "
                         f"holds {len(layer_ids)} layers")
    heads = model.get("decoder_attention_heads") or _ARCH_HEADS[arch]
    fc1 = weights.get("decoder.layers.0.fc1.weight")
    if fc1 is None:
        raise BenchError(f"{path}: weight 'decoder.layers.0.fc1.weight' missing")
    activation = model.get("activation_fn") or "relu"
    if activation not in ACTIVATIONS:
        raise BenchError(f"{path}: activation_fn '{activation}' is not supported (one of {ACTIVATIONS})")
    max_pos = (model.get("max_target_positions") or task.get("max_target_positions") or model.get("tokens_per_sample")
               or task.get("tokens_per_sample") or 3072)

    def rate(key: str) -> float:
        return float(model.get(key) or 0.0)

    return UnitLMConfig(vocab_size=vocab, num_layers=len(layer_ids), embed_dim=d, num_heads=int(heads),
                        ffn_dim=int(fc1.shape[0]), dropout=rate("dropout"), max_positions=int(max_pos),
                        attention_dropout=rate("attention_dropout"),
                        activation_dropout=rate("activation_dropout") or rate("relu_dropout"),
                        activation=activation)


def map_state_dict(weights: dict, model: UnitLanguageModel, path: Path | str = "checkpoint") -> dict:
    """fairseq ``decoder.*`` keys → bench keys; refuses missing, unexpected and shape-mismatched weights."""
    import torch

    if TIED_KEY in weights:
        emb = weights.get("decoder.embed_tokens.weight")
        tensor = weights[TIED_KEY]
        if emb is None or tensor.shape != emb.shape or not torch.equal(tensor, emb):
            raise BenchError(f"{path}: {TIED_KEY} differs from decoder.embed_tokens.weight; bench's GSLM ULM "
                             "ties input and output embeddings (--share-decoder-input-output-embed)")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return strict_weights(weights, expected, (*IGNORED_KEYS, TIED_KEY), path, "unit LM")


def load_unit_lm(checkpoint: Path, dict_path: Path | None = None) -> UnitLanguageModel:
    """A GSLM ULM from a fairseq ``checkpoint_best.pt`` (+ ``dict.txt``, default: next to it), every weight
    accounted for, in eval mode; ``model.provenance`` records file, sha1, epoch, num_updates and loaded_keys."""
    checkpoint = Path(checkpoint)
    dict_path = Path(dict_path) if dict_path is not None else checkpoint.parent / DICT_NAME
    state = read_checkpoint(checkpoint)
    weights = state["model"]
    model_cfg, task_cfg = model_settings(state, checkpoint)
    legacy = state.get("cfg") is None
    cfg = config_from_fairseq(model_cfg, task_cfg, weights, checkpoint, legacy_args=legacy)
    dictionary = UnitDictionary.load(dict_path)
    if len(dictionary) != cfg.vocab_size:
        raise BenchError(f"{dict_path}: {len(dictionary)} symbols (4 specials + {len(dictionary) - 4}) but "
                         f"{checkpoint} has an embedding for {cfg.vocab_size}; wrong dict.txt for this checkpoint?")
    import torch

    with torch.device("meta"):
        model = UnitLanguageModel(cfg, dictionary)
    mapped = map_state_dict(weights, model, checkpoint)
    model.load_state_dict({k: v.float() for k, v in mapped.items()}, strict=True, assign=True)
    model.eval()
    epoch, updates = training_position(state)
    model.provenance = {"checkpoint": str(checkpoint), "sha1": sha1_of(checkpoint), "dict": str(dict_path),
                        "epoch": epoch, "num_updates": updates, "loaded_keys": len(mapped)}
    return model


def fairseq_cfg(model: UnitLanguageModel, data_dir: str) -> dict:
    """The ``cfg`` dict ``fairseq-train`` would store for this model (``model`` and ``task`` sections, resolved)."""
    c = model.cfg
    big = (c.num_layers, c.embed_dim, c.num_heads, c.ffn_dim) == (12, 1024, 16, 4096)
    return {
        "_name": None,
        "model": {
            "_name": "transformer_lm_big" if big else "transformer_lm",
            "activation_fn": c.activation, "dropout": c.dropout, "attention_dropout": c.attention_dropout,
            "activation_dropout": c.activation_dropout, "relu_dropout": 0.0,
            "decoder_embed_dim": c.embed_dim, "decoder_output_dim": c.embed_dim, "decoder_input_dim": c.embed_dim,
            "decoder_ffn_embed_dim": c.ffn_dim, "decoder_layers": c.num_layers,
            "decoder_attention_heads": c.num_heads, "decoder_normalize_before": True, "no_decoder_final_norm": False,
            "adaptive_softmax_cutoff": None, "adaptive_softmax_dropout": 0.0, "adaptive_softmax_factor": 4.0,
            "no_token_positional_embeddings": False, "share_decoder_input_output_embed": True,
            "character_embeddings": False, "adaptive_input": False, "adaptive_input_factor": 4.0,
            "adaptive_input_cutoff": None, "tie_adaptive_weights": False, "tie_adaptive_proj": False,
            "decoder_learned_pos": False, "layernorm_embedding": False, "no_scale_embedding": False,
            "checkpoint_activations": False, "offload_activations": False, "decoder_layerdrop": 0.0,
            "decoder_layers_to_keep": None, "quant_noise_pq": 0.0, "quant_noise_pq_block_size": 8,
            "quant_noise_scalar": 0.0, "base_layers": 0, "base_sublayers": 1, "base_shuffle": 1,
            "scale_fc": False, "scale_attn": False, "scale_heads": False, "scale_resids": False,
            "decoder_xformers_att_config": None, "add_bos_token": False,
            "tokens_per_sample": c.max_positions, "max_target_positions": c.max_positions, "tpu": False,
        },
        "task": {
            "_name": "language_modeling", "data": data_dir, "sample_break_mode": "eos",
            "tokens_per_sample": c.max_positions, "output_dictionary_size": -1, "self_target": False,
            "future_target": False, "past_target": False, "add_bos_token": False,
            "max_target_positions": c.max_positions, "shorten_method": "none", "shorten_data_split_list": "",
            "pad_to_fixed_length": False, "pad_to_fixed_bsz": False, "seed": 1, "batch_size": None,
            "batch_size_valid": None, "dataset_impl": None, "data_buffer_size": 10, "tpu": False,
            "use_plasma_view": False, "plasma_path": "/tmp/plasma",
        },
        "criterion": {"_name": "cross_entropy", "sentence_avg": False},
    }


def save_unit_lm(model: UnitLanguageModel, directory: Path, extra: dict | None = None) -> Path:
    """Write ``checkpoint_best.pt`` + ``dict.txt`` in fairseq-train's layout (atomically); ``extra`` may carry
    ``epoch``, ``num_updates``, ``val_loss`` and any other JSON-able ``extra_state`` entries."""
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    epoch = int(extra.pop("epoch", model.provenance.get("epoch") or 1))
    updates = int(extra.pop("num_updates", model.provenance.get("num_updates") or 0))
    val_loss = extra.pop("val_loss", None)
    weights = {"decoder.version": torch.tensor([3.0])}
    for k, v in model.state_dict().items():
        weights[f"decoder.{k}"] = v.detach().to("cpu", torch.float32).clone()
    weights[TIED_KEY] = weights["decoder.embed_tokens.weight"]  # the same tensor: tied, stored once
    state = {
        "args": None,
        "cfg": fairseq_cfg(model, str(directory)),
        "model": weights,
        "criterion": None,
        "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": val_loss}, "num_updates": updates}],
        "task_state": {},
        "extra_state": {"metrics": {}, "previous_training_time": float(extra.pop("training_time", 0.0)),
                        "train_iterator": {"version": 2, "epoch": epoch, "iterations_in_epoch": 0,
                                           "shuffle": True},
                        "val_loss": val_loss, "bench": extra},
    }
    model.dictionary.save(directory / DICT_NAME)
    return save_atomic(state, directory / CHECKPOINT_NAME)
