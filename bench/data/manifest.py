"""The manifest: the one format every data source (built-in generator, corpus adapter, user CSV) produces.

A manifest is a JSON-lines file, one utterance per line, with the split and speaker recorded so that
splits can be checked for speaker-disjointness and checksummed. Its checksum covers the content that
defines the task (ids, splits, labels, speakers, audio hashes when known), not file paths, so the same
data built in two places checksums the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from bench.core.errors import BenchError

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True, slots=True)
class Example:
    """One utterance. ``label`` holds the class label (classification) or the target text (generation).

    ``path`` is absolute, or relative to the manifest's directory. ``start``/``end`` (seconds) select a
    segment of a longer file (Speech Commands' ``_silence_`` crops, VAD segments). ``extra`` carries
    source-specific fields (engine, voice, language, augmentation) that are recorded but not interpreted.
    """

    id: str
    path: str
    label: str
    split: str
    speaker: str = ""
    start: float | None = None
    end: float | None = None
    audio_sha1: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        # one string object per distinct label, split and speaker, not one per utterance (a real corpus has 10^5
        # utterances and a few dozen labels: ~7 MB on Speech Commands)
        for name in ("label", "split", "speaker"):
            value = getattr(self, name)
            if type(value) is str:
                object.__setattr__(self, name, sys.intern(value))  # frozen: as the generated __init__ does

    def to_json(self) -> str:
        d = asdict(self)
        for k in ("start", "end"):
            if d[k] is None:
                del d[k]
        if not d["extra"]:
            del d["extra"]
        return json.dumps(d, ensure_ascii=False, sort_keys=True)


class Manifest:
    """An ordered list of examples with split access, a content checksum and JSONL persistence."""

    def __init__(self, examples: Iterable[Example], root: Path | None = None):
        self.examples: list[Example] = list(examples)
        self.root = Path(root) if root else None
        ids = Counter(e.id for e in self.examples)
        dup = [i for i, n in ids.items() if n > 1]
        if dup:
            raise BenchError(f"manifest has duplicate utterance ids, e.g. {dup[:3]}")
        bad = sorted({e.split for e in self.examples} - set(SPLITS))
        if bad:
            raise BenchError(f"manifest has unknown split names {bad}; expected {list(SPLITS)}")

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def split(self, name: str) -> list[Example]:
        return [e for e in self.examples if e.split == name]

    def audio_path(self, example: Example) -> Path:
        p = Path(example.path)
        if not p.is_absolute() and self.root is not None:
            p = self.root / p
        return p

    def sizes(self) -> dict[str, int]:
        return {s: sum(1 for e in self.examples if e.split == s) for s in SPLITS}

    def labels(self, split: str | None = None) -> Counter:
        return Counter(e.label for e in self.examples if split is None or e.split == split)

    def speakers(self, split: str) -> set[str]:
        return {e.speaker for e in self.examples if e.split == split}

    def checksum(self) -> str:
        """sha256 over (id, split, label, speaker, segment, audio hash), in id order."""
        h = hashlib.sha256()
        for e in sorted(self.examples, key=lambda e: e.id):
            h.update(
                json.dumps([e.id, e.split, e.label, e.speaker, e.start, e.end, e.audio_sha1]).encode()
            )
            h.update(b"\n")
        return h.hexdigest()

    def limit(self, per_split: int | None) -> "Manifest":
        """The first ``per_split`` examples of each split (a smoke run, like lm-eval's ``--limit``)."""
        if not per_split:
            return self
        kept, seen = [], Counter()
        for e in self.examples:
            if seen[e.split] < per_split:
                kept.append(e)
                seen[e.split] += 1
        return Manifest(kept, self.root)

    def write(self, path: Path) -> None:
        write_text_atomic(Path(path), "".join(e.to_json() + "\n" for e in self.examples), what="manifest")

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        path = Path(path)
        if not path.is_file():
            raise BenchError(f"manifest not found: {path}")
        examples = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    examples.append(Example(**json.loads(line)))
                except (json.JSONDecodeError, TypeError) as err:
                    raise BenchError(f"{path}:{n}: not a manifest line ({err})") from None
        return cls(examples, root=path.parent)


def write_text_atomic(path: Path, text: str, what: str = "file") -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written file. An OS error (disk
    full, permission) is a BenchError naming ``path`` and ``what`` was being written; the temporary is removed."""
    write_bytes_atomic(path, text.encode("utf-8"), what)


def write_error(path, what: str, err: OSError) -> BenchError:
    """The one-line error for a failed write: which file, what it was, why (disk full, permission denied...)."""
    import errno

    reason = err.strerror or str(err)
    code = f": {errno.errorcode[err.errno]}" if err.errno in errno.errorcode else ""
    return BenchError(f"cannot write {what} {path}: {reason}"
                      + (f" [errno {err.errno}{code}]" if err.errno else ""))


def _unlink_quietly(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def file_digest(path: Path, algorithm: str = "sha1", chunk: int = 1 << 20) -> str:
    """Hex digest of a file's content, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha1_file(path: Path, chunk: int = 1 << 20) -> str:
    return file_digest(path, "sha1", chunk)


@contextmanager
def atomic_directory(out: Path) -> Iterator[Path]:
    """A temporary sibling of ``out`` to fill; when the block succeeds it replaces ``out`` in one rename, when it
    fails it is removed, so a half-built directory (a model, a cache entry) never appears under its final name."""
    from bench.core.locks import temp_path

    out = Path(out)
    tmp = temp_path(out)
    try:
        tmp.mkdir(parents=True)
    except OSError as err:
        raise write_error(tmp, f"the directory being built for {out.name}", err) from None
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes_atomic(path: Path, data: bytes, what: str = "file") -> None:
    """Write ``data`` via a temporary file, fsync and rename (:func:`write_text_atomic` is this for text); an OS
    error is a BenchError naming ``path`` and the cause (the temporary removed)."""
    from bench.core.locks import temp_path

    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        _unlink_quietly(tmp)
        raise write_error(path, what, err) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def save_torch_atomic(obj, path: Path, what: str = "checkpoint") -> None:
    """``torch.save`` of ``obj`` to ``path``, atomically: serialised in memory, then written by
    :func:`write_bytes_atomic`. Written straight to a file, a full disk surfaces as torch's "unexpected pos N vs M"
    RuntimeError and leaves the partial file; this way it is one line naming the file and the cause."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getbuffer(), what=what)
