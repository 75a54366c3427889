"""``--numerics pinned``, the default: the math libraries run the same (AVX2) code paths whatever they would pick,
so a record does not depend on the instruction sets a machine offers (issue 26); ``--numerics fast`` opts out.
Forcing the libraries to other instruction sets on this one machine stands in for another machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy  # noqa: F401
import pytest
import torch

from bench.core import numerics

# tests below take the variables away from this process for a while: the libraries load and choose their kernels
# first, as conftest.py set the process up (torch's capability, MKL's branch and oneDNN's ISA at their first use)
torch.backends.cpu.get_cpu_capability()
torch.nn.functional.conv1d(torch.ones(1, 1, 8), torch.ones(1, 1, 3)).sum() + (torch.ones(8, 8) @ torch.ones(8, 8)).sum()
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


BENCH_SET = (numerics.MODE_VARIABLE, numerics.SET_VARIABLE, numerics.NOTE_VARIABLE, *numerics.PINNED_ENV)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything a numerics mode set (the test process runs pinned, see
    conftest.py): what a fresh shell gives a new process."""
    return {**{k: v for k, v in os.environ.items() if k not in BENCH_SET}, **extra}


@pytest.fixture
def fresh(monkeypatch):
    """This process as one that has not set up its numerics yet: none of the variables, torch and numpy not
    imported (as far as bench.core.numerics can tell: it looks for no loaded library)."""
    for key in BENCH_SET:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(numerics, "LOADERS", ())
    return monkeypatch


def test_the_default_is_pinned_and_fast_opts_out(fresh):
    if numerics.cannot_pin_here():
        pytest.skip(f"the default cannot pin here ({numerics.cannot_pin_here()}): test_the_default_falls_back... "
                    "covers this machine")
    notes = []
    assert numerics.apply(None, note=notes.append) == "pinned" and numerics.current() == "pinned"
    assert all(os.environ[k] == v for k, v in numerics.PINNED_ENV.items()) and not notes
    assert numerics.apply() == "pinned"  # again: nothing changes
    assert numerics.apply("fast") == "fast" and numerics.current() == "fast"  # before torch loads: dropped again
    assert not set(numerics.PINNED_ENV) & set(os.environ) and numerics.SET_VARIABLE not in os.environ
    fresh.setenv(numerics.MODE_VARIABLE, "fast")  # BENCH_NUMERICS=fast from the shell
    assert numerics.apply() == "fast" and "ATEN_CPU_CAPABILITY" not in os.environ and not notes


def test_the_default_falls_back_to_fast_on_aarch64_and_says_why(fresh):
    """On an ARM machine there are no x86-64 code paths to pin: a default run is a fast one (its records have fast
    identities) whose environment says why; asking for pinned there is refused before anything runs."""
    fresh.setattr(numerics.platform, "machine", lambda: "aarch64")
    notes = []
    assert numerics.apply(None, note=notes.append) == "fast" and numerics.current() == "fast"
    assert notes == [f"numerics: {os.environ[numerics.NOTE_VARIABLE]}"] and "aarch64" in notes[0]
    assert "ATEN_CPU_CAPABILITY" not in os.environ and numerics.config_entry(numerics.current()) == {}
    assert "aarch64, not x86-64" in numerics.effective()["note"] and numerics.effective()["mode"] == "fast"
    assert numerics.exports("fast") == []
    numerics.check_process("fast")  # a cell runs
    with pytest.raises(BenchError, match="pinned runs the x86-64 AVX2 code paths; this machine is aarch64"):
        numerics.apply("pinned")
    fresh.setenv(numerics.MODE_VARIABLE, "pinned")  # BENCH_NUMERICS=pinned is a choice too
    with pytest.raises(BenchError, match="this machine is aarch64"):
        numerics.apply()


