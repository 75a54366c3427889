"""A rendered multilingual speech corpus for pretraining the offline stand-in unit LMs (never for evaluation).

GSLM's ULM learnt unit order from 6k hours of LibriLight; the stand-in had only the 2.6 h of the built-in suite's
training audio. This corpus gives it more speech from the same synthesiser while staying out of every built-in
evaluation:

- **text**: sentences of 3–16 words drawn by their frequency in running text (``wordfreq``'s lists, the
  ``vocabulary`` most frequent alphabetic words of each language). Word salad, but with the phonotactics and word
  frequencies of the language. Half the utterances are English, the rest spread over the other languages the
  built-in tasks speak (LID: es fr de ru it; SCR: nl lt ar es), as LibriLight-style English pretraining would leave
  a stand-in deaf to them (measured: an English-only 10 h corpus cost LID 14 points). The LM build drops any
  utterance whose text equals a built-in valid or test transcript (:func:`held_out_texts`).
- **voices**: each language's espeak-ng voice (English: its eight accents) × variants that **no built-in task
  uses** (``PRETRAIN_VARIANTS``; the tasks use the base voice, m1–m7 and f1–f5), so no evaluation speaker, in any
  split, is in it.
- **audio**: the suite's own augmentation chain (speed, reverberation, noise, gain) at its default strength.

It is built in shards of ``SHARD_UTTERANCES`` utterances, each a function of (config, shard index) alone and written
atomically, so a killed build resumes at its first missing shard and a longer corpus extends a shorter one (``hours``
is not part of the directory's key: shards are added until the hours are reached).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bench.core.errors import BenchError, DependencyError
from bench.data.manifest import Example, Manifest, atomic_directory, write_text_atomic

SHARD_UTTERANCES = 1000
VOCABULARY = 20_000
# (wordfreq language, espeak-ng voices, share of utterances): English first, then the built-in tasks' languages
LANGUAGES = (("en", None, 0.5), ("es", ("es",), 0.0625), ("fr", ("fr",), 0.0625), ("de", ("de",), 0.0625),
             ("ru", ("ru",), 0.0625), ("it", ("it",), 0.0625), ("nl", ("nl",), 0.0625), ("lt", ("lt",), 0.0625),
             ("ar", ("ar",), 0.0625))
# espeak-ng variants no built-in task uses (bench.data.builtin: "", m1-m7, f1-f5), each checked to change the voice
# (tests/test_pretrain_speech.py); robotic and creature variants left out.
PRETRAIN_VARIANTS = ("m8", "adam", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin", "boris", "caleb",
                     "david", "edward", "grandma", "grandpa", "ian", "john", "linda", "max", "michel", "norbert",
                     "paul", "quincy", "rob", "robert", "shelby", "steph", "travis", "victor", "zac", "Michael",
                     "Lee", "Storm", "Alex", "Gene", "Hugo", "Mike", "Reed", "whisper", "whisperf")


@dataclass(frozen=True)
class PretrainSpeechConfig:
    """What defines the corpus; everything but ``hours`` names its directory (shards extend a shorter corpus)."""

    hours: float = 50.0
    seed: int = 0
    vocabulary: int = VOCABULARY
    min_words: int = 3
    max_words: int = 16
    languages: tuple = LANGUAGES
    recipe: int = 2  # bumped when the same settings would render different audio (2: multilingual)

    def key(self) -> str:
        d = asdict(self)
        d.pop("hours")
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def directory(self, data_dir: Path | None = None) -> Path:
        from bench.core.paths import data_dir as default_data

        return Path(data_dir or default_data()) / f"pretrain-speech-{self.key()}"


def frequent_words(language: str, n: int = VOCABULARY) -> tuple[list[str], np.ndarray]:
    """The ``n`` most frequent alphabetic words of ``language`` and their probabilities (renormalised over them)."""
    try:
        import wordfreq
    except ImportError:
        raise DependencyError("the pretraining corpus needs the PyPI package 'wordfreq' (pip install wordfreq)") \
            from None
    words = [w for w in wordfreq.top_n_list(language, int(n * 1.2) + 100) if w.replace("'", "").isalpha()][:n]
    if len(words) < n:
        raise BenchError(f"wordfreq's '{language}' list has only {len(words)} alphabetic words; asked for {n}")
    freq = np.array([wordfreq.word_frequency(w, language) for w in words], dtype=np.float64)
    return words, freq / freq.sum()


def pretrain_voices(seed: int, voices: tuple[str, ...] | None) -> list:
    """Every (espeak voice, unused variant) speaker of one language (``None``: the eight English accents)."""
    from bench.data.builtin import _common as C
    from bench.data.tts import ENGLISH_ACCENTS

    return C.make_voices([(a, v) for a in (voices or ENGLISH_ACCENTS) for v in PRETRAIN_VARIANTS], seed,
                         "pretrain-speech")


@dataclass
class _Language:
    code: str
    share: float
    words: list[str]
    probs: np.ndarray
    voices: list


def _languages(config: PretrainSpeechConfig) -> list[_Language]:
    shares = np.array([share for _, _, share in config.languages], dtype=np.float64)
    if (shares <= 0).any() or abs(shares.sum() - 1) > 1e-9:
        raise BenchError(f"pretraining speech: language shares must be positive and sum to 1, got {shares.tolist()}")
    return [_Language(code, share, *frequent_words(code, config.vocabulary), pretrain_voices(config.seed, voices))
            for code, voices, share in config.languages]


def shard_jobs(config: PretrainSpeechConfig, shard: int, languages: list[_Language]) -> list:
    """The render jobs of one shard: language, text and voice drawn from (seed, shard) alone."""
    from bench.data.augment import AugmentConfig
    from bench.data.builtin import _common as C

    rng = C.sub_rng(config.seed, "pretrain-speech", "shard", shard)
    shares = np.array([lang.share for lang in languages])
    aug = AugmentConfig()
    jobs = []
    for i in range(SHARD_UTTERANCES):
        lang = languages[int(rng.choice(len(languages), p=shares))]
        n = int(rng.integers(config.min_words, config.max_words + 1))
        text = " ".join(lang.words[j] for j in rng.choice(len(lang.words), size=n, p=lang.probs))
        voice = lang.voices[int(rng.integers(len(lang.voices)))]
        uid = f"pretrain-{shard:04d}-{i:04d}"
        jobs.append(C.Job(uid, "train", lang.code, voice.speaker_id, C.speech(text, voice, aug),
                          {"text": text, "language": lang.code}))
    return jobs


def build_pretrain_speech(config: PretrainSpeechConfig, data_dir: Path | None = None,
                          advance_factory: Callable | None = None,
                          log: Callable[[str], object] | None = None) -> Manifest:
    """Render (or reuse) shards until the corpus holds ``config.hours`` of audio; returns its manifest (split
    ``train`` only: the LM takes its own validation fraction from it)."""
    from bench.data.audio import SAMPLE_RATE, duration_samples
    from bench.data.builtin import _common as C

    root = config.directory(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(root / "config.json", json.dumps({k: v for k, v in asdict(config).items() if k != "hours"},
                                                       indent=1), what="pretraining speech config")
    languages = None
    examples: list[Example] = []
    seconds, shard = 0.0, 0
    while seconds < config.hours * 3600:
        name = f"shard-{shard:04d}"
        manifest_file = root / name / "manifest.jsonl"
        if not manifest_file.is_file():
            languages = languages or _languages(config)
            jobs = shard_jobs(config, shard, languages)
            with atomic_directory(root / name) as tmp:
                C.render_jobs(jobs, tmp, config.seed, f"pretrain-speech {name}", advance_factory) \
                    .write(tmp / "manifest.jsonl")
        part = Manifest.read(manifest_file)
        for e in part:
            seconds += duration_samples(part.audio_path(e)) / SAMPLE_RATE
            examples.append(Example(e.id, f"{name}/{e.path}", e.label, e.split, e.speaker, audio_sha1=e.audio_sha1,
                                    extra=e.extra))
        shard += 1
        if log is not None:
            log(f"pretraining speech: {shard} shard(s), {seconds / 3600:.2f} h of {config.hours:g} h")
    return Manifest(examples, root=root)


def held_out_texts(manifests) -> set[str]:
    """Normalised transcripts of every valid and test utterance of ``manifests`` (the built-in tasks): the
    pretraining corpus must not speak any of them."""
    out = set()
    for manifest in manifests:
        for e in manifest:
            if e.split in ("valid", "test"):
                text = e.extra.get("text") if isinstance(e.extra, dict) else None
                if text:
                    out.add(normalise(text))
    return out


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w' ]", " ", text.lower()).split())
