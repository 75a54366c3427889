"""What units carry for a classification task, read without and with their order.

Two probes of a task's unit sequences, each trained on the train split only: the bag of units (the normalised
unit histogram a logistic regression reads; blind to order) and a small sequence model
(:class:`UnitSequenceClassifier`, trained from scratch, its epoch chosen on the valid split). A prompt method that
reads only the units of a frozen unit LM is bounded by what the units carry; the bag probe gives a floor of that
bound, the sequence probe a tighter one (issue 25). ``benchmarks/probe_unit_layer.py`` runs both on cached units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np


def unit_histogram(seqs: Sequence, num_units: int) -> np.ndarray:
    """Normalised unit counts per sequence (N × K): the bag-of-units features. ``seqs``: arrays or UnitSequences."""
    out = np.zeros((len(seqs), num_units), dtype=np.float32)
    for i, seq in enumerate(seqs):
        units = np.asarray(getattr(seq, "units", seq), dtype=np.int64)
        np.add.at(out[i], units, 1.0)
        out[i] /= max(1, len(units))
    return out


@dataclass(frozen=True)
class SequenceProbeConfig:
    """The order-aware probe: 1-layer BiGRU over unit embeddings, mean- and max-pooled, a linear head."""

    embed_dim: int = 64
    hidden: int = 128
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    dropout: float = 0.2
    seed: int = 0
    threads: int = 1  # one thread: the same reductions in the same order, so the same digits on a CPU

    def to_dict(self) -> dict:
        return asdict(self)


def _model(num_units: int, num_classes: int, cfg: SequenceProbeConfig):
    import torch
    from torch import nn

    class UnitSequenceClassifier(nn.Module):
        """Units → embedding → BiGRU → [mean ‖ max] over the real steps → dropout → linear."""

        def __init__(self):
            super().__init__()
            self.pad = num_units
            self.embed = nn.Embedding(num_units + 1, cfg.embed_dim, padding_idx=num_units)
            self.gru = nn.GRU(cfg.embed_dim, cfg.hidden, num_layers=1, batch_first=True, bidirectional=True)
            self.drop = nn.Dropout(cfg.dropout)
            self.head = nn.Linear(4 * cfg.hidden, num_classes)

        def forward(self, units: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

            packed = pack_padded_sequence(self.embed(units), lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.gru(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=units.shape[1])
            mask = (torch.arange(units.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)
            mean = (out * mask).sum(1) / lengths[:, None].clamp(min=1)
            mx = out.masked_fill(~mask, float("-inf")).amax(1)
            return self.head(self.drop(torch.cat([mean, mx], dim=-1)))

    return UnitSequenceClassifier()


def _batch(seqs: Sequence[np.ndarray], pad: int):
    import torch

    lengths = [max(1, len(s)) for s in seqs]
    units = torch.full((len(seqs), max(lengths)), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            units[i, : len(s)] = torch.as_tensor(np.asarray(s, dtype=np.int64))
    return units, torch.tensor(lengths, dtype=torch.long)


@dataclass
class SequenceProbe:
    """A trained order-aware probe: the epoch kept (best valid accuracy, earliest on a tie) and its history."""

    model: object
    labels: list
    num_units: int
    config: SequenceProbeConfig
    best_epoch: int = 0
    valid_accuracy: float = 0.0
    history: list = field(default_factory=list)  # valid accuracy after each epoch

    def predict(self, seqs: Sequence) -> list:
        import torch

        seqs = [np.asarray(getattr(s, "units", s), dtype=np.int64) for s in seqs]
        preds: list = []
        with _threads(self.config.threads), torch.no_grad():
            self.model.eval()
            for i in range(0, len(seqs), 256):
                units, lengths = _batch(seqs[i : i + 256], self.num_units)
                preds.extend(self.model(units, lengths).argmax(-1).tolist())
        return [self.labels[p] for p in preds]


class _threads:
    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        import torch

        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.old)


def fit_sequence_probe(train: Sequence, train_labels: Sequence, valid: Sequence, valid_labels: Sequence,
                       num_units: int, config: SequenceProbeConfig | None = None) -> SequenceProbe:
    """Train on ``train`` only; after each epoch score ``valid`` and keep the best state. Test is never seen here."""
    import copy

    import torch

    cfg = config or SequenceProbeConfig()
    labels = sorted(set(train_labels))
    index = {lab: i for i, lab in enumerate(labels)}
    xtr = [np.asarray(getattr(s, "units", s), dtype=np.int64) for s in train]
    ytr = torch.tensor([index[lab] for lab in train_labels], dtype=torch.long)
    with _threads(cfg.threads):
        torch.manual_seed(cfg.seed)
        model = _model(num_units, len(labels), cfg)
        probe = SequenceProbe(model, labels, num_units, cfg)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        order_rng = np.random.default_rng(cfg.seed)
        best_state, best = copy.deepcopy(model.state_dict()), -1.0
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            perm = order_rng.permutation(len(xtr))
            for i in range(0, len(perm), cfg.batch_size):
                idx = perm[i : i + cfg.batch_size]
                units, lengths = _batch([xtr[j] for j in idx], num_units)
                loss = torch.nn.functional.cross_entropy(model(units, lengths), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            preds = probe.predict(valid)
            acc = float(np.mean([p == y for p, y in zip(preds, valid_labels)]))
            probe.history.append(acc)
            if acc > best:
                best, best_state, probe.best_epoch = acc, copy.deepcopy(model.state_dict()), epoch
        model.load_state_dict(best_state)
        model.eval()
        probe.valid_accuracy = best
    return probe
