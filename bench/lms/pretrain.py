"""Pretraining a GSLM unit LM on deduplicated units, the way GSLM's ``fairseq-train`` recipe does
(fairseq ``examples/textless_nlp/gslm/ulm/README.md:31-53``):

- data: ``--task language_modeling --sample-break-mode eos``: one utterance per sample, input ``</s> u_1 … u_n``,
  target ``u_1 … u_n </s>`` (fairseq's TokenBlockDataset prepends the eos as the start symbol); utterances longer
  than ``max_positions`` are cut into consecutive chunks;
- loss: next-unit cross-entropy summed over real targets, normalised by the number of target tokens;
- optimiser: Adam β=(0.9, 0.98), ε=1e-8, clip-norm 1.0, inverse-sqrt schedule with linear warm-up from 1e-7
  (fairseq ``inverse_sqrt``), dropout 0.1 and attention dropout 0.1;
- batches: fairseq-train's (``--max-tokens batch_tokens``: size-sorted, fixed, reshuffled per epoch;
  :func:`bench.methods.batching.fairseq_batches`);
- the checkpoint of the best validation loss is written in fairseq-train's layout (``bench.lms.checkpoint``), with
  its epoch and update count, so a model trained here loads exactly like an imported GSLM release.

Everything random is seeded: the same sequences, config and seed give the same weights.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from bench.methods.batching import fairseq_batches, shuffled
from bench.core.errors import BenchError
from bench.lms.model import UnitDictionary, UnitLMConfig


def inverse_sqrt_lr(update: int, lr: float, warmup: int, warmup_init_lr: float = 1e-7) -> float:
    """fairseq ``inverse_sqrt``: linear warm-up from ``warmup_init_lr`` to ``lr`` over ``warmup`` updates, then
    ``lr·sqrt(warmup / update)``."""
    if update < warmup:
        return warmup_init_lr + update * (lr - warmup_init_lr) / warmup
    return lr * math.sqrt(warmup) / math.sqrt(max(update, 1))


def encode_sequences(sequences: Sequence[Sequence[int]], dictionary: UnitDictionary,
                     max_positions: int) -> list[list[int]]:
    """Unit ids → dictionary indices followed by ``</s>``, in chunks of at most ``max_positions`` tokens; refuses
    sequences that are not deduplicated (GSLM's ULM sees runs collapsed) or hold unknown units."""
    out = []
    for n, seq in enumerate(sequences):
        seq = [int(u) for u in seq]
        if not seq:
            continue
        if any(a == b for a, b in zip(seq, seq[1:])):
            raise BenchError(f"pretrain_unit_lm: sequence {n} repeats a unit on consecutive steps; the ULM is "
                             "trained on deduplicated units (bench.units.dedup)")
        tokens = [dictionary.unit_to_index(u) for u in seq] + [dictionary.eos]
        out += [tokens[i:i + max_positions] for i in range(0, len(tokens), max_positions)]
    return out


def _collate(samples: list[list[int]], idx: list[int], eos: int, pad: int):
    import torch

    T = max(len(samples[i]) for i in idx)
    src = torch.full((len(idx), T), pad, dtype=torch.long)
    tgt = torch.full((len(idx), T), pad, dtype=torch.long)
    for b, i in enumerate(idx):
        s = samples[i]
        src[b, 0] = eos
        src[b, 1:len(s)] = torch.tensor(s[:-1])
        tgt[b, :len(s)] = torch.tensor(s)
    return src, tgt


def pretrain_unit_lm(sequences: Sequence[Sequence[int]], cfg: UnitLMConfig, out_dir: Path, seed: int = 0, *,
                     max_epochs: int | None = 20, max_steps: int | None = None, valid_fraction: float = 0.05,
                     lr: float = 5e-4, batch_tokens: int = 4096, warmup_updates: int | None = None,
                     warmup_init_lr: float = 1e-7, dropout: float = 0.1, attention_dropout: float = 0.1,
                     clip_norm: float = 1.0, dictionary: UnitDictionary | None = None, device: str = "cpu",
                     advance: Callable[[int], None] | None = None,
                     log: Callable[[str], None] | None = None) -> Path:
    """Train a unit LM from scratch on ``sequences`` (deduplicated unit ids) and write ``checkpoint_best.pt`` +
    ``dict.txt`` into ``out_dir``; returns the checkpoint path.

    Stops after ``max_epochs`` epochs or ``max_steps`` updates, whichever comes first. ``warmup_updates`` defaults
    to GSLM's 4000, capped at 10% of the planned updates so short runs still reach the peak ``lr``.
    ``advance(n)`` is called after every n updates (progress)."""
    import torch

    from bench.lms.checkpoint import save_unit_lm
    from bench.lms.model import UnitLanguageModel

    if max_epochs is None and max_steps is None:
        raise BenchError("pretrain_unit_lm: give max_epochs or max_steps")
    if not 0.0 <= valid_fraction < 1.0:
        raise BenchError(f"pretrain_unit_lm: valid_fraction must be in [0, 1), got {valid_fraction}")
    dictionary = dictionary or UnitDictionary.from_units(cfg.vocab_size - 4)
    if len(dictionary) != cfg.vocab_size:
        raise BenchError(f"pretrain_unit_lm: dictionary of {len(dictionary)} symbols for vocab_size {cfg.vocab_size}")
    samples = encode_sequences(sequences, dictionary, cfg.max_positions)
    if len(samples) < 2:
        raise BenchError(f"pretrain_unit_lm: need at least 2 non-empty unit sequences, got {len(samples)}")

    rng = random.Random(seed)
    order = list(range(len(samples)))
    rng.shuffle(order)
    n_valid = min(len(samples) - 1, max(1, round(valid_fraction * len(samples)))) if valid_fraction > 0 else 0
    valid = [samples[i] for i in sorted(order[:n_valid])]
    train = [samples[i] for i in sorted(order[n_valid:])]
    for n in (len(x) for x in train + valid):
        if n > batch_tokens:
            raise BenchError(f"pretrain_unit_lm: a sample of {n} tokens exceeds batch_tokens={batch_tokens}")
    train_batches = fairseq_batches([len(x) for x in train], max_tokens=batch_tokens, max_sentences=None, seed=seed)
    valid_batches = fairseq_batches([len(x) for x in valid], max_tokens=batch_tokens, max_sentences=None, seed=seed)
    epochs = max_epochs if max_epochs is not None else math.ceil(max_steps / len(train_batches))
    planned = epochs * len(train_batches) if max_steps is None else min(max_steps, epochs * len(train_batches))
    warmup = warmup_updates if warmup_updates is not None else max(1, min(4000, planned // 10))

    torch.manual_seed(seed)
    model_cfg = replace(cfg, dropout=dropout, attention_dropout=attention_dropout)
    model = UnitLanguageModel(model_cfg, dictionary).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=warmup_init_lr, betas=(0.9, 0.98), eps=1e-8)
    pad, eos = dictionary.pad, dictionary.eos

    def batch_loss(idx, data):
        src, tgt = (t.to(device) for t in _collate(data, idx, eos, pad))
        logits = model(src, padding_mask=src.eq(pad))
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), tgt.reshape(-1),
                                                 ignore_index=pad, reduction="sum"), int(tgt.ne(pad).sum())

    def evaluate() -> float:
        if not valid_batches:
            return float("nan")
        model.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for idx in valid_batches:
                loss, k = batch_loss(idx, valid)
                total, n = total + float(loss), n + k
        model.train()
        return total / n

    history, best, best_state, updates, started = [], math.inf, None, 0, time.time()
    for epoch in range(1, epochs + 1):
        model.train()
        total, n = 0.0, 0
        for idx in shuffled(train_batches, seed + epoch):
            loss, k = batch_loss(idx, train)
            opt.zero_grad(set_to_none=True)
            (loss / k).backward()
            if clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            opt.step()
            updates += 1
            for group in opt.param_groups:
                group["lr"] = inverse_sqrt_lr(updates, lr, warmup, warmup_init_lr)
            total, n = total + float(loss.detach()), n + k
            if advance is not None:
                advance(1)
            if max_steps is not None and updates >= max_steps:
                break
        val = evaluate()
        history.append({"epoch": epoch, "num_updates": updates, "train_loss": total / max(n, 1), "valid_loss": val})
        if log is not None:
            log(f"ulm pretrain epoch {epoch}: train {total / max(n, 1):.4f} valid {val:.4f} nats/token "
                f"({updates} updates)")
        # checkpoint_best: lowest validation loss (the last epoch when there is no validation split)
        if not valid_batches or val < best:
            best = val
            best_state = {"epoch": epoch, "num_updates": updates,
                          "weights": {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}}
        if max_steps is not None and updates >= max_steps:
            break

    model.load_state_dict(best_state["weights"])
    model.to("cpu").eval()
    extra = {"epoch": best_state["epoch"], "num_updates": best_state["num_updates"],
             "val_loss": None if math.isnan(best) else best / math.log(2),  # fairseq logs loss in bits
             "training_time": time.time() - started,
             "pretrain": {"seed": seed, "lr": lr, "batch_tokens": batch_tokens, "warmup_updates": warmup,
                          "warmup_init_lr": warmup_init_lr, "dropout": dropout,
                          "attention_dropout": attention_dropout, "clip_norm": clip_norm,
                          "valid_fraction": valid_fraction, "train_samples": len(train),
                          "valid_samples": len(valid), "history": history}}
    return save_unit_lm(model, Path(out_dir), extra=extra)
