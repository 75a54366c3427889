"""Verbalizers: task labels ↔ what the frozen unit LM reads and writes (SpeechPrompt §3; docs/papers.md).

Two layers:

- a **label space** turns a task's label string into a sequence of *symbols* (indices 0..C-1) and back:
  one symbol per class (KS, LID, ...); one per slot value with disjoint ranges per slot (IC; v1's ``no_overlap``,
  C = 6+14+4 = 24 for FSC) or, as v2, one per word of the slot values (:class:`SlotWordLabels`); characters, the
  word delimiter and slot tags for generation (ASR, SF; the
  s3prl/SUPERB character vocabulary of :mod:`bench.tasks.text`);
- a **verbalizer** maps symbols to LM vocabulary entries:
  ``freq`` (v1: label rank i → source-unit rank i by training frequency), ``random`` (a seeded draw of *distinct*
  units seen in training sources; the v2 paper's baseline rows; when the training sources hold fewer distinct
  units than there are symbols, both fall back to the LM's unseen units and say so in ``info["fallback"]``; with
  ``draw="independent"`` each symbol's unit is drawn on its own, as v2's code does, so symbols may share a unit),
  ``identity`` (symbol i → unit i), and ``learnable`` (v2: a Linear(|V| → C+4) on the LM logits; output slot
  ``4+i`` is symbol i, slots 0..3 are the fairseq specials; the chosen symbol is fed back as unit i's token).

Decoding is free greedy over the verbalizer's outputs; an output that is no symbol of the task (another unit,
``<unk>``, ``<pad>``...) makes the utterance *unmapped*: it is scored wrong and counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from bench.core.errors import BenchError

VERBALIZERS = ("freq", "random", "identity", "learnable")
NUM_SPECIALS = 4  # fairseq <s> <pad> </s> <unk>
SPECIAL_SLOTS = {"bos": 0, "pad": 1, "eos": 2, "unk": 3}  # the learnable verbalizer's first four outputs (v2)
CLASS_ORDERS = ("frequency", "label")


# ================================================================================================================
# label spaces
# ================================================================================================================
class LabelSpace:
    """Label string ↔ list of symbol indices."""

    kind: str = ""
    symbols: list[str]

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, label: str) -> list[int]:
        raise NotImplementedError

    def decode(self, symbols: Sequence[int]) -> str | None:
        """The label string, or None when the symbol sequence is no valid label."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": self.kind, "num_symbols": len(self.symbols), "symbols": list(self.symbols)}


class ClassLabels(LabelSpace):
    """One symbol per class (the whole label string)."""

    kind = "class"

    def __init__(self, labels: Sequence[str]):
        self.symbols = list(labels)
        self.index = {s: i for i, s in enumerate(self.symbols)}

    def encode(self, label: str) -> list[int]:
        if label not in self.index:
            raise BenchError(f"label '{label}' is not one of the task's labels {self.symbols[:12]}")
        return [self.index[label]]

    def decode(self, symbols: Sequence[int]) -> str | None:
        return self.symbols[symbols[0]] if len(symbols) == 1 else None


class SlotLabels(LabelSpace):
    """Multi-slot labels (IC): one symbol per (slot, value), slots in disjoint ranges (SpeechPrompt v1
    ``gen_labelspace.py`` ``no_overlap``); a label is one symbol per slot, in slot order."""

    kind = "slots"

    def __init__(self, slots: dict[str, Sequence[str]]):
        self.slots = {k: list(v) for k, v in slots.items()}
        self.symbols = [f"{slot}={value}" for slot, values in self.slots.items() for value in values]
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.slot_of = [slot for slot, values in self.slots.items() for _ in values]

    def encode(self, label: str) -> list[int]:
        values = label.split(" ")
        if len(values) != len(self.slots):
            raise BenchError(f"label '{label}' must hold {len(self.slots)} slot values ({', '.join(self.slots)}) "
                             "separated by single spaces")
        out = []
        for slot, value in zip(self.slots, values):
            key = f"{slot}={value}"
            if key not in self.index:
                raise BenchError(f"label '{label}': '{value}' is not a value of slot '{slot}'")
            out.append(self.index[key])
        return out

    def decode(self, symbols: Sequence[int]) -> str | None:
        if len(symbols) != len(self.slots):
            return None
        values = []
        for slot, s in zip(self.slots, symbols):
            if self.slot_of[s] != slot:
                return None
            values.append(self.symbols[s].split("=", 1)[1])
        return " ".join(values)


