"""Cells that resume: a cell killed with SIGKILL mid-training, run again, continues from its last saved epoch and
writes the record an uninterrupted run writes (scores, per-utterance outputs, training history); the trained head
is kept beside its record with its sha256, and `bench evaluate` scores it on another task with the same labels."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench.data.audio import write_audio
from bench.data.manifest import Example, Manifest

SR = 16000
LABELS = ["low", "high", "noise"]

# A cell run by run_one in its own process. BENCH_KILL_AT_SAVE=N: the process SIGKILLs itself when the training
# loop is about to save its state for the N-th time, i.e. after training epoch N but before saving it (the
# work of that epoch is lost, as in a real kill).
DRIVER = textwrap.dedent('''
    import os, signal, sys
    from pathlib import Path
    from bench.data.manifest import Manifest
    from bench.methods import checkpointing
    from bench.runner.plan import RunOptions, run_one
    from bench.tasks.registry import TaskSpec

    manifest_path, results, method, kind = sys.argv[1:5]
    kill_at = int(os.environ.get("BENCH_KILL_AT_SAVE", "0"))
    saves = [0]
    real_save = checkpointing.save_state

    def save_state(directory, state, generator=None):
        saves[0] += 1
        if saves[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        real_save(directory, state, generator)

    checkpointing.save_state = save_state
    metrics = ["accuracy"] if kind == "classification" else ["wer", "cer"]
    task = TaskSpec(name="tones", version=1, family="KS" if kind == "classification" else "ASR", kind=kind,
                    origin="synthetic", description="test", metrics=metrics,
                    labels=["low", "high", "noise"] if kind == "classification" else None,
                    data={"source": "manifest", "path": "m.jsonl"})
    options = {"linear": {"max_epochs": 12, "patience": 12, "lr": 3e-3},
               "lstm": {"project_dim": 16, "hidden_size": 16, "batch_size": 4, "max_epochs": 8, "patience": 8}}
    opts = RunOptions(upstream="fbank_no_cmvn", method_options={method: options[method]})
    path, written = run_one(task, Manifest.read(Path(manifest_path)), method, 0, opts, Path(results), log=print)
    print("RECORD", path, written)
''')


def _tone(rng, freq, seconds):
    t = np.arange(int(seconds * SR)) / SR
    return 0.3 * np.sin(2 * np.pi * freq * rng.uniform(0.93, 1.07) * t) + 0.02 * rng.standard_normal(len(t))


def _sound(rng, kind):
    seconds = rng.uniform(0.35, 0.6)
    if kind == "noise":
        return 0.2 * rng.standard_normal(int(seconds * SR))
    return _tone(rng, 300 if kind == "low" else 1500, seconds)


def tone_manifest(root: Path, seed=0, per_split=(6, 3, 3)) -> Manifest:
    rng = np.random.default_rng(seed)
    exs = []
    for label in LABELS:
        for split, n in zip(("train", "valid", "test"), per_split):
            for i in range(n):
                uid = f"{label}-{split}-{i}"
                write_audio(root / f"{uid}.wav", _sound(rng, label))
                exs.append(Example(id=uid, path=f"{uid}.wav", label=label, split=split, speaker=uid))
    return Manifest(exs, root=root)


def _run(tmp_path, manifest_path, results, method, kind, kill_at=0):
    import os

    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "BENCH_KILL_AT_SAVE": str(kill_at), "PYTHONPATH": str(Path(__file__).parent.parent),
           "BENCH_RESUME_EVERY_S": "0"}  # save every epoch (the default saves at most every 10 s)
    return subprocess.run([sys.executable, str(driver), str(manifest_path), str(results), method, kind],
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("method, kind", [("linear", "classification"), ("lstm", "generation")])
def test_a_cell_killed_mid_training_resumes_and_writes_the_uninterrupted_record(tmp_path, bench_home, monkeypatch,
                                                                                 method, kind):
    manifest = tone_manifest(tmp_path / "audio")
    manifest_path = tmp_path / "audio" / "m.jsonl"
    manifest.write(manifest_path)

    whole = _run(tmp_path, manifest_path, tmp_path / "whole", method, kind)
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = _run(tmp_path, manifest_path, tmp_path / "resumed", method, kind, kill_at=4)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    states = list((tmp_path / "resumed" / ".work" / "resume").rglob("train-state.pt"))
    assert len(states) == 1  # epochs 1-3 saved; epoch 4 was trained and lost
    assert not list((tmp_path / "resumed").rglob("seed-0.json"))
    again = _run(tmp_path, manifest_path, tmp_path / "resumed", method, kind)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resume: continuing after epoch 3" in again.stdout

    a, b = (json.loads(next((tmp_path / d).rglob("seed-0.json")).read_text()) for d in ("whole", "resumed"))
    assert a["config_hash"] == b["config_hash"]
    assert a["scores"] == b["scores"] and a["outputs"] == b["outputs"]
    assert a["info"]["history"] == b["info"]["history"] and a["info"]["best_epoch"] == b["info"]["best_epoch"]
    assert a["info"]["epochs_run"] == b["info"]["epochs_run"] == len(a["info"]["history"])
    # the state is removed once the record is written (the killed process's scratch is the next `bench run`'s
    # to clean: bench.core.locks.clean_stale_temps)
    assert not (tmp_path / "resumed" / ".work" / "resume").exists()
    # the trained head is kept beside the record, named and hashed there, and is the same after the resume
    assert a["trained_state"]["sha256"] == b["trained_state"]["sha256"]
    record_path = next((tmp_path / "resumed").rglob("seed-0.json"))
    assert record_path.with_name(b["trained_state"]["file"]).is_file()

    # the kept head, re-loaded by `bench evaluate`'s code, gives the record's own test outputs again
    from bench.runner.evaluate import evaluate_record
    from bench.tasks.registry import TaskSpec

    monkeypatch.setattr("bench.data.sources.prepare_manifest", lambda spec, *a, **k: manifest)
    spec = TaskSpec(name="tones", version=1, family="KS" if kind == "classification" else "ASR", kind=kind,
                    origin="synthetic", description="test", data={"source": "manifest", "path": "m.jsonl"},
                    metrics=["accuracy"] if kind == "classification" else ["wer", "cer"],
                    labels=LABELS if kind == "classification" else None)
    again = evaluate_record(record_path, spec, log=lambda m: None)
    assert again["outputs"] == b["outputs"] and again["scores"] == b["scores"]


def test_fit_saves_without_changing_training_and_continues_a_saved_state(tmp_path, monkeypatch):
    """In process: training with a resume directory equals training without one, and a run interrupted after
    epoch 2 (its state saved) continues to the same weights and history. By default a save waits until the
    last one is 10 s old, so a cell of fast epochs writes no state at all."""
    import torch

    from bench.methods import checkpointing
    from bench.methods.training import TrainSettings, fit

    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()

    def train(resume, stop_after=None):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 2))
        loss = torch.nn.functional.cross_entropy

        def validate():
            v = float(loss(model(x), y))
            return (v,), {"loss": v}

        settings = TrainSettings(lr=1e-2, batch_size=8, max_epochs=6, patience=6)
        real = checkpointing.save_state
        if stop_after is not None:
            def save(directory, state, generator=None):
                real(directory, state, generator)
                if state["epoch"] == stop_after:
                    raise KeyboardInterrupt
            checkpointing.save_state = save
        try:
            result = fit(model, 40, lambda b: loss(model(x[b]), y[b]), validate, settings, seed=3,
                         log=lambda s: None, resume=resume)
        finally:
            checkpointing.save_state = real
        return result, {k: v.clone() for k, v in model.state_dict().items()}

    plain, w_plain = train(None)
    monkeypatch.delenv("BENCH_RESUME_EVERY_S", raising=False)
    quiet, _ = train(tmp_path / "quiet")
    assert quiet.history == plain.history and not (tmp_path / "quiet").exists()
    monkeypatch.setenv("BENCH_RESUME_EVERY_S", "0")
    saved, w_saved = train(tmp_path / "a")
    assert plain.history == saved.history and all(torch.equal(w_plain[k], w_saved[k]) for k in w_plain)
    assert (tmp_path / "a" / "train-state.pt").is_file()
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", stop_after=2)
    resumed, w_resumed = train(tmp_path / "b")
    assert resumed.history == plain.history and resumed.best_epoch == plain.best_epoch
    assert all(torch.equal(w_plain[k], w_resumed[k]) for k in w_plain)


def test_prompt_training_continues_a_saved_state_to_the_same_prompts(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("BENCH_RESUME_EVERY_S", "0")

    from bench.methods import checkpointing
    from bench.prompt.trainer import TrainConfig, make_row, train_prompts
    from test_prompt_training import _setup

    def train(resume, stop_after=None):
        lm, v, model = _setup("learnable")
        rng = np.random.default_rng(0)
        rows = [make_row(list(rng.integers(4, 16, size=6)), lbl, v, 64)[0] for lbl in "abcabcabc"]
        real = checkpointing.save_state
        if stop_after is not None:
            def save(directory, state, generator=None):
                real(directory, state, generator)
                if state["epoch"] == stop_after:
                    raise KeyboardInterrupt
            checkpointing.save_state = save
        try:
            hist = train_prompts(model, rows, rows[:6], TrainConfig(max_epochs=5, batch_size=4, patience=5,
                                                                     lr=2e-2), lm.dictionary.pad,
                                 log=lambda s: None, resume=resume)
        finally:
            checkpointing.save_state = real
        return hist, {k: t.clone() for k, t in model.prompts.state_dict().items()}

    plain, p_plain = train(None)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "p", stop_after=2)
    resumed, p_resumed = train(tmp_path / "p")
    assert resumed == plain
    assert all(torch.equal(p_plain[k], p_resumed[k]) for k in p_plain)


# ---- bench evaluate -----------------------------------------------------------------------------------------
TASK_YAML = """\
name: {name}
version: 1
family: KS
kind: classification
origin: synthetic
description: tones
labels: [{labels}]
metrics: [accuracy]
data: {{source: manifest, path: {name}/m.jsonl}}
"""


def test_bench_evaluate_scores_a_kept_head_on_another_task_with_the_same_labels(tmp_path, bench_home):
    """The head kept beside a record reproduces the record's own test outputs, scores another task with the same
    labels (listed in another order), and is refused in one line for other labels or a changed file."""
    from typer.testing import CliRunner

    from bench.cli import app
    from bench.core.errors import BenchError

    tasks = tmp_path / "tasks"
    for name, seed, labels in (("tones-a", 0, "low, high, noise"), ("tones-b", 5, "noise, low, high"),
                               ("beeps", 6, "low, high")):
        (tasks / name).mkdir(parents=True)
        (tasks / f"{name}.yaml").write_text(TASK_YAML.format(name=name, labels=labels))
        m = tone_manifest(tasks / name, seed=seed, per_split=(8, 3, 6))
        if name == "beeps":
            m = Manifest([e for e in m.examples if e.label != "noise"], root=m.root)
        m.write(tasks / name / "m.jsonl")
    common = ["--task-dir", str(tasks), "--upstream", "fbank_no_cmvn"]
    r = CliRunner().invoke(app, ["run", "-t", "tones-a", "-m", "linear", *common, "-o", "linear.max_epochs=40",
                                 "-o", "linear.lr=3e-3", "--results", str(tmp_path / "res"), "--no-compare"])
    assert r.exit_code == 0, r.output
    record_path = next((tmp_path / "res").rglob("seed-0.json"))
    record = json.loads(record_path.read_text())
    assert record_path.with_suffix(".pt").is_file() and record["trained_state"]["file"] == "seed-0.pt"

    def evaluate(task, out):
        return CliRunner().invoke(app, ["evaluate", str(record_path), "--task", task, "--task-dir", str(tasks),
                                        "--out", str(out)])

    r = evaluate("tones-a", tmp_path / "self.json")
    assert r.exit_code == 0, r.output
    same = json.loads((tmp_path / "self.json").read_text())
    assert same["outputs"] == record["outputs"] and same["scores"] == record["scores"]
    r = evaluate("tones-b", tmp_path / "other.json")
    assert r.exit_code == 0, r.output
    other = json.loads((tmp_path / "other.json").read_text())
    assert other["trained_on"] == "tones-a" and other["n"] == 18 and other["scores"]["accuracy"] > 0.6 > 1 / 3
    assert "accuracy" in r.output

    r = evaluate("beeps", tmp_path / "x.json")
    assert isinstance(r.exception, BenchError) and "label sets differ" in str(r.exception)
    assert "\n" not in str(r.exception)
    record_path.with_suffix(".pt").write_bytes(record_path.with_suffix(".pt").read_bytes() + b"x")
    r = evaluate("tones-b", tmp_path / "x.json")
    assert isinstance(r.exception, BenchError) and "differs from the record" in str(r.exception)


@pytest.mark.slow
def test_bench_evaluate_rescores_a_kept_prompt_set_on_the_same_lm(bench_home, tmp_path):
    """A prompt-gslm-lv record's prompt set, loaded again on the same shipped LM, decodes the record's own test
    outputs (same hypotheses and per-class scores); a task with other labels is refused."""
    from bench.core.errors import BenchError
    from bench.runner.evaluate import evaluate_record
    from bench.runner.plan import RunOptions, run_benchmark
    from bench.tasks.registry import TaskRegistry

    reg = TaskRegistry()
    opts = RunOptions(size="tiny", limit=12, max_epochs=1)
    summary = run_benchmark([reg.get("builtin-ks")], ["prompt-gslm-lv"], opts, tmp_path / "res", log=lambda s: None)
    assert len(summary.written) == 1 and not summary.failed
    path = summary.written[0]
    record = json.loads(path.read_text())
    again = evaluate_record(path, reg.get("builtin-ks"), limit=12, log=lambda s: None)
    assert again["outputs"] == record["outputs"] and again["scores"] == record["scores"]
    with pytest.raises(BenchError, match="label sets differ"):
        evaluate_record(path, reg.get("builtin-vad"), limit=12, log=lambda s: None)


@pytest.mark.parametrize("patience, epochs_run", [(0, 7), (2, 2)])
def test_fit_runs_every_epoch_at_patience_zero(patience, epochs_run):
    """patience 0 never stops early (fairseq's --patience convention); otherwise ``patience`` stale epochs stop.
    lr 0 makes every epoch's valid key equal to the untrained one (epoch 0), which stays the best."""
    import torch

    from bench.methods.training import TrainSettings, fit

    x, y = torch.randn(16, 3, generator=torch.Generator().manual_seed(0)), torch.zeros(16, dtype=torch.long)
    model = torch.nn.Linear(3, 2)

    def validate():
        v = float(torch.nn.functional.cross_entropy(model(x), y))
        return (v,), {"loss": v}

    result = fit(model, 16, lambda b: torch.nn.functional.cross_entropy(model(x[b]), y[b]), validate,
                 TrainSettings(lr=0.0, batch_size=8, max_epochs=7, patience=patience), seed=0, log=lambda s: None)
    assert (result.epochs_run, result.best_epoch) == (epochs_run, 0)
