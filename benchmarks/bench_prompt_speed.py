"""Speed of one prompt-tuning step on GSLM's frozen ULM: bench's UnitLanguageModel vs fairseq's own
TransformerLanguageModel, same weights, same batch (transformer_lm_big, vocab 104, B=8, T=128 by default).

  .venv/bin/python benchmarks/bench_prompt_speed.py [--batch 8] [--length 128] [--prompt-length 5] [--steps 5]
                                                     [--device cpu|cuda] [--bf16] [--size big|small] [--isolate]

Measured with the implementations' steps interleaved in one process (so the VM's speed drift hits all alike;
peak memory is then the process's), or with ``--isolate`` each in its own subprocess (peak RSS its own):
- ``ours``: input + deep prompts trainable (SpeechPrompt §2.1), every LM weight ``requires_grad=False``,
  forward + backward of the next-unit cross-entropy (SDPA attention, no weight gradients);
- ``fairseq-frozen``: fairseq's forward + backward with only the embedding table trainable (the closest plain
  fairseq analogue of prompt tuning: gradients flow through every layer, no other weight gradients);
- ``fairseq-full``: fairseq's forward + backward with all weights trainable (what a non-frozen run pays).
Reported: median seconds per forward and per forward+backward, the ratio to ours, and peak memory (RSS on CPU,
``max_memory_allocated`` on CUDA). ``--bf16`` adds bf16 autocast on CUDA. Target: ours no slower than fairseq.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _fairseq_model(size: str, vocab_units: int):
    """fairseq's TransformerLanguageModel, built the way fairseq-train builds GSLM's ULM."""
    import tempfile

    warnings.filterwarnings("ignore")
    for name in ("fairseq", "hydra", "omegaconf"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    data = tempfile.mkdtemp(prefix="bench-speed-")
    Path(data, "dict.txt").write_text("".join(f"{u} 1\n" for u in range(vocab_units)))
    arch = ["--arch", "transformer_lm_big"] if size == "big" else [
        "--arch", "transformer_lm", "--decoder-layers", "2", "--decoder-embed-dim", "64", "--decoder-input-dim", "64",
        "--decoder-output-dim", "64", "--decoder-ffn-embed-dim", "256", "--decoder-attention-heads", "4"]
    args = options.parse_args_and_arch(options.get_training_parser(), [
        data, "--task", "language_modeling", *arch, "--decoder-normalize-before",
        "--share-decoder-input-output-embed", "--tokens-per-sample", "3072", "--dropout", "0.0", "--cpu"])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    return task.build_model(cfg.model)


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _peak(device) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux → MiB


def build(impl: str, fs, a):
    """(forward, trainable count, set_flags) for one implementation on fairseq's model ``fs``; ``ours`` takes
    fairseq's tensors over (assign): one copy of the weights in memory, the same numbers in both."""
    import torch
    import torch.nn.functional as F

    from bench.lms.model import UnitLanguageModel, UnitLMConfig

    V = len(fs.decoder.dictionary)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(4, V, (a.batch, a.length), generator=g).to(a.device)
    if impl == "ours":
        c = fs.decoder.layers[0]
        cfg = UnitLMConfig(vocab_size=V, num_layers=len(fs.decoder.layers), embed_dim=fs.decoder.embed_dim,
                           num_heads=c.self_attn.num_heads, ffn_dim=c.fc1.out_features)
        with torch.device("meta"):
            model = UnitLanguageModel(cfg)
        model.load_state_dict({k[len("decoder."):]: v for k, v in fs.state_dict(keep_vars=True).items()
                               if k[len("decoder."):] in model.state_dict()}, strict=True, assign=True)
        model.to(a.device).eval()
        d, L = cfg.embed_dim, a.prompt_length
        prompt = torch.nn.Parameter(torch.randn(1, L, d, device=a.device))
        deep = [(torch.nn.Parameter(torch.randn(L, d, device=a.device)),
                 torch.nn.Parameter(torch.randn(L, d, device=a.device))) for _ in range(cfg.num_layers)]
        trainable = sum(p.numel() for p in [prompt, *[t for kv in deep for t in kv]])

        def set_flags():
            for p in fs.parameters():
                p.requires_grad_(False)

        def forward():
            drop = [(F.dropout(k, 0.1, True), F.dropout(v, 0.1, True)) for k, v in deep]
            return model(tokens, input_prompt=F.dropout(prompt, 0.1, True), deep_prompts=drop)
    else:
        def set_flags():
            for name, p in fs.named_parameters():
                p.requires_grad_(impl == "fairseq-full" or name == "decoder.embed_tokens.weight")

        set_flags()
        trainable = sum(p.numel() for p in fs.parameters() if p.requires_grad)

        def forward():
            return fs(tokens)[0]
    return tokens, forward, trainable, set_flags


