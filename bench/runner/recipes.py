"""Recipes: the published training/evaluation settings of a paper as data (``recipes/<name>.yaml``).

A recipe holds, per method, the options it passes to that method's ``Config`` (``bench/methods/*.py``), per task
(registry names) overrides of those options, and the data-side choices of the task (corpus adapter parameters
such as MUStARD's fold, a class-balanced resample of Speech Commands). :func:`options_for` merges recipe global →
per task → the user's ``-o`` options (the user wins). ``cpu-default`` is exactly what bench runs without a recipe.

A published recipe names the published models by their configured names (``bench/core/model_paths.py``:
``KNOWN_MODELS``): ``upstream`` (``hubert_local`` → ``models.hubert_base``) and the prompt methods' ``lm_checkpoint`` /
``kmeans`` / ``units_upstream`` (pGSLM: ``lm`` / ``f0_bins``). :func:`published_models` checks before any work that
they are configured, and refuses in one line otherwise; ``--allow-stand-in`` runs bench's offline stand-ins in their
place, and every such record says so (``stand_in`` in its config).

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
from bench.tasks.registry import LongAudio

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
    long_audio: LongAudio | None = None  # replaces the task card's (bench.data.long_audio)

    @property
    def is_default(self) -> bool:
        return not self.params and self.resample == "none" and self.long_audio is None

    def record(self) -> dict:
        """For the record's configuration: only what differs from the task file."""
        out: dict[str, Any] = {}
        if self.params:
            out["params"] = dict(sorted(self.params.items()))
        if self.resample != "none":
            out["resample"] = self.resample
            out["resample_splits"] = list(self.resample_splits)
        if self.long_audio is not None:
            out["long_audio"] = self.long_audio.record()
        return out


class TaskRecipe(_Strict):
    note: str = ""
    data: DataChoices = Field(default_factory=DataChoices)
    methods: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Recipe(_Strict):
    name: str
    description: str
    sources: list[str] = Field(default_factory=list)  # repositories@commit the values come from
    upstream: str | None = None  # the published upstream: the default of --upstream under this recipe
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


