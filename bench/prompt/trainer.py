"""Prompt tuning of a frozen unit LM: label-only cross-entropy, Adam, early stopping, greedy decoding.

Sequences follow fairseq's ``language_modeling`` task with ``--sample-break-mode eos`` on SpeechPrompt's LM lines
``<units> <s> <label tokens>`` (speechprompt.md §1.1 item 5): the input is ``</s> u_1..u_n <s> y_1..y_k`` and the
target the same line shifted left, ``u_1..u_n <s> y_1..y_k </s>``. The loss covers only the target positions from
the first ``<s>`` on — predicting ``<s>``, every label token and the final ``</s>`` (§2.2) — summed and divided by
their count. Optimiser: Adam β=(0.9, 0.98), lr 5e-3, gradient-norm clip 1.0, no schedule; model selection on the
validation loss with patience (§2.4). Batches are fairseq-train's (``--batch-size 32 --max-tokens 4096``: rows of
similar length, fixed for the run, their order reshuffled each epoch; :func:`bench.batching.fairseq_batches`).
Decoding is greedy with full recomputation at every step (§2.6).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bench.batching import fairseq_layout, shuffled
from bench.errors import BenchError
from bench.prompt.modules import PromptedLM
from bench.prompt.verbalizers import Verbalizer

IGNORE = -100


@dataclass
class TrainConfig:
    lr: float = 5e-3
    betas: tuple[float, float] = (0.9, 0.98)
    clip_norm: float = 1.0
    batch_size: int = 32  # fairseq --batch-size (max sentences per batch)
    max_tokens: int | None = 4096  # fairseq --max-tokens (rows × longest row)
    batch_multiple: int = 8  # fairseq --required-batch-size-multiple
    max_epochs: int = 100
    patience: int = 5  # validations without improvement before stopping (v1: 5, v2: 1)
    seed: int = 0


@dataclass
class Row:
    """One training/evaluation sequence: LM input tokens and per-position targets (IGNORE outside the label)."""

    inputs: list[int]
    targets: list[int]


def clip_source(source: Sequence[int], label_len: int, max_tokens: int) -> tuple[list[int], bool]:
    """Source tokens shortened (keeping the start) so ``</s> src <s> label`` fits the LM's positions."""
    room = max_tokens - 2 - label_len
    if room < 1:
        raise BenchError(f"a label of {label_len} tokens does not fit the LM's {max_tokens} positions")
    src = list(source)
    return (src[:room], True) if len(src) > room else (src, False)


def make_row(source: Sequence[int], label: str, verbalizer: Verbalizer, max_tokens: int) -> tuple[Row, bool]:
    """(row, truncated): input ``</s> src <s> label_in``, target ``IGNORE.. <s> label_out </s>``."""
    label_in = verbalizer.input_tokens(label)
    label_out = verbalizer.target_outputs(label)
    src, truncated = clip_source(source, len(label_in), max_tokens)
    bos_out = verbalizer.bos  # learnable outputs 0..3 are the fairseq specials, so <s> is slot 0 in both cases
    inputs = [verbalizer.eos, *src, verbalizer.bos, *label_in]
    targets = [IGNORE] * len(src) + [bos_out, *label_out, verbalizer.eos]
    assert len(inputs) == len(targets)
    return Row(inputs, targets), truncated


def collate(rows: Sequence[Row], pad: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (tokens, targets, padding_mask [True = pad])."""
    T = max(len(r.inputs) for r in rows)
    tokens = torch.full((len(rows), T), pad, dtype=torch.long)
    targets = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    mask = torch.ones((len(rows), T), dtype=torch.bool)
    for i, r in enumerate(rows):
        n = len(r.inputs)
        tokens[i, :n] = torch.tensor(r.inputs)
        targets[i, :n] = torch.tensor(r.targets)
        mask[i, :n] = False
    return tokens.to(device), targets.to(device), mask.to(device)


def label_loss(model: PromptedLM, rows: Sequence[Row], pad: int, device) -> tuple[torch.Tensor, int]:
    """(summed label-part cross-entropy, number of label tokens)."""
    tokens, targets, mask = collate(rows, pad, device)
    out = model(tokens, padding_mask=mask)
    loss = F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")
    return loss, int((targets != IGNORE).sum())


def _batches(n: int, batch_size: int, order: Sequence[int]) -> list[list[int]]:
    order = list(order)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def row_batches(rows: Sequence[Row], cfg: TrainConfig) -> tuple[list[list[int]], dict]:
    """fairseq-train's batches of ``rows`` (sizes = input tokens, as fairseq's LM dataset counts them), and their
    description for the record."""
    return fairseq_layout([len(r.inputs) for r in rows], max_tokens=cfg.max_tokens, max_sentences=cfg.batch_size,
                          required_multiple=cfg.batch_multiple, seed=cfg.seed)


def evaluate_loss(model: PromptedLM, rows: Sequence[Row], pad: int, cfg: TrainConfig, device) -> float:
    """Mean label-token cross-entropy over ``rows`` (eval mode; the batching does not change the value)."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b in row_batches(rows, cfg)[0]:
            loss, n = label_loss(model, [rows[i] for i in b], pad, device)
            total += float(loss)
            count += n
    return total / max(count, 1)


