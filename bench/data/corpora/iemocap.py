"""IEMOCAP 4-class emotion recognition: SUPERB ER and SpeechPrompt v2 ER row 9.

Layout under the root (``IEMOCAP_full_release/``): ``Session{1..5}/dialog/EmoEvaluation/<dialog>.txt`` (lines
``[start - end]<TAB><utterance><TAB><emotion><TAB>[v, a, d]``) and ``Session{k}/sentences/wav/<dialog>/<utterance>
.wav``. Labels: neu, hap (with exc merged into it), ang, sad; other emotions are dropped (5,531 utterances).
Split (s3prl ``emotion``): leave one session out, ``params.test_fold`` (Session1 by default; SUPERB reports the
mean over the five folds: one task file per fold, differing in ``data.params.test_fold``); valid = a seeded 20 % of the remaining
utterances (s3prl draws it with seed 0 but from a list in JSON order; here the draw is over sorted ids). Train and
valid share speakers, as in SUPERB; test speakers (the held-out session's pair) are unseen.
"""

from __future__ import annotations

import re

from bench.data.corpora.base import CorpusAdapter, MalformedCorpusError, read_lines, seeded_holdout
from bench.data.manifest import Example

SESSIONS = tuple(f"Session{k}" for k in range(1, 6))
LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[")


class Adapter(CorpusAdapter):
    title = "IEMOCAP (4 classes, leave-one-session-out)"
    obtain = ("IEMOCAP is licensed by USC SAIL on request: https://sail.usc.edu/iemocap/ ; the root is the "
              "IEMOCAP_full_release/ folder holding Session1 ... Session5.")
    defaults = {"test_fold": "Session1", "valid_fraction": 0.2, "seed": 0,
                "label_map": {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}}

    def required(self) -> list[str]:
        return [f"{s}/dialog/EmoEvaluation" for s in SESSIONS] + [f"{s}/sentences/wav" for s in SESSIONS]

    def examples(self) -> list[Example]:
        fold = self.params["test_fold"]
        if fold not in SESSIONS:
            raise MalformedCorpusError(f"{self.spec.source_file}: data.params.test_fold '{fold}' must be one of "
                                       f"{list(SESSIONS)}")
        mapping = self.params["label_map"]
        rows = []
        for session in SESSIONS:
            for ev in sorted(self.path(session, "dialog", "EmoEvaluation").glob("*.txt")):
                for n, line in read_lines(ev):
                    if not line.startswith("["):
                        continue
                    m = LINE.match(line)
                    if not m:
                        raise MalformedCorpusError(f"{ev}:{n}: expected '[start - end] <utterance> <emotion> [v, a, "
                                                   f"d]', got {line[:80]!r}")
                    utt, emotion = m.group(3), m.group(4)
                    if emotion not in mapping:
                        continue
                    dialog = utt.rsplit("_", 1)[0]
                    if not utt.startswith(dialog) or "_" not in utt:
                        raise MalformedCorpusError(f"{ev}:{n}: utterance id {utt!r} is not <dialog>_<turn>")
                    speaker = f"{utt[:5]}{utt.rsplit('_', 1)[1][0]}"  # Ses01 + speaking gender (F/M)
                    wav = self.path(session, "sentences", "wav", dialog, f"{utt}.wav")
                    rows.append((session, utt, self.check_label(mapping[emotion], f"{ev}:{n}"), speaker, wav))
        train_ids = [utt for session, utt, *_ in rows if session != fold]
        valid = seeded_holdout(train_ids, float(self.params["valid_fraction"]), int(self.params["seed"]), "iemocap",
                               fold)
        return [self.example(utt, wav, label, "test" if s == fold else "valid" if utt in valid else "train", spk)
                for s, utt, label, spk, wav in rows]
