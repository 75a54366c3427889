"""Real corpora in their official layouts: the adapter base class, the check report, and shared readers.

An adapter (``bench/data/corpora/<name>.py``, class ``Adapter``) turns a corpus root in the layout the corpus is
distributed in into a :class:`~bench.data.manifest.Manifest`, applying the published split rule (or, where that
rule was unseeded or filesystem-order dependent, a seeded deterministic one that the task card documents). It
never downloads, converts or writes into the corpus. ``check_corpus`` says exactly what is present, missing or
malformed and where the corpus is obtained; ``load_corpus`` refuses a corpus with anything missing.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.data.manifest import SPLITS, Example, Manifest, write_text_atomic
from bench.core.errors import BenchError, DataMissingError, TaskDefinitionError
from bench.tasks.registry import TaskSpec

MAX_LISTED = 10  # missing audio files listed by name in a report (then a count)


class MalformedCorpusError(DataMissingError):
    """A metadata file is missing a column, has a bad row or an unknown label; the message names the file:line."""


# ---------------------------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class CorpusReport:
    """What ``bench data check`` prints: present / missing / malformed items, naming files, and where to get them."""

    task: str
    title: str
    root: Path | None = None
    root_origin: str = ""
    where: str = ""
    present: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    num_labels: int = 0
    speaker_disjoint: bool | None = None
    checksum: str = ""
    missing_audio: int = 0  # how many of ``missing``'s entries are about audio files (--skip-bad-audio drops those)

    @property
    def ok(self) -> bool:
        return self.root is not None and not self.missing and not self.malformed

    def message(self) -> str:
        lines = [f"{self.task} ({self.title}): "
                 + ("ready" if self.ok else "NOT usable")
                 + (f", root {self.root} ({self.root_origin})" if self.root else "")]
        lines += [f"  present: {p}" for p in self.present]
        lines += [f"  missing: {m}" for m in self.missing]
        lines += [f"  malformed: {m}" for m in self.malformed]
        if self.sizes:
            lines.append("  examples: " + ", ".join(f"{k} {v}" for k, v in self.sizes.items())
                         + f"; {self.num_labels} distinct labels"
                         + ("" if self.speaker_disjoint is None
                            else f"; speaker-disjoint splits: {'yes' if self.speaker_disjoint else 'no'}"))
        if self.checksum:
            lines.append(f"  manifest sha256: {self.checksum}")
        if not self.ok and self.where:
            lines.append(f"  where to get it: {self.where}")
        return "\n".join(lines)

    def render(self) -> str:
        return self.message()

    def __str__(self) -> str:
        return self.message()

    def raise_if_missing(self, allow_missing_audio: bool = False) -> None:
        """DataMissingError / MalformedCorpusError with the report; with ``allow_missing_audio`` (--skip-bad-audio)
        absent audio files alone are no error: the audio check then reports them and the run drops them."""
        if self.root is None or len(self.missing) > (self.missing_audio if allow_missing_audio else 0):
            raise DataMissingError(self.message())
        if self.malformed:
            raise MalformedCorpusError(self.message())


# ---------------------------------------------------------------------------------------------------------------
# the adapter base class
# ---------------------------------------------------------------------------------------------------------------
class CorpusAdapter:
    """One corpus in its official layout. Subclasses set the class attributes and implement ``examples``.

    ``required()`` lists the metadata files and directories (relative to the root) that must exist before anything
    is parsed; ``examples()`` parses them and raises :class:`MalformedCorpusError` naming file and line.
    """

    title: str = ""
    obtain: str = ""  # where and how the corpus is obtained (adds to the task file's data.where)
    defaults: dict[str, Any] = {}  # data.params this adapter understands, with their defaults

    def __init__(self, spec: TaskSpec, root: Path):
        self.spec = spec
        self.root = Path(root)
        unknown = sorted(set(spec.data.params) - set(self.defaults))
        if unknown:
            raise TaskDefinitionError(f"{spec.source_file or spec.name}: data.params {unknown} are not understood by "
                                      f"adapter '{spec.data.adapter}'; it takes {sorted(self.defaults)}")
        self.params = {**self.defaults, **spec.data.params}

    def required(self) -> list[str]:
        return []

    def examples(self) -> list[Example]:
        raise NotImplementedError

    # -- helpers for subclasses ---------------------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def example(self, id: str, path: Path, label: str, split: str, speaker: str = "", **kw) -> Example:
        return Example(id=id, path=str(path), label=label, split=split, speaker=speaker, **kw)

    def check_label(self, label: str, where: str) -> str:
        """A label the task file declares; anything else is a malformed row (an adapter/task mismatch)."""
        spec = self.spec
        if spec.kind != "classification":
            return label
        if spec.labels:
            if label not in spec.labels:
                raise MalformedCorpusError(f"{where}: label '{label}' is not one of the task's labels "
                                           f"({', '.join(spec.labels)})")
            return label
        values = label.split(" ")
        slots = spec.slots or {}
        if len(values) != len(slots):
            raise MalformedCorpusError(f"{where}: label '{label}' must have one value per slot ({', '.join(slots)})")
        for (slot, allowed), v in zip(slots.items(), values):
            if v not in allowed:
                raise MalformedCorpusError(f"{where}: {slot} '{v}' is not one of {allowed}")
        return label


def where_text(spec: TaskSpec, adapter: CorpusAdapter | None) -> str:
    parts = [spec.data.where.strip(), (adapter.obtain if adapter else "").strip()]
    return " ".join(p for p in parts if p)


def _adapter_class(spec: TaskSpec) -> type[CorpusAdapter]:
    name = spec.data.adapter or ""
    try:
        module = importlib.import_module(f"bench.data.corpora.{name}")
    except ModuleNotFoundError as err:
        if err.name and err.name.endswith(name):
            raise TaskDefinitionError(f"{spec.source_file or spec.name}: data.adapter '{name}' has no module "
                                      f"bench/data/corpora/{name}.py") from None
        raise
    cls = getattr(module, "Adapter", None)
    if cls is None:
        raise TaskDefinitionError(f"bench/data/corpora/{name}.py defines no class Adapter")
    return cls


def _scan(spec: TaskSpec, root: Path | None = None) -> tuple[CorpusReport, Manifest | None]:
    """Resolve the root, check the required files, parse, check every audio file exists."""
    from bench.core.userconfig import corpus_root

    cls = _adapter_class(spec)
    report = CorpusReport(task=spec.name, title=cls.title or spec.name)
    try:
        resolved = corpus_root(spec.data.root_key, root, task=spec.name)
    except DataMissingError as err:
        report.where = where_text(spec, None) + (" " + cls.obtain if cls.obtain else "")
        report.missing.append(str(err))
        return report, None
    report.root, report.root_origin = resolved.path, resolved.origin
    adapter = cls(spec, resolved.path)
    report.where = where_text(spec, adapter)
    for rel in adapter.required():
        p = adapter.path(rel)
        (report.present if p.exists() else report.missing).append(str(p))
    if report.missing:
        return report, None
    try:
        examples = adapter.examples()
        manifest = Manifest(examples)
    except MalformedCorpusError as err:
        report.malformed.append(err.message)
        return report, None
    except BenchError as err:  # duplicate ids, unknown splits
        report.malformed.append(f"{spec.data.adapter}: {err.message}")
        return report, None
    absent = [e.path for e in manifest if not Path(e.path).is_file()]
    seen_missing = list(dict.fromkeys(absent))
    for p in seen_missing[:MAX_LISTED]:
        report.missing.append(f"audio file {p}")
    if len(seen_missing) > MAX_LISTED:
        report.missing.append(f"... and {len(seen_missing) - MAX_LISTED} more audio files")
    report.missing_audio = len(report.missing)  # nothing else was missing, or _scan returned above
    report.sizes = manifest.sizes()
    for split, n in report.sizes.items():
        if n == 0:
            report.malformed.append(f"split '{split}' has no examples (the split rule found nothing for it)")
    report.num_labels = len(manifest.labels())
    report.speaker_disjoint = speaker_disjoint(manifest)
    report.checksum = manifest.checksum()
    return report, manifest


def check_corpus(spec: TaskSpec, root: Path | None = None) -> CorpusReport:
    """What is present, missing or malformed for a corpus task (never raises for missing data)."""
    return _scan(spec, root)[0]


def load_corpus(spec: TaskSpec, root: Path | None = None, allow_missing_audio: bool = False) -> Manifest:
    """The corpus task's manifest (absolute audio paths); DataMissingError with the full report otherwise.

    The manifest and a stamp (root, task fingerprint, checksum, sizes) are also written under
    ``$BENCH_HOME/data/<task>/corpus/`` so the split a run used can be inspected and diffed later.
    """
    from bench.core.paths import data_dir

    report, manifest = _scan(spec, root)
    report.raise_if_missing(allow_missing_audio)
    assert manifest is not None
    out = data_dir() / spec.name / "corpus"
    manifest.write(out / "manifest.jsonl")
    write_text_atomic(out / "build.json", json.dumps({
        "task": spec.name, "task_version": spec.version, "task_fingerprint": spec.fingerprint(),
        "adapter": spec.data.adapter, "root": str(report.root), "manifest_sha256": manifest.checksum(),
        "sizes": manifest.sizes()}, indent=2))
    return manifest


# ---------------------------------------------------------------------------------------------------------------
# shared readers and split rules
# ---------------------------------------------------------------------------------------------------------------
def read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped line) for every non-empty line; undecodable files are malformed."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise MalformedCorpusError(f"{path}: not UTF-8 text ({err})") from None
    except OSError as err:
        raise MalformedCorpusError(f"{path}: cannot read ({err})") from None
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def json_lines(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) of a JSON-lines file (NeMo manifests, user manifests): :func:`read_lines`, each line
    a JSON object, else a MalformedCorpusError naming the file and line."""
    rows = []
    for n, line in read_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise MalformedCorpusError(f"{path}:{n}: not a JSON object ({err.msg})") from None
        if not isinstance(row, dict):
            raise MalformedCorpusError(f"{path}:{n}: expected a JSON object per line")
        rows.append((n, row))
    return rows