def train_prompts(model: PromptedLM, train: Sequence[Row], valid: Sequence[Row], cfg: TrainConfig, pad: int,
                  device="cpu", log: Callable[[str], None] = print,
                  advance: Callable[[int], object] | None = None) -> dict:
    """Adam on the prompt parameters only; keeps the prompts of the best validation loss. Returns the history."""
    if not train:
        raise BenchError("prompt tuning needs training examples")
    params = [p for p in model.prompts.parameters() if p.requires_grad]
    for p in model.lm.parameters():
        if p.requires_grad:
            raise BenchError("the unit LM must be frozen before prompt tuning (found a trainable LM weight)")
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)
    layout, layout_info = row_batches(train, cfg)
    best, best_state, best_epoch, bad = math.inf, copy.deepcopy(model.prompts.state_dict()), 0, 0
    train_losses, valid_losses = [], []
    epoch = 0
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        total, count = 0.0, 0
        for b in shuffled(layout, cfg.seed + epoch):
            loss, n = label_loss(model, [train[i] for i in b], pad, device)
            opt.zero_grad(set_to_none=True)
            (loss / max(n, 1)).backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
            opt.step()
            total += float(loss.detach())
            count += n
        train_losses.append(total / max(count, 1))
        v = evaluate_loss(model, valid, pad, cfg, device)
        valid_losses.append(v)
        if advance:
            advance(1)
        if v < best - 1e-6:
            best, best_epoch, bad = v, epoch, 0
            best_state = copy.deepcopy(model.prompts.state_dict())
        else:
            bad += 1
            if bad >= cfg.patience:
                log(f"  early stop at epoch {epoch} (best valid loss {best:.4f} at epoch {best_epoch})")
                break
    model.prompts.load_state_dict(best_state)
    model.eval()
    return {"epochs_run": epoch, "best_epoch": best_epoch, "best_valid_loss": best,
            "batching": layout_info,
            "train_loss": [round(x, 5) for x in train_losses], "valid_loss": [round(x, 5) for x in valid_losses]}


@dataclass
class Decoded:
    outputs: list[int]  # verbalizer outputs generated before </s>
    first_logprobs: np.ndarray  # log-probabilities over the outputs at the first label step
    finished: bool  # stopped at </s> (False: hit max_len)


@torch.no_grad()
def greedy_decode(model: PromptedLM, sources: Sequence[Sequence[int]], verbalizer: Verbalizer, max_len: int,
                  max_tokens: int, batch_size: int = 32, device="cpu") -> list[Decoded]:
    """Greedy generation after ``</s> src <s>``, full recomputation per step (incremental decoding is disabled in
    SpeechPrompt); each generated output is fed back as its LM token. Right padding, explicit lengths."""
    model.eval()
    results: list[Decoded | None] = [None] * len(sources)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    for b in _batches(len(sources), batch_size, order):
        prefixes = []
        for i in b:
            src, _ = clip_source(sources[i], max_len, max_tokens)
            prefixes.append([verbalizer.eos, *src, verbalizer.bos])
        B = len(b)
        lengths = torch.tensor([len(p) for p in prefixes])
        buf = torch.full((B, int(lengths.max()) + max_len), verbalizer.eos, dtype=torch.long)
        for r, p in enumerate(prefixes):
            buf[r, :len(p)] = torch.tensor(p)
        done = torch.zeros(B, dtype=torch.bool)
        outs: list[list[int]] = [[] for _ in range(B)]
        first = None
        for _ in range(max_len):
            T = int(lengths.max())
            pad_mask = torch.arange(T)[None, :] >= lengths[:, None]
            scores = model(buf[:, :T].to(device), padding_mask=pad_mask.to(device))
            last = scores[torch.arange(B), (lengths - 1).to(scores.device)].float().log_softmax(-1).cpu()
            if first is None:
                first = last.numpy()
            pred = last.argmax(-1)
            for r in range(B):
                if done[r]:
                    continue
                o = int(pred[r])
                if o == verbalizer.eos:
                    done[r] = True
                    continue
                outs[r].append(o)
                buf[r, lengths[r]] = verbalizer.output_to_token(o)
                lengths[r] += 1
            if bool(done.all()):
                break
        for r, i in enumerate(b):
            results[i] = Decoded(outs[r], first[r], bool(done[r]))
    return results  # type: ignore[return-value]


def to_predictions(decoded: Sequence[Decoded], verbalizer: Verbalizer, with_scores: bool):
    """(hypotheses, per-class first-step log-probabilities or None, unmapped count).

    A classification output that is no label (another unit, a special, too many/few symbols) is the empty
    string: scored wrong, and counted in ``unmapped``; for generation, unmapped outputs are dropped from the text
    and the utterance is counted."""
    hyps, scores, unmapped = [], [], 0
    for d in decoded:
        label, ok = verbalizer.decode(d.outputs)
        if not d.finished and verbalizer.space.kind != "text":
            label, ok = None, False
        if label is None or not ok:
            unmapped += 1
        hyps.append(label if label is not None else "")
        if with_scores:
            scores.append({sym: float(d.first_logprobs[o]) for sym, o in zip(verbalizer.space.symbols,
                                                                               verbalizer.outputs)})
    return hyps, (scores if with_scores else None), unmapped
