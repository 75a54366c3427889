"""Fluent Speech Commands: intent = (action, object, location), SUPERB IC and SpeechPrompt IC.

Layout under the root (``fluent_speech_commands_dataset/``): ``data/{train,valid,test}_data.csv`` with columns
``path, speakerId, transcription, action, object, location`` (plus an unnamed index column) and audio at
``wavs/speakers/<speakerId>/<uuid>.wav``. The official splits are used (speaker-disjoint; 23,132 / 3,118 / 3,793).
The label is the three slot values joined by one space, so a value containing a space is written with "_"
instead ("change language" → ``change_language``): bench's IC label is space-separated.
"""

from __future__ import annotations

from bench.data.corpora.base import CorpusAdapter, read_table
from bench.data.manifest import Example

SPLIT_FILES = {"train": "train_data.csv", "valid": "valid_data.csv", "test": "test_data.csv"}
SLOT_COLUMNS = ("action", "object", "location")


def slot_value(value: str) -> str:
    """FSC slot value as one token: inner spaces become '_' (only 'change language' has one)."""
    return "_".join(value.split())


class Adapter(CorpusAdapter):
    title = "Fluent Speech Commands (official splits)"
    obtain = ("Fluent Speech Commands is distributed by Fluent.ai (fluent_speech_commands_dataset, free for "
              "academic research); extract it so data/ and wavs/ sit directly under the root.")
    defaults = {"data_dir": "data"}

    def required(self) -> list[str]:
        return [f"{self.params['data_dir']}/{f}" for f in SPLIT_FILES.values()] + ["wavs"]

    def examples(self) -> list[Example]:
        out = []
        for split, name in SPLIT_FILES.items():
            csv_path = self.path(self.params["data_dir"], name)
            for n, row in read_table(csv_path, ("path", "speakerId", *SLOT_COLUMNS)):
                label = self.check_label(" ".join(slot_value(row[c]) for c in SLOT_COLUMNS), f"{csv_path}:{n}")
                rel = row["path"]
                out.append(self.example(rel.rsplit(".", 1)[0], self.path(rel), label, split, row["speakerId"],
                                        extra={"transcription": row.get("transcription", "")}))
        return out
