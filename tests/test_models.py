"""Local checkpoints are found from the user config or BENCH_MODEL_*, and a wrong file fails before any run.

The artefacts are built in their real formats: a fairseq transformer_lm checkpoint + dict.txt, a joblib-pickled
sklearn k-means, a transformers HuBERT directory, a torch tensor of F0 bin edges.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.core.errors import BenchError
from bench.core.model_paths import (
    KNOWN_MODELS,
    configured_models,
    env_var,
    model_status,
    resolve_model,
)


@pytest.fixture(autouse=True)
def isolated_config(tmp_path, monkeypatch, bench_home):
    """No user config and no BENCH_MODEL_* from the machine running the tests."""
    for var in list(os.environ):
        if var.startswith("BENCH_MODEL_"):
            monkeypatch.delenv(var)
    cfg = tmp_path / "config.yaml"
    monkeypatch.setenv("BENCH_CONFIG", str(cfg))
    cfg.write_text("", encoding="utf-8")
    return cfg


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def fairseq_unit_lm(directory: Path, units: int = 100, dict_units: int | None = None, layers: int = 2) -> Path:
    """A tiny GSLM-style unit LM saved the way fairseq saves one: checkpoint_best.pt (cfg + model) and dict.txt."""
    from fairseq import checkpoint_utils
    from fairseq.data import Dictionary
    from fairseq.models.transformer_lm import TransformerLanguageModel, TransformerLanguageModelConfig
    from omegaconf import OmegaConf

    def dictionary(n):
        d = Dictionary()
        for i in range(n):
            d.add_symbol(str(i), n=1000 - i)
        return d

    d = dictionary(units)
    cfg = TransformerLanguageModelConfig(decoder_layers=layers, decoder_embed_dim=16, decoder_ffn_embed_dim=32,
                                         decoder_attention_heads=2, share_decoder_input_output_embed=True,
                                         decoder_normalize_before=True, max_target_positions=64)
    model = TransformerLanguageModel.build_model(cfg, SimpleNamespace(source_dictionary=d, target_dictionary=d))
    model_cfg = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
    model_cfg["_name"] = "transformer_lm"
    state = {"cfg": OmegaConf.create({"model": model_cfg, "task": {"_name": "language_modeling"}}),
             "model": model.state_dict(), "optimizer_history": [], "extra_state": {}}
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint_utils.torch_persistent_save(state, str(directory / "checkpoint_best.pt"))
    dictionary(units if dict_units is None else dict_units).save(str(directory / "dict.txt"))
    return directory


def kmeans_file(path: Path, n_clusters: int, dim: int) -> Path:
    import joblib
    import numpy as np
    from sklearn.cluster import KMeans

    x = np.random.default_rng(0).normal(size=(2 * n_clusters, dim)).astype(np.float32)
    km = KMeans(n_clusters=n_clusters, n_init=1, max_iter=5, random_state=0).fit(x)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(km, path)
    return path


def test_not_configured_names_the_config_key_the_env_var_and_the_download(isolated_config):
    with pytest.raises(BenchError) as err:
        resolve_model("gslm_hubert100_lm")
    msg = str(err.value)
    assert "models.gslm_hubert100_lm" in msg and str(isolated_config) in msg
    assert "$BENCH_MODEL_GSLM_HUBERT100_LM" in msg and "checkpoint_best.pt and dict.txt" in msg
    assert "hubert100_lm.tgz" in msg


def test_unknown_name_gets_did_you_mean():
    with pytest.raises(BenchError, match=r"did you mean 'gslm_hubert_km100'"):
        resolve_model("gslm_hubert_km10")


def test_kmeans_from_config_relative_path_is_checked_against_the_published_shape(isolated_config, tmp_path):
    """GSLM km100 on HuBERT layer 6 has 100 centroids of dimension 768; anything else is rejected with both."""
    kmeans_file(tmp_path / "gslm" / "km.bin", 100, 768)
    write_config(isolated_config, "models:\n  gslm-hubert-km100: gslm/km.bin\n")
    model = resolve_model("gslm_hubert_km100", verify=True)
    assert model.file == (tmp_path / "gslm" / "km.bin").resolve()
    assert model.info["n_clusters"] == 100 and model.info["dim"] == 768
    assert model.origin == f"{isolated_config}: models.gslm_hubert_km100"

    kmeans_file(tmp_path / "small" / "km.bin", 4, 16)
    write_config(isolated_config, f"models:\n  gslm_hubert_km100: {tmp_path / 'small' / 'km.bin'}\n")
    resolve_model("gslm_hubert_km100")  # the cheap check only looks at the file's presence
    with pytest.raises(BenchError, match=r"models.gslm_hubert_km100: .*km.bin has n_clusters=4, but .*=100"):
        resolve_model("gslm_hubert_km100", verify=True)


def test_env_var_wins_over_config_and_missing_paths_are_named(isolated_config, tmp_path, monkeypatch):
    kmeans_file(tmp_path / "a.bin", 100, 768)
    write_config(isolated_config, f"models:\n  gslm_hubert_km100: {tmp_path / 'nowhere.bin'}\n")
    with pytest.raises(BenchError, match=r"models.gslm_hubert_km100 points to .*nowhere.bin, which does not exist"):
        resolve_model("gslm_hubert_km100")
    monkeypatch.setenv(env_var("gslm-hubert-km100"), str(tmp_path / "a.bin"))
    model = resolve_model("gslm_hubert_km100")
    assert model.origin == "$BENCH_MODEL_GSLM_HUBERT_KM100" and model.file == (tmp_path / "a.bin").resolve()
    assert configured_models()["gslm_hubert_km100"] == "$BENCH_MODEL_GSLM_HUBERT_KM100"


def test_unit_lm_directory_needs_checkpoint_and_matching_dict(isolated_config, tmp_path):
    lm = fairseq_unit_lm(tmp_path / "hubert100_lm")
    write_config(isolated_config, f"models:\n  gslm_hubert100_lm: {lm}\n")
    model = resolve_model("gslm_hubert100_lm", verify=False)
    assert model.files == {"checkpoint": lm / "checkpoint_best.pt", "dict": lm / "dict.txt"}
    # the tiny LM has 2 layers and d=16, not the published 12 × 1024: verification says so, naming the file
    with pytest.raises(BenchError, match=r"checkpoint_best.pt has layers=2, but gslm_hubert100_lm .* layers=12"):
        resolve_model("gslm_hubert100_lm", verify=True)

    # a user-named LM of kind ulm_dir has no published shape to match; its vocabulary is still checked
    write_config(isolated_config, f"models:\n  tiny_lm: {{kind: ulm_dir, path: {lm}}}\n")
    info = resolve_model("tiny_lm", verify=True).info
    assert info["units"] == 100 and info["vocab_rows"] == 104 and info["layers"] == 2
    assert info["unit_order"] == "numeric"  # token id = unit + 4, as in the HuBERT-100 dict

    (lm / "dict.txt").unlink()
    with pytest.raises(BenchError, match=r"models.tiny_lm points to .*hubert100_lm, which has no dict.txt"):
        resolve_model("tiny_lm")


def test_checkpoint_and_dict_from_different_models_are_rejected(isolated_config, tmp_path):
    lm = fairseq_unit_lm(tmp_path / "lm", units=100, dict_units=50)
    write_config(isolated_config, f"models:\n  mixed: {{kind: ulm_dir, path: {lm / 'checkpoint_best.pt'}}}\n")
    with pytest.raises(BenchError, match=r"104 embedding rows but .*dict.txt lists 50 symbols"):
        resolve_model("mixed", verify=True)


def test_transformers_hubert_directory(isolated_config, tmp_path):
    from bench.core.compat import apply

    apply()  # transformers imports torchaudio, whose CUDA extension cannot load on the CPU torch
    from transformers import HubertConfig, HubertModel

    cfg = HubertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=4,
                       num_conv_pos_embedding_groups=2)
    HubertModel(cfg).save_pretrained(tmp_path / "hubert")
    write_config(isolated_config, f"models:\n  hubert_base_hf: {tmp_path / 'hubert'}\n")
    with pytest.raises(BenchError, match=r"has hidden_size=16, but hubert_base_hf .* hidden_size=768"):
        resolve_model("hubert_base_hf", verify=True)
    write_config(isolated_config, f"models:\n  mini_hubert: {{kind: hf_dir, path: {tmp_path / 'hubert'}}}\n")
    assert resolve_model("mini_hubert", verify=True).info["model_type"] == "hubert"
    write_config(isolated_config, f"models:\n  hubert_base_hf: {tmp_path}\n")
    with pytest.raises(BenchError, match=r"has no config.json"):
        resolve_model("hubert_base_hf")


def test_s3prl_checkpoint_format_is_detected(isolated_config, tmp_path):
    """A fairseq checkpoint needs s3prl's on-the-fly conversion; anything else is refused before s3prl sees it."""
    import torch

    lm = fairseq_unit_lm(tmp_path / "lm")
    write_config(isolated_config, f"models:\n  hubert_base: {lm / 'checkpoint_best.pt'}\n")
    assert resolve_model("hubert_base", verify=True).info == {"format": "fairseq"}
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    write_config(isolated_config, f"models:\n  hubert_base: {tmp_path / 'other.pt'}\n")
    with pytest.raises(BenchError, match=r"neither an s3prl-converted checkpoint .* keys: weights"):
        resolve_model("hubert_base", verify=True)


