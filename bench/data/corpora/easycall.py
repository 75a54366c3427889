"""EasyCall dysarthria severity (6 classes): the SpeechPrompt v2 website's DYC row 10 (``DYC_easycall``).

Layout under the root: the EasyCall corpus converted to 16-kHz mono 16-bit (v2 ``DYC_easycall/convert_sr.py``),
one folder per speaker at the top (``f01``, ``m05``, control speakers with a ``c`` in the name, e.g. ``fc01``)
holding its ``*.wav`` files at any depth (v2 lists them recursively, ``dataset.py:48``). Files shorter than
1,000 samples are dropped (``dataset.py:13,51-58``; counted at 16 kHz).

Class (``dataset.py:68-72``): a speaker folder containing ``c`` → ``control``; otherwise the speaker's Therapy
Outcome Measure score from v2's table ``TOM`` (``dataset.py:14-44``) → ``tom1`` .. ``tom5``. A dysarthric
speaker folder the table lacks (f04: the corpus has 31 dysarthric speakers, the table 30) has no class in v2
(its ``class2index`` asserts) and is left out here.

Split: v2 draws an unseeded ``random_split`` of all files, ``int(n/10)`` valid, ``int(n/10)`` test, the rest
train (``preprocessor.py:27-29``), which cannot be reproduced. Here the same sizes are drawn with a seeded
permutation of the files in sorted path order (``data.params.seed``). Files, not speakers, are split, as in v2,
so every speaker (and the class it implies) is in all three splits.
"""

from __future__ import annotations

import soundfile as sf

from bench.data.corpora.base import CorpusAdapter, MalformedCorpusError, as_relative_id, sorted_files, stable_rng
from bench.data.manifest import Example

TOM = {"f01": 1, "f02": 3, "f03": 1, "f05": 1, "f06": 1, "f07": 1, "f08": 1, "f09": 1, "f10": 5, "f11": 2,
       "m01": 3, "m02": 1, "m03": 3, "m04": 1, "m05": 4, "m06": 4, "m07": 4, "m08": 3, "m09": 1, "m10": 3,
       "m11": 5, "m12": 1, "m13": 1, "m14": 5, "m15": 1, "m16": 3, "m17": 1, "m18": 1, "m19": 3, "m20": 1}
MIN_SAMPLES = 1000  # at 16 kHz


def class_of(speaker: str) -> str | None:
    """v2's label of a speaker folder: control (a 'c' in the name) or tom<score>; None when v2 has none."""
    if "c" in speaker:
        return "control"
    return f"tom{TOM[speaker]}" if speaker in TOM else None


class Adapter(CorpusAdapter):
    title = "EasyCall dysarthria severity (TOM score, 6 classes)"
    obtain = ("The EasyCall corpus (Turrisi et al. 2021) from http://neurolab.unife.it/easycallcorpus/ (by request), "
              "converted to 16 kHz mono 16-bit WAV with the folder structure kept (SpeechPrompt-v2 "
              "GSLM/preprocess/DYC_easycall/convert_sr.py does this).")
    defaults = {"seed": 0, "min_samples": MIN_SAMPLES}

    def examples(self) -> list[Example]:
        speakers = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        files = []
        for d in speakers:
            label = class_of(d.name)
            if label is None:
                continue
            label = self.check_label(label, f"{d} (speaker folder)")
            for wav in sorted_files(d):
                try:
                    info = sf.info(str(wav))
                except RuntimeError as err:
                    raise MalformedCorpusError(f"{wav}: not readable audio ({err})") from None
                if info.frames * 16000 / info.samplerate < int(self.params["min_samples"]):
                    continue
                files.append((wav, label, d.name))
        if not files:
            raise MalformedCorpusError(f"{self.root}: no speaker folder (f01, m05, fc01, ...) with .wav files of at "
                                       f"least {self.params['min_samples']} samples")
        n_held = len(files) // 10
        order = stable_rng(int(self.params["seed"]), "easycall").permutation(len(files))
        split_of = {}
        for rank, i in enumerate(order):
            split_of[int(i)] = "valid" if rank < n_held else "test" if rank < 2 * n_held else "train"
        return [self.example(as_relative_id(wav, self.root), wav, label, split_of[i], speaker)
                for i, (wav, label, speaker) in enumerate(files)]
