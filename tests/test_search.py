"""``bench run --search``: SUPERB's protocol. One cell per (grid point, seed), the value chosen on valid per task,
method and seed, test reported at that point, every point's valid score kept; the choice never sees test."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench.core.errors import BenchError
from bench.data.audio import write_audio
from bench.data.manifest import Example, Manifest
from bench.methods import METHODS
from bench.methods.base import Method, MethodOutput, ParamCount, Predictions
from bench.results.records import read_records
from bench.runner.plan import RunOptions, run_benchmark
from bench.runner.search import ValidScore, choose, parse_search, run_search
from bench.tasks.registry import TaskSpec

QUIET = {"log": lambda s: None}


class ThresholdProbe(Method):
    """Predicts one class for every utterance, "a" below lr 0.005 and "b" above: its valid accuracy (and so the
    search's choice) depends on lr and on the valid labels, its test score on the test labels."""

    name = "probe"

    @dataclass
    class Config:
        lr: float = 1e-3

    def count_parameters(self, task, ctx):
        return ParamCount(trainable=1, frozen=0, stored_per_task=1)

    def run(self, task, manifest, ctx):
        guess = "a" if self.config.lr < 0.005 else "b"
        valid = manifest.split("valid")
        acc = sum(e.label == guess for e in valid) / len(valid)
        test = manifest.split("test")
        preds = Predictions([e.id for e in test], [e.label for e in test], [guess] * len(test))
        return MethodOutput(preds, self.count_parameters(task, ctx),
                            info={"best_valid": {"accuracy": acc, "loss": 1 - acc}})


def _labels(split: str, i: int, flip_test: bool) -> str:
    if split == "valid":
        return "b" if i < 5 else "a"  # valid favours "b" (lr 1e-2)
    if split == "test":
        label = "a" if i < 5 else "b"  # test favours "a" (lr 1e-3): a choice made on test would differ
        return {"a": "b", "b": "a"}[label] if flip_test else label
    return "a" if i % 2 else "b"


@pytest.fixture
def toy(monkeypatch, bench_home):
    monkeypatch.setitem(METHODS, "probe", f"{__name__}:ThresholdProbe")
    task = TaskSpec(name="toy", version=1, family="KS", kind="classification", origin="synthetic",
                    description="toy", labels=["a", "b"], metrics=["accuracy"],
                    data={"source": "manifest", "path": "x.jsonl"})
    state = {"flip_test": False}

    def manifest(*a, **k):
        examples = [Example(id=f"{s}{i}", path=f"{s}{i}.wav", label=_labels(s, i, state["flip_test"]), split=s,
                            speaker=f"{s}{i}") for s in ("train", "valid", "test") for i in range(6)]
        for e in examples:
            if not (bench_home / e.path).exists():
                write_audio(bench_home / e.path, np.full(1600, 0.01, np.float32))
        return Manifest(examples, bench_home)

    monkeypatch.setattr("bench.data.sources.prepare_manifest", manifest)
    return task, state


def _selections(results: Path) -> list[dict]:
    return [r for r in read_records(results) if "search" in r]


def test_the_choice_is_made_on_valid_and_permuting_test_labels_leaves_it_unchanged(toy, tmp_path):
    task, state = toy
    search = parse_search("lr=1e-3,1e-2", ["probe"])
    chosen = {}
    for flip in (False, True):
        state["flip_test"] = flip
        results = tmp_path / f"flip{flip}"
        summary, found = run_search([task], ["probe"], RunOptions(seeds=(0, 1), jobs=1), search, results, **QUIET)
        assert len(summary.written) == 4 and not summary.failed and not found.unselected
        sel = _selections(results)
        assert len(sel) == 2 and len(found.selections) == 2
        for r in sel:
            assert r["search"]["valid"] == {"0.001": pytest.approx(1 / 6, abs=1e-5),
                                            "0.01": pytest.approx(5 / 6, abs=1e-5)}
            assert r["search"]["valid_metric"] == "accuracy" and r["search"]["grid"] == [0.001, 0.01]
            assert r["config"]["method"]["lr"] == "search"
            point = json.loads((results / r["search"]["chosen_record"]).read_text())
            assert point["config"]["method"]["lr"] == r["search"]["chosen"]
            assert r["scores"] == point["scores"] and r["outputs"] == point["outputs"]  # test at the chosen point
        chosen[flip] = ({r["seed"]: r["search"]["chosen"] for r in sel}, sel[0]["scores"]["accuracy"])
    assert chosen[False][0] == chosen[True][0] == {0: 0.01, 1: 0.01}
    assert chosen[False][1] == pytest.approx(1 / 6) and chosen[True][1] == pytest.approx(5 / 6)  # test did change


def test_compare_shows_the_selection_with_its_chosen_value_and_hides_the_grid_points(toy, tmp_path):
    from bench.results.compare import records_frame

    task, _ = toy
    run_search([task], ["probe"], RunOptions(seeds=(0, 1), jobs=1), parse_search("lr=1e-3,1e-2", ["probe"]),
               tmp_path, **QUIET)
    df = records_frame([tmp_path])
    assert set(df["variant"]) == {"lr=0.01 on valid"}
    assert len(df) == 2 and df["group"].nunique() == 1  # one system: both seeds' selections, no grid point
    # a plain run beside it stays its own system; the selection keeps its chosen-value label
    run_benchmark([task], ["probe"], RunOptions(seeds=(0,), jobs=1, method_options={"probe": {"lr": 0.1}}),
                  tmp_path, **QUIET)
    variants = set(records_frame([tmp_path])["variant"])
    assert "lr=0.01 on valid" in variants and "lr=0.1" in variants and len(variants) == 2


def test_a_grid_point_at_the_default_reuses_the_plain_record_and_a_rerun_recomputes_nothing(toy, tmp_path):
    task, _ = toy
    plain = run_benchmark([task], ["probe"], RunOptions(seeds=(0,), jobs=1), tmp_path, **QUIET)
    search = parse_search("lr=1e-3,1e-2", ["probe"])
    summary, _ = run_search([task], ["probe"], RunOptions(seeds=(0,), jobs=1), search, tmp_path, **QUIET)
    assert summary.skipped_existing == plain.written and len(summary.written) == 1
    again, found = run_search([task], ["probe"], RunOptions(seeds=(0,), jobs=1), search, tmp_path, **QUIET)
    assert not again.written and len(again.skipped_existing) == 2 and len(found.selections) == 1
    assert [p.label for p in found.points] == ["lr=0.001", "lr=0.01"]
    assert any("s per point" in line for line in found.cost_lines())


def test_ties_go_to_the_lower_valid_loss_then_the_earlier_point():
    up = True
    assert choose([ValidScore("accuracy", 0.5, up, 0.3), ValidScore("accuracy", 0.5, up, 0.2)]) == 1
    assert choose([ValidScore("accuracy", 0.5, up, 0.2), ValidScore("accuracy", 0.5, up, 0.2)]) == 0
    assert choose([ValidScore("loss", 2.0, False), ValidScore("loss", float("nan"), False),
                   ValidScore("loss", 1.0, False)]) == 2
    assert choose([ValidScore("accuracy", float("nan"), up), ValidScore("accuracy", 0.1, up)]) == 1


def test_methods_expose_the_valid_score_they_selected_on():
    from bench.runner.search import valid_score, valid_scores

    linear = {"method": "linear", "main_metric": "accuracy",
              "info": {"best_valid": {"accuracy": 0.9, "loss": 0.4}}}
    lstm = {"method": "lstm", "main_metric": "wer", "info": {"best_valid": {"wer": 0.3, "loss": 12.0}}}
    prompt = {"method": "prompt-gslm", "main_metric": "accuracy", "info": {"best_valid_loss": 1.7}}
    assert valid_score(linear) == ValidScore("accuracy", 0.9, True, 0.4)
    assert valid_score(lstm) == ValidScore("wer", 0.3, False, 12.0)
    assert valid_score(prompt) == ValidScore("loss", 1.7, False, 1.7)
    with pytest.raises(BenchError, match="no valid score"):
        valid_score({"method": "x", "main_metric": "accuracy", "info": {}})
    # a point whose valid WER was NaN (dropped from best_valid) scores worst on WER, not on another metric
    nan_wer = {"method": "lstm", "main_metric": "wer", "info": {"best_valid": {"loss": 9.0}}}
    scores = valid_scores([lstm, nan_wer])
    assert [s.metric for s in scores] == ["wer", "wer"] and choose(scores) == 0 and math.isnan(scores[1].value)


@pytest.mark.parametrize("spec, methods, match", [
    ("lr", ["linear"], "must look like KEY=V1,V2"),
    ("lr=1e-3", ["linear"], "at least two values"),
    ("lr=1e-3,0.001", ["linear"], "repeated"),
    ("lr=1e-3,abc", ["linear"], "expected a number"),
    ("nope=1,2", ["linear"], "no selected method has an option 'nope'"),
    ("projector_dim=64,128", ["linear", "lstm"], "lstm has no option 'projector_dim'"),
    ("lstm.lr=1,2", ["linear"], "not selected"),
])
def test_bad_search_specs_are_refused_before_any_work(spec, methods, match):
    with pytest.raises(BenchError, match=match):
        parse_search(spec, methods)


def test_search_values_take_each_methods_types_and_conflict_with_o():
    s = parse_search("linear.projector_dim=64,128", ["linear", "lstm"])
    assert s.values == {"linear": (64, 128)} and s.label(1) == "projector_dim=128"
    assert parse_search("lr=1e-4,1e-2", ["linear", "lstm"]).values == {"linear": (1e-4, 1e-2), "lstm": (1e-4, 1e-2)}
    with pytest.raises(BenchError, match="both set linear.lr"):
        parse_search("lr=1e-4,1e-2", ["linear"], {"linear": {"lr": 0.1}})


def test_cli_refuses_a_bad_search_with_exit_2_and_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--tasks", "builtin-ks", "--methods", "linear",
                        "--search", "lr=1e-3,fast", "--results", str(tmp_path)], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 2 and "linear.lr='fast'" in r.stderr and "Traceback" not in r.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_bench_run_search_on_builtin_ks_names_the_chosen_lr_and_keeps_the_three_valid_scores(tmp_path):
    """The issue's check, on fbank features (fast): `bench run --tasks builtin-ks --methods linear --search
    lr=1e-4,1e-3,1e-2` writes three grid-point records and one selection record per seed, and prints the cost."""
    r = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--tasks", "builtin-ks", "--methods", "linear",
                        "--search", "lr=1e-4,1e-3,1e-2", "--upstream", "fbank", "--size", "tiny", "--limit", "12",
                        "--max-epochs", "3", "--jobs", "1", "--results", str(tmp_path / "res")],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stdout + r.stderr
    records = read_records(tmp_path / "res")
    sel = [x for x in records if "search" in x]
    assert len(records) == 4 and len(sel) == 1
    s = sel[0]["search"]
    assert s["key"] == "lr" and s["grid"] == [1e-4, 1e-3, 1e-2] and s["chosen"] in s["grid"]
    assert set(s["valid"]) == {"0.0001", "0.001", "0.01"} and all(v is not None for v in s["valid"].values())
    assert s["valid"][f"{s['chosen']:g}"] == max(s["valid"].values())
    assert "search lr: 3 grid points" in r.stdout and "total" in r.stdout
    assert f"[lr={s['chosen']:g} on valid]" in r.stdout  # the leaderboard names the chosen value


def test_load_results_names_the_selection_and_its_chosen_value(toy, tmp_path):
    from bench.api import load_results

    task, _ = toy
    run_search([task], ["probe"], RunOptions(seeds=(0,), jobs=1), parse_search("lr=1e-3,1e-2", ["probe"]),
               tmp_path, **QUIET)
    df = load_results(tmp_path)
    assert len(df) == 3  # two grid points and the selection: one row per record
    sel = df[df.search_key.notna()]
    assert list(sel.search_key) == ["lr"] and list(sel.search_chosen) == [0.01]