def time_impls(impls: list[str], a) -> dict:
    """Median seconds per forward and per forward+backward of each implementation, their steps interleaved
    (ours, fairseq, ours, ...) so that the drift of a shared VM's speed hits every implementation alike."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    fs = _fairseq_model(a.size, 100).to(a.device).eval()
    V = len(fs.decoder.dictionary)
    built = {impl: build(impl, fs, a) for impl in impls}
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if a.bf16 and a.device == "cuda"
                else torch.autocast("cpu", enabled=False))

    def step(impl: str, backward: bool) -> None:
        tokens, forward, _, set_flags = built[impl]
        set_flags()
        with autocast:
            logits = forward()
            loss = F.cross_entropy(logits.float().reshape(-1, V), tokens.roll(-1, dims=1).reshape(-1))
        if backward:
            loss.backward()
            for p in fs.parameters():
                p.grad = None

    times = {impl: ([], []) for impl in impls}
    for i in range(a.warmup + a.steps):
        for impl in impls:
            _sync(a.device)
            t0 = time.perf_counter()
            with torch.no_grad():
                step(impl, False)
            _sync(a.device)
            t1 = time.perf_counter()
            step(impl, True)
            _sync(a.device)
            t2 = time.perf_counter()
            if i >= a.warmup:
                times[impl][0].append(t1 - t0)
                times[impl][1].append(t2 - t1)
    return {impl: {"impl": impl, "forward_s": statistics.median(f), "step_s": statistics.median(s),
                   "forward_runs": [round(x, 3) for x in f], "step_runs": [round(x, 3) for x in s],
                   "peak_mib": _peak(a.device), "trainable": built[impl][2], "threads": torch.get_num_threads()}
            for impl, (f, s) in times.items()}


def run_one(impl: str, a) -> dict:
    """One implementation alone in this process (for its own peak memory)."""
    return time_impls([impl], a)[impl]


def throughput(a) -> dict:
    """Utterances per second of bench's own prompt-tuning code on the LM config (training step = trainer's
    label loss + backward + clip + Adam; decoding = greedy_decode of a 12-class label), and of the linear
    baseline's SUPERB head on the same B utterances as HuBERT-Base-sized features (13 layers x 768, T frames)."""
    import numpy as np
    import torch

    from bench.methods.linear import build_head
    from bench.prompt.modules import PromptedLM, PromptSet
    from bench.prompt.trainer import greedy_decode, label_loss, make_row
    from bench.prompt.verbalizers import ClassLabels, build_verbalizer
    from bench.lms.model import UnitLanguageModel, UnitLMConfig

    torch.manual_seed(0)
    cfg = (UnitLMConfig.transformer_lm_big(104) if a.size == "big" else UnitLMConfig.tiny(104))
    lm = UnitLanguageModel(cfg).to(a.device).eval()
    for p in lm.parameters():
        p.requires_grad_(False)
    d = lm.dictionary
    g = np.random.default_rng(0)
    labels = [f"c{i}" for i in range(12)]
    sources = [list(g.integers(4, len(d), a.length - 4)) for _ in range(a.batch)]
    targets = [labels[i % 12] for i in range(a.batch)]
    verbalizer = build_verbalizer("random", ClassLabels(labels), d, [np.array(x) - 4 for x in sources], targets, 0)
    prompts = PromptSet(cfg.num_layers, cfg.embed_dim, a.prompt_length, True,
                        separator_init=lm.embed_tokens.weight[d.bos].detach()).to(a.device)
    model = PromptedLM(lm, prompts, d.bos)
    rows = [make_row(src, y, verbalizer, cfg.max_positions)[0] for src, y in zip(sources, targets)]
    params = [p for p in prompts.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=5e-3, betas=(0.9, 0.98))

    def train_step():
        model.train()
        loss, n = label_loss(model, rows, d.pad, a.device)
        opt.zero_grad(set_to_none=True)
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    def decode():
        greedy_decode(model, sources, verbalizer, max_len=3, max_tokens=cfg.max_positions, batch_size=a.batch,
                      device=a.device)

    head = build_head(13, 768, 12).to(a.device)
    feats = [torch.randn(a.batch, a.length, 768, device=a.device) for _ in range(13)]
    lens = [torch.full((a.batch,), a.length, device=a.device)] * 13
    y = torch.randint(0, 12, (a.batch,), device=a.device)
    hopt = torch.optim.Adam(head.parameters(), lr=1e-3)

    def linear_step():
        loss = torch.nn.functional.cross_entropy(head(feats, lens), y)
        hopt.zero_grad(set_to_none=True)
        loss.backward()
        hopt.step()

    def linear_infer():
        with torch.no_grad():
            head(feats, lens).argmax(-1)

    out = {}
    for name, fn in (("prompt train", train_step), ("prompt decode", decode), ("linear train", linear_step),
                     ("linear infer", linear_infer)):
        fn()
        runs = []
        for _ in range(a.steps):
            _sync(a.device)
            t0 = time.perf_counter()
            fn()
            _sync(a.device)
            runs.append(time.perf_counter() - t0)
        out[name] = a.batch / statistics.median(runs)
    out["peak_mib"] = _peak(a.device)
    out["trainable"] = {"prompt": sum(p.numel() for p in params), "linear": sum(p.numel() for p in head.parameters())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--prompt-length", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    ap.add_argument("--size", choices=("big", "small"), default="big", help="small: a 2x64 smoke-test model")
    ap.add_argument("--impls", default="ours,fairseq-frozen,fairseq-full")
    ap.add_argument("--isolate", action="store_true",
                    help="run each implementation in its own process, one after the other (each gets its own peak "
                         "memory figure; timings then also carry the machine's drift between the runs)")
    ap.add_argument("--no-throughput", action="store_true",
                    help="skip the utterances/s section (bench's prompt trainer and decoder vs the linear baseline)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one impl, print JSON
    a = ap.parse_args()
    if a.device is None:
        import torch

        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.one == "throughput":
        print("RESULT " + json.dumps(throughput(a)))
        return
    if a.one:
        print("RESULT " + json.dumps(run_one(a.one, a)))
        return
    results = {}
    if not a.isolate:
        results = time_impls(a.impls.split(","), a)
    for impl in a.impls.split(",") if a.isolate else []:
        argv = [sys.executable, __file__, "--one", impl, "--batch", str(a.batch), "--length", str(a.length),
                "--prompt-length", str(a.prompt_length), "--steps", str(a.steps), "--warmup", str(a.warmup),
                "--device", a.device, "--size", a.size] + (["--bf16"] if a.bf16 else [])
        out = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode or not line:
            sys.exit(f"{impl} failed:\n{out.stderr[-3000:]}")
        results[impl] = json.loads(line[-1][len("RESULT "):])
    ours = results.get("ours")
    print(f"GSLM ULM ({a.size}) prompt step, B={a.batch} T={a.length} L={a.prompt_length}, device={a.device}"
          f"{' bf16' if a.bf16 else ''}, threads={next(iter(results.values()))['threads']}, "
          f"median of {a.steps} steps, {'each in its own process' if a.isolate else 'interleaved in one process'}")
    print(f"{'impl':<16} {'forward s':>10} {'fwd+bwd s':>10} {'vs ours':>8} {'peak MiB':>9} {'trainable':>12}")
    for impl, r in results.items():
        ratio = f"{r['step_s'] / ours['step_s']:.2f}x" if ours else "-"
        print(f"{impl:<16} {r['forward_s']:>10.3f} {r['step_s']:>10.3f} {ratio:>8} {r['peak_mib']:>9.0f} "
              f"{r['trainable']:>12,}")
    if not a.no_throughput:
        argv = [sys.executable, __file__, "--one", "throughput", "--batch", str(a.batch), "--length", str(a.length),
                "--prompt-length", str(a.prompt_length), "--steps", str(a.steps), "--device", a.device,
                "--size", a.size]
        out = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode or not line:
            sys.exit(f"throughput failed:\n{out.stderr[-3000:]}")
        tp = json.loads(line[-1][len("RESULT "):])
        results["throughput"] = tp
        print(f"throughput, same B={a.batch} utterances (T={a.length}), own process: "
              f"prompt tuning ({tp['trainable']['prompt']:,} trainable) train {tp['prompt train']:.2f} utt/s, "
              f"decode {tp['prompt decode']:.2f} utt/s; linear baseline on 13x768 features "
              f"({tp['trainable']['linear']:,} trainable) train {tp['linear train']:.0f} utt/s, "
              f"infer {tp['linear infer']:.0f} utt/s; peak {tp['peak_mib']:.0f} MiB")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
