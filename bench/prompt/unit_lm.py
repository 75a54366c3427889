"""The seam between the prompt engine and a frozen unit LM: the :class:`UnitLM` protocol and its two
implementations, :class:`GSLMUnitLM` (the GSLM ULM, :mod:`bench.lms.model`) and :class:`PGSLMUnitLM` (the pGSLM
MS-TLM, :mod:`bench.lms.multistream`).

A task row is SpeechPrompt's LM line ``start u_1..u_n SEP y_1..y_k`` with the target the line shifted left
(``u_2..u_n SEP y_1..y_k </s>``; docs/papers.md, "The pipeline"). What differs per LM is only

- the vocabulary and its specials (fairseq ``Dictionary``: ``<s>=0 <pad>=1 </s>=2 <unk>=3`` then units; the
  MS-TLM's ``speech_ulm_task.UnitDictionary``: units ``0..K-1`` then ``<s> <pad> </s> <unk>``),
- the start token (``</s>``: fairseq ``language_modeling`` prepends eos; ``<s>``: the MS-TLM's ``CodeDataset``),
- the other input streams (pGSLM: durations and F0 per unit; label steps carry none: duration 0, F0 ``<pad>``),
- how a batch becomes the summed input embedding (positions, stream shifts) and how hidden states become the
  unit-stream logits.

The engine (:mod:`bench.prompt.trainer`) does everything else, for every LM: the separator, prompts, loss,
training, greedy decoding with a key/value cache (:func:`bench.lms.model.prefill_prompted_layers`). A new LM is
one class with the members of :class:`UnitLM`; subclassing :class:`FrozenUnitLM` gives the forward passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import nn

from bench.core.errors import BenchError


@dataclass(slots=True)  # one per utterance of a split: no __dict__ each (issue #23, corpus-size memory)
class SourceUnits:
    """One utterance as the LM reads it: deduplicated unit ids and, per unit, the values of any other input
    stream (pGSLM: ``duration`` run lengths, ``f0`` bins or normalised log-F0)."""

    units: np.ndarray
    streams: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.units)

    def clip(self, n: int) -> "SourceUnits":
        return SourceUnits(self.units[:n], {k: v[:n] for k, v in self.streams.items()})


@dataclass(slots=True)  # one per training/valid utterance
class Row:
    """LM input tokens (unit stream), per-position targets (IGNORE outside the label part), the separator's
    index and the other streams' input values, aligned with ``inputs``."""

    inputs: list[int]
    targets: list[int]
    sep: int = -1
    streams: dict[str, list] = field(default_factory=dict)


class SourceSplit(Sequence[SourceUnits]):
    """A split's :class:`SourceUnits` as one flat array per stream and the utterances' offsets into them, read back
    as views by index. A cell keeps every split's sources from the verbalizer to decoding: as a list of objects
    that was ~0.3 KB an utterance beside the units themselves, what grew a prompt cell from a tenth of Speech
    Commands to its full size (benchmarks/rehearsal.py; issue #23)."""

    __slots__ = ("units", "offsets", "streams")

    def __init__(self, units: np.ndarray, offsets: np.ndarray, streams: dict[str, np.ndarray] | None = None):
        self.units, self.offsets = units, np.asarray(offsets, dtype=np.int64)
        self.streams = dict(streams or {})
        if len(self.offsets) == 0 or self.offsets[-1] != len(units) or any(
                len(v) != len(units) for v in self.streams.values()):
            raise BenchError("internal error: a SourceSplit's offsets or streams do not match its units")

    @classmethod
    def from_sources(cls, sources: Sequence[SourceUnits], dtype=None) -> "SourceSplit":
        """The sources concatenated (``dtype``: the units' type, else the first source's)."""
        lengths = [len(s) for s in sources]
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        first = sources[0] if sources else SourceUnits(np.zeros(0, dtype=np.int64))
        units = np.concatenate([s.units for s in sources]) if sources else first.units
        streams = {k: np.concatenate([s.streams[k] for s in sources]) for k in first.streams}
        return cls(units.astype(dtype or units.dtype, copy=False), offsets, streams)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):
        return _by_index(self, i, self._item)

    def _item(self, i: int) -> SourceUnits:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return SourceUnits(self.units[a:b], {k: v[a:b] for k, v in self.streams.items()})

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


