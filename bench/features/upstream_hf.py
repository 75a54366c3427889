"""HuBERT / wav2vec 2.0 from a local transformers directory (``save_pretrained`` output): upstreams ``hf_hubert``
and ``hf_wav2vec2``, the same interface as :class:`bench.features.upstream.S3PRLUpstreamEncoder`.

All hidden states come from ``output_hidden_states=True``: the CNN+projection output after the positional
convolution (layer 0) and every transformer layer, i.e. 13 layers for a Base model, as s3prl's featurizer sees them.
Nothing is downloaded (``local_files_only``).

Features of an utterance must not depend on what else is in its batch (the feature cache is per utterance), so
models whose CNN uses group norm over time (``feat_extract_norm == "group"``: wav2vec2-base, hubert-base, which
transformers says must not get an attention mask) run one utterance at a time; layer-norm models are batched with
an attention mask. Input normalisation follows ``preprocessor_config.json`` (``do_normalize``; per-utterance zero
mean, unit variance), as the published feature extractor does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.core.errors import BenchError
from bench.features.contract import UpstreamInfo, upstream_config_id

MODEL_TYPES = {"hf_hubert": "hubert", "hf_wav2vec2": "wav2vec2"}


class TransformersEncoder:
    """A transformers HubertModel / Wav2Vec2Model in eval mode returning all hidden states per utterance."""

    def __init__(self, name: str, path: str | Path | None, device: str = "cpu"):
        if name not in MODEL_TYPES:
            raise BenchError(f"unknown transformers upstream '{name}'; expected one of {sorted(MODEL_TYPES)}")
        if not path:
            raise BenchError(f"upstream '{name}' needs a local transformers directory",
                             hint="pass --upstream-path DIR (save_pretrained output with config.json and weights), "
                                  "or configure models.hubert_base_hf in the bench config")
        path = Path(path).expanduser()
        config_file = path / "config.json"
        if not config_file.is_file():
            raise BenchError(f"upstream '{name}': {path} is not a transformers model directory (no config.json)")
        try:
            cfg = json.loads(config_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise BenchError(f"upstream '{name}': {config_file} is not valid JSON ({err})") from None
        want = MODEL_TYPES[name]
        if cfg.get("model_type") != want:
            raise BenchError(f"upstream '{name}' expects model_type '{want}' in {config_file}, found "
                             f"'{cfg.get('model_type')}'")
        import torch

        from bench.core.compat import apply

        apply()  # transformers imports torchaudio, whose C++ extension does not load with CPU-only torch
        from transformers import HubertModel, Wav2Vec2Model

        cls = HubertModel if want == "hubert" else Wav2Vec2Model
        try:
            self.model = cls.from_pretrained(str(path), local_files_only=True).to(device).eval()
        except (OSError, ValueError, RuntimeError) as err:
            raise BenchError(f"upstream '{name}': cannot load weights from {path}: {err}") from None
        self.torch, self.device = torch, device
        config = self.model.config
        pre = path / "preprocessor_config.json"
        self.normalize = bool(json.loads(pre.read_text(encoding="utf-8")).get("do_normalize", False)) \
            if pre.is_file() else False
        self.per_utterance = getattr(config, "feat_extract_norm", "group") == "group"
        self.info = UpstreamInfo(
            name=name,
            num_layers=config.num_hidden_layers + 1,
            hidden_size=config.hidden_size,
            downsample_rate=int(np.prod(config.conv_stride)),
            config_id=upstream_config_id(name, str(path)),
            num_parameters=sum(p.numel() for p in self.model.parameters()),
        )

    def _prepare(self, wav: np.ndarray) -> np.ndarray:
        wav = np.asarray(wav, dtype=np.float32)
        if self.normalize:
            wav = (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)
        return wav

    def _forward(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        lens = [len(w) for w in wavs]
        batch = torch.zeros(len(wavs), max(lens))
        mask = torch.zeros(len(wavs), max(lens), dtype=torch.long)
        for i, w in enumerate(wavs):
            batch[i, : len(w)] = torch.from_numpy(w)
            mask[i, : len(w)] = 1
        kwargs = {} if self.per_utterance else {"attention_mask": mask.to(self.device)}
        with torch.inference_mode():
            out = self.model(batch.to(self.device), output_hidden_states=True, **kwargs)
            frames = self.model._get_feat_extract_output_lengths(torch.tensor(lens)).tolist()
        hs = torch.stack(out.hidden_states, dim=1)  # (B, L, T, D)
        return [hs[i, :, : int(frames[i])].float().cpu().numpy() for i in range(len(wavs))]

    def num_frames(self, samples: int) -> int:
        """Frames of an utterance of ``samples`` samples: the conv stem's output length, as ``_forward`` cuts."""
        return int(self.model._get_feat_extract_output_lengths(self.torch.tensor([int(samples)]))[0])

    def __call__(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """Hidden states per utterance, each (num_layers, frames, hidden_size) float32."""
        wavs = [self._prepare(w) for w in wavs]
        if self.per_utterance:
            return [self._forward([w])[0] for w in wavs]
        return self._forward(wavs)
