"""MUStARD++ sarcasm detection (1,202 utterances): SpeechPrompt v2 SD row 13.

Layout under the root: ``mustard++_text.csv`` (columns include ``KEY, SPEAKER, SHOW, Sarcasm``; context rows
have an empty ``Sarcasm`` and are skipped) and ``final_utterance_wav/<KEY>.wav``: the released clips are video
(``final_utterance_videos/<KEY>.mp4``); convert them once to 16 kHz mono WAV yourself (``ffmpeg -i IN.mp4 -ac 1
-ar 16000 OUT.wav``); bench reads only the WAVs.

Split: SpeechPrompt v2 used an unseeded 80/10/10 ``random_split``; here test (10 %) and then valid (10 % of the
total) are seeded draws stratified by label over sorted keys. Shows and recurring speakers are shared between
splits, as in the original. Label ``sarcastic`` / ``not_sarcastic``; F1 is computed for ``sarcastic``.
"""

from __future__ import annotations

from bench.data.corpora.base import CorpusAdapter, MalformedCorpusError, read_table
from bench.data.corpora.mustard import sarcasm_label, stratified_holdout
from bench.data.manifest import Example


class Adapter(CorpusAdapter):
    title = "MUStARD++ (seeded 80/10/10, stratified)"
    obtain = ("MUStARD++ from https://github.com/cfilt/Multimodal-Sarcasm-Detection (mustard++_text.csv; videos "
              "from the link in its README), converted to WAV as described in the task card.")
    defaults = {"csv": "mustard++_text.csv", "audio_dir": "final_utterance_wav", "fractions": [0.8, 0.1, 0.1],
                "seed": 0}

    def required(self) -> list[str]:
        return [self.params["csv"], self.params["audio_dir"]]

    def examples(self) -> list[Example]:
        path = self.path(self.params["csv"])
        rows = {}
        for n, row in read_table(path, ("KEY", "Sarcasm"), may_be_empty=("Sarcasm",)):
            if not row["Sarcasm"]:
                continue  # a context utterance
            rows[row["KEY"]] = (self.check_label(sarcasm_label(row["Sarcasm"], f"{path}:{n}"), f"{path}:{n}"),
                                f"{row.get('SHOW', '')}:{row.get('SPEAKER', '')}")
        if not rows:
            raise MalformedCorpusError(f"{path}: no utterance rows (rows with a Sarcasm value)")
        _, f_valid, f_test = (float(v) for v in self.params["fractions"])
        seed = int(self.params["seed"])
        by_label: dict[str, list[str]] = {}
        for key, (label, _) in sorted(rows.items()):
            by_label.setdefault(label, []).append(key)
        test = stratified_holdout(by_label, f_test, seed, "mustardpp-test")
        rest = {lab: [k for k in keys if k not in test] for lab, keys in by_label.items()}
        valid = stratified_holdout(rest, f_valid / (1 - f_test), seed, "mustardpp-valid")
        audio = self.path(self.params["audio_dir"])
        return [self.example(key, audio / f"{key}.wav", label, "test" if key in test else "valid" if key in valid
                             else "train", spk) for key, (label, spk) in sorted(rows.items())]
