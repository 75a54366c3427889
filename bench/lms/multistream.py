"""The prosody-aware unit LM of pGSLM: MS-TLM (Kharitonov et al., 2022, §3.2; fairseq ``transformer_ulm``).

Three aligned input streams per deduplicated unit are embedded and summed,
``x_t = √d·E_unit(u_t) + E_dur(d_{t-s_d}) + E_f0(f_{t-s_f})`` (a continuous stream goes through Linear(1→d)
instead of an embedding), sinusoidal positions are added, a pre-LN Transformer decoder (the same ``DecoderLayer``
as the GSLM ULM) runs causally, and one output projection Linear(d → Σ channel sizes) is split into the unit
logits, the duration head and the F0 head. With stream shifts (1, 1) the step holding unit u_t sees the prosody of
u_{t-1} and predicts u_{t+1} together with the duration and F0 of u_t.

Vocabularies follow fairseq's ``speech_ulm_task.UnitDictionary``: the K units come FIRST (unit k = index k), then
``<s>``=K, ``<pad>``=K+1, ``</s>``=K+2, ``<unk>``=K+3 — unlike GSLM's ``dict.txt`` where specials come first. The
sinusoidal positions are therefore offset by ``pad + 1 = K + 2`` (fairseq ``make_positions``).

Module names mirror fairseq's ``MultiStreamTransformerDecoder`` (``embed_tokens``, ``embed_other_list``,
``proj_other_list``, ``layers``, ``layer_norm``, ``project_out_dim``) so a checkpoint imports without renaming.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from bench.core.errors import BenchError
from bench.lms.model import DecoderShape, sinusoidal_embedding

CHANNELS = ("token", "duration", "f0")
F0_CONTINUOUS_PAD = -5.0  # fairseq CodeDataset pads continuous F0 with -5


@dataclass(frozen=True)
class StreamVocab:
    """fairseq ``speech_ulm_task.UnitDictionary``: symbols 0..n-1, then <s>, <pad>, </s>, <unk>."""

    n: int

    @property
    def bos(self) -> int:
        return self.n

    @property
    def pad(self) -> int:
        return self.n + 1

    @property
    def eos(self) -> int:
        return self.n + 2

    @property
    def unk(self) -> int:
        return self.n + 3

    def __len__(self) -> int:
        return self.n + 4


@dataclass
class MultiStreamLMConfig(DecoderShape):
    """Shape of an MS-TLM; ``tiny`` / ``transformer_ulm`` / ``transformer_ulm_big`` are fairseq's architectures."""

    num_units: int = 100
    discrete_duration: bool = True
    max_duration: int = 20  # --max-token-duration: longer runs are clipped
    discrete_f0: bool = True
    f0_bins: int = 32
    stream_shifts: tuple[int, int] = (1, 1)
    max_positions: int = 4096
    ignore_duration_input: bool = False  # fairseq --ignore-duration-input: the "no prosody input" checkpoints
    ignore_f0_input: bool = False

    def __post_init__(self):
        self.stream_shifts = tuple(int(s) for s in self.stream_shifts)
        if len(self.stream_shifts) != 2 or min(self.stream_shifts) < 0:
            raise BenchError(f"stream_shifts {self.stream_shifts}: expected two non-negative integers, e.g. (1, 1)")
        self.check_shape()

    @property
    def unit_vocab(self) -> StreamVocab:
        return StreamVocab(self.num_units)

    @property
    def duration_vocab(self) -> StreamVocab:
        return StreamVocab(self.max_duration + 1)

    @property
    def f0_vocab(self) -> StreamVocab:
        return StreamVocab(self.f0_bins)

    @property
    def channel_sizes(self) -> list[int]:
        return [
            len(self.unit_vocab),
            len(self.duration_vocab) if self.discrete_duration else 1,
            len(self.f0_vocab) if self.discrete_f0 else 1,
        ]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stream_shifts"] = list(self.stream_shifts)
        return d

    @classmethod
    def tiny(cls, num_units: int = 100, **kw) -> "MultiStreamLMConfig":
        """fairseq ``transformer_ulm_tiny`` (gpt2-tiny): 2 layers, 1 head, 64/64, GELU."""
        return cls(num_units=num_units, **{"num_layers": 2, "embed_dim": 64, "num_heads": 1, "ffn_dim": 64,
                                           "activation": "gelu", **kw})

    @classmethod
    def small(cls, num_units: int = 100, **kw) -> "MultiStreamLMConfig":
        """The offline default: the shape of ``UnitLMConfig.small`` (3 × 128, 4 heads, FFN 512, ReLU), so the
        GSLM and pGSLM stand-ins differ by the prosody streams alone."""
        return cls(num_units=num_units, **{"num_layers": 3, "embed_dim": 128, "num_heads": 4, "ffn_dim": 512, **kw})

    @classmethod
    def transformer_ulm(cls, num_units: int = 100, **kw) -> "MultiStreamLMConfig":
        return cls(num_units=num_units, **{"num_layers": 6, "embed_dim": 512, "num_heads": 8, "ffn_dim": 2048, **kw})

    @classmethod
    def transformer_ulm_big(cls, num_units: int = 100, **kw) -> "MultiStreamLMConfig":
        return cls(num_units=num_units, **{"num_layers": 12, "embed_dim": 1024, "num_heads": 16, "ffn_dim": 4096,
                                           **kw})