def read_table(path: Path, columns: Sequence[str], delimiter: str = ",",
               may_be_empty: Sequence[str] = ()) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV/TSV with a header; the header must hold ``columns`` and every row a value for each
    (except the columns in ``may_be_empty``)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            header = [h.strip() for h in (reader.fieldnames or [])]
            absent = [c for c in columns if c not in header]
            if absent:
                raise MalformedCorpusError(f"{path}: header lacks column(s) {absent}; found {header}")
            reader.fieldnames = header
            rows = []
            for row in reader:
                n = reader.line_num
                if None in row or any(row.get(c) is None for c in columns):
                    raise MalformedCorpusError(f"{path}:{n}: expected {len(header)} fields ({', '.join(header)})")
                row = {k: (v or "").strip() for k, v in row.items()}
                empty = [c for c in columns if not row[c] and c not in may_be_empty]
                if empty:
                    raise MalformedCorpusError(f"{path}:{n}: empty {', '.join(empty)}")
                rows.append((n, row))
            return rows
    except UnicodeDecodeError as err:
        raise MalformedCorpusError(f"{path}: not UTF-8 text ({err})") from None
    except csv.Error as err:
        raise MalformedCorpusError(f"{path}: not a valid CSV file ({err})") from None


def sorted_files(directory: Path, pattern: str = "*.wav") -> list[Path]:
    """Files under ``directory`` in sorted path order (never filesystem order)."""
    return sorted(p for p in Path(directory).rglob(pattern) if p.is_file())


