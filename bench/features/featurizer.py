"""The SUPERB featurizer over cached hidden states, and the upstream dimensions the heads are sized by.

SUPERB (Yang et al. 2021, §3) feeds every downstream head a learnable weighted sum of the upstream's layers:
``h = Σ_l softmax(w)_l · h_l`` with ``w`` initialised to zeros (a uniform average), L trainable scalars; an
upstream with one layer (fbank) is passed through with no parameter. We use s3prl's own ``s3prl.nn.Featurizer``
(s3prl ``s3prl/nn/upstream.py:234``): it only reads ``num_layers``/``hidden_sizes``/``downsample_rates`` from the
upstream object it is given, so a small description of the cached features stands in for the upstream and the
(frozen, expensive) upstream itself is never loaded to train a head.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.core.errors import BenchError

# Dimensions of upstreams a head can be sized for without building them (``bench params -u hubert``):
# (hidden size, number of hidden states s3prl returns, frozen parameters when known exactly; None = build to count)
KNOWN_UPSTREAMS: dict[str, tuple[int, int, int | None]] = {
    "fbank": (240, 1, 0),  # 80 mel + Δ + ΔΔ (s3prl upstream/baseline/fbank.yaml)
    "baseline": (240, 1, 0),
    "fbank_no_cmvn": (240, 1, 0),
    "mfcc": (39, 1, 0),
    "whisper_tiny_en": (384, 5, None),  # conv stem + 4 blocks (bench.features.upstream_whisper)
    "whisper_base": (512, 7, None),  # conv stem + 6 blocks
    "mel": (80, 1, 0),
    "linear": (201, 1, 0),
    "hubert": (768, 13, None),
    "hubert_base": (768, 13, None),
    "wav2vec2": (768, 13, None),
    "wav2vec2_base_960": (768, 13, None),
    "wavlm": (768, 13, None),
    "wavlm_base": (768, 13, None),
    "modified_cpc": (256, 1, None),
    "hubert_large_ll60k": (1024, 25, None),
    "wav2vec2_large_960": (1024, 25, None),
}


@dataclass(frozen=True)
class CachedUpstream:
    """What ``s3prl.nn.Featurizer`` reads from an upstream, describing cached (L, T, D) features."""

    num_layers: int
    hidden_size: int
    downsample_rate: int = 160

    @property
    def hidden_sizes(self) -> list[int]:
        return [self.hidden_size] * self.num_layers

    @property
    def downsample_rates(self) -> list[int]:
        return [self.downsample_rate] * self.num_layers


def build_featurizer(num_layers: int, hidden_size: int, downsample_rate: int = 160):
    """s3prl's weighted-sum ``Featurizer`` (``normalize=False``, as SUPERB) for cached features."""
    from bench.core.compat import import_s3prl_upstream

    _, Featurizer = import_s3prl_upstream()
    if num_layers < 1 or hidden_size < 1:
        raise BenchError(f"featurizer needs num_layers >= 1 and hidden_size >= 1, got {num_layers}, {hidden_size}")
    return Featurizer(CachedUpstream(num_layers, hidden_size, downsample_rate), normalize=False)


def featurizer_parameters(num_layers: int) -> int:
    """L layer weights when L > 1, none for a single layer (s3prl ``Featurizer.__init__``)."""
    return num_layers if num_layers > 1 else 0


@dataclass(frozen=True)
class UpstreamDims:
    hidden_size: int
    num_layers: int
    frozen: int | None  # None: unknown without building the upstream


def upstream_dims(ctx) -> UpstreamDims:
    """Hidden size, layer count and frozen size of ``ctx.upstream``: from the table for registered names,
    else by building the upstream (``*_local`` and ``hf_*`` checkpoints can have any size)."""
    name = ctx.upstream
    if ctx.upstream_path is None and name in KNOWN_UPSTREAMS:
        d, layers, frozen = KNOWN_UPSTREAMS[name]
        return UpstreamDims(d, layers, frozen)
    from bench.features.store import FeatureStore

    info = FeatureStore(name, ctx.upstream_path, ctx.cache_dir, device=ctx.device).info
    return UpstreamDims(info.hidden_size, info.num_layers, info.num_parameters)
