"""Prompt tuning of a frozen unit LM (SpeechPrompt v1/v2): prompt modules, verbalizers, trainer, default LM.

Import the submodules directly (``bench.prompt.modules`` imports torch)."""
