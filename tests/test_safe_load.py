"""Loading a model file never runs code from it: a pickle whose ``__reduce__`` writes a marker file is refused,
naming the file and the global it asked for, everywhere bench accepts a model file (unit-LM and pGSLM
checkpoints, km.bin written by joblib or pickle, F0 bins, MUStARD's fold file, ``bench models --verify``, a run);
real-format files still load with no flag; ``--trust-model-files`` is the only way past, and the record says so."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from bench.core.errors import BenchError
from bench.core.safe_load import (UnsafeModelFileError, load_pickle, load_sklearn_kmeans, set_trust, torch_load,
                                  torch_load_checked)


class WritesMarker:
    """Unpickling this calls ``open(marker, 'w')``: the code a hostile model file would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(autouse=True)
def untrusted():
    set_trust(False)
    yield
    set_trust(False)


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "MARKER"


def refused(call, path, marker, global_name="io.open"):
    with pytest.raises(UnsafeModelFileError) as err:
        call()
    msg = err.value.message
    assert str(path) in msg and global_name in msg and "\n" not in msg, msg
    assert not marker.exists(), "the file's code ran"
    assert pickle.loads(pickle.dumps(err.value)).message == msg  # intact from a worker process


# ---- hostile files of every kind --------------------------------------------------------------------------
def evil_checkpoint(path, marker):
    """A fairseq-shaped checkpoint whose cfg carries the payload."""
    torch.save({"cfg": {"model": WritesMarker(marker)}, "model": {"decoder.embed_tokens.weight": torch.zeros(8, 4)}},
               path)
    return path


