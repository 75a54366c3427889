"""The GPU path in one short run (issue #16): prints figures, asserts nothing. Run by ``benchmarks/gpu_check.sh``.

1. feature extraction: the default upstream (Whisper tiny.en's encoder, every hidden state) on 1-s clips in
   batches of 32, x real time (audio seconds / wall seconds), fp32 and bf16 autocast;
2. one prompt-tuning step (forward + backward, input + deep prompts trainable, LM frozen) on GSLM's ULM
   architecture ``transformer_lm_big`` (12 x 1024, 16 heads, FFN 4096, V = 104: 151 M parameters, randomly
   initialised: the weights cannot be downloaded here; the speed does not depend on them), B = 8, T = 128,
   fp32 vs bf16 autocast, with peak memory;
3. one step of the LSTM-CTC head (SUPERB's ASR head shape, ``size`` superb: 2 x 1024 BiLSTM) on 5 x T x 384
   features, B = 16, T = 500 (10 s at 50 Hz), fp32 and bf16.

    .venv/bin/python benchmarks/gpu_check.py [--device cuda] [--quick]

``--quick`` shrinks every size (a smoke run of the script itself on a CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, steps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_mb(device: str) -> float | None:
    import torch

    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def features(device: str, quick: bool) -> dict:
    import numpy as np
    import torch

    from bench.features.upstream import build_upstream

    enc = build_upstream("whisper_tiny_en", None, device)
    rng = np.random.default_rng(0)
    n_clips, batch = (8, 4) if quick else (256, 32)
    clips = [(0.1 * rng.standard_normal(16000)).astype(np.float32) for _ in range(n_clips)]
    batches = [clips[i: i + batch] for i in range(0, n_clips, batch)]
    out = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        def run():
            with torch.autocast(device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None):
                for b in batches:
                    enc(b)
        wall = _timed(run, device, steps=1 if quick else 3)
        out[name] = {"x_real_time": round(n_clips / wall, 1), "wall_s": round(wall, 3)}
    return out


def prompt_step(device: str, quick: bool) -> dict:
    import torch

    from bench.lms.model import UnitLanguageModel, UnitLMConfig

    cfg = UnitLMConfig.transformer_lm_big(vocab_size=104) if not quick else UnitLMConfig(
        vocab_size=104, num_layers=2, embed_dim=64, num_heads=4, ffn_dim=128)
    torch.manual_seed(0)
    lm = UnitLanguageModel(cfg).to(device).eval()
    for p in lm.parameters():
        p.requires_grad_(False)
    batch, length, plen = (2, 32, 5) if quick else (8, 128, 5)
    d = cfg.embed_dim
    prompt = torch.nn.Parameter(torch.randn(1, plen, d, device=device))
    deep = [(torch.nn.Parameter(torch.randn(plen, d, device=device)),
             torch.nn.Parameter(torch.randn(plen, d, device=device))) for _ in range(cfg.num_layers)]
    tokens = torch.randint(4, 104, (batch, length), device=device)
    opt = torch.optim.Adam([prompt, *[t for kv in deep for t in kv]], lr=5e-3)
    def loss():
        logits = lm(tokens, input_prompt=prompt, deep_prompts=deep)  # SpeechPrompt's input + deep prompts
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                                 tokens[:, 1:].reshape(-1))

    return {"parameters_M": round(sum(p.numel() for p in lm.parameters()) / 1e6, 1),
            **_steps_fp32_bf16(loss, opt, device, quick)}


def _steps_fp32_bf16(loss_fn, opt, device: str, quick: bool) -> dict:
    """Median seconds and peak memory of one optimiser step (forward under autocast, backward, update), fp32 and
    bf16."""
    import torch

    out = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        _reset_peak(device)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = loss_fn()
            loss.backward()
            opt.step()
        wall = _timed(step, device, steps=2 if quick else 10)
        out[name] = {"step_s": round(wall, 4), "peak_mb": _peak_mb(device)}
    return out


def lstm_step(device: str, quick: bool) -> dict:
    import torch

    from bench.methods.lstm_ctc import build_ctc_head

    layers, hidden = 5, 384
    batch, frames = (2, 50) if quick else (16, 500)
    proj, lstm_hidden = (64, 64) if quick else (1024, 1024)
    torch.manual_seed(0)
    head = build_ctc_head(layers, hidden, vocab_size=32, project_dim=proj, lstm_hidden=lstm_hidden).to(device)
    feats = torch.randn(layers, batch, frames, hidden, device=device)
    lens = torch.full((batch,), frames, dtype=torch.long, device=device)
    ys = torch.randint(1, 32, (batch, frames // 4), device=device)
    opt = torch.optim.Adam(head.parameters(), lr=1e-4)
    def loss():
        logits, out_lens = head(list(feats), [lens] * layers)
        logp = logits.float().log_softmax(-1).transpose(0, 1)
        return torch.nn.functional.ctc_loss(logp, ys, out_lens, torch.full_like(lens, ys.shape[1]))

    return {"parameters_M": round(sum(p.numel() for p in head.parameters()) / 1e6, 1),
            **_steps_fp32_bf16(loss, opt, device, quick)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of the script on a CPU")
    args = ap.parse_args()
    import torch

    from bench.results.records import device_description

    report = {"device": device_description(args.device), "torch": torch.__version__, "quick": args.quick}
    for name, fn in (("features_whisper_tiny_en", features), ("prompt_step_transformer_lm_big", prompt_step),
                     ("lstm_ctc_step", lstm_step)):
        start = time.perf_counter()
        report[name] = fn(args.device, args.quick)
        report[name]["measured_in_s"] = round(time.perf_counter() - start, 1)
        print(name, json.dumps(report[name]), flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
