"""The prompt engine: label-only cross-entropy, Adam, early stopping, greedy decoding — for every
:class:`bench.prompt.unit_lm.UnitLM` and every :class:`bench.prompt.adapters.Adapter`.

Rows follow fairseq's ``language_modeling`` task with ``--sample-break-mode eos`` on SpeechPrompt's LM lines
``<units> <s> <label tokens>`` (v1 ``ulm_prompt/make_data.py:23``): the input is ``start u_1..u_n <s> y_1..y_k`` (the
start token is the LM's: ``</s>`` for GSLM, ``<s>`` for the MS-TLM) and the target the same line shifted left,
``u_2..u_n <s> y_1..y_k </s>``. The loss covers only the target positions from ``<s>`` on — predicting ``<s>``,
every label token and the final ``</s>`` (§2.2; SpeechPrompt-v2 GSLM/prompt/fairseq_usr/loss.py:80-93) — summed
and divided (``loss_normalization``) by all target tokens of the batch, as fairseq does (``sample_size =
ntokens``, loss.py:62-64; ``all_tokens``), or by the label-part tokens (``label_tokens``). Optimiser: Adam
β=(0.9, 0.98), lr 5e-3, gradient-norm clip 1.0, no schedule; model selection on the validation label loss with
patience (§2.4; ``stopping_rule``, :class:`EarlyStopping`); the untrained prompts are never selected (fairseq saves
``checkpoint_best`` after an epoch).
Batches are fairseq-train's (``--batch-size 32 --max-tokens 4096``; :func:`bench.methods.batching.fairseq_batches`).
Decoding is greedy (§2.6: ``--sampling-topk 1``) with a key/value cache (same outputs as SpeechPrompt's full
recomputation, which ``cache=False`` keeps).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bench.methods.batching import fairseq_layout, shuffled
from bench.core.errors import BenchError
from bench.prompt.modules import PromptedLM
from bench.prompt.unit_lm import Row, SourceUnits, split_lengths
from bench.prompt.verbalizers import Verbalizer

IGNORE = -100
LOSS_NORMALIZATIONS = ("all_tokens", "label_tokens")
STOPPING_RULES = ("bench", "fairseq")


@dataclass
class TrainConfig:
    lr: float = 5e-3
    betas: tuple[float, float] = (0.9, 0.98)
    clip_norm: float = 1.0
    batch_size: int = 32  # fairseq --batch-size (max sentences per batch)
    max_tokens: int | None = 4096  # fairseq --max-tokens (rows × longest row)
    batch_multiple: int = 8  # fairseq --required-batch-size-multiple
    max_epochs: int = 100
    patience: int = 0  # validations without improvement before stopping; 0 never stops (v1: 5, v2: 1)
    seed: int = 0
    loss_normalization: str = "label_tokens"  # "all_tokens": fairseq's sample_size = ntokens
    stopping_rule: str = "bench"  # "fairseq": the released code's selection and stopping (EarlyStopping)


def clip_source(source, label_len: int, max_tokens: int) -> tuple[list[int] | SourceUnits, bool]:
    """Source (tokens or :class:`SourceUnits`) shortened, keeping the start, so ``start src <s> label`` fits the
    LM's positions."""
    room = max_tokens - 2 - label_len
    if room < 1:
        raise BenchError(f"a label of {label_len} tokens does not fit the LM's {max_tokens} positions")
    if len(source) <= room:
        return (source if isinstance(source, SourceUnits) else list(source)), False
    return (source.clip(room) if isinstance(source, SourceUnits) else list(source)[:room]), True


def prefix_row(source, verbalizer: Verbalizer, max_tokens: int, label_len: int, lm=None) -> tuple[Row, bool]:
    """``start src <s>`` in ``lm``'s framing (``lm=None``: GSLM's ``</s> src <s>`` on LM tokens)."""
    src, truncated = clip_source(source, label_len, max_tokens)
    if lm is None:
        row = Row([verbalizer.eos, *src], [])
        row.sep = len(row.inputs)
        row.inputs.append(verbalizer.bos)
        return row, truncated
    row = lm.source_row(src)
    row.sep = len(row.inputs)
    lm.append(row, verbalizer.bos)
    return row, truncated


def make_row(source, label: str, verbalizer: Verbalizer, max_tokens: int, lm=None) -> tuple[Row, bool]:
    """(row, truncated): input ``start src <s> label_in``, target ``IGNORE.. <s> label_out </s>``."""
    label_in = verbalizer.input_tokens(label)
    row, truncated = prefix_row(source, verbalizer, max_tokens, len(label_in), lm)
    for t in label_in:
        if lm is None:
            row.inputs.append(t)
        else:
            lm.append(row, t)
    row.targets = [IGNORE] * (row.sep - 1) + [verbalizer.bos_out, *verbalizer.target_outputs(label),
                                              verbalizer.eos_out]
    assert len(row.inputs) == len(row.targets)
    return row, truncated


