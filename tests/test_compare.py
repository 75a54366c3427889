"""bench compare: mean ± std over seeds, direction arrows, best in bold, parameter table, two result dirs; only
records that differ by seed alone averaged; bootstrap intervals and significance from stored outputs."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.results.compare import build_leaderboard, config_labels, records_frame, summarize, write_leaderboard
from bench.results.records import RecordKey, group_hash, outputs_record, write_record


def put(root, task, method, seed, value, metric="accuracy", hib=True, trainable=100, origin="synthetic"):
    """A schema-1 record: old layout, no config, no outputs."""
    write_record(RecordKey(task, method, "fbank", seed).path(root), {
        "schema_version": 1, "task": task, "method": method, "upstream": "fbank", "seed": seed,
        "task_origin": origin, "scores": {metric: value}, "main_metric": metric,
        "higher_is_better": {metric: hib},
        "params": {"trainable": trainable, "frozen": 0, "stored_per_task": trainable}, "config_hash": "h"})


def put2(root, method, seed, correct, lr=0.001, limit=None, task="ks"):
    """A schema-2 record with outputs: ``correct`` says which of the test utterances the method got right."""
    cfg = {"task": task, "seed": seed, "data": {"size": "default", "limit": limit}, "method": {"lr": lr}}
    g = group_hash(cfg)
    refs = ["yes" if i % 2 else "no" for i in range(len(correct))]
    hyps = [r if c else "other" for r, c in zip(refs, correct)]
    write_record(RecordKey(task, method, "fbank", seed, group=g).path(root), {
        "schema_version": 2, "task": task, "method": method, "upstream": "fbank", "seed": seed,
        "task_origin": "synthetic", "scores": {"accuracy": sum(correct) / len(correct)}, "main_metric": "accuracy",
        "higher_is_better": {"accuracy": True}, "positive_label": None,
        "params": {"trainable": 10, "frozen": 0, "stored_per_task": 10}, "config": cfg, "config_hash": f"c{seed}{g}",
        "group_hash": g, "outputs": outputs_record([f"u{i}" for i in range(len(correct))], refs, hyps)})


def test_mean_std_over_seeds_and_best_in_bold(tmp_path):
    for seed, v in enumerate([0.80, 0.90]):
        put(tmp_path, "ks", "linear", seed, v, trainable=64780)
    for seed, v in enumerate([0.70, 0.72, 0.74]):
        put(tmp_path, "ks", "prompt-gslm", seed, v, trainable=129024)
    put(tmp_path, "asr", "lstm", 0, 0.30, metric="wer", hib=False)
    put(tmp_path, "asr", "prompt-gslm", 0, 0.50, metric="wer", hib=False)
    lb = build_leaderboard(summarize(records_frame([tmp_path])))
    ks = "ks (synthetic) [accuracy ↑]"
    # old records have no outputs: no interval ('–'), no significance mark
    assert lb.scores.loc[ks, "linear (fbank)"] == "85.00 ± 7.07 (n=2) [–]"
    assert lb.scores.loc[ks, "prompt-gslm (fbank)"] == "72.00 ± 2.00 (n=3) [–]"
    assert "**85.00 ± 7.07 (n=2) [–]**" in lb.markdown_scores
    assert "**30.00 (n=1) [–]**" in lb.markdown_scores  # lower WER is better; one seed shows no fake ± 0.00
    assert "asr (synthetic) [wer ↓]" in lb.markdown_scores
    assert lb.params.loc["ks", "prompt-gslm (fbank)"] == 129024
    files = write_leaderboard(lb, tmp_path / "lb")
    assert {f.name for f in files} >= {"leaderboard-scores.csv", "leaderboard-scores.md", "leaderboard-params.md",
                                       "leaderboard-score-vs-params.png"}
    assert all(f.stat().st_size > 0 for f in files)


def test_two_result_directories_side_by_side(tmp_path):
    put(tmp_path / "a", "ks", "linear", 0, 0.5)
    put(tmp_path / "b", "ks", "linear", 0, 0.6)
    lb = build_leaderboard(summarize(records_frame([tmp_path / "a", tmp_path / "b"], ["a", "b"])))
    assert list(lb.scores.columns) == ["a: linear (fbank)", "b: linear (fbank)"]


def test_config_labels_name_the_differing_settings():
    a = {"task": "x", "seed": 0, "max_epochs": None, "data": {"limit": None}, "method": {"lr": 0.001, "max_epochs": 9}}
    b = {**a, "method": {"lr": 0.01, "max_epochs": 9}}
    c = {**a, "max_epochs": 3, "method": {"lr": 0.001, "max_epochs": 3}}
    assert config_labels({"a": a}) == {"a": ""}
    assert config_labels({"a": a, "b": b}) == {"a": "lr=0.001", "b": "lr=0.01"}
    assert config_labels({"a": a, "c": c}) == {"a": "max_epochs=none, method.max_epochs=9",
                                               "c": "max_epochs=3, method.max_epochs=3"}
    d = {**a, "task": "other", "task_fingerprint": "f", "manifest_sha256": "m"}  # task keys are not settings
    assert config_labels({"a": a, "d": d}) == {"a": "", "d": ""}


def test_intervals_significance_and_variants_from_outputs(tmp_path):
    n = 200
    good = [i % 10 < 8 for i in range(n)]  # 80 %
    close = [i % 10 < 8 and i != 2 for i in range(n)]  # 79.5 %: differs on one utterance
    bad = [i % 10 < 5 for i in range(n)]  # 50 %
    put2(tmp_path, "linear", 0, good)
    put2(tmp_path, "linear", 1, good)
    put2(tmp_path, "linear", 0, close, lr=0.01)
    put2(tmp_path, "prompt", 0, bad)
    put2(tmp_path, "prompt", 0, good, limit=3)
    s = summarize(records_frame([tmp_path]))
    lb = build_leaderboard(s)
    row = lb.scores.loc["ks (synthetic) [accuracy ↑]"]
    assert list(row.index) == ["linear (fbank) [lr=0.001]", "linear (fbank) [lr=0.01]",
                               "prompt (fbank) [limit=none]", "prompt (fbank) [limit=3] (smoke)"]
    num = lb.scores_numeric.set_index("system")
    best = num.loc["linear (fbank) [lr=0.001]"]
    assert best["n"] == 2 and best["best"] and best["rescored"] == pytest.approx(0.8)
    assert best["ci_low"] < 0.8 < best["ci_high"]
    assert num.loc["linear (fbank) [lr=0.01]", "test"] == "paired-bootstrap"  # two seeds against one
    assert num.loc["linear (fbank) [lr=0.01]", "p_vs_best"] > 0.05 and row.iloc[1].endswith(" ≈")
    assert num.loc["prompt (fbank) [limit=none]", "p_vs_best"] < 0.001 and not row.iloc[2].endswith("≈")
    assert row.iloc[0].startswith("80.00 ± 0.00 (n=2) [") and "**" + row.iloc[0] + "**" in lb.markdown_scores
    assert "(smoke)" in lb.markdown_scores and "bootstrap" in lb.markdown_scores
    files = write_leaderboard(lb, tmp_path / "lb")
    csv = pd.read_csv(next(f for f in files if f.name == "leaderboard-scores.csv"))
    assert {"ci_low", "ci_high", "p_vs_best", "test", "variant", "group", "limit"} <= set(csv.columns)
    assert csv["ci_low"].notna().all()


def test_mcnemar_for_single_seed_accuracy(tmp_path):
    put2(tmp_path, "a", 0, [True] * 30 + [False] * 10)
    put2(tmp_path, "b", 0, [True] * 20 + [False] * 20)
    num = build_leaderboard(summarize(records_frame([tmp_path]))).scores_numeric.set_index("method")
    from scipy.stats import binomtest

    assert num.loc["b", "test"] == "mcnemar-exact"
    assert num.loc["b", "p_vs_best"] == pytest.approx(binomtest(0, 10, 0.5).pvalue)  # b never right where a is wrong


def test_a_stored_score_that_its_outputs_do_not_reproduce_is_reported(tmp_path):
    from bench.results.compare import rescore_mismatches

    put2(tmp_path, "a", 0, [True] * 3 + [False])
    assert rescore_mismatches(summarize(records_frame([tmp_path]))) == []
    p = next(tmp_path.rglob("seed-0.json"))
    p.write_text(p.read_text().replace('"accuracy": 0.75', '"accuracy": 0.5'))
    assert rescore_mismatches(summarize(records_frame([tmp_path]))) == [
        "ks × a (fbank) accuracy: stored 0.500000, re-scored 0.750000"]


def _compare_cli(*args, cwd, monkeypatch):
    from typer.testing import CliRunner

    from bench.cli import app

    monkeypatch.chdir(cwd)
    return CliRunner().invoke(app, ["compare", *args])  # click ≥ 8.2: .stderr apart, .output both


def test_compare_writes_beside_the_results_never_into_the_cwd(tmp_path, monkeypatch):
    """A checkout's committed ./leaderboards is never overwritten by `bench compare RESULTS`."""
    put(tmp_path / "res", "ks", "linear", 0, 0.5)
    put(tmp_path / "other", "ks", "linear", 0, 0.6)
    r = _compare_cli(str(tmp_path / "res"), cwd=tmp_path, monkeypatch=monkeypatch)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "res" / "leaderboards" / "leaderboard-scores.md").is_file()
    assert not (tmp_path / "leaderboards").exists()
    r = _compare_cli(str(tmp_path / "res"), str(tmp_path / "other"), cwd=tmp_path, monkeypatch=monkeypatch)
    assert r.exit_code == 0 and "no files written" in r.output, r.output
    assert not (tmp_path / "other" / "leaderboards").exists() and not (tmp_path / "leaderboards").exists()
    r = _compare_cli(str(tmp_path / "res"), str(tmp_path / "other"), "--out", str(tmp_path / "ab"), cwd=tmp_path,
                     monkeypatch=monkeypatch)
    assert r.exit_code == 0 and (tmp_path / "ab" / "leaderboard-scores.csv").is_file()