def test_f0_bins_and_config_errors(isolated_config, tmp_path):
    import torch

    torch.save(torch.linspace(-1, 1, 31), tmp_path / "bins.th")
    write_config(isolated_config, f"models:\n  pgslm_f0_bins: {tmp_path / 'bins.th'}\n")
    assert resolve_model("pgslm_f0_bins", verify=True).info == {"edges": 31, "bins": 32}
    # the published file: {n_bins: numpy edges}, as pGSLM's quantize_f0.py saves it
    from bench.lms.published_formats import write_pgslm_f0_bins

    write_pgslm_f0_bins(tmp_path / "bins.th")
    assert resolve_model("pgslm_f0_bins", verify=True).info == {"edges": 31, "bins": 32}
    torch.save({16: torch.linspace(-1, 1, 15).numpy()}, tmp_path / "bins.th")
    with pytest.raises(BenchError, match=r"has bins=16, but pgslm_f0_bins .* has bins=32"):
        resolve_model("pgslm_f0_bins", verify=True)

    write_config(isolated_config, "models: [a, b]\n")
    with pytest.raises(BenchError, match=r"config.yaml: 'models:' must map model names to paths"):
        resolve_model("pgslm_f0_bins")
    write_config(isolated_config, "models:\n  x: {path: /tmp}\n")
    with pytest.raises(BenchError, match=r"models.x: 'x' is not a model bench knows; give its kind"):
        resolve_model("x")
    write_config(isolated_config, "models:\n  gslm_hubert_km100: {kind: ulm_dir, path: /tmp}\n")
    with pytest.raises(BenchError, match=r"kind kmeans, ulm_dir disagree"):
        resolve_model("gslm_hubert_km100")


