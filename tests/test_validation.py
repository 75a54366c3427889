"""Everything a user types is checked before any work: method options are converted to their declared types (or
refused in one line naming the option and the type), devices and sizes are checked up front, and a run in which
a task was skipped, a cell failed or nothing ran exits non-zero, naming each."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import pytest

from bench.core.errors import BenchError
from bench.methods.base import parse_option_value, validate_options


def bench(*args, home: Path):
    env = {**os.environ, "BENCH_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@dataclass
class Cfg:
    lr: float = 1e-3
    epochs: int = 5
    deep: bool = True
    name: str = "x"
    layer: Optional[int] = None
    path: str | None = None
    verbalizer: Literal["random", "freq"] = "random"
    widths: tuple[int, ...] = (1, 2)


@pytest.mark.parametrize("key,raw,want", [
    ("lr", "1e-4", 1e-4), ("lr", "0.5", 0.5), ("lr", "2", 2.0), ("epochs", "7", 7), ("deep", "false", False),
    ("deep", "true", True), ("name", "5", "5"), ("name", "1e-4", "1e-4"), ("name", "null", "null"),
    ("layer", "null", None), ("layer", "6", 6), ("path", "null", None), ("path", "/a/b.pt", "/a/b.pt"),
    ("verbalizer", "freq", "freq"), ("widths", "[3, 4]", (3, 4)),
])
def test_option_values_get_their_declared_type(key, raw, want):
    got = parse_option_value("m", Cfg, key, raw)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize("key,raw,expected", [
    ("lr", "abc", "a number"), ("epochs", "1.5", "an integer"), ("deep", "maybe", "true or false"),
    ("layer", "six", "an integer or null"), ("verbalizer", "kmeans", "one of random, freq"),
    ("widths", "[a]", "a list of integers"),
])
def test_a_value_of_the_wrong_type_is_one_line_naming_option_and_type(key, raw, expected):
    with pytest.raises(BenchError) as err:
        parse_option_value("m", Cfg, key, raw)
    msg = err.value.message
    assert f"m.{key}" in msg and expected in msg and raw in msg and "\n" not in msg


def test_unknown_keys_are_refused_with_the_known_ones():
    with pytest.raises(BenchError, match=r"unknown option 'lrr'.*'lr'"):
        parse_option_value("m", Cfg, "lrr", "1")
    with pytest.raises(BenchError, match=r"unknown option\(s\) \['lrr'\]"):
        validate_options("m", Cfg, {"lrr": 1})


def test_methods_convert_python_values_and_baseline_defaults():
    from bench.methods import method_class

    linear = method_class("linear")({"lr": "1e-4", "max_epochs": 3.0})
    assert linear.config.lr == 1e-4 and isinstance(linear.config.lr, float) and linear.config.max_epochs == 3
    assert method_class("lstm")({}).config.size == "small"  # baselines/lstm.yaml still loads
    with pytest.raises(BenchError, match=r"prompt-gslm\.verbalizer='kmeans': expected one of random, freq, identity"):
        method_class("prompt-gslm")({"verbalizer": "kmeans"})
    with pytest.raises(BenchError, match=r"prompt-pgslm\.f0_method='yaapt'"):
        method_class("prompt-pgslm")({"f0_method": "yaapt"})


def test_cli_option_parsing_resolves_types_and_refuses_strays():
    from bench.cli import _parse_options

    assert _parse_options(["linear.lr=1e-4", "linear.max_epochs=2"], ["linear"]) == \
        {"linear": {"lr": 0.0001, "max_epochs": 2}}
    with pytest.raises(BenchError, match="unknown method 'nosuchmethod'; known methods: linear, lstm"):
        _parse_options(["nosuchmethod.x=1"], ["linear"])
    with pytest.raises(BenchError, match=r"method 'lstm' is not selected by --methods \(linear\)"):
        _parse_options(["lstm.lr=1e-3"], ["linear"])


# ---- the command line, before any work ---------------------------------------------------------------------
def _nothing_built(home: Path) -> bool:
    return not (home / "data").exists() and not (home / "cache").exists()


@pytest.mark.parametrize("args,message", [
    (["-o", "linear.lr=abc"], "option linear.lr='abc': expected a number"),
    (["-o", "nosuchmethod.x=1"], "unknown method 'nosuchmethod'; known methods: linear, lstm, prompt-gslm"),
    (["-o", "lstm.lr=1e-3"], "method 'lstm' is not selected by --methods (linear)"),
    (["--device", "foo"], "--device 'foo' is not a device; accepted: cpu, cuda, cuda:N, mps"),
    (["--device", "cuda:x"], "--device 'cuda:x' is not a device"),
    (["--size", "huge"], "--size must be one of tiny, default, large, not 'huge'"),
])
def test_run_refuses_bad_input_before_any_work(tmp_path, args, message):
    home = tmp_path / "home"
    r = bench("run", "--tasks", "builtin-ks", "--methods", "linear", "--results", str(tmp_path / "res"), *args,
              home=home)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in " ".join(r.stderr.split()), r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 3
    assert _nothing_built(home) and not (tmp_path / "res").exists()


def test_cuda_without_a_gpu_is_one_line_before_anything_runs(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    home = tmp_path / "home"
    r = bench("run", "--tasks", "builtin-ks", "--methods", "linear", "--device", "cuda", home=home)
    assert r.returncode == 2
    assert "--device cuda: no CUDA GPU is available here" in r.stderr and "Traceback" not in r.stderr
    assert _nothing_built(home)


MISSING_TASK = """\
name: my-missing
version: 1
family: KS
kind: classification
origin: real-human
description: a manifest task whose list file is absent
labels: [yes, no]
metrics: [accuracy]
data: {source: manifest, path: nowhere.csv}
"""


def test_a_run_where_every_task_is_skipped_exits_non_zero_naming_it(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "my-missing.yaml").write_text(textwrap.dedent(MISSING_TASK))
    r = bench("run", "--tasks", "my-missing", "--methods", "linear", "--task-dir", str(tmp_path / "tasks"),
              "--results", str(tmp_path / "res"), "--leaderboards", str(tmp_path / "lb"), home=tmp_path / "home")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "skipped my-missing" in r.stdout and "nothing ran" in r.stdout
    assert "1 task(s) skipped" in r.stdout


# ---- values that used to pass the up-front checks and fail after the data was built ------------------------
def bench_in_process(*args, capsys, monkeypatch) -> tuple[int, str]:
    """``bench ARGS`` through the command line's own error handling (exit status, stderr), in this process."""
    from bench.cli import main

    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(sys, "argv", ["bench", *args])
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code
    return code, " ".join(capsys.readouterr().err.split())