def test_a_session_that_imported_torch_first_runs_fast_by_default_and_refuses_an_explicit_pinned(fresh):
    """bench.api in a notebook that imported torch before it: too late to pin, so the default is fast with a note
    (recorded), and an explicit pinned is refused."""
    fresh.setattr(numerics, "LOADERS", ("torch",))
    if numerics.cannot_pin_here():
        pytest.skip(numerics.cannot_pin_here())
    notes = []
    assert numerics.apply(None, note=notes.append) == "fast"
    assert "torch was imported before bench could pin" in notes[0]
    with pytest.raises(BenchError, match="--numerics pinned must be chosen before torch"):
        numerics.apply("pinned")


def test_fast_is_refused_in_a_process_already_pinned(fresh):
    if numerics.cannot_pin_here():
        pytest.skip(numerics.cannot_pin_here())
    assert numerics.apply() == "pinned"
    fresh.setattr(numerics, "LOADERS", ("torch",))  # torch loads
    assert numerics.apply() == numerics.apply("pinned") == "pinned"  # what it runs already
    with pytest.raises(BenchError, match="--numerics fast must be chosen before torch"):
        numerics.apply("fast")
    with pytest.raises(BenchError, match="asks for --numerics fast but this process was set up pinned"):
        numerics.check_process("fast")


def test_pinned_sets_the_variables_and_keeps_a_machine_openblas_coretype(fresh):
    monkeypatch = fresh
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # a forced value is overridden
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Zen")  # the machine's own, for correctness: kept
    monkeypatch.setenv(numerics.MODE_VARIABLE, "fast")
    if numerics.cannot_pin_here():
        pytest.skip(f"pinned refuses to run here: {numerics.cannot_pin_here()}")
    numerics.apply("pinned")
    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2" and os.environ["MKL_CBWR"] == "AVX2"
    assert os.environ["ONEDNN_MAX_CPU_ISA"] == os.environ["DNNL_MAX_CPU_ISA"] == "AVX2"
    assert os.environ["OPENBLAS_CORETYPE"] == "Zen"
    assert numerics.current() == "pinned"
    assert "export ATEN_CPU_CAPABILITY=avx2" in numerics.exports("pinned")  # what a Slurm job's setup runs
    # a child that opts out drops what bench set, and keeps the machine's own OPENBLAS_CORETYPE
    assert numerics.apply("fast") == "fast"
    assert os.environ["OPENBLAS_CORETYPE"] == "Zen" and "MKL_CBWR" not in os.environ


def test_pinned_refuses_once_torch_is_loaded(monkeypatch):
    import torch  # noqa: F401

    for key in BENCH_SET:  # a process that did not pin before torch loaded
        monkeypatch.delenv(key, raising=False)
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
                         env=clean_env(BENCH_HOME=str(tmp_path)), cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--numerics pinned must be chosen before torch" in out.stderr


def _grid(tmp: Path, name: str, forced: dict[str, str], pinned: bool) -> dict[str, dict]:
    """The small grid in a fresh process and a fresh BENCH_HOME (nothing cached from another instruction set):
    pinned is bench's default (no option), the other is ``--numerics fast``; returns {record path: record}."""
    env = clean_env(BENCH_HOME=str(tmp / name / "home"), COLUMNS="200")
    env.update({k: v for k, v in forced.items() if v})
    results = tmp / name / "results"
    args = [*GRID, "--results", str(results), *([] if pinned else ["--numerics", "fast"])]
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
    """A run takes its process's mode (RunOptions.numerics None): a fast process's records have no numerics entry,
    as every record made before the mode existed, and a pinned one's are their own systems."""
    from bench.runner.plan import RunOptions, run_benchmark

    monkeypatch.setattr(numerics, "check_process", lambda mode=None: None)  # the mode is only named here
    monkeypatch.setenv(numerics.MODE_VARIABLE, "fast")
    fast = run_benchmark([grid], ["majority"], RunOptions(upstream="fbank"), tmp_path, log=lambda s: None)
    monkeypatch.setenv(numerics.MODE_VARIABLE, "pinned")
    pinned = run_benchmark([grid], ["majority"], RunOptions(upstream="fbank"), tmp_path, log=lambda s: None)
    assert len(fast.written) == len(pinned.written) == 1 and fast.written != pinned.written
    a, b = (json.loads(s.written[0].read_text()) for s in (fast, pinned))
    assert "numerics" not in a["config"] and b["config"]["numerics"] == "pinned-avx2"
    assert a["config_hash"] != b["config_hash"]
    assert a["environment"]["numerics"]["mode"] == "fast" and b["environment"]["numerics"]["mode"] == "pinned"


