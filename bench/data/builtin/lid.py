"""builtin-lid: spoken language identification over six espeak-ng languages (the Voxforge LID set).

Half the utterances are numbers (the same numerals read in each language's own words, so content is not a cue),
half short native phrases. Voice identities (language × variant) are held out between splits per language.
"""

from __future__ import annotations

from pathlib import Path

from bench.data.builtin import _common as C
from bench.tasks.registry import TaskSpec

PHRASES = {
    "en-us": ["good morning", "where is the station", "thank you very much", "i would like a coffee",
              "see you tomorrow", "the weather is nice today"],
    "es": ["buenos días", "dónde está la estación", "muchas gracias", "quiero un café", "hasta mañana",
           "hace buen tiempo hoy"],
    "fr": ["bonjour", "où est la gare", "merci beaucoup", "je voudrais un café", "à demain",
           "il fait beau aujourd'hui"],
    "de": ["guten Morgen", "wo ist der Bahnhof", "vielen Dank", "ich möchte einen Kaffee", "bis morgen",
           "das Wetter ist heute schön"],
    "ru": ["доброе утро", "где вокзал", "большое спасибо", "я хочу кофе", "до завтра", "сегодня хорошая погода"],
    "it": ["buongiorno", "dov'è la stazione", "grazie mille", "vorrei un caffè", "a domani", "oggi fa bel tempo"],
}
VARIANTS = ("", "m1", "m2", "m3", "m5", "f1", "f2", "f3", "f4")


def texts_for(language: str, rng, n: int = 24) -> list[str]:
    numbers = [str(int(rng.integers(2, 9999))) for _ in range(n)]
    return [*numbers[: n // 2], *PHRASES[language]]


def build(spec: TaskSpec, out_dir: Path, size: str, seed: int, advance_factory=None):
    counts = C.per_split_counts(spec, size)
    aug = C.augment_config(spec)
    languages = list(spec.labels)
    unknown = [lang for lang in languages if lang not in PHRASES]
    if unknown:
        from bench.core.errors import BenchError

        raise BenchError(f"{spec.source_file}: builtin lid has no phrases for languages {unknown}; "
                         f"known: {sorted(PHRASES)}")
    jobs = []
    for lang in languages:
        voices = C.make_voices([(lang, v) for v in VARIANTS], seed, spec.name)
        split_voices = C.voices_by_split(voices, seed, f"{spec.name}/{lang}")
        texts = texts_for(lang, C.sub_rng(seed, "texts", spec.name, lang))
        jobs += C.balanced_speech_jobs(spec.name, {lang: texts}, split_voices, counts, seed,
                                       lambda label, text, voice: C.speech(text, voice, aug))
    return C.render_jobs(jobs, out_dir, seed, spec.name, advance_factory)
