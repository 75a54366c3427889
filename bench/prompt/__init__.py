"""Prompt tuning of a frozen unit LM (SpeechPrompt v1/v2): one engine (``engine``, ``trainer``) over the
``unit_lm.UnitLM`` protocol (GSLM ULM, pGSLM MS-TLM), with what trains behind the ``adapters.Adapter`` seam
(SpeechPrompt's prompts: ``modules.PromptSet``), and verbalizers (the offline default LMs are in ``bench.lms``).

Import the submodules directly (``bench.prompt.modules`` imports torch)."""
