"""Parameter accounting for prompt tuning, without training or loading weights (``bench params``).

SpeechPrompt (docs/papers.md): for an N-layer, d-dim unit LM and prompt length L the trainable parameters are
the input prompt L·d, the deep prompts 2·N·L·d (a key and a value prompt per layer), the separator d, and with
v2's learnable verbalizer |V|·(C+4). For GSLM's transformer_lm_big (N=12, d=1024) that is 25,600·L + 1,024:
L=5 → 129,024 (v2), L=6 → 154,624 (the v1 IC log). The frozen LM is counted separately (151,263,232 for |V|=104).
"""

from __future__ import annotations

from bench.core.errors import BenchError


def prompt_breakdown(num_layers: int, embed_dim: int, prompt_length: int, deep: bool = True,
                     vocab_size: int | None = None, verbalizer_outputs: int | None = None) -> dict[str, int]:
    """Trainable parameters per part; ``verbalizer_outputs`` (C+4) adds the learnable verbalizer."""
    if prompt_length < 1:
        raise BenchError(f"prompt_length must be ≥ 1, got {prompt_length}")
    parts = {"input_prompt": prompt_length * embed_dim}
    if deep:
        parts["deep_prompts"] = 2 * num_layers * prompt_length * embed_dim
    parts["separator"] = embed_dim
    if verbalizer_outputs is not None:
        if vocab_size is None:
            raise BenchError("the learnable verbalizer's size needs the LM vocabulary size")
        parts["verbalizer"] = vocab_size * verbalizer_outputs
    return parts


def gslm_prompt_parameters(prompt_length: int, num_classes: int | None = None) -> int:
    """25,600·L + 1,024 (+ 104·(C+4)): the closed form for GSLM's 12×1024 ULM with vocabulary 104."""
    return 25_600 * prompt_length + 1_024 + (104 * (num_classes + 4) if num_classes is not None else 0)


def frozen_lm_parameters(cfg) -> int:
    """Parameters of a :class:`bench.lms.model.UnitLanguageModel` with config ``cfg``, built on the meta device
    (no memory, no weights), so the 151M-parameter LM is counted instantly."""
    import torch

    from bench.lms.model import UnitDictionary, UnitLanguageModel

    dictionary = UnitDictionary.from_units(cfg.vocab_size - 4)
    with torch.device("meta"):
        model = UnitLanguageModel(cfg, dictionary)
    return model.num_parameters()


def render(breakdown: dict[str, int], frozen: int) -> str:
    """Plain-text table (the CLI renders the same numbers with rich)."""
    width = max(len(k) for k in [*breakdown, "trainable", "frozen LM"])
    lines = [f"{k:<{width}}  {v:>13,}" for k, v in breakdown.items()]
    lines += [f"{'trainable':<{width}}  {sum(breakdown.values()):>13,}", f"{'frozen LM':<{width}}  {frozen:>13,}"]
    return "\n".join(lines)
