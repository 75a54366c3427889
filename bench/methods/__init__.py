"""Methods: each one file with one small interface (``bench.methods.base.Method``).

Looked up by name lazily, so ``bench --help`` and ``bench tasks`` never import torch.
"""

from __future__ import annotations

import difflib
import importlib

from bench.core.errors import BenchError

# name -> "module:Class". A new method is one file plus one line here.
METHODS: dict[str, str] = {
    "linear": "bench.methods.linear:LinearBaseline",
    "lstm": "bench.methods.lstm_ctc:LSTMCTCBaseline",
    "prompt-gslm": "bench.methods.prompt_gslm:PromptGSLM",
    "prompt-gslm-lv": "bench.methods.prompt_gslm:PromptGSLMLearnableVerbalizer",
    "prompt-pgslm": "bench.methods.prompt_pgslm:PromptPGSLM",
    "prompt-pgslm-lv": "bench.methods.prompt_pgslm:PromptPGSLMLearnableVerbalizer",
}


def available_methods() -> list[str]:
    """Methods whose module exists in this checkout."""
    out = []
    for name, target in METHODS.items():
        module = target.split(":")[0]
        if importlib.util.find_spec(module) is not None:
            out.append(name)
    return out


def method_class(name: str):
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise BenchError(f"unknown method '{name}'{hint}; known: {', '.join(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def select_methods(expr: str) -> list[str]:
    if expr.strip() == "all":
        return available_methods()
    names = [m.strip() for m in expr.split(",") if m.strip()]
    for n in names:
        method_class(n)  # validates, with "did you mean"
    return names
