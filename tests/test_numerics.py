"""``--numerics pinned``: the math libraries run the same (AVX2) code paths whatever they would pick, so a record
does not depend on the instruction sets a machine offers (issue 26). Forcing the libraries to other instruction
sets on this one machine stands in for another machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core import numerics
from bench.core.errors import BenchError
from test_runner import grid  # noqa: F401 - the toy task and its "majority" method

# two machines on one: ATen's scalar kernels, MKL's SSE2 branch and oneDNN without AVX, vs whatever this CPU offers
OLD_CPU = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
           "ONEDNN_MAX_CPU_ISA": "SSE41", "DNNL_MAX_CPU_ISA": "SSE41"}
NEW_CPU = {"ATEN_CPU_CAPABILITY": "", "MKL_CBWR": "AUTO", "MKL_ENABLE_INSTRUCTIONS": "", "ONEDNN_MAX_CPU_ISA": "ALL",
           "DNNL_MAX_CPU_ISA": "ALL"}
# a linear and a prompt cell (KS; per-utterance class scores recorded) of one epoch, and two generation cells (ASR):
# prompt-gslm, and an LSTM-CTC head trained until it writes words, so its hypotheses are not all empty
GRID = ["--tasks", "builtin-ks,builtin-asr", "--methods", "linear,prompt-gslm,lstm", "--size", "tiny", "--limit", "12",
        "-o", "linear.max_epochs=1", "-o", "prompt-gslm.max_epochs=1", "-o", "lstm.max_epochs=40", "-o", "lstm.lr=1e-2",
        "-o", "lstm.patience=40", "-o", "lstm.batch_size=4", "--jobs", "1", "--no-compare"]


def test_pinned_sets_the_variables_and_keeps_a_machine_openblas_coretype(monkeypatch):
    monkeypatch.setattr(sys, "modules", {k: v for k, v in sys.modules.items() if k not in ("torch", "numpy")})
    for key in numerics.PINNED_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # a forced value is overridden
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Zen")  # the machine's own, for correctness: kept
    monkeypatch.setenv(numerics.MODE_VARIABLE, "fast")
    if not numerics._has_avx2():
        pytest.skip("this CPU has no AVX2: pinned refuses to run here")
    numerics.apply("pinned")
    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2" and os.environ["MKL_CBWR"] == "AVX2"
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == os.environ["DNNL_MAX_CPU_ISA"] == "AVX2"
    assert os.environ["OPENBLAS_CORETYPE"] == "Zen"
    assert numerics.current() == "pinned"
    assert "export ATEN_CPU_CAPABILITY=avx2" in numerics.exports("pinned")  # what a Slurm job's setup runs


def test_pinned_refuses_once_torch_is_loaded(monkeypatch):
    import torch  # noqa: F401

    monkeypatch.setenv(numerics.MODE_VARIABLE, "fast")
    with pytest.raises(BenchError, match="before torch"):
        numerics.apply("pinned")
    with pytest.raises(BenchError, match="must be one of"):
        numerics.apply("exact")


def test_fast_records_keep_their_hashes_and_pinned_ones_are_their_own():
    assert numerics.config_entry("fast") == {}
    assert numerics.config_entry("pinned") == {"numerics": "pinned-avx2"}


def test_the_cli_refuses_pinned_in_a_process_that_already_loaded_torch(tmp_path):
    code = ("import sys, torch; from bench.cli import main; sys.argv = ['bench', 'run', '--numerics', 'pinned', "
            "'--tasks', 'builtin-ks', '--methods', 'linear']; main()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "BENCH_HOME": str(tmp_path)}, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--numerics pinned must be chosen before torch" in out.stderr


def _grid(tmp: Path, name: str, forced: dict[str, str], pinned: bool) -> dict[str, dict]:
    """The small grid in a fresh process and a fresh BENCH_HOME (nothing cached from another instruction set);
    returns {record path: record}."""
    env = {k: v for k, v in os.environ.items() if k not in forced and k != numerics.MODE_VARIABLE}
    env.update({k: v for k, v in forced.items() if v})
    env.update({"BENCH_HOME": str(tmp / name / "home"), "COLUMNS": "200"})
    results = tmp / name / "results"
    args = [*GRID, "--results", str(results), *(["--numerics", "pinned"] if pinned else [])]
    out = subprocess.run([sys.executable, "-m", "bench.cli", "run", *args], capture_output=True, text=True, env=env,
                         cwd=tmp, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = {str(p.relative_to(results)): json.loads(p.read_text()) for p in results.rglob("seed-*.json")}
    assert len(records) == 4, sorted(records)
    return records


def _outcome(rec: dict) -> tuple:
    return json.dumps(rec["scores"], sort_keys=True), json.dumps(rec.get("outputs"), sort_keys=True), \
        json.dumps(rec.get("predictions"), sort_keys=True)


@pytest.mark.slow
def test_records_differ_across_instruction_sets_unless_pinned(tmp_path):
    if not numerics._has_avx2():
        pytest.skip("this CPU has no AVX2: the pinned mode cannot run here")
    old = _grid(tmp_path, "old-fast", OLD_CPU, pinned=False)
    new = _grid(tmp_path, "new-fast", NEW_CPU, pinned=False)
    old_pinned = _grid(tmp_path, "old-pinned", OLD_CPU, pinned=True)
    new_pinned = _grid(tmp_path, "new-pinned", NEW_CPU, pinned=True)

    # pinned: one identity and the same scores and per-utterance outputs, whatever the libraries were told before
    assert sorted(old_pinned) == sorted(new_pinned)
    for path, rec in old_pinned.items():
        other = new_pinned[path]
        assert rec["config_hash"] == other["config_hash"] and rec["config"]["numerics"] == "pinned-avx2"
        assert _outcome(rec) == _outcome(other), path
        for r in (rec, other):
            assert r["environment"]["numerics"]["mode"] == "pinned"
            assert r["environment"]["numerics"]["aten_cpu_capability"] == "AVX2"
    # fast: the same identities (the machine is not part of a record's identity), and no pinned entry in them
    assert sorted(old) == sorted(new) and not set(old) & set(old_pinned)
    assert all("numerics" not in rec["config"] for rec in old.values())
    assert old[next(iter(old))]["environment"]["numerics"]["aten_cpu_capability"] == "DEFAULT"
    differ = [p for p in old if _outcome(old[p]) != _outcome(new[p])]
    if not differ:
        pytest.skip("this machine shows no difference between the forced instruction sets without the mode (the "
                    "pinned half of the test passed)")
    assert differ


def test_pinned_records_are_their_own_systems_and_fast_ones_keep_their_hashes(grid, tmp_path, monkeypatch):
    from bench.runner.plan import RunOptions, run_benchmark

    monkeypatch.setattr(numerics, "check_process", lambda mode=None: None)  # this process's torch is not pinned
    fast = run_benchmark([grid], ["majority"], RunOptions(upstream="fbank"), tmp_path, log=lambda s: None)
    pinned = run_benchmark([grid], ["majority"], RunOptions(upstream="fbank", numerics="pinned"), tmp_path,
                           log=lambda s: None)
    assert len(fast.written) == len(pinned.written) == 1 and fast.written != pinned.written
    a, b = (json.loads(s.written[0].read_text()) for s in (fast, pinned))
    assert "numerics" not in a["config"] and b["config"]["numerics"] == "pinned-avx2"
    assert a["config_hash"] != b["config_hash"]
    assert a["environment"]["numerics"]["mode"] == "fast"


def test_a_pinned_run_refuses_a_process_whose_torch_runs_other_kernels(grid, tmp_path, monkeypatch):
    import torch

    from bench.runner.plan import RunOptions, run_benchmark

    if torch.backends.cpu.get_cpu_capability() == "AVX2":
        pytest.skip("torch runs AVX2 kernels in this process already")
    with pytest.raises(BenchError, match="torch runs"):
        run_benchmark([grid], ["majority"], RunOptions(upstream="fbank", numerics="pinned"), tmp_path,
                      log=lambda s: None)
