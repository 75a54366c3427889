"""The list files of SpeechAdvReprogram (Yen et al. 2021), which SpeechPrompt v2 reuses for LT-SCR and AR-SCR.

Each ``*.csv`` is a header line, then one ``<path><TAB><label>`` line per utterance (pandas reads it as a single
column). The path's prefix depends on the authors' machine; only its last two components (``<class
folder>/<file>``) are used, resolved under ``<root>/<audio_dir>``, as ESPnet's recipe for the same files does.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from bench.data.corpora.base import CorpusAdapter, MalformedCorpusError, read_lines
from bench.data.manifest import Example

AUDIO_SUFFIXES = (".wav", ".flac")


def read_path_list(csv_path: Path) -> list[tuple[int, PurePosixPath]]:
    """(line number, path) for each utterance line; a header line (no audio path) is skipped."""
    out = []
    for i, (n, line) in enumerate(read_lines(csv_path)):
        first = line.split("\t")[0].strip().strip('"')
        if not first.lower().endswith(AUDIO_SUFFIXES):
            if i == 0:
                continue  # the header
            raise MalformedCorpusError(f"{csv_path}:{n}: expected '<path to .wav><TAB><label>', got {line[:60]!r}")
        p = PurePosixPath(first.replace("\\", "/"))
        if len(p.parts) < 2:
            raise MalformedCorpusError(f"{csv_path}:{n}: path {first!r} has no class folder")
        out.append((n, p))
    return out


class ListFileAdapter(CorpusAdapter):
    """Splits from fixed list files; subclasses say which file feeds which split and how a path names its class."""

    split_files: dict[str, list[str]] = {}
    defaults = {"csv_dir": ".", "audio_dir": "dataset"}

    def required(self) -> list[str]:
        files = {f for fs in self.split_files.values() for f in fs}
        return [f"{self.params['csv_dir']}/{f}" for f in sorted(files)] + [self.params["audio_dir"]]

    def label_of(self, path: PurePosixPath, where: str) -> str:
        """The class of one list entry; ``where`` is '<list file>:<line>' for error messages."""
        raise NotImplementedError

    def audio_path(self, rel: PurePosixPath) -> Path:
        """Where the file a list entry names (``<class folder>/<file>``) lies under the root."""
        return self.path(self.params["audio_dir"], str(rel))

    def rows(self, split: str) -> list[tuple[str, int, PurePosixPath]]:
        """(list file, line, path) feeding one split."""
        out = []
        for name in self.split_files[split]:
            csv_path = self.path(self.params["csv_dir"], name)
            out += [(str(csv_path), n, p) for n, p in read_path_list(csv_path)]
        return out

    def examples(self) -> list[Example]:
        out = []
        for split in ("train", "valid", "test"):
            for source, n, p in self.rows(split):
                rel = PurePosixPath(*p.parts[-2:])
                where = f"{source}:{n}"
                label = self.check_label(self.label_of(p, where), where)
                out.append(self.example(rel.with_suffix("").as_posix(), self.audio_path(rel),
                                        label, split, extra={"list_file": Path(source).name}))
        return out