class SlotWordLabels(SlotLabels):
    """Multi-slot labels as SpeechPrompt v2 verbalizes them: the label ``"{action} {object} {location}"`` split on
    spaces, one symbol per distinct word (v2 GSLM/preprocess/IC_fluent_commands/preprocessor.py:70-77, counted by
    GSLM/prompt/verbalizer.py:32-36), so "change language" is two symbols and one ``none`` serves every slot. A
    slot value's words are its ``_``-separated parts (the FSC adapter writes "change language" as
    ``change_language``). A word sequence decodes to the label whose slot values spell it, else None."""

    kind = "slot_words"

    def __init__(self, slots: dict[str, Sequence[str]]):
        self.slots = {k: list(v) for k, v in slots.items()}
        self.symbols = []
        for values in self.slots.values():
            for value in values:
                self.symbols += [w for w in value.split("_") if w not in self.symbols]
        self.index = {w: i for i, w in enumerate(self.symbols)}

    def encode(self, label: str) -> list[int]:
        values = label.split(" ")
        if len(values) != len(self.slots):
            raise BenchError(f"label '{label}' must hold {len(self.slots)} slot values ({', '.join(self.slots)}) "
                             "separated by single spaces")
        for slot, value in zip(self.slots, values):
            if value not in self.slots[slot]:
                raise BenchError(f"label '{label}': '{value}' is not a value of slot '{slot}'")
        return [self.index[w] for value in values for w in value.split("_")]

    def decode(self, symbols: Sequence[int]) -> str | None:
        words, values = [self.symbols[s] for s in symbols], []
        for slot_values in self.slots.values():
            match = [v for v in slot_values if v.split("_") == words[:len(v.split("_"))]]
            if not match:
                return None
            value = max(match, key=lambda v: len(v.split("_")))
            values.append(value)
            words = words[len(value.split("_")):]
        return " ".join(values) if not words else None


class TextLabels(LabelSpace):
    """Generation targets: characters, word delimiter and slot tags (``bench.tasks.text.CTCTokenizer`` without its
    blank), as in SpeechPrompt v1's ASR (29 classes) and SF (69 classes)."""

    kind = "text"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.symbols = list(tokenizer.tokens[1:])  # drop the CTC blank

    @classmethod
    def from_texts(cls, texts: Sequence[str], slot_types: Sequence[str] | None = None) -> "TextLabels":
        from bench.tasks.text import CTCTokenizer

        return cls(CTCTokenizer.from_texts(texts, slot_types))

    def encode(self, label: str) -> list[int]:
        return [i - 1 for i in self.tokenizer.encode(label)]

    def decode(self, symbols: Sequence[int]) -> str | None:
        return self.tokenizer.decode([s + 1 for s in symbols])

    def describe(self) -> dict:
        return {**super().describe(), "tokenizer": self.tokenizer.to_dict()}


def label_space_for(task, train_labels: Sequence[str], ic_labels: str = "slots") -> LabelSpace:
    """The label space of a task (generation: built from the training targets); slot-value tasks: ``ic_labels``
    ``slots`` (v1's slot symbols) or ``words`` (v2's words)."""
    if task.kind == "generation":
        return TextLabels.from_texts(train_labels, task.slot_tags)
    if task.labels:
        return ClassLabels(task.labels)
    if task.slots:
        if ic_labels not in ("slots", "words"):
            raise BenchError(f"ic_labels must be 'slots' or 'words', got {ic_labels!r}")
        return SlotWordLabels(task.slots) if ic_labels == "words" else SlotLabels(task.slots)
    raise BenchError(f"task '{task.name}': classification needs labels or slots")


