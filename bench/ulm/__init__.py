"""Unit language models: GSLM's ULM (``model``, ``checkpoint``, ``pretrain``) and pGSLM's MS-TLM (``multistream``).

Submodules import torch; import them explicitly (``from bench.ulm.model import UnitLanguageModel``)."""