def test_an_unreadable_record_is_skipped_with_a_warning_naming_it(tmp_path, monkeypatch):
    put(tmp_path / "res", "ks", "linear", 0, 0.5)
    put(tmp_path / "res", "ks", "linear", 1, 0.7)
    put(tmp_path / "res", "ks", "lstm", 0, 0.9)
    bad = RecordKey("ks", "linear", "fbank", 2).path(tmp_path / "res")
    bad.write_text('{"schema_version": 1, "task": "ks"')  # cut short
    broken = RecordKey("ks", "lstm", "fbank", 1).path(tmp_path / "res")
    broken.write_text('{"schema_version": 1, "task": "ks", "method": "lstm", "upstream": "fbank", "seed": 1, '
                      '"scores": {"accuracy": 0.1}, "params": null, "config_hash": "h"}')  # no parameter counts
    skipped = []
    df = records_frame([tmp_path / "res"], skipped=skipped)
    assert sorted(p for p, _ in skipped) == sorted([str(bad), str(broken)]) and len(df) == 3
    with pytest.raises(Exception, match="not a valid result record"):
        records_frame([tmp_path / "res"])  # without a list to note them in, still an error
    r = _compare_cli(str(tmp_path / "res"), cwd=tmp_path, monkeypatch=monkeypatch)
    assert r.exit_code == 0, r.output
    err = " ".join(r.stderr.split())
    assert f"warning: skipped {bad}: not a readable result record" in err, err
    assert f"warning: skipped {broken}: malformed result record (params)" in err
    table = (tmp_path / "res" / "leaderboards" / "leaderboard-scores.md").read_text()
    assert "60.00 ± 14.14 (n=2)" in table and "90.00 (n=1)" in table  # the readable records, and only those
