"""Prompt modules of SpeechPrompt (v1 §2.1 and v2's learnable verbalizer; docs/papers.md).

- :class:`InputPrompt`: L trainable vectors prepended to the LM input (after embedding scaling and positions:
  they get no positional encoding), dropout 0.1;
- :class:`DeepPrompt`: per layer, L key and L value vectors that replace positions 0..L-1 of the K/V inputs
  after the pre-LN (prefix-tuning-like; the frozen k_proj/v_proj still apply), dropout 0.1;
- :class:`TrainableSeparator`: one vector that replaces the embedding of every ``<s>`` (before √d scaling);
- :class:`LearnableVerbalizer`: Linear(|V| → C+4, no bias) on the LM's logits, dropout 0.1 (v2 only).

:class:`PromptSet` groups them (the ``prompt`` :class:`~bench.prompt.adapters.Adapter`: the only trainable
parameters); :class:`PromptedLM` drives any :class:`bench.prompt.unit_lm.UnitLM` with an adapter.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.prompt.adapters import Adapter, AdapterSpec

PROMPT_DROPOUT = 0.1  # hard-coded in SpeechPrompt v1/v2 (prompt_dropout) and on the v2 verbalizer output


class InputPrompt(nn.Module):
    """L×d prefix vectors (``prefix_embed_prompts``); nn.Embedding's N(0, 1) init, like the reference."""

    def __init__(self, length: int, dim: int, dropout: float = PROMPT_DROPOUT):
        super().__init__()
        self.embed = nn.Embedding(length, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self) -> torch.Tensor:
        return self.dropout(self.embed.weight).unsqueeze(0)  # [1, L, d]


class DeepPrompt(nn.Module):
    """Per-layer key/value prompts (``deep_{key,value}_embed_prompts[i]``), each L×d in the normalized hidden space."""

    def __init__(self, num_layers: int, length: int, dim: int, dropout: float = PROMPT_DROPOUT):
        super().__init__()
        self.keys = nn.ModuleList(nn.Embedding(length, dim) for _ in range(num_layers))
        self.values = nn.ModuleList(nn.Embedding(length, dim) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self.dropout(k.weight), self.dropout(v.weight)) for k, v in zip(self.keys, self.values)]