def collate_targets(rows: Sequence[Row], device) -> torch.Tensor:
    T = max(len(r.inputs) for r in rows)
    targets = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    for i, r in enumerate(rows):
        targets[i, :len(r.targets)] = torch.tensor(r.targets)
    return targets.to(device)


def label_loss(model: PromptedLM, rows: Sequence[Row], pad: int | None = None, device="cpu",
               normalization: str = "label_tokens") -> tuple[torch.Tensor, int]:
    """(summed label-part cross-entropy, its divisor: label tokens, or all target tokens with ``all_tokens``)."""
    batch = model.unit_lm.collate(rows, device)
    targets = collate_targets(rows, device)
    out = model(batch)
    loss = F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")
    if normalization == "all_tokens":
        return loss, int(sum(len(r.inputs) for r in rows))
    if normalization != "label_tokens":
        raise BenchError(f"loss_normalization must be one of {LOSS_NORMALIZATIONS}, got {normalization!r}")
    return loss, int((targets != IGNORE).sum())


def _batches(n: int, batch_size: int, order: Sequence[int]) -> list[list[int]]:
    order = list(order)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def row_batches(rows: Sequence[Row], cfg: TrainConfig) -> tuple[list[list[int]], dict]:
    """fairseq-train's batches of ``rows`` (sizes = input tokens, as fairseq's LM dataset counts them), and their
    description for the record."""
    return fairseq_layout(split_lengths(rows, lambda r: len(r.inputs)), max_tokens=cfg.max_tokens,
                          max_sentences=cfg.batch_size, required_multiple=cfg.batch_multiple, seed=cfg.seed)


def evaluate_loss(model: PromptedLM, rows: Sequence[Row], pad: int | None, cfg: TrainConfig, device) -> float:
    """Mean label-token cross-entropy over ``rows`` (eval mode; the batching does not change the value)."""
    total, labels, _ = _valid_sums(model, rows, cfg, device)
    return total / max(labels, 1)


def _valid_sums(model: PromptedLM, rows: Sequence[Row], cfg: TrainConfig, device) -> tuple[float, int, int]:
    """(summed label-part cross-entropy, label-part target tokens, all target tokens) over ``rows``, eval mode."""
    model.eval()
    total, labels, tokens = 0.0, 0, 0
    with torch.no_grad():
        for b in row_batches(rows, cfg)[0]:
            loss, n = label_loss(model, [rows[i] for i in b], None, device)
            total += float(loss)
            labels += n
            tokens += sum(len(rows[i].inputs) for i in b)
    return total, labels, tokens


def fairseq_valid_loss(loss_sum: float, sample_size: int) -> float:
    """The valid loss fairseq-train selects and stops on: the summed label loss over the sample size, in bits,
    rounded to 3 decimals (SpeechPrompt-v2 GSLM/prompt/fairseq_usr/loss.py:104-106 ``log_scalar("loss", loss_sum /
    sample_size / math.log(2), sample_size, round=3)``; fairseq logging/meters.py:103-107, the weighted mean over
    the valid batches rounded in ``smoothed_value``)."""
    return round(loss_sum / max(sample_size, 1) / math.log(2), 3)


@dataclass
class EarlyStopping:
    """Which epoch's prompts are kept and when training stops (``stopping_rule``).

    ``bench``: a validation loss counts as better only when lower by more than 1e-6; the best one is kept and
    ``patience`` epochs without a better one stop training (0: never; all ``max_epochs`` run). ``fairseq`` (the
    released v1/v2 training): the value is :func:`fairseq_valid_loss`; stopping counts epochs that are not
    strictly better (fairseq_cli/train.py:239-249 ``should_stop_early``: ``a < b``; patience <= 0 never stops)
    while ``checkpoint_best`` is rewritten on ties (fairseq/checkpoint_utils.py:42-45,66-67,79-81:
    ``val_loss <= min(best, val_loss)``), so the kept prompts are the last epoch that reached the minimum."""

    rule: str = "bench"
    patience: int = 0  # as TrainConfig's: never stop early
    best: float = math.inf  # the kept epoch's value
    best_epoch: int = 0
    stop_best: float = math.inf  # should_stop_early's best (fairseq)
    bad: int = 0

    def __post_init__(self):
        if self.rule not in STOPPING_RULES:
            raise BenchError(f"stopping_rule must be one of {STOPPING_RULES}, got {self.rule!r}")

    def update(self, epoch: int, value: float) -> tuple[bool, bool]:
        """(keep this epoch's prompts, stop after this epoch)."""
        if self.rule == "bench":
            if value < self.best - 1e-6:
                self.best, self.best_epoch, self.bad = value, epoch, 0
                return True, False
            self.bad += 1
            return False, 0 < self.patience <= self.bad
        keep = value <= self.best
        if keep:
            self.best, self.best_epoch = value, epoch
        if value < self.stop_best:
            self.stop_best, self.bad = value, 0
            return keep, False
        self.bad += 1
        return keep, 0 < self.patience <= self.bad