def evil_km_bin(path, marker, writer="joblib"):
    state = {"cluster_centers_": np.zeros((3, 2)), "hook": WritesMarker(marker)}
    if writer == "joblib":
        import joblib

        joblib.dump(state, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(state, f)
    return path


def evil_f0_bins(path, marker):
    torch.save({32: WritesMarker(marker)}, path)
    return path


def test_torch_files_are_refused_naming_file_and_global(tmp_path, marker):
    path = evil_checkpoint(tmp_path / "checkpoint_best.pt", marker)
    refused(lambda: torch_load(path), path, marker)
    from bench.lms.checkpoint import load_unit_lm
    from bench.lms.multistream_checkpoint import load_multistream_lm

    (tmp_path / "dict.txt").write_text("".join(f"{i} 1\n" for i in range(4)))
    refused(lambda: load_unit_lm(path, tmp_path / "dict.txt"), path, marker)
    refused(lambda: load_multistream_lm(path), path, marker)
    from bench.units.prosody import F0Quantizer

    bins = evil_f0_bins(tmp_path / "mean_norm_log_f0_seg_bin.th", marker)
    refused(lambda: F0Quantizer.load_pgslm(bins), bins, marker)


@pytest.mark.parametrize("writer", ["joblib", "pickle"])
def test_km_bin_is_refused_naming_file_and_global(tmp_path, marker, writer):
    from bench.units.kmeans import KMeansQuantizer

    path = evil_km_bin(tmp_path / "km.bin", marker, writer)
    refused(lambda: KMeansQuantizer.load(path), path, marker)


def test_km_bin_with_an_object_array_is_refused_before_its_nested_pickle_is_read(tmp_path, marker):
    import joblib

    path = tmp_path / "km.bin"
    joblib.dump({"cluster_centers_": np.array([WritesMarker(marker)], dtype=object)}, path)
    refused(lambda: load_sklearn_kmeans(path), path, marker, "numpy object array")


def test_a_kmeans_subclass_that_is_not_kmeans_is_refused(tmp_path, marker):
    """Only KMeans / MiniBatchKMeans state is admitted: another sklearn class is a global like any other."""
    import joblib
    from sklearn.preprocessing import StandardScaler

    path = tmp_path / "km.bin"
    joblib.dump(StandardScaler().fit(np.ones((3, 2))), path)
    refused(lambda: load_sklearn_kmeans(path), path, marker, "sklearn.preprocessing._data.StandardScaler")


def test_mustard_fold_file_is_refused(tmp_path, marker):
    from bench.data.corpora.mustard import Adapter

    path = tmp_path / "split_indices.p"
    with open(path, "wb") as f:
        pickle.dump([(np.arange(3), WritesMarker(marker))] * 5, f, protocol=2)
    adapter = Adapter.__new__(Adapter)
    adapter.params = {"speaker_dependent": True, "k_fold": 0, "split_indices": "split_indices.p", "json": "x"}
    adapter.path = lambda name: tmp_path / name
    refused(lambda: adapter.test_ids(["a", "b", "c", "d"], {}), path, marker)


def test_models_verify_refuses_every_kind(tmp_path, marker, monkeypatch, bench_home):
    from typer.testing import CliRunner

    from bench.cli import app

    for var in list(os.environ):
        if var.startswith("BENCH_MODEL_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("BENCH_CONFIG", str(tmp_path / "config.yaml"))
    (tmp_path / "config.yaml").write_text("")
    lm = tmp_path / "lm"
    lm.mkdir()
    evil_checkpoint(lm / "checkpoint_best.pt", marker)
    (lm / "dict.txt").write_text("".join(f"{i} 1\n" for i in range(100)))
    files = {"GSLM_HUBERT100_LM": lm, "GSLM_HUBERT_KM100": evil_km_bin(tmp_path / "km.bin", marker),
             "PGSLM_MS_TLM": evil_checkpoint(tmp_path / "ms_tlm.pt", marker),
             "PGSLM_F0_BINS": evil_f0_bins(tmp_path / "bins.th", marker),
             "HUBERT_BASE": evil_checkpoint(tmp_path / "hubert_base_ls960.pt", marker)}
    for name, path in files.items():
        monkeypatch.setenv(f"BENCH_MODEL_{name}", str(path))
    r = CliRunner().invoke(app, ["models", "--verify"])
    assert r.exit_code == 0 and "refused to load" in r.output, r.output
    assert not marker.exists(), "the file's code ran"
    from bench.core.model_paths import model_status

    rows = {row["name"]: row for row in model_status(verify=True)}
    assert not marker.exists(), "the file's code ran"
    for name, path in files.items():
        path = path / "checkpoint_best.pt" if path == lm else path
        problem = rows[name.lower()]["problem"]
        assert f"{path}: refused to load: it asks for io.open" in problem, (name, problem)


def test_trust_flag_is_the_only_way_past_and_the_record_says_so(tmp_path, marker, monkeypatch, bench_home):
    """A run's cell whose method reads a hostile km.bin fails naming it; with trust_model_files the file is
    unpickled in full (its code runs: that is what the flag means) and the record carries trust_model_files."""
    from bench.methods import METHODS
    from bench.runner.plan import RunOptions, run_benchmark

    path = evil_km_bin(tmp_path / "km.bin", marker)
    km = {"reads-km": {"km_file": str(path)}}
    monkeypatch.setitem(METHODS, "reads-km", "tests.test_safe_load:ReadsKMeans")
    task = _toy_task(monkeypatch, bench_home)
    s = run_benchmark([task], ["reads-km"], RunOptions(upstream="fbank", method_options=km), tmp_path / "r1",
                      log=lambda s: None)
    assert not s.written and len(s.failed) == 1 and str(path) in s.failed[0][1] and "io.open" in s.failed[0][1]
    assert not marker.exists()
    plain = run_benchmark([task], ["majority"], RunOptions(upstream="fbank"), tmp_path / "r0", log=lambda s: None)
    assert "trust_model_files" not in json.loads(plain.written[0].read_text())
    # the command line's flag reaches the cells and their records
    import yaml
    from typer.testing import CliRunner

    from bench.cli import app

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "toy.yaml").write_text(yaml.safe_dump(task.model_dump(include={
        "name", "version", "family", "kind", "origin", "description", "labels", "metrics"}) | {
        "data": {"source": "manifest", "path": "x.jsonl"}}))
    r = CliRunner().invoke(app, ["run", "--tasks", "toy", "--methods", "reads-km", "--task-dir", str(tasks),
                                 "--upstream", "fbank", "-o", f"reads-km.km_file={path}", "--jobs", "1",
                                 "--results", str(tmp_path / "r2"), "--no-compare", "--trust-model-files"])
    assert r.exit_code == 0 and marker.exists(), r.output
    (record,) = (tmp_path / "r2").rglob("seed-0.json")
    assert json.loads(record.read_text())["trust_model_files"] is True


def _toy_task(monkeypatch, home):
    from bench.data.audio import write_audio
    from bench.data.manifest import Example, Manifest
    from bench.methods import METHODS
    from bench.tasks.registry import TaskSpec

    monkeypatch.setitem(METHODS, "majority", "tests.test_runner:MajorityClass")
    task = TaskSpec(name="toy", version=1, family="KS", kind="classification", origin="synthetic",
                    description="toy", labels=["a", "b"], metrics=["accuracy"],
                    data={"source": "manifest", "path": "x.jsonl"})
    examples = [Example(id=f"{s}{i}", path=f"{s}{i}.wav", label="a" if i % 3 else "b", split=s, speaker=f"{s}{i}")
                for s in ("train", "valid", "test") for i in range(6)]
    for e in examples:
        write_audio(home / e.path, np.full(1600, 0.01, np.float32))
    manifest = Manifest(examples, home)
    monkeypatch.setattr("bench.data.sources.prepare_manifest", lambda spec, *a, **k: manifest)
    return task


from tests.test_runner import MajorityClass  # noqa: E402


class ReadsKMeans(MajorityClass):
    name = "reads-km"

    @dataclass
    class Config:
        km_file: str = ""
        prepare_seconds: float = 0.0
        fail: bool = False

    def prepare(self, ctx):
        from bench.units.kmeans import read_sklearn_centers

        try:
            read_sklearn_centers(self.config.km_file)
        except UnsafeModelFileError:
            raise
        except BenchError:  # a trusted hostile file loads into whatever it builds: not a k-means
            pass


# ---- real formats load with no flag ------------------------------------------------------------------------
def test_fairseq_checkpoint_formats_load_with_the_safe_globals_alone(tmp_path):
    """What fairseq writes: hydra cfg as an omegaconf DictConfig (older fairseq) or a plain dict (Trainer.state_dict
    now), legacy args as an argparse Namespace, numpy scalars/arrays in extra_state, task_state's Dictionary."""
    import argparse

    from omegaconf import OmegaConf

    from tests.test_models import fairseq_unit_lm

    directory = fairseq_unit_lm(tmp_path / "lm", units=20)
    state, safe = torch_load_checked(directory / "checkpoint_best.pt")
    assert safe and "decoder.embed_tokens.weight" in state["model"]
    from fairseq.data import Dictionary

    d = Dictionary()
    d.add_symbol("7")
    cfg = OmegaConf.create({"model": {"_name": "x", "layers": [1, 2], "p": 0.1, "on": True, "none": None},
                            "task": {"_name": "hubert_pretraining", "labels": ["km"]}})
    full = {"args": argparse.Namespace(arch="transformer_lm", dropout=0.1), "cfg": cfg,
            "model": {"w": torch.ones(2)}, "task_state": {"dictionaries": [d]},
            "extra_state": {"best": np.float64(2.5), "steps": np.int64(3), "arr": np.arange(3.0)},
            "optimizer_history": [{"num_updates": 10}]}
    torch.save(full, tmp_path / "full.pt")
    got, safe = torch_load_checked(tmp_path / "full.pt")
    assert safe and got["args"].arch == "transformer_lm" and got["cfg"].model.layers == [1, 2]
    assert got["extra_state"]["best"] == 2.5 and got["task_state"]["dictionaries"][0].symbols[-1] == "7"
    torch.save({32: np.linspace(-1, 1, 31)}, tmp_path / "bins.th")  # pGSLM's quantize_f0.py
    from bench.units.prosody import F0Quantizer

    assert F0Quantizer.load_pgslm(tmp_path / "bins.th").edges.shape == (31,)


@pytest.mark.parametrize("writer", ["joblib", "joblib-zlib", "pickle-0", "pickle-2", "pickle-5"])
@pytest.mark.parametrize("kind", ["KMeans", "MiniBatchKMeans"])
def test_sklearn_km_bin_loads_by_its_state(tmp_path, writer, kind):
    import joblib
    import sklearn.cluster

    x = np.random.default_rng(0).normal(size=(200, 4))
    km = getattr(sklearn.cluster, kind)(n_clusters=3, random_state=0, n_init=2).fit(x)
    path = tmp_path / "km.bin"
    if writer.startswith("joblib"):
        joblib.dump(km, path, compress=3 if writer.endswith("zlib") else 0)
    else:
        with open(path, "wb") as f:
            pickle.dump(km, f, protocol=int(writer[-1]))
    obj = load_sklearn_kmeans(path)
    assert obj.cls_name == kind
    np.testing.assert_array_equal(obj.state["cluster_centers_"], km.cluster_centers_)


def test_python2_fold_pickle_loads(tmp_path):
    path = tmp_path / "split_indices.p"
    folds = [(np.arange(0, 4), np.arange(4, 6))] * 5
    with open(path, "wb") as f:
        pickle.dump(folds, f, protocol=2)
    got = load_pickle(path, encoding="latin1")
    np.testing.assert_array_equal(got[3][1], [4, 5])


def test_trust_unpickles_in_full(tmp_path, marker):
    path = evil_f0_bins(tmp_path / "bins.th", marker)
    set_trust(True)
    torch_load(path)
    assert marker.exists()


def test_an_upstream_checkpoint_is_checked_before_s3prl_unpickles_it(tmp_path, marker):
    """s3prl loads --upstream-path itself (some of its upstreams with weights_only=False): bench checks it first."""
    from bench.features.upstream import S3PRLUpstreamEncoder

    path = evil_checkpoint(tmp_path / "hubert_base_ls960.pt", marker)
    refused(lambda: S3PRLUpstreamEncoder("hubert_local", str(path)), path, marker)
