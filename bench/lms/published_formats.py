"""Writers of the published model files' formats, with random weights: for rehearsing a published recipe end to
end (``benchmarks/rehearsal_published.py``, ``tests/test_rehearsal_published.py``) without the real downloads.

Each writes what the published download holds, in its layout and (``shape="published"``) its shape, so bench's
checks (:func:`bench.core.model_paths.verify_model`) and loaders read it as they would the real file:

- GSLM unit LM (``hubert100_lm.tgz``): fairseq ``transformer_lm_big`` (12 × 1024, 16 heads, FFN 4096)
  ``checkpoint_best.pt`` + ``dict.txt`` with the units ``0``..``99`` (4 + 100 rows);
- GSLM k-means (``km100/km.bin``): a joblib-pickled scikit-learn ``MiniBatchKMeans``, 100 × 768 centres;
- HuBERT Base (``hubert_base_ls960.pt``, s3prl-converted): ``task_cfg``, ``model_cfg``, ``model_weight``,
  ``dictionaries_symbols``, loadable by s3prl's ``hubert_local`` upstream;
- pGSLM MS-TLM (``discrete_prosody_shift_1_1.pt``): fairseq ``transformer_ulm_big``, discrete duration and F0
  (32 bins), stream shifts 1,1;
- pGSLM F0 bins (``mean_norm_log_f0_seg_bin.th``): ``{32: 31 edges}`` as fairseq's
  ``examples/textless_nlp/pgslm/quantize_f0.py`` saves them (``torch.save`` of a dict of numpy arrays).

``shape="tiny"`` writes the same formats at a size a CPU test runs in seconds (the LM 2 × 64; HuBERT 6 layers of
768 so that layer 6 and the 768-dim k-means still fit); the published-shape checks then refuse them, as they should.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

Shape = Literal["published", "tiny"]
UNITS = 100
HUBERT_DIM = 768
F0_BINS = 32


def write_gslm_ulm(directory: Path, shape: Shape = "published", seed: int = 0) -> Path:
    """``checkpoint_best.pt`` + ``dict.txt`` of a GSLM HuBERT-100 unit LM; returns the directory."""
    import torch

    from bench.lms.checkpoint import save_unit_lm
    from bench.lms.model import UnitDictionary, UnitLanguageModel, UnitLMConfig

    torch.manual_seed(seed)
    cfg = (UnitLMConfig.transformer_lm_big(4 + UNITS) if shape == "published"
           else UnitLMConfig(vocab_size=4 + UNITS, num_layers=2, embed_dim=64, num_heads=4, ffn_dim=128))
    model = UnitLanguageModel(cfg, UnitDictionary([str(i) for i in range(UNITS)]))
    save_unit_lm(model, Path(directory), {"epoch": 46})  # SpeechPrompt's sign of a loaded LM: epoch 46
    return Path(directory)


def write_gslm_kmeans(path: Path, seed: int = 0) -> Path:
    """``km.bin``: a fitted ``MiniBatchKMeans`` with 100 centres of dimension 768 (joblib), as GSLM's."""
    import joblib
    import numpy as np
    from sklearn.cluster import MiniBatchKMeans

    x = np.random.default_rng(seed).normal(size=(4 * UNITS, HUBERT_DIM)).astype(np.float32)
    km = MiniBatchKMeans(n_clusters=UNITS, n_init=1, max_iter=2, batch_size=4 * UNITS, random_state=seed).fit(x)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(km, path)
    return path


def write_hubert_base(path: Path, shape: Shape = "published", seed: int = 0) -> Path:
    """An s3prl-converted HuBERT Base checkpoint (what ``s3prl/converted_ckpts/hubert_base_ls960.pt`` holds)."""
    import dataclasses

    import torch
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

    torch.manual_seed(seed)
    model_kw = {"label_rate": 50.0}
    if shape == "tiny":
        model_kw.update(encoder_layers=6, encoder_ffn_embed_dim=256, conv_pos=16)
    model_cfg = HubertConfig(**model_kw)
    task_cfg = HubertPretrainingConfig(label_rate=50.0, normalize=False)
    symbols = [["<s>", "<pad>", "</s>", "<unk>", *(str(i) for i in range(500))]]  # HuBERT iteration 2: 500
    model = HubertModel(model_cfg, task_cfg, symbols)
    state = {"task_cfg": _plain(dataclasses.asdict(task_cfg)), "model_cfg": _plain(dataclasses.asdict(model_cfg)),
             "model_weight": model.state_dict(), "dictionaries_symbols": symbols}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def _plain(d: dict) -> dict:
    """Config dicts with enums as their values (s3prl's loader merges them into its dataclasses)."""
    import enum

    return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in d.items()}


def write_pgslm_ms_tlm(path: Path, shape: Shape = "published", seed: int = 0) -> Path:
    """A released-style MS-TLM file (``discrete_prosody_shift_1_1.pt``: one ``.pt``, no bench entries)."""
    import tempfile

    import torch

    from bench.lms.multistream import MultiStreamLMConfig, MultiStreamUnitLM
    from bench.lms.multistream_checkpoint import save_multistream_lm

    torch.manual_seed(seed)
    kw = {"num_units": UNITS, "discrete_duration": True, "discrete_f0": True, "f0_bins": F0_BINS,
          "stream_shifts": (1, 1)}
    cfg = (MultiStreamLMConfig.transformer_ulm_big(**kw) if shape == "published"
           else MultiStreamLMConfig(num_layers=2, embed_dim=64, num_heads=4, ffn_dim=128, **kw))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        ckpt = save_multistream_lm(MultiStreamUnitLM(cfg), tmp, epoch=46)
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
    state.pop("bench", None)  # fairseq's own file has no bench entries
    torch.save(state, path)
    return path


def write_pgslm_f0_bins(path: Path, seed: int = 0) -> Path:
    """``mean_norm_log_f0_seg_bin.th``: ``{32: 31 sorted edges}`` of mean-normalised log F0 (numpy float64)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    edges = np.sort(rng.normal(0.0, 0.25, size=F0_BINS - 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({F0_BINS: edges}, path)
    return path


def write_published_models(root: Path, shape: Shape = "published") -> dict[str, Path]:
    """Every model a published recipe names, under ``root`` in the download's file names → {model name: path}."""
    root = Path(root)
    return {
        "hubert_base": write_hubert_base(root / "hubert_base_ls960.pt", shape),
        "gslm_hubert_km100": write_gslm_kmeans(root / "gslm" / "hubert" / "km100" / "km.bin"),
        "gslm_hubert100_lm": write_gslm_ulm(root / "gslm" / "hubert100_lm", shape),
        "pgslm_ms_tlm": write_pgslm_ms_tlm(root / "pgslm" / "discrete_prosody_shift_1_1.pt", shape),
        "pgslm_f0_bins": write_pgslm_f0_bins(root / "pgslm" / "mean_norm_log_f0_seg_bin.th"),
    }
