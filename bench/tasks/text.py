"""Text targets of generation tasks and their CTC token vocabularies.

Target format (what manifests hold and metrics read): words separated by single spaces; slot-filling targets
wrap each slot value in tag words ``B-<slot>`` ... ``E-<slot>``, e.g. ``play B-artist queen E-artist``.

Tokenisation follows s3prl's ``downstream/ctc/text.py``:
- ``character`` (SUPERB ASR): one token per character, a word delimiter ``|`` between words;
- ``character-slot`` (SUPERB SF): the same, with every tag word one token, glued to the word it opens or
  closes (no delimiter between a tag and its word), so ``B-artist queen E-artist`` is
  ``[B-artist] q u e e n [E-artist]``. Decoding puts the spaces back around the tags.
Token 0 is the CTC blank, 1 stands for characters never seen in training. The vocabulary is built from the
train split and recorded with the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from bench.core.errors import BenchError

BLANK = "<blank>"
UNK = "<unk>"
WORD_DELIMITER = "|"
_SPACES = re.compile(r"\s+")


def normalize_spaces(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def slot_tag_tokens(slot_types: Sequence[str]) -> list[str]:
    """``B-x``, ``E-x`` for every slot type, in the task's order (s3prl ``load_from_file`` does the same)."""
    return [f"{p}-{s}" for s in slot_types for p in ("B", "E")]


def is_tag(word: str) -> bool:
    return len(word) > 2 and word[:2] in ("B-", "E-")


@dataclass
class CTCTokenizer:
    """Characters (+ slot-tag tokens) ↔ ids; id 0 is the CTC blank."""

    characters: list[str]
    tags: list[str] = field(default_factory=list)

    def __post_init__(self):
        bad = [c for c in self.characters if len(c) != 1 or c.isspace() or c == WORD_DELIMITER]
        if bad:
            raise BenchError(f"tokenizer characters must be single non-space characters other than "
                             f"'{WORD_DELIMITER}', got {bad[:5]}")
        self.tokens = [BLANK, UNK, WORD_DELIMITER, *self.characters, *self.tags]
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise BenchError("tokenizer vocabulary has duplicate tokens")
        self._tag_set = set(self.tags)

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_texts(cls, texts: Iterable[str], slot_types: Sequence[str] | None = None) -> "CTCTokenizer":
        """Character set of the (train) texts, sorted; with ``slot_types``, tag words become tag tokens
        and any tag word of an undeclared slot type is an error."""
        tags = slot_tag_tokens(slot_types or [])
        tag_set, chars = set(tags), set()
        for text in texts:
            for word in normalize_spaces(text).split(" "):
                if slot_types is not None and is_tag(word):
                    if word not in tag_set:
                        raise BenchError(f"target word '{word}' looks like a slot tag but its slot type is not in "
                                         f"the task's slot_tags {list(slot_types)}")
                    continue
                chars.update(word)
        chars.discard(WORD_DELIMITER)
        return cls(sorted(chars), tags)

    @classmethod
    def from_dict(cls, d: dict) -> "CTCTokenizer":
        return cls(list(d["characters"]), list(d.get("tags", [])))

    def to_dict(self) -> dict:
        return {"type": "character-slot" if self.tags else "character", "characters": self.characters,
                "tags": self.tags, "blank": 0, "word_delimiter": WORD_DELIMITER, "size": len(self)}

    def __len__(self) -> int:
        return len(self.tokens)

    # ---- encode / decode ----------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids (never the blank). Delimiters separate word groups; a group is opening tags + a word +
        closing tags, as in s3prl's ``CharacterTextSlotEncoder``."""
        ids: list[int] = []
        prev_opens_word = False  # previous token was a B- tag: the next word is glued to it
        for word in normalize_spaces(text).split(" "):
            if not word:
                continue
            if word in self._tag_set:
                if word.startswith("B-"):
                    if ids and not prev_opens_word:
                        ids.append(self.index[WORD_DELIMITER])
                    prev_opens_word = True
                else:
                    prev_opens_word = False
                ids.append(self.index[word])
                continue
            if ids and not prev_opens_word:
                ids.append(self.index[WORD_DELIMITER])
            ids.extend(self.index.get(c, 1) for c in word)
            prev_opens_word = False
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids (blank-free) → target text with single spaces (unknown characters dropped)."""
        parts = []
        for i in ids:
            tok = self.tokens[int(i)]
            if tok in (BLANK, UNK):
                continue
            if tok == WORD_DELIMITER:
                parts.append(" ")
            elif tok in self._tag_set:
                parts.append(f" {tok} ")
            else:
                parts.append(tok)
        return normalize_spaces("".join(parts))

    def ctc_greedy(self, frame_ids: Iterable[int]) -> str:
        """Best-path CTC decoding: collapse repeats, drop blanks (Graves et al. 2006, §3.2)."""
        out, prev = [], None
        for i in frame_ids:
            i = int(i)
            if i != prev and i != 0:
                out.append(i)
            prev = i
        return self.decode(out)