def sinusoidal_positions(length: int, dim: int, padding_idx: int, device=None) -> torch.Tensor:
    """fairseq ``SinusoidalPositionalEmbedding`` rows ``padding_idx+1 .. padding_idx+length`` ([sin | cos]; the
    one formula, :func:`bench.lms.model.sinusoidal_embedding`)."""
    from bench.lms.model import sinusoidal_embedding

    return sinusoidal_embedding(torch.arange(padding_idx + 1, padding_idx + 1 + length, device=device), dim)


@dataclass
class MultiStreamBatch:
    """Model inputs and teacher-forcing targets, built like fairseq's ``CodeDataset`` + ``Shifts`` + collater.

    ``*_mask`` are True where a target must not be scored (padding or a shifted-in position)."""

    tokens: torch.Tensor  # [B,T] long
    durations: torch.Tensor  # [B,T] long (discrete) or float
    f0: torch.Tensor  # [B,T] long (discrete) or float
    target: torch.Tensor
    dur_target: torch.Tensor
    f0_target: torch.Tensor
    mask: torch.Tensor
    dur_mask: torch.Tensor
    f0_mask: torch.Tensor
    padding_mask: torch.Tensor  # [B,T] True = padded input step

    def to(self, device) -> "MultiStreamBatch":
        return MultiStreamBatch(**{k: v.to(device) for k, v in self.__dict__.items()})