class RowSplit(Sequence[Row]):
    """A split's training rows packed: every row's ``inputs`` and ``targets`` in two flat typed arrays (2 bytes a
    token where they fit int16), its separator and offsets in two more, each other stream in one (int16 or int64
    for integers, float64 otherwise); ``rows[i]`` is a
    fresh :class:`Row` of lists, equal to the row that was added, so every reader of rows reads a RowSplit
    unchanged. Held as a list of Rows (lists), a split's rows were ~0.4 KB an utterance on whisper_tiny_en's units
    and ~0.8 KB on fbank's; as one object per row ~0.25 KB (issue #23, benchmarks/rehearsal.py)."""

    def __init__(self):
        from array import array

        self._inputs, self._targets = array("h"), array("h")
        self._offsets, self._seps = array("q", [0]), array("q")
        self._streams: dict[str, array] = {}

    def append(self, row: Row) -> None:
        if len(row.targets) != len(row.inputs) or any(len(v) != len(row.inputs) for v in row.streams.values()):
            raise BenchError("internal error: a row's targets or streams do not match its inputs")
        if not self._seps:
            from array import array

            self._streams = {k: array("h" if all(_is_int(x) for x in v) else "d") for k, v in row.streams.items()}
        elif set(row.streams) != set(self._streams):
            raise BenchError("internal error: rows of one split with different streams")
        self._inputs = _extended(self._inputs, row.inputs)
        self._targets = _extended(self._targets, row.targets)
        for k, v in row.streams.items():
            if self._streams[k].typecode == "d":
                self._streams[k].extend(float(x) for x in v)
            elif all(_is_int(x) for x in v):
                self._streams[k] = _extended(self._streams[k], v)
            else:
                raise BenchError(f"internal error: stream '{k}' holds integers in one row, not in another")
        self._seps.append(int(row.sep))
        self._offsets.append(len(self._inputs))

    def __len__(self) -> int:
        return len(self._seps)

    def __getitem__(self, i):
        return _by_index(self, i, self._item)

    def _item(self, i: int) -> Row:
        a, b = self._offsets[i], self._offsets[i + 1]
        return Row(self._inputs[a:b].tolist(), self._targets[a:b].tolist(), self._seps[i],
                   {k: v[a:b].tolist() for k, v in self._streams.items()})

    def lengths(self) -> list[int]:
        """Each row's input length (fairseq's sizes for batching), without building the rows."""
        o = self._offsets
        return [o[i + 1] - o[i] for i in range(len(self))]

    def nbytes(self) -> int:
        arrays = [self._inputs, self._targets, self._offsets, self._seps, *self._streams.values()]
        return sum(a.itemsize * len(a) for a in arrays)


def split_lengths(seq, measure=len) -> list[int]:
    """Each item's length: a packed split's own ``lengths()`` (no item built), else ``measure`` of each item of a
    list (rows: ``lambda r: len(r.inputs)``; sources: ``len``)."""
    lengths = getattr(seq, "lengths", None)
    return [int(n) for n in lengths()] if lengths is not None else [measure(x) for x in seq]


def _by_index(seq, i, item):
    """``seq[i]`` for the packed splits: an int (negative from the end) through ``item``, a slice as a list."""
    if isinstance(i, slice):
        return [item(j) for j in range(*i.indices(len(seq)))]
    n = len(seq)
    if not -n <= i < n:
        raise IndexError(i)
    return item(i % n)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _extended(arr, values):
    """``arr`` (int16, or int64 once a value does not fit) extended by ``values``, exactly."""
    from array import array

    ints = [int(v) for v in values]
    if arr.typecode == "h" and ints and not (-2**15 <= min(ints) and max(ints) < 2**15):
        arr = array("q", arr)
    arr.extend(ints)
    return arr


@dataclass
class Batch:
    tokens: torch.Tensor  # [B,T] unit-stream input tokens (right-padded)
    padding_mask: torch.Tensor  # [B,T] True = pad
    sep_mask: torch.Tensor  # [B,T] True = the separator (its embedding is the trainable one)
    lengths: torch.Tensor  # [B]
    streams: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class UnitLM(Protocol):
    """What the prompt engine needs from a frozen unit LM."""

    name: str  # recorded ("GSLM ULM", "pGSLM MS-TLM")
    module: nn.Module  # the frozen network (its state is sha1-checked before and after training)
    vocab: Any  # bos, pad, eos, unk, __len__, unit_to_index(unit) -> token
    num_layers: int
    embed_dim: int
    max_positions: int
    layers: nn.ModuleList  # bench.lms.model.DecoderLayer stack (prompts and the KV cache attach here)

    def source_row(self, source: SourceUnits | Sequence[int]) -> Row:
        """``start u_1..u_n`` (tokens and stream values; ``source`` may also be LM tokens already)."""

    def append(self, row: Row, token: int) -> None:
        """One more input token with the label-step stream values (the separator, label tokens)."""

    def collate(self, rows: Sequence[Row], device) -> Batch: ...

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unscaled token embedding rows [B,T,D] (what the trainable separator replaces)."""

    def embed_inputs(self, batch: Batch, token_embeddings: torch.Tensor) -> torch.Tensor:
        """The summed, scaled, positioned input [B,T,D] of the decoder layers."""

    def embed_step(self, rows: Sequence[Row], token_embeddings: torch.Tensor, device) -> torch.Tensor:
        """[B,1,D]: the input of each row's last token (just appended) at its own position."""

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Unit-stream logits [..., |V|] from the last layer's output (final LayerNorm and projection)."""


