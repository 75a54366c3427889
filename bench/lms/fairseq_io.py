"""fairseq checkpoint I/O both unit LMs share (the GSLM ULM, :mod:`bench.lms.checkpoint`; the pGSLM MS-TLM,
:mod:`bench.lms.multistream_checkpoint`): reading, the config sections, the required-settings check, the strict
weight mapping, the training position, content hashes and atomic writes. Each LM's module keeps only what is its
own (architectures, which settings it implements, how the config maps to its shape)."""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

from bench.core.errors import BenchError


# decoder settings neither LM implements otherwise (fairseq's defaults): both checkpoint modules refuse the rest
DECODER_REQUIRED = {
    "decoder_learned_pos": False,
    "no_token_positional_embeddings": False,
    "no_scale_embedding": False,
    "layernorm_embedding": False,
    "adaptive_input": False,
    "no_decoder_final_norm": False,
    "character_embeddings": False,
    "cross_self_attention": False,
    "quant_noise_pq": 0,
    "quant_noise_scalar": 0,
}


def sha1_of(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_checkpoint_state(path: Path, what: str = "unit LM") -> tuple[dict, bool]:
    """(``torch.load`` of a fairseq checkpoint, whether it loaded with the safe globals alone). Loading never runs
    code from the file (:mod:`bench.core.safe_load`): one that needs more is refused unless ``--trust-model-files``."""
    from bench.core.safe_load import torch_load_checked

    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{what} checkpoint not found: {path} (expected a fairseq checkpoint_best.pt)")
    try:
        state, safe = torch_load_checked(path)
    except BenchError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure here means "not a readable checkpoint"
        raise BenchError(f"{path}: not a readable PyTorch checkpoint ({err})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise BenchError(f"{path}: no 'model' state dict; expected a fairseq checkpoint (checkpoint_best.pt)")
    return state, safe


def as_dict(obj) -> dict:
    if obj is None:
        return {}
    if isinstance(obj, argparse.Namespace):
        return dict(vars(obj))
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(obj, DictConfig):
            return dict(OmegaConf.to_container(obj, resolve=False))
    except ImportError:  # pragma: no cover - omegaconf ships with fairseq; plain dicts need nothing
        pass
    if isinstance(obj, dict):
        return dict(obj)
    raise BenchError(f"unsupported fairseq config section of type {type(obj).__name__}")


def model_settings(state: dict, path: Path) -> tuple[dict, dict]:
    """(model settings, task settings) from a hydra ``cfg`` or a legacy ``args`` Namespace."""
    if state.get("cfg") is not None:
        cfg = as_dict(state["cfg"])
        if cfg.get("model") is None:
            raise BenchError(f"{path}: 'cfg' has no 'model' section; expected a fairseq checkpoint")
        return as_dict(cfg["model"]), as_dict(cfg.get("task"))
    if state.get("args") is not None:
        a = as_dict(state["args"])
        return a, a
    raise BenchError(f"{path}: neither 'cfg' nor 'args' found; expected a fairseq checkpoint (checkpoint_best.pt)")


def check_required(model: dict, required: dict, path, what: str) -> None:
    """Refuse a setting whose value makes fairseq compute something bench's ``what`` does not."""
    for key, want in required.items():
        got = model.get(key, want)
        if got is None:
            got = want
        if bool(got) != bool(want):
            raise BenchError(f"{path}: model setting {key}={got} is not supported (bench's {what} implements "
                             f"{key}={want})")


def training_position(state: dict) -> tuple[int | None, int | None]:
    """(epoch, num_updates) fairseq-train recorded: a restored LM resumes at its epoch (v2 ``README.md:10-16``)."""
    extra = state.get("extra_state") or {}
    itr = extra.get("train_iterator") or {}
    epoch = itr.get("epoch") if isinstance(itr, dict) else None
    history = state.get("optimizer_history") or []
    updates = history[-1].get("num_updates") if history and isinstance(history[-1], dict) else None
    return (int(epoch) if epoch is not None else None, int(updates) if updates is not None else None)


def _short(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f" … (+{len(items) - n} more)" if len(items) > n else "")


def strict_weights(weights: dict, expected: dict, ignored, path, what: str) -> dict:
    """``decoder.*`` weights mapped to the model's names; every expected weight present with its shape and every
    tensor in the file used (or ``ignored``), else an error naming the keys (never ``strict=False``: a partial
    load leaves random weights, SpeechPrompt issue #6). ``expected``: model name → shape."""
    mapped, unexpected, mismatched = {}, [], []
    for key, tensor in weights.items():
        if key in ignored:
            continue
        name = key[len("decoder."):] if key.startswith("decoder.") else None
        if name is None or name not in expected:
            unexpected.append(key)
        elif tuple(expected[name]) != tuple(tensor.shape):
            mismatched.append(f"{key}: file {tuple(tensor.shape)} vs model {tuple(expected[name])}")
        else:
            mapped[name] = tensor
    bad = {m.split(":")[0][len("decoder."):] for m in mismatched}
    missing = [f"decoder.{k}" for k in expected if k not in mapped and k not in bad]
    problems = [f"{label} {_short(keys)}" for label, keys in (("missing weights", missing),
                                                               ("unexpected weights", unexpected),
                                                               ("shape mismatches", mismatched)) if keys]
    if problems:
        raise BenchError(f"{path}: refusing a partial load of the {what}: " + "; ".join(problems),
                         hint="a non-strict load would leave randomly initialised weights (SpeechPrompt issue #6)")
    return mapped


def save_atomic(state: dict, out: Path) -> Path:
    """``torch.save`` to a temporary name beside ``out``, then rename (readers never see a partial file; a full
    disk is one line naming ``out``: bench.data.manifest.save_torch_atomic)."""
    from bench.data.manifest import save_torch_atomic

    save_torch_atomic(state, out, what="checkpoint")
    return out


_WEIGHTS_SHA256: dict[tuple, str] = {}


def checkpoint_weights_sha256(path: Path) -> str:
    """sha256 over a fairseq checkpoint's weights (sorted names, dtypes, shapes, bytes): a unit LM's identity in
    result records. Unlike the file's hash it is the same for two bit-identical trainings (the file also holds
    the training time); memoised per process by (path, size, mtime)."""
    import torch

    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _WEIGHTS_SHA256:
        h = hashlib.sha256()
        for name, t in sorted(read_checkpoint_state(path)[0]["model"].items()):
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        _WEIGHTS_SHA256[key] = h.hexdigest()
    return _WEIGHTS_SHA256[key]
