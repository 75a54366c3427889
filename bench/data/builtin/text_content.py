"""Closed-vocabulary text for the sentence-level built-in tasks (ASR, accent, gender, prosody, fake-speech).

Template sentences are drawn from a small grammar with a seeded generator, so the test set contains sentences
never seen in training while the vocabulary is shared (no out-of-vocabulary words by construction).
"""

from __future__ import annotations

import numpy as np

SUBJECTS = ("the old man", "a young woman", "my brother", "the teacher", "our neighbour", "the little girl",
            "his father", "the doctor", "a tall boy", "her sister", "the farmer", "my friend")
VERBS = ("found", "carried", "painted", "opened", "cleaned", "bought", "sold", "dropped", "washed", "moved",
         "fixed", "watched")
OBJECTS = ("the red box", "a wooden chair", "the green door", "an old book", "the small boat", "a blue cup",
           "the heavy bag", "a bright lamp", "the long rope", "a white horse", "the broken clock", "a warm coat")
PLACES = ("near the river", "in the garden", "at the station", "behind the house", "on the hill", "by the window",
          "in the kitchen", "under the bridge", "at the market", "after dinner", "before noon", "in the morning")
STATEMENTS = ("you are going home", "she has finished the work", "they found the keys", "the train is late",
              "we can start now", "he likes the blue car", "the shop is open", "it will rain today",
              "you saw the doctor", "the door was locked", "they are ready to leave", "she knows the answer",
              "the water is cold", "we missed the bus", "he is coming tomorrow", "the children are asleep")


def sentence(rng: np.random.Generator) -> str:
    """subject verb object [place], e.g. 'the old man painted a wooden chair in the garden'."""
    words = [SUBJECTS[rng.integers(len(SUBJECTS))], VERBS[rng.integers(len(VERBS))],
             OBJECTS[rng.integers(len(OBJECTS))]]
    if rng.random() < 0.7:
        words.append(PLACES[rng.integers(len(PLACES))])
    return " ".join(words)


def sentences(n: int, rng: np.random.Generator, exclude: set[str] = frozenset()) -> list[str]:
    """``n`` distinct sentences not in ``exclude`` (the grammar has 12^3·13 ≈ 22k sentences)."""
    out: list[str] = []
    seen = set(exclude)
    while len(out) < n:
        s = sentence(rng)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out
