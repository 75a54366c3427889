"""Local pretrained-model files: where the user keeps them, checked before anything expensive runs.

bench never downloads a checkpoint. A user on a GPU machine downloads the published files once (URLs below) and
names them, per model, either in the user config file (``$BENCH_CONFIG``, else ``~/.config/bench/config.yaml``)::

    models:
      hubert_base: /ckpt/hubert_base_ls960.pt            # s3prl `hubert_local` upstream
      gslm_hubert_km100: /ckpt/gslm/hubert/km100/km.bin   # GSLM k-means quantizer
      gslm_hubert100_lm: /ckpt/gslm/hubert100_lm          # dir with checkpoint_best.pt + dict.txt
      my_lm: {kind: ulm_dir, path: ../my_lm}              # any other name needs its kind

or with an environment variable ``BENCH_MODEL_<NAME>`` (name upper-cased, ``-`` → ``_``), which wins over the file.
Relative paths in the config file are relative to the file; ``~`` and ``$VARS`` are expanded.

``resolve_model(name)`` checks that the expected files exist (cheap); ``verify_model`` also opens them and checks
their content against what the published model is (k-means 100 × 768, unit LM vocabulary 4 + 100, ...), so a
wrong file fails in seconds, not after hours of feature extraction.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.core.errors import BenchError

ENV_CONFIG = "BENCH_CONFIG"
ENV_PREFIX = "BENCH_MODEL_"
FAIRSEQ_SPECIALS = 4  # <s> <pad> </s> <unk> precede the units in a fairseq Dictionary (token id = index + 4)


class ModelConfigError(BenchError):
    """A model is not configured, or its configured path does not hold the expected files."""


# ---------------------------------------------------------------------------------------------------------------
# kinds of model files: what is expected on disk, and how to check the content
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelKind:
    name: str
    expects: str  # shown in errors: what the path must be
    files: Callable[[Path], dict[str, Path]]  # required files (role → path) for a configured path


def _single_file(suffixes: tuple[str, ...] = ()) -> Callable[[Path], dict[str, Path]]:
    def files(path: Path) -> dict[str, Path]:
        if path.is_dir():
            raise _Mismatch("is a directory; expected a file")
        if suffixes and not path.name.endswith(suffixes):
            raise _Mismatch(f"does not end with {' or '.join(suffixes)}")
        return {"file": path}

    return files


def _ulm_files(path: Path) -> dict[str, Path]:
    """A GSLM unit-LM directory (as extracted from ``hubert100_lm.tgz``), or its ``checkpoint_best.pt``."""
    directory = path.parent if path.is_file() else path
    ckpt = path if path.is_file() else directory / "checkpoint_best.pt"
    out = {"checkpoint": ckpt, "dict": directory / "dict.txt"}
    for role, p in out.items():
        if not p.is_file():
            raise _Mismatch(f"has no {p.name} (looked for {p})")
    return out


def _hf_files(path: Path) -> dict[str, Path]:
    if not path.is_dir():
        raise _Mismatch("is not a directory; expected a transformers model directory (save_pretrained output)")
    config = path / "config.json"
    if not config.is_file():
        raise _Mismatch(f"has no config.json (looked for {config})")
    for weights in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                    "pytorch_model.bin.index.json"):
        if (path / weights).is_file():
            return {"config": config, "weights": path / weights}
    raise _Mismatch("has no model.safetensors or pytorch_model.bin")


KINDS: dict[str, ModelKind] = {
    k.name: k
    for k in [
        ModelKind("ulm_dir", "a GSLM unit-LM directory holding checkpoint_best.pt and dict.txt", _ulm_files),
        ModelKind("kmeans", "a k-means quantizer file (joblib-pickled sklearn KMeans, GSLM's km.bin)",
                  _single_file()),
        ModelKind("fairseq_checkpoint", "a fairseq checkpoint file (*.pt)", _single_file((".pt",))),
        ModelKind("f0_bins", "a torch file of F0 quantization bin edges (*.th / *.pt)", _single_file((".th", ".pt"))),
        ModelKind("s3prl_checkpoint", "an upstream checkpoint for an s3prl *_local name: s3prl-converted or "
                  "original fairseq (*.pt)", _single_file((".pt", ".ckpt"))),
        ModelKind("hf_dir", "a transformers model directory (config.json + model.safetensors or pytorch_model.bin)",
                  _hf_files),
    ]
}


class _Mismatch(Exception):
    """Internal: a path exists but is not what its kind expects (turned into ModelConfigError with context)."""


# ---------------------------------------------------------------------------------------------------------------
# the models bench knows by name: the published checkpoints of the SpeechPrompt setup
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KnownModel:
    name: str
    kind: str
    description: str
    get: str  # where the published file comes from (the user downloads it; bench never does)
    expect: dict[str, Any] = field(default_factory=dict)  # content checked by verify_model
    used_by: str = ""


_FB = "https://dl.fbaipublicfiles.com"
KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in [
        KnownModel("hubert_base", "s3prl_checkpoint", "HuBERT Base (LibriSpeech 960 h), fairseq or s3prl-converted",
                   f"{_FB}/hubert/hubert_base_ls960.pt (fairseq) or "
                   "https://huggingface.co/s3prl/converted_ckpts/resolve/main/hubert_base_ls960.pt (s3prl-converted)",
                   used_by="upstream hubert_local (baselines; layer 6 feeds the GSLM k-means)"),
        KnownModel("hubert_base_hf", "hf_dir", "HuBERT Base (LibriSpeech 960 h), transformers format",
                   "the facebook/hubert-base-ls960 repository (config.json + weights), copied to a local directory",
                   expect={"model_type": "hubert", "hidden_size": 768, "num_hidden_layers": 12},
                   used_by="upstream hf_hubert"),
        KnownModel("gslm_hubert_km100", "kmeans", "GSLM k-means, 100 units on HuBERT Base layer 6",
                   f"{_FB}/textless_nlp/gslm/hubert/km100/km.bin",
                   expect={"n_clusters": 100, "dim": 768}, used_by="speech-to-units for prompt-gslm / prompt-pgslm"),
        KnownModel("gslm_hubert100_lm", "ulm_dir", "GSLM unit LM (transformer_lm_big) on HuBERT-100 units",
                   f"{_FB}/textless_nlp/gslm/hubert/lm_km100/hubert100_lm.tgz (extract; keep checkpoint_best.pt "
                   "and dict.txt together)",
                   expect={"units": 100, "layers": 12, "embed_dim": 1024, "unit_order": "numeric"},
                   used_by="prompt-gslm, prompt-gslm-lv"),
        KnownModel("gslm_cpc_km100", "kmeans", "GSLM k-means, 100 units on modified CPC (cpc_big_ll6kh_top_ctc)",
                   f"{_FB}/textless_nlp/gslm/cpc/km100/km.bin", expect={"n_clusters": 100},
                   used_by="SpeechPrompt v1 CPC rows"),
        KnownModel("gslm_cpc100_lm", "ulm_dir", "GSLM unit LM on CPC-100 units (dict.txt in frequency order)",
                   f"{_FB}/textless_nlp/gslm/cpc/lm_km100/cpc100_lm.tgz",
                   expect={"units": 100, "layers": 12, "embed_dim": 1024}, used_by="SpeechPrompt v1 CPC rows"),
        KnownModel("pgslm_ms_tlm", "fairseq_checkpoint", "pGSLM multi-stream unit LM (MS-TLM, transformer_ulm_big)",
                   f"{_FB}/textless_nlp/pgslm/ulm_checkpoints/discrete_prosody_shift_1_1.pt (or one of the other "
                   "three published variants; SpeechPrompt v2 does not say which it used)",
                   expect={"layers": 12, "embed_dim": 1024}, used_by="prompt-pgslm, prompt-pgslm-lv"),
        KnownModel("pgslm_f0_bins", "f0_bins", "pGSLM F0 quantization bins (32 bins, mean-normalised log F0)",
                   f"{_FB}/textless_nlp/pgslm/vocoder/blizzard2013/mean_norm_log_f0_seg_bin.th",
                   expect={"bins": 32},
                   used_by="prosody streams of prompt-pgslm with a discrete-F0 checkpoint"),
    ]
}


# ---------------------------------------------------------------------------------------------------------------
# the user config file
# ---------------------------------------------------------------------------------------------------------------
def user_config_path() -> Path:
    """``$BENCH_CONFIG`` if set, else ``~/.config/bench/config.yaml`` (which may not exist)."""
    env = os.environ.get(ENV_CONFIG)
    return Path(env).expanduser() if env else Path("~/.config/bench/config.yaml").expanduser()


def read_user_config() -> tuple[dict, Path | None]:
    """The whole user config (``{}`` if there is no file) and the file it came from."""
    path = user_config_path()
    if not path.is_file():
        if os.environ.get(ENV_CONFIG):
            raise ModelConfigError(f"${ENV_CONFIG} names {path}, which does not exist")
        return {}, None
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ModelConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}, path
    if not isinstance(data, dict):
        raise ModelConfigError(f"{path}: expected a mapping of sections (models:, corpora:, ...), "
                               f"got {type(data).__name__}")
    return data, path


def _models_section() -> tuple[dict[str, Any], Path | None]:
    data, path = read_user_config()
    section = data.get("models") or {}
    if not isinstance(section, dict):
        raise ModelConfigError(f"{path}: 'models:' must map model names to paths, got {type(section).__name__}")
    return {normalize_name(k): v for k, v in section.items()}, path


def normalize_name(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def env_var(name: str) -> str:
    return ENV_PREFIX + normalize_name(name).upper()


# ---------------------------------------------------------------------------------------------------------------
# resolution
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResolvedModel:
    name: str
    kind: str
    path: Path  # what the user configured, resolved to an absolute path
    files: dict[str, Path]  # role → file (checkpoint, dict, file, config, weights)
    origin: str  # "$BENCH_MODEL_X" or "<config file>: models.x", named in later errors
    info: dict[str, Any] = field(default_factory=dict)  # filled by verify_model

    @property
    def file(self) -> Path:
        """The main file (the checkpoint for an LM dir, the weights for a transformers dir)."""
        for role in ("file", "checkpoint", "weights"):
            if role in self.files:
                return self.files[role]
        raise KeyError(self.name)


def _lookup(name: str) -> tuple[str, str | None, str | None, Path | None]:
    """(raw path, kind given in the config or None, origin, base dir for relative paths)."""
    key = normalize_name(name)
    env = os.environ.get(env_var(key))
    section, cfg_path = _models_section()
    if env:
        return env, None, f"${env_var(key)}", Path.cwd()
    if key in section:
        entry = section[key]
        origin = f"{cfg_path}: models.{key}"
        if isinstance(entry, str):
            return entry, None, origin, cfg_path.parent if cfg_path else None
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            extra = set(entry) - {"path", "kind"}
            if extra:
                raise ModelConfigError(f"{origin}: unexpected keys {sorted(extra)}; expected 'path' and 'kind'")
            return entry["path"], entry.get("kind"), origin, cfg_path.parent if cfg_path else None
        raise ModelConfigError(f"{origin}: expected a path, or a mapping with 'path' (and 'kind'), got {entry!r}")
    return "", None, None, None


def configured_models() -> dict[str, str]:
    """Every model name configured (config file or environment) → where it is configured."""
    section, cfg_path = _models_section()
    out = {k: f"{cfg_path}: models.{k}" for k in section}
    for var in os.environ:
        if var.startswith(ENV_PREFIX) and os.environ[var]:
            out[var[len(ENV_PREFIX):].lower()] = f"${var}"
    return dict(sorted(out.items()))


def resolve_model(name: str, kind: str | None = None, verify: bool = False) -> ResolvedModel:
    """The configured files for model ``name``; BenchError naming the key, the path and the expected files.

    ``kind`` is required for names bench does not know (or given in the config entry); for known names it must
    agree. ``verify=True`` also opens the files (see :func:`verify_model`).
    """
    key = normalize_name(name)
    known = KNOWN_MODELS.get(key)
    raw, cfg_kind, origin, base = _lookup(key)
    kinds = [k for k in (kind, cfg_kind, known.kind if known else None) if k]
    for k in kinds:
        if k not in KINDS:
            raise ModelConfigError(f"model '{key}': unknown kind '{k}'{_did_you_mean(k, KINDS)}; "
                                   f"expected one of {', '.join(KINDS)}")
    if len(set(kinds)) > 1:
        raise ModelConfigError(f"model '{key}' ({origin or 'not configured'}): kind {', '.join(sorted(set(kinds)))} "
                               "disagree" + (f"; '{key}' is a {known.kind}" if known else ""))
    if origin is None:
        raise ModelConfigError(_not_configured_message(key, kinds[0] if kinds else None, known),
                               hint="bench never downloads checkpoints; see docs/real-checkpoints.md")
    if not kinds:
        raise ModelConfigError(f"{origin}: '{key}' is not a model bench knows{_did_you_mean(key, KNOWN_MODELS)}; "
                               f"give its kind ({', '.join(KINDS)}) as models.{key}: {{kind: ..., path: ...}}")
    mk = KINDS[kinds[0]]
    path = Path(os.path.expandvars(raw)).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    path = path.resolve()
    if not path.exists():
        raise ModelConfigError(f"{origin} points to {path}, which does not exist; expected {mk.expects}",
                               hint=f"download: {known.get}" if known else None)
    try:
        files = mk.files(path)
    except _Mismatch as err:
        raise ModelConfigError(f"{origin} points to {path}, which {err}; expected {mk.expects}",
                               hint=f"download: {known.get}" if known else None) from None
    resolved = ResolvedModel(key, mk.name, path, files, origin)
    return verify_model(resolved) if verify else resolved


def _not_configured_message(key: str, kind: str | None, known: KnownModel | None) -> str:
    cfg = user_config_path()
    what = KINDS[kind].expects if kind else "the model file or directory"
    msg = (f"model '{key}' is not configured: set models.{key} in {cfg} or ${env_var(key)} to {what}")
    if known:
        msg += f"\n  {known.description}; get it from {known.get}"
    elif not kind:
        msg += f"{_did_you_mean(key, KNOWN_MODELS)}; known models: {', '.join(KNOWN_MODELS)}"
    return msg


def _did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


# ---------------------------------------------------------------------------------------------------------------
# content checks (open the files; still far cheaper than a wasted run)
# ---------------------------------------------------------------------------------------------------------------
def verify_model(model: ResolvedModel) -> ResolvedModel:
    """Open the files and check them against the kind (and the published model's shape, for known names).

    Returns a copy with ``info`` filled (e.g. ``{"n_clusters": 100, "dim": 768}``); raises ModelConfigError
    naming the origin, the file and the mismatch.
    """
    check = _VERIFY[model.kind]
    try:
        info = check(model)
    except _Mismatch as err:
        raise ModelConfigError(f"{model.origin}: {err}") from None
    known = KNOWN_MODELS.get(model.name)
    if known:
        for k, want in known.expect.items():
            if k in info and info[k] != want:
                raise ModelConfigError(
                    f"{model.origin}: {model.file if k != 'units' else model.files.get('dict', model.file)} has "
                    f"{k}={info[k]!r}, but {model.name} ({known.description}) has {k}={want!r}",
                    hint=f"the published file: {known.get}")
    return ResolvedModel(model.name, model.kind, model.path, model.files, model.origin, info)


def _torch_load(path: Path) -> Any:
    """The file through bench's safe loader (no code from it runs; bench.core.safe_load)."""
    from bench.core.safe_load import torch_load

    try:
        return torch_load(path, mmap=True)
    except BenchError:
        raise
    except Exception as err:
        raise _Mismatch(f"{path} cannot be read by torch.load: {type(err).__name__}: {err}") from None


def _read_fairseq_dict(path: Path) -> list[str]:
    """Symbols of a fairseq ``dict.txt`` (``<symbol> <count>`` per line), in file order."""
    symbols = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 or not parts[-1].lstrip("-").isdigit() and parts[-1] != "#fairseq:overwrite":
            raise _Mismatch(f"{path}, line {i}: expected '<symbol> <count>', got {line!r}")
        symbols.append(parts[0])
    if not symbols:
        raise _Mismatch(f"{path} is empty")
    return symbols


def _decoder_shape(state: dict, path: Path) -> dict[str, Any]:
    if not isinstance(state, dict) or "model" not in state:
        raise _Mismatch(f"{path} is not a fairseq checkpoint (no 'model' entry; keys: {_keys(state)})")
    if "cfg" not in state and "args" not in state:
        raise _Mismatch(f"{path} is not a fairseq checkpoint (neither 'cfg' nor 'args'; keys: {_keys(state)})")
    weights = state["model"]
    emb = weights.get("decoder.embed_tokens.weight")
    if emb is None:
        raise _Mismatch(f"{path} has no decoder.embed_tokens.weight: not a fairseq (unit) language model")
    layers = {int(m.group(1)) for k in weights if (m := re.match(r"decoder\.layers\.(\d+)\.", k))}
    return {"vocab_rows": int(emb.shape[0]), "embed_dim": int(emb.shape[1]), "layers": len(layers)}


def _keys(obj: Any) -> str:
    return ", ".join(sorted(map(str, obj))[:8]) if isinstance(obj, dict) else type(obj).__name__


def _verify_ulm(model: ResolvedModel) -> dict[str, Any]:
    symbols = _read_fairseq_dict(model.files["dict"])
    info = _decoder_shape(_torch_load(model.files["checkpoint"]), model.files["checkpoint"])
    units = len(symbols)
    rows = info["vocab_rows"]
    # fairseq pads the dictionary to a multiple of 8 with madeupwordNNNN symbols
    if not (FAIRSEQ_SPECIALS + units <= rows < FAIRSEQ_SPECIALS + units + 8):
        raise _Mismatch(f"{model.files['checkpoint']} has {rows} embedding rows but {model.files['dict']} lists "
                        f"{units} symbols (+{FAIRSEQ_SPECIALS} specials): checkpoint and dict.txt do not belong "
                        "together")
    numeric = symbols == [str(i) for i in range(units)]
    return {**info, "units": units, "unit_order": "numeric" if numeric else "file-order",
            "symbols_are_integers": all(s.isdigit() for s in symbols)}


def _verify_fairseq(model: ResolvedModel) -> dict[str, Any]:
    info = _decoder_shape(_torch_load(model.file), model.file)
    return info


def _verify_kmeans(model: ResolvedModel) -> dict[str, Any]:
    from bench.core.safe_load import UnsafeModelFileError
    from bench.units.kmeans import read_sklearn_centers

    try:
        centers, cls_name = read_sklearn_centers(model.file)
    except UnsafeModelFileError:
        raise
    except BenchError as err:
        raise _Mismatch(err.message) from None
    return {"n_clusters": int(centers.shape[0]), "dim": int(centers.shape[1]), "class": cls_name}


def _verify_f0_bins(model: ResolvedModel) -> dict[str, Any]:
    import torch

    obj = _torch_load(model.file)
    # pGSLM's quantize_f0.py saves {n_bins: numpy edges} (fairseq examples/textless_nlp/pgslm/quantize_f0.py:44-74,
    # read back by naive_decoder.py:14-15); a bare 1-D tensor of edges is accepted too
    entries = obj if isinstance(obj, dict) else {None: obj}
    info: dict[str, Any] = {}
    for n, bins in entries.items():
        bins = torch.as_tensor(bins.numpy() if isinstance(bins, torch.Tensor) else bins)
        if bins.ndim != 1:
            raise _Mismatch(f"{model.file} should hold 1-D bin edges ({{n_bins: edges}} or a tensor), got "
                            f"shape {tuple(bins.shape)}")
        if bool((bins[1:] < bins[:-1]).any()):
            raise _Mismatch(f"{model.file}: bin edges are not sorted")
        if n is not None and int(bins.numel()) != int(n) - 1:
            raise _Mismatch(f"{model.file}: entry {n} has {bins.numel()} edges, expected {int(n) - 1}")
        info = {"edges": int(bins.numel()), "bins": int(bins.numel()) + 1}
    if isinstance(obj, dict):
        info["bins"] = max(int(n) for n in obj) if obj else 0
    return info


def _verify_s3prl(model: ResolvedModel) -> dict[str, Any]:
    state = _torch_load(model.file)
    if isinstance(state, dict) and {"task_cfg", "model_cfg", "model_weight"} <= set(state):
        return {"format": "s3prl-converted"}
    if isinstance(state, dict) and "model" in state and ("cfg" in state or "args" in state):
        return {"format": "fairseq"}  # s3prl needs extra_conf={"fairseq": True} (and fairseq installed)
    raise _Mismatch(f"{model.file} is neither an s3prl-converted checkpoint (task_cfg, model_cfg, model_weight) "
                    f"nor a fairseq one (model + cfg/args); keys: {_keys(state)}")


def _verify_hf(model: ResolvedModel) -> dict[str, Any]:
    try:
        cfg = json.loads(model.files["config"].read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise _Mismatch(f"{model.files['config']} is not valid JSON: {err}") from None
    return {k: cfg.get(k) for k in ("model_type", "hidden_size", "num_hidden_layers")}


_VERIFY: dict[str, Callable[[ResolvedModel], dict[str, Any]]] = {
    "ulm_dir": _verify_ulm,
    "kmeans": _verify_kmeans,
    "fairseq_checkpoint": _verify_fairseq,
    "f0_bins": _verify_f0_bins,
    "s3prl_checkpoint": _verify_s3prl,
    "hf_dir": _verify_hf,
}


def model_status(verify: bool = False) -> list[dict[str, Any]]:
    """One row per known or configured model: name, kind, where configured, ok, and the problem if any.

    Meant for a ``bench models`` listing and for failing fast before a run.
    """
    rows = []
    configured = configured_models()
    for name in dict.fromkeys([*KNOWN_MODELS, *configured]):
        known = KNOWN_MODELS.get(name)
        row = {"name": name, "kind": known.kind if known else "", "configured": configured.get(name, ""),
               "path": "", "ok": False, "problem": ""}
        try:
            r = resolve_model(name, verify=verify)
            row.update(kind=r.kind, path=str(r.path), ok=True, info=r.info)
        except BenchError as err:
            row["problem"] = err.message.splitlines()[0]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# upstream names → configured checkpoints (so `--upstream hubert_local` needs no --upstream-path)
# ---------------------------------------------------------------------------------------------------------------
UPSTREAM_MODELS = {"hubert_local": "hubert_base", "hf_hubert": "hubert_base_hf"}


def upstream_checkpoint(upstream: str, explicit: str | None = None) -> str | None:
    """The checkpoint path for an upstream: ``--upstream-path`` if given, else the configured model, else None.

    Weight-free upstreams (fbank, mfcc...) and names bench has no model entry for return None.
    """
    if explicit:
        return explicit
    name = UPSTREAM_MODELS.get(upstream)
    if name is None:
        return None
    return str(resolve_model(name).path)
