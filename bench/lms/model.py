"""The GSLM unit language model (Lakhotia et al., 2021, §3.2): fairseq ``transformer_lm`` on deduplicated units.

Computes exactly what fairseq's ``TransformerLanguageModel`` computes for ``decoder_normalize_before=True``,
``share_decoder_input_output_embed=True`` and sinusoidal positions (docs/papers.md, "The frozen unit LM"):
``x = √d·E[tokens] + sinusoid(positions)`` → dropout → N pre-LN decoder layers (causal self-attention, ReLU FFN)
→ final LayerNorm → logits ``x·Eᵀ``. Module names mirror fairseq's (``layers.{i}.self_attn.{q,k,v,out}_proj``,
``self_attn_layer_norm``, ``fc1``, ``fc2``, ``final_layer_norm``, ``layer_norm``, ``embed_tokens``) so a fairseq
state dict loads after stripping the ``decoder.`` prefix (``bench.lms.checkpoint``).

SpeechPrompt's hooks (docs/papers.md, forward pass items 1-4) are part of ``forward``: replacement token embeddings
(the trainable ``<s>`` separator), an input prompt prepended without positions, and per-layer (key, value) deep prompts
that overwrite the first L K/V inputs after the pre-LN. Attention is ``scaled_dot_product_attention``; with no
padding the causal mask over prompt+tokens is the plain ``is_causal`` mask (flash/efficient kernels apply).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.core.errors import BenchError

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
ACTIVATIONS = ("relu", "gelu", "gelu_accurate")


@dataclass
class DecoderShape:
    """The transformer-decoder shape both unit LMs share (fairseq's ``--decoder-*`` and ``--activation-fn``);
    GSLM's ULM (:class:`UnitLMConfig`) and pGSLM's MS-TLM (:class:`bench.lms.multistream.MultiStreamLMConfig`)
    add their vocabularies and streams to it."""

    num_layers: int = 12
    embed_dim: int = 1024
    num_heads: int = 16
    ffn_dim: int = 4096
    dropout: float = 0.0
    activation: str = "relu"  # fairseq --activation-fn (relu for transformer_lm*, gelu for transformer_ulm_tiny)

    def check_shape(self) -> None:
        name = type(self).__name__
        if self.embed_dim % self.num_heads:
            raise BenchError(f"{name}: embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.activation not in ACTIVATIONS:
            raise BenchError(f"{name}.activation must be one of {ACTIVATIONS}, got {self.activation!r}")


@dataclass
class UnitLMConfig(DecoderShape):
    """Shape of a GSLM ULM. ``vocab_size`` = 4 fairseq specials + K units (104 for K=100)."""

    vocab_size: int = field(kw_only=True)
    max_positions: int = 3072
    attention_dropout: float = 0.0   # fairseq --attention-dropout (0 in transformer_lm)
    activation_dropout: float = 0.0  # fairseq --activation-dropout (0 in transformer_lm)

    def __post_init__(self):
        if self.vocab_size < 5:
            raise BenchError(f"UnitLMConfig.vocab_size must be ≥ 5 (4 specials + units), got {self.vocab_size}")
        self.check_shape()

    @classmethod
    def transformer_lm_big(cls, vocab_size: int = 104, **kw) -> "UnitLMConfig":
        """fairseq ``transformer_lm_big`` (GSLM's ULM): 12 × 1024, 16 heads, FFN 4096 → 151,263,232 params at V=104."""
        return cls(vocab_size=vocab_size, num_layers=12, embed_dim=1024, num_heads=16, ffn_dim=4096, **kw)

    @classmethod
    def transformer_lm(cls, vocab_size: int = 104, **kw) -> "UnitLMConfig":
        """fairseq ``transformer_lm`` (GSLM's small option): 6 × 512, 8 heads, FFN 2048."""
        return cls(vocab_size=vocab_size, num_layers=6, embed_dim=512, num_heads=8, ffn_dim=2048, **kw)

    @classmethod
    def small(cls, vocab_size: int, **kw) -> "UnitLMConfig":
        """A 3 × 128 model (4 heads, FFN 512): the offline default LM, sized for prompt tuning on 2 CPU cores."""
        kw = {"num_layers": 3, "embed_dim": 128, "num_heads": 4, "ffn_dim": 512, "max_positions": 3072, **kw}
        return cls(vocab_size=vocab_size, **kw)

    @classmethod
    def medium(cls, vocab_size: int, **kw) -> "UnitLMConfig":
        """A 4 × 256 model (4 heads, FFN 1024): a stand-in with room for more pretraining speech."""
        kw = {"num_layers": 4, "embed_dim": 256, "num_heads": 4, "ffn_dim": 1024, "max_positions": 3072, **kw}
        return cls(vocab_size=vocab_size, **kw)

    @classmethod
    def tiny(cls, vocab_size: int, **kw) -> "UnitLMConfig":
        """A 2 × 64 model for tests (trains in seconds on CPU)."""
        kw = {"num_layers": 2, "embed_dim": 64, "num_heads": 4, "ffn_dim": 256, "max_positions": 3072, **kw}
        return cls(vocab_size=vocab_size, **kw)


class UnitDictionary:
    """fairseq ``Dictionary`` semantics: ``<s>=0 <pad>=1 </s>=2 <unk>=3``, then dict.txt symbols in file order.

    dict.txt lines are ``<symbol> <count> [#fairseq:overwrite]``; GSLM's list the units ``0..K-1`` (HuBERT: numeric
    order; CPC: frequency order), so unit k is NOT index k+4 in general: use :meth:`unit_to_index`."""

    bos, pad, eos, unk = 0, 1, 2, 3

    def __init__(self, symbols: list[str], counts: list[int] | None = None):
        self.symbols = list(SPECIALS) + list(symbols)
        self.counts = [1] * len(SPECIALS) + (list(counts) if counts is not None else [1] * len(symbols))
        self._index: dict[str, int] = {}
        for i, s in enumerate(self.symbols):
            if s in self._index:
                raise BenchError(f"unit dictionary: symbol {s!r} appears twice")
            self._index[s] = i

    def index(self, symbol: str) -> int:
        """Index of ``symbol``; ``<unk>`` for an unknown symbol, as fairseq."""
        return self._index.get(symbol, self.unk)

    def __len__(self) -> int:
        return len(self.symbols)

    def __eq__(self, other) -> bool:
        return isinstance(other, UnitDictionary) and self.symbols == other.symbols

    def unit_to_index(self, unit: int) -> int:
        """Index of unit id ``unit``; an error (not ``<unk>``) if the dictionary has no such unit."""
        i = self._index.get(str(int(unit)))
        if i is None:
            raise BenchError(f"unit {unit} is not in the unit dictionary ({len(self) - 4} units); "
                             "were the units made with a different k-means than the LM's?")
        return i

    def units(self) -> list[int]:
        """Unit id of each non-special index (index 4+j → units()[j])."""
        try:
            return [int(s) for s in self.symbols[len(SPECIALS):]]
        except ValueError as e:
            raise BenchError(f"unit dictionary holds a non-numeric symbol: {e}") from None

    @classmethod
    def from_units(cls, k: int) -> "UnitDictionary":
        """Units ``"0".."K-1"`` in numeric order (the HuBERT GSLM dict.txt order)."""
        if k < 1:
            raise BenchError(f"a unit dictionary needs at least one unit, got K={k}")
        return cls([str(u) for u in range(k)])

    @classmethod
    def load(cls, path: Path | str) -> "UnitDictionary":
        path = Path(path)
        if not path.is_file():
            raise BenchError(f"unit dictionary {path} not found (expected fairseq dict.txt: '<symbol> <count>' lines)")
        symbols, counts, seen = [], [], set(SPECIALS)
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.rstrip().split(" ")
            overwrite = parts[-1] == "#fairseq:overwrite"
            if overwrite:
                parts = parts[:-1]
            if len(parts) != 2:
                raise BenchError(f"{path}:{n}: expected '<symbol> <count>', got {line!r}")
            sym, cnt = parts
            try:
                count = int(cnt)
            except ValueError:
                raise BenchError(f"{path}:{n}: count {cnt!r} is not an integer") from None
            if sym in seen and not overwrite:
                raise BenchError(f"{path}:{n}: duplicate symbol {sym!r} (fairseq refuses it without #fairseq:overwrite)")
            if sym in seen:
                continue
            seen.add(sym)
            symbols.append(sym)
            counts.append(count)
        if not symbols:
            raise BenchError(f"unit dictionary {path} is empty")
        return cls(symbols, counts)

    def save(self, path: Path | str) -> Path:
        """Write dict.txt atomically (specials are implicit, as in fairseq)."""
        path = Path(path)
        text = "".join(f"{s} {c}\n" for s, c in zip(self.symbols[len(SPECIALS):], self.counts[len(SPECIALS):]))
        from bench.core.locks import temp_path

        tmp = temp_path(path)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return path


def sinusoidal_embedding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """fairseq ``SinusoidalPositionalEmbedding.get_embedding`` evaluated at integer ``positions`` (float32):
    ``[sin(p·ω_0..ω_{h-1}), cos(p·ω_0..ω_{h-1})]`` with ``ω_i = 10000^{-i/(h-1)}``, h = d/2 (Vaswani et al. §3.5)."""
    half = dim // 2
    step = math.log(10000) / (half - 1)
    freq = torch.exp(torch.arange(half, dtype=torch.float, device=positions.device) * -step)
    ang = positions.to(torch.float).unsqueeze(-1) * freq
    emb = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def fairseq_positions(padding_mask: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """fairseq ``make_positions``: non-pad tokens are numbered ``padding_idx+1, …`` left to right; pads get
    ``padding_idx`` (whose embedding row is zero)."""
    keep = (~padding_mask).int()
    return (torch.cumsum(keep, dim=1) * keep).long() + padding_idx


class SelfAttention(nn.Module):
    """fairseq ``MultiheadAttention`` (self-attention only) on SDPA; ``key_input``/``value_input`` let deep prompts
    replace the K/V inputs while queries come from the hidden states."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        if not any(p.is_meta for p in self.parameters()):
            for lin in (self.k_proj, self.v_proj, self.q_proj):  # fairseq's qkv_same_dim init
                nn.init.xavier_uniform_(lin.weight, gain=1 / math.sqrt(2))
            nn.init.xavier_uniform_(self.out_proj.weight)
            nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, *, attn_mask: torch.Tensor | None, is_causal: bool,
                key_input: torch.Tensor | None = None, value_input: torch.Tensor | None = None,
                prefix: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``prefix=(key_in[L,D], value_in[L,D])``: L extra keys/values in front of the sequence's own (the
        same for every batch row, so projected once); ``attn_mask`` is then [.., T, L+T]."""
        B, T, D = x.shape
        h, hd = self.num_heads, self.head_dim

        def heads(t: torch.Tensor, n: int = T, b: int = B) -> torch.Tensor:
            return t.view(b, n, h, hd).transpose(1, 2)

        q = heads(self.q_proj(x))
        k = heads(self.k_proj(x if key_input is None else key_input))
        v = heads(self.v_proj(x if value_input is None else value_input))
        if prefix is not None:
            kp, vp = prefix
            L = kp.size(0)
            k = torch.cat([heads(self.k_proj(kp.to(x.dtype)), L, 1).expand(B, -1, -1, -1), k], dim=2)
            v = torch.cat([heads(self.v_proj(vp.to(x.dtype)), L, 1).expand(B, -1, -1, -1), v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal and attn_mask is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, D))


def prefix_attention_mask(padding_mask: torch.Tensor | None, prefix: int, length: int, device) -> torch.Tensor:
    """Boolean SDPA mask [B or 1,1,T,L+T] for T queries over L prefix keys + T causal keys (True = attend). The
    prefix keys are always visible, so no row is ever all-masked."""
    mask = torch.ones(length, prefix + length, dtype=torch.bool, device=device).tril(diagonal=prefix)
    if padding_mask is None or not bool(padding_mask.any()):
        return mask
    keys = torch.cat([padding_mask.new_zeros(padding_mask.size(0), prefix), padding_mask], dim=1)
    return mask & ~keys[:, None, None, :]


def attention_mask(padding_mask: torch.Tensor | None, length: int, device) -> torch.Tensor | None:
    """Boolean SDPA mask [B,1,T,T] (True = attend): causal and not a pad key. ``None`` when nothing is padded, so
    SDPA runs with ``is_causal`` (no mask tensor). Each position may always attend to itself, so a pad query never
    sees an all-masked row (fairseq's would be NaN); non-pad positions are unaffected."""
    if padding_mask is None or not bool(padding_mask.any()):
        return None
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    mask = causal & ~padding_mask[:, None, None, :]
    return mask | torch.eye(length, dtype=torch.bool, device=device)


class DecoderLayer(nn.Module):
    """fairseq ``TransformerDecoderLayer`` with ``normalize_before=True`` and no encoder attention:
    ``x += drop(SelfAttn(LN(x)))``; ``x += drop(fc2(drop_act(act(fc1(LN(x))))))``.

    Deep prompts (key[L,D], value[L,D]) come in one of two equivalent forms (docs/papers.md, forward pass item 4):
    ``prompt_kv``: the published form: x holds L prompt positions in front and the K/V inputs are LN(x) with
    positions 0..L-1 overwritten by the prompts; ``prefix_kv``: the journal's form K = [p_K; LN(x)]·W_K: x holds
    only the T tokens and the prompts are L extra keys/values (see :func:`run_prompted_layers`)."""

    def __init__(self, embed_dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.0,
                 activation: str = "relu", attention_dropout: float = 0.0, activation_dropout: float = 0.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise BenchError(f"DecoderLayer: activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.self_attn = SelfAttention(embed_dim, num_heads, attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim)
        self.dropout, self.activation_dropout, self.activation = dropout, activation_dropout, activation

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "relu":
            return F.relu(x)
        return F.gelu(x, approximate="tanh" if self.activation == "gelu_accurate" else "none")

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                prompt_kv: tuple[torch.Tensor, torch.Tensor] | None = None, *,
                attn_mask: torch.Tensor | None = None, mask_ready: bool = False,
                prefix_kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x [B,T,D]; ``key_padding_mask`` [B,T] True = pad. Callers running many layers may pass the prebuilt
        ``attn_mask`` (from :func:`attention_mask`, or :func:`prefix_attention_mask` with ``prefix_kv``) with
        ``mask_ready=True`` to build it once."""
        if prefix_kv is not None:
            if prompt_kv is not None:
                raise BenchError("DecoderLayer: give deep prompts as prompt_kv or prefix_kv, not both")
            if not mask_ready:
                attn_mask = prefix_attention_mask(key_padding_mask, prefix_kv[0].size(0), x.size(1), x.device)
            h = self.self_attn(self.self_attn_layer_norm(x), attn_mask=attn_mask, is_causal=False, prefix=prefix_kv)
            return self._feed_forward(x + F.dropout(h, self.dropout, self.training))
        if not mask_ready:
            attn_mask = attention_mask(key_padding_mask, x.size(1), x.device)
        h = self.self_attn_layer_norm(x)
        k_in = v_in = None
        if prompt_kv is not None:
            kp, vp = prompt_kv
            B, L = x.size(0), kp.size(0)
            if L > x.size(1) or vp.size(0) != L:
                raise BenchError(f"deep prompt of length {L} (value {vp.size(0)}) does not fit a sequence of {x.size(1)}")
            rest = h[:, L:]
            k_in = torch.cat([kp.to(h.dtype).expand(B, L, -1), rest], dim=1)
            v_in = torch.cat([vp.to(h.dtype).expand(B, L, -1), rest], dim=1)
        h = self.self_attn(h, attn_mask=attn_mask, is_causal=True, key_input=k_in, value_input=v_in)
        return self._feed_forward(x + F.dropout(h, self.dropout, self.training))

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._act(self.fc1(self.final_layer_norm(x)))
        h = self.fc2(F.dropout(h, self.activation_dropout, self.training))
        return x + F.dropout(h, self.dropout, self.training)


class UnitLanguageModel(nn.Module):
    """GSLM ULM (fairseq ``transformer_lm*`` with pre-LN, sinusoidal positions, √d embedding scale, tied
    input/output embeddings, final LayerNorm), with SpeechPrompt's prompt hooks in :meth:`forward`."""

    def __init__(self, cfg: UnitLMConfig, dictionary: UnitDictionary | None = None):
        super().__init__()
        dictionary = dictionary if dictionary is not None else UnitDictionary.from_units(cfg.vocab_size - 4)
        if len(dictionary) != cfg.vocab_size:
            raise BenchError(f"unit LM: dictionary has {len(dictionary)} symbols but the config's vocab_size is "
                             f"{cfg.vocab_size}")
        self.cfg = cfg
        self.dictionary = dictionary
        d = cfg.embed_dim
        self.embed_scale = math.sqrt(d)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, d, padding_idx=dictionary.pad)
        if not self.embed_tokens.weight.is_meta:  # fairseq Embedding init: N(0, d^-1/2), pad row zero
            nn.init.normal_(self.embed_tokens.weight, mean=0.0, std=d ** -0.5)
            with torch.no_grad():
                self.embed_tokens.weight[dictionary.pad].zero_()
        self.layers = nn.ModuleList(
            DecoderLayer(d, cfg.num_heads, cfg.ffn_dim, dropout=cfg.dropout, activation=cfg.activation,
                         attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout)
            for _ in range(cfg.num_layers))
        self.layer_norm = nn.LayerNorm(d)
        self.provenance: dict = {}

    def embed(self, tokens: torch.Tensor, padding_mask: torch.Tensor,
              token_embeddings: torch.Tensor | None = None, positions: torch.Tensor | None = None) -> torch.Tensor:
        """``√d·E + sinusoid(positions)`` [B,T,D] (fairseq ``TransformerDecoder.extract_features``); ``positions``
        (fairseq numbering, ``pad+1`` for the first token) default to the left-to-right count of non-pad tokens."""
        if tokens.size(1) > self.cfg.max_positions:
            raise BenchError(f"unit LM: sequence of {tokens.size(1)} tokens exceeds max_positions "
                             f"{self.cfg.max_positions}")
        e = self.embed_tokens(tokens) if token_embeddings is None else token_embeddings
        if positions is None:
            positions = fairseq_positions(padding_mask, self.dictionary.pad)
        pos = sinusoidal_embedding(positions, self.cfg.embed_dim)
        pos = pos.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        return self.embed_scale * e + pos.to(e.dtype)

    def forward(self, tokens: torch.Tensor, *, padding_mask: torch.Tensor | None = None,
                token_embeddings: torch.Tensor | None = None, input_prompt: torch.Tensor | None = None,
                deep_prompts: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                return_hidden: bool = False, deep_prompt_form: str = "prefix"):
        """Logits [B,T,V] for the T token positions (prompt positions dropped); with ``return_hidden`` the pair
        ``(logits, hidden)`` where hidden [B,T,D] is the final-LayerNorm output. ``deep_prompt_form``: see
        :func:`run_prompted_layers` (both forms give the same logits)."""
        if padding_mask is None:
            padding_mask = tokens.eq(self.dictionary.pad)
        if token_embeddings is not None and token_embeddings.shape[:2] != tokens.shape:
            raise BenchError(f"token_embeddings {tuple(token_embeddings.shape)} do not match tokens {tuple(tokens.shape)}")
        x = self.embed(tokens, padding_mask, token_embeddings)
        x = F.dropout(x, self.cfg.dropout, self.training)
        x = run_prompted_layers(self.layers, x, padding_mask, input_prompt, deep_prompts, deep_prompt_form)
        x = self.layer_norm(x)
        logits = F.linear(x, self.embed_tokens.weight.to(x.dtype))
        return (logits, x) if return_hidden else logits

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


DEEP_PROMPT_FORMS = ("prefix", "overwrite")


def run_prompted_layers(layers, x: torch.Tensor, padding_mask: torch.Tensor, input_prompt: torch.Tensor | None,
                        deep_prompts: list[tuple[torch.Tensor, torch.Tensor]] | None,
                        form: str = "prefix") -> torch.Tensor:
    """The decoder layers with SpeechPrompt's prompts attached (docs/papers.md, forward pass items 3-4); returns the T
    token positions [B,T,D].

    ``overwrite`` is the published computation: the input prompt is prepended (no positions), every layer's K/V
    inputs have positions 0..L-1 overwritten by its key/value prompts, and the L prompt positions are dropped
    at the end. With deep prompts in every layer (always on in both public codebases) nothing downstream ever
    reads the hidden states at the prompt positions: their K/V are replaced in each layer and their outputs are
    dropped. So ``prefix`` (the journal's K = [p_K; h]·W_K) computes the same logits on the T tokens alone,
    with the prompts as L extra keys/values per layer: ~L/T less work, and the input prompt is provably unused
    (its gradient is zero in the published form too; it is still created and counted, as published).
    Without deep prompts there is one form: the input prompt is prepended and attended to.
    """
    if form not in DEEP_PROMPT_FORMS:
        raise BenchError(f"deep_prompt_form must be one of {DEEP_PROMPT_FORMS}, got {form!r}")
    B, D = x.size(0), x.size(-1)
    if input_prompt is not None and (input_prompt.dim() != 3 or input_prompt.size(-1) != D
                                     or input_prompt.size(0) not in (1, B)):
        raise BenchError(f"input_prompt must be [B or 1, L, {D}], got {tuple(input_prompt.shape)}")
    if deep_prompts is not None:
        if input_prompt is None:
            raise BenchError("deep prompts need an input prompt of the same length L (SpeechPrompt §2.1)")
        L = input_prompt.size(1)
        if len(deep_prompts) != len(layers) or any(k.shape != (L, D) or v.shape != k.shape for k, v in deep_prompts):
            raise BenchError(f"deep_prompts: expected {len(layers)} (key, value) pairs of shape ({L}, {D})")
        if form == "prefix":
            mask = prefix_attention_mask(padding_mask, L, x.size(1), x.device)
            for layer, kv in zip(layers, deep_prompts):
                x = layer(x, padding_mask, attn_mask=mask, mask_ready=True, prefix_kv=kv)
            return x
    L = 0
    if input_prompt is not None:
        L = input_prompt.size(1)
        x = torch.cat([input_prompt.to(x.dtype).expand(B, L, -1), x], dim=1)
        padding_mask = torch.cat([padding_mask.new_zeros(B, L), padding_mask], dim=1)
    mask = attention_mask(padding_mask, x.size(1), x.device)
    for i, layer in enumerate(layers):
        x = layer(x, padding_mask, deep_prompts[i] if deep_prompts is not None else None,
                  attn_mask=mask, mask_ready=True)
    return x[:, L:]


# ---- incremental decoding (key/value cache) -------------------------------------------------------------------
@dataclass
class KVCache:
    """Per layer the projected keys/values of every position decoded so far ([B,H,C,hd]), which of the C columns
    a query may attend (``valid`` [B,C]: padding of a right-padded prefix is not), and the projected deep-prompt
    keys/values ([1,H,L,hd], always visible). SpeechPrompt decodes by full recomputation (v1 ``prompt_lm.py:176``;
    fairseq's ``incremental_state=None``); this computes the same logits, one new position per step."""

    keys: list
    values: list
    valid: torch.Tensor
    prompt_kv: list | None = None


def _heads(attn: SelfAttention, t: torch.Tensor) -> torch.Tensor:
    B, T, _ = t.shape
    return t.view(B, T, attn.num_heads, attn.head_dim).transpose(1, 2)


def _cached_layer(layer: DecoderLayer, x: torch.Tensor, past_k, past_v, prompt_kv, mask) -> tuple:
    """One pre-LN decoder layer over the new positions ``x`` [B,T,D] attending to cached + new keys."""
    attn = layer.self_attn
    h = layer.self_attn_layer_norm(x)
    q, k, v = _heads(attn, attn.q_proj(h)), _heads(attn, attn.k_proj(h)), _heads(attn, attn.v_proj(h))
    if past_k is not None:
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    keys, values = k, v
    if prompt_kv is not None:
        kp, vp = prompt_kv
        keys = torch.cat([kp.expand(x.size(0), -1, -1, -1), k], dim=2)
        values = torch.cat([vp.expand(x.size(0), -1, -1, -1), v], dim=2)
    y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    y = attn.out_proj(y.transpose(1, 2).reshape(x.shape))
    return layer._feed_forward(x + y), k, v


def _cached_mask(valid: torch.Tensor, new: int, prompts: int) -> torch.Tensor:
    """[B,1,new,P+C] boolean mask: prompt keys always, cached columns where valid, the new ones causally (each
    query always sees itself, as :func:`attention_mask`)."""
    B, C = valid.shape
    old = C - new
    causal = torch.ones(new, new, dtype=torch.bool, device=valid.device).tril()
    cols = torch.cat([valid[:, None, :old].expand(B, new, old),
                      causal[None] & valid[:, None, old:] | torch.eye(new, dtype=torch.bool, device=valid.device)],
                     dim=2)
    if prompts:
        cols = torch.cat([cols.new_ones(B, new, prompts), cols], dim=2)
    return cols[:, None]


def prefill_prompted_layers(layers, x: torch.Tensor, padding_mask: torch.Tensor, input_prompt: torch.Tensor | None,
                            deep_prompts: list | None) -> tuple[torch.Tensor, KVCache]:
    """:func:`run_prompted_layers` (eval mode, ``prefix`` form) that also returns the :class:`KVCache` of the
    T positions (and of the input prompt's positions when there are no deep prompts)."""
    B = x.size(0)
    prompt_kv, L = None, 0
    if deep_prompts is not None:
        prompt_kv = [(_heads(layer.self_attn, layer.self_attn.k_proj(kp.to(x.dtype))[None]),
                      _heads(layer.self_attn, layer.self_attn.v_proj(vp.to(x.dtype))[None]))
                     for layer, (kp, vp) in zip(layers, deep_prompts)]
    elif input_prompt is not None:
        L = input_prompt.size(1)
        x = torch.cat([input_prompt.to(x.dtype).expand(B, L, -1), x], dim=1)
        padding_mask = torch.cat([padding_mask.new_zeros(B, L), padding_mask], dim=1)
    valid = ~padding_mask
    P = prompt_kv[0][0].size(2) if prompt_kv else 0
    mask = _cached_mask(valid, x.size(1), P)
    keys, values = [], []
    for i, layer in enumerate(layers):
        x, k, v = _cached_layer(layer, x, None, None, prompt_kv[i] if prompt_kv else None, mask)
        keys.append(k)
        values.append(v)
    return x[:, L:], KVCache(keys, values, valid, prompt_kv)


def step_prompted_layers(layers, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """One new position per row (``x`` [B,1,D], already embedded with its own position): the decoder layers
    over the cache, which grows by one column; returns [B,1,D]."""
    cache.valid = torch.cat([cache.valid, cache.valid.new_ones(x.size(0), 1)], dim=1)
    P = cache.prompt_kv[0][0].size(2) if cache.prompt_kv else 0
    mask = _cached_mask(cache.valid, 1, P)
    for i, layer in enumerate(layers):
        x, cache.keys[i], cache.values[i] = _cached_layer(layer, x, cache.keys[i], cache.values[i],
                                                          cache.prompt_kv[i] if cache.prompt_kv else None, mask)
    return x
