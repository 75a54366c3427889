"""Corpus roots come from --root, $BENCH_CORPUS_<KEY> or the user config file; a corpus that is not configured or
not present is refused with a message saying how to configure it and where to get it; `bench data check` prints it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.data.corpora.base import check_corpus, load_corpus
from bench.data.sources import is_available, prepare_manifest
from bench.core.errors import DataMissingError
from bench.tasks.registry import TaskRegistry, load_task_file
from bench.core.userconfig import configured_corpora, corpus_root

REPO = Path(__file__).resolve().parent.parent
KS = REPO / "tasks" / "corpora" / "ks-speech-commands-v1.yaml"


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in list(os.environ):
        if var.startswith("BENCH_CORPUS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("BENCH_CONFIG", str(tmp_path / "no-config.yaml"))
    (tmp_path / "no-config.yaml").write_text("")
    return monkeypatch


def _esc50(root: Path) -> None:
    from test_corpora_adapters import text, wav  # the shared tree helpers

    spec = load_task_file(REPO / "tasks" / "corpora" / "auc-esc50.yaml")
    lines = ["filename,fold,target,category,esc10,src_file,take\n"]
    for fold in range(1, 6):
        name = f"{fold}-1-A-0.wav"
        lines.append(f"{name},{fold},0,{spec.labels[0]},False,{fold},A\n")
        wav(root / "audio" / name, seconds=0.02)
    text(root / "meta" / "esc50.csv", "".join(lines))


def test_unconfigured_corpus_is_refused_with_how_to_configure(clean_env, bench_home):
    spec = load_task_file(KS)
    report = check_corpus(spec)
    assert not report.ok and not is_available(spec)
    msg = report.render()
    assert "$BENCH_CORPUS_SPEECH_COMMANDS_V1" in msg and "corpora: {speech_commands_v1: DIR}" in msg
    assert "download.tensorflow.org" in msg  # where to get it
    with pytest.raises(DataMissingError, match="not configured"):
        prepare_manifest(spec)


def test_root_from_environment_or_config_file_relative_to_the_file(clean_env, tmp_path, bench_home):
    corpus = tmp_path / "corpora" / "ESC-50-master"
    _esc50(corpus)
    spec = load_task_file(REPO / "tasks" / "corpora" / "auc-esc50.yaml")
    cfg = tmp_path / "cfg" / "config.yaml"
    cfg.parent.mkdir()
    cfg.write_text("corpora:\n  esc50: ../corpora/ESC-50-master\n")
    clean_env.setenv("BENCH_CONFIG", str(cfg))
    root = corpus_root("esc50")
    assert root.path == corpus.resolve() and root.origin.endswith("corpora.esc50")
    assert configured_corpora() == {"esc50": f"{cfg}: corpora.esc50"}
    m = prepare_manifest(spec)
    assert m.sizes() == {"train": 4 - 1, "valid": 1, "test": 1}  # 4 recordings in folds 2-5: 80/20
    assert (bench_home / "data" / "auc-esc50" / "corpus" / "build.json").is_file()
    clean_env.setenv("BENCH_CORPUS_ESC50", str(tmp_path / "elsewhere"))
    with pytest.raises(DataMissingError, match=r"\$BENCH_CORPUS_ESC50.*not a directory"):
        corpus_root("esc50")
    assert check_corpus(spec, corpus).ok  # --root wins over both


def test_bench_data_check_prints_the_report_and_fails_when_missing(clean_env, tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    ok = subprocess.run([sys.executable, "-m", "bench.cli", "data", "check", "ks-speech-commands-v1", "--root",
                         str(tmp_path)], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert ok.returncode == 1
    assert "speech_commands_v0.01" in ok.stdout and "missing" in ok.stdout


def test_every_corpus_task_file_is_valid_and_names_an_adapter_module():
    import importlib

    reg = TaskRegistry([REPO / "tasks" / "corpora"])
    names = [s.name for s in reg.select("corpus")]
    assert len(names) == 19
    for spec in reg:
        assert spec.origin == "corpus" and spec.data.root_key and spec.split_rule and spec.card
        assert {"speechprompt-v1", "speechprompt-v2", "superb"} & set(spec.groups)
        importlib.import_module(f"bench.data.corpora.{spec.data.adapter}").Adapter(spec, Path("."))
