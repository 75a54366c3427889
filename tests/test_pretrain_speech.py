"""The rendered pretraining corpus of the stand-in LMs: voices no built-in task uses, shards that resume and extend,
held-out transcripts dropped, and the LM build that adds it on the unchanged k-means."""

from __future__ import annotations

import hashlib
import json

import pytest

from bench.data import pretrain_speech as P


def test_pretraining_voices_are_no_built_in_tasks_voices_and_each_changes_the_timbre():
    from bench.data.builtin import lid, scr
    from bench.data.tts import FEMALE_VARIANTS, MALE_VARIANTS, Voice, synthesize

    used = {"", *MALE_VARIANTS, *FEMALE_VARIANTS, *lid.VARIANTS, *scr.VARIANTS}
    assert not used & set(P.PRETRAIN_VARIANTS)
    digest = {hashlib.sha1(synthesize("seven", Voice("en-us", v)).tobytes()).hexdigest()
              for v in ("", *P.PRETRAIN_VARIANTS)}
    assert len(digest) == 1 + len(P.PRETRAIN_VARIANTS)  # an unknown variant name would fall back to the base voice


def test_words_follow_their_frequency_in_every_language_of_the_corpus():
    words, probs = P.frequent_words("en", 500)
    assert len(words) == 500 and words[0] == "the" and abs(probs.sum() - 1) < 1e-9
    assert probs[0] > 10 * probs[-1] and all(w.replace("'", "").isalpha() for w in words)
    for code, _, _ in P.LANGUAGES:  # the default vocabulary exists in each
        assert len(P.frequent_words(code)[0]) == P.VOCABULARY
    assert P.normalise("¿Dónde  está?") == "dónde está"  # held-out matching keeps non-ASCII letters


def test_the_corpus_speaks_the_built_in_tasks_languages():
    from bench.tasks.registry import TaskRegistry

    registry = TaskRegistry()
    spoken = {lang.split("-")[0] for lang in registry.get("builtin-lid").labels}
    spoken |= set(registry.get("builtin-scr").data.params["languages"])
    assert spoken <= {code for code, _, _ in P.LANGUAGES}


def test_shards_are_deterministic_resume_and_extend(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "SHARD_UTTERANCES", 3)
    short = P.PretrainSpeechConfig(hours=1e-4, vocabulary=300)  # 0.36 s: one shard
    a = P.build_pretrain_speech(short, tmp_path / "a")
    assert len(a) == 3 and {e.split for e in a} == {"train"} and {e.label for e in a} <= {c for c, _, _ in P.LANGUAGES}
    assert all(short.min_words <= len(e.extra["text"].split()) <= short.max_words for e in a)
    root = short.directory(tmp_path / "a")
    stamp = (root / "shard-0000" / "manifest.jsonl").stat().st_mtime_ns
    longer = P.PretrainSpeechConfig(hours=a_hours(a) + 1e-4, vocabulary=300)
    assert longer.directory(tmp_path / "a") == root  # hours are not part of the key
    b = P.build_pretrain_speech(longer, tmp_path / "a")
    assert len(b) == 6 and [e.audio_sha1 for e in b][:3] == [e.audio_sha1 for e in a]
    assert (root / "shard-0000" / "manifest.jsonl").stat().st_mtime_ns == stamp  # reused, not rendered again
    again = P.build_pretrain_speech(longer, tmp_path / "b")  # elsewhere, from nothing: the same corpus
    assert again.checksum() == b.checksum()
    assert P.PretrainSpeechConfig(seed=1).key() != short.key()


def a_hours(manifest) -> float:
    from bench.data.audio import SAMPLE_RATE, duration_samples

    return sum(duration_samples(manifest.audio_path(e)) for e in manifest) / SAMPLE_RATE / 3600


def test_held_out_texts_are_the_valid_and_test_transcripts():
    from bench.data.manifest import Example, Manifest

    m = Manifest([Example("a", "a.wav", "x", "train", extra={"text": "The cat."}),
                  Example("b", "b.wav", "x", "test", extra={"text": "The  dog!"}),
                  Example("c", "c.wav", "x", "valid", extra={"text": "a bird"}),
                  Example("d", "d.wav", "x", "test")])
    assert P.held_out_texts([m]) == {"the dog", "a bird"}


def _home_with_a_held_out_corpus_utterance(tmp_path, monkeypatch, which: int):
    """A run context on ``tmp_path/home`` and a one-shard corpus whose utterance ``which`` speaks a text the
    built-in tasks hold out (as if it were a valid/test transcript), so the builds must drop it."""
    from bench.methods.base import RunContext

    ctx = RunContext(seed=0, cache_dir=tmp_path / "home" / "cache", models_dir=tmp_path / "home" / "models",
                     log=lambda s: None)
    corpus = P.build_pretrain_speech(P.PretrainSpeechConfig(hours=1e-4), tmp_path / "home" / "data")
    spoken = corpus.examples[which].extra["text"]
    held = P.held_out_texts
    monkeypatch.setattr(P, "held_out_texts", lambda manifests: held(manifests) | {P.normalise(spoken)})
    return ctx, corpus


