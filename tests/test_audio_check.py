"""Bad audio is found before compute: `bench data check` decodes every file and names each bad one by path;
`bench run` refuses such a task (nothing computed, exit 1) unless --skip-bad-audio drops the files, which the
records then list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.data.audio import write_audio
from bench.data.audio_check import MIN_SECONDS, check_manifest_audio, inspect_file
from bench.data.manifest import Example, Manifest

SR = 16_000


def bench(*args, home: Path):
    env = {**os.environ, "BENCH_HOME": str(home), "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def _good(path: Path, seconds: float = 0.25, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    write_audio(path, (0.1 * rng.standard_normal(int(seconds * SR))).astype(np.float32))


def make_bad_files(d: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, expected words of the problem), one file per kind of bad audio."""
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    (d / "zero.wav").write_bytes(b"")
    out["zero"] = (d / "zero.wav", "empty file (0 bytes)")
    (d / "text.wav").write_text("this is not audio, it is a text file\n" * 20)
    out["text"] = (d / "text.wav", "not decodable audio")
    (d / "random.wav").write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out["random"] = (d / "random.wav", "not decodable audio")
    sf.write(str(d / "header.wav"), np.zeros(0, np.float32), SR, subtype="PCM_16")  # a 44-byte header, no data
    out["header"] = (d / "header.wav", "no samples")
    _good(d / "full.wav")
    (d / "cut.wav").write_bytes((d / "full.wav").read_bytes()[:30])  # a truncated header
    out["cut"] = (d / "cut.wav", "not decodable audio")
    nan = np.full(SR // 4, 0.1, np.float32)
    nan[100] = np.nan
    sf.write(str(d / "nan.wav"), nan, SR, subtype="FLOAT")
    out["nan"] = (d / "nan.wav", "NaN or Inf")
    inf = np.full(SR // 4, 0.1, np.float32)
    inf[7] = np.inf
    sf.write(str(d / "inf.wav"), inf, SR, subtype="FLOAT")
    out["inf"] = (d / "inf.wav", "NaN or Inf")
    _good(d / "long.wav", seconds=0.5, seed=3)  # a copy cut short: data shorter than the header declares
    whole = (d / "long.wav").read_bytes()
    (d / "long.wav").unlink()
    (d / "halved.wav").write_bytes(whole[: len(whole) // 2])
    out["halved"] = (d / "halved.wav", "truncated: the WAV header declares 16000 bytes of audio data, the file "
                                       "holds 7978")
    _good(d / "short.wav", seconds=0.02)
    out["short"] = (d / "short.wav", f"too short: 0.020 s (minimum {MIN_SECONDS:g} s)")
    return out


def test_each_kind_of_bad_file_is_named_with_its_problem(tmp_path):
    bad = make_bad_files(tmp_path / "bad")
    for name, (path, words) in bad.items():
        if name != "short":  # length is judged per utterance (a segment of a file may be short)
            assert words in (inspect_file(path)["problem"] or ""), (name, inspect_file(path))
    m = Manifest([Example(name, str(path), "a", "train") for name, (path, _) in bad.items()])
    report = check_manifest_audio(m, cache_dir=tmp_path / "cache")
    assert [(b.id, b.path) for b in report.bad] == [(name, str(path)) for name, (path, _) in bad.items()]
    assert all(words in b.problem for b, (_, words) in zip(report.bad, bad.values()))
    assert "missing" in inspect_file(tmp_path / "absent.wav")["problem"]
    _good(tmp_path / "ok.wav")
    assert inspect_file(tmp_path / "ok.wav") == {"problem": None, "frames": 4000, "sample_rate": SR}


def test_segments_results_cache_and_a_changed_file_is_checked_again(tmp_path):
    _good(tmp_path / "long.wav", seconds=1.0)
    exs = [Example("whole", "long.wav", "a", "train"),
           Example("seg", "long.wav", "a", "train", start=0.5, end=0.52),  # 20 ms of a good file
           Example("late", "long.wav", "a", "train", start=2.0, end=3.0)]
    m = Manifest(exs, tmp_path)
    r = check_manifest_audio(m, cache_dir=tmp_path / "cache")
    assert r.files == 1 and r.decoded == 1 and r.checked == 3
    assert [(b.id, b.problem.split(":")[0]) for b in r.bad] == [
        ("seg", "too short"), ("late", "segment starts at 2 s, after the end of the file (1.000 s)")]
    again = check_manifest_audio(m, cache_dir=tmp_path / "cache")
    assert again.decoded == 0 and [b.id for b in again.bad] == ["seg", "late"]
    cache = json.loads((tmp_path / "cache" / "audio_check.json").read_text())
    assert len(cache["files"]) == 1 and not list((tmp_path / "cache").glob(".*.tmp"))
    (tmp_path / "long.wav").write_bytes(b"")  # the file changes: checked again, now bad
    third = check_manifest_audio(m, cache_dir=tmp_path / "cache")
    assert third.decoded == 1 and {b.problem for b in third.bad} == {"empty file (0 bytes)"}


TASK = """\
name: my-bad
version: 1
family: KS
kind: classification
origin: real-human
description: a user manifest with every kind of bad audio file in its training split
labels: [yes, no]
metrics: [accuracy]
data: {source: manifest, path: list.csv}
"""


@pytest.fixture
def bad_corpus(tmp_path):
    """A CSV task: 4 good files per split, plus every kind of bad file in train."""
    root = tmp_path / "corpus"
    bad = make_bad_files(root / "bad")
    rows = ["audio,label,speaker,split"]
    for split in ("train", "valid", "test"):
        for i in range(4):
            _good(root / "good" / f"{split}{i}.wav", seed=hash((split, i)) % 1000)
            rows.append(f"good/{split}{i}.wav,{'yes' if i % 2 else 'no'},{split}-spk{i},{split}")
    for name, (path, _) in bad.items():
        rows.append(f"bad/{path.name},yes,bad-{name},train")
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    (root / "my-bad.yaml").write_text(textwrap.dedent(TASK))
    return root, bad


def test_data_check_decodes_every_file_and_names_each_bad_one(bad_corpus, tmp_path):
    root, bad = bad_corpus
    r = bench("data", "check", "my-bad", "--task-dir", str(root), home=tmp_path / "home")
    assert r.returncode == 1, r.stdout + r.stderr
    out = " ".join(r.stdout.split())
    for name, (path, words) in bad.items():
        assert f"{path} (bad/{path.stem}): " in out and words in out, (name, out)
    assert f"{len(bad)} bad audio file(s)" in out and "minimum length 0.05 s" in out
    (root / "good" / "train0.wav").unlink()  # a missing file is named by the corpus report
    r = bench("data", "check", "my-bad", "--task-dir", str(root), home=tmp_path / "home")
    assert r.returncode == 1 and f"missing: audio file {root / 'good' / 'train0.wav'}" in r.stdout
    assert "missing (no such file)" in r.stdout


def test_run_refuses_a_task_with_bad_audio_and_computes_nothing(bad_corpus, tmp_path):
    root, bad = bad_corpus
    home, results = tmp_path / "home", tmp_path / "results"
    r = bench("run", "--tasks", "my-bad", "--methods", "linear", "--task-dir", str(root), "--results", str(results),
              "--leaderboards", str(tmp_path / "lb"), "-o", "linear.max_epochs=2", home=home)
    assert r.returncode == 1, r.stdout + r.stderr
    out = " ".join(r.stdout.split())
    for path, _ in bad.values():
        assert str(path) in out
    assert "skipped my-bad: 9 of 21 utterance(s) have bad audio" in out and "--skip-bad-audio" in out
    assert not list(results.rglob("*.json")) and not list((home / "cache").rglob("features"))  # either mode


def test_skip_bad_audio_drops_the_files_and_records_which(bad_corpus, tmp_path):
    root, bad = bad_corpus
    home, results = tmp_path / "home", tmp_path / "results"
    (root / "good" / "train0.wav").unlink()  # a missing file is dropped too
    r = bench("run", "--tasks", "my-bad", "--methods", "linear", "--task-dir", str(root), "--results", str(results),
              "--leaderboards", str(tmp_path / "lb"), "-o", "linear.max_epochs=2", "--skip-bad-audio", home=home)
    assert r.returncode == 0, r.stdout + r.stderr
    (record,) = [p for p in results.rglob("seed-*.json")]
    rec = json.loads(record.read_text())
    assert rec["data"]["dropped_bad_audio"] == sorted([*(f"bad/{p.stem}" for p, _ in bad.values()), "good/train0"])
    assert rec["data"]["sizes"] == {"train": 3, "valid": 4, "test": 4}
    assert not (results / ".work").exists()
