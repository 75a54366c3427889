"""Arabic speech commands (16 classes): SpeechPrompt v2 SCR row 4, SpeechAdvReprogram's AR-SCR lists.

The corpus is Benamer & Alkishriwo's Arabic Speech Commands Database (https://github.com/ltkbenamer/
AR_Speech_Database, the link in SpeechPrompt-v2 ``docs/dataset.md:40`` and SpeechAdvReprogram's README): 1,600
files, ``AR_ SpeechCommands_Database/Words/<X>_<Word><n>.wav`` (A-F: 6 commands × 100) and
``.../Numbers/<d>_<n>.wav`` (0-9: 10 digits × 100). SpeechAdvReprogram's ``Datasets/AR-SCR/make_data.py:10-11``
reads them from folders named ``commands`` and ``numbers``, and its lists name those: the published layout's
``Words/`` is the lists' ``commands/`` and ``Numbers/`` is ``numbers/``. Neither repository ships the renaming
step; this adapter applies it when resolving a list entry (a copy already renamed to ``commands/`` and
``numbers/`` is found as well). Every one of the 1,600 list entries names a file of the database.

Layout under the root: ``<csv_dir>/{train_full,dev_full,test_full}.csv`` (header line, then ``<path><TAB><class
code>``) and the database folder ``<audio_dir>``. Split: the three published lists (SpeechAdvReprogram drew them
with an unseeded ``random.random()``; the lists fix them). Class = the file-name prefix before the first ``_``:
A-F → add, back, cancel, delete, confirm, continue; 0-9 → zero ... nine (SpeechPrompt v2
``SCR_ar_speech_commands/preprocessor.py:44-63``). Speakers are not identified.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from bench.data.corpora.base import MalformedCorpusError
from bench.data.corpora.speechadvreprogram import ListFileAdapter

PREFIX_CLASSES = {"A": "add", "B": "back", "C": "cancel", "D": "delete", "E": "confirm", "F": "continue",
                  "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
                  "7": "seven", "8": "eight", "9": "nine"}
# the lists' folder -> the published database's folder
LIST_TO_DATABASE_FOLDER = {"commands": "Words", "numbers": "Numbers"}


class Adapter(ListFileAdapter):
    title = "Arabic speech commands (Benamer & Alkishriwo database, SpeechAdvReprogram AR-SCR lists)"
    obtain = ("The Arabic Speech Commands Database of Benamer & Alkishriwo (2020): git clone "
              "https://github.com/ltkbenamer/AR_Speech_Database (folder 'AR_ SpeechCommands_Database' with Words/ and "
              "Numbers/), with the list files from https://github.com/dodohow1011/SpeechAdvReprogram "
              "(Datasets/AR-SCR); set csv_dir/audio_dir if your copy is laid out differently.")
    split_files = {"train": ["train_full.csv"], "valid": ["dev_full.csv"], "test": ["test_full.csv"]}
    defaults = {"csv_dir": "SpeechAdvReprogram/Datasets/AR-SCR", "audio_dir": "AR_ SpeechCommands_Database"}

    def audio_path(self, rel: PurePosixPath) -> Path:
        """The lists' ``commands/`` and ``numbers/`` are the database's ``Words/`` and ``Numbers/``."""
        folder, name = rel.parts[-2], rel.name
        published = self.path(self.params["audio_dir"], LIST_TO_DATABASE_FOLDER.get(folder, folder), name)
        renamed = self.path(self.params["audio_dir"], folder, name)
        return renamed if not published.is_file() and renamed.is_file() else published

    def label_of(self, path: PurePosixPath, where: str) -> str:
        prefix = path.name.split("_")[0]
        if prefix not in PREFIX_CLASSES:
            raise MalformedCorpusError(f"{where}: file {path.name!r} does not start with a class code "
                                       f"({', '.join(PREFIX_CLASSES)}) and '_'")
        return PREFIX_CLASSES[prefix]