GENERATION_WITH_ACCURACY = MISSING_TASK.replace("name: my-missing", "name: my-gen").replace(
    "kind: classification", "kind: generation").replace("family: KS", "family: ASR").replace("labels: [yes, no]\n", "")


@pytest.mark.parametrize("args,message", [
    (["-o", "linear.lr=-1"], "option linear.lr='-1': expected a number > 0"),
    (["-o", "linear.lr=nan"], "option linear.lr='nan': expected a finite number"),
    (["-o", "linear.batch_size=0"], "option linear.batch_size='0': expected a number > 0"),
    (["--upstream", "nosuch"], "--upstream 'nosuch' is not an upstream bench can build"),
    (["--upstream", "whisper_huge"], "--upstream 'whisper_huge' is not an upstream bench can build"),
    (["--limit", "-1"], "--limit -1: expected a positive number of utterances per split"),
    (["--limit", "0"], "--limit 0: expected a positive number of utterances per split"),
    (["--seeds", "3-1"], "--seeds '3-1' selects no seed"),
    (["--seeds", ""], "--seeds '' selects no seed"),
    (["--max-epochs", "0"], "--max-epochs 0: expected a positive number of epochs"),
    (["--methods", "prompt-gslm", "-o", "prompt-gslm.kmeans=/nowhere/km.bin"],
     "option prompt-gslm.kmeans='/nowhere/km.bin': no such file or directory"),
    (["--methods", "prompt-gslm", "-o", "prompt-gslm.lm_checkpoint=/nowhere/lm"],
     "option prompt-gslm.lm_checkpoint='/nowhere/lm': no such file or directory"),
    (["--task-dir", "/nowhere/tasks"], "--task-dir /nowhere/tasks: no such directory"),
])
def test_bad_values_are_refused_before_any_work(tmp_path, monkeypatch, capsys, args, message):
    home = tmp_path / "home"
    monkeypatch.setenv("BENCH_HOME", str(home))
    methods = [] if "--methods" in args else ["--methods", "linear"]
    code, err = bench_in_process("run", "--tasks", "builtin-ks", *methods, "--results", str(tmp_path / "res"), *args,
                                 capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and message in err, err
    assert "BENCH_MODEL_" not in err  # a path is never turned into a model name to configure
    assert _nothing_built(home) and not (tmp_path / "res").exists()


def test_bad_task_files_are_refused_naming_the_file(tmp_path, monkeypatch, capsys):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "my-gen.yaml").write_text(textwrap.dedent(GENERATION_WITH_ACCURACY))
    code, err = bench_in_process("run", "--tasks", "my-gen", "--task-dir", str(tasks), capsys=capsys,
                                 monkeypatch=monkeypatch)
    assert code == 2 and f"{tasks / 'my-gen.yaml'}: invalid task definition" in err, err
    assert "['accuracy'] score classification outputs, not a generation task's" in err
    (tasks / "my-gen.yaml").unlink()
    (tasks / "my-missing.yml").write_text(textwrap.dedent(MISSING_TASK))
    code, err = bench_in_process("run", "--tasks", "my-missing", "--task-dir", str(tasks), capsys=capsys,
                                 monkeypatch=monkeypatch)
    assert code == 2 and f"{tasks / 'my-missing.yml'}: task files end in .yaml; rename it to my-missing.yaml" in err
    assert "unknown task" not in err


def test_option_ranges_apply_to_recipes_and_configs_too():
    with pytest.raises(BenchError, match=r"option linear.max_epochs=0: expected a number > 0"):
        validate_options("linear", _linear_config(), {"max_epochs": 0})
    assert validate_options("linear", _linear_config(), {"lr": 0.5, "patience": 0}) == {"lr": 0.5, "patience": 0}


def _linear_config():
    from bench.methods import method_class

    return method_class("linear").Config
