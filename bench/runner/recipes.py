"""Recipes: the published training/evaluation settings of a paper as data (``recipes/<name>.yaml``).

A recipe holds, per method, the options it passes to that method's ``Config`` (``bench/methods/*.py``), per task
(registry names) overrides of those options, and the data-side choices of the task (corpus adapter parameters
such as MUStARD's fold, a class-balanced resample of Speech Commands). :func:`options_for` merges recipe global →
per task → the user's ``-o`` options (the user wins). ``cpu-default`` is exactly what bench runs without a recipe.

A recipe key a method's engine does not take yet (:data:`ENGINE_KEYS_PENDING`, empty now) is validated here,
recorded in every record as ``recipe_unapplied``, and passed to a method only once its ``Config`` has the field.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.core.errors import BenchError

DEFAULT_RECIPE = "cpu-default"

# recipe keys the prompt engine's Config does not have yet -> their allowed values
ENGINE_KEYS_PENDING: dict[str, tuple[Any, ...]] = {}
PROMPT_METHODS = ("prompt-gslm", "prompt-gslm-lv", "prompt-pgslm", "prompt-pgslm-lv")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataChoices(_Strict):
    """What a recipe changes in a task's data. ``params`` are merged into the task file's ``data.params`` (the
    corpus adapter checks them); ``resample`` redraws splits after loading (``bench.data.samplers``)."""

    params: dict[str, Any] = Field(default_factory=dict)
    resample: Literal["none", "class_balanced"] = "none"
    resample_splits: tuple[Literal["train", "valid"], ...] = ("train", "valid")

    @property
    def is_default(self) -> bool:
        return not self.params and self.resample == "none"

    def record(self) -> dict:
        """For the record's configuration: only what differs from the task file."""
        out: dict[str, Any] = {}
        if self.params:
            out["params"] = dict(sorted(self.params.items()))
        if self.resample != "none":
            out["resample"] = self.resample
            out["resample_splits"] = list(self.resample_splits)
        return out


class TaskRecipe(_Strict):
    note: str = ""
    data: DataChoices = Field(default_factory=DataChoices)
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Recipe(_Strict):
    name: str
    description: str
    sources: list[str] = Field(default_factory=list)  # repositories@commit the values come from
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict)
    tasks: dict[str, TaskRecipe] = Field(default_factory=dict)
    file: str = Field(default="", exclude=True)
    sha256: str = Field(default="", exclude=True)

    def task(self, task: str) -> TaskRecipe:
        return self.tasks.get(task) or TaskRecipe()


def recipes_dir() -> Path:
    from bench.core.paths import repo_root

    return repo_root() / "recipes"


