"""Dysarthric Mandarin speech commands: the SpeechPrompt v2 website's SCR row 5 (``SCR_dm_speech_commands``).

Layout under the root: SpeechAdvReprogram's list files ``<csv_dir>/{train_full,test_full}.csv`` (a header, then
``<path><TAB><class code>`` with codes 01-19; ``Datasets/DM-SCR/make_data.py``) and the corpus folder
``<audio_dir>/D_SPK<k>/<code>/<file>.wav`` (the released ``dysarthria_zh_command``; v2 ``config.yaml:5``). Only
the last three path components of a list entry are used, resolved under ``<root>/<audio_dir>``.

Split (v2 ``SCR_dm_speech_commands``): ``train_full.csv`` is split 80/20 into train/valid with sklearn's
``train_test_split(test_size=0.2, random_state=1)`` over its rows in file order (``dataset.py:101-105``,
``preprocessor.py:22``); ``test_full.csv`` is test. Then rows of the codes 10, 13, 14, 15, 16 and 19 (close,
previous, next, in, out, home) are dropped (``dataset.py:74-79``), leaving 13 classes. Class = the code folder
(component [1] of the path under the corpus folder; ``preprocessor.py:45-68``): 01-09 → one..nine, 11 up,
12 down, 17 left, 18 right. Speaker = the ``D_SPK<k>`` folder; all three speakers are in every split.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from bench.data.corpora.base import CorpusAdapter, MalformedCorpusError, read_lines
from bench.data.manifest import Example

CODE_CLASSES = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "close", "up", "down",
                "previous", "next", "in", "out", "left", "right", "home")  # code k ↦ CODE_CLASSES[k - 1]
OMITTED_CODES = ("10", "13", "14", "15", "16", "19")  # v2 dataset.py:74


def read_coded_list(csv_path: Path) -> list[tuple[int, PurePosixPath, str]]:
    """(line, path, class code) per row; the header line is skipped, every other line needs both fields."""
    out = []
    for i, (n, line) in enumerate(read_lines(csv_path)):
        fields = [f.strip().strip('"') for f in line.split("\t")]
        if i == 0 and not fields[0].lower().endswith(".wav"):
            continue
        if len(fields) != 2 or not fields[0].lower().endswith(".wav"):
            raise MalformedCorpusError(f"{csv_path}:{n}: expected '<path to .wav><TAB><class code>', "
                                       f"got {line[:60]!r}")
        path = PurePosixPath(fields[0].replace("\\", "/"))
        if len(path.parts) < 3:
            raise MalformedCorpusError(f"{csv_path}:{n}: path {fields[0]!r} lacks <speaker>/<code>/ folders")
        out.append((n, path, fields[1]))
    return out


def v2_train_valid_rows(n_rows: int, dev_size: float, random_state: int) -> tuple[list[int], list[int]]:
    """Row indices of v2's train and valid parts: sklearn ``train_test_split`` on ``range(n_rows)`` gives the
    same permutation as on the DataFrame v2 passes it."""
    from sklearn.model_selection import train_test_split

    train, dev = train_test_split(list(range(n_rows)), test_size=dev_size, random_state=random_state)
    return list(train), list(dev)


class Adapter(CorpusAdapter):
    title = "Dysarthric Mandarin speech commands (SpeechAdvReprogram DM-SCR lists)"
    obtain = ("The dysarthric Mandarin command corpus (dysarthria_zh_command, linked from SpeechAdvReprogram's README "
              "as https://reurl.cc/a5vAG4) with the list files from https://github.com/dodohow1011/"
              "SpeechAdvReprogram (Datasets/DM-SCR); set csv_dir/audio_dir if your copy is laid out differently.")
    defaults = {"csv_dir": "SpeechAdvReprogram/Datasets/DM-SCR", "audio_dir": "dysarthria_zh_command",
                "dev_size": 0.2, "random_state": 1}

    def required(self) -> list[str]:
        d = self.params["csv_dir"]
        return [f"{d}/train_full.csv", f"{d}/test_full.csv", self.params["audio_dir"]]

    def examples(self) -> list[Example]:
        csv_dir = self.path(self.params["csv_dir"])
        train_rows = read_coded_list(csv_dir / "train_full.csv")
        train_idx, dev_idx = v2_train_valid_rows(len(train_rows), float(self.params["dev_size"]),
                                                 int(self.params["random_state"]))
        parts = {"train": [train_rows[i] for i in sorted(train_idx)],
                 "valid": [train_rows[i] for i in sorted(dev_idx)],
                 "test": read_coded_list(csv_dir / "test_full.csv")}
        out = []
        for split, rows in parts.items():
            source = "test_full.csv" if split == "test" else "train_full.csv"
            for n, path, code in rows:
                if code in OMITTED_CODES:
                    continue
                where = f"{csv_dir / source}:{n}"
                speaker, folder, name = path.parts[-3:]
                if not (folder.isdigit() and 1 <= int(folder) <= len(CODE_CLASSES)):
                    raise MalformedCorpusError(f"{where}: class folder {folder!r} is not a code 01-19")
                label = self.check_label(CODE_CLASSES[int(folder) - 1], where)
                rel = PurePosixPath(speaker, folder, name)
                out.append(self.example(rel.with_suffix("").as_posix(), self.path(self.params["audio_dir"], str(rel)),
                                        label, split, speaker, extra={"list_file": source}))
        return out
