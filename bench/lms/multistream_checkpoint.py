"""fairseq checkpoints of the pGSLM MS-TLM (``--arch transformer_ulm*``, ``--task speech_unit_modeling``): import,
export in the same layout, and pretraining with fairseq's ``speech_unit_lm_criterion``.

The released pGSLM checkpoints (``{continuous,discrete}_{no_prosody,prosody}_shift_1_1.pt``) hold ``cfg`` (an
omegaconf config with ``model`` and ``task`` sections) and ``model`` (state dict, keys ``decoder.*``). The unit and
F0 vocabulary sizes live in the task's data config, which is not in the checkpoint, so they are read from the
weight shapes. Anything bench's model would compute differently (learned positions, no final norm, adaptive
input, layernorm_embedding, ...) is refused rather than approximated.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from bench.core.errors import BenchError
from bench.lms.fairseq_io import (DECODER_REQUIRED, check_required, model_settings, read_checkpoint_state, save_atomic, sha1_of,
                                  strict_weights, training_position)
from bench.lms.multistream import MultiStreamLMConfig, MultiStreamUnitLM

SUPPORTED_ARCHS = ("transformer_ulm", "transformer_ulm_tiny", "transformer_ulm_big")
# keys fairseq stores that the MS-TLM forward never reads: the decoder version flag, and the token output
# projection fairseq's TransformerDecoder builds (MultiStreamTransformerDecoder predicts with project_out_dim)
IGNORED_KEYS = ("decoder.version", "decoder.output_projection.weight", "decoder.embed_positions._float_tensor")
# fairseq settings bench's MS-TLM implements, with the only value it supports
_REQUIRED = DECODER_REQUIRED


def config_from_fairseq(model: dict, task: dict, weights: dict, path: Path | str = "checkpoint") -> MultiStreamLMConfig:
    """bench config for a fairseq transformer_ulm checkpoint; refuses settings bench does not implement."""
    arch = model.get("_name") or model.get("arch")
    if arch not in SUPPORTED_ARCHS:
        raise BenchError(f"{path}: architecture '{arch}' is not a pGSLM MS-TLM; supported: {list(SUPPORTED_ARCHS)}")
    task_name = task.get("_name") or task.get("task")
    if task_name not in (None, "speech_unit_modeling"):
        raise BenchError(f"{path}: task '{task_name}' is not speech_unit_modeling")
    check_required(model, _REQUIRED, path, "MS-TLM")
    try:
        emb = weights["decoder.embed_tokens.weight"]
        out = weights["decoder.project_out_dim.weight"]
    except KeyError as err:
        raise BenchError(f"{path}: weight {err} missing; expected an MS-TLM state dict (decoder.*)") from None
    d = int(emb.shape[1])
    for key in ("decoder_embed_dim", "decoder_input_dim", "decoder_output_dim"):
        if model.get(key, d) not in (None, d):
            raise BenchError(f"{path}: {key}={model[key]} differs from the embedding size {d}; not supported")
    layer_ids = {int(k.split(".")[2]) for k in weights if k.startswith("decoder.layers.")}
    discrete_dur = bool(task.get("discrete_duration", "decoder.embed_other_list.0.weight" in weights))
    discrete_f0 = bool(task.get("discrete_f0", "decoder.embed_other_list.1.weight" in weights))
    if discrete_dur:
        dur_vocab = int(weights["decoder.embed_other_list.0.weight"].shape[0]) if \
            "decoder.embed_other_list.0.weight" in weights else int(task.get("max_token_duration", 20)) + 5
        max_duration = dur_vocab - 5
    else:
        max_duration = int(task.get("max_token_duration", 20))
    num_units = int(emb.shape[0]) - 4
    rest = int(out.shape[0]) - int(emb.shape[0]) - ((max_duration + 5) if discrete_dur else 1)
    f0_bins = rest - 4 if discrete_f0 else int(task.get("f0_bins", 32))
    if discrete_f0 and f0_bins < 2:
        raise BenchError(f"{path}: project_out_dim has {out.shape[0]} rows; cannot split into unit/duration/F0")
    if discrete_dur and int(task.get("max_token_duration", max_duration)) != max_duration:
        raise BenchError(f"{path}: max_token_duration={task['max_token_duration']} disagrees with the duration "
                         f"embedding ({max_duration + 5} rows)")
    shifts = task.get("stream_shifts", "0,0")
    shifts = tuple(int(s) for s in (shifts.split(",") if isinstance(shifts, str) else shifts))
    heads = int(model.get("decoder_attention_heads") or 0)
    ffn = (int(weights["decoder.layers.0.fc1.weight"].shape[0]) if layer_ids
           else int(model.get("decoder_ffn_embed_dim", 0)))
    activation = model.get("activation_fn") or ("gelu" if arch == "transformer_ulm_tiny" else "relu")
    if activation not in ("relu", "gelu"):
        raise BenchError(f"{path}: activation_fn '{activation}' is not supported (relu, gelu)")
    if heads <= 0:
        heads = {"transformer_ulm_tiny": 1, "transformer_ulm_big": 16}.get(arch, 8)
    return MultiStreamLMConfig(
        num_units=num_units, num_layers=len(layer_ids), embed_dim=d, num_heads=heads, ffn_dim=ffn,
        dropout=0.0, activation=activation, discrete_duration=discrete_dur, max_duration=max_duration,
        discrete_f0=discrete_f0, f0_bins=f0_bins, stream_shifts=shifts,
        max_positions=int(model.get("max_target_positions") or task.get("max_target_positions") or 4096),
        ignore_duration_input=bool(task.get("ignore_duration_input", False)),
        ignore_f0_input=bool(task.get("ignore_f0_input", False)),
    )


def load_multistream_lm(checkpoint: Path | str) -> MultiStreamUnitLM:
    """An MS-TLM from a fairseq ``transformer_ulm`` checkpoint, every weight accounted for, in eval mode."""
    path = Path(checkpoint)
    state, safe = read_checkpoint_state(path, "pGSLM")
    weights = state["model"]
    model_cfg, task_cfg = model_settings(state, path)
    cfg = config_from_fairseq(model_cfg, task_cfg, weights, path)
    model = MultiStreamUnitLM(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapped = strict_weights(weights, expected, IGNORED_KEYS, path, "MS-TLM")
    model.load_state_dict({k: v.float() for k, v in mapped.items()}, strict=True)
    model.eval()
    epoch, updates = training_position(state)
    model.provenance = {
        "checkpoint": str(path.resolve()),
        "sha1": sha1_of(path),
        "arch": model_cfg.get("_name") or model_cfg.get("arch"),
        "epoch": epoch,
        "num_updates": updates,
        "loaded_keys": len(mapped),
        "ignored_keys": sorted(set(weights) & set(IGNORED_KEYS)),
        "unpickled_config": not safe,
        "bench": state.get("bench", {}),
    }
    return model


def fairseq_arch_name(cfg: MultiStreamLMConfig) -> str:
    for name, maker in (("transformer_ulm_tiny", MultiStreamLMConfig.tiny),
                        ("transformer_ulm_big", MultiStreamLMConfig.transformer_ulm_big)):
        ref = maker(cfg.num_units)
        if (ref.num_layers, ref.embed_dim, ref.num_heads, ref.ffn_dim, ref.activation) == \
                (cfg.num_layers, cfg.embed_dim, cfg.num_heads, cfg.ffn_dim, cfg.activation):
            return name
    return "transformer_ulm"


def fairseq_sections(cfg: MultiStreamLMConfig) -> tuple[dict, dict]:
    """The ``cfg.model`` / ``cfg.task`` entries fairseq would record for this MS-TLM."""
    model = {
        "_name": fairseq_arch_name(cfg), "decoder_embed_dim": cfg.embed_dim, "decoder_input_dim": cfg.embed_dim,
        "decoder_output_dim": cfg.embed_dim, "decoder_layers": cfg.num_layers,
        "decoder_attention_heads": cfg.num_heads, "decoder_ffn_embed_dim": cfg.ffn_dim,
        "activation_fn": cfg.activation, "dropout": cfg.dropout, "attention_dropout": 0.0,
        "decoder_normalize_before": True, "decoder_learned_pos": False, "no_scale_embedding": False,
        "share_decoder_input_output_embed": True, "max_target_positions": cfg.max_positions,
        **{k: v for k, v in _REQUIRED.items()},
    }
    task = {
        "_name": "speech_unit_modeling", "discrete_duration": cfg.discrete_duration,
        "discrete_f0": cfg.discrete_f0, "max_token_duration": cfg.max_duration,
        "stream_shifts": ",".join(str(s) for s in cfg.stream_shifts), "log_f0": True,
        "normalize_f0_mean": True, "normalize_f0_std": False, "interpolate_f0": True,
        "ignore_duration_input": cfg.ignore_duration_input, "ignore_f0_input": cfg.ignore_f0_input,
        "max_target_positions": cfg.max_positions,
    }
    return model, task


def save_multistream_lm(model: MultiStreamUnitLM, directory: Path | str, extra: dict | None = None, *,
                        epoch: int = 0, num_updates: int = 0) -> Path:
    """``checkpoint_best.pt`` in fairseq's layout (plain-dict ``cfg``, ``decoder.*`` weights, tied output
    projection stored as fairseq does), written atomically. ``extra`` (prosody settings, F0 bin edges, data
    hashes) goes under a ``bench`` key that fairseq ignores."""
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_cfg, task_cfg = fairseq_sections(model.cfg)
    sd = {f"decoder.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}
    sd["decoder.output_projection.weight"] = sd["decoder.embed_tokens.weight"]
    sd["decoder.version"] = torch.tensor([3.0])
    state = {
        "args": None,
        "cfg": {"_name": None, "model": model_cfg, "task": task_cfg,
                "criterion": {"_name": "speech_unit_lm_criterion"}},
        "model": sd,
        "optimizer_history": [{"criterion_name": "SpeechUnitLmCriterion", "optimizer_name": "Adam",
                               "num_updates": int(num_updates)}],
        "extra_state": {"train_iterator": {"epoch": int(epoch)}},
        "last_optimizer_state": None,
        "bench": {"config": model.cfg.to_dict(), **(extra or {})},
    }
    return save_atomic(state, directory / "checkpoint_best.pt")


# ---- pretraining -----------------------------------------------------------------------------------------------

def multistream_loss(model: MultiStreamUnitLM, batch, weights: Sequence[float] = (1.0, 0.5, 0.5)):
    """fairseq ``speech_unit_lm_criterion``: masked NLL for discrete streams, MAE for continuous ones, weighted
    sum, normalised by the number of input steps. Returns (loss, {"token": .., "duration": .., "f0": ..})."""
    import torch
    import torch.nn.functional as F

    out = model(batch.tokens, batch.durations, batch.f0, padding_mask=batch.padding_mask)
    n = (~batch.padding_mask).sum().clamp(min=1)

    def nll(pred, targ, mask):
        lp = F.log_softmax(pred.float(), dim=-1)
        safe = targ.masked_fill(mask, 0)
        loss = -lp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
        return (loss * (~mask)).sum()

    def mae(pred, targ, mask):
        return ((pred.squeeze(-1).float() - targ.float()).abs() * (~mask)).sum()

    cfg = model.cfg
    parts = {
        "token": nll(out["token"], batch.target, batch.mask),
        "duration": (nll if cfg.discrete_duration else mae)(out["duration"], batch.dur_target, batch.dur_mask),
        "f0": (nll if cfg.discrete_f0 else mae)(out["f0"], batch.f0_target, batch.f0_mask),
    }
    w = torch.tensor([float(x) for x in weights])
    total = sum(wi * p for wi, p in zip(w, parts.values()))
    return total / n, {k: float(v.detach() / n) for k, v in parts.items()}


def pretrain_multistream_lm(
    train: Sequence[tuple[Sequence[int], Sequence[int], Sequence]],
    cfg: MultiStreamLMConfig,
    out_dir: Path | str,
    *,
    valid: Sequence[tuple[Sequence[int], Sequence[int], Sequence]] | None = None,
    epochs: int = 20,
    lr: float = 5e-4,
    warmup_updates: int = 100,
    batch_size: int = 16,
    loss_weights: Sequence[float] = (1.0, 0.5, 0.5),
    seed: int = 0,
    device: str = "cpu",
    extra: dict | None = None,
    log: Callable[[str], Any] = print,
) -> Path:
    """Train an MS-TLM from scratch on (units, durations, F0) utterances and save the best-on-valid epoch.

    Recipe of the pGSLM README scaled down: Adam β=(0.9, 0.98), clip-norm 1.0, inverse-sqrt schedule with linear
    warm-up from 1e-7, dropout from ``cfg``. F0 is bin indices for a discrete-F0 config, normalised log-F0
    otherwise. Deterministic for a given seed on CPU."""
    import torch

    from bench.lms.multistream import collate_streams, encode_streams

    if not train:
        raise BenchError("pretrain_multistream_lm: no training utterances")
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    model = MultiStreamUnitLM(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-8)
    enc_train = [encode_streams(cfg, *row) for row in train]
    enc_valid = [encode_streams(cfg, *row) for row in (valid or [])]
    rng = random.Random(seed)
    step, best, best_epoch = 0, math.inf, 0

    def lr_at(s: int) -> float:
        if s < warmup_updates:
            return 1e-7 + (lr - 1e-7) * s / warmup_updates
        return lr * math.sqrt(warmup_updates / max(s, 1)) if warmup_updates else lr

    for epoch in range(1, epochs + 1):
        model.train()
        order = list(range(len(enc_train)))
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            batch = collate_streams(cfg, [enc_train[j] for j in order[i:i + batch_size]]).to(device)
            for g in opt.param_groups:
                g["lr"] = lr_at(step + 1)
            loss, _ = multistream_loss(model, batch, loss_weights)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
        model.eval()
        with torch.no_grad():
            rows = enc_valid or enc_train
            total, count, parts = 0.0, 0, {"token": 0.0, "duration": 0.0, "f0": 0.0}
            for i in range(0, len(rows), batch_size):
                batch = collate_streams(cfg, rows[i:i + batch_size]).to(device)
                loss, p = multistream_loss(model, batch, loss_weights)
                n = int((~batch.padding_mask).sum())
                total += float(loss) * n
                count += n
                for k in parts:
                    parts[k] += p[k] * n
        vloss = total / max(count, 1)
        log(f"ms-tlm epoch {epoch}: valid loss {vloss:.4f} "
            + " ".join(f"{k} {v / max(count, 1):.3f}" for k, v in parts.items()))
        if vloss < best:
            best, best_epoch = vloss, epoch
            path = save_multistream_lm(model.cpu(), out_dir, {
                "valid_loss": vloss, "loss_weights": list(loss_weights), "seed": seed, **(extra or {}),
            }, epoch=epoch, num_updates=step)
            model.to(device)
    log(f"ms-tlm: best epoch {best_epoch} (valid loss {best:.4f}) -> {path}")
    return path
