"""CTC tokenizers: characters for ASR, characters + glued slot tags for SF, as s3prl's ctc/text.py encodes them."""

from __future__ import annotations

import importlib.util

import pytest

from bench.core.errors import BenchError
from bench.tasks.text import BLANK, UNK, WORD_DELIMITER, CTCTokenizer

SF = ["play B-artist queen E-artist in the B-room kitchen E-room",
      "add B-artist sabrina salerno E-artist to B-playlist grime E-playlist"]


def test_character_vocabulary_from_train_texts_with_blank_zero():
    tok = CTCTokenizer.from_texts(["ab ba", "c  a"])
    assert tok.tokens[:3] == [BLANK, UNK, WORD_DELIMITER] and tok.tokens[3:] == ["a", "b", "c"]
    ids = tok.encode("ab  c")
    assert 0 not in ids
    assert [tok.tokens[i] for i in ids] == ["a", "b", "|", "c"]
    assert tok.decode(ids) == "ab c"
    assert tok.to_dict()["type"] == "character" and tok.to_dict()["size"] == 6


def test_unseen_characters_map_to_unk_and_are_dropped_when_decoded():
    tok = CTCTokenizer.from_texts(["ab"])
    assert tok.encode("az") == [tok.index["a"], 1]
    assert tok.decode(tok.encode("az")) == "a"


def test_ctc_greedy_collapses_repeats_and_drops_blanks():
    tok = CTCTokenizer.from_texts(["ab"])
    a, b, sep = tok.index["a"], tok.index["b"], tok.index["|"]
    assert tok.ctc_greedy([0, a, a, 0, a, b, b, sep, sep, b, 0]) == "aab b"
    assert tok.ctc_greedy([0, 0]) == ""


def test_slot_tags_are_single_tokens_glued_to_their_words():
    tok = CTCTokenizer.from_texts(SF, slot_types=["artist", "playlist", "room"])
    assert tok.tags == ["B-artist", "E-artist", "B-playlist", "E-playlist", "B-room", "E-room"]
    toks = [tok.tokens[i] for i in tok.encode(SF[0])]
    assert toks[:12] == ["p", "l", "a", "y", "|", "B-artist", "q", "u", "e", "e", "n", "E-artist"]
    assert "-" not in tok.characters  # tag words never leak characters into the vocabulary
    for text in SF:
        assert tok.decode(tok.encode(text)) == text


def test_undeclared_slot_tag_is_an_error():
    with pytest.raises(BenchError, match="B-city"):
        CTCTokenizer.from_texts(["weather in B-city paris E-city"], slot_types=["room"])


def test_sf_tokens_match_s3prl_character_slot_encoder():
    """s3prl's CharacterTextSlotEncoder reads "BOS words EOS<TAB>O iob EOS"; our word-level tag format must give
    the same token sequence (its space token is our delimiter; its trailing <eos> has no counterpart in CTC)."""
    spec = importlib.util.find_spec("s3prl")
    path = spec.submodule_search_locations[0] + "/downstream/ctc/text.py"
    mspec = importlib.util.spec_from_file_location("s3prl_ctc_text", path)
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)

    words = ["add", "sabrina", "salerno", "to", "grime", "in", "the", "kitchen"]
    iobs = ["O", "artist", "artist", "O", "playlist", "O", "O", "room"]
    chars = sorted(set("".join(words)))
    ref = mod.CharacterTextSlotEncoder([" ", *chars], ["B-artist", "E-artist", "B-playlist", "E-playlist",
                                                       "B-room", "E-room"])
    ref_ids = ref.encode(f"BOS {' '.join(words)} EOS\tO {' '.join(iobs)} O")
    ref_tokens = [ref.idx_to_vocab(i).strip() or "|" for i in ref_ids[:-1]]  # drop <eos>

    ours = CTCTokenizer(chars, ["B-artist", "E-artist", "B-playlist", "E-playlist", "B-room", "E-room"])
    text = "add B-artist sabrina salerno E-artist to B-playlist grime E-playlist in the B-room kitchen E-room"
    assert [ours.tokens[i] for i in ours.encode(text)] == ref_tokens
    assert ref.decode(ref_ids).split() == text.split()