class FrozenUnitLM:
    """Forward passes shared by every :class:`UnitLM` (full, prefill, one cached step)."""

    def forward(self, batch: Batch, token_embeddings, input_prompt=None, deep_prompts=None) -> torch.Tensor:
        from bench.lms.model import run_prompted_layers

        x = self.embed_inputs(batch, token_embeddings)
        return self.logits(run_prompted_layers(self.layers, x, batch.padding_mask, input_prompt, deep_prompts))

    def prefill(self, batch: Batch, token_embeddings, input_prompt=None, deep_prompts=None):
        from bench.lms.model import prefill_prompted_layers

        x = self.embed_inputs(batch, token_embeddings)
        h, cache = prefill_prompted_layers(self.layers, x, batch.padding_mask, input_prompt, deep_prompts)
        return self.logits(h), cache

    def step(self, rows: Sequence[Row], token_embeddings, cache, device) -> torch.Tensor:
        from bench.lms.model import step_prompted_layers

        return self.logits(step_prompted_layers(self.layers, self.embed_step(rows, token_embeddings, device), cache))

    def describe(self) -> dict:
        import dataclasses

        cfg = self.module.cfg
        return {"name": self.name, "config": dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else vars(cfg)}


def _right_pad(rows: Sequence[Row], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    T = max(len(r.inputs) for r in rows)
    tokens = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.ones((len(rows), T), dtype=torch.bool)
    sep = torch.zeros((len(rows), T), dtype=torch.bool)
    for i, r in enumerate(rows):
        tokens[i, :len(r.inputs)] = torch.tensor(r.inputs, dtype=torch.long)
        mask[i, :len(r.inputs)] = False
        if r.sep >= 0:
            sep[i, r.sep] = True
    return tokens, mask, sep, torch.tensor([len(r.inputs) for r in rows])


class GSLMUnitLM(FrozenUnitLM):
    """The GSLM ULM (fairseq ``transformer_lm``) as a :class:`UnitLM`: rows ``</s> src <s> label``."""

    name = "GSLM ULM"

    def __init__(self, module):
        self.module = module
        self.vocab = module.dictionary
        self.num_layers, self.embed_dim = module.cfg.num_layers, module.cfg.embed_dim
        self.max_positions = int(module.cfg.max_positions)
        self.layers = module.layers

    def source_row(self, source) -> Row:
        if isinstance(source, SourceUnits):
            tokens = [self.vocab.unit_to_index(int(u)) for u in source.units]
        else:
            tokens = [int(t) for t in source]
        return Row([self.vocab.eos, *tokens], [])

    def append(self, row: Row, token: int) -> None:
        row.inputs.append(int(token))

    def collate(self, rows, device) -> Batch:
        tokens, mask, sep, lengths = _right_pad(rows, self.vocab.pad)
        return Batch(tokens.to(device), mask.to(device), sep.to(device), lengths)

    def embed_tokens(self, tokens):
        return self.module.embed_tokens(tokens)

    def embed_inputs(self, batch, token_embeddings):
        return self.module.embed(batch.tokens, batch.padding_mask, token_embeddings)

    def embed_step(self, rows, token_embeddings, device):
        tokens = torch.tensor([[r.inputs[-1]] for r in rows], device=device)
        positions = torch.tensor([[len(r.inputs) + self.vocab.pad] for r in rows], device=device)  # fairseq numbering
        return self.module.embed(tokens, torch.zeros_like(tokens, dtype=torch.bool), token_embeddings, positions)

    def logits(self, hidden):
        h = self.module.layer_norm(hidden)
        return torch.nn.functional.linear(h, self.module.embed_tokens.weight.to(h.dtype))


class StreamVocabulary:
    """The MS-TLM's unit vocabulary with the dictionary interface the verbalizers use (unit u is token u)."""

    def __init__(self, num_units: int):
        from bench.lms.multistream import StreamVocab

        v = StreamVocab(num_units)
        self.num_units = num_units
        self.bos, self.pad, self.eos, self.unk = v.bos, v.pad, v.eos, v.unk

    def __len__(self) -> int:
        return self.num_units + 4

    def unit_to_index(self, unit: int) -> int:
        if not 0 <= int(unit) < self.num_units:
            raise BenchError(f"unit {unit} is not in the MS-TLM's {self.num_units} units; were the units made "
                             "with a different k-means than the LM's?")
        return int(unit)


class PGSLMUnitLM(FrozenUnitLM):
    """The pGSLM MS-TLM as a :class:`UnitLM`: rows ``<s> src <s> label`` on the unit stream, each source unit with
    its duration and F0, the separator and label steps with none (duration 0, F0 ``<pad>`` / 0.0); the prosody
    streams are shifted by the LM's ``stream_shifts`` (fairseq ``Shifts``) inside :meth:`collate`."""

    name = "pGSLM MS-TLM"

    def __init__(self, module):
        self.module = module
        cfg = module.cfg
        self.cfg = cfg
        self.vocab = StreamVocabulary(cfg.num_units)
        self.num_layers, self.embed_dim = cfg.num_layers, cfg.embed_dim
        self.max_positions = int(cfg.max_positions)
        self.layers = module.layers
        self.f0_start = cfg.f0_vocab.bos if cfg.discrete_f0 else 0.0
        self.f0_none = cfg.f0_vocab.pad if cfg.discrete_f0 else 0.0

    def source_row(self, source) -> Row:
        if not isinstance(source, SourceUnits):
            raise BenchError("the MS-TLM reads units with their durations and F0 (a SourceUnits with streams)")
        f0 = source.streams["f0"]
        dur = np.minimum(source.streams["duration"], self.cfg.max_duration)
        return Row([self.vocab.bos, *[self.vocab.unit_to_index(u) for u in source.units]], [],
                   streams={"duration": [0, *np.asarray(dur).tolist()],
                            "f0": [self.f0_start, *np.asarray(f0).tolist()]})

    def append(self, row: Row, token: int) -> None:
        row.inputs.append(int(token))
        row.streams["duration"].append(0)
        row.streams["f0"].append(self.f0_none)

    def collate(self, rows, device) -> Batch:
        from bench.lms.multistream import collate_streams

        tokens, mask, sep, lengths = _right_pad(rows, self.vocab.pad)
        ms = collate_streams(self.cfg, [(r.inputs + [self.vocab.eos], r.streams["duration"] + [0],
                                         r.streams["f0"] + [self.f0_none]) for r in rows])
        T = tokens.size(1)
        return Batch(tokens.to(device), mask.to(device), sep.to(device), lengths,
                     {"duration": ms.durations[:, :T].to(device), "f0": ms.f0[:, :T].to(device)})

    def embed_tokens(self, tokens):
        return self.module.embed_tokens(tokens)

    def embed_inputs(self, batch, token_embeddings):
        return self.module.embed(batch.tokens, batch.streams["duration"], batch.streams["f0"], token_embeddings)

    def _shifted(self, row: Row, stream: str, shift: int, pad):
        t = len(row.inputs) - 1 - shift
        return row.streams[stream][t] if t >= 0 else pad

    def embed_step(self, rows, token_embeddings, device):
        cfg = self.cfg
        s_dur, s_f0 = cfg.stream_shifts
        f0_pad = cfg.f0_vocab.pad if cfg.discrete_f0 else -5.0  # bench.lms.multistream.F0_CONTINUOUS_PAD
        tokens = torch.tensor([[r.inputs[-1]] for r in rows], device=device)
        dur = torch.tensor([[self._shifted(r, "duration", s_dur, 0)] for r in rows], device=device,
                           dtype=torch.long if cfg.discrete_duration else torch.float32)
        f0 = torch.tensor([[self._shifted(r, "f0", s_f0, f0_pad)] for r in rows], device=device,
                          dtype=torch.long if cfg.discrete_f0 else torch.float32)
        positions = torch.tensor([[len(r.inputs) - 1] for r in rows], device=device)
        return self.module.embed(tokens, dur, f0, token_embeddings, positions)

    def logits(self, hidden):
        return self.module.project_out_dim(self.module.layer_norm(hidden))[..., :len(self.vocab)]


def as_unit_lm(lm) -> UnitLM:
    """``lm`` itself when it already is a :class:`UnitLM`; the GSLM ULM / MS-TLM modules wrapped."""
    if isinstance(lm, UnitLM):
        return lm
    from bench.lms.model import UnitLanguageModel
    from bench.lms.multistream import MultiStreamUnitLM

    if isinstance(lm, UnitLanguageModel):
        return GSLMUnitLM(lm)
    if isinstance(lm, MultiStreamUnitLM):
        return PGSLMUnitLM(lm)
    raise BenchError(f"{type(lm).__name__} is not a unit LM the prompt engine knows (implement bench.prompt."
                     "unit_lm.UnitLM)")
