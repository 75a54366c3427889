"""MUStARD sarcasm detection (690 utterances of TV shows): SpeechPrompt v2 SD row 12.

Layout under the root (the MUStARD repository's ``data/``): ``sarcasm_data.json`` (``{id: {utterance, speaker,
context, context_speakers, show, sarcasm}}``) and ``utterances_final_wav/<id>.wav``: the released clips are
video (``utterances_final/<id>.mp4``); convert them once to 16 kHz mono WAV yourself, e.g.
``ffmpeg -i utterances_final/ID.mp4 -ac 1 -ar 16000 utterances_final_wav/ID.wav`` (SpeechPrompt v2's
``convert2audio.py`` does the same); bench reads only the WAVs.

Split (default): speaker-independent (MUStARD's harder setting): the FRIENDS clips are the test set. With
``speaker_dependent: true`` (what SpeechPrompt v2 ran: ``GSLM/preprocess/SD_mustard/config.yaml``:9-10
``k_fold: 0, speaker_dependent: True``; the ``speechprompt-v2`` recipe sets it) fold ``k_fold`` of MUStARD's
``split_indices.p`` is used: a pickle of 5 (train+valid indices, test indices) pairs of numpy arrays, indices into
the records of ``sarcasm_data.json`` in file order (v2 ``preprocessor.py``:33-43). Either way valid = a seeded
10 % of the non-test clips, stratified by label (v2 used an unseeded ``random_split``). Label ``sarcastic`` /
``not_sarcastic``; F1 is computed for ``sarcastic``.
"""

from __future__ import annotations

import json

from bench.data.corpora.base import CorpusAdapter, MalformedCorpusError, seeded_holdout
from bench.data.manifest import Example


def sarcasm_label(value: object, where: str) -> str:
    """MUStARD's boolean (MUStARD++'s 0/1) → the task's label."""
    if isinstance(value, str):
        value = value.strip().lower()
        value = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}.get(value, value)
    if value in (True, False, 0, 1):
        return "sarcastic" if value else "not_sarcastic"
    raise MalformedCorpusError(f"{where}: sarcasm label must be true/false or 1/0, got {value!r}")


def stratified_holdout(ids_by_label: dict[str, list[str]], fraction: float, seed: int, *keys: object) -> set[str]:
    out: set[str] = set()
    for label, ids in sorted(ids_by_label.items()):
        out |= seeded_holdout(ids, fraction, seed, *keys, label)
    return out


class Adapter(CorpusAdapter):
    title = "MUStARD (speaker-independent: FRIENDS = test)"
    obtain = ("MUStARD from https://github.com/soujanyaporia/MUStARD (data/sarcasm_data.json; the videos from the "
              "link in its README), converted to WAV as described in the task card.")
    defaults = {"json": "sarcasm_data.json", "audio_dir": "utterances_final_wav", "test_show": "FRIENDS",
                "valid_fraction": 0.1, "seed": 0, "speaker_dependent": False, "k_fold": 0,
                "split_indices": "split_indices.p"}

    def required(self) -> list[str]:
        extra = [self.params["split_indices"]] if self.params["speaker_dependent"] else []
        return [self.params["json"], self.params["audio_dir"], *extra]

    def test_ids(self, ids_in_file_order: list[str], data: dict) -> set[str]:
        """The test clips: the test show (speaker-independent) or fold ``k_fold`` of ``split_indices.p``."""
        if not self.params["speaker_dependent"]:
            return {u for u in ids_in_file_order if data[u]["show"] == self.params["test_show"]}
        import pickle

        from bench.core.safe_load import load_pickle

        path, k = self.path(self.params["split_indices"]), int(self.params["k_fold"])
        try:
            # written by Python 2 (numpy arrays); read with numpy's globals only, no code from the file runs
            folds = load_pickle(path, encoding="latin1")
            train_idx, test_idx = folds[k]
            train, test = [int(i) for i in train_idx], [int(i) for i in test_idx]
        except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as err:
            raise MalformedCorpusError(f"{path}: expected a pickle of (train indices, test indices) folds with fold "
                                       f"{k} ({type(err).__name__}: {err})") from None
        n = len(ids_in_file_order)
        if any(not 0 <= i < n for i in train + test) or set(train) & set(test):
            raise MalformedCorpusError(f"{path}: fold {k} has indices outside 0..{n - 1} of {self.params['json']} "
                                       "or shared by train and test")
        return {ids_in_file_order[i] for i in test}

    def examples(self) -> list[Example]:
        path = self.path(self.params["json"])
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise MalformedCorpusError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise MalformedCorpusError(f"{path}: expected an object mapping utterance ids to records")
        rows, rest = [], {}
        for uid in data:
            rec = data[uid]
            if not isinstance(rec, dict) or not {"speaker", "show", "sarcasm"} <= set(rec):
                raise MalformedCorpusError(f"{path}: record '{uid}' lacks speaker/show/sarcasm")
        test_ids = self.test_ids(list(data), data)  # indices of split_indices.p count records in file order
        for uid in sorted(data):
            rec = data[uid]
            label = self.check_label(sarcasm_label(rec["sarcasm"], f"{path}: record '{uid}'"), f"{path}: '{uid}'")
            rows.append((uid, label, f"{rec['show']}:{rec['speaker']}", uid in test_ids))
            if uid not in test_ids:
                rest.setdefault(label, []).append(uid)
        valid = stratified_holdout(rest, float(self.params["valid_fraction"]), int(self.params["seed"]), "mustard")
        audio = self.path(self.params["audio_dir"])
        return [self.example(uid, audio / f"{uid}.wav", label, "test" if test else "valid" if uid in valid else "train",
                             spk) for uid, label, spk, test in rows]
