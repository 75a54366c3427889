"""The published reference tables load, match the published counts and values, and keep unverified cells flagged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.core.errors import BenchError
from bench.core.paths import repo_root
from bench.results.reference import (
    UNVERIFIED_MARK,
    available_references,
    load_reference,
    read_reference_file,
    reference_markdown,
    reference_table,
)

CORPUS_TASKS = {"ks-speech-commands-v1", "ic-fluent-speech-commands", "asr-librispeech", "sf-audio-snips", "scr-grabo",
                "scr-lt-speech-commands", "scr-ar-speech-commands", "lid-voxforge", "fsd-asvspoof2019-la", "er-iemocap",
                "acc-accentdb", "sd-mustard", "sd-mustardpp", "gid-voxceleb1", "auc-esc50"}
WEBSITE_ONLY_TASKS = {"scr-dm-speech-commands", "dyc-easycall", "sid-voxceleb1", "vad-freesound"}


def cell(df: pd.DataFrame, task: str, system: str, metric: str | None = None) -> pd.Series:
    sel = df[(df.task == task) & (df.system == system)]
    if metric:
        sel = sel[sel.metric == metric]
    assert len(sel) == 1, (task, system, metric, len(sel))
    return sel.iloc[0]


def test_every_shipped_reference_loads():
    assert available_references() == ["speechprompt-v1", "speechprompt-v2", "superb"]
    for name in available_references():
        df = load_reference(name)
        assert (df.source == name).all()
        assert df.citation.str.len().min() > 20
        assert set(df.task) <= CORPUS_TASKS | WEBSITE_ONLY_TASKS


def test_reference_tasks_are_registered_task_names_so_compare_lines_them_up():
    """`bench compare --reference` selects reference rows by the local records' task names."""
    from bench.tasks.registry import TaskRegistry

    registered = set(TaskRegistry().tasks)
    for name in available_references():
        assert set(load_reference(name).task) <= registered, name
    wide = reference_table("speechprompt-v2", tasks=["vad-freesound", "scr-dm-speech-commands", "dyc-easycall",
                                                     "sid-voxceleb1", "scr-ar-speech-commands"], numeric=True)
    got = wide.set_index("task")
    assert got.loc["vad-freesound", "GSLM+"] == pytest.approx(96.9)
    assert got.loc["scr-dm-speech-commands", "GSLM+"] == pytest.approx(82.5)
    assert got.loc["dyc-easycall", "pGSLM"] == pytest.approx(83.8)
    assert got.loc["sid-voxceleb1", "GSLM+"] == pytest.approx(0.9)
    assert got.loc["scr-ar-speech-commands", "pGSLM+"] == pytest.approx(92.6)


def test_speechprompt_v1_has_the_16_slide_cells():
    """Slides pp. 33-40: 4 tasks × {HuBERT, CPC} × {PT, FT}."""
    df = load_reference("speechprompt-v1")
    assert len(df) == 16
    assert df.groupby("system").size().to_dict() == {"HuBERT-PT": 4, "HuBERT-FT": 4, "CPC-PT": 4, "CPC-FT": 4}
    ks = cell(df, "ks-speech-commands-v1", "HuBERT-PT")
    assert ks.value == 95.16 and ks.trainable_params == 80_000 and ks.method == "prompt-gslm"
    assert cell(df, "ic-fluent-speech-commands", "HuBERT-PT").trainable_params == 150_000
    asr = cell(df, "asr-librispeech", "CPC-FT")
    assert (asr.value, asr.metric, asr.higher_is_better, asr.method) == (20.18, "wer", False, "lstm")
    assert cell(df, "ic-fluent-speech-commands", "CPC-FT").value == 64.09
    assert (df.verified == "yes").all()  # read from the authors' slides


def test_speechprompt_v2_has_17_rows_by_5_systems_minus_the_x_cells():
    df = load_reference("speechprompt-v2")
    x_cells = {("dyc-easycall", "Prior"), ("sid-voxceleb1", "GSLM"), ("sid-voxceleb1", "pGSLM")}
    assert df.task.nunique() == 17
    assert len(df) == 17 * 5 - len(x_cells)
    present = set(zip(df.task, df.system))
    assert not (x_cells & present)
    assert cell(df, "ks-speech-commands-v1", "GSLM").value == 0.945
    assert cell(df, "scr-ar-speech-commands", "GSLM+").value == 1.0
    assert cell(df, "auc-esc50", "pGSLM+").value == 0.270
    fsd = cell(df, "fsd-asvspoof2019-la", "GSLM+")
    assert (fsd.metric, fsd.higher_is_better, fsd.value) == ("eer", False, 0.135)
    assert (df.scale == "fraction").all()
    assert dict(zip(df.system, df.method)) == {"Prior": "prior-work", "GSLM": "prompt-gslm",
                                               "GSLM+": "prompt-gslm-lv", "pGSLM": "prompt-pgslm",
                                               "pGSLM+": "prompt-pgslm-lv"}
    # the three rows that appear on the website only are marked, every cell of them
    web = df[df.note.str.contains("website only")]
    assert set(web.task) == {"scr-dm-speech-commands", "dyc-easycall", "sid-voxceleb1"}
    assert len(web) == 5 + 4 + 3


