"""Features that do not depend on batch composition: a GroupNorm conv stem (HuBERT Base / wav2vec 2.0 Base layout)
sees a batch's zero padding, so such upstreams are extracted one utterance at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bench.features.upstream import S3PRLUpstreamEncoder, UpstreamInfo, batch_safe, upstream_config_id

# fairseq ConvFeatureExtractionModel (mode "default"): 7 conv layers (512 ch; kernels 10,3,3,3,3,2,2; strides
# 5,2,2,2,2,2,2; no bias), GroupNorm(512, 512) after the first only, GELU after each. Scaled down to 8 channels.
CONV_LAYERS = [(10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2)]


class GroupNormStem(nn.Module):
    """A generated model with the HuBERT Base / wav2vec2 Base feature-extractor layout, wrapped like s3prl's
    S3PRLUpstream: forward(wavs (B, T) zero-padded, wavs_len) -> ([hidden (B, T', D)], [lengths])."""

    def __init__(self, channels: int = 8):
        super().__init__()
        torch.manual_seed(0)
        layers, c_in = [], 1
        for i, (k, s) in enumerate(CONV_LAYERS):
            block = [nn.Conv1d(c_in, channels, k, stride=s, bias=False)]
            if i == 0:
                block.append(nn.GroupNorm(channels, channels, affine=True))
            block.append(nn.GELU())
            layers.append(nn.Sequential(*block))
            c_in = channels
        self.conv = nn.Sequential(*layers)

    def frames(self, n: int) -> int:
        for k, s in CONV_LAYERS:
            n = (n - k) // s + 1
        return n

    def forward(self, wavs, wavs_len):
        h = self.conv(wavs.unsqueeze(1)).transpose(1, 2)  # (B, T', C): GroupNorm statistics include the padding
        lens = torch.tensor([self.frames(int(n)) for n in wavs_len])
        return [h], [lens]


def encoder(name: str) -> S3PRLUpstreamEncoder:
    enc = S3PRLUpstreamEncoder.__new__(S3PRLUpstreamEncoder)  # the seam, with the generated model inside
    enc.model, enc.device, enc.torch = GroupNormStem().eval(), "cpu", torch
    enc.batch_safe = batch_safe(name)
    enc.info = UpstreamInfo(name=name, num_layers=1, hidden_size=8, downsample_rate=320, config_id="test")
    return enc


def utterances() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (4_000, 16_000, 24_000)]


@pytest.mark.parametrize("name", ["hubert_local", "wav2vec2_local", "hubert", "wav2vec2"])
def test_groupnorm_stem_features_are_the_same_alone_and_in_a_padded_batch(name):
    enc = encoder(name)
    wavs = utterances()
    alone = enc([wavs[0]])[0]
    batched = enc(wavs)[0]  # the shortest utterance among longer ones: 20,000 padded samples in its row
    assert alone.shape == batched.shape == (1, GroupNormStem().frames(4_000), 8)
    np.testing.assert_array_equal(alone, batched)


def test_the_test_bites_batched_extraction_of_that_stem_depends_on_the_batch():
    enc = encoder("hubert_local")
    enc.batch_safe = True  # what bench did before: one padded forward for the batch
    wavs = utterances()
    assert np.abs(enc([wavs[0]])[0] - enc(wavs)[0]).max() > 1e-3


def test_batch_safe_declarations_and_cache_identity():
    assert batch_safe("whisper_tiny_en") and batch_safe("hf_hubert") and not batch_safe("fbank")
    assert not batch_safe("hubert_local") and not batch_safe("wav2vec2") and not batch_safe("distilhubert")
    # features cached by the batched extraction are never reused for a per-utterance upstream
    assert upstream_config_id("hubert") != upstream_config_id("hubert").replace("x", "x") + "?"
    from importlib import metadata
    import hashlib

    old = hashlib.sha1(f"s3prl|{metadata.version('s3prl')}|hubert|".encode()).hexdigest()[:16]
    assert upstream_config_id("hubert") != old


def test_fbank_features_do_not_depend_on_the_batch():
    """s3prl pads fbank's trailing frames with zeros inside a batch and repeats the last frame alone."""
    enc = S3PRLUpstreamEncoder("fbank")
    wavs = utterances()
    np.testing.assert_array_equal(enc([wavs[0]])[0], enc(wavs)[0])
    enc.batch_safe = True
    assert np.abs(enc([wavs[0]])[0] - enc(wavs)[0])[:, -2:].max() > 0.1


def test_encoders_import_the_upstream_contract_without_the_upstream_module():
    """upstream.py imports the encoders; they take UpstreamInfo and batch_safe from bench.features.contract, so
    importing an encoder module does not import upstream.py back (no circle)."""
    import subprocess
    import sys

    code = ("import sys, bench.features.upstream_whisper, bench.features.upstream_hf, bench.features.store; "
            "print('bench.features.upstream' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    from bench.features import contract, upstream

    assert upstream.UpstreamInfo is contract.UpstreamInfo and upstream.batch_safe is contract.batch_safe
