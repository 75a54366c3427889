"""The default stand-in LMs ship with bench: sha256-checked, installed instead of built, named by their build
config (so a code change that alters the default's recipe cannot silently keep prompting the old LM)."""

from __future__ import annotations

import json

import pytest

from bench.core.errors import BenchError
from bench.methods.base import RunContext
from bench.lms import shipped


def _fake_lm_dir(d):
    d.mkdir(parents=True)
    (d / "checkpoint_best.pt").write_bytes(b"weights")
    (d / "units.json").write_text(json.dumps({"upstream": "x", "kmeans": "kmeans.npy"}))
    (d / "kmeans.npy").write_bytes(b"centroids")
    shipped.write_sums(d)
    return d


def test_install_verifies_every_file_and_marks_the_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path / "assets")
    src = _fake_lm_dir(tmp_path / "assets" / "ulm-default-abc")
    out = tmp_path / "models" / "ulm-default-abc"
    assert shipped.install("ulm-default-nothing", out) is False and not out.exists()
    assert shipped.install("ulm-default-abc", out)
    assert (out / "checkpoint_best.pt").read_bytes() == b"weights"
    marker = shipped.shipped_marker(out)
    assert marker["shipped_from"].endswith("ulm-default-abc") and set(marker["sha256"]) == {
        "checkpoint_best.pt", "units.json", "kmeans.npy"}
    (src / "checkpoint_best.pt").write_bytes(b"tampered")
    with pytest.raises(BenchError, match="checkpoint_best.pt: sha256 .* differs from SHA256SUMS"):
        shipped.install("ulm-default-abc", tmp_path / "models" / "again")
    (src / "checkpoint_best.pt").write_bytes(b"weights")
    (src / "kmeans.npy").unlink()
    with pytest.raises(BenchError, match="kmeans.npy is missing"):
        shipped.verify(src)


def test_the_default_lm_is_installed_from_the_shipped_copy_not_built(tmp_path, monkeypatch):
    from bench.lms import default_lm

    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path / "assets")
    config = default_lm.DefaultLMConfig(tasks="builtin-ks", size="tiny", num_units=12, lm_size="tiny", max_epochs=1,
                                        kmeans_n_init=1)
    name = default_lm.default_lm_dir(config, tmp_path).name
    _fake_lm_dir(tmp_path / "assets" / name)
    monkeypatch.setattr(default_lm, "_build_default_lm", lambda *a, **k: pytest.fail("built instead of installed"))
    ctx = RunContext(seed=0, cache_dir=tmp_path / "cache", models_dir=tmp_path / "models", log=lambda s: None)
    out = default_lm.ensure_default_lm(ctx, config=config)
    assert out == tmp_path / "models" / name and shipped.shipped_marker(out)
    built = []
    monkeypatch.setattr(default_lm, "_build_default_lm", lambda ctx, reg, cfg, o: built.append(o) or o)
    default_lm.ensure_default_lm(ctx, config=config, rebuild=True)  # `bench pretrain ulm --rebuild`
    assert built == [out] and not out.exists()  # the shipped copy is gone; the (stubbed) build takes its place


def test_the_shipped_lms_are_the_current_defaults_and_verify():
    """Every shipped directory passes its SHA256SUMS, and the default GSLM and pGSLM stand-ins of the default
    upstream are among them: a change to DefaultLMConfig/DefaultPGSLMConfig (or their recipe numbers) renames the
    default, and this fails until the LMs are rebuilt with `bench pretrain ulm [--prosody] --rebuild` and shipped."""
    from bench.lms.default_lm import default_lm_config, default_lm_dir
    from bench.lms.default_pgslm import default_pgslm_config, default_pgslm_dir

    names = {d.name for d in shipped.SHIPPED_DIR.iterdir() if d.is_dir()}
    assert default_lm_dir(default_lm_config()).name in names
    assert default_pgslm_dir(default_pgslm_config()).name in names
    for name in names:
        sums = shipped.verify(shipped.SHIPPED_DIR / name)
        assert "checkpoint_best.pt" in sums and "kmeans.npy" in sums and "units.json" in sums


@pytest.mark.slow
def test_a_tiny_prompt_run_builds_nothing_at_default_size(tmp_path):
    """`bench run --size tiny` with a prompt method on the default upstream installs the shipped LM: no suite at
    default size is generated, no k-means fitted, no LM pretrained; the record names the shipped copy."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "BENCH_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--tasks", "builtin-vad", "--methods",
                        "prompt-gslm-lv", "--size", "tiny", "--max-epochs", "1", "--results", str(tmp_path / "res"),
                        "--no-compare"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    built = sorted(p.name for p in (tmp_path / "home" / "data").glob("*/*") if p.is_dir())
    assert built == ["tiny-seed0"], built
    assert not (tmp_path / "home" / "models" / "kmeans").exists()
    rec = json.loads(next((tmp_path / "res").rglob("seed-0.json")).read_text())
    assert rec["info"]["lm"]["shipped"].startswith("bench/assets/default_lms/ulm-default-")
    assert rec["config"]["artefacts"]["lm_weights_sha256"]