class TrainableSeparator(nn.Module):
    """The ``<s>`` separator embedding made trainable (``sep_embed``, 1×d). It replaces the unscaled embedding,
    so the LM's √d scale applies to it as to every token. Initialised (``separator_init``) as published, a fresh
    ``nn.Embedding(1, d)`` row, N(0, 1) (SpeechPrompt-v2 GSLM/prompt/fairseq_usr/model.py:128, scaled with the
    tokens at transformer_prompt_decoder.py:371-379): ``normal_scaled``; or from the frozen LM's own ``<s>`` row,
    so the prompted model starts as the LM on that position (``bos_row``; bench before this option)."""

    def __init__(self, dim: int, init: torch.Tensor | None = None):
        super().__init__()
        self.embed = nn.Parameter(init.detach().clone().reshape(dim) if init is not None else torch.randn(dim))

    def forward(self, tokens: torch.Tensor, embeddings: torch.Tensor, sep_index: int | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings with the separator positions (``mask``, else every ``sep_index`` token) replaced."""
        mask = (tokens == sep_index) if mask is None else mask
        return torch.where(mask.unsqueeze(-1), self.embed.to(embeddings.dtype).expand_as(embeddings), embeddings)


class LearnableVerbalizer(nn.Module):
    """SpeechPrompt v2: Linear(|V| → C+4, bias=False) on the unit logits, then dropout 0.1."""

    def __init__(self, vocab_size: int, num_outputs: int, dropout: float = PROMPT_DROPOUT):
        super().__init__()
        self.linear = nn.Linear(vocab_size, num_outputs, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(logits))


SEPARATOR_INITS = ("normal_scaled", "bos_row")


class PromptSet(Adapter):
    """SpeechPrompt's trainable part (the ``prompt`` adapter). Parameter count for a d-dim, N-layer LM and prompt
    length L: L·d (input) + 2·N·L·d (deep) + d (separator) [+ |V|·(C+4)] — 25,600·L + 1,024 for GSLM's
    12×1024 ULM (:func:`bench.results.params.prompt_breakdown`, the one formula)."""

    name = "prompt"

    def __init__(self, num_layers: int, dim: int, prompt_length: int, deep: bool = True,
                 separator_init: torch.Tensor | None = None, vocab_size: int | None = None,
                 verbalizer_outputs: int | None = None):
        super().__init__()
        if prompt_length < 1:
            from bench.core.errors import BenchError

            raise BenchError(f"prompt_length must be ≥ 1, got {prompt_length}")
        self.prompt_length = prompt_length
        self.input_prompt = InputPrompt(prompt_length, dim)
        self.deep_prompt = DeepPrompt(num_layers, prompt_length, dim) if deep else None
        self.separator = TrainableSeparator(dim, separator_init)
        self.verbalizer = (LearnableVerbalizer(vocab_size, verbalizer_outputs)
                           if verbalizer_outputs is not None else None)

    @classmethod
    def build(cls, lm, spec: AdapterSpec, verbalizer_outputs: int | None) -> "PromptSet":
        """Built on ``lm``'s shape; draws from torch's RNG in a fixed order (input, deep, separator, verbalizer)."""
        from bench.core.errors import BenchError

        if spec.separator_init not in SEPARATOR_INITS:
            raise BenchError(f"separator_init must be one of {SEPARATOR_INITS}, got {spec.separator_init!r}")
        init = None
        if spec.separator_init == "bos_row":
            bos = torch.tensor([lm.vocab.bos], device=next(lm.module.parameters()).device)
            init = lm.embed_tokens(bos)[0].detach().float()
        return cls(lm.num_layers, lm.embed_dim, spec.prompt_length, spec.deep, init, len(lm.vocab),
                   verbalizer_outputs)

    @classmethod
    def formula(cls, num_layers, embed_dim, vocab_size, spec, verbalizer_outputs):
        from bench.results.params import prompt_breakdown

        return prompt_breakdown(num_layers, embed_dim, spec.prompt_length, spec.deep, vocab_size, verbalizer_outputs)

    def token_embeddings(self, lm, batch) -> torch.Tensor:
        return self.separator(batch.tokens, lm.embed_tokens(batch.tokens), mask=batch.sep_mask)

    def prompts(self):
        deep = self.deep_prompt() if self.deep_prompt is not None else None  # first: the dropout masks' RNG order
        return self.input_prompt(), deep

    def breakdown(self) -> dict[str, int]:
        parts = {"input_prompt": self.input_prompt, "deep_prompts": self.deep_prompt,
                 "separator": self.separator, "verbalizer": self.verbalizer}
        return {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items() if m is not None}


class PromptedLM(nn.Module):
    """A frozen unit LM (:class:`bench.prompt.unit_lm.UnitLM`, or a GSLM ULM / MS-TLM module, wrapped) driven by an
    :class:`Adapter`: rows → (verbalized) output scores per position. ``prompts`` is the adapter (what trains)."""

    def __init__(self, lm, prompts: Adapter, sep_index: int | None = None):
        super().__init__()
        from bench.prompt.unit_lm import as_unit_lm

        self.unit_lm = as_unit_lm(lm)
        self.lm = self.unit_lm.module
        self.prompts = prompts
        self.sep_index = self.unit_lm.vocab.bos if sep_index is None else sep_index
        prompts.attach(self.unit_lm)

    def _batch(self, tokens: torch.Tensor, padding_mask: torch.Tensor | None):
        from bench.prompt.unit_lm import Batch

        if padding_mask is None:
            padding_mask = tokens.eq(self.unit_lm.vocab.pad)
        return Batch(tokens, padding_mask, tokens == self.sep_index, (~padding_mask).sum(1).cpu())

    def forward(self, batch, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Output scores [B,T,·] of a :class:`~bench.prompt.unit_lm.Batch` (or, GSLM only, of a token tensor)."""
        if isinstance(batch, torch.Tensor):
            batch = self._batch(batch, padding_mask)
        ip, deep = self.prompts.prompts()
        logits = self.unit_lm.forward(batch, self.prompts.token_embeddings(self.unit_lm, batch), ip, deep)
        return self.prompts.outputs(logits)

    def prefill(self, batch):
        """Scores of a prefix batch and the key/value cache of its positions (incremental decoding)."""
        ip, deep = self.prompts.prompts()
        logits, cache = self.unit_lm.prefill(batch, self.prompts.token_embeddings(self.unit_lm, batch), ip, deep)
        return self.prompts.outputs(logits), cache

    def step(self, rows, cache, device) -> torch.Tensor:
        """Scores [B,·] of each row's last (just appended) token, extending ``cache`` by one position."""
        from bench.prompt.unit_lm import Batch

        tokens = torch.tensor([[r.inputs[-1]] for r in rows], device=device)
        none = torch.zeros_like(tokens, dtype=torch.bool)
        emb = self.prompts.token_embeddings(self.unit_lm, Batch(tokens, none, none, torch.ones(len(rows))))
        return self.prompts.outputs(self.unit_lm.step(rows, emb, cache, device))[:, 0]

    def train(self, mode: bool = True):
        """Only the adapter switches to training mode; the frozen LM stays in eval (its dropout off)."""
        super().train(mode)
        self.lm.eval()
        return self
