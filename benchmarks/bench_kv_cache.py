"""Greedy decoding speed: key/value cache vs SpeechPrompt's full recomputation per step (issue #13).

Decodes ``--tokens`` label tokens (default 200, no early </s>) after ``--source`` source units for ``--batch`` rows
with the engine's own ``greedy_decode`` both ways on the offline default's LM shape (``small``: 3 × 128) or
another (``tiny``, ``big`` = transformer_lm_big), for both LMs (GSLM ULM, pGSLM MS-TLM), checks the outputs are
identical, and prints seconds and the speed-up. Example::

    PYTHONPATH=. python benchmarks/bench_kv_cache.py --tokens 200 --batch 16
"""

from __future__ import annotations

import argparse
import time


def build(kind: str, size: str):
    import torch

    from bench.prompt.unit_lm import GSLMUnitLM, PGSLMUnitLM
    from bench.lms.model import UnitLanguageModel, UnitLMConfig
    from bench.lms.multistream import MultiStreamLMConfig, MultiStreamUnitLM

    torch.manual_seed(0)
    if kind == "gslm":
        maker = {"tiny": UnitLMConfig.tiny, "small": UnitLMConfig.small, "big": UnitLMConfig.transformer_lm_big}[size]
        lm = GSLMUnitLM(UnitLanguageModel(maker(104)))
    else:
        maker = {"tiny": MultiStreamLMConfig.tiny, "small": MultiStreamLMConfig.small,
                 "big": MultiStreamLMConfig.transformer_ulm_big}[size]
        lm = PGSLMUnitLM(MultiStreamUnitLM(maker(100)))
    lm.module.eval().requires_grad_(False)
    return lm


def run(kind: str, a) -> dict:
    import numpy as np
    import torch

    from bench.prompt.adapters import AdapterSpec
    from bench.prompt.modules import PromptedLM, PromptSet
    from bench.prompt.trainer import greedy_decode
    from bench.prompt.unit_lm import SourceUnits
    from bench.prompt.verbalizers import TextLabels, build_verbalizer

    torch.set_num_threads(a.threads)
    lm = build(kind, a.size)
    space = TextLabels.from_texts(["abcdefghijklmnopqrstuvwxyz '"])
    v = build_verbalizer("freq", space, lm.vocab, [np.arange(100)], ["abc"], seed=0)
    v.eos_out = -1  # never stop early: every row decodes exactly --tokens tokens
    torch.manual_seed(1)
    model = PromptedLM(lm, PromptSet.build(lm, AdapterSpec(a.prompt_length, True, "bos_row"), None)).eval()
    g = np.random.default_rng(0)
    sources = [SourceUnits(g.integers(0, 100, a.source), {"duration": g.integers(1, 5, a.source),
                                                           "f0": g.integers(0, 32, a.source)})
               for _ in range(a.batch)]
    out, times = {}, {}
    for cache in (True, False):  # warm-up (lazy imports, first-call kernel setup)
        greedy_decode(model, sources[:2], v, max_len=2, max_tokens=lm.max_positions, batch_size=2, cache=cache)
    for cache in (True, False):
        t0 = time.perf_counter()
        out[cache] = greedy_decode(model, sources, v, max_len=a.tokens, max_tokens=lm.max_positions,
                                   batch_size=a.batch, cache=cache)
        times[cache] = time.perf_counter() - t0
    same = [d.outputs for d in out[True]] == [d.outputs for d in out[False]]
    assert all(len(d.outputs) == a.tokens for d in out[True])
    return {"lm": lm.name, "kv_cache_s": round(times[True], 3), "full_recompute_s": round(times[False], 3),
            "speedup": round(times[False] / times[True], 2), "identical_outputs": same}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=("tiny", "small", "big"), default="small")
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--source", type=int, default=150, help="source units per row (builtin-asr: ~100-200)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--prompt-length", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lms", default="gslm,pgslm")
    a = p.parse_args(argv)
    print(f"greedy decoding of {a.tokens} tokens after {a.source} source units, batch {a.batch}, {a.size} LM, "
          f"{a.threads} threads")
    for kind in a.lms.split(","):
        r = run(kind, a)
        print(f"  {r['lm']:<14} KV cache {r['kv_cache_s']:8.2f} s   full recomputation {r['full_recompute_s']:8.2f} s"
              f"   speed-up {r['speedup']:6.2f}x   identical outputs: {r['identical_outputs']}")


if __name__ == "__main__":
    main()
