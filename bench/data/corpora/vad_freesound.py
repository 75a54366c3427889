"""Voice activity detection on Speech Commands v2 + Freesound: SpeechPrompt v2 VAD row 16 (``VAD_freesound``).

Layout under the root: the six manifests NVIDIA NeMo's ``scripts/dataset_processing/process_vad_data.py
--rebalance_method fixed`` writes (SpeechPrompt-v2 ``docs/dataset.md:133-170``), ``<manifest_dir>/balanced_
{speech,background}_{training,validation,testing}_manifest.json``: JSON lines with ``audio_filepath``, ``offset``,
``duration`` (seconds) and ``label``. Each line is one segment (0.63 s by default) of a Speech Commands v2 file or
a resampled Freesound background file. Audio paths resolve as v2's ``FreesoundDataset`` does
(``VAD_freesound/dataset.py:25``: ``Path(root_path, audio_filepath)``): a relative path under
``<root>/<audio_root>``, an absolute one as written.

Split: NeMo's (training → train, validation → valid, testing → test), which v2 reads unchanged
(``VAD_freesound/preprocessor.py:22-33``). Every line is one example, segment ``[offset, offset + duration)``,
the span v2's unit extraction reads (``speech2unit/pretrained/utils.py:49-53,76-78``,
``hubert_feature_reader.py:48-53``: ``librosa.load(path, offset=..., duration=..., sr=16000)``);
a segment NeMo's rebalancing drew twice (sampling with replacement) stays twice, with a ``~k`` id suffix.
Class = the manifest it comes from (``speech`` / ``background``); the line's own ``label`` must agree. v2's
``get_class`` instead tests the path component [-3] for ``freesound`` (``preprocessor.py:53-58``), which gives the
same classes only when the background folder is named ``freesound``. Speakers: the Speech Commands file prefix
before ``_nohash_``; NeMo's split is per file, so speakers straddle splits.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path, PurePosixPath

from bench.data.corpora.base import CorpusAdapter, MalformedCorpusError, json_lines
from bench.data.manifest import Example

CLASSES = ("speech", "background")
NEMO_SPLITS = {"train": "training", "valid": "validation", "test": "testing"}


def manifest_name(label: str, split: str) -> str:
    """NeMo's rebalanced manifest for one class and split (``process_vad_data.py``: ``rebalance_json``)."""
    return f"balanced_{label}_{NEMO_SPLITS[split]}_manifest.json"


def _number(row: dict, key: str, where: str) -> float:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise MalformedCorpusError(f"{where}: '{key}' must be a non-negative number, got {value!r}")
    return float(value)


class Adapter(CorpusAdapter):
    title = "Speech Commands v2 + Freesound VAD (NeMo balanced manifests)"
    obtain = ("Speech Commands v0.02 (http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz) and Freesound "
              "background audio fetched and resampled with NeMo's scripts/freesound_download_resample; then NeMo's "
              "scripts/dataset_processing/process_vad_data.py --rebalance_method fixed (SpeechPrompt v2 sets "
              "fixed_test, fixed_val, fixed_train = 60000, 20000, 160000) writes the manifests.")
    defaults = {"manifest_dir": "manifest", "audio_root": "."}

    def required(self) -> list[str]:
        d = self.params["manifest_dir"]
        return [f"{d}/{manifest_name(c, s)}" for s in NEMO_SPLITS for c in CLASSES]

    def examples(self) -> list[Example]:
        audio_root = self.path(self.params["audio_root"])
        out: list[Example] = []
        seen: Counter = Counter()
        for split in NEMO_SPLITS:
            for label in CLASSES:
                path = self.path(self.params["manifest_dir"], manifest_name(label, split))
                for n, row in json_lines(path):
                    where = f"{path}:{n}"
                    audio = row.get("audio_filepath")
                    if not isinstance(audio, str) or not audio.strip():
                        raise MalformedCorpusError(f"{where}: 'audio_filepath' must be a non-empty string")
                    if str(row.get("label", label)) != label:
                        raise MalformedCorpusError(f"{where}: label {row.get('label')!r} in the {label} manifest")
                    offset, duration = _number(row, "offset", where), _number(row, "duration", where)
                    if duration <= 0:
                        raise MalformedCorpusError(f"{where}: 'duration' must be positive, got {duration!r}")
                    audio_path = audio_root / audio  # an absolute audio_filepath stays as written
                    rel = PurePosixPath(audio.replace("\\", "/"))
                    base = f"{split}/{label}/{rel.parent.name}/{rel.stem}@{offset:.3f}"
                    seen[base] += 1
                    uid = base if seen[base] == 1 else f"{base}~{seen[base]}"
                    speaker = rel.name.split("_nohash_")[0] if "_nohash_" in rel.name else ""
                    out.append(self.example(uid, audio_path, self.check_label(label, where), split, speaker,
                                            start=offset, end=offset + duration))
        return out

