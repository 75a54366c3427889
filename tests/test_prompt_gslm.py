"""End to end: generated audio → fbank → k-means units → a tiny pretrained ULM (fairseq format) → prompt-gslm
(and -lv) through the method interface; accuracy is clearly above chance, the record names the LM it loaded, and
a run without a loadable LM is refused. Also: the offline default LM is built once and cached."""

from __future__ import annotations

import numpy as np
import pytest

from bench.core.errors import BenchError

SR = 16_000
UPSTREAM = "fbank_no_cmvn"  # per-utterance CMVN would lift the silent mel bins' noise to the tones' scale
# A 2-layer, 32-dim LM moves slowly at SpeechPrompt's lr 5e-3 (tuned for d=1024); the toy run uses 5e-2.
CLASSES = ("low", "high", "noise", "chord")


def _render(cls: str, rng: np.random.Generator) -> np.ndarray:
    """0.5 s: a 400 Hz tone, a 3 kHz tone, white noise, or a 400+1200+3000 Hz chord, with random onset,
    level and ±5 % pitch, over faint noise."""
    n = int(0.5 * SR)
    t = np.arange(n) / SR
    on = int(rng.integers(0, SR // 20))
    env = np.zeros(n)
    env[on:on + int(0.4 * SR)] = 1.0
    j = rng.uniform(0.95, 1.05)
    if cls == "noise":
        s = rng.normal(size=n) * 0.5
    else:
        freqs = {"low": [400], "high": [3000], "chord": [400, 1200, 3000]}[cls]
        s = sum(np.sin(2 * np.pi * f * j * t + rng.uniform(0, 6.3)) for f in freqs) / len(freqs) ** 0.5
    wav = rng.uniform(0.2, 0.5) * s * env + 0.003 * rng.normal(size=n)
    return wav.astype(np.float32)


def _toy_task(root, per_split=(12, 4, 6)):
    from bench.data.audio import write_audio
    from bench.data.manifest import Example, Manifest
    from bench.tasks.registry import TaskSpec

    rng = np.random.default_rng(0)
    examples = []
    for split, n in zip(("train", "valid", "test"), per_split):
        for c in CLASSES:
            for i in range(n):
                name = f"{split}-{c}-{i}"
                write_audio(root / f"{name}.wav", _render(c, rng))
                examples.append(Example(id=name, path=f"{name}.wav", label=c, split=split, speaker=name))
    task = TaskSpec(name="toy-tones", version=1, family="AuC", kind="classification", origin="synthetic",
                    description="tones and bursts", labels=list(CLASSES), metrics=["accuracy"],
                    data={"source": "manifest", "path": "x.jsonl"})
    return task, Manifest(examples, root)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Task, manifest, and a tiny ULM pretrained on the task's training units, saved in fairseq's format."""
    from bench.features.store import FeatureStore
    from bench.lms.model import UnitLMConfig
    from bench.lms.pretrain import pretrain_unit_lm
    from bench.units.store import UnitStore, fit_quantizer

    root = tmp_path_factory.mktemp("toy")
    task, man = _toy_task(root / "audio")
    cache, models = root / "cache", root / "models"
    feats = FeatureStore(UPSTREAM, cache_dir=cache)
    q = fit_quantizer(feats, [(man, man.split("train"))], layer=-1, num_units=16, seed=0, models_dir=models,
                      n_init=3)
    km = q.save(root / "km.npy")
    seqs = [s.units.tolist() for s in UnitStore(feats, -1, q, cache).get(man, man.split("train"))]
    lm_dir = pretrain_unit_lm(seqs, UnitLMConfig.tiny(20), root / "lm", seed=0, max_epochs=40)
    return task, man, root, lm_dir, km


def _run(method_name, toy, **opts):
    from bench.methods import method_class
    from bench.methods.base import RunContext
    from bench.tasks.metrics import compute

    task, man, root, lm_dir, km = toy
    config = {"lm_checkpoint": str(lm_dir), "kmeans": str(km), "units_upstream": UPSTREAM, "units_layer": -1,
              "batch_size": 8, "lr": 5e-2, "patience": 10, "max_epochs": 60, **opts}
    ctx = RunContext(seed=0, cache_dir=root / "cache", models_dir=root / "models", log=lambda s: None)
    out = method_class(method_name)(config).run(task, man, ctx)
    acc = compute("accuracy", out.predictions.references, out.predictions.hypotheses)
    return out, acc


def test_prompt_gslm_learns_the_task_above_chance(toy):
    # The fixed random verbalizer needs more epochs than the learnable one: valid loss still falls at epoch 60
    # (accuracy 0.46-0.71 over seeds 0-4 there); with 150 epochs seeds 0-4 reach 0.96, 0.79, 0.83, 0.63, 0.83.
    out, acc = _run("prompt-gslm", toy, max_epochs=150)
    assert acc >= 0.6, (acc, out.info["valid_loss"])  # chance: 0.25
    p = out.params
    assert p.trainable == sum(p.breakdown.values()) == p.stored_per_task
    assert set(p.breakdown) == {"input_prompt", "deep_prompts", "separator"} and p.frozen > p.trainable
    info = out.info
    assert info["lm"]["provenance"]["sha1"] and info["verbalizer"]["method"] == "random"
    assert info["units"]["K"] == 16 and info["best_epoch"] >= 1
    scores = out.predictions.scores
    assert len(scores) == len(out.predictions.ids) and set(scores[0]) == set(CLASSES)
    assert out.predictions.unmapped == sum(h not in CLASSES for h in out.predictions.hypotheses)
    again, acc2 = _run("prompt-gslm", toy, max_epochs=150)
    assert again.predictions.hypotheses == out.predictions.hypotheses and acc2 == acc  # seeded: reproducible


def test_prompt_gslm_learnable_verbalizer(toy):
    out, acc = _run("prompt-gslm-lv", toy)
    assert acc >= 0.6, (acc, out.info["valid_loss"])
    assert out.params.breakdown["verbalizer"] == 20 * (4 + 4)  # |V| · (C + 4)
    assert out.info["verbalizer"]["output_size"] == 8


def test_run_refuses_a_missing_or_mismatched_lm(toy, tmp_path):
    task, man, root, lm_dir, km = toy
    from bench.methods import method_class
    from bench.methods.base import RunContext
    from bench.units.kmeans import KMeansQuantizer

    ctx = RunContext(seed=0, cache_dir=root / "cache", models_dir=root / "models", log=lambda s: None)
    with pytest.raises(BenchError, match="not found"):
        method_class("prompt-gslm")({"lm_checkpoint": str(tmp_path / "nope.pt"), "kmeans": str(km)}).run(
            task, man, ctx)
    other = KMeansQuantizer(np.random.default_rng(0).normal(size=(8, KMeansQuantizer.load(km).dim)))
    other.save(tmp_path / "k8.npy")
    with pytest.raises(BenchError, match="8 units but the LM dictionary"):
        method_class("prompt-gslm")({"lm_checkpoint": str(lm_dir), "kmeans": str(tmp_path / "k8.npy"),
                                     "units_upstream": UPSTREAM}).run(task, man, ctx)
    with pytest.raises(BenchError, match="'kmeans' is required"):
        method_class("prompt-gslm")({"lm_checkpoint": str(lm_dir)}).run(task, man, ctx)


def test_offline_default_lm_is_built_once_and_cached(tmp_path, monkeypatch):
    from bench.methods.base import RunContext
    from bench.lms.default_lm import DEFAULT_UPSTREAM, UNIT_LAYERS, DefaultLMConfig, ensure_default_lm, locate_lm
    from bench.lms.checkpoint import load_unit_lm

    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "home"))
    cfg = DefaultLMConfig(tasks="builtin-ks", size="tiny", num_units=12, kmeans_n_init=1, max_epochs=1,
                          lm_size="tiny")
    ctx = RunContext(seed=0, cache_dir=tmp_path / "home" / "cache", models_dir=tmp_path / "home" / "models",
                     log=lambda s: None)
    d = ensure_default_lm(ctx, config=cfg)
    files = locate_lm(str(d))
    # the default units: the pretrained Whisper encoder's probed layer
    assert files.units["upstream"] == DEFAULT_UPSTREAM and files.units["layer"] == UNIT_LAYERS[DEFAULT_UPSTREAM]
    assert files.units["K"] == 12
    assert files.units["trained_on"] == {"builtin-ks": 72}  # training audio only
    lm = load_unit_lm(files.checkpoint, files.dict)
    assert len(lm.dictionary) == 16 and lm.provenance["sha1"]
    stamp = files.checkpoint.stat().st_mtime_ns
    assert ensure_default_lm(ctx, config=cfg) == d and files.checkpoint.stat().st_mtime_ns == stamp


def test_records_on_the_default_lms_name_the_lm_build_config(monkeypatch):
    """A cached stand-in LM from other settings or an older recipe is never reused under a matching config hash:
    the default LMs' build-config hashes are part of the prompt methods' resolved configs."""
    import dataclasses

    from bench.methods import method_class
    from bench.lms import default_lm
    from bench.lms import default_pgslm

    before = {name: method_class(name)().resolved_config() for name in ("prompt-gslm", "prompt-pgslm-lv")}
    assert before["prompt-gslm"]["default_lm"] == default_lm.default_lm_dir().name
    assert before["prompt-pgslm-lv"]["default_lm"] == default_pgslm.default_pgslm_dir().name
    newer = dataclasses.make_dataclass("Newer", [("recipe", int, 99)], bases=(default_lm.DefaultLMConfig,),
                                       frozen=True)
    monkeypatch.setattr(default_lm, "DefaultLMConfig", newer)
    assert method_class("prompt-gslm")().resolved_config()["default_lm"] != before["prompt-gslm"]["default_lm"]
    assert "default_lm" not in method_class("prompt-gslm")({"lm_checkpoint": "/some/ulm"}).resolved_config()
    # the default LM is built on the run's upstream: an fbank run prompts an fbank-unit LM, not the Whisper one
    on_fbank = method_class("prompt-gslm")().resolved_config("fbank")["default_lm"]
    assert on_fbank == default_lm.default_lm_dir(default_lm.default_lm_config("fbank")).name
    assert on_fbank != method_class("prompt-gslm")().resolved_config()["default_lm"]


def test_an_lm_trained_twice_identically_has_one_identity(tmp_path):
    """Records hash the LM's weights, not its file: the checkpoint also holds the training time, so two
    bit-identical trainings write different files but are the same artefact; other weights are another one."""
    from bench.data.manifest import sha1_file
    from bench.lms.checkpoint import checkpoint_weights_sha256
    from bench.lms.model import UnitLMConfig
    from bench.lms.pretrain import pretrain_unit_lm

    seqs = [[(i * 7 + j) % 12 for j in range(20)] for i in range(16)]
    cfg = UnitLMConfig.tiny(16)
    a = pretrain_unit_lm(seqs, cfg, tmp_path / "a", seed=0, max_epochs=1)
    b = pretrain_unit_lm(seqs, cfg, tmp_path / "b", seed=0, max_epochs=1)
    c = pretrain_unit_lm(seqs, cfg, tmp_path / "c", seed=1, max_epochs=1)
    assert checkpoint_weights_sha256(a) == checkpoint_weights_sha256(b) != checkpoint_weights_sha256(c)
    assert sha1_file(a) != sha1_file(b)  # the file alone would call them two LMs
