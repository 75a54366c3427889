"""bench compare: mean ± std over seeds, direction arrows, best in bold, parameter table, two result dirs."""

from __future__ import annotations

from bench.compare import build_leaderboard, records_frame, summarize, write_leaderboard
from bench.results import RecordKey, write_record


def put(root, task, method, seed, value, metric="accuracy", hib=True, trainable=100, origin="synthetic"):
    write_record(RecordKey(task, method, "fbank", seed).path(root), {
        "schema_version": 1, "task": task, "method": method, "upstream": "fbank", "seed": seed,
        "task_origin": origin, "scores": {metric: value}, "main_metric": metric,
        "higher_is_better": {metric: hib},
        "params": {"trainable": trainable, "frozen": 0, "stored_per_task": trainable}, "config_hash": "h"})


def test_mean_std_over_seeds_and_best_in_bold(tmp_path):
    for seed, v in enumerate([0.80, 0.90]):
        put(tmp_path, "ks", "linear", seed, v, trainable=64780)
    for seed, v in enumerate([0.70, 0.72, 0.74]):
        put(tmp_path, "ks", "prompt-gslm", seed, v, trainable=129024)
    put(tmp_path, "asr", "lstm", 0, 0.30, metric="wer", hib=False)
    put(tmp_path, "asr", "prompt-gslm", 0, 0.50, metric="wer", hib=False)
    lb = build_leaderboard(summarize(records_frame([tmp_path])))
    ks = "ks (synthetic) [accuracy ↑]"
    assert lb.scores.loc[ks, "linear (fbank)"] == "85.00 ± 7.07 (n=2)"
    assert lb.scores.loc[ks, "prompt-gslm (fbank)"] == "72.00 ± 2.00 (n=3)"
    assert "**85.00 ± 7.07 (n=2)**" in lb.markdown_scores
    assert "**30.00 (n=1)**" in lb.markdown_scores  # lower WER is better; one seed shows no fake ± 0.00
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
