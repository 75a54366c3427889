"""ESC-50 environmental sound classification (50 classes): SpeechPrompt v2 AuC row 17.

Layout under the root (``ESC-50-master/``): ``meta/esc50.csv`` (columns ``filename, fold, target, category, esc10,
src_file, take``) and ``audio/<filename>`` (5-s, 44.1 kHz clips; bench resamples to 16 kHz on read). Label = the
``category`` (its ``target`` id must agree with the task's label order). Split (SpeechPrompt v2): test = fold 1;
folds 2-5 split 80/20 into train/valid (the original: sklearn random_state 1 over clips). Here the 80/20 draw is
over ``src_file`` groups (the Freesound recording a clip was cut from, which the official folds keep together),
seeded, so no recording straddles train and valid. ``split: v2`` (the ``speechprompt-v2`` recipe) draws as the
released preprocessor does instead: sklearn ``train_test_split(rows of folds 2-5 in esc50.csv order,
test_size=0.2, random_state=1)`` (SpeechPrompt-v2 GSLM/preprocess/AuC_esc50/preprocessor.py:24-30, ``valid_ratio``
0.2 and ``test_fold`` 1 from its config.yaml:6-7), the same valid clips as the paper's, clips of one recording in
both train and valid.
"""

from __future__ import annotations

from collections import Counter

from bench.data.corpora.base import CorpusAdapter, MalformedCorpusError, read_table, seeded_holdout
from bench.data.manifest import Example


class Adapter(CorpusAdapter):
    title = "ESC-50 (test fold 1; folds 2-5 seeded 80/20)"
    obtain = "ESC-50 from https://github.com/karolpiczak/ESC-50 (CC BY-NC 3.0); the root is ESC-50-master/."
    defaults = {"test_fold": 1, "valid_fraction": 0.2, "seed": 1, "split": "bench"}

    def required(self) -> list[str]:
        return ["meta/esc50.csv", "audio"]

    def examples(self) -> list[Example]:
        meta = self.path("meta", "esc50.csv")
        rows = read_table(meta, ("filename", "fold", "target", "category", "src_file"))
        labels = self.spec.labels or []
        parsed = []
        for n, row in rows:
            try:
                fold, target = int(row["fold"]), int(row["target"])
            except ValueError:
                raise MalformedCorpusError(f"{meta}:{n}: fold and target must be integers") from None
            label = self.check_label(row["category"], f"{meta}:{n}")
            if labels and labels.index(label) != target:
                raise MalformedCorpusError(f"{meta}:{n}: target {target} but category '{label}' is class "
                                           f"{labels.index(label)} in the task's label order")
            parsed.append((row, fold, label))
        test_fold = int(self.params["test_fold"])
        if self.params["split"] == "v2":
            valid = v2_valid_files([row["filename"] for row, fold, _ in parsed if fold != test_fold],
                                   float(self.params["valid_fraction"]), int(self.params["seed"]))
        elif self.params["split"] == "bench":
            sources = Counter(row["src_file"] for row, fold, _ in parsed if fold != test_fold)
            groups = seeded_holdout(list(sources), float(self.params["valid_fraction"]), int(self.params["seed"]),
                                    "esc50")
            valid = {row["filename"] for row, fold, _ in parsed if fold != test_fold and row["src_file"] in groups}
        else:
            raise MalformedCorpusError(f"data.params split must be 'bench' or 'v2', got {self.params['split']!r}")
        out = []
        for row, fold, label in parsed:
            split = "test" if fold == test_fold else "valid" if row["filename"] in valid else "train"
            out.append(self.example(row["filename"].rsplit(".", 1)[0], self.path("audio", row["filename"]), label,
                                    split, f"freesound:{row['src_file']}", extra={"fold": fold}))
        return out


def v2_valid_files(filenames: list[str], valid_fraction: float, seed: int) -> set[str]:
    """SpeechPrompt v2's valid clips: ``train_test_split(train_val_df, test_size=valid_ratio, random_state=1)``
    over the non-test rows in esc50.csv order (a list of them splits as the DataFrame does)."""
    from sklearn.model_selection import train_test_split

    _, valid = train_test_split(list(filenames), test_size=valid_fraction, random_state=seed)
    return set(valid)
