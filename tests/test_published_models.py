"""Published recipes run the published models: named by their configured names, refused in one line before any work
when they are not configured, replaced by bench's stand-ins only with --allow-stand-in, and then marked as such."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.core.errors import BenchError
from bench.runner.recipes import options_for, published_models, resolved_options
from bench.tasks.registry import TaskRegistry

REPO = Path(__file__).resolve().parent.parent
PUBLISHED = ["hubert_base", "gslm_hubert100_lm", "gslm_hubert_km100", "pgslm_ms_tlm", "pgslm_f0_bins"]
PROMPTS = ["prompt-gslm", "prompt-gslm-lv", "prompt-pgslm", "prompt-pgslm-lv"]


@pytest.fixture
def no_models(tmp_path, monkeypatch, bench_home):
    for var in list(os.environ):
        if var.startswith("BENCH_MODEL_"):
            monkeypatch.delenv(var)
    cfg = tmp_path / "config.yaml"
    cfg.write_text("", encoding="utf-8")
    monkeypatch.setenv("BENCH_CONFIG", str(cfg))
    return cfg


def _fake_models(root: Path) -> dict[str, Path]:
    """Files where each published model is expected (existence is all the pre-run check reads)."""
    (root / "lm").mkdir(parents=True)
    files = {"hubert_base": root / "hubert_base_ls960.pt", "gslm_hubert100_lm": root / "lm",
             "gslm_hubert_km100": root / "km.bin", "pgslm_ms_tlm": root / "ms_tlm.pt",
             "pgslm_f0_bins": root / "mean_norm_log_f0_seg_bin.th"}
    for name, p in files.items():
        if p.suffix:
            p.write_bytes(name.encode())
    for f in ("checkpoint_best.pt", "dict.txt"):
        (root / "lm" / f).write_bytes(f.encode())
    return files


def test_published_recipes_name_the_published_models():
    from bench.runner.recipes import load_recipe, required_models

    tasks = ["ks-speech-commands-v1", "ic-fluent-speech-commands"]
    for name in ("speechprompt-v1", "speechprompt-v2"):
        need = required_models(name, ["linear", *PROMPTS], tasks, "hubert_local")
        assert need["linear"] == ["hubert_base"]
        assert need["prompt-gslm"] == ["hubert_base", "gslm_hubert100_lm", "gslm_hubert_km100"]
        assert need["prompt-gslm-lv"] == need["prompt-gslm"]
        assert set(need["prompt-pgslm"]) == {"hubert_base", "pgslm_ms_tlm", "pgslm_f0_bins", "gslm_hubert_km100"}
    for name in ("speechprompt-v1", "speechprompt-v2"):  # no prompt method left on the offline LM
        for method in PROMPTS:
            for task in ["builtin-ks", *load_recipe(name).tasks]:
                opts = options_for(name, task, method)
                assert opts.get("lm_checkpoint") or opts.get("lm"), (name, method, task)
    assert load_recipe("superb").upstream == "hubert_local"
    assert required_models("superb", ["linear"], tasks, "hubert_local") == {"linear": ["hubert_base"]}
    assert required_models("superb", ["linear"], tasks, "fbank") == {"linear": []}  # SUPERB's floor row
    assert required_models("cpu-default", ["linear", *PROMPTS], tasks, "whisper_tiny_en") == {
        m: [] for m in ["linear", *PROMPTS]}
    # -o with a path: that file, not a published name
    need = required_models("speechprompt-v2", ["prompt-gslm"], tasks, "hubert_local", upstream_path="/h.pt",
                           user={"prompt-gslm": {"lm_checkpoint": "/my/lm"}})
    assert need["prompt-gslm"] == ["gslm_hubert_km100", "hubert_base"]  # units' upstream still the configured one


def test_bench_run_refuses_a_published_recipe_without_its_models_in_one_line_quickly(no_models, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    code = ("import sys\nfrom bench.cli import main\ntry:\n    main()\nfinally:\n"
            "    print('torch imported:', 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code, "run", "--recipe", "speechprompt-v2", "--tasks",
                           "ks-speech-commands-v1", "--results", str(tmp_path / "res")],
                          capture_output=True, text=True, env={**env, "COLUMNS": "400"}, cwd=tmp_path, timeout=60)
    elapsed = time.perf_counter() - started
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert elapsed < 10
    assert "torch imported: False" in proc.stdout  # no torch-heavy work before the refusal
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(line) == 1
    for name in PUBLISHED:
        assert name in line[0]
    assert "docs/real-checkpoints.md" in line[0] and "--allow-stand-in" in line[0]
    assert not (tmp_path / "res").exists()  # nothing ran


def test_configured_models_are_resolved_by_the_recipe_and_recorded_with_sha256(no_models, tmp_path):
    from bench.runner.plan import RunOptions, build_method, recipe_config

    files = _fake_models(tmp_path / "ckpt")
    no_models.write_text("models:\n" + "".join(f"  {n}: {p}\n" for n, p in files.items()), encoding="utf-8")
    reg = TaskRegistry()
    ks = reg.get("ks-speech-commands-v1")
    pub = published_models("speechprompt-v2", ["linear", *PROMPTS], [ks], None)
    assert pub.upstream == "hubert_local" and not pub.stand_in
    km = pub.files["gslm_hubert_km100"]
    assert km == {"file": str(files["gslm_hubert_km100"].resolve()),
                  "sha256": hashlib.sha256(b"gslm_hubert_km100").hexdigest()}
    assert pub.files["gslm_hubert100_lm"]["file"].endswith("checkpoint_best.pt")
    opts = RunOptions(upstream=pub.upstream, recipe="speechprompt-v2", published=pub)
    gslm = build_method("prompt-gslm", ks, opts).config
    assert (gslm.lm_checkpoint, gslm.kmeans, gslm.units_upstream, gslm.units_layer) == (
        "gslm_hubert100_lm", "gslm_hubert_km100", "hubert_local", 6)
    assert gslm.units_upstream_path == str(files["hubert_base"].resolve())  # no -o needed
    pg = build_method("prompt-pgslm", ks, opts).config
    assert (pg.lm, pg.f0_bins) == ("pgslm_ms_tlm", "pgslm_f0_bins")
    rc = recipe_config(ks, "prompt-pgslm", opts)
    assert set(rc["models"]) == {"hubert_base", "pgslm_ms_tlm", "pgslm_f0_bins", "gslm_hubert_km100"}
    assert "stand_in" not in rc
    assert set(recipe_config(ks, "linear", opts)["models"]) == {"hubert_base"}


def test_stand_in_only_with_the_switch_and_every_record_says_so(no_models, tmp_path):
    from bench.runner.plan import RunOptions, build_method, recipe_config

    ks = TaskRegistry().get("ks-speech-commands-v1")
    with pytest.raises(BenchError, match="not configured: hubert_base, gslm_hubert100_lm"):
        published_models("speechprompt-v2", ["linear", "prompt-gslm"], [ks], None)
    # only the ULM missing: the baselines keep the published HuBERT, the prompt method runs the whole stand-in
    files = _fake_models(tmp_path / "ckpt")
    no_models.write_text(f"models:\n  hubert_base: {files['hubert_base']}\n", encoding="utf-8")
    pub = published_models("speechprompt-v2", ["linear", "prompt-gslm"], [ks], None, allow_stand_in=True)
    assert pub.upstream == "hubert_local"
    assert pub.stand_in == {"prompt-gslm": ["hubert_base", "gslm_hubert100_lm", "gslm_hubert_km100"]}
    opts = RunOptions(upstream=pub.upstream, recipe="speechprompt-v2", published=pub)
    cfg = build_method("prompt-gslm", ks, opts).config
    assert cfg.lm_checkpoint is None and cfg.kmeans is None and cfg.units_upstream is None
    assert cfg.units_layer is None and cfg.prompt_length == 5  # the recipe's training settings stay
    assert recipe_config(ks, "prompt-gslm", opts)["stand_in"] == pub.stand_in["prompt-gslm"]
    assert "stand_in" not in recipe_config(ks, "linear", opts)
    # nothing configured: the default upstream, and every method says stand-in
    no_models.write_text("", encoding="utf-8")
    pub = published_models("speechprompt-v2", ["linear", "prompt-gslm"], [ks], None, allow_stand_in=True)
    assert pub.upstream == "whisper_tiny_en" and pub.stand_in["linear"] == ["hubert_base"]
    assert not pub.files
    # a prompt method the published recipe names no LM for: refused too, a stand-in only with the switch
    bare = tmp_path / "bare.yaml"
    bare.write_text("name: bare\ndescription: x\nupstream: fbank\nmethods: {prompt-gslm: {prompt_length: 2}}\n")
    with pytest.raises(BenchError, match="names no published LM for prompt-gslm"):
        published_models(str(bare), ["prompt-gslm"], [ks], None)
    pub_bare = published_models(str(bare), ["prompt-gslm"], [ks], None, allow_stand_in=True)
    assert pub_bare.stand_in["prompt-gslm"] == ["unit LM (none named by the recipe)"]
    # -o keeps what the user gave
    assert resolved_options("speechprompt-v2", ks, "prompt-gslm", {"lm_checkpoint": "/my/lm"}, pub)[
        "lm_checkpoint"] == "/my/lm"


def test_compare_marks_stand_in_columns():
    from bench.results.compare import _system, stand_in

    assert stand_in({"config": {"recipe": "speechprompt-v2", "stand_in": ["gslm_hubert100_lm"]}})
    # records from before the switch: a published recipe on the offline LM
    assert stand_in({"config": {"recipe": "speechprompt-v2"}, "info": {"lm": {"default_offline_lm": True}}})
    assert stand_in({"config": {"recipe": "speechprompt-v1"}, "info": {"default_offline_lm": True}})
    assert not stand_in({"config": {"recipe": "cpu-default"}, "info": {"lm": {"default_offline_lm": True}}})
    assert not stand_in({"config": {"recipe": "speechprompt-v2", "models": {}}, "info": {"lm": {
        "default_offline_lm": False}}})
    row = {"method": "prompt-gslm", "upstream": "whisper_tiny_en", "recipe": "speechprompt-v2", "variant": "",
           "limit": None, "run": "", "stand_in": True}
    assert _system(row) == "prompt-gslm (whisper_tiny_en) @speechprompt-v2 (stand-in)"
    assert "(stand-in)" not in _system({**row, "stand_in": False})


def test_the_python_api_refuses_the_same_way(no_models, tmp_path):
    from bench import api

    with pytest.raises(BenchError, match="not configured: hubert_base, gslm_hubert100_lm, gslm_hubert_km100"):
        api.run("ks-speech-commands-v1", ["linear", "prompt-gslm"], results=tmp_path / "res",
                recipe="speechprompt-v2")
    assert not (tmp_path / "res").exists()


def test_a_recipes_per_task_settings_are_one_system_in_compare():
    from bench.results.compare import PER_TASK, config_labels, recipe_normalized

    def cfg(task, batch, lr=5e-3, recipe="speechprompt-v2"):
        return {"recipe": recipe, "task": task, "method": {"batch_size": batch, "lr": lr}}

    grabo, ks = cfg("scr-grabo", 4), cfg("ks-speech-commands-v1", 32)  # v2's config.yaml:31 and :27
    assert recipe_normalized(grabo, "prompt-gslm")["method"]["batch_size"] == PER_TASK
    labels = config_labels({"a": recipe_normalized(grabo, "prompt-gslm"), "b": recipe_normalized(ks, "prompt-gslm")})
    assert labels == {"a": "", "b": ""}  # one column, not [batch_size=4] and [batch_size=32]
    other = recipe_normalized(cfg("scr-grabo", 8), "prompt-gslm")  # -o batch_size=8: still its own variant
    assert other["method"]["batch_size"] == 8
    assert recipe_normalized(cfg("scr-grabo", 4, recipe="cpu-default"), "prompt-gslm")["method"]["batch_size"] == 4