class _UniqueKeyLoader(yaml.SafeLoader):
    """Refuses a mapping with a key twice (PyYAML keeps the last silently); YAML 1.2 booleans as task files."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` (merged keys may be overridden)
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise BenchError(f"duplicate key '{key}' (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


def _init_loader():
    from bench.tasks.registry import _TaskYamlLoader

    _UniqueKeyLoader.yaml_implicit_resolvers = _TaskYamlLoader.yaml_implicit_resolvers
    _UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


_init_loader()


def _where(loc) -> str:
    return ".".join(str(p) for p in loc) or "recipe"


def load_recipe_file(path: Path, task_names: set[str] | None = None) -> Recipe:
    """One recipe file, validated: schema (unknown keys refused), method names and option names/values against
    each method's Config, task names against the registry (``task_names``; the default registry when None)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except BenchError as err:
        raise BenchError(f"{path}: {err.message}") from None
    except (OSError, yaml.YAMLError) as err:
        raise BenchError(f"{path}: cannot read recipe: {' '.join(str(err).split())}") from None
    if not isinstance(raw, dict):
        raise BenchError(f"{path}: expected a mapping (name, description, methods, tasks) at the top level")
    try:
        recipe = Recipe(**raw, file=str(path), sha256=hashlib.sha256(text.encode()).hexdigest())
    except ValidationError as err:
        e = err.errors()[0]
        what = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        raise BenchError(f"{path}: {_where(e['loc'])}: {what}") from None
    if recipe.name != path.stem:
        raise BenchError(f"{path}: name '{recipe.name}' must equal the file name '{path.stem}'")
    if task_names is None:
        from bench.tasks.registry import TaskRegistry

        task_names = set(TaskRegistry().tasks)
    for method, opts in recipe.methods.items():
        _check_options(path, f"methods.{method}", method, opts)
    for task, tr in recipe.tasks.items():
        if task not in task_names:
            import difflib

            close = difflib.get_close_matches(task, sorted(task_names), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise BenchError(f"{path}: tasks.{task}: not a registered task{hint}; `bench tasks` lists them")
        for method, opts in tr.methods.items():
            _check_options(path, f"tasks.{task}.methods.{method}", method, opts)
    return recipe


def _check_options(path: Path, where: str, method: str, options: dict) -> None:
    from bench.methods import METHODS, method_class
    from bench.methods.base import option_types, validate_options

    if method not in METHODS:
        raise BenchError(f"{path}: {where}: unknown method; known: {', '.join(METHODS)}")
    config = method_class(method).Config
    fields = option_types(config)
    normal = {k: v for k, v in options.items() if k in fields}
    for key, value in options.items():
        if key in fields:
            continue
        if key not in ENGINE_KEYS_PENDING or method not in PROMPT_METHODS:
            raise BenchError(f"{path}: {where}.{key}: not an option of method '{method}'; known: {sorted(fields)}")
        allowed = ENGINE_KEYS_PENDING[key]
        ok = value in allowed or ("int" in allowed and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise BenchError(f"{path}: {where}.{key}: {value!r} is not one of {[a for a in allowed if a != 'int']}"
                             + (" or an integer" if "int" in allowed else ""))
    try:
        validate_options(method, config, normal)
    except BenchError as err:
        raise BenchError(f"{path}: {where}: {err.message}") from None


def recipe_files(dirs: list[Path] | None = None) -> dict[str, Path]:
    """name -> file over ``dirs`` (default: the checkout's ``recipes/``); a name found twice is an error."""
    out: dict[str, Path] = {}
    for d in dirs or [recipes_dir()]:
        for p in sorted(Path(d).glob("*.yaml")):
            if p.stem in out:
                raise BenchError(f"recipe '{p.stem}' is defined twice: {out[p.stem]} and {p}")
            out[p.stem] = p
    return out


@functools.lru_cache(maxsize=None)
def load_recipe(name: str = DEFAULT_RECIPE, dirs: tuple[Path, ...] | None = None) -> Recipe:
    """The recipe called ``name`` (or the recipe file at path ``name``), validated once per process."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return load_recipe_file(p)
    files = recipe_files(list(dirs) if dirs else None)
    if name not in files:
        import difflib

        close = difflib.get_close_matches(name, list(files), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise BenchError(f"unknown recipe '{name}'{hint}; known: {', '.join(files)}")
    return load_recipe_file(files[name])


def _task_name(task) -> str:
    return task if isinstance(task, str) else task.name


def options_for(recipe: Recipe | str, task, method: str, user: dict | None = None) -> dict:
    """The options of ``method`` on ``task`` (a name or TaskSpec): recipe global, then the task's overrides,
    then ``user`` (``-o``). Engine keys pending are included (:func:`split_pending` separates them)."""
    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    per_task = recipe.task(_task_name(task)).methods.get(method, {})
    return {**recipe.methods.get(method, {}), **per_task, **(user or {})}


def split_pending(method: str, options: dict) -> tuple[dict, dict]:
    """(options the method's Config takes, engine keys pending that it does not have yet)."""
    from bench.methods import method_class

    fields = {f.name for f in dataclasses.fields(method_class(method).Config)}
    passed = {k: v for k, v in options.items() if k in fields or k not in ENGINE_KEYS_PENDING}
    return passed, {k: v for k, v in options.items() if k not in passed}


def data_choices(recipe: Recipe | str, task) -> DataChoices:
    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    return recipe.task(_task_name(task)).data


def task_for_recipe(recipe: Recipe | str, task):
    """``task`` (a TaskSpec) with the recipe's data parameters merged into ``data.params`` (so its fingerprint,
    recorded in every record, says which fold or normalisation ran)."""
    choices = data_choices(recipe, task)
    if not choices.params:
        return task
    data = task.data.model_copy(update={"params": {**task.data.params, **choices.params}})
    return task.model_copy(update={"data": data})


__all__ = ["Recipe", "TaskRecipe", "DataChoices", "DEFAULT_RECIPE", "ENGINE_KEYS_PENDING", "load_recipe",
           "load_recipe_file", "recipe_files", "options_for", "split_pending", "data_choices", "task_for_recipe"]
