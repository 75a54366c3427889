"""Unit language models: GSLM's ULM (``model``, ``checkpoint``, ``pretrain``), pGSLM's MS-TLM (``multistream``,
``multistream_checkpoint``), their shared fairseq checkpoint I/O (``fairseq_io``), and the offline stand-ins
bench builds or ships (``default_lm``, ``default_pgslm``, ``shipped``).

Submodules import torch; import them explicitly (``from bench.lms.model import UnitLanguageModel``)."""
