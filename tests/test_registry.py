"""The registry: typed task files, duplicate names and unknown fields are errors naming the file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bench.core.errors import BenchError, TaskDefinitionError
from bench.tasks.registry import TaskRegistry, load_task_file

GOOD = """
name: toy-ks
version: 1
family: KS
kind: classification
origin: synthetic
description: toy keyword spotting
groups: [toy]
labels: [yes, no]
metrics: [accuracy]
data: {source: builtin, generator: keyword_spotting}
"""


def write(dir: Path, name: str, text: str) -> Path:
    p = dir / name
    p.write_text(textwrap.dedent(text))
    return p


def test_good_task_file_loads_into_typed_spec(tmp_path):
    spec = load_task_file(write(tmp_path, "ks.yaml", GOOD))
    assert spec.name == "toy-ks" and spec.kind == "classification"
    assert spec.main_metric == "accuracy" and spec.num_outputs == 2
    assert len(spec.fingerprint()) == 16


def test_unknown_field_is_an_error_naming_the_file(tmp_path):
    p = write(tmp_path, "bad.yaml", GOOD + "colour: blue\n")
    with pytest.raises(TaskDefinitionError, match=r"bad\.yaml.*colour: unknown field"):
        load_task_file(p)


def test_unknown_metric_suggests_the_close_one(tmp_path):
    p = write(tmp_path, "bad.yaml", GOOD.replace("[accuracy]", "[acuracy]"))
    with pytest.raises(TaskDefinitionError, match="did you mean 'accuracy'"):
        load_task_file(p)


def test_classification_without_labels_is_rejected(tmp_path):
    p = write(tmp_path, "bad.yaml", GOOD.replace("labels: [yes, no]\n", ""))
    with pytest.raises(TaskDefinitionError, match="needs 'labels' or 'slots'"):
        load_task_file(p)


def test_eer_requires_a_positive_label(tmp_path):
    p = write(tmp_path, "bad.yaml", GOOD.replace("[accuracy]", "[eer, accuracy]"))
    with pytest.raises(TaskDefinitionError, match="positive_label"):
        load_task_file(p)


def test_duplicate_task_names_are_an_error(tmp_path):
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", GOOD)
    with pytest.raises(TaskDefinitionError, match="duplicate task name 'toy-ks'.*b.yaml.*a.yaml"):
        TaskRegistry([tmp_path])


def test_select_all_groups_lists_and_typos(tmp_path):
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", GOOD.replace("toy-ks", "toy-lid").replace("family: KS", "family: LID"))
    reg = TaskRegistry([tmp_path])
    assert [s.name for s in reg.select("all")] == ["toy-ks", "toy-lid"]
    assert [s.name for s in reg.select("lid")] == ["toy-lid"]
    assert [s.name for s in reg.select("toy-lid,toy")] == ["toy-lid", "toy-ks"]
    with pytest.raises(BenchError, match="did you mean 'toy-ks'"):
        reg.select("toy-kss")


def test_fingerprint_changes_when_the_definition_changes(tmp_path):
    a = load_task_file(write(tmp_path, "a.yaml", GOOD))
    b = load_task_file(write(tmp_path, "b.yaml", GOOD.replace("version: 1", "version: 2")))
    assert a.fingerprint() != b.fingerprint()


def test_prose_does_not_change_the_fingerprint(tmp_path):
    """A corrected card or description keeps the task's records valid; its data, labels and metrics do not."""
    a = load_task_file(write(tmp_path, "a.yaml", GOOD))
    prose = a.model_copy(update={"card": a.card + " More on why.", "description": "reworded", "groups": ["x"]})
    labels = a.model_copy(update={"labels": [*(a.labels or []), "extra"]})
    assert prose.fingerprint() == a.fingerprint() != labels.fingerprint()


def test_repository_task_files_all_validate():
    reg = TaskRegistry()
    assert len(reg.tasks) >= 1
    for spec in reg:
        assert spec.card or spec.description


def test_speech_commands_keywords_stay_strings_not_yaml11_booleans(tmp_path):
    text = GOOD.replace("labels: [yes, no]", "labels: [yes, no, on, off, true_word]")
    spec = load_task_file(write(tmp_path, "ks.yaml", text))
    assert spec.labels == ["yes", "no", "on", "off", "true_word"]