def test_superb_memory_cells_are_flagged_unverified():
    """Only the 8 cells the SpeechPrompt slides quote are confirmed; every other SUPERB cell stays unverified."""
    df = load_reference("superb")
    confirmed = df[df.verified == "yes"]
    assert set(zip(confirmed.system, confirmed.task, confirmed.metric)) == {
        (s, t, m)
        for s in ("HuBERT Base", "modified CPC")
        for t, m in [("ks-speech-commands-v1", "accuracy"), ("ic-fluent-speech-commands", "accuracy"),
                     ("asr-librispeech", "wer"), ("sf-audio-snips", "slot_type_f1")]
    }
    unverified = df[df.verified == "unverified"]
    assert len(unverified) == len(df) - 8 and unverified.note.str.contains(r"\[memory\]").all()
    assert cell(df, "ks-speech-commands-v1", "HuBERT Base").value == 96.30
    assert cell(df, "sid-voxceleb1", "HuBERT Base").verified == "unverified"


def test_superb_head_parameter_counts_follow_the_s3prl_head():
    """UtteranceLevel head: L featurizer weights (if L > 1) + Linear(D, 256) + Linear(256, C)."""
    df = load_reference("superb")
    for system, dim, layers in [("FBANK", 240, 1), ("modified CPC", 256, 1), ("HuBERT Base", 768, 13)]:
        for task, classes in [("ks-speech-commands-v1", 12), ("ic-fluent-speech-commands", 24), ("er-iemocap", 4),
                              ("sid-voxceleb1", 1251)]:
            want = (layers if layers > 1 else 0) + dim * 256 + 256 + 256 * classes + classes
            assert cell(df, task, system).trainable_params == want
    assert cell(df, "ks-speech-commands-v1", "HuBERT Base").trainable_params == 199_961


def test_v1_ft_rows_agree_with_superb():
    v1, superb = load_reference("speechprompt-v1"), load_reference("superb")
    for v1_system, superb_system in [("HuBERT-FT", "HuBERT Base"), ("CPC-FT", "modified CPC")]:
        for _, row in v1[v1.system == v1_system].iterrows():
            assert cell(superb, row.task, superb_system, row.metric).value == row.value


def test_wide_table_puts_fractions_on_the_percent_scale_and_marks_unverified():
    wide = reference_table("speechprompt-v2", tasks=["ks-speech-commands-v1", "auc-esc50"], numeric=True)
    assert list(wide.columns) == ["task", "Prior", "GSLM", "GSLM+", "pGSLM", "pGSLM+"]
    assert wide.set_index("task").loc["ks-speech-commands-v1", "GSLM"] == pytest.approx(94.5)
    sup = reference_table("superb", tasks=["ks-speech-commands-v1", "sid-voxceleb1"]).set_index("task")
    assert sup.loc["ks-speech-commands-v1", "HuBERT Base"] == "96.30"
    assert sup.loc["sid-voxceleb1", "HuBERT Base"] == "81.42" + UNVERIFIED_MARK
    md = reference_markdown("superb", tasks=["sf-audio-snips"])
    assert "slot_type_f1 ↑" in md and UNVERIFIED_MARK + " unverified" in md and "88.53 |" in md
    assert reference_table("superb", tasks=["no-such-task"]).empty


def test_unknown_reference_suggests_the_closest_name():
    with pytest.raises(BenchError, match=r"did you mean 'superb'"):
        load_reference("superbb")


@pytest.mark.parametrize("column,bad,msg", [
    ("value", "9x", "is not a number"),
    ("verified", "maybe", "verified must be"),
    ("metric", "acuracy", "did you mean 'accuracy'"),
    ("higher_is_better", "false", "contradicts metric"),
    ("method", "prompt", "method 'prompt'"),
])
def test_malformed_rows_are_reported_with_file_and_line(tmp_path, column, bad, msg):
    src = repo_root() / "leaderboards" / "reference" / "speechprompt-v1.csv"
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    df.loc[0, column] = bad  # HuBERT-PT keyword spotting, accuracy
    path = tmp_path / "speechprompt-v1.csv"
    df.to_csv(path, index=False)
    with pytest.raises(BenchError, match=rf"speechprompt-v1.csv, line 2: .*{msg}"):
        read_reference_file(path)


def test_duplicate_cells_and_missing_columns_are_errors(tmp_path):
    src = repo_root() / "leaderboards" / "reference" / "speechprompt-v1.csv"
    lines = Path(src).read_text(encoding="utf-8").splitlines()
    dup = tmp_path / "dup.csv"
    dup.write_text("\n".join([*lines, lines[1]]) + "\n", encoding="utf-8")
    with pytest.raises(BenchError, match=r"line 18: duplicate cell .* \(also on line 2\)"):
        read_reference_file(dup)
    short = tmp_path / "short.csv"
    shutil.copy(src, short)
    df = pd.read_csv(short, dtype=str, keep_default_na=False).drop(columns=["citation"])
    df.to_csv(short, index=False)
    with pytest.raises(BenchError, match=r"missing \['citation'\]"):
        read_reference_file(short)