# ================================================================================================================
# verbalizers
# ================================================================================================================
@dataclass
class Verbalizer:
    """Symbols ↔ LM tokens (rule-based) or ↔ learnable-verbalizer output slots.

    ``outputs``: the index, in the space decoding takes its argmax over, of each symbol. For rule-based
    verbalizers that space is the LM vocabulary and outputs are token ids; for the learnable one it is the C+4
    outputs of the linear map and symbol i is slot 4+i. ``feed``: the LM token fed back for each symbol."""

    method: str
    space: LabelSpace
    outputs: list[int]
    feed: list[int]
    eos: int  # LM token ids of </s> and <s> (the separator)
    bos: int
    output_size: int
    learnable: bool = False
    info: dict = field(default_factory=dict)
    specials: tuple[int, ...] = ()  # LM tokens of <s> <pad> </s> <unk>: what learnable slots 0..3 feed back
    injective: bool = True  # False: symbols may share an output (v2's independent random draw)

    def __post_init__(self):
        if self.injective and len(set(self.outputs)) != len(self.outputs):
            raise BenchError(f"verbalizer '{self.method}' maps two labels to the same output")
        self._symbol_of_output = {o: i for i, o in enumerate(self.outputs)}
        # output indices the loss targets for <s> and </s>: LM tokens, or learnable slots 0 and 2 (v2's C+4 layout)
        self.bos_out = SPECIAL_SLOTS["bos"] if self.learnable else self.bos
        self.eos_out = SPECIAL_SLOTS["eos"] if self.learnable else self.eos

    @property
    def num_symbols(self) -> int:
        return len(self.space)

    def target_outputs(self, label: str) -> list[int]:
        """Output indices the loss targets for the label part (``</s>`` appended by the caller)."""
        return [self.outputs[s] for s in self.space.encode(label)]

    def input_tokens(self, label: str) -> list[int]:
        """LM tokens of the label fed as input under teacher forcing."""
        return [self.feed[s] for s in self.space.encode(label)]

    def output_to_symbol(self, output: int) -> int | None:
        return self._symbol_of_output.get(int(output))

    def output_to_token(self, output: int) -> int:
        """The LM token fed back after generating ``output`` (unmapped rule-based outputs are themselves tokens)."""
        s = self._symbol_of_output.get(int(output))
        if s is not None:
            return self.feed[s]
        if not self.learnable:
            return int(output)
        return self.specials[int(output)] if int(output) < NUM_SPECIALS and self.specials else self.eos

    def decode(self, outputs: Sequence[int]) -> tuple[str | None, bool]:
        """(label or None, whether every output mapped to a symbol); ``outputs`` excludes the final ``</s>``."""
        symbols = [self.output_to_symbol(o) for o in outputs]
        ok = all(s is not None for s in symbols)
        if self.space.kind == "text":
            return self.space.decode([s for s in symbols if s is not None]), ok
        return (self.space.decode(symbols) if ok else None), ok

    def decode_against(self, outputs: Sequence[int], reference: str) -> tuple[str | None, bool]:
        """:meth:`decode`, except that outputs equal to ``reference``'s own outputs decode to ``reference``: the
        released v2 scoring compares the generated units with the verbalized reference
        (GSLM/prompt/fairseq_cli/sample.py:171-173,280-290 write both as unit strings), so symbols sharing a unit
        count as correct for each other. Equal to :meth:`decode` for an injective verbalizer."""
        if not self.injective and list(outputs) == self.target_outputs(reference):
            return reference, True
        return self.decode(outputs)

    def describe(self) -> dict:
        mapping = {sym: int(o) for sym, o in zip(self.space.symbols, self.outputs)}
        return {"method": self.method, "label_space": self.space.kind, "num_symbols": self.num_symbols,
                "output_size": self.output_size, "mapping": mapping, **self.info}


def _check_units(dictionary, units: Sequence[int]) -> list[int]:
    return [dictionary.unit_to_index(int(u)) for u in units]