def test_a_pinned_run_refuses_a_process_whose_torch_runs_other_kernels(grid, tmp_path, monkeypatch):
    import torch

    from bench.runner.plan import RunOptions, run_benchmark

    monkeypatch.setenv(numerics.MODE_VARIABLE, "pinned")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")  # ATEN_CPU_CAPABILITY too late
    with pytest.raises(BenchError, match="torch runs AVX512 kernels, not AVX2"):
        run_benchmark([grid], ["majority"], RunOptions(upstream="fbank", numerics="pinned"), tmp_path,
                      log=lambda s: None)
    with pytest.raises(BenchError, match="asks for --numerics fast but this process was set up pinned"):
        run_benchmark([grid], ["majority"], RunOptions(upstream="fbank", numerics="fast"), tmp_path,
                      log=lambda s: None)
    assert not list(tmp_path.rglob("seed-*.json"))


# the CLI's and the API's default, in fresh processes: one KS linear cell per seed, on fbank (no model to load)
CELLS = ["--tasks", "builtin-ks", "--methods", "linear", "--upstream", "fbank", "--size", "tiny", "--limit", "6",
         "--max-epochs", "1", "--no-compare"]


def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.rglob("seed-*.json"))]


def test_bench_run_is_pinned_by_default_in_its_workers_and_fast_opts_out(tmp_path):
    if numerics.cannot_pin_here():
        pytest.skip(f"the default runs fast here ({numerics.cannot_pin_here()}); the aarch64 test covers it")
    env = clean_env(BENCH_HOME=str(tmp_path / "home"), COLUMNS="200")

    def bench_run(name: str, *args: str, **extra: str) -> list[dict]:
        out = subprocess.run([sys.executable, "-m", "bench.cli", "run", *CELLS, "--results", str(tmp_path / name),
                              *args], capture_output=True, text=True, env={**env, **extra}, cwd=tmp_path, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "note" not in out.stderr, out.stderr
        return _records(tmp_path / name)

    pinned = bench_run("default", "--seeds", "0,1", "--jobs", "2")  # two cells: each in a worker process
    fast = bench_run("fast", "--seeds", "0,1", "--numerics", "fast")
    from_env = bench_run("env", "--seeds", "0", BENCH_NUMERICS="fast")
    assert len(pinned) == len(fast) == 2 and len(from_env) == 1
    for rec in pinned:
        assert rec["config"]["numerics"] == "pinned-avx2"
        chose = rec["environment"]["numerics"]
        assert chose["mode"] == "pinned" and chose["aten_cpu_capability"] == "AVX2"
        assert chose["env"]["ATEN_CPU_CAPABILITY"] == "avx2" and chose["env"]["MKL_CBWR"] == "AVX2"
    for rec in (*fast, *from_env):
        assert "numerics" not in rec["config"] and rec["environment"]["numerics"]["mode"] == "fast"
        assert "ATEN_CPU_CAPABILITY" not in rec["environment"]["numerics"]["env"]
    assert {r["config_hash"] for r in pinned}.isdisjoint(r["config_hash"] for r in fast)
    assert from_env[0]["config_hash"] == fast[0]["config_hash"]  # the same system, chosen by option or variable
    # one BENCH_HOME: each mode extracted its own features (a pinned record never reads fast-made ones)
    cache = tmp_path / "home" / "cache"
    assert list((cache / "features").rglob("*.npy")) and list((cache / "pinned-avx2" / "features").rglob("*.npy"))
    listed = subprocess.run([sys.executable, "-m", "bench.cli", "cache"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300)
    assert "pinned-avx2" in listed.stdout and "BENCH_NUMERICS=fast bench cache" in listed.stdout, listed.stdout


def test_the_api_pins_a_fresh_process_and_runs_fast_with_a_warning_where_torch_came_first(tmp_path, monkeypatch):
    from bench import api

    if numerics.cannot_pin_here():
        pytest.skip(numerics.cannot_pin_here())
    kwargs = dict(tasks="builtin-ks", methods="linear", upstream="fbank", size="tiny", limit=6, max_epochs=1)
    code = f"from bench.api import run; run(results={str(tmp_path / 'fresh')!r}, **{kwargs!r})"
    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], capture_output=True,
                         text=True, env=clean_env(BENCH_HOME=str(tmp_path / "home")), cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (fresh,) = _records(tmp_path / "fresh")
    assert fresh["config"]["numerics"] == "pinned-avx2" and fresh["environment"]["numerics"]["mode"] == "pinned"

    import torch  # noqa: F401 - this process imported torch before bench.api set anything up

    for key in BENCH_SET:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "home"))
    with pytest.warns(RuntimeWarning, match="torch and numpy were imported before bench could pin"):
        api.run(results=tmp_path / "late", **kwargs)
    (late,) = _records(tmp_path / "late")
    assert "numerics" not in late["config"] and late["config_hash"] != fresh["config_hash"]
    assert late["environment"]["numerics"]["mode"] == "fast" and "imported before" in late["environment"][
        "numerics"]["note"]
    assert api.run(results=tmp_path / "late", numerics="fast", **kwargs) == [p for p in (tmp_path / "late").rglob(
        "seed-0.json")]  # the mode it runs now: reused
    with pytest.raises(BenchError, match="--numerics pinned must be chosen before torch"):
        api.run(results=tmp_path / "late", numerics="pinned", **kwargs)


