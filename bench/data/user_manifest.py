"""A task from the user's own list of audio files: no code, one task file and one CSV/JSONL.

``data.source: manifest`` and ``data.path: my_data.csv`` (relative to the task file). Columns / keys:

- ``audio`` (or ``path``): the audio file, absolute or relative to ``data.audio_root`` (itself relative to the
  task file), else to the list file's folder;
- ``label`` (classification; must be one of the task's labels, or for a slot task one value per slot joined by
  spaces) or ``text`` (generation target);
- optional ``split`` (train / valid / test; dev and validation mean valid), ``speaker``, ``id``, ``start``,
  ``end`` (seconds).

Without a split column the split is seeded and speaker-disjoint: whole speakers go to test, then valid, until each
holds its fraction of the utterances (``data.params.split_fractions``, default 0.8/0.1/0.1; ``data.params.seed``,
default 0). Without a speaker column each utterance counts as its own speaker (and the report says so).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from bench.data.corpora.base import CorpusReport, MalformedCorpusError, group_split, json_lines, speaker_disjoint
from bench.data.manifest import Example, Manifest, write_text_atomic
from bench.core.errors import BenchError, DataMissingError, TaskDefinitionError
from bench.tasks.registry import TaskSpec

SPLIT_ALIASES = {"train": "train", "valid": "valid", "dev": "valid", "validation": "valid", "val": "valid",
                 "test": "test"}
PARAMS = {"seed": 0, "split_fractions": {"train": 0.8, "valid": 0.1, "test": 0.1}}


def _task_dir(spec: TaskSpec) -> Path:
    return Path(spec.source_file).resolve().parent if spec.source_file else Path.cwd()


def manifest_file(spec: TaskSpec) -> Path:
    p = Path(spec.data.path or "").expanduser()
    return p if p.is_absolute() else _task_dir(spec) / p


def _rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) from a CSV/TSV with a header or a JSON-lines file."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson", ".json"):
            return [(n, {k: "" if v is None else str(v) for k, v in rec.items()}) for n, rec in json_lines(path)]
        if suffix not in (".csv", ".tsv"):
            raise MalformedCorpusError(f"{path}: expected a .csv, .tsv or .jsonl file")
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            out = []
            for row in reader:
                if None in row:
                    raise MalformedCorpusError(f"{path}:{reader.line_num}: more fields than the header has")
                out.append((reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items() if k}))
            return out
    except UnicodeDecodeError as err:
        raise MalformedCorpusError(f"{path}: not UTF-8 text ({err})") from None


def _pick(row: dict, names: tuple[str, ...]) -> str:
    return next((row[k] for k in names if row.get(k)), "")


def _check_label(spec: TaskSpec, label: str, where: str) -> None:
    if spec.kind != "classification":
        return
    if spec.labels and label not in spec.labels:
        raise MalformedCorpusError(f"{where}: label '{label}' is not one of the task's labels "
                                   f"({', '.join(spec.labels)})")
    if spec.slots:
        values = label.split(" ")
        if len(values) != len(spec.slots) or any(v not in allowed for v, allowed in zip(values, spec.slots.values())):
            raise MalformedCorpusError(f"{where}: label '{label}' must be one value per slot "
                                       f"({', '.join(spec.slots)}), each from the task's slot lists")


def _fractions(spec: TaskSpec, params: dict) -> dict[str, float]:
    f = params["split_fractions"]
    if isinstance(f, list) and len(f) == 3:
        f = dict(zip(("train", "valid", "test"), f))
    if not isinstance(f, dict) or set(f) != {"train", "valid", "test"} or abs(sum(map(float, f.values())) - 1) > 1e-6:
        raise TaskDefinitionError(f"{spec.source_file}: data.params.split_fractions must give train, valid and test "
                                  f"fractions summing to 1, got {f!r}")
    return {k: float(v) for k, v in f.items()}


def _scan(spec: TaskSpec) -> tuple[CorpusReport, Manifest | None]:
    report = CorpusReport(task=spec.name, title="user manifest", where=spec.data.where)
    unknown = sorted(set(spec.data.params) - set(PARAMS))
    if unknown:
        raise TaskDefinitionError(f"{spec.source_file}: data.params {unknown} are not understood by a manifest task; "
                                  f"it takes {sorted(PARAMS)}")
    params = {**PARAMS, **spec.data.params}
    path = manifest_file(spec)
    if not path.is_file():
        report.missing.append(f"manifest file {path} (data.path in {spec.source_file})")
        return report, None
    report.root, report.root_origin = path.parent, f"data.path in {spec.source_file}"
    report.present.append(str(path))
    audio_root = Path(spec.data.audio_root).expanduser() if spec.data.audio_root else path.parent
    if not audio_root.is_absolute():
        audio_root = _task_dir(spec) / audio_root
    try:
        rows = _rows(path)
        if not rows:
            raise MalformedCorpusError(f"{path}: no rows")
        target_keys = ("label", "text") if spec.kind == "classification" else ("text", "label")
        has_split = any(r.get("split") for _, r in rows)
        has_speaker = any(r.get("speaker") for _, r in rows)
        recs = []
        for n, r in rows:
            where = f"{path}:{n}"
            audio, target = _pick(r, ("audio", "path")), _pick(r, target_keys)
            if not audio or not target:
                raise MalformedCorpusError(f"{where}: needs 'audio' (or 'path') and '{target_keys[0]}' values")
            _check_label(spec, target, where)
            split = ""
            if has_split:
                split = SPLIT_ALIASES.get(r.get("split", "").lower(), "")
                if not split:
                    raise MalformedCorpusError(f"{where}: split {r.get('split')!r} is not train, valid (dev) or test")
            try:
                start = float(r["start"]) if r.get("start") else None
                end = float(r["end"]) if r.get("end") else None
            except ValueError:
                raise MalformedCorpusError(f"{where}: start/end must be seconds") from None
            p = Path(audio).expanduser()
            p = p if p.is_absolute() else audio_root / p
            uid = r.get("id") or Path(audio).with_suffix("").as_posix() + (f"@{start}" if start is not None else "")
            recs.append(dict(id=uid, path=str(p), label=target, split=split, speaker=r.get("speaker", ""),
                             start=start, end=end))
        if not has_split:
            fractions = _fractions(spec, params)
            groups = Counter(rec["speaker"] if has_speaker else rec["id"] for rec in recs)
            assign = group_split(dict(groups), fractions, int(params["seed"]), "user-manifest", spec.name)
            for rec in recs:
                rec["split"] = assign[rec["speaker"] if has_speaker else rec["id"]]
            report.present.append("split: seeded " + ("speaker-disjoint" if has_speaker else
                                  "per-utterance (no speaker column)")
                                  + f" {fractions['train']:g}/{fractions['valid']:g}/{fractions['test']:g}, "
                                  f"seed {params['seed']}")
        manifest = Manifest([Example(**rec) for rec in recs])
    except MalformedCorpusError as err:
        report.malformed.append(err.message)
        return report, None
    except BenchError as err:
        report.malformed.append(f"{path}: {err.message}")
        return report, None
    absent = list(dict.fromkeys(e.path for e in manifest if not Path(e.path).is_file()))
    report.missing += [f"audio file {p}" for p in absent[:10]]
    if len(absent) > 10:
        report.missing.append(f"... and {len(absent) - 10} more audio files")
    report.missing_audio = len(report.missing)  # nothing else was missing, or _scan returned above
    report.sizes = manifest.sizes()
    report.malformed += [f"split '{s}' has no examples" for s, n in report.sizes.items() if n == 0]
    report.num_labels = len(manifest.labels())
    report.speaker_disjoint = speaker_disjoint(manifest)
    report.checksum = manifest.checksum()
    return report, manifest


def check_user_manifest(spec: TaskSpec) -> CorpusReport:
    return _scan(spec)[0]


def load_user_manifest(spec: TaskSpec, allow_missing_audio: bool = False) -> Manifest:
    """The task's manifest (absolute audio paths); DataMissingError with the report if anything is wrong.

    Also written to ``$BENCH_HOME/data/<task>/manifest/manifest.jsonl`` with a stamp, as the record of the split."""
    from bench.core.paths import data_dir

    report, manifest = _scan(spec)
    report.raise_if_missing(allow_missing_audio)
    if manifest is None:  # pragma: no cover - raise_if_missing covers it
        raise DataMissingError(report.message())
    out = data_dir() / spec.name / "manifest"
    manifest.write(out / "manifest.jsonl")
    write_text_atomic(out / "build.json", json.dumps({
        "task": spec.name, "task_version": spec.version, "task_fingerprint": spec.fingerprint(),
        "source": str(manifest_file(spec)), "manifest_sha256": manifest.checksum(), "sizes": manifest.sizes()},
        indent=2))
    return manifest