def ranked_symbols(space: LabelSpace, train_labels: Sequence[str]) -> list[int]:
    """Symbols by training frequency, most frequent first; ties keep first-seen order (v1 ``verbalizer.py`` and
    v2 ``GSLM/prompt/verbalizer.py:10-19,38-39`` count in first-seen order, then a stable sort); symbols never seen
    in training follow in symbol order."""
    counts = Counter()
    for label in train_labels:
        counts.update(space.encode(label))
    ranked = [s for s, _ in sorted(counts.items(), key=lambda kv: -kv[1])]
    return ranked + [s for s in range(len(space)) if s not in counts]


def frequency_verbalizer(space: LabelSpace, dictionary, train_units: Sequence[np.ndarray],
                         train_labels: Sequence[str]) -> Verbalizer:
    """SpeechPrompt v1: the label symbol of training-frequency rank i ↦ the source unit of rank i
    (counts on the training split only; ties keep first-seen order; symbols never seen rank last, in order)."""
    unit_counts = Counter()
    for u in train_units:
        unit_counts.update(int(x) for x in u)
    ranked_units = [u for u, _ in sorted(unit_counts.items(), key=lambda kv: -kv[1])]  # stable: first-seen order
    ranked_syms = ranked_symbols(space, train_labels)
    ranked_units, fallback = _with_unseen_units("freq", space, dictionary, ranked_units)
    unit_of = {s: ranked_units[r] for r, s in enumerate(ranked_syms)}
    tokens = _check_units(dictionary, [unit_of[s] for s in range(len(space))])
    return Verbalizer("freq", space, tokens, tokens, dictionary.eos, dictionary.bos, len(dictionary),
                      info={"units": [unit_of[s] for s in range(len(space))], **fallback})


def random_verbalizer(space: LabelSpace, dictionary, train_units: Sequence[np.ndarray], seed: int,
                      draw: str = "distinct", train_labels: Sequence[str] | None = None) -> Verbalizer:
    """A seeded random map from symbols to units seen in the training sources (the v2 paper's rule-based baseline).

    ``distinct`` (bench): one-to-one. ``independent`` (v2 GSLM/prompt/verbalizer.py:55-58: label ``i`` in
    frequency order gets element ``i`` of a fresh permutation of the source units, i.e. a uniform draw of its
    own): symbols may share a unit; they then count as correct for each other (:meth:`Verbalizer.decode_against`),
    and ``info["shared_units"]`` lists them."""
    seen, fallback = _with_unseen_units("random", space, dictionary, sorted({int(x) for u in train_units for x in u}))
    if draw == "distinct":
        rng = np.random.default_rng([seed, 0x5eed])
        units = [int(u) for u in rng.choice(seen, size=len(space), replace=False)]
    elif draw == "independent":
        rng = np.random.default_rng([seed, 0x5eed, 2])
        order = ranked_symbols(space, train_labels) if train_labels is not None else list(range(len(space)))
        unit_of = {s: int(seen[rng.integers(len(seen))]) for s in order}
        units = [unit_of[s] for s in range(len(space))]
    else:
        raise BenchError(f"random_draw must be 'distinct' or 'independent', got {draw!r}")
    tokens = _check_units(dictionary, units)
    info: dict = {"units": units, "seed": seed, **fallback}
    if draw != "distinct":
        groups: dict[int, list[str]] = {}
        for sym, u in zip(space.symbols, units):
            groups.setdefault(u, []).append(sym)
        info.update(draw=draw, shared_units={str(u): g for u, g in sorted(groups.items()) if len(g) > 1})
    return Verbalizer("random", space, tokens, tokens, dictionary.eos, dictionary.bos, len(dictionary),
                      info=info, injective=draw == "distinct")


def _unit_count(dictionary) -> int:
    return len(dictionary) - NUM_SPECIALS


