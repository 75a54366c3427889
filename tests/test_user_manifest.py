"""A user's CSV/JSONL list of audio files is a task without code: classification or generation, given or seeded
speaker-disjoint splits, and a bad row is named by file and line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench.data.audio import write_audio
from bench.data.sources import check_data, prepare_manifest
from bench.core.errors import DataMissingError
from bench.tasks.registry import TaskRegistry, load_task_file


def _task(dir: Path, name: str, body: str) -> Path:
    p = dir / f"{name}.yaml"
    p.write_text(textwrap.dedent(body))
    return p


def _audio(dir: Path, n: int) -> list[str]:
    out = []
    for i in range(n):
        write_audio(dir / "audio" / f"u{i:02d}.wav", np.zeros(320, np.float32) + 0.01 * (i + 1))
        out.append(f"audio/u{i:02d}.wav")
    return out


CLS = """\
name: my-yesno
version: 1
family: KS
kind: classification
origin: real-human
description: my own yes/no recordings
labels: [yes, no]
metrics: [accuracy]
data: {{source: manifest, path: {path}{extra}}}
"""


def test_csv_without_split_column_gets_a_seeded_speaker_disjoint_split(tmp_path, bench_home):
    files = _audio(tmp_path, 20)
    rows = ["audio,label,speaker"] + [f"{f},{'yes' if i % 2 else 'no'},spk{i // 2}" for i, f in enumerate(files)]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    spec = load_task_file(_task(tmp_path, "my-yesno", CLS.format(path="list.csv", extra="")))
    m = prepare_manifest(spec)
    assert m.sizes() == {"train": 16, "valid": 2, "test": 2}
    speakers = {s: m.speakers(s) for s in ("train", "valid", "test")}
    assert not (speakers["train"] & speakers["test"]) and not (speakers["train"] & speakers["valid"])
    assert Path(m.examples[0].path).is_absolute() and Path(m.examples[0].path).is_file()
    assert prepare_manifest(spec).checksum() == m.checksum()
    assert (bench_home / "data" / "my-yesno" / "manifest" / "manifest.jsonl").is_file()
    seeded = spec.model_copy(update={"data": spec.data.model_copy(update={"params": {"seed": 5}})})
    assert prepare_manifest(seeded).checksum() != m.checksum()
    report = check_data(spec)
    assert report.ok and report.speaker_disjoint is True and "speaker-disjoint" in report.render()


def test_jsonl_generation_task_with_given_splits_and_audio_root(tmp_path, bench_home):
    files = _audio(tmp_path / "wavs", 3)
    lines = [{"path": f, "text": "hello world", "split": s} for f, s in zip(files, ("train", "dev", "test"))]
    (tmp_path / "list.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    body = CLS.replace("KS", "ASR").replace("classification", "generation").replace("labels: [yes, no]\n", "")
    body = body.replace("[accuracy]", "[wer]")
    spec = load_task_file(_task(tmp_path, "my-asr", body.format(path="list.jsonl", extra=", audio_root: wavs")))
    m = prepare_manifest(spec)
    assert m.sizes() == {"train": 1, "valid": 1, "test": 1}
    assert m.split("valid")[0].label == "hello world"


def test_unknown_label_and_missing_audio_are_reported_with_file_and_line(tmp_path, bench_home):
    files = _audio(tmp_path, 3)
    (tmp_path / "list.csv").write_text(f"audio,label,split\n{files[0]},yes,train\n{files[1]},maybe,valid\n"
                                       f"{files[2]},no,test\n")
    spec = load_task_file(_task(tmp_path, "my-yesno", CLS.format(path="list.csv", extra="")))
    report = check_data(spec)
    assert not report.ok and f"{tmp_path / 'list.csv'}:3" in report.render() and "'maybe'" in report.render()
    with pytest.raises(DataMissingError):
        prepare_manifest(spec)
    (tmp_path / "list.csv").write_text(f"audio,label,split\n{files[0]},yes,train\ngone.wav,no,valid\n"
                                       f"{files[2]},no,test\n")
    assert "gone.wav" in check_data(spec).render()
    (tmp_path / "list.csv").unlink()
    with pytest.raises(DataMissingError, match="list.csv"):
        prepare_manifest(spec)


def test_a_manifest_task_is_found_by_the_registry_as_group_manifest(tmp_path):
    _task(tmp_path, "my-yesno", CLS.format(path="list.csv", extra=""))
    reg = TaskRegistry([tmp_path])
    assert [s.name for s in reg.select("manifest")] == ["my-yesno"]
