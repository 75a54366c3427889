"""Google Speech Commands v0.01, 12-class keyword spotting as in SUPERB KS and SpeechPrompt (v1 KS, v2 SCR row 1).

Layout under the root: ``speech_commands_v0.01/<word>/<speaker>_nohash_<n>.wav`` (+ ``_background_noise_/*.wav``)
and the official test set ``speech_commands_test_set_v0.01/<class>/*.wav`` (its 12 folders already include
``_silence_`` and ``_unknown_``).

Split (s3prl ``speech_commands/dataset.py:split_dataset``): sha1 of the speaker prefix (the file name before
``_nohash_``) taken modulo 2^27 and scaled to a percentage; < 10 → valid, 10-20 → dropped (the TensorFlow
recipe's test part; the official test folder replaces it), else train. Words outside the ten keywords become
``_unknown_``. ``_silence_`` in train/valid: SUPERB crops a fresh random second of a background-noise file at every
draw; here the crops are fixed in advance (seeded offsets, sample-aligned, stored as Example.start/end segments,
so the manifest checksum records them), train crops come from the first 90 % of each noise file and valid crops
from the last 10 %, so no noise sample is shared between the two. Their number per split is the mean count of the
ten keywords in that split. SUPERB's class-balanced WeightedRandomSampler is a training-time choice, not part of
the data: the manifest holds every file once.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import soundfile as sf

from bench.data.corpora.base import CorpusAdapter, MalformedCorpusError, as_relative_id, sorted_files, stable_rng
from bench.data.manifest import Example

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN, SILENCE, NOISE_DIR = "_unknown_", "_silence_", "_background_noise_"
MAX_UTTERANCES_PER_CLASS = 2**27 - 1  # TensorFlow / s3prl constant of the hash split


def hash_split(file_name: str) -> str | None:
    """SUPERB's split of one training-folder file: 'valid', 'train', or None (the dropped 10-20 % band)."""
    speaker = re.sub(r"_nohash_.*$", "", file_name)
    h = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16)
    percent = (h % (MAX_UTTERANCES_PER_CLASS + 1)) * (100.0 / MAX_UTTERANCES_PER_CLASS)
    if percent < 10:
        return "valid"
    if percent < 20:
        return None
    return "train"


def speaker_of(file_name: str) -> str:
    return file_name.split("_nohash_")[0] if "_nohash_" in file_name else Path(file_name).stem


class Adapter(CorpusAdapter):
    title = "Speech Commands v0.01 (12 classes, SUPERB split)"
    obtain = ("Download speech_commands_v0.01.tar.gz and speech_commands_test_set_v0.01.tar.gz from "
              "http://download.tensorflow.org/data/ and extract them into the two folders named above.")
    defaults = {"train_dir": "speech_commands_v0.01", "test_dir": "speech_commands_test_set_v0.01", "seed": 0,
                "silence_valid_fraction": 0.1, "silence_seconds": 1.0}

    def required(self) -> list[str]:
        p = self.params
        return [p["train_dir"], f"{p['train_dir']}/{NOISE_DIR}", p["test_dir"]]

    def examples(self) -> list[Example]:
        train_root, test_root = self.path(self.params["train_dir"]), self.path(self.params["test_dir"])
        out: list[Example] = []
        for folder in sorted(d for d in train_root.iterdir() if d.is_dir() and d.name != NOISE_DIR):
            label = folder.name if folder.name in KEYWORDS else UNKNOWN
            for wav in sorted_files(folder):
                split = hash_split(wav.name)
                if split is not None:
                    out.append(self.example(as_relative_id(wav, self.root), wav, label, split, speaker_of(wav.name)))
        out += self._silence(train_root / NOISE_DIR, out)
        for folder in sorted(d for d in test_root.iterdir() if d.is_dir()):
            label = self.check_label(folder.name, f"{folder} (test-set class folder)")
            for wav in sorted_files(folder):
                out.append(self.example(as_relative_id(wav, self.root), wav, label, "test", speaker_of(wav.name)))
        return out

    def _silence(self, noise_dir: Path, examples: list[Example]) -> list[Example]:
        """Seeded 1-s crops of the background-noise files, as many per split as the mean keyword count."""
        files = sorted_files(noise_dir)
        if not files:
            raise MalformedCorpusError(f"{noise_dir}: no background-noise .wav files (the source of _silence_)")
        seconds, vfrac = float(self.params["silence_seconds"]), float(self.params["silence_valid_fraction"])
        counts = Counter((e.split, e.label) for e in examples)
        infos = {f: sf.info(str(f)) for f in files}
        out = []
        for split in ("train", "valid"):
            n = round(sum(counts[(split, k)] for k in KEYWORDS) / len(KEYWORDS))
            for k in range(n):
                f = files[k % len(files)]
                info = infos[f]
                dur = info.frames / info.samplerate
                lo, hi = (0.0, dur * (1 - vfrac)) if split == "train" else (dur * (1 - vfrac), dur)
                if hi - lo < seconds:
                    raise MalformedCorpusError(f"{f}: {dur:.2f} s is too short for {seconds:g}-s _silence_ crops "
                                               f"from its {split} region ({lo:.2f}-{hi:.2f} s)")
                rng = stable_rng(int(self.params["seed"]), "silence", split, f.name, k)
                start = round(float(rng.uniform(lo, hi - seconds)) * info.samplerate) / info.samplerate
                out.append(self.example(f"{SILENCE}/{f.stem}-{split}-{k:05d}", f, SILENCE, split,
                                        f"{NOISE_DIR}/{f.stem}:{split}-region", start=start, end=start + seconds))
        return out