def load_recipe_file(path: Path, task_names: set[str] | None = None, check_options: bool = True) -> Recipe:
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
        if check_options:  # (importing the methods' Config imports torch: published_models checks first)
            _check_options(path, f"methods.{method}", method, opts)
    for task, tr in recipe.tasks.items():
        if task not in task_names:
            import difflib

            close = difflib.get_close_matches(task, sorted(task_names), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise BenchError(f"{path}: tasks.{task}: not a registered task{hint}; `bench tasks` lists them")
        for method, opts in tr.methods.items():
            if check_options:
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


# ---------------------------------------------------------------------------------------------------------------
# the published models a recipe names: checked before any work, resolved, hashed, or replaced by a stand-in
# ---------------------------------------------------------------------------------------------------------------
# method options whose value may be a configured model name (bench/core/model_paths.py KNOWN_MODELS), and the
# options that bind a prompt method to its LM's quantizer and upstream (dropped together for a stand-in)
MODEL_OPTIONS = ("lm_checkpoint", "kmeans", "lm", "f0_bins")
LM_BINDING_OPTIONS = (*MODEL_OPTIONS, "units_upstream", "units_upstream_path", "units_layer", "unit_layer")
STAND_IN_SWITCH = "--allow-stand-in"


@dataclasses.dataclass
class PublishedModels:
    """What :func:`published_models` resolved for a run: per method the published models it reads, the files
    (``{name: {"file", "sha256"}}``), the models replaced by stand-ins, and the upstream to run."""

    upstream: str
    per_method: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    files: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    stand_in: dict[str, list[str]] = dataclasses.field(default_factory=dict)


def _model_names(options: dict) -> list[str]:
    from bench.core.model_paths import KNOWN_MODELS, UPSTREAM_MODELS, normalize_name

    out = []
    for key in MODEL_OPTIONS:
        value = options.get(key)
        if isinstance(value, str) and normalize_name(value) in KNOWN_MODELS:
            out.append(normalize_name(value))
    units = options.get("units_upstream")
    if isinstance(units, str) and units in UPSTREAM_MODELS and not options.get("units_upstream_path"):
        out.append(UPSTREAM_MODELS[units])
    return out


def required_models(recipe: Recipe | str, methods: list[str], tasks: list, upstream: str,
                    upstream_path: str | None = None, user: dict[str, dict] | None = None) -> dict[str, list[str]]:
    """method → the published models (configured names) it reads under ``recipe`` on ``tasks``: the upstream's
    checkpoint (``hubert_local`` → ``hubert_base``, unless ``--upstream-path`` gives it) and the model names the
    method's options hold (``-o`` values that are paths name no model)."""
    from bench.core.model_paths import UPSTREAM_MODELS

    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    up = [UPSTREAM_MODELS[upstream]] if (upstream == recipe.upstream and upstream in UPSTREAM_MODELS
                                         and not upstream_path) else []
    out: dict[str, list[str]] = {}
    for method in methods:
        names = list(up)
        for task in tasks:
            names += _model_names(options_for(recipe, task, method, (user or {}).get(method)))
        out[method] = list(dict.fromkeys(names))
    return out


def published_models(recipe: Recipe | str, methods: list[str], tasks: list, upstream: str | None,
                     upstream_path: str | None = None, user: dict[str, dict] | None = None,
                     allow_stand_in: bool = False) -> PublishedModels:
    """Check, before any work, that the published models ``recipe`` names for this run are configured.

    ``upstream`` None means the recipe's (``--upstream`` not given). A model not configured is a one-line
    BenchError naming every missing entry and docs/real-checkpoints.md, unless ``allow_stand_in``: then the
    methods that read it run bench's offline stand-ins (and, if the recipe's upstream is the missing one, the
    default upstream), recorded per method in ``stand_in``. Cheap: file existence only, no torch."""
    from bench.core.model_paths import ModelConfigError, resolve_model, user_config_path
    from bench.lms.default_lm import DEFAULT_UPSTREAM

    recipe = _unchecked_recipe(recipe) if isinstance(recipe, str) else recipe
    chosen = upstream or recipe.upstream or DEFAULT_UPSTREAM
    need = required_models(recipe, methods, tasks, chosen, upstream_path, user)
    missing: list[str] = []
    for name in dict.fromkeys(n for names in need.values() for n in names):
        try:
            resolve_model(name)
        except ModelConfigError as err:
            if "is not configured" not in err.message:
                raise  # configured, but wrong: its own message names the entry and the file
            missing.append(name)
    out = PublishedModels(chosen)
    # a prompt method the published recipe names no LM for would prompt the offline stand-in: the same refusal
    unnamed = [m for m in methods if recipe.upstream and m in PROMPT_METHODS and not any(
        options_for(recipe, t, m, (user or {}).get(m)).get(k) for t in tasks for k in ("lm_checkpoint", "lm"))]
    if unnamed and not allow_stand_in:
        raise BenchError(f"recipe {recipe.name} names no published LM for {', '.join(unnamed)} ({recipe.file}); "
                         f"give one with -o METHOD.lm_checkpoint=... / -o METHOD.lm=..., or {STAND_IN_SWITCH}")
    if missing and not allow_stand_in:
        raise BenchError(
            f"recipe {recipe.name} runs the published models; not configured: {', '.join(missing)} (set "
            f"models.<name> in {user_config_path()} or $BENCH_MODEL_<NAME>, see docs/real-checkpoints.md; "
            f"{STAND_IN_SWITCH} runs bench's offline stand-ins instead, marked as such)")
    from bench.core.model_paths import UPSTREAM_MODELS

    up_model = UPSTREAM_MODELS.get(chosen)
    if up_model in missing and upstream is None:  # the recipe's upstream is not configured: the default one
        out.upstream = DEFAULT_UPSTREAM
    for method, names in need.items():
        lm_side = [n for t in tasks for n in _model_names(options_for(recipe, t, method, (user or {}).get(method)))]
        replaced = [n for n in names if n in missing]
        if method in unnamed:
            out.stand_in[method] = [*names, "unit LM (none named by the recipe)"]
        elif replaced:
            # a prompt method missing any of its models runs the whole stand-in (LM, quantizer, units together);
            # a baseline only the stand-in upstream
            out.stand_in[method] = names if lm_side else replaced
        out.per_method[method] = [n for n in names if n not in out.stand_in.get(method, [])
                                  and not (n == up_model and out.upstream != chosen)]
    for name in dict.fromkeys(n for names in out.per_method.values() for n in names):
        model = resolve_model(name)
        out.files[name] = {"file": str(model.file), "sha256": file_sha256(model.file)}
    return out


def _unchecked_recipe(name: str) -> Recipe:
    """The recipe ``name`` with its schema and task names checked but not its option values (that imports every
    method, and torch with them): enough to read which models it names, in a second. ``load_recipe`` checks all."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return load_recipe_file(p, check_options=False)
    files = recipe_files()
    if name not in files:
        return load_recipe(name)  # its error names the known recipes
    return load_recipe_file(files[name], check_options=False)


def file_sha256(path: Path) -> str:
    """sha256 of a (large) model file, cached by path, size and mtime under the cache directory."""
    import json

    from bench.core.paths import cache_dir
    from bench.data.manifest import write_text_atomic

    path = Path(path)
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    store = cache_dir() / "model_sha256.json"
    try:
        known = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    known[key] = h.hexdigest()
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(store, json.dumps(known, indent=1, sort_keys=True))
    except (OSError, BenchError):
        pass  # a cache only
    return known[key]


def resolved_options(recipe: Recipe | str, task, method: str, user: dict | None = None,
                     published: PublishedModels | None = None) -> dict:
    """:func:`options_for`, with what :func:`published_models` resolved: a method running a stand-in loses the
    recipe's LM bindings (the user's ``-o`` stay), and ``units_upstream`` gets its configured checkpoint."""
    from bench.core.model_paths import UPSTREAM_MODELS

    if published is not None and published.stand_in.get(method):
        return {**stand_in_options(options_for(recipe, task, method)), **(user or {})}
    options = options_for(recipe, task, method, user)
    units = options.get("units_upstream")
    if published is not None and units in UPSTREAM_MODELS and not options.get("units_upstream_path"):
        model = published.files.get(UPSTREAM_MODELS[units])
        if model:
            options["units_upstream_path"] = model["file"]
    return options


def stand_in_options(options: dict) -> dict:
    """``options`` without the LM bindings a published recipe sets, so a prompt method runs its offline stand-in."""
    return {k: v for k, v in options.items() if k not in LM_BINDING_OPTIONS}


__all__ = ["PublishedModels", "published_models", "required_models", "stand_in_options", "file_sha256",
           "Recipe", "TaskRecipe", "DataChoices", "DEFAULT_RECIPE", "ENGINE_KEYS_PENDING", "load_recipe",
           "load_recipe_file", "recipe_files", "options_for", "split_pending", "data_choices", "task_for_recipe"]
