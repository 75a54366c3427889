"""Audio SNIPS slot filling as in SUPERB SF / SpeechPrompt v1 SF (generation with slot tags).

Layout under the root (SUPERB's preprocessed ``SNIPS/``): ``{train,valid,test}/<Speaker>-snips-<split>-<n>.wav``
and ``all.iob.snips.txt``, one line per utterance::

    <Speaker>-snips-<split>-<n> BOS w1 ... wn EOS<TAB>O t1 ... tn <Intent>

Split (s3prl ``snips.yaml``): each folder keeps only the files of its speaker list (train: Ivy, Joanna, Joey,
Justin, Kendra, Kimberly, Matthew, Salli; valid: Aditi, Amy, Geraint, Nicole; test: Brian, Emma, Raveena,
Russell), so speakers and sentences are both disjoint. Target (bench/text format, s3prl's character-slot
encoding at word level): the words, with each slot span wrapped in ``B-<slot>`` / ``E-<slot>`` tag words, e.g.
``add B-artist sabrina salerno E-artist to the B-playlist grime instrumentals E-playlist``. A span is a run of
words with the same slot type (tags may be plain types or IOB ``B-x``/``I-x``; a ``B-`` starts a new span).
Words are lower-cased and accents folded to ASCII (SUPERB maps accented capitals to plain ones).
``text_normalization: s3prl`` (the ``superb`` and ``speechprompt-v1`` recipes) also applies s3prl's character-slot
encoder (``s3prl/downstream/ctc/text.py``:112-116): words that are punctuation (``wrd in "?!.,;-"``) are dropped,
with no slot tag of their own, and ``&`` becomes ``and`` (s3prl's ``AND``; bench's text is lower-case). The default
``bench`` keeps every word.
"""

from __future__ import annotations

import unicodedata

from bench.data.corpora.base import CorpusAdapter, MalformedCorpusError, read_lines, sorted_files
from bench.data.manifest import Example

SUPERB_SPEAKERS = {
    "train": ["Ivy", "Joanna", "Joey", "Justin", "Kendra", "Kimberly", "Matthew", "Salli"],
    "valid": ["Aditi", "Amy", "Geraint", "Nicole"],
    "test": ["Brian", "Emma", "Raveena", "Russell"],
}
_FOLD = str.maketrans({"æ": "a", "ð": "d", "ø": "o", "ł": "l", "ß": "ss", '"': " "})


def fold_word(word: str) -> str:
    """Lower-case ASCII (accents removed), as SUPERB's character vocabulary expects."""
    w = unicodedata.normalize("NFKD", word.lower().translate(_FOLD))
    return "".join(c for c in w if not unicodedata.combining(c)).strip()


def slot_type(tag: str) -> str:
    return tag[2:] if tag[:2] in ("B-", "I-") else tag


S3PRL_PUNCTUATION = "?!.,;-"  # s3prl drops a word w when `w in "?!.,;-"` (a substring test, text.py:113)


def tagged_target(words: list[str], tags: list[str], normalization: str = "bench") -> str:
    """Words with ``B-<slot>`` before and ``E-<slot>`` after every slot span (``normalization``: bench | s3prl)."""
    out: list[str] = []
    for i, (word, tag) in enumerate(zip(words, tags)):
        if normalization == "s3prl":
            if word in S3PRL_PUNCTUATION:
                continue
            if word == "&":
                word = "and"
        kind = slot_type(tag)
        begins = tag != "O" and (i == 0 or tag.startswith("B-") or slot_type(tags[i - 1]) != kind)
        if begins:
            out.append(f"B-{kind}")
        out += fold_word(word).split()
        if tag != "O":
            nxt = tags[i + 1] if i + 1 < len(tags) else "O"
            if nxt.startswith("B-") or slot_type(nxt) != kind or nxt == "O":
                out.append(f"E-{kind}")
    return " ".join(out)


def parse_iob_line(line: str, where: str, normalization: str = "bench") -> tuple[str, str, str]:
    """(utterance id, tagged target, intent) of one all.iob.snips.txt line."""
    uid, _, rest = line.partition(" ")
    sentence, tab, tag_part = rest.partition("\t")
    words, tags = sentence.split(), tag_part.split()
    if not tab or len(words) != len(tags) or len(words) < 3 or words[0] != "BOS" or words[-1] != "EOS":
        raise MalformedCorpusError(f"{where}: expected '<id> BOS words EOS<TAB>O tags <intent>' with one tag per "
                                   f"word, got {len(words)} words and {len(tags)} tags")
    intent = tags[-1]
    words, tags = words[1:-1], tags[1:-1]
    bad = [t for t in tags if t != "O" and not slot_type(t)]
    if bad:
        raise MalformedCorpusError(f"{where}: empty slot tag {bad[0]!r}")
    return uid, tagged_target(words, tags, normalization), intent


class Adapter(CorpusAdapter):
    title = "Audio SNIPS (SUPERB speaker split)"
    obtain = ("Audio SNIPS (Lai et al., ICASSP 2021) as preprocessed for SUPERB SF: see s3prl's "
              "downstream/docs/superb.md (SF) for the download; the root holds all.iob.snips.txt and train/ valid/ "
              "test/.")
    defaults = {"speakers": SUPERB_SPEAKERS, "transcript_file": "all.iob.snips.txt", "text_normalization": "bench"}

    def required(self) -> list[str]:
        return [self.params["transcript_file"], "train", "valid", "test"]

    def examples(self) -> list[Example]:
        tf = self.path(self.params["transcript_file"])
        targets: dict[str, tuple[str, str]] = {}
        norm = self.params["text_normalization"]
        if norm not in ("bench", "s3prl"):
            raise MalformedCorpusError(f"data.params.text_normalization must be bench or s3prl, not {norm!r}")
        for n, line in read_lines(tf):
            uid, target, intent = parse_iob_line(line, f"{tf}:{n}", norm)
            for kind in {w[2:] for w in target.split() if w.startswith(("B-", "E-"))}:
                if self.spec.slot_tags is not None and kind not in self.spec.slot_tags:
                    raise MalformedCorpusError(f"{tf}:{n}: slot type '{kind}' is not in the task's slot_tags")
            targets[uid] = (target, intent)
        out = []
        for split, speakers in self.params["speakers"].items():
            for wav in sorted_files(self.path(split)):
                speaker = wav.stem.split("-")[0]
                if speaker not in speakers:
                    continue
                if wav.stem not in targets:
                    raise MalformedCorpusError(f"{tf}: no transcript line for {wav.name} (id '{wav.stem}')")
                target, intent = targets[wav.stem]
                out.append(self.example(wav.stem, wav, target, split, speaker, extra={"intent": intent}))
        return out
