"""The results store: atomic writes, resume by config hash, versions recorded."""

from __future__ import annotations

import json

import pytest

from bench.errors import BenchError
from bench.results import RecordKey, config_hash, existing_record, package_versions, read_records, write_record


def record(h="abc", **kw):
    return {"schema_version": 1, "task": "t", "method": "linear", "upstream": "fbank", "seed": 0,
            "scores": {"accuracy": 0.5}, "params": {"trainable": 1, "frozen": 0, "stored_per_task": 1},
            "config_hash": h, **kw}


def test_config_hash_is_canonical_and_sensitive():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_record_path_per_task_method_upstream_seed(tmp_path):
    p = RecordKey("builtin-ks", "linear", "hubert_local", 3).path(tmp_path)
    assert p == tmp_path / "builtin-ks" / "linear" / "hubert_local" / "seed-3.json"


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

    from bench.results import git_revision

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
