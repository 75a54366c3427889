"""Recipes as data: each published recipe resolves, per task, to the values of the public file it cites."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.core.errors import BenchError
from bench.methods import method_class
from bench.runner.recipes import (ENGINE_KEYS_PENDING, load_recipe, load_recipe_file, options_for, recipe_files,
                           split_pending)
from bench.tasks.registry import TaskRegistry

V2 = "ga642381/SpeechPrompt-v2@401e91d"
V1 = "ga642381/SpeechPrompt@b330494"
S3 = "s3prl/s3prl@ec8064b5"

# (recipe, task, method, option, published value, where it is published)
PUBLISHED = [
    ("speechprompt-v2", "scr-lt-speech-commands", "prompt-gslm", "batch_size", 1, f"{V2} GSLM/prompt/config.yaml:28"),
    ("speechprompt-v2", "scr-ar-speech-commands", "prompt-gslm-lv", "batch_size", 1, f"{V2} GSLM/prompt/config.yaml:30"),
    ("speechprompt-v2", "scr-grabo", "prompt-gslm", "batch_size", 4, f"{V2} GSLM/prompt/config.yaml:31"),
    ("speechprompt-v2", "ic-fluent-speech-commands", "prompt-gslm", "batch_size", 32, f"{V2} GSLM/prompt/config.yaml:32"),
    ("speechprompt-v2", "lid-voxforge", "prompt-pgslm", "batch_size", 16, f"{V2} GSLM/prompt/config.yaml:33"),
    ("speechprompt-v2", "fsd-asvspoof2019-la", "prompt-gslm", "batch_size", 32, f"{V2} GSLM/prompt/config.yaml:34"),
    ("speechprompt-v2", "scr-dm-speech-commands", "prompt-pgslm-lv", "batch_size", 1, f"{V2} GSLM/prompt/config.yaml:29"),
    ("speechprompt-v2", "vad-freesound", "prompt-gslm", "batch_size", 64, f"{V2} GSLM/prompt/config.yaml:38"),
    ("speechprompt-v2", "dyc-easycall", "prompt-gslm", "batch_size", 32, f"{V2} GSLM/prompt/config.yaml:40"),
    ("speechprompt-v2", "sid-voxceleb1", "prompt-gslm-lv", "batch_size", 32, f"{V2} GSLM/prompt/config.yaml:37"),
    ("speechprompt-v2", "auc-esc50", "prompt-gslm-lv", "batch_size", 4, f"{V2} GSLM/prompt/config.yaml:39"),
    ("speechprompt-v2", "sd-mustard", "prompt-gslm", "batch_size", 32, f"{V2} GSLM/prompt/config.yaml:41"),
    ("speechprompt-v2", "ks-speech-commands-v1", "prompt-gslm", "max_tokens", 4096, f"{V2} GSLM/prompt/train.py:72"),
    ("speechprompt-v2", "ks-speech-commands-v1", "prompt-gslm", "patience", 1, f"{V2} GSLM/prompt/train.py:75"),
    ("speechprompt-v2", "ks-speech-commands-v1", "prompt-gslm", "max_epochs", 255, f"{V2} GSLM/prompt/train.py:76 (300 from epoch 46)"),
    ("speechprompt-v2", "ks-speech-commands-v1", "prompt-gslm", "lr", 5e-3, f"{V2} GSLM/prompt/train.py:83"),
    ("speechprompt-v2", "ks-speech-commands-v1", "prompt-gslm", "prompt_length", 5, f"{V2} GSLM/prompt/train.py:99"),
    ("speechprompt-v2", "ks-speech-commands-v1", "prompt-gslm", "separator_init", "normal_scaled", f"{V2} GSLM/prompt/fairseq_usr/model.py:123-129"),
    ("speechprompt-v2", "ks-speech-commands-v1", "prompt-gslm", "loss_normalization", "all_tokens", f"{V2} GSLM/prompt/fairseq_usr/loss.py:62-63"),
    ("speechprompt-v2", "ks-speech-commands-v1", "prompt-gslm", "max_total_len", 150, f"{V2} GSLM/prompt/sample.py:55-56"),
    ("speechprompt-v2", "ks-speech-commands-v1", "prompt-gslm-lv", "class_order", "frequency", f"{V2} GSLM/prompt/verbalizer.py:39,68-70"),
    ("speechprompt-v1", "ks-speech-commands-v1", "prompt-gslm", "prompt_length", 3, "slides 0.08M (docs/papers.md)"),
    ("speechprompt-v1", "ic-fluent-speech-commands", "prompt-gslm", "prompt_length", 6, f"{V1} README.md:146"),
    ("speechprompt-v1", "sf-audio-snips", "prompt-gslm", "prompt_length", 175, "slides 4.5M (docs/papers.md)"),
    ("speechprompt-v1", "ic-fluent-speech-commands", "prompt-gslm", "patience", 5, f"{V1} ulm_prompt/train.py:514"),
    ("speechprompt-v1", "ic-fluent-speech-commands", "prompt-gslm", "batch_size", 32, f"{V1} ulm_prompt/train.py:506"),
    ("speechprompt-v1", "ic-fluent-speech-commands", "prompt-gslm", "lr", 5e-3, f"{V1} ulm_prompt/train.py:544"),
    ("speechprompt-v1", "ic-fluent-speech-commands", "prompt-gslm", "verbalizer", "freq", f"{V1} ulm_prompt/verbalizer.py"),
    ("speechprompt-v1", "ic-fluent-speech-commands", "prompt-gslm", "max_total_len", 1500, f"{V1} ulm_prompt/sample.py:284-285"),
    ("speechprompt-v1", "ic-fluent-speech-commands", "prompt-gslm", "separator_init", "normal_scaled", f"{V1} ulm_prompt/prompt_lm_module/prompt_lm.py:491-492"),
    ("superb", "ks-speech-commands-v1", "linear", "lr", 1e-4, f"{S3} s3prl/downstream/speech_commands/config.yaml:17"),
    ("superb", "ks-speech-commands-v1", "linear", "batch_size", 32, f"{S3} s3prl/downstream/speech_commands/config.yaml:30"),
    ("superb", "ks-speech-commands-v1", "linear", "projector_dim", 256, f"{S3} s3prl/downstream/speech_commands/config.yaml:33"),
    ("superb", "ks-speech-commands-v1", "linear", "max_epochs", 125, f"{S3} speech_commands/config.yaml:2 200k steps x 32 / 51,094"),
    ("superb", "ic-fluent-speech-commands", "linear", "max_epochs", 277, f"{S3} fluent_commands/config.yaml:2 200k x 32 / 23,132"),
    ("superb", "asr-librispeech", "lstm", "size", "superb", f"{S3} s3prl/downstream/asr/config.yaml:75"),
    ("superb", "asr-librispeech", "lstm", "lr", 1e-4, f"{S3} s3prl/downstream/asr/config.yaml:15"),
    ("cpu-default", "builtin-ks", "prompt-gslm", "separator_init", "bos_row", "bench today (engine)"),
    ("cpu-default", "builtin-ks", "prompt-gslm", "loss_normalization", "label_tokens", "bench today (engine)"),
    ("cpu-default", "builtin-ks", "prompt-gslm-lv", "class_order", "label", "bench today (engine)"),
]

DATA = [  # (recipe, task, data choice, value, source)
    ("speechprompt-v2", "ks-speech-commands-v1", "resample", "class_balanced", f"{V2} GSLM/preprocess/SCR_google_speech_commands/preprocessor.py:44-51"),
    ("speechprompt-v1", "ks-speech-commands-v1", "resample", "class_balanced", f"{V1} ulm_prompt/datasets/hubert100/speech_commands (51,094 lines)"),
    ("superb", "ks-speech-commands-v1", "resample", "class_balanced", f"{S3} s3prl/downstream/speech_commands/expert.py:51-69"),
    ("speechprompt-v2", "sd-mustard", "params.speaker_dependent", True, f"{V2} GSLM/preprocess/SD_mustard/config.yaml:10"),
    ("speechprompt-v2", "sd-mustard", "params.k_fold", 0, f"{V2} GSLM/preprocess/SD_mustard/config.yaml:9"),
    ("superb", "sf-audio-snips", "params.text_normalization", "s3prl", f"{S3} s3prl/downstream/ctc/text.py:113-116"),
    ("cpu-default", "ks-speech-commands-v1", "resample", "none", "bench today"),
    ("cpu-default", "sd-mustard", "params.speaker_dependent", None, "bench today (task file: speaker-independent)"),
]


@pytest.mark.parametrize("recipe,task,method,key,value,source", PUBLISHED,
                         ids=[f"{r}-{t}-{m}-{k}" for r, t, m, k, *_ in PUBLISHED])
def test_recipe_resolves_to_the_published_value(recipe, task, method, key, value, source):
    got = options_for(recipe, task, method)
    assert got.get(key) == value, f"{recipe}: {task} × {method}.{key} should be {value!r} ({source})"


@pytest.mark.parametrize("recipe,task,key,value,source", DATA, ids=[f"{r}-{t}-{k}" for r, t, k, *_ in DATA])
def test_recipe_data_choices_are_the_published_ones(recipe, task, key, value, source):
    choices = load_recipe(recipe).task(task).data
    got = choices.params.get(key.split(".", 1)[1]) if key.startswith("params.") else getattr(choices, key)
    assert got == value, f"{recipe}: {task} data {key} should be {value!r} ({source})"


def test_every_recipe_loads_and_names_registered_tasks_and_real_options():
    names = set(recipe_files())
    assert {"cpu-default", "speechprompt-v1", "speechprompt-v2", "superb"} <= names
    tasks = set(TaskRegistry().tasks)
    for n in names:
        r = load_recipe(n)
        assert set(r.tasks) <= tasks
        for method in r.methods:
            for t in [*r.tasks, "builtin-ks"]:
                passed, pending = split_pending(method, options_for(r, t, method))
                method_class(method)(passed)  # every resolved cell builds
                assert set(pending) <= set(ENGINE_KEYS_PENDING)


def test_cpu_default_is_exactly_what_bench_runs_without_a_recipe():
    r = load_recipe("cpu-default")
    assert not r.tasks
    for method, opts in r.methods.items():
        passed, pending = split_pending(method, opts)
        assert method_class(method)(passed).config == method_class(method)(None).config, method
        fields = {f.name for f in dataclasses.fields(method_class(method).Config)}
        assert set(pending) == set(ENGINE_KEYS_PENDING) & (set(opts) - fields)


def test_user_options_win_over_the_task_override_over_the_recipe():
    assert options_for("speechprompt-v2", "scr-grabo", "prompt-gslm")["batch_size"] == 4
    assert options_for("speechprompt-v2", "scr-grabo", "prompt-gslm", {"batch_size": 8})["batch_size"] == 8
    assert options_for("speechprompt-v2", "builtin-ks", "prompt-gslm")["batch_size"] == 32
    spec = TaskRegistry().get("scr-grabo")
    assert options_for("speechprompt-v2", spec, "prompt-gslm")["batch_size"] == 4  # a TaskSpec works too


def _write(tmp_path: Path, name: str, body: str) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(body, encoding="utf-8")
    return p


@pytest.mark.parametrize("body,expected", [
    ("name: r\ndescription: x\nmethods: {linear: {lr: 1}}\nbogus: 1\n", "bogus: unknown key"),
    ("name: r\ndescription: x\nmethods: {linear: {lr: 1, lr: 2}}\n", "duplicate key 'lr'"),
    ("name: r\ndescription: x\nmethods: {linear: {learning_rate: 1}}\n", "methods.linear.learning_rate: not an option"),
    ("name: r\ndescription: x\nmethods: {linear: {separator_init: bos_row}}\n", "methods.linear.separator_init"),
    ("name: r\ndescription: x\nmethods: {prompt-gslm: {separator_init: zeros}}\n", "separator_init='zeros': expected one of"),
    ("name: r\ndescription: x\nmethods: {prompt-gslm: {batch_size: many}}\n", "prompt-gslm.batch_size"),
    ("name: r\ndescription: x\nmethods: {promptgslm: {}}\n", "methods.promptgslm: unknown method"),
    ("name: r\ndescription: x\ntasks: {ks-speech-commands: {}}\n", "did you mean 'ks-speech-commands-v1'"),
    ("name: other\ndescription: x\n", "must equal the file name"),
    ("name: r\ndescription: x\ntasks: {sd-mustard: {data: {resample: sometimes}}}\n", "tasks.sd-mustard.data.resample"),
])
def test_bad_recipe_is_one_line_naming_file_and_key(tmp_path, body, expected):
    p = _write(tmp_path, "r", body)
    with pytest.raises(BenchError) as err:
        load_recipe_file(p)
    msg = err.value.message
    assert "\n" not in msg and str(p) in msg and expected in msg, msg


def test_a_recipe_name_twice_is_an_error(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _write(a, "r", "name: r\ndescription: x\n")
    _write(b, "r", "name: r\ndescription: x\n")
    with pytest.raises(BenchError, match="defined twice"):
        recipe_files([a, b])
    with pytest.raises(BenchError, match="unknown recipe 'speechprompt-v3'"):
        load_recipe("speechprompt-v3")


def test_runner_builds_each_cell_with_its_tasks_options_and_records_the_recipe():
    from bench.runner.plan import RunOptions, build_method, recipe_config

    reg = TaskRegistry()
    opts = RunOptions(recipe="speechprompt-v2", method_options={"prompt-gslm": {"lr": 1e-3}})
    grabo, ks = reg.get("scr-grabo"), reg.get("ks-speech-commands-v1")
    assert build_method("prompt-gslm", grabo, opts).config.batch_size == 4
    assert build_method("prompt-gslm", ks, opts).config.batch_size == 32
    assert build_method("prompt-gslm", grabo, opts).config.lr == 1e-3  # -o wins
    rc = recipe_config(ks, "prompt-gslm", opts)
    assert rc["recipe"] == "speechprompt-v2"
    assert rc["recipe_data"] == {"resample": "class_balanced", "resample_splits": ["train", "valid"]}
    fields = {f.name for f in dataclasses.fields(method_class("prompt-gslm").Config)}
    if "separator_init" not in fields:  # engine keys pending: recorded, not passed (until the engine has them)
        assert rc["recipe_unapplied"]["separator_init"] == "normal_scaled"
    assert recipe_config(reg.get("builtin-ks"), "linear", RunOptions()) == {"recipe": "cpu-default"}
