"""The user's configuration: where real corpora (and local models) live on this machine. bench never downloads.

Corpus roots are named by a task's ``data.root_key``, either in the user config file (``$BENCH_CONFIG``, else
``~/.config/bench/config.yaml``, the same file as ``models:``)::

    corpora:
      speech_commands_v1: /data/speech_commands       # holds speech_commands_v0.01/ and the test-set folder
      librispeech: ~/corpora/LibriSpeech

or with an environment variable ``BENCH_CORPUS_<ROOT_KEY>`` (key upper-cased, ``-`` → ``_``), which wins over the
file. Relative paths in the file are relative to the file; ``~`` and ``$VARS`` are expanded. ``--root`` on the
command line wins over both. Model paths are resolved by :mod:`bench.core.model_paths` (``models:`` section).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import BenchError, DataMissingError

ENV_CORPUS_PREFIX = "BENCH_CORPUS_"


class CorpusNotConfiguredError(DataMissingError):
    """No root is configured for a corpus, or the configured root is not a directory."""


@dataclass(frozen=True)
class CorpusRoot:
    key: str
    path: Path
    origin: str  # "--root", "$BENCH_CORPUS_X" or "<config file>: corpora.x"


def normalize_key(key: str) -> str:
    return str(key).strip().lower().replace("-", "_")


def corpus_env_var(key: str) -> str:
    return ENV_CORPUS_PREFIX + normalize_key(key).upper()


def config_path() -> Path:
    from bench.core.model_paths import user_config_path

    return user_config_path()


def _corpora_section() -> tuple[dict[str, object], Path | None]:
    from bench.core.model_paths import read_user_config

    data, path = read_user_config()
    section = data.get("corpora") or {}
    if not isinstance(section, dict):
        raise BenchError(f"{path}: 'corpora:' must map corpus root keys to directories, got {type(section).__name__}")
    return {normalize_key(k): v for k, v in section.items()}, path


def _expand(raw: str, base: Path | None) -> Path:
    p = Path(os.path.expandvars(os.path.expanduser(str(raw))))
    if not p.is_absolute() and base is not None:
        p = base / p
    return p.resolve()


def how_to_configure(key: str) -> str:
    key = normalize_key(key)
    return (f"pass --root DIR, set ${corpus_env_var(key)}=DIR, or add 'corpora: {{{key}: DIR}}' to "
            f"{config_path()} (or the file named by $BENCH_CONFIG)")


def corpus_root(key: str | None, explicit: str | Path | None = None, task: str = "") -> CorpusRoot:
    """The directory configured for a corpus; a DataMissingError that says how to configure it otherwise."""
    what = f"task '{task}'" if task else "this corpus"
    if explicit is not None:
        path = Path(explicit).expanduser().resolve()
        origin = "--root"
    else:
        if not key:
            raise CorpusNotConfiguredError(f"{what} has no data.root_key, so its root must be given with --root DIR")
        key = normalize_key(key)
        env = os.environ.get(corpus_env_var(key))
        section, cfg = _corpora_section()
        if env:
            path, origin = _expand(env, Path.cwd()), f"${corpus_env_var(key)}"
        elif key in section:
            raw = section[key]
            if not isinstance(raw, str) or not raw.strip():
                raise BenchError(f"{cfg}: corpora.{key} must be a directory path, got {raw!r}")
            path, origin = _expand(raw, cfg.parent if cfg else None), f"{cfg}: corpora.{key}"
        else:
            raise CorpusNotConfiguredError(f"the corpus root '{key}' for {what} is not configured",
                                           hint=how_to_configure(key))
    if not path.is_dir():
        raise CorpusNotConfiguredError(f"corpus root for {what} ({origin}) is {path}, which is not a directory",
                                       hint=how_to_configure(key or ""))
    return CorpusRoot(normalize_key(key or ""), path, origin)


def configured_corpora() -> dict[str, str]:
    """Every corpus root key configured (file or environment) → where it is configured."""
    section, cfg = _corpora_section()
    out = {k: f"{cfg}: corpora.{k}" for k in section}
    for var, value in os.environ.items():
        if var.startswith(ENV_CORPUS_PREFIX) and value:
            out[var[len(ENV_CORPUS_PREFIX):].lower()] = f"${var}"
    return dict(sorted(out.items()))


def model_path(name: str) -> Path:
    """A configured local model path (``models:`` / ``$BENCH_MODEL_<NAME>``), checked by :mod:`bench.core.model_paths`."""
    from bench.core.model_paths import resolve_model

    return resolve_model(name).path