def test_every_command_that_computes_sets_up_the_numerics_and_listing_ones_do_not(fresh):
    """`bench evaluate`, `data`, `units`, `pretrain`, `params` and `cache` set up the process as `bench run` does,
    before they load torch (here on a machine where the default falls back, so the note is visible); `bench tasks`
    touches nothing."""
    from typer.testing import CliRunner

    from bench.cli import app

    fresh.setattr(numerics.platform, "machine", lambda: "aarch64")
    assert CliRunner().invoke(app, ["tasks"]).exit_code == 0
    assert numerics.MODE_VARIABLE not in os.environ
    for command in ("evaluate", "data", "units", "pretrain", "params", "cache"):
        fresh.delenv(numerics.MODE_VARIABLE, raising=False)
        assert CliRunner().invoke(app, [command, "--help"]).exit_code == 0
        assert numerics.current() == "fast" and "aarch64" in os.environ[numerics.NOTE_VARIABLE], command


def test_evaluate_says_when_a_record_was_made_in_the_other_mode(tmp_path):
    """`bench evaluate` scores in its process's mode (pinned here, see conftest.py); a record made fast, such as
    the committed leaderboard's, is named as such before anything is scored."""
    from typer.testing import CliRunner

    from bench.cli import app

    if numerics.current() != "pinned":
        pytest.skip("this test process runs fast")
    record = tmp_path / "seed-0.json"
    record.write_text(json.dumps({"task": "builtin-ks", "method": "linear", "config": {"seed": 0}}))
    out = CliRunner().invoke(app, ["evaluate", str(record), "--task", "builtin-ks"])
    assert "the record was made with --numerics fast, this process runs pinned" in out.output, out.output
    record.write_text(json.dumps({"task": "builtin-ks", "method": "linear", "config": {"numerics": "pinned-avx2"}}))
    out = CliRunner().invoke(app, ["evaluate", str(record), "--task", "builtin-ks"])
    assert "the record was made with" not in out.output, out.output
