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
from bench.errors import BenchError, DataMissingError
from bench.registry import TaskSpec

SIZES = ("tiny", "default", "large")


def builtin_dir(spec: TaskSpec, size: str, seed: int, data_root: Path | None = None) -> Path:
    from bench.paths import data_dir

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


def is_available(spec: TaskSpec, size: str = "default", data_seed: int = 0, data_root: Path | None = None) -> bool:
    """Built-in tasks are always available (they can be built); corpora when their files are present."""
    if spec.data.source == "builtin":
        return True
    try:
        check_data(spec).raise_if_missing()
        return True
    except BenchError:
        return False


def prepare_manifest(spec: TaskSpec, size: str = "default", data_seed: int = 0, data_root: Path | None = None,
                     advance_factory: Callable[[str, int], Callable[[int], object]] | None = None,
                     rebuild: bool = False) -> Manifest:
    """The task's manifest, building built-in data if it is not built yet."""
    if size not in SIZES:
        raise BenchError(f"--size must be one of {', '.join(SIZES)}, not '{size}'")
    if spec.data.source == "builtin":
        out = builtin_dir(spec, size, data_seed, data_root)
        stamp_file, manifest_file = out / "build.json", out / "manifest.jsonl"
        want = _stamp(spec, size, data_seed)
        if not rebuild and stamp_file.exists() and manifest_file.exists():
            have = json.loads(stamp_file.read_text())
            if {k: have.get(k) for k in want} == want:
                manifest = Manifest.read(manifest_file)
                if manifest.checksum() == have.get("manifest_sha256"):
                    return manifest
        module = importlib.import_module(f"bench.data.builtin.{spec.data.generator}")
        manifest = module.build(spec, out, size, data_seed, advance_factory)
        manifest.root = out
        manifest.write(manifest_file)
        sizes = manifest.sizes()
        write_text_atomic(stamp_file, json.dumps({**want, "manifest_sha256": manifest.checksum(), "sizes": sizes},
                                                 indent=2))
        return Manifest.read(manifest_file)
    if spec.data.source == "corpus":
        from bench.data.corpora.base import load_corpus

        return load_corpus(spec)
    from bench.data.user_manifest import load_user_manifest

    return load_user_manifest(spec)


def check_data(spec: TaskSpec, root: Path | None = None):
    """A report of what is present, missing or malformed (corpus and manifest tasks)."""
    if spec.data.source == "builtin":
        raise BenchError(f"task '{spec.name}' is built in; `bench data build {spec.name}` generates it")
    if spec.data.source == "corpus":
        from bench.data.corpora.base import check_corpus

        return check_corpus(spec, root)
    from bench.data.user_manifest import check_user_manifest

    return check_user_manifest(spec)


__all__ = ["prepare_manifest", "check_data", "is_available", "DataMissingError", "SIZES"]