def stable_rng(seed: int, *keys: object) -> np.random.Generator:
    """A generator for (seed, keys), independent of Python's hash seed and of the order of other draws."""
    digest = hashlib.sha256(repr((int(seed), *keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def seeded_holdout(items: Sequence[str], fraction: float, seed: int, *keys: object) -> set[str]:
    """A seeded ``round(fraction · n)`` subset of ``items`` (taken in sorted order first, so input order is moot)."""
    ordered = sorted(items)
    k = int(round(fraction * len(ordered)))
    idx = stable_rng(seed, "holdout", *keys).permutation(len(ordered))[:k]
    return {ordered[i] for i in idx}


def group_split(group_sizes: dict[str, int], fractions: dict[str, float], seed: int, *keys: object) -> dict[str, str]:
    """Assign whole groups (speakers, source recordings) to splits in seeded order until each split holds its
    fraction of the utterances: test first, then valid, the rest train. Groups never straddle splits."""
    order = sorted(group_sizes)
    perm = stable_rng(seed, "groups", *keys).permutation(len(order))
    total = sum(group_sizes.values())
    targets = [(s, fractions.get(s, 0.0) * total) for s in ("test", "valid")]
    out, filled, t = {}, 0.0, 0
    for i in perm:
        g = order[i]
        while t < len(targets) and filled >= targets[t][1]:
            t, filled = t + 1, 0.0
        out[g] = targets[t][0] if t < len(targets) else "train"
        filled += group_sizes[g]
    return out


def speaker_disjoint(manifest: Manifest) -> bool | None:
    """True if no speaker appears in two splits (None when speakers are unknown)."""
    if not any(e.speaker for e in manifest):
        return None
    seen: dict[str, str] = {}
    for e in manifest:
        if e.speaker and seen.setdefault(e.speaker, e.split) != e.split:
            return False
    return True


def as_relative_id(path: Path, root: Path) -> str:
    """An utterance id from its path under the root (stable across machines, unlike absolute paths)."""
    return Path(path).relative_to(root).with_suffix("").as_posix()


__all__ = ["CorpusAdapter", "CorpusReport", "MalformedCorpusError", "check_corpus", "load_corpus", "read_lines",
           "read_table", "sorted_files", "stable_rng", "seeded_holdout", "group_split", "speaker_disjoint",
           "SPLITS"]
