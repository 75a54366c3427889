"""LibriSpeech ASR as in SUPERB ASR / SpeechPrompt v1 ASR: train-clean-100 → train, dev-clean → valid,
test-clean → test (official, speaker-disjoint).

Layout under the root (``LibriSpeech/``): ``<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` and one
``<speaker>-<chapter>.trans.txt`` per chapter (``<utt id> <UPPER CASE TRANSCRIPT>``). Targets are lower-cased
(``params.lowercase``) to match bench's other text targets; WER/CER are unaffected since references and
hypotheses share the casing.
"""

from __future__ import annotations

from bench.data.corpora.base import CorpusAdapter, MalformedCorpusError, read_lines
from bench.data.manifest import Example


class Adapter(CorpusAdapter):
    title = "LibriSpeech (train-clean-100 / dev-clean / test-clean)"
    obtain = ("Download train-clean-100.tar.gz, dev-clean.tar.gz and test-clean.tar.gz from https://www.openslr.org/12 "
              "and extract them; the root is the LibriSpeech/ folder they create.")
    defaults = {"subsets": {"train": "train-clean-100", "valid": "dev-clean", "test": "test-clean"},
                "lowercase": True, "audio_ext": ".flac"}

    def required(self) -> list[str]:
        return list(self.params["subsets"].values())

    def examples(self) -> list[Example]:
        out = []
        ext = self.params["audio_ext"]
        for split, subset in self.params["subsets"].items():
            trans_files = sorted(self.path(subset).glob("*/*/*.trans.txt"))
            if not trans_files:
                raise MalformedCorpusError(f"{self.path(subset)}: no <speaker>/<chapter>/*.trans.txt transcript files")
            for tf in trans_files:
                for n, line in read_lines(tf):
                    utt, _, text = line.partition(" ")
                    parts = utt.split("-")
                    if len(parts) != 3 or not text.strip() or f"{parts[0]}-{parts[1]}" != tf.name[:-len(".trans.txt")]:
                        raise MalformedCorpusError(f"{tf}:{n}: expected '<speaker>-<chapter>-<n> TRANSCRIPT' for "
                                                   f"this chapter, got {line[:60]!r}")
                    text = " ".join(text.split())
                    out.append(self.example(f"{subset}/{utt}", tf.parent / f"{utt}{ext}",
                                            text.lower() if self.params["lowercase"] else text, split, parts[0]))
        return out
