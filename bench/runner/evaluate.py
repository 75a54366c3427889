"""``bench evaluate RECORD --task OTHER``: a kept head or prompt set scored on another task's test split (s3prl's
``-m evaluate -e dev-best.ckpt``).

The head is the ``seed-N.pt`` its record names (sha256-checked, :mod:`bench.methods.checkpointing`); the other task
must have the same label set (classification: the same labels per output group; generation: the same slot tags;
prompt sets: classification only, on the same frozen LM and quantizer, checked by their hashes) and is read on
the record's upstream. Nothing is trained and no record is written: the scores are printed, and
``--out`` writes them with the per-utterance outputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from bench.core.errors import BenchError

PREDICTORS = {"linear": "bench.methods.linear:predict_trained", "lstm": "bench.methods.lstm_ctc:predict_trained",
              **{m: "bench.prompt.engine:predict_trained"
                 for m in ("prompt-gslm", "prompt-gslm-lv", "prompt-pgslm", "prompt-pgslm-lv")}}


def check_label_set(trained: dict, record: dict, task) -> None:
    """One-line refusal when ``task`` cannot be scored by this head: another kind, other labels or slot tags."""
    if task.kind != record["task_kind"]:
        raise BenchError(f"task '{task.name}' is {task.kind}; the record's head was trained on a "
                         f"{record['task_kind']} task ('{record['task']}')")
    if trained["method"] == "linear":
        from bench.methods.linear import output_groups

        theirs = {name: sorted(labels) for name, labels in output_groups(task)}
        ours = {name: sorted(labels) for name, labels in trained["groups"]}
        if theirs != ours:
            raise BenchError(f"label sets differ: '{record['task']}' has {_short(ours)}, '{task.name}' has "
                             f"{_short(theirs)}; a head scores only a task with the same labels")
    elif "labels" in trained and task.kind == "classification":  # a prompt set: one symbol per class
        theirs = sorted(task.labels or [v for values in (task.slots or {}).values() for v in values])
        ours = sorted(trained["labels"])
        if theirs != ours:
            raise BenchError(f"label sets differ: '{record['task']}' has {_short({'': ours})}, '{task.name}' has "
                             f"{_short({'': theirs})}; a prompt set scores only a task with the same labels")
    elif trained["method"] == "lstm":
        from bench.tasks.text import slot_tag_tokens

        theirs = slot_tag_tokens(task.slot_tags or [])
        if theirs != list(trained["vocabulary"].get("tags", [])):
            raise BenchError(f"label sets differ: '{record['task']}' has slot tags "
                             f"{trained['vocabulary'].get('tags', [])}, '{task.name}' has {theirs}")


def _short(groups: dict) -> str:
    parts = []
    for name, labels in groups.items():
        shown = ", ".join(labels[:6]) + (f", … ({len(labels)})" if len(labels) > 6 else "")
        parts.append(f"{name}: [{shown}]" if len(groups) > 1 else f"[{shown}]")
    return "; ".join(parts)


def _long_audio(task, manifest, config: dict, log):
    """The record's length limit (``config.long_audio``, when it ran with one), else the task's own (its card or
    the record's recipe), applied to the manifest as ``bench run`` applies it (bench.data.long_audio)."""
    from bench.data.long_audio import apply_long_audio, limit_for
    from bench.tasks.registry import LongAudio

    limit = (LongAudio(**config["long_audio"]) if config.get("long_audio")
             else limit_for(task, config.get("recipe", "cpu-default")))
    if limit is None:
        return manifest
    from bench.data.audio_check import check_manifest_audio

    return apply_long_audio(task.name, manifest, limit, check_manifest_audio(manifest).seconds, log)


def evaluate_record(record_path: Path, task, size: str | None = None, data_seed: int | None = None,
                    limit: int | None = None, device: str = "cpu", progress: Callable | None = None,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Score the head kept beside ``record_path`` on ``task``'s test split; returns the scores, the outputs and
    where they came from."""
    import importlib

    from bench.core.paths import cache_dir, models_dir
    from bench.data.sources import prepare_manifest
    from bench.methods import checkpointing
    from bench.methods.base import MethodOutput, ParamCount, RunContext
    from bench.results.records import outputs_record, utterance_seconds
    from bench.runner.plan import score

    record_path = Path(record_path)
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as e:
        raise BenchError(f"{record_path}: not a readable result record ({e})") from None
    trained = checkpointing.load_trained(record_path, record)
    method = trained.get("method")
    if method not in PREDICTORS:
        raise BenchError(f"{record_path}: `bench evaluate` scores linear, lstm and prompt heads; this record's "
                         f"method is '{method}' (its trained state is kept, {record['trained_state']['file']})")
    check_label_set(trained, record, task)
    if record.get("config", {}).get("artefacts"):
        trained["record_artefacts"] = record["config"]["artefacts"]  # the LM the prompts were trained on
    data = record.get("data", {})
    manifest = prepare_manifest(task, size or data.get("size", "default"),
                                data.get("data_seed", 0) if data_seed is None else data_seed).limit(limit)
    config = record.get("config", {})
    manifest = _long_audio(task, manifest, config, log)
    ctx = RunContext(seed=record.get("seed", 0), upstream=record["upstream"], upstream_path=config.get("upstream_path"),
                     device=device, cache_dir=cache_dir(), models_dir=models_dir(), progress=progress, log=log)
    import torch

    threads = record.get("environment", {}).get("threads", {}).get("torch")
    if isinstance(threads, int) and threads > 0:
        torch.set_num_threads(threads)  # the cell's thread count: the same reductions, the same digits
    module, name = PREDICTORS[method].split(":")
    preds = getattr(importlib.import_module(module), name)(trained, task, manifest, ctx)
    scores = score(task, MethodOutput(preds, ParamCount(0, 0, 0)))
    return {"record": str(record_path), "trained_state": record["trained_state"], "trained_on": record["task"],
            "task": task.name, "task_version": task.version, "method": method, "upstream": record["upstream"],
            "seed": record.get("seed"), "manifest_sha256": manifest.checksum(), "n": len(preds.ids),
            "scores": scores, "outputs": outputs_record(preds.ids, preds.references, preds.hypotheses, preds.scores,
                                                        seconds=utterance_seconds(manifest, preds.ids))}