def test_status_lists_every_known_model_with_its_problem(isolated_config, tmp_path):
    kmeans_file(tmp_path / "km.bin", 100, 768)
    write_config(isolated_config, f"models:\n  gslm_hubert_km100: {tmp_path / 'km.bin'}\n")
    rows = {r["name"]: r for r in model_status(verify=True)}
    assert set(KNOWN_MODELS) <= set(rows)
    assert rows["gslm_hubert_km100"]["ok"] and rows["gslm_hubert_km100"]["info"]["dim"] == 768
    assert not rows["gslm_hubert100_lm"]["ok"] and "not configured" in rows["gslm_hubert100_lm"]["problem"]


def test_upstream_checkpoint_comes_from_the_model_config(isolated_config, tmp_path):
    import torch

    torch.save({"task_cfg": {}, "model_cfg": {}, "model_weight": {}, "dictionaries_symbols": []}, tmp_path / "h.pt")
    write_config(isolated_config, f"models:\n  hubert_base: {tmp_path / 'h.pt'}\n")
    from bench.core.model_paths import upstream_checkpoint

    assert upstream_checkpoint("hubert_local") == str((tmp_path / "h.pt").resolve())
    assert upstream_checkpoint("hubert_local", explicit="/given.pt") == "/given.pt"
    assert upstream_checkpoint("fbank") is None
    assert resolve_model("hubert_base", verify=True).info == {"format": "s3prl-converted"}
    write_config(isolated_config, "")
    with pytest.raises(BenchError, match=r"model 'hubert_base_hf' is not configured"):
        upstream_checkpoint("hf_hubert")