def encode_streams(cfg: MultiStreamLMConfig, units: Sequence[int], durations: Sequence[int],
                   f0: Sequence[float] | Sequence[int], *, append_eos: bool = True):
    """One utterance as the three unshifted index/value sequences ``[<s>, x_1..x_n, </s>]``.

    ``f0`` holds bin indices (discrete model) or speaker-normalised log-F0 (continuous). As in fairseq, <s> and
    </s> carry duration 0; the F0 stream carries the F0 vocabulary's <s> at the start and, at </s>, the value of
    an empty segment (continuous 0 → the speaker mean; discrete: its bin ``eos_f0_bin``)."""
    uv, dv, fv = cfg.unit_vocab, cfg.duration_vocab, cfg.f0_vocab
    units = np.asarray(units, dtype=np.int64)
    durations = np.asarray(durations, dtype=np.int64)
    if len(units) != len(durations) or len(units) != len(f0):
        raise BenchError(f"streams differ in length: {len(units)} units, {len(durations)} durations, {len(f0)} F0")
    if units.size and (units.min() < 0 or units.max() >= cfg.num_units):
        raise BenchError(f"unit ids must be in [0, {cfg.num_units}); got {units.min()}..{units.max()}")
    tail = [uv.eos] if append_eos else []
    tok = [uv.bos, *units.tolist(), *tail]
    dur = [0, *np.minimum(durations, cfg.max_duration).tolist(), *([0] if append_eos else [])]
    if cfg.discrete_f0:
        fb = np.asarray(f0, dtype=np.int64)
        if fb.size and (fb.min() < 0 or fb.max() >= cfg.f0_bins):
            raise BenchError(f"F0 bins must be in [0, {cfg.f0_bins}); got {fb.min()}..{fb.max()}")
        f = [fv.bos, *fb.tolist(), *([cfg.f0_bins // 2] if append_eos else [])]
    else:
        f = [0.0, *np.asarray(f0, dtype=np.float32).tolist(), *([0.0] if append_eos else [])]
    return tok, dur, f


def collate_streams(cfg: MultiStreamLMConfig, rows: Sequence[tuple[list, list, list]]) -> MultiStreamBatch:
    """Shift the prosody streams right by ``stream_shifts`` (fairseq ``Shifts``), split input/target and pad."""
    s_dur, s_f0 = cfg.stream_shifts
    extra = max(s_dur, s_f0)
    tok_pad = cfg.unit_vocab.pad
    dur_pad = 0
    f0_pad = cfg.f0_vocab.pad if cfg.discrete_f0 else F0_CONTINUOUS_PAD

    def shift(seq, left, pad):
        right = extra - left
        out = [pad] * left + list(seq) + [pad] * right
        m = [True] * left + [False] * len(seq) + [True] * right
        return out, m

    items = []
    for tok, dur, f in rows:
        t, tm = shift(tok, 0, tok_pad)
        d, dm = shift(dur, s_dur, dur_pad)
        g, gm = shift(f, s_f0, f0_pad)
        items.append((t, tm, d, dm, g, gm))
    T = max(len(it[0]) for it in items) - 1
    B = len(items)
    f0_dtype = torch.long if cfg.discrete_f0 else torch.float32
    dur_dtype = torch.long if cfg.discrete_duration else torch.float32
    out = {
        "tokens": torch.full((B, T), tok_pad, dtype=torch.long),
        "target": torch.full((B, T), tok_pad, dtype=torch.long),
        "durations": torch.full((B, T), dur_pad, dtype=dur_dtype),
        "dur_target": torch.full((B, T), dur_pad, dtype=dur_dtype),
        "f0": torch.full((B, T), f0_pad, dtype=f0_dtype),
        "f0_target": torch.full((B, T), f0_pad, dtype=f0_dtype),
        "mask": torch.ones(B, T, dtype=torch.bool),
        "dur_mask": torch.ones(B, T, dtype=torch.bool),
        "f0_mask": torch.ones(B, T, dtype=torch.bool),
        "padding_mask": torch.ones(B, T, dtype=torch.bool),
    }
    for b, (t, tm, d, dm, g, gm) in enumerate(items):
        n = len(t) - 1
        for name, seq, m in (("", t, tm), ("dur_", d, dm), ("f0_", g, gm)):
            src = "tokens" if name == "" else ("durations" if name == "dur_" else "f0")
            out[src][b, :n] = torch.tensor(seq[:-1], dtype=out[src].dtype)
            out[f"{name}target" if name else "target"][b, :n] = torch.tensor(seq[1:], dtype=out[src].dtype)
            out[f"{name}mask"][b, :n] = torch.tensor([x or y for x, y in zip(m[1:], m[:-1])])
        out["padding_mask"][b, :n] = torch.tensor(t[:-1]) == tok_pad
    return MultiStreamBatch(**out)


class MultiStreamUnitLM(nn.Module):
    """MS-TLM with SpeechPrompt's prompt hooks (input prompt + per-layer key/value prompts), frozen or trained."""

    def __init__(self, cfg: MultiStreamLMConfig):
        super().__init__()
        from bench.lms.model import DecoderLayer

        self.cfg = cfg
        d = cfg.embed_dim
        self.embed_scale = math.sqrt(d)
        self.embed_tokens = nn.Embedding(len(cfg.unit_vocab), d, padding_idx=cfg.unit_vocab.pad)
        # fairseq: discrete streams are embeddings (duration pads with 0, F0 with its <pad>); continuous ones are
        # scalars projected by Linear(1 -> d). ModuleList slots hold None where a stream has no such module.
        self.embed_other_list = nn.ModuleList([
            nn.Embedding(len(cfg.duration_vocab), d, padding_idx=0) if cfg.discrete_duration else None,
            nn.Embedding(len(cfg.f0_vocab), d, padding_idx=cfg.f0_vocab.pad) if cfg.discrete_f0 else None,
        ])
        self.proj_other_list = nn.ModuleList([
            None if cfg.discrete_duration else nn.Linear(1, d),
            None if cfg.discrete_f0 else nn.Linear(1, d),
        ])
        for emb in (self.embed_tokens, *[e for e in self.embed_other_list if e is not None]):
            nn.init.normal_(emb.weight, mean=0.0, std=d ** -0.5)
            nn.init.zeros_(emb.weight[emb.padding_idx])
        self.layers = nn.ModuleList([_decoder_layer(DecoderLayer, cfg) for _ in range(cfg.num_layers)])
        self.layer_norm = nn.LayerNorm(d)
        self.project_out_dim = nn.Linear(d, sum(cfg.channel_sizes), bias=False)
        nn.init.normal_(self.project_out_dim.weight, mean=0.0, std=d ** -0.5)
        self.provenance: dict = {}

    # ---- input -----------------------------------------------------------------------------------------------
    def embed(self, tokens: torch.Tensor, durations: torch.Tensor, f0: torch.Tensor,
              token_embeddings: torch.Tensor | None = None, positions: torch.Tensor | None = None) -> torch.Tensor:
        """√d·E_unit(u) + E_dur(d) + E_f0(f) + positions, [B,T,D] (fairseq ``extract_features_scriptable``).

        ``token_embeddings`` replaces ``embed_tokens(tokens)`` before scaling (the trainable separator);
        ``positions`` [B,T] (0-based step index) default to 0..T-1 (incremental decoding passes its own)."""
        cfg = self.cfg
        e = self.embed_tokens(tokens) if token_embeddings is None else token_embeddings
        x = self.embed_scale * e
        if cfg.ignore_duration_input:
            durations = torch.zeros_like(durations)
        if cfg.ignore_f0_input:
            f0 = torch.zeros_like(f0)
        for values, emb, proj in zip((durations, f0), self.embed_other_list, self.proj_other_list):
            x = x + (emb(values) if emb is not None else proj(values.unsqueeze(-1).to(x.dtype)))
        if positions is None:
            pos = sinusoidal_positions(tokens.size(1), cfg.embed_dim, cfg.unit_vocab.pad, tokens.device).unsqueeze(0)
        else:
            pos = sinusoidal_embedding(positions + cfg.unit_vocab.pad + 1, cfg.embed_dim)
        x = x + pos.to(x.dtype) * (~tokens.eq(cfg.unit_vocab.pad)).unsqueeze(-1).to(x.dtype)
        return x

    def forward(self, tokens: torch.Tensor, durations: torch.Tensor, f0: torch.Tensor, *,
                padding_mask: torch.Tensor | None = None, token_embeddings: torch.Tensor | None = None,
                input_prompt: torch.Tensor | None = None,
                deep_prompts: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                return_hidden: bool = False) -> dict[str, torch.Tensor]:
        """Per-channel outputs for the T input steps: ``{"token": [B,T,K+4], "duration": ..., "f0": ...}``
        (prompt positions dropped); with ``return_hidden`` also ``"hidden"`` (after the final LayerNorm)."""
        if padding_mask is None:
            padding_mask = tokens.eq(self.cfg.unit_vocab.pad)
        x = self.embed(tokens, durations, f0, token_embeddings)
        x = nn.functional.dropout(x, self.cfg.dropout, self.training)
        x = _run_layers(self.layers, x, padding_mask, input_prompt, deep_prompts)
        x = self.layer_norm(x)
        y = self.project_out_dim(x)
        out = dict(zip(CHANNELS, torch.split(y, self.cfg.channel_sizes, dim=-1)))
        if return_hidden:
            out["hidden"] = x
        return out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---- the seam to bench.lms.model (the GSLM ULM's layer, shared so both LMs compute the same thing) ----------------
# Assumed interface (written before bench/lms/model.py landed; adapt these two functions if it differs):
#   DecoderLayer(embed_dim, num_heads, ffn_dim, dropout=, activation="relu"|"gelu"), fairseq module names
#   (self_attn.{q,k,v,out}_proj, self_attn_layer_norm, fc1, fc2, final_layer_norm), pre-LN, causal SDPA;
#   layer(x[B,T,D], key_padding_mask=[B,T] True=pad, prompt_kv=(key[L,D], value[L,D]) | None) -> [B,T,D], where
#   prompt_kv overwrites K/V inputs 0..L-1 after the pre-LN (SpeechPrompt deep prompts).
def _decoder_layer(DecoderLayer, cfg: MultiStreamLMConfig):
    return DecoderLayer(cfg.embed_dim, cfg.num_heads, cfg.ffn_dim, dropout=cfg.dropout, activation=cfg.activation)


def _run_layers(layers, x, padding_mask, input_prompt, deep_prompts):
    """SpeechPrompt's prompt attachment around the frozen layers, exactly as for the GSLM ULM (one function:
    :func:`bench.lms.model.run_prompted_layers`; the input prompt goes after the summed multi-stream embedding)."""
    from bench.lms.model import run_prompted_layers

    return run_prompted_layers(layers, x, padding_mask, input_prompt, deep_prompts)
