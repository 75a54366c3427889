"""Grabo (Dutch spoken commands to a robot), 36 command classes: SpeechPrompt v2 SCR row 2.

Layout under the root: ``speakers/<speaker>/spchdatadir/recording<k>/*.wav``, k = 1..36; the class is the
``recording<k>`` folder. Split (SpeechPrompt v2 ``SCR_grabo``): per speaker and class, the first 2 files go to
train, the next 4 to valid, the rest to test. The original took "first" in ``glob`` order, which is filesystem
order and so differs between machines (users report 0.2-0.6 accuracy spreads, SpeechPrompt-v2 issue #5); here the
files are taken in SORTED name order, which makes the split deterministic. Splits share speakers by design
(every speaker appears in all three); the task measures command recognition, not speaker generalisation.
"""

from __future__ import annotations

from bench.data.corpora.base import CorpusAdapter, MalformedCorpusError, as_relative_id, sorted_files
from bench.data.manifest import Example


class Adapter(CorpusAdapter):
    title = "Grabo (per speaker per class 2/4/rest, sorted order)"
    obtain = ("Grabo is distributed by KU Leuven (ESAT-PSI, https://www.esat.kuleuven.be/psi/spraak/downloads/); "
              "the root holds speakers/.")
    defaults = {"train_per_class": 2, "valid_per_class": 4}

    def required(self) -> list[str]:
        return ["speakers"]

    def examples(self) -> list[Example]:
        n_train, n_valid = int(self.params["train_per_class"]), int(self.params["valid_per_class"])
        out = []
        speakers = sorted(d for d in self.path("speakers").iterdir() if d.is_dir())
        if not speakers:
            raise MalformedCorpusError(f"{self.path('speakers')}: no speaker folders")
        for spk in speakers:
            data = spk / "spchdatadir"
            if not data.is_dir():
                raise MalformedCorpusError(f"{spk}: has no spchdatadir/ folder")
            for cls_dir in sorted(d for d in data.iterdir() if d.is_dir()):
                label = self.check_label(cls_dir.name, f"{cls_dir} (class folder)")
                for i, wav in enumerate(sorted_files(cls_dir)):
                    split = "train" if i < n_train else "valid" if i < n_train + n_valid else "test"
                    out.append(self.example(as_relative_id(wav, self.root), wav, label, split, spk.name))
        return out
