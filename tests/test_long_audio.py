"""An utterance longer than a task's ``max_seconds`` is cropped to its first max_seconds or the task is refused,
as its ``long_audio`` setting says; the records state the limit (config, only when set) and how many utterances
were cropped. A cropped utterance is different audio: its features are those of the hand-truncated file and
never the cached full-length ones. Without a limit nothing changes (config hashes included)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf

from bench.core.paths import cache_dir
from bench.data.audio import load_audio, write_audio
from bench.data.long_audio import CROPPED_KEY, apply_long_audio
from bench.data.manifest import Example, Manifest
from bench.features.store import FeatureStore
from bench.methods import METHODS
from bench.methods.base import Method, MethodOutput, ParamCount, Predictions
from bench.runner.plan import RunOptions, numerics_config, resolve_cell, run_benchmark
from bench.results.records import config_hash
from bench.tasks.registry import LongAudio, TaskSpec

SR = 16_000


def _wav(path, seconds: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    write_audio(path, (0.1 * rng.standard_normal(int(seconds * SR))).astype(np.float32))


def test_cropped_features_equal_the_features_of_the_file_truncated_by_hand(tmp_path):
    _wav(tmp_path / "long.wav", 3.0, 0)
    samples, _ = sf.read(tmp_path / "long.wav", dtype="int16")
    sf.write(tmp_path / "cut.wav", samples[: int(1.25 * SR)], SR, subtype="PCM_16")  # the first 1.25 s, by hand
    full = Manifest([Example("long", "long.wav", "a", "train")], tmp_path)
    store = FeatureStore("fbank", cache_dir=tmp_path / "cache")
    (whole,) = store.get(full, full.examples)  # the full-length features are cached first
    cropped = apply_long_audio("toy", full, LongAudio(max_seconds=1.25, policy="crop"), {"long": 3.0},
                               log=lambda s: None)
    (ex,) = cropped.examples
    assert ex.end == 1.25 and ex.extra[CROPPED_KEY] == 3.0
    assert store.key(cropped, ex) != store.key(full, full.examples[0])  # the crop is part of the cache key
    (feats,) = store.get(cropped, cropped.examples)
    by_hand = Manifest([Example("cut", "cut.wav", "a", "train")], tmp_path)
    (ref,) = FeatureStore("fbank", cache_dir=tmp_path / "other-cache").get(by_hand, by_hand.examples)
    assert feats.shape == ref.shape and feats.shape[1] < whole.shape[1]
    np.testing.assert_array_equal(feats, ref)
    assert load_audio(tmp_path / "long.wav", ex.start, ex.end).size == int(1.25 * SR)
    assert store.stats["extracted"] == 2  # the cropped utterance was extracted, not read from the full one


class AudioLength(Method):
    """Predicts the label and reports how many samples each test utterance decodes to (what a method reads)."""

    name = "audio-length"

    @dataclass
    class Config:
        pass

    def count_parameters(self, task, ctx):
        return ParamCount(trainable=0, frozen=0, stored_per_task=0)

    def run(self, task, manifest, ctx):
        exs = manifest.split("test") + manifest.split("train")
        lengths = {e.id: int(load_audio(manifest.audio_path(e), e.start, e.end).size) for e in exs}
        test = manifest.split("test")
        return MethodOutput(Predictions([e.id for e in test], [e.label for e in test], [e.label for e in test]),
                            self.count_parameters(task, ctx), info={"samples": lengths})


@pytest.fixture
def long_corpus(monkeypatch, bench_home):
    """A toy task whose train split has two long utterances (2.0 and 3.5 s) and test one (2.5 s)."""
    monkeypatch.setitem(METHODS, "audio-length", f"{__name__}:AudioLength")
    seconds = {"train0": 0.5, "train1": 2.0, "train2": 3.5, "train3": 0.5, "valid0": 0.5, "valid1": 0.5,
               "test0": 0.5, "test1": 2.5}
    examples = [Example(i, f"{i}.wav", "a" if n % 2 else "b", i.rstrip("0123456789"), speaker=i)
                for n, i in enumerate(seconds)]
    for n, (i, s) in enumerate(seconds.items()):
        _wav(bench_home / f"{i}.wav", s, n)
    manifest = Manifest(examples, bench_home)
    monkeypatch.setattr("bench.data.sources.prepare_manifest", lambda spec, *a, **k: manifest)

    def task(long_audio=None):
        return TaskSpec(name="toy-long", version=1, family="KS", kind="classification", origin="synthetic",
                        description="toy", labels=["a", "b"], metrics=["accuracy"],
                        data={"source": "manifest", "path": "x.jsonl"}, long_audio=long_audio)

    return task, manifest, bench_home


def test_a_task_card_limit_crops_what_methods_read_and_the_record_says_so(long_corpus, tmp_path):
    task, _, home = long_corpus
    spec = task({"max_seconds": 1.0, "policy": "crop", "splits": ["train"]})
    lines = []
    summary = run_benchmark([spec], ["audio-length"], RunOptions(upstream="fbank"), tmp_path, log=lines.append)
    assert not summary.skipped and len(summary.written) == 1
    rec = json.loads(summary.written[0].read_text())
    assert rec["config"]["long_audio"] == {"max_seconds": 1.0, "policy": "crop", "splits": ["train"]}
    assert rec["data"]["long_audio"] == {"cropped": {"train": 2}, "longest_uncropped_seconds": 3.5}
    samples = rec["info"]["samples"]
    assert samples["train1"] == samples["train2"] == SR and samples["train0"] == SR // 2  # cropped to 1 s
    assert samples["test1"] == int(2.5 * SR)  # test is not in the limit's splits: full length
    assert any("2 train utterance(s) cropped to their first 1 s" in line for line in lines)


def test_refuse_is_one_line_naming_the_task_the_count_the_longest_file_and_the_option(long_corpus, tmp_path):
    task, _, home = long_corpus
    lines = []
    summary = run_benchmark([task()], ["audio-length"], RunOptions(upstream="fbank", max_seconds=2.2), tmp_path,
                            log=lines.append)
    assert not summary.written and not list(tmp_path.rglob("seed-*.json"))
    ((name, why),) = summary.skipped
    assert name == "toy-long" and "\n" not in why
    assert why.startswith("2 of 8 train/valid/test utterance(s) of toy-long are longer than max_seconds 2.2 (the "
                          f"longest: {home / 'train2.wav'}, 3.50 s); nothing computed for this task")
    assert "--long-audio crop" in why and "--max-seconds" in why
    assert not (home / "cache" / "features").exists() and not (cache_dir() / "features").exists()  # any mode's
    # the run option's policy replaces the card's: the same task is cropped with --long-audio crop
    crop = run_benchmark([task()], ["audio-length"], RunOptions(upstream="fbank", max_seconds=2.2, long_audio="crop"),
                         tmp_path, log=lambda s: None)
    rec = json.loads(crop.written[0].read_text())
    assert rec["data"]["long_audio"]["cropped"] == {"train": 1, "valid": 0, "test": 1}
    assert rec["info"]["samples"]["test1"] == int(2.2 * SR)


def test_without_a_limit_nothing_changes_and_a_limit_is_its_own_configuration(long_corpus, tmp_path):
    task, manifest, _ = long_corpus
    from bench.methods import method_class

    method = method_class("audio-length")({})
    plain = resolve_cell(task(), manifest, method, 0, RunOptions(upstream="fbank"))
    assert "long_audio" not in plain and task().fingerprint() == task(None).fingerprint()
    # the same dict as before this setting existed: every key it has, built by hand (with the process's numerics
    # entry: none for fast, "numerics" for the default pinned mode)
    assert set(plain) == {"task", "task_version", "task_fingerprint", "manifest_sha256", "data", "upstream",
                          "upstream_path", "upstream_config_id", "seed", "max_epochs", "method", "recipe",
                          *numerics_config(RunOptions())}
    limited = resolve_cell(task(), manifest, method, 0, RunOptions(upstream="fbank", max_seconds=30.0))
    assert limited["long_audio"] == {"max_seconds": 30.0, "policy": "refuse", "splits": ["train", "valid", "test"]}
    assert config_hash(limited) != config_hash(plain)
    assert {k: v for k, v in limited.items() if k != "long_audio"} == plain
    card = task({"max_seconds": 30.0})
    assert card.fingerprint() != task().fingerprint()  # a card limit is part of the task's definition
    summary = run_benchmark([task()], ["audio-length"], RunOptions(upstream="fbank"), tmp_path, log=lambda s: None)
    rec = json.loads(summary.written[0].read_text())
    assert "long_audio" not in rec["config"] and "long_audio" not in rec["data"]
    assert rec["config_hash"] == config_hash(plain) and rec["info"]["samples"]["train2"] == int(3.5 * SR)


def test_the_cli_checks_the_options_before_any_work(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "BENCH_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    for args, words in ((["--max-seconds", "0"], "--max-seconds 0: expected a positive number of seconds"),
                        (["--long-audio", "trim"], "--long-audio must be one of crop, refuse, not 'trim'")):
        r = subprocess.run([sys.executable, "-m", "bench.cli", "run", "-t", "builtin-ks", "-m", "linear", *args],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 2 and words in " ".join(r.stderr.split()), r.stdout + r.stderr
    assert not (tmp_path / "home").exists()


def test_bench_evaluate_applies_the_records_limit_else_the_tasks(long_corpus):
    from bench.runner.evaluate import _long_audio

    task, manifest, _ = long_corpus
    config = {"long_audio": {"max_seconds": 1.0, "policy": "crop", "splits": ["test"]}, "recipe": "cpu-default"}
    cropped = _long_audio(task(), manifest, config, log=lambda s: None)
    assert [e.id for e in cropped if CROPPED_KEY in e.extra] == ["test1"]
    assert _long_audio(task(), manifest, {"recipe": "cpu-default"}, log=lambda s: None) is manifest
    card = task({"max_seconds": 1.0, "policy": "crop"})
    assert len([e for e in _long_audio(card, manifest, {}, log=lambda s: None) if e.end == 1.0]) == 3


def test_the_superb_recipe_crops_sid_training_audio_as_s3prl_and_run_options_win():
    """s3prl/downstream/voxceleb1/config.yaml:33 max_timestep 128000 (8 s), train only (expert.py:47)."""
    from bench.data.long_audio import limit_for
    from bench.tasks.registry import TaskRegistry

    sid = TaskRegistry().get("sid-voxceleb1")
    assert limit_for(sid, "superb") == LongAudio(max_seconds=8.0, policy="crop", splits=("train",))
    assert limit_for(sid, "cpu-default") is None and limit_for(sid, "speechprompt-v2") is None
    assert limit_for(sid, "superb", policy="refuse").policy == "refuse"  # --long-audio replaces the policy only
    assert limit_for(sid, "superb", max_seconds=3.0) == LongAudio(max_seconds=3.0, policy="crop")  # every split
    assert limit_for(sid, "cpu-default", policy="crop") is None  # a policy without any limit does nothing


def test_a_policy_without_any_limit_is_named_not_silent():
    """``--long-audio crop`` with no ``--max-seconds`` does nothing for a task without a card or recipe limit: the
    run names those tasks in one line (bench/cli.py) instead of looking as if it cropped."""
    from bench.data.long_audio import unlimited
    from bench.tasks.registry import TaskRegistry

    reg = TaskRegistry()
    sid, ks = reg.get("sid-voxceleb1"), reg.get("builtin-ks")
    assert unlimited([sid, ks], "superb", None, "crop") == ["builtin-ks"]  # superb crops SID: only KS is named
    assert unlimited([sid, ks], "cpu-default", None, "refuse") == ["sid-voxceleb1", "builtin-ks"]
    assert unlimited([sid, ks], "cpu-default", 4.0, "crop") == []  # --max-seconds is a limit for every task
    assert unlimited([sid, ks], "cpu-default", None, None) == []  # no policy asked for: nothing to say