def _check_frozen(model: PromptedLM) -> list:
    for p in model.lm.parameters():
        if p.requires_grad:
            raise BenchError("the unit LM must be frozen before prompt tuning (found a trainable LM weight)")
    return [p for p in model.prompts.parameters() if p.requires_grad]


def _train_epoch(model, opt, params, rows, layout, cfg: TrainConfig, epoch: int, device) -> float:
    model.train()
    total, count = 0.0, 0
    for b in shuffled(layout, cfg.seed + epoch):
        loss, n = label_loss(model, [rows[i] for i in b], None, device, cfg.loss_normalization)
        opt.zero_grad(set_to_none=True)
        (loss / max(n, 1)).backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
        opt.step()
        total += float(loss.detach())
        count += n
    return total / max(count, 1)


def train_prompts(model: PromptedLM, train: Sequence[Row], valid: Sequence[Row], cfg: TrainConfig,
                  pad: int | None = None, device="cpu", log: Callable[[str], None] = print,
                  advance: Callable[[int], object] | None = None, resume=None) -> dict:
    """Adam on the adapter's parameters only; keeps the parameters of the best validation loss after an epoch
    (the untrained ones never win: fairseq's checkpoint_best is written after epoch 1 at the earliest).
    ``resume``: the cell's resume directory (state saved after an epoch, at most every ``BENCH_RESUME_EVERY_S``
    seconds; a saved one is continued: :mod:`bench.methods.checkpointing`)."""
    from bench.methods import checkpointing

    if not train:
        raise BenchError("prompt tuning needs training examples")
    if cfg.max_epochs < 1:
        raise BenchError("prompt tuning needs at least one epoch (max_epochs)")
    params = _check_frozen(model)
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)
    layout, layout_info = row_batches(train, cfg)
    saved = checkpointing.load_state(resume, None, log)
    if saved is None:
        untrained = evaluate_loss(model, valid, pad, cfg, device)
        stopping = EarlyStopping(cfg.stopping_rule, cfg.patience)
        best_state = copy.deepcopy(model.prompts.state_dict())
        train_losses, valid_losses, selected_on = [], [], []
        epoch, stopped = 0, False
    else:
        model.prompts.load_state_dict(saved["prompts"])
        opt.load_state_dict(saved["optimizer"])
        untrained, best_state = saved["untrained"], saved["best_state"]
        epoch, stopped = saved["epoch"], saved["stopped"]
        stopping = EarlyStopping(**saved["stopping"]) if "stopping" in saved else EarlyStopping(
            "bench", cfg.patience, best=saved["best"], best_epoch=saved["best_epoch"], bad=saved["bad"])
        train_losses, valid_losses = saved["train_losses"], saved["valid_losses"]
        selected_on = saved.get("selected_on", [])
        if advance:
            advance(epoch)
    for epoch in range(epoch + 1, 0 if stopped else cfg.max_epochs + 1):
        train_losses.append(_train_epoch(model, opt, params, train, layout, cfg, epoch, device))
        total, labels, tokens = _valid_sums(model, valid, cfg, device)
        v = total / max(labels, 1)
        valid_losses.append(v)
        if advance:
            advance(1)
        if cfg.stopping_rule == "fairseq":
            selected_on.append(fairseq_valid_loss(total, tokens if cfg.loss_normalization == "all_tokens" else labels))
        keep, stopped = stopping.update(epoch, selected_on[-1] if selected_on else v)
        if keep:
            best_state = copy.deepcopy(model.prompts.state_dict())
        checkpointing.save_state(resume, {
            "epoch": epoch, "prompts": model.prompts.state_dict(), "optimizer": opt.state_dict(),
            "untrained": untrained, "best_state": best_state, "stopping": dataclasses.asdict(stopping),
            "stopped": stopped, "train_losses": train_losses, "valid_losses": valid_losses,
            "selected_on": selected_on})
        if stopped:
            unit = " bits" if cfg.stopping_rule == "fairseq" else ""
            log(f"  early stop at epoch {epoch} (best valid loss {stopping.best:.4f}{unit} at epoch "
                f"{stopping.best_epoch})")
            break
    model.prompts.load_state_dict(best_state)
    model.eval()
    best = valid_losses[stopping.best_epoch - 1] if stopping.best_epoch else math.inf  # per label token, nats
    out = {"epochs_run": epoch, "best_epoch": stopping.best_epoch, "best_valid_loss": best,
           "valid_loss_untrained": untrained, "loss_normalization": cfg.loss_normalization,
           "batching": layout_info,
           "train_loss": [round(x, 5) for x in train_losses], "valid_loss": [round(x, 5) for x in valid_losses]}
    if cfg.stopping_rule != "bench":  # bench's records keep their earlier keys
        out.update(stopping_rule=cfg.stopping_rule, best_valid_loss_bits=stopping.best,
                   valid_loss_selected_bits=selected_on)
    return out


