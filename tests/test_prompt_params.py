"""Prompt parameters equal 25,600·L + 1,024 on GSLM's 12×1024 ULM (+104·(C+4) with the learnable verbalizer),
for the formula, for the modules actually built, and for `bench params` (SpeechPrompt §2.3)."""

from __future__ import annotations

import pytest

from bench.results.params import gslm_prompt_parameters, prompt_breakdown, render


@pytest.mark.parametrize("L, expected", [(1, 26_624), (2, 52_224), (3, 77_824), (5, 129_024), (6, 154_624),
                                         (175, 4_481_024)])
def test_gslm_formula_matches_published_counts(L, expected):
    parts = prompt_breakdown(12, 1024, L)
    assert sum(parts.values()) == expected == 25_600 * L + 1_024 == gslm_prompt_parameters(L)
    assert parts == {"input_prompt": 1024 * L, "deep_prompts": 2 * 12 * 1024 * L, "separator": 1024}


def test_input_only_and_learnable_verbalizer_counts():
    assert sum(prompt_breakdown(12, 1024, 5, deep=False).values()) == 6_144
    lv = prompt_breakdown(12, 1024, 5, vocab_size=104, verbalizer_outputs=12 + 4)
    assert lv["verbalizer"] == 104 * 16
    assert sum(lv.values()) == gslm_prompt_parameters(5, num_classes=12) == 129_024 + 1_664
    assert "verbalizer" in render(lv, 151_263_232)


@pytest.mark.parametrize("layers, dim, L, deep, outputs", [(12, 1024, 5, True, None), (12, 1024, 6, True, 28),
                                                           (2, 16, 3, True, 7), (3, 8, 1, False, None)])
def test_prompt_modules_have_exactly_the_formula_parameters(layers, dim, L, deep, outputs):
    from bench.prompt.modules import PromptSet

    vocab = 104
    ps = PromptSet(layers, dim, L, deep, vocab_size=vocab, verbalizer_outputs=outputs)
    assert ps.breakdown() == prompt_breakdown(layers, dim, L, deep, vocab, outputs)
    assert sum(p.numel() for p in ps.parameters()) == sum(ps.breakdown().values())


def test_frozen_gslm_ulm_size_without_weights():
    from bench.results.params import frozen_lm_parameters
    from bench.lms.model import UnitLMConfig

    assert frozen_lm_parameters(UnitLMConfig.transformer_lm_big(104)) == 151_263_232


def test_method_counts_parameters_without_training(bench_home):
    """`bench params -m prompt-gslm-lv -t builtin-ks`: offline default LM shape, C = 12 keywords/unknown/silence."""
    from bench.methods import method_class
    from bench.methods.base import RunContext
    from bench.lms.default_lm import DefaultLMConfig
    from bench.tasks.registry import TaskRegistry

    task = TaskRegistry().get("builtin-ks")
    ctx = RunContext(seed=0)
    cfg = DefaultLMConfig().lm_config()
    pc = method_class("prompt-gslm-lv")({"prompt_length": 6}).count_parameters(task, ctx)
    assert pc.breakdown == prompt_breakdown(cfg.num_layers, cfg.embed_dim, 6, True, cfg.vocab_size, 12 + 4)
    assert pc.trainable == pc.stored_per_task == sum(pc.breakdown.values()) and pc.frozen > 0
    pc2 = method_class("prompt-gslm")({"deep": False}).count_parameters(task, ctx)
    assert set(pc2.breakdown) == {"input_prompt", "separator"}
    assert not (bench_home / "models").exists()  # counting built nothing
