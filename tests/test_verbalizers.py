"""Verbalizers map labels to LM tokens one-to-one (SpeechPrompt §3): freq by rank, random distinct and seeded,
identity, learnable (C+4 outputs); IC slots get disjoint symbol ranges; ASR/SF targets are characters + tags."""

from __future__ import annotations

import numpy as np
import pytest

from bench.core.errors import BenchError
from bench.prompt.verbalizers import (ClassLabels, SlotLabels, TextLabels, build_verbalizer, frequency_verbalizer,
                                      identity_verbalizer, learnable_verbalizer, random_verbalizer)


def _dict(k=20):
    from bench.lms.model import UnitDictionary

    return UnitDictionary.from_units(k)


class _FreqOrderedDict:
    """A dictionary whose units are listed in frequency order (GSLM's CPC-100 dict.txt), so id ≠ unit + 4."""

    bos, pad, eos, unk = 0, 1, 2, 3

    def __init__(self, order):
        self.order = list(order)

    def __len__(self):
        return 4 + len(self.order)

    def unit_to_index(self, unit):
        return 4 + self.order.index(unit)


LABELS = ["yes", "no", "up"]
TRAIN_UNITS = [np.array([7, 7, 3, 9]), np.array([3, 9, 3, 11]), np.array([3, 5])]  # counts: 3:4, 9:2, 7:2, 11:1, 5:1
TRAIN_LABELS = ["no", "no", "up", "no", "up", "yes"]  # no:3, up:2, yes:1


def test_frequency_verbalizer_maps_rank_to_rank():
    d = _dict()
    v = frequency_verbalizer(ClassLabels(LABELS), d, TRAIN_UNITS, TRAIN_LABELS)
    # label ranks no > up > yes; unit ranks 3 > 7 > 9 (7 and 9 tie at 2: first seen wins)
    assert v.info["units"] == [9, 3, 7]  # yes, no, up
    assert v.target_outputs("no") == [d.unit_to_index(3)] and v.input_tokens("no") == [d.unit_to_index(3)]
    assert v.decode([d.unit_to_index(7)]) == ("up", True)
    assert v.decode([d.unit_to_index(5)]) == (None, False)  # a unit that is no label
    assert v.decode([]) == (None, True) and v.decode([d.unit_to_index(3)] * 2) == (None, True)


def test_random_verbalizer_is_seeded_distinct_and_uses_seen_units():
    space = ClassLabels(["a", "b", "c", "d"])
    units = [np.array([1, 2, 3, 4, 5, 6])]
    v1 = random_verbalizer(space, _dict(), units, seed=1)
    assert v1.info["units"] == random_verbalizer(space, _dict(), units, seed=1).info["units"]
    assert len(set(v1.info["units"])) == 4 and set(v1.info["units"]) <= {1, 2, 3, 4, 5, 6}
    draws = {tuple(random_verbalizer(space, _dict(), units, seed=s).info["units"]) for s in range(8)}
    assert len(draws) > 1
    assert "fallback" not in v1.info


def test_rule_based_verbalizers_fall_back_to_unseen_units_and_say_so():
    """Fewer distinct training units than symbols (a data-dependent k-means) is no failure: the LM's unseen
    units complete the candidates, one-to-one, and the verbalizer names the fallback; only an LM with fewer
    units than symbols is refused."""
    space = ClassLabels(["a", "b", "c", "d"])
    few = [np.array([1, 2, 1])]
    r = random_verbalizer(space, _dict(), few, seed=0)
    assert len(set(r.info["units"])) == 4 and r.info["seen_units"] == 2 and "unseen units" in r.info["fallback"]
    f = frequency_verbalizer(space, _dict(), few, ["a", "a", "b", "c"])
    assert f.info["units"][:2] == [1, 2] and f.info["units"][2:] == [0, 3] and f.info["seen_units"] == 2
    with pytest.raises(BenchError, match="the LM has only 3 units"):
        random_verbalizer(space, _dict(3), few, seed=0)
    with pytest.raises(BenchError, match="the LM has only 3 units"):
        frequency_verbalizer(space, _dict(3), few, ["a"])


def test_identity_and_learnable_verbalizers():
    d = _dict(10)
    v = identity_verbalizer(ClassLabels(LABELS), d)
    assert v.outputs == [4, 5, 6] and v.output_size == 14
    lv = learnable_verbalizer(ClassLabels(LABELS), d)
    assert lv.learnable and lv.output_size == 3 + 4  # C + 4
    assert lv.target_outputs("up") == [6] and lv.input_tokens("up") == [d.unit_to_index(2)]
    assert lv.decode([5]) == ("no", True) and lv.decode([3]) == (None, False)
    with pytest.raises(BenchError, match="only 2 units"):
        identity_verbalizer(ClassLabels(LABELS), _dict(2))


def test_learnable_verbalizer_feeds_back_through_the_dictionary():
    """v2 computes pred - 4, wrong for a frequency-ordered dict.txt; we feed class i back as unit i's real id."""
    d = _FreqOrderedDict([61, 2, 0, 1, 97])
    lv = learnable_verbalizer(ClassLabels(LABELS), d)
    assert lv.input_tokens("yes") == [4 + 2] and lv.input_tokens("no") == [4 + 3] and lv.input_tokens("up") == [5]


def test_slot_labels_use_disjoint_ranges_per_slot():
    space = SlotLabels({"action": ["on", "off"], "object": ["none", "lamp"], "location": ["none", "kitchen"]})
    assert len(space) == 6  # C = sum of slot sizes (FSC: 24)
    assert space.encode("off lamp none") == [1, 3, 4]
    assert space.decode([1, 3, 4]) == "off lamp none"
    assert space.decode([1, 4, 4]) is None  # 'none' of location in the object slot
    with pytest.raises(BenchError, match="slot values"):
        space.encode("off lamp")
    v = build_verbalizer("freq", space, _dict(), [np.arange(10)], ["off lamp none", "on none kitchen"], 0)
    assert len(v.target_outputs("on lamp kitchen")) == 3


def test_text_labels_are_characters_and_slot_tags():
    asr = TextLabels.from_texts(["go up", "stop"])
    assert "|" in asr.symbols and set("goupst") <= set(asr.symbols)
    assert asr.decode(asr.encode("go up")) == "go up"
    sf = TextLabels.from_texts(["play B-song hey E-song"], slot_types=["song"])
    assert {"B-song", "E-song"} <= set(sf.symbols)
    assert sf.decode(sf.encode("play B-song hey E-song")) == "play B-song hey E-song"
    v = build_verbalizer("random", sf, _dict(40), [np.arange(40)], ["play B-song hey E-song"], 0)
    toks = v.target_outputs("play B-song hey E-song")
    # an unmapped output is dropped from the text and reported
    assert v.decode(toks) == ("play B-song hey E-song", True)
    stray = next(t for t in range(4, 44) if t not in v.outputs)
    assert v.decode([*toks[:2], stray, *toks[2:]]) == ("play B-song hey E-song", False)


def test_unknown_verbalizer_and_unknown_label_are_refused():
    with pytest.raises(BenchError, match="unknown verbalizer"):
        build_verbalizer("kmeans", ClassLabels(LABELS), _dict(), TRAIN_UNITS, TRAIN_LABELS, 0)
    with pytest.raises(BenchError, match="not one of"):
        ClassLabels(LABELS).encode("maybe")
