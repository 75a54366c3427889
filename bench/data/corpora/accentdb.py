"""AccentDB extended, 9 English accents: SpeechPrompt v2 AcC row 11.

Layout under the root (``accentdb_extended/``): ``data/<accent>/<speaker>/*.wav`` for american, australian,
bangla, british, indian, malayalam, odiya, telugu, welsh. Label = the accent folder; speaker = accent/speaker.
Split: SpeechPrompt v2 holds out 20 % for test, then 20 % of the rest for valid (sklearn, random_state 0, over a
file list in filesystem order, so the draw is not reproducible elsewhere). Here the same fractions are drawn per
accent (stratified) by a seeded permutation of the sorted file ids. Splits share speakers, as in the original
(several accents have only one or two speakers, so a speaker-disjoint split is impossible); the task therefore
rewards speaker recognition as well as accent recognition, which the card says.
"""

from __future__ import annotations

from collections import defaultdict

from bench.data.corpora.base import CorpusAdapter, MalformedCorpusError, as_relative_id, seeded_holdout, sorted_files
from bench.data.manifest import Example


class Adapter(CorpusAdapter):
    title = "AccentDB extended (seeded 80/20 then 80/20 per accent)"
    obtain = ("AccentDB extended from https://accentdb.org (CC BY-NC 4.0); the root is the accentdb_extended/ "
              "folder holding data/.")
    defaults = {"data_dir": "data", "test_fraction": 0.2, "valid_fraction": 0.2, "seed": 0}

    def required(self) -> list[str]:
        return [self.params["data_dir"]]

    def examples(self) -> list[Example]:
        data = self.path(self.params["data_dir"])
        by_accent: dict[str, list] = defaultdict(list)
        for accent in sorted(d for d in data.iterdir() if d.is_dir()):
            label = self.check_label(accent.name, f"{accent} (accent folder)")
            for spk in sorted(d for d in accent.iterdir() if d.is_dir()):
                by_accent[label] += [(wav, f"{accent.name}/{spk.name}") for wav in sorted_files(spk)]
        if not by_accent:
            raise MalformedCorpusError(f"{data}: no <accent>/<speaker>/*.wav files")
        seed, out = int(self.params["seed"]), []
        for label, items in by_accent.items():
            ids = {as_relative_id(w, self.root): (w, s) for w, s in items}
            test = seeded_holdout(list(ids), float(self.params["test_fraction"]), seed, "accentdb-test", label)
            valid = seeded_holdout([i for i in ids if i not in test], float(self.params["valid_fraction"]), seed,
                                   "accentdb-valid", label)
            for i, (wav, spk) in sorted(ids.items()):
                split = "test" if i in test else "valid" if i in valid else "train"
                out.append(self.example(i, wav, label, split, spk))
        return out
