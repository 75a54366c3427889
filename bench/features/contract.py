"""The upstream contract: what every upstream encoder provides and what identifies its features.

Its own small module so the encoders (``upstream_hf``, ``upstream_whisper``) and the feature store import it without
importing :mod:`bench.features.upstream`, which imports the encoders (it used to hold these and import them back).
:mod:`bench.features.upstream` re-exports every name here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

OFFLINE_UPSTREAMS = ("fbank", "fbank_no_cmvn", "mfcc", "mel", "linear", "spectrogram")
# s3prl upstreams whose features of an utterance do not depend on the rest of its batch: none. Even the
# weight-free front ends (fbank, mfcc, ...; computed per waveform by upstream/baseline/extracter.py) come back
# from S3PRLUpstream padded to (len - 1) // stride + 1 frames, the missing trailing frames (2 for fbank) repeated
# from the last frame when alone and zeros inside a longer batch (tests/test_batch_safe.py). HuBERT Base and wav2vec 2.0 Base (hubert, hubert_local, wav2vec2, wav2vec2_local, ...) start with
# a conv stem whose first layer has a GroupNorm over time (fairseq ConvFeatureExtractionModel, mode "default"),
# which sees the batch's zero padding (s3prl upstream/hubert/expert.py pads the batch with pad_sequence), so bench
# runs them one utterance at a time, as GSLM's speech2unit reads one file at a time.
BATCH_SAFE_S3PRL: tuple[str, ...] = ()


def batch_safe(name: str) -> bool:
    """Whether ``name``'s features of an utterance are the same alone and inside a padded batch (then bench
    batches extraction; otherwise each utterance is extracted alone). ``hf_*`` encoders decide per model
    (bench/features/upstream_hf.py: group-norm models run one at a time); Whisper encodes each utterance's own 30-s windows."""
    if name.startswith(("whisper_", "hf_")):
        return True
    return name in BATCH_SAFE_S3PRL
# Pretrained, offline once their wheel is installed (whisper_tiny_en's is a default dependency); see docs/upstreams.md.
WHEEL_UPSTREAMS = ("whisper_tiny_en", "whisper_base")


@dataclass(frozen=True)
class UpstreamInfo:
    name: str
    num_layers: int
    hidden_size: int
    downsample_rate: int
    config_id: str  # hash of everything that determines the features (name, checkpoint content, versions)
    num_parameters: int = 0
    # where the weights come from (package, version, sha256, licence), for records; empty when not known
    provenance: dict = field(default_factory=dict, hash=False, compare=False)


def upstream_config_id(name: str, path: str | None = None) -> str:
    """Identity of an upstream's features without building it: name, checkpoint content, library version.

    The feature cache is keyed by this, so a cached re-run never loads the model. ``whisper_*``: (package,
    version, model.bin sha256, front-end version), the sha256 cached by file size and mtime."""
    from importlib import metadata

    if name.startswith("whisper_"):
        from bench.features.upstream_whisper import whisper_config_id

        return whisper_config_id(name)

    lib = "transformers" if name.startswith("hf_") else "s3prl"
    ckpt = _file_sha1(Path(path)) if path else ""
    key = f"{lib}|{metadata.version(lib)}|{name}|{ckpt}"
    if not batch_safe(name):
        key += "|per-utterance"  # features cached before per-utterance extraction depended on their batch
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def _file_sha1(path: Path) -> str:
    from bench.data.manifest import sha1_file

    if path.is_dir():
        h = hashlib.sha1()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(p.name.encode() + sha1_file(p).encode())
        return h.hexdigest()
    return sha1_file(path)