@pytest.mark.slow
def test_default_lm_with_pretraining_speech_keeps_the_units_and_drops_held_out_text(tmp_path, monkeypatch):
    from bench.lms import default_lm
    from bench.lms.default_lm import DefaultLMConfig, ensure_default_lm, locate_lm
    from bench.units.kmeans import KMeansQuantizer

    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(P, "SHARD_UTTERANCES", 4)
    base = DefaultLMConfig(tasks="builtin-ks", size="tiny", num_units=12, kmeans_n_init=1)  # LM settings: default
    assert "speech_hours" not in base.hashed_fields()  # unset, it leaves every existing LM's name as it was
    ctx, corpus = _home_with_a_held_out_corpus_utterance(tmp_path, monkeypatch, 1)

    from dataclasses import replace

    with_speech = replace(base, speech_hours=1e-4, lm_size="tiny", max_epochs=1)
    assert with_speech.units_base() == base  # another LM on the same units reuses the default's k-means
    assert with_speech.hash() != base.hash()
    named = with_speech.hash()
    with monkeypatch.context() as m:  # another corpus recipe: another LM, never a cached one of the old speech
        m.setattr(DefaultLMConfig, "speech_corpus",
                  lambda self: P.PretrainSpeechConfig(hours=self.speech_hours, recipe=99))
        assert with_speech.hash() != named
    b = ensure_default_lm(ctx, config=base)
    # as a shipped LM's would, the base's k-means differs from what fitting here gives: it must be the one used
    shipped = KMeansQuantizer(KMeansQuantizer.load(b / "kmeans.npy").centers + 0.5)
    shipped.save(b / "kmeans.npy")
    d = ensure_default_lm(ctx, config=with_speech)
    units, base_units = locate_lm(str(d)).units, locate_lm(str(b)).units
    assert units["quantizer_hash"] == shipped.hash  # the tasks' units are the base LM's
    extra = units["pretraining_speech"]
    assert extra["utterances"] == 3 and extra["dropped_held_out"] == 1 and extra["units"] > 0
    assert units["sequences"] > base_units["sequences"]
    assert units["default_lm_config"]["speech_hours"] == 1e-4
    assert default_lm.default_lm_dir(with_speech, ctx.models_dir) == d
    build = json.loads((d / "BUILD.json").read_text())  # the builder states its recipe and each stage's time
    assert build["config"]["speech_hours"] == 1e-4 and build["built_on"] and build["build_seconds"] >= 0
    assert list(build["stage_seconds"]) == ["built-in suite audio", "k-means", "built-in units",
                                            "pretraining speech audio", "pretraining speech units", "LM pretraining"]


@pytest.mark.slow
def test_default_pgslm_with_pretraining_speech_adds_the_corpus_on_the_default_units(tmp_path, monkeypatch):
    from dataclasses import replace

    from bench.lms.default_lm import DefaultLMConfig, ensure_default_lm, locate_lm
    from bench.lms.default_pgslm import DefaultPGSLMConfig, ensure_default_pgslm

    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(P, "SHARD_UTTERANCES", 4)
    units = DefaultLMConfig(tasks="builtin-prosody", size="tiny", num_units=12, kmeans_n_init=1)
    base = DefaultPGSLMConfig(units=units, epochs=1, lm_size="tiny")
    assert "speech_hours" not in base.hashed_fields()  # unset, the shipped MS-TLM keeps its name
    with_speech = replace(base, speech_hours=1e-4)
    assert with_speech.hash() != base.hash()
    assert with_speech.hashed_fields()["speech_corpus"] == replace(units, speech_hours=1e-4).speech_corpus().key()
    ctx, corpus = _home_with_a_held_out_corpus_utterance(tmp_path, monkeypatch, 0)

    d = ensure_default_pgslm(ctx, with_speech)
    meta = json.loads((d / "units.json").read_text())
    assert meta["trained_on"] == {"builtin-prosody": meta["trained_on"]["builtin-prosody"], corpus.root.name: 3}
    assert meta["pretraining_speech"]["dropped_held_out"] == 1
    ulm = ensure_default_lm(ctx, config=units)  # the units (k-means) are the default ULM's: no ULM on the speech
    assert meta["quantizer_hash"] == locate_lm(str(ulm)).units["quantizer_hash"]
    assert sorted(p.name for p in (tmp_path / "home" / "models").iterdir() if p.name.startswith("ulm-")) == [ulm.name]
    build = json.loads((d / "BUILD.json").read_text())
    assert list(build["stage_seconds"]) == ["ULM, k-means and built-in suite audio", "corpus audio", "units", "F0",
                                            "MS-TLM pretraining"]
    assert build["config"]["speech_hours"] == 1e-4


@pytest.mark.slow
def test_units_fit_on_pretraining_speech_adds_the_corpus_without_caching_its_features(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from bench.cli import app
    from bench.core.paths import cache_dir
    from bench.features.store import FeatureStore
    from bench.units.kmeans import KMeansQuantizer

    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(P, "SHARD_UTTERANCES", 4)
    fit = ["units", "fit", "--tasks", "builtin-ks", "--size", "tiny", "-k", "12", "--n-init", "1"]
    out = CliRunner().invoke(app, [*fit, "--speech-hours", "1e-4", "--out", str(tmp_path / "km.npy")])
    assert out.exit_code == 0, out.output
    q = KMeansQuantizer.load(tmp_path / "km.npy")
    assert q.meta["utterances"] == 72 + 4  # the task's 72 training clips and the corpus's one shard
    corpus = P.build_pretrain_speech(P.PretrainSpeechConfig(hours=1e-4))
    fresh = FeatureStore("whisper_tiny_en", cache_dir=cache_dir())
    fresh.ensure(corpus, corpus.examples)
    assert fresh.stats["extracted"] == 4  # its frames were not cached by the fit
    out = CliRunner().invoke(app, [*fit, "--out", str(tmp_path / "plain.npy")])
    assert out.exit_code == 0 and KMeansQuantizer.load(tmp_path / "plain.npy").hash != q.hash
