"""The results store: atomic writes, resume by config hash, versions recorded."""

from __future__ import annotations

import json

import pytest

from bench.core.errors import BenchError
from bench.results.records import (RecordKey, config_hash, cpu_info, environment, existing_record, group_hash,
                           outputs_record, outputs_scores, package_versions, read_records, record_group, write_record)


def record(h="abc", **kw):
    return {"schema_version": 1, "task": "t", "method": "linear", "upstream": "fbank", "seed": 0,
            "scores": {"accuracy": 0.5}, "params": {"trainable": 1, "frozen": 0, "stored_per_task": 1},
            "config_hash": h, **kw}


def test_config_hash_is_canonical_and_sensitive():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_record_path_per_task_method_upstream_seed(tmp_path):
    """Schema 1 (no group): the old layout, still how old result directories read."""
    p = RecordKey("builtin-ks", "linear", "hubert_local", 3).path(tmp_path)
    assert p == tmp_path / "builtin-ks" / "linear" / "hubert_local" / "seed-3.json"


def test_record_path_carries_the_configuration_without_the_seed(tmp_path):
    cfg = {"task": "t", "seed": 0, "method": {"lr": 0.001}}
    g = group_hash(cfg)
    assert g == group_hash({**cfg, "seed": 7}) != group_hash({**cfg, "method": {"lr": 0.01}})
    assert config_hash(cfg) != config_hash({**cfg, "seed": 7})  # the record identity keeps the seed
    p = RecordKey("t", "linear", "fbank", 3, group=g).path(tmp_path)
    assert p == tmp_path / "t" / "linear" / "fbank" / g[:12] / "seed-3.json"
    # old records: group computed from their stored config, or '' when they have none
    assert record_group({"config": cfg}) == g and record_group({"group_hash": "x", "config": cfg}) == "x"
    assert record_group({}) == ""


def test_both_layouts_read(tmp_path):
    write_record(RecordKey("t", "linear", "fbank", 0).path(tmp_path), record())
    write_record(RecordKey("t", "linear", "fbank", 0, group="a" * 64).path(tmp_path), record("def"))
    assert sorted(r["config_hash"] for r in read_records(tmp_path)) == ["abc", "def"]


def test_outputs_are_compact_and_round_trip(tmp_path):
    scores = [{"yes": 0.123456789, "no": -1.0e-7}, {"yes": 2.0}]
    out = outputs_record(["u1", "u2"], ["yes", "no"], ["yes", "yes"], scores)
    assert out["scores"] == {"labels": ["no", "yes"], "values": [[-1e-07, 0.123457], [None, 2.0]]}
    assert outputs_scores(out) == [{"no": -1e-07, "yes": 0.123457}, {"yes": 2.0}]
    assert "scores" not in outputs_record(["u"], ["a"], ["a"], None)
    p = tmp_path / "seed-0.json"
    write_record(p, record(outputs=out))
    text = p.read_text()
    assert '"values": [\n' in text and "[-1e-07, 0.123457]" in text  # one line per utterance's scores
    assert json.loads(text)["outputs"] == out


def test_environment_names_cpu_isa_torch_build_and_threads():
    info = cpu_info("processor : 0\nmodel name : Test CPU 9000\nflags : fpu sse4_2 avx avx2 avx512f amx_tile pni\n")
    assert info["model"] == "Test CPU 9000" and info["isa"] == ["amx_tile", "avx", "avx2", "avx512f", "sse4_2"]
    env = environment("cpu")
    assert env["device"].startswith("cpu") and env["cpu"]["model"]
    assert env["torch"]["version"] and isinstance(env["torch"]["mkldnn"], bool) and "blas_info" in env["torch"]
    assert env["threads"]["torch"] >= 1


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    p = RecordKey("t", "linear", "fbank", 0).path(tmp_path)
    write_record(p, record())
    assert json.loads(p.read_text())["config_hash"] == "abc"
    assert [f.name for f in p.parent.iterdir()] == ["seed-0.json"]


def test_incomplete_record_is_refused(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        write_record(tmp_path / "x.json", {"task": "t"})


def test_existing_record_matches_only_the_same_config(tmp_path):
    p = tmp_path / "seed-0.json"
    assert existing_record(p, "abc") is None
    write_record(p, record("abc"))
    assert existing_record(p, "abc") is not None
    assert existing_record(p, "other") is None
    p.write_text("{truncated")  # a crash mid-write of an older non-atomic tool: treated as absent
    assert existing_record(p, "abc") is None


def test_read_records_ignores_temporaries_and_names_bad_files(tmp_path):
    write_record(RecordKey("t", "linear", "fbank", 0).path(tmp_path), record())
    (tmp_path / "t" / ".seed-1.json.x.tmp").write_text("{")
    assert len(read_records(tmp_path)) == 1
    bad = tmp_path / "t" / "linear" / "fbank" / "seed-9.json"
    bad.write_text("{")
    with pytest.raises(BenchError, match="seed-9.json"):
        read_records(tmp_path)


def test_versions_include_the_stack():
    v = package_versions()
    for name in ("bench", "python", "torch", "s3prl"):
        assert name in v


def test_atomic_directory_appears_whole_or_not_at_all(tmp_path):
    """A default-LM directory is built in a temporary sibling: a failure leaves neither it nor a partial copy; a
    success replaces an older directory in one rename."""
    from bench.data.manifest import atomic_directory

    out = tmp_path / "ulm-default"
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as tmp:
            (tmp / "checkpoint_best.pt").write_text("half")
            raise RuntimeError("interrupted")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_directory(out) as tmp:
        (tmp / "checkpoint_best.pt").write_text("whole")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint_best.pt"] and list(tmp_path.iterdir()) == [out]


def test_git_revision_is_dirty_only_for_code_and_definitions(tmp_path):
    """Records written into a tracked leaderboard directory must not mark the next records '-dirty'."""
    import subprocess

    from bench.results.records import git_revision

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "m.py").write_text("x = 1\n")
    (tmp_path / "leaderboards").mkdir()
    (tmp_path / "leaderboards" / "r.json").write_text("{}\n")
    git("add", "-A")
    git("commit", "-qm", "init")
    assert not git_revision(tmp_path).endswith("-dirty")
    (tmp_path / "leaderboards" / "r.json").write_text('{"a": 1}\n')
    (tmp_path / "leaderboards" / "new.json").write_text("{}\n")
    assert not git_revision(tmp_path).endswith("-dirty")
    (tmp_path / "bench" / "new.py").write_text("y = 2\n")  # untracked code counts
    assert git_revision(tmp_path).endswith("-dirty")
    (tmp_path / "bench" / "new.py").unlink()
    (tmp_path / "bench" / "m.py").write_text("x = 2\n")
    assert git_revision(tmp_path).endswith("-dirty")
