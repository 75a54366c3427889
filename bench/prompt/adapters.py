"""What trains on a frozen unit LM: the :class:`Adapter` seam of the prompt engine.

The engine (:mod:`bench.prompt.trainer`) asks an adapter three things per forward pass: the token embeddings
(SpeechPrompt's trainable separator replaces ``<s>``'s), the prompts to attach (an input prompt and per-layer
key/value prompts, or none), and what to do with the LM's unit logits (the learnable verbalizer, or nothing). It
trains ``adapter.parameters()`` and nothing else, and checks the count against the adapter's closed-form
:meth:`Adapter.formula`. SpeechPrompt's prompts are :class:`bench.prompt.modules.PromptSet`; a LoRA or bottleneck
adapter is one more subclass (it may wrap the LM's layers in :meth:`Adapter.attach`) registered in ``ADAPTERS``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from torch import nn

from bench.core.errors import BenchError

# name -> "module:Class"; a new parameter-efficient method adds one line (or calls register_adapter)
ADAPTERS: dict[str, str] = {"prompt": "bench.prompt.modules:PromptSet"}


@dataclass(frozen=True)
class AdapterSpec:
    """The adapter options a method's Config sets (each adapter reads those it knows)."""

    prompt_length: int = 5
    deep: bool = True
    separator_init: str = "bos_row"


class Adapter(nn.Module):
    """The trainable part of a parameter-efficient method on a frozen :class:`bench.prompt.unit_lm.UnitLM`."""

    name = "adapter"  # (a learnable verbalizer, when there is one, is the submodule ``verbalizer``)

    @classmethod
    def build(cls, lm, spec: AdapterSpec, verbalizer_outputs: int | None) -> "Adapter":
        raise NotImplementedError

    @classmethod
    def formula(cls, num_layers: int, embed_dim: int, vocab_size: int, spec: AdapterSpec,
                verbalizer_outputs: int | None) -> dict[str, int]:
        """Trainable parameters per part from the LM's shape alone (``bench params``, parameter counts)."""
        raise NotImplementedError

    def attach(self, lm) -> None:
        """Hook for adapters that change the LM's computation (LoRA); prompts attach through :meth:`prompts`."""

    def token_embeddings(self, lm, batch) -> torch.Tensor:
        return lm.embed_tokens(batch.tokens)

    def prompts(self) -> tuple[torch.Tensor | None, list | None]:
        """(input prompt [1,L,D] or None, per-layer (key, value) [L,D] pairs or None)."""
        return None, None

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        verbalizer = self._modules.get("verbalizer")
        return verbalizer(logits) if verbalizer is not None else logits

    def breakdown(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in m.parameters()) for name, m in self.named_children()}

    def describe(self) -> dict:
        return {"adapter": self.name}


def register_adapter(name: str, cls: type[Adapter]) -> None:
    """Make ``cls`` available by ``name`` (a test or plug-in; shipped adapters are listed in ``ADAPTERS``)."""
    _LOADED[name] = cls


_LOADED: dict[str, type[Adapter]] = {}


def adapter_class(name: str) -> type[Adapter]:
    if name in _LOADED:
        return _LOADED[name]
    if name not in ADAPTERS:
        raise BenchError(f"unknown adapter '{name}'; known: {', '.join(sorted({*ADAPTERS, *_LOADED}))}")
    module, cls = ADAPTERS[name].split(":")
    return getattr(importlib.import_module(module), cls)
