"""Prompt modules of SpeechPrompt (v1 §2.1 and v2's learnable verbalizer; speechprompt.md §2.1, §3.3).

- :class:`InputPrompt`: L trainable vectors prepended to the LM input (after embedding scaling and positions:
  they get no positional encoding), dropout 0.1;
- :class:`DeepPrompt`: per layer, L key and L value vectors that replace positions 0..L-1 of the K/V inputs
  after the pre-LN (prefix-tuning-like; the frozen k_proj/v_proj still apply), dropout 0.1;
- :class:`TrainableSeparator`: one vector that replaces the embedding of every ``<s>`` (before √d scaling);
- :class:`LearnableVerbalizer`: Linear(|V| → C+4, no bias) on the LM's logits, dropout 0.1 (v2 only).

:class:`PromptSet` groups them (these are the only trainable parameters); :class:`PromptedLM` is the seam to the
frozen LM: it needs an LM with ``embed_tokens`` and the forward of ``bench.ulm.model.UnitLanguageModel``
(``token_embeddings``, ``input_prompt``, ``deep_prompts``); a multi-stream LM overrides :meth:`PromptedLM.lm_forward`.
"""

from __future__ import annotations

import torch
from torch import nn

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
    """The ``<s>`` separator embedding made trainable (``sep_embed``, 1×d), initialised from the frozen LM's own
    ``<s>`` row so the prompted model starts as the LM on that position."""

    def __init__(self, dim: int, init: torch.Tensor | None = None):
        super().__init__()
        self.embed = nn.Parameter(init.detach().clone().reshape(dim) if init is not None else torch.randn(dim))

    def forward(self, tokens: torch.Tensor, embeddings: torch.Tensor, sep_index: int) -> torch.Tensor:
        """Embeddings with every ``sep_index`` position replaced by the trainable vector (unscaled space)."""
        mask = (tokens == sep_index).unsqueeze(-1)
        return torch.where(mask, self.embed.to(embeddings.dtype).expand_as(embeddings), embeddings)


class LearnableVerbalizer(nn.Module):
    """SpeechPrompt v2: Linear(|V| → C+4, bias=False) on the unit logits, then dropout 0.1."""

    def __init__(self, vocab_size: int, num_outputs: int, dropout: float = PROMPT_DROPOUT):
        super().__init__()
        self.linear = nn.Linear(vocab_size, num_outputs, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(logits))


class PromptSet(nn.Module):
    """Everything trained per task. Parameter count for a d-dim, N-layer LM and prompt length L:
    L·d (input) + 2·N·L·d (deep) + d (separator) [+ |V|·(C+4)] — 25,600·L + 1,024 for GSLM's 12×1024 ULM."""

    def __init__(self, num_layers: int, dim: int, prompt_length: int, deep: bool = True,
                 separator_init: torch.Tensor | None = None, vocab_size: int | None = None,
                 verbalizer_outputs: int | None = None):
        super().__init__()
        if prompt_length < 1:
            from bench.errors import BenchError

            raise BenchError(f"prompt_length must be ≥ 1, got {prompt_length}")
        self.prompt_length = prompt_length
        self.input_prompt = InputPrompt(prompt_length, dim)
        self.deep_prompt = DeepPrompt(num_layers, prompt_length, dim) if deep else None
        self.separator = TrainableSeparator(dim, separator_init)
        self.verbalizer = (LearnableVerbalizer(vocab_size, verbalizer_outputs)
                           if verbalizer_outputs is not None else None)

    def breakdown(self) -> dict[str, int]:
        parts = {"input_prompt": self.input_prompt, "deep_prompts": self.deep_prompt,
                 "separator": self.separator, "verbalizer": self.verbalizer}
        return {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items() if m is not None}


class PromptedLM(nn.Module):
    """A frozen unit LM driven by a :class:`PromptSet`: tokens → (verbalized) output scores per position."""

    def __init__(self, lm: nn.Module, prompts: PromptSet, sep_index: int):
        super().__init__()
        self.lm = lm
        self.prompts = prompts
        self.sep_index = sep_index

    def lm_forward(self, tokens, padding_mask, token_embeddings, input_prompt, deep_prompts) -> torch.Tensor:
        """The LM's unit logits [B, T, V] for the token positions (override for other LMs)."""
        return self.lm(tokens, padding_mask=padding_mask, token_embeddings=token_embeddings,
                       input_prompt=input_prompt, deep_prompts=deep_prompts)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm.embed_tokens(tokens)

    def forward(self, tokens: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.prompts.separator(tokens, self.embed(tokens), self.sep_index)
        deep = self.prompts.deep_prompt() if self.prompts.deep_prompt is not None else None
        logits = self.lm_forward(tokens, padding_mask, emb, self.prompts.input_prompt(), deep)
        if self.prompts.verbalizer is not None:
            logits = self.prompts.verbalizer(logits)
        return logits

    def train(self, mode: bool = True):
        """Only the prompts switch to training mode; the frozen LM stays in eval (its dropout off)."""
        super().train(mode)
        self.lm.eval()
        return self
