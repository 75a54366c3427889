"""What ``bench cache`` lists and prunes: the feature cache's upstream directories, their size, the tasks that
read them (from each directory's ``usage.jsonl``, appended by :class:`bench.features.store.FeatureStore`) and
when they were last used.

Layout of one upstream directory, ``<cache>/features/<upstream>-<config id>/``: ``shards/`` (frame-level
states), ``pooled/`` (per-utterance means), ``shards-L<i>-.../`` and ``pooled-L<i>-.../`` (the same for a layer set,
``--feature-cache layers``), ``usage.jsonl`` (task, time, shards of each read or write). Pruning a
task deletes the shards it used that no other task used, then drops them from the shard indexes; pruning an
upstream (or a directory no task used since the cut-off) deletes the whole directory.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

UNRECORDED = "(unrecorded)"  # shards written before usage was logged, or outside a task


@dataclass
class CacheDir:
    path: Path
    upstream: str
    config_id: str
    bytes: int
    last_use: float
    tasks: dict[str, float] = field(default_factory=dict)  # task -> last use (seconds since the epoch)
    shards: dict[str, set[str]] = field(default_factory=dict)  # task -> "shards/<id>" / "pooled/<id>"


def _usage(path: Path) -> tuple[dict[str, float], dict[str, set[str]]]:
    times: dict[str, float] = {}
    shards: dict[str, set[str]] = {}
    try:
        with open(path / "usage.jsonl", encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut by a crash
                t = rec.get("task")
                if not isinstance(t, str):
                    continue
                times[t] = max(times.get(t, 0.0), float(rec.get("time", 0)))
                shards.setdefault(t, set()).update(rec.get("shards", []))
    except FileNotFoundError:
        pass
    return times, shards


def _stored_shards(path: Path) -> dict[str, float]:
    """"shards/<id>" / "pooled/<id>" -> mtime of each finished shard (one with its sidecar)."""
    out = {}
    for sub in _stores(path):
        d = path / sub
        for p in d.glob("*.npy"):
            if p.with_suffix(".json").is_file():
                out[f"{sub}/{p.stem}"] = p.stat().st_mtime
    return out


def _stores(path: Path) -> list[str]:
    """The shard stores of an upstream directory: ``shards``, ``pooled`` and ``--feature-cache layers``'
    ``shards-L<i>-...`` / ``pooled-L<i>-...``."""
    return sorted(d.name for d in path.iterdir() if d.is_dir()
                  and (d.name in ("shards", "pooled") or d.name.startswith(("shards-L", "pooled-L"))))


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def list_cache(cache_root: Path) -> list[CacheDir]:
    """Every upstream directory under ``cache_root/features``, largest first."""
    root = Path(cache_root) / "features"
    out = []
    if not root.is_dir():
        return out
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        upstream, _, config_id = path.name.rpartition("-")
        times, shards = _usage(path)
        stored = _stored_shards(path)
        orphan = set(stored) - set().union(*shards.values()) if shards else set(stored)
        if orphan:
            times[UNRECORDED] = max(stored[s] for s in orphan)
            shards[UNRECORDED] = orphan
        last = max([*times.values(), *stored.values(), path.stat().st_mtime])
        out.append(CacheDir(path, upstream or path.name, config_id, _size(path), last, times, shards))
    return sorted(out, key=lambda c: -c.bytes)


def prune_cache(cache_root: Path, upstream: str | None = None, task: str | None = None,
                older_than_days: float | None = None, dry_run: bool = False) -> list[tuple[str, int]]:
    """Delete cache entries matching every filter given: ``upstream`` (a name such as ``fbank``, or a directory
    name ``fbank-<id>``), ``task`` (its shards no other task used), ``older_than_days`` (tasks, or whole
    directories, not used for that long). Returns (what was removed, bytes)."""
    from bench.core.errors import BenchError

    if upstream is None and task is None and older_than_days is None:
        raise BenchError("bench cache prune: name what to remove: --upstream, --task and/or --older-than DAYS")
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
    removed: list[tuple[str, int]] = []
    for c in list_cache(cache_root):
        if upstream is not None and upstream not in (c.upstream, c.path.name):
            continue
        if task is None and (cutoff is None or c.last_use < cutoff):
            removed.append((str(c.path), c.bytes))
            if not dry_run:
                shutil.rmtree(c.path)
            continue
        victims = [t for t in c.tasks if (task is None or t == task) and (cutoff is None or c.tasks[t] < cutoff)]
        if not victims:
            continue
        keep = set().union(*(s for t, s in c.shards.items() if t not in victims))
        doomed = set().union(*(c.shards[t] for t in victims)) - keep
        size = 0
        for s in doomed:
            for ext in (".npy", ".json"):
                p = c.path / (s + ext)
                if p.is_file():
                    size += p.stat().st_size
                    if not dry_run:
                        p.unlink()
        removed.append((f"{c.path} tasks {', '.join(sorted(victims))}: {len(doomed)} shards", size))
        if not dry_run:
            _forget(c.path, doomed, victims)
    return removed


def _forget(path: Path, shards: set[str], tasks: list[str]) -> None:
    """Drop deleted shards from the shard indexes and the pruned tasks from the usage log."""
    from bench.core.arrayfile import ShardedArrayStore
    from bench.data.manifest import write_text_atomic

    for sub in _stores(path):
        gone = {s.split("/", 1)[1] for s in shards if s.startswith(sub + "/")}
        if not gone or not (path / sub).is_dir():
            continue
        store = ShardedArrayStore(path / sub)
        index = store._load_index()
        for k in [k for k, v in index.items() if v[0] in gone]:
            del index[k]
        store._merged.difference_update(gone)
        store.save_index()
    usage = path / "usage.jsonl"
    if usage.is_file():
        lines = []
        for line in usage.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("task") in tasks:
                    continue
            except ValueError:
                continue
            lines.append(line)
        write_text_atomic(usage, "".join(x + "\n" for x in lines))