@dataclass
class Decoded:
    outputs: list[int]  # verbalizer outputs generated before </s>
    first_logprobs: np.ndarray  # log-probabilities over the outputs at the first label step
    finished: bool  # stopped at </s> (False: hit max_len)


def _shrink(cache, keep: torch.Tensor) -> None:
    """Drop finished rows from a key/value cache."""
    cache.keys = [k.index_select(0, keep) for k in cache.keys]
    cache.values = [v.index_select(0, keep) for v in cache.values]
    cache.valid = cache.valid.index_select(0, keep)


def _decode_batch(model: PromptedLM, rows: list[Row], verbalizer: Verbalizer, max_len: int, device,
                  cache: bool) -> list[Decoded]:
    """Greedy decoding of one batch of prefix rows; finished rows leave the batch."""
    lm = model.unit_lm
    B = len(rows)
    outs: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    active = list(range(B))
    if cache:
        scores, kv = model.prefill(lm.collate(rows, device))
        last = scores[torch.arange(B), (torch.tensor([len(r.inputs) for r in rows]) - 1).to(scores.device)]
    else:
        last = model(lm.collate(rows, device))[torch.arange(B), torch.tensor([len(r.inputs) - 1 for r in rows])]
    first = last.float().log_softmax(-1).cpu().numpy()
    for step in range(max_len):
        pred = last.argmax(-1).tolist()
        still = []
        for slot, r in enumerate(active):
            o = int(pred[slot])
            if o == verbalizer.eos_out:
                done[r] = True
                continue
            outs[r].append(o)
            still.append(slot)
        if not still or step == max_len - 1:
            break
        if cache and len(still) < len(active):
            _shrink(kv, torch.tensor(still, device=device))
        active = [active[slot] for slot in still]
        for r in active:
            lm.append(rows[r], verbalizer.output_to_token(outs[r][-1]))
        if cache:
            last = model.step([rows[r] for r in active], kv, device)
        else:
            now = [rows[r] for r in active]
            last = model(lm.collate(now, device))[torch.arange(len(now)), torch.tensor([len(x.inputs) - 1 for x in now])]
    return [Decoded(outs[r], first[r], done[r]) for r in range(B)]


@torch.no_grad()
def greedy_decode(model: PromptedLM, sources: Sequence, verbalizer: Verbalizer, max_len: int,
                  max_tokens: int, batch_size: int = 32, device="cpu", cache: bool = True) -> list[Decoded]:
    """Greedy generation after ``start src <s>`` (sources: LM tokens for GSLM, or :class:`SourceUnits`); each
    generated output is fed back as its LM token. ``cache``: incremental decoding with a key/value cache
    (:func:`bench.lms.model.prefill_prompted_layers`); ``False``: SpeechPrompt's full recomputation per step
    (``incremental_state=None``) — the same outputs (tests/test_prompt_kv_cache.py)."""
    model.eval()
    lm = model.unit_lm
    results: list[Decoded | None] = [None] * len(sources)
    lengths = split_lengths(sources)
    order = sorted(range(len(sources)), key=lambda i: lengths[i])
    for b in _batches(len(sources), batch_size, order):
        rows = [prefix_row(sources[i], verbalizer, max_tokens, max_len, lm)[0] for i in b]
        for i, d in zip(b, _decode_batch(model, rows, verbalizer, max_len, device, cache)):
            results[i] = d
    return results  # type: ignore[return-value]


def to_predictions(decoded: Sequence[Decoded], verbalizer: Verbalizer, with_scores: bool,
                   references: Sequence[str] | None = None):
    """(hypotheses, per-class first-step log-probabilities or None, unmapped count).

    A classification output that is no label (another unit, a special, too many/few symbols) is the empty
    string: scored wrong, and counted in ``unmapped``; for generation, unmapped outputs are dropped from the text
    and the utterance is counted. With ``references`` and a verbalizer whose symbols share units, outputs equal to
    the reference's decode to it (:meth:`Verbalizer.decode_against`, the released scoring)."""
    hyps, scores, unmapped = [], [], 0
    for i, d in enumerate(decoded):
        if references is not None and not verbalizer.injective and verbalizer.space.kind != "text":
            label, ok = verbalizer.decode_against(d.outputs, references[i])
        else:
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
