"""ASVspoof 2019 logical access (LA), bona fide vs spoofed speech: SpeechPrompt v2 FSD row 8.

Layout under the root: ``LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt``
(lines ``<speaker> <utterance> - <system|-> <bonafide|spoof>``) and ``LA/ASVspoof2019_LA_{train,dev,eval}/flac/
<utterance>.flac``. Split: the official train / dev / eval partitions → train / valid / test (121,461 utterances;
speaker-disjoint; eval holds attacks A07-A19 unseen in training). The attack system id is kept in ``extra``.
"""

from __future__ import annotations

from bench.data.corpora.base import CorpusAdapter, MalformedCorpusError, read_lines
from bench.data.manifest import Example

PARTS = {"train": ("train", "train.trn"), "valid": ("dev", "dev.trl"), "test": ("eval", "eval.trl")}
KEYS = ("bonafide", "spoof")


class Adapter(CorpusAdapter):
    title = "ASVspoof 2019 LA (official train/dev/eval)"
    obtain = ("ASVspoof 2019 (LA.zip) from the Edinburgh DataShare: https://datashare.ed.ac.uk/handle/10283/3336 "
              "(ODC-By); unzip so that LA/ sits under the root.")
    defaults = {"la_dir": "LA"}

    def protocol(self, part: str, suffix: str) -> str:
        return f"{self.params['la_dir']}/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{suffix}.txt"

    def required(self) -> list[str]:
        out = []
        for part, suffix in PARTS.values():
            out += [self.protocol(part, suffix), f"{self.params['la_dir']}/ASVspoof2019_LA_{part}/flac"]
        return out

    def examples(self) -> list[Example]:
        out = []
        for split, (part, suffix) in PARTS.items():
            proto = self.path(self.protocol(part, suffix))
            audio = self.path(self.params["la_dir"], f"ASVspoof2019_LA_{part}", "flac")
            for n, line in read_lines(proto):
                fields = line.split()
                if len(fields) != 5 or fields[4] not in KEYS:
                    raise MalformedCorpusError(f"{proto}:{n}: expected '<speaker> <utterance> - <system> "
                                               f"<bonafide|spoof>', got {line[:80]!r}")
                speaker, utt, _, system, key = fields
                out.append(self.example(utt, audio / f"{utt}.flac", self.check_label(key, f"{proto}:{n}"), split,
                                        speaker, extra={"system": system}))
        return out