def _with_unseen_units(method: str, space: LabelSpace, dictionary, seen: list[int]) -> tuple[list[int], dict]:
    """The candidate units of a rule-based verbalizer: those seen in the training sources, in the given order.

    When they are fewer than the label symbols (a small K, or a quantizer that came out with empty clusters on
    this machine), the LM's unseen units follow in id order instead of failing the run, and the verbalizer's
    ``info`` names that fallback (so the record does). Only when the LM itself has too few units is it an error."""
    if len(seen) >= len(space):
        return seen, {}
    if len(space) > _unit_count(dictionary):
        raise BenchError(f"verbalizer '{method}': {len(space)} label symbols but the LM has only "
                         f"{_unit_count(dictionary)} units; use the learnable verbalizer or an LM with more units")
    seen_set = set(seen)
    unseen = [u for u in range(_unit_count(dictionary)) if u not in seen_set]
    fallback = {"fallback": f"only {len(seen)} distinct units in the training sources for {len(space)} label "
                            f"symbols: the LM's unseen units follow in id order",
                "seen_units": len(seen)}
    return seen + unseen, fallback


def identity_verbalizer(space: LabelSpace, dictionary) -> Verbalizer:
    """Symbol i ↦ unit i (v2's ``identity`` when labels are unit names)."""
    if len(space) > _unit_count(dictionary):
        raise BenchError(f"verbalizer 'identity': {len(space)} label symbols but the LM has only "
                         f"{_unit_count(dictionary)} units")
    tokens = _check_units(dictionary, range(len(space)))
    return Verbalizer("identity", space, tokens, tokens, dictionary.eos, dictionary.bos, len(dictionary))


def learnable_verbalizer(space: LabelSpace, dictionary, train_labels: Sequence[str] | None = None,
                         class_order: str = "label") -> Verbalizer:
    """SpeechPrompt v2: outputs = C+4 slots (``<s> <pad> </s> <unk>`` at 0..3 whatever the LM's own special ids,
    class j at 4+j); class j is fed back as unit j's token, through the dictionary (so a frequency-ordered
    dict.txt such as GSLM CPC-100's is handled, unlike v2's ``pred - 4``).

    ``class_order``: ``frequency`` numbers the classes by training-frequency rank, as v2 does (``verbalizer.py``
    ``learnable``: label rank i ↦ token ``str(i)``, GSLM/prompt/verbalizer.py:68-70); ``label`` in label-space
    order (bench before this option)."""
    if len(space) > _unit_count(dictionary):
        raise BenchError(f"verbalizer 'learnable': {len(space)} label symbols but the LM has only "
                         f"{_unit_count(dictionary)} units to feed them back as")
    if class_order not in CLASS_ORDERS:
        raise BenchError(f"class_order must be one of {CLASS_ORDERS}, got {class_order!r}")
    order = list(range(len(space)))
    if class_order == "frequency":
        if train_labels is None:
            raise BenchError("class_order 'frequency' needs the training labels")
        order = ranked_symbols(space, train_labels)
    rank = {s: r for r, s in enumerate(order)}
    outputs = [NUM_SPECIALS + rank[s] for s in range(len(space))]
    feed = _check_units(dictionary, [rank[s] for s in range(len(space))])
    specials = (dictionary.bos, dictionary.pad, dictionary.eos, dictionary.unk)
    return Verbalizer("learnable", space, outputs, feed, dictionary.eos, dictionary.bos,
                      len(space) + NUM_SPECIALS, learnable=True, specials=specials,
                      info={"class_order": class_order})


def build_verbalizer(method: str, space: LabelSpace, dictionary, train_units: Sequence[np.ndarray],
                     train_labels: Sequence[str], seed: int, class_order: str = "label",
                     random_draw: str = "distinct") -> Verbalizer:
    if method == "freq":
        return frequency_verbalizer(space, dictionary, train_units, train_labels)
    if method == "random":
        return random_verbalizer(space, dictionary, train_units, seed, random_draw, train_labels)
    if method == "identity":
        return identity_verbalizer(space, dictionary)
    if method == "learnable":
        return learnable_verbalizer(space, dictionary, train_labels, class_order)
    raise BenchError(f"unknown verbalizer '{method}'; expected one of {', '.join(VERBALIZERS)}")
