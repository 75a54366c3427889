"""From a task spec to its manifest: build the built-in data, read a corpus, or read a user manifest.

Built-in data is generated once per (generator, task version, params, size, seed) and reused: the stamp
``build.json`` beside the manifest records what produced it and the manifest's checksum.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Callable

from bench.data.manifest import Manifest, write_text_atomic
from bench.core.errors import BenchError, DataMissingError
from bench.tasks.registry import TaskSpec

SIZES = ("tiny", "default", "large")


def builtin_dir(spec: TaskSpec, size: str, seed: int, data_root: Path | None = None) -> Path:
    from bench.core.paths import data_dir

    return Path(data_root or data_dir()) / spec.name / f"{size}-seed{seed}"


def _stamp(spec: TaskSpec, size: str, seed: int) -> dict:
    params = json.dumps(spec.data.params, sort_keys=True)
    return {
        "task": spec.name,
        "task_version": spec.version,
        "generator": spec.data.generator,
        "params_sha1": hashlib.sha1(params.encode()).hexdigest(),
        "size": size,
        "seed": seed,
    }


def is_available(spec: TaskSpec, size: str = "default", data_seed: int = 0, data_root: Path | None = None,
                 allow_missing_audio: bool = False) -> bool:
    """Built-in tasks are always available (they can be built); corpora when their files are present (with
    ``allow_missing_audio``, --skip-bad-audio, when all but some audio files are)."""
    if spec.data.source == "builtin":
        return True
    try:
        check_data(spec).raise_if_missing(allow_missing_audio)
        return True
    except BenchError:
        return False


def prepare_manifest(spec: TaskSpec, size: str = "default", data_seed: int = 0, data_root: Path | None = None,
                     advance_factory: Callable[[str, int], Callable[[int], object]] | None = None,
                     rebuild: bool = False, allow_missing_audio: bool = False) -> Manifest:
    """The task's manifest, building built-in data if it is not built yet. ``allow_missing_audio``
    (--skip-bad-audio): a corpus or manifest whose only problem is absent audio files is returned, and the run's
    audio check drops those examples."""
    if size not in SIZES:
        raise BenchError(f"--size must be one of {', '.join(SIZES)}, not '{size}'")
    if spec.data.source == "builtin":
        from bench.core.locks import build_lock

        out = builtin_dir(spec, size, data_seed, data_root)
        want = _stamp(spec, size, data_seed)
        if not rebuild:
            built = _built_manifest(out, want)
            if built is not None:
                return built
        # one process builds a task's data; another waits, then finds it built (unless it asked to rebuild)
        with build_lock(out, f"the built-in data of {spec.name} ({size}, seed {data_seed}) in {out}"):
            if not rebuild:
                built = _built_manifest(out, want)
                if built is not None:
                    return built
            module = importlib.import_module(f"bench.data.builtin.{spec.data.generator}")
            try:
                manifest = module.build(spec, out, size, data_seed, advance_factory)
                manifest.root = out
                manifest.write(out / "manifest.jsonl")
                sizes = manifest.sizes()
                write_text_atomic(out / "build.json", json.dumps({**want, "manifest_sha256": manifest.checksum(),
                                                                  "sizes": sizes}, indent=2), what="build stamp")
            except BaseException:  # a build that stopped (disk full, Ctrl-C) leaves no half-written task data
                import shutil

                shutil.rmtree(out, ignore_errors=True)
                raise
            return Manifest.read(out / "manifest.jsonl")
    if spec.data.source == "corpus":
        from bench.data.corpora.base import load_corpus

        return load_corpus(spec, allow_missing_audio=allow_missing_audio)
    from bench.data.user_manifest import load_user_manifest

    return load_user_manifest(spec, allow_missing_audio=allow_missing_audio)


def _built_manifest(out: Path, want: dict) -> Manifest | None:
    """The manifest of a finished build of ``want`` in ``out`` (stamp and checksum match), else None."""
    stamp_file, manifest_file = out / "build.json", out / "manifest.jsonl"
    if stamp_file.exists() and manifest_file.exists():
        try:
            have = json.loads(stamp_file.read_text())
        except (OSError, ValueError):
            return None
        if {k: have.get(k) for k in want} == want:
            manifest = Manifest.read(manifest_file)
            if manifest.checksum() == have.get("manifest_sha256"):
                return manifest
    return None


def check_data(spec: TaskSpec, root: Path | None = None):
    """A report of what is present, missing or malformed (corpus and manifest tasks)."""
    if spec.data.source == "builtin":
        raise BenchError(f"task '{spec.name}' is built in; `bench data build {spec.name}` generates it")
    if spec.data.source == "corpus":
        from bench.data.corpora.base import check_corpus

        return check_corpus(spec, root)
    from bench.data.user_manifest import check_user_manifest

    return check_user_manifest(spec)


def check_data_audio(spec: TaskSpec, root: Path | None = None, size: str = "default", data_seed: int = 0,
                     advance_factory=None):
    """Decode every audio file of the task's manifest (:mod:`bench.data.audio_check`, cached); None when there is
    no manifest to check (a corpus whose metadata is missing or malformed: :func:`check_data` says why)."""
    from bench.data.audio_check import check_manifest_audio

    if spec.data.source == "builtin":
        manifest = prepare_manifest(spec, size, data_seed, advance_factory=advance_factory)
    elif spec.data.source == "corpus":
        from bench.data.corpora.base import _scan

        manifest = _scan(spec, root)[1]
    else:
        from bench.data.user_manifest import _scan

        manifest = _scan(spec)[1]
    if manifest is None:
        return None
    return check_manifest_audio(manifest, advance_factory=advance_factory, what=spec.name)


__all__ = ["prepare_manifest", "check_data_audio", "check_data", "is_available", "DataMissingError", "SIZES"]
