"""Lithuanian speech commands (15 classes): SpeechPrompt v2 SCR row 3, SpeechAdvReprogram's LT-SCR lists.

Layout under the root: ``<csv_dir>/{train_limit20,dev_full,test_full,noise_full}.csv`` and the audio under
``<audio_dir>/<class folder>/<file>.wav``. Split: the three word lists as published (train is limited to 20
utterances per class); background-noise rows (``_background_noise_`` folder) become ``silence``: rows 0-9 of
``noise_full.csv`` → test, 10-19 → valid, the rest → train, in the file's own (fixed) row order. Class = the
folder: 13 words, other words → ``unknown``. The noise files are used whole (SpeechAdvReprogram scales them by a
random factor at load time; that augmentation is not part of the data here). Speakers are not identified.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from bench.data.corpora.speechadvreprogram import ListFileAdapter, read_path_list

WORDS = ("ne", "ačiū", "stop", "įjunk", "išjunk", "į_viršų", "į_apačią", "į_dešinę", "į_kairę", "startas", "pauzė",
         "labas", "iki")
NOISE_FILE = "noise_full.csv"


class Adapter(ListFileAdapter):
    title = "Lithuanian speech commands (SpeechAdvReprogram LT-SCR lists)"
    obtain = ("The Lithuanian speech commands of Kolesau & Šešok (2021) with the list files from "
              "https://github.com/dodohow1011/SpeechAdvReprogram (Datasets/LT-SCR); set csv_dir/audio_dir if your "
              "copy is laid out differently.")
    split_files = {"train": ["train_limit20.csv"], "valid": ["dev_full.csv"], "test": ["test_full.csv"]}
    defaults = {"csv_dir": "SpeechAdvReprogram/Datasets/LT-SCR", "audio_dir": "dataset"}

    def required(self) -> list[str]:
        return super().required() + [f"{self.params['csv_dir']}/{NOISE_FILE}"]

    def rows(self, split: str):
        rows = super().rows(split)
        noise_csv = self.path(self.params["csv_dir"], NOISE_FILE)
        noise = read_path_list(noise_csv)
        part = {"test": noise[:10], "valid": noise[10:20], "train": noise[20:]}[split]
        return rows + [(str(noise_csv), n, p) for n, p in part]

    def label_of(self, path: PurePosixPath, where: str) -> str:
        folder = path.parts[-2]
        if folder == "_background_noise_" or f"{NOISE_FILE}:" in where:
            return "silence"
        return folder if folder in WORDS else "unknown"
