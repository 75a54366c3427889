"""Arabic speech commands (16 classes): SpeechPrompt v2 SCR row 4, SpeechAdvReprogram's AR-SCR lists.

Layout under the root: ``<csv_dir>/{train_full,dev_full,test_full}.csv`` (header line, then ``<path><TAB><label>``)
and the audio under ``<audio_dir>/<folder>/<file>.wav``. Split: the three published lists. Class = the file-name
prefix before the first ``_``: A-F → add, back, cancel, delete, confirm, continue; 0-9 → zero ... nine (the
mapping of SpeechPrompt v2's ``SCR_ar_speech_commands``). Speakers are not identified.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from bench.data.corpora.base import MalformedCorpusError
from bench.data.corpora.speechadvreprogram import ListFileAdapter

PREFIX_CLASSES = {"A": "add", "B": "back", "C": "cancel", "D": "delete", "E": "confirm", "F": "continue",
                  "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
                  "7": "seven", "8": "eight", "9": "nine"}


class Adapter(ListFileAdapter):
    title = "Arabic speech commands (SpeechAdvReprogram AR-SCR lists)"
    obtain = ("The Arabic speech commands dataset (Ghandoura et al. 2021, https://github.com/abdulkaderghandoura/"
              "arabic-speech-commands-dataset) with the list files from https://github.com/dodohow1011/"
              "SpeechAdvReprogram (Datasets/AR-SCR); set csv_dir/audio_dir if your copy is laid out differently.")
    split_files = {"train": ["train_full.csv"], "valid": ["dev_full.csv"], "test": ["test_full.csv"]}
    defaults = {"csv_dir": "SpeechAdvReprogram/Datasets/AR-SCR", "audio_dir": "dataset"}

    def label_of(self, path: PurePosixPath, where: str) -> str:
        prefix = path.name.split("_")[0]
        if prefix not in PREFIX_CLASSES:
            raise MalformedCorpusError(f"{where}: file {path.name!r} does not start with a class code "
                                       f"({', '.join(PREFIX_CLASSES)}) and '_'")
        return PREFIX_CLASSES[prefix]
