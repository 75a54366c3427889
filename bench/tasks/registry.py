"""The task registry: one declarative YAML file per task under ``tasks/``, validated into a typed ``TaskSpec``.

Modelled on lm-evaluation-harness (files found by a sorted glob) and MTEB (typed metadata; duplicate names are
an error; a typo gets "did you mean"). Every task carries a version: change what it measures, bump it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.core.errors import BenchError, TaskDefinitionError
from bench.tasks.metrics import METRICS
from bench.core.paths import repo_root

FAMILIES = {
    "KS": "keyword spotting",
    "SCR": "speech command recognition (multilingual)",
    "IC": "intent classification",
    "ASR": "automatic speech recognition",
    "SF": "slot filling",
    "LID": "language identification",
    "FSD": "fake-speech detection",
    "ER": "emotion recognition",
    "AcC": "accent classification",
    "SD": "sarcasm detection",
    "GID": "gender identification",
    "SID": "speaker identification",
    "AuC": "audio classification",
    "VAD": "voice activity detection",
    "PR": "prosody recognition",
    "DYC": "dysarthria classification",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    """Where a task's audio and labels come from.

    - ``builtin``: generated offline by ``bench.data.builtin.<generator>``;
    - ``corpus``: a real corpus read by ``bench.data.corpora.<adapter>`` from a root the user configures;
    - ``manifest``: a user's CSV/JSONL file (audio path + label or text).
    """

    source: Literal["builtin", "corpus", "manifest"]
    generator: str | None = None
    adapter: str | None = None
    path: str | None = None  # manifest file (source: manifest), relative to the task file
    audio_root: str | None = None  # prefix for relative audio paths in a user manifest
    root_key: str | None = None  # name under which the user configures the corpus root
    where: str = ""  # how to obtain the data (printed when it is missing)
    license: str = ""
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _source_fields(self):
        need = {"builtin": "generator", "corpus": "adapter", "manifest": "path"}[self.source]
        if not getattr(self, need):
            raise ValueError(f"data.source '{self.source}' needs data.{need}")
        return self


class LongAudio(_Strict):
    """What happens to an utterance longer than ``max_seconds`` (a task card's ``long_audio``, a recipe's per-task
    ``data.long_audio``, or ``bench run --max-seconds``): ``crop`` keeps its first ``max_seconds`` (a segment
    ending there: the features, units and F0 are those of the cropped audio, cached under their own key);
    ``refuse`` skips the task before any extraction, naming how many utterances are over and the longest. Only
    the ``splits`` named are limited (s3prl's SID crops training utterances only)."""

    max_seconds: float = Field(gt=0, allow_inf_nan=False)
    policy: Literal["crop", "refuse"] = "refuse"
    splits: tuple[Literal["train", "valid", "test"], ...] = Field(default=("train", "valid", "test"), min_length=1)

    def record(self) -> dict:
        return {"max_seconds": self.max_seconds, "policy": self.policy, "splits": list(self.splits)}


class TaskSpec(_Strict):
    name: str
    version: int
    family: str
    kind: Literal["classification", "generation"]
    origin: Literal["synthetic", "real-human", "mixed", "corpus"]
    description: str
    stands_in_for: str = ""
    groups: list[str] = Field(default_factory=list)
    labels: list[str] | None = None
    slots: dict[str, list[str]] | None = None  # multi-slot classification (IC): label = values joined by " "
    slot_tags: list[str] | None = None  # slot filling: slot types that appear as B-/E- tags in targets
    positive_label: str | None = None  # binary tasks: the class F1 and EER are computed for
    metrics: list[str]
    data: DataSpec
    split_rule: str = ""
    card: str = ""
    citation: str = ""
    long_audio: LongAudio | None = None  # a maximum utterance length and what to do above it (None: no limit)
    source_file: str = Field(default="", exclude=True)

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]*", v):
            raise ValueError(f"task name '{v}' must be lower-case letters, digits, '-' or '_'")
        return v

    @field_validator("family")
    @classmethod
    def _family(cls, v: str) -> str:
        if v not in FAMILIES:
            raise ValueError(f"unknown family '{v}'; expected one of {sorted(FAMILIES)}")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("a task needs at least one metric")
        for m in v:
            if m not in METRICS:
                close = difflib.get_close_matches(m, METRICS, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ValueError(f"unknown metric '{m}'{hint}; known: {sorted(METRICS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.kind == "classification":
            if not self.labels and not self.slots:
                raise ValueError("a classification task needs 'labels' or 'slots'")
            if self.labels and len(set(self.labels)) != len(self.labels):
                raise ValueError("'labels' has duplicates")
        if self.positive_label is not None and self.labels and self.positive_label not in self.labels:
            raise ValueError(f"positive_label '{self.positive_label}' is not in labels")
        wrong = [m for m in self.metrics if METRICS[m].kind != self.kind]
        if wrong:
            fits = sorted(m for m, d in METRICS.items() if d.kind == self.kind)
            raise ValueError(f"metric(s) {wrong} score {METRICS[wrong[0]].kind} outputs, not a {self.kind} task's; "
                             f"a {self.kind} task takes {fits}")
        if any(METRICS[m].needs_scores or m == "binary_f1" for m in self.metrics) and not self.positive_label:
            raise ValueError("metrics binary_f1/eer need 'positive_label'")
        return self

    # ---- derived views -------------------------------------------------------------------------
    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    @property
    def class_labels(self) -> list[str]:
        """Every label string a classifier may output (for IC: the per-slot values, in slot order)."""
        if self.labels:
            return list(self.labels)
        return [v for values in (self.slots or {}).values() for v in values]

    @property
    def num_outputs(self) -> int:
        """Output units of a classification head: C classes, or the sum of slot sizes (SUPERB IC: 24)."""
        return len(self.class_labels)

    # prose a person reads: editing it changes no data, label, metric or split, so it does not change the
    # fingerprint (records stay valid when a card is corrected); ``data``, labels, metrics and version do
    PROSE_FIELDS: ClassVar[frozenset[str]] = frozenset({"description", "stands_in_for", "split_rule", "card",
                                                        "citation", "groups"})

    def fingerprint(self) -> str:
        """Hash of the definition less its prose (:attr:`PROSE_FIELDS`); recorded in every result so a silent
        change of data, labels or metrics is visible."""
        exclude = set(self.PROSE_FIELDS) | ({"long_audio"} if self.long_audio is None else set())  # absent: unchanged
        payload = json.dumps(self.model_dump(mode="json", exclude=exclude), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class TaskRegistry:
    """All task files under one or more directories, loaded eagerly (they are small) and validated."""

    def __init__(self, dirs: list[Path] | None = None):
        self.dirs = [Path(d) for d in (dirs or [repo_root() / "tasks"])]
        self.tasks: dict[str, TaskSpec] = {}
        for d in self.dirs:
            if not d.is_dir():
                raise TaskDefinitionError(f"--task-dir {d}: " + ("not a directory" if d.exists() else
                                          "no such directory") + "; expected a directory of task .yaml files")
            stray = sorted(d.rglob("*.yml"))
            if stray:  # silently skipped, it would surface later as "unknown task"
                raise TaskDefinitionError(f"{stray[0]}: task files end in .yaml; rename it to "
                                          f"{stray[0].with_suffix('.yaml').name}")
            for path in sorted(d.rglob("*.yaml")):
                self._add(load_task_file(path))

    def _add(self, spec: TaskSpec) -> None:
        if spec.name in self.tasks:
            other = self.tasks[spec.name].source_file
            raise TaskDefinitionError(
                f"duplicate task name '{spec.name}' in {spec.source_file} (already defined in {other})"
            )
        self.tasks[spec.name] = spec

    def __contains__(self, name: str) -> bool:
        return name in self.tasks

    def __iter__(self):
        return iter(self.tasks.values())

    def get(self, name: str) -> TaskSpec:
        if name not in self.tasks:
            raise BenchError(f"unknown task '{name}'{_did_you_mean(name, self.tasks)}", hint="`bench tasks` lists them")
        return self.tasks[name]

    @cached_property
    def groups(self) -> dict[str, list[str]]:
        g: dict[str, list[str]] = {"all": list(self.tasks)}
        for spec in self.tasks.values():
            for name in dict.fromkeys([*spec.groups, spec.family.lower(), spec.kind, spec.data.source]):
                g.setdefault(name, []).append(spec.name)
        return g

    def select(self, expr: str) -> list[TaskSpec]:
        """Resolve ``all``, ``ks,ic``, group names and task names (comma-separated), keeping file order."""
        wanted: list[str] = []
        for item in [s.strip() for s in expr.split(",") if s.strip()]:
            if item in self.tasks:
                names = [item]
            elif item in self.groups:
                names = self.groups[item]
            else:
                raise BenchError(
                    f"unknown task or group '{item}'{_did_you_mean(item, [*self.tasks, *self.groups])}",
                    hint="`bench tasks` lists tasks and groups",
                )
            wanted += [n for n in names if n not in wanted]
        if not wanted:
            raise BenchError(f"--tasks '{expr}' selects no task")
        return [self.tasks[n] for n in wanted]


def _did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _TaskYamlLoader(yaml.SafeLoader):
    """YAML 1.2 booleans only: YAML 1.1 reads the keywords yes/no/on/off as booleans, which would silently turn
    Speech Commands labels into True/False."""


_TaskYamlLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_TaskYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_yaml(path: Path):
    """Parse a bench YAML file (task or method config) with YAML 1.2 booleans."""
    return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_TaskYamlLoader)


def load_task_file(path: Path) -> TaskSpec:
    path = Path(path)
    try:
        raw = read_yaml(path)
    except yaml.YAMLError as err:
        raise TaskDefinitionError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise TaskDefinitionError(f"{path}: expected a mapping of task fields at the top level")
    try:
        return TaskSpec(**raw, source_file=str(path))
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'task'}: "
            + ("unknown field (not part of a task definition)" if e["type"] == "extra_forbidden" else e["msg"])
            for e in err.errors()
        )
        raise TaskDefinitionError(f"{path}: invalid task definition: {problems}") from None
