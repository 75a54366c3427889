"""The built-in offline suite: every task builds through ``prepare_manifest`` from espeak-ng alone, with
voice-disjoint, class-balanced, deterministic splits of real 16 kHz mono audio."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.data.manifest import Manifest, sha1_file
from bench.data.sources import prepare_manifest
from bench.core.errors import BenchError
from bench.tasks.registry import TaskRegistry

REGISTRY = TaskRegistry([Path(__file__).resolve().parent.parent / "tasks" / "builtin"])
BUILTIN = list(dict.fromkeys(s.name for s in REGISTRY.select("builtin")))  # registry may list a task twice
NON_SPEECH_LABELS = {"_silence_", "background"}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One BENCH_HOME shared by this module, so each tiny task is built once."""
    old = os.environ.get("BENCH_HOME")
    path = tmp_path_factory.mktemp("bench-home-builtin")
    os.environ["BENCH_HOME"] = str(path)
    yield path
    if old is None:
        os.environ.pop("BENCH_HOME", None)
    else:
        os.environ["BENCH_HOME"] = old


@pytest.fixture(scope="module")
def built(home) -> dict[str, Manifest]:
    return {name: prepare_manifest(REGISTRY.get(name), "tiny", 0) for name in BUILTIN}


def test_suite_covers_at_least_ten_tasks_of_both_kinds():
    kinds = Counter(REGISTRY.get(n).kind for n in BUILTIN)
    assert len(BUILTIN) >= 10 and kinds["classification"] >= 1 and kinds["generation"] >= 1
    for spec in REGISTRY.select("builtin"):
        assert spec.origin == "synthetic" and spec.stands_in_for and spec.split_rule and spec.card
        assert spec.data.source == "builtin"


def test_ks_has_exactly_the_superb_twelve_classes():
    spec = REGISTRY.get("builtin-ks")
    assert spec.labels == ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
                           "_unknown_", "_silence_"]
    assert spec.family == "KS"


@pytest.mark.parametrize("name", BUILTIN)
def test_splits_are_speaker_disjoint_and_non_empty(built, name):
    m = built[name]
    sizes = m.sizes()
    assert all(sizes[s] > 0 for s in ("train", "valid", "test")), sizes
    tr, va, te = (m.speakers(s) for s in ("train", "valid", "test"))
    assert not (tr & va) and not (tr & te) and not (va & te)
    # Held-out unit is the voice identity (accent/language + variant), not only the exact parameter set.
    ident = {s: {e.speaker.split(":")[1] for e in m.split(s) if e.speaker.startswith("espeak:")}
             for s in ("train", "valid", "test")}
    assert not (ident["train"] & ident["test"]) and not (ident["train"] & ident["valid"])


@pytest.mark.parametrize("name", BUILTIN)
def test_every_class_appears_in_every_split_in_balance(built, name):
    spec, m = REGISTRY.get(name), built[name]
    if spec.kind == "generation":
        for split in ("train", "valid", "test"):
            assert all(e.label.strip() for e in m.split(split))
        return
    for split in ("train", "valid", "test"):
        counts = m.labels(split)
        if spec.labels:
            assert set(counts) == set(spec.labels), (split, counts)
            assert max(counts.values()) == min(counts.values()), (split, counts)
        else:  # IC: every slot value is used, and each label is a valid value tuple
            for label in counts:
                values = label.split(" ")
                assert len(values) == len(spec.slots)
                assert all(v in allowed for v, allowed in zip(values, spec.slots.values()))
    if spec.slots:
        used = [set(lab.split(" ")[i] for lab in m.labels("train")) for i in range(len(spec.slots))]
        assert all(u == set(v) for u, v in zip(used, spec.slots.values()))


@pytest.mark.parametrize("name", BUILTIN)
def test_audio_is_16k_mono_non_silent_and_hash_recorded(built, name):
    m = built[name]
    for e in m.examples[:: max(1, len(m) // 25)]:
        path = m.audio_path(e)
        info = sf.info(str(path))
        assert info.samplerate == 16_000 and info.channels == 1
        wav, _ = sf.read(str(path), dtype="float32")
        assert 0.2 <= wav.size / 16_000 <= 12.0
        rms = float(np.sqrt(np.mean(wav ** 2)))
        assert rms > (1e-4 if e.label in NON_SPEECH_LABELS else 3e-3), (e.id, rms)
        assert e.audio_sha1 == sha1_file(path)
        assert e.extra.get("engine")


@pytest.mark.parametrize("name", BUILTIN)
def test_same_seed_rebuilds_bit_identical_audio(built, home, name):
    """Rebuilt elsewhere, after other tasks were synthesised: same ids, splits, labels and audio hashes."""
    again = prepare_manifest(REGISTRY.get(name), "tiny", 0, data_root=home / "again")
    assert again.checksum() == built[name].checksum()


@pytest.mark.parametrize("name", ["builtin-fsd", "builtin-ic"])
def test_one_render_thread_gives_the_same_data_as_several(built, home, name, monkeypatch):
    """The suite renders on threads (BENCH_DATA_WORKERS); the files and manifest may not depend on it."""
    monkeypatch.setenv("BENCH_DATA_WORKERS", "1")
    serial = prepare_manifest(REGISTRY.get(name), "tiny", 0, data_root=home / "serial")
    assert serial.checksum() == built[name].checksum()
    assert [e.id for e in serial.examples] == [e.id for e in built[name].examples]
    monkeypatch.setenv("BENCH_DATA_WORKERS", "zero")
    with pytest.raises(BenchError, match="BENCH_DATA_WORKERS"):
        prepare_manifest(REGISTRY.get(name), "tiny", 0, data_root=home / "bad")


@pytest.mark.parametrize("name", ["builtin-ks", "builtin-sf"])
def test_other_seed_gives_other_data(built, home, name):
    other = prepare_manifest(REGISTRY.get(name), "tiny", 1, data_root=home / "other")
    assert other.checksum() != built[name].checksum()


def test_built_manifest_is_reused_not_rebuilt(built, home):
    spec = REGISTRY.get("builtin-ks")
    wav = built["builtin-ks"].audio_path(built["builtin-ks"].examples[0])
    mtime = wav.stat().st_mtime_ns
    assert prepare_manifest(spec, "tiny", 0).checksum() == built["builtin-ks"].checksum()
    assert wav.stat().st_mtime_ns == mtime


def test_sf_targets_tag_every_slot_with_known_types(built):
    spec = REGISTRY.get("builtin-sf")
    for e in built["builtin-sf"]:
        words = e.label.split()
        assert e.label == e.label.lower() or any(w.startswith(("B-", "E-")) for w in words)
        opened = None
        for w in words:
            if w.startswith("B-"):
                assert opened is None and w[2:] in spec.slot_tags
                opened = w[2:]
            elif w.startswith("E-"):
                assert opened == w[2:]
                opened = None
        assert opened is None and any(w.startswith("B-") for w in words)


def test_asr_test_sentences_are_unseen_in_training(built):
    m = built["builtin-asr"]
    assert not ({e.label for e in m.split("train")} & {e.label for e in m.split("test")})


def test_example_labels_speakers_and_splits_are_one_string_each():
    """10^5 utterances of a real corpus share a few dozen labels and speakers: one string object per distinct
    value (interned), not one per utterance; equal values stay equal, so nothing else changes."""
    from bench.data.manifest import Example

    # strings made at run time (as an adapter makes them from file names), so only interning can share them
    a = Example(id="a", path="a.wav", label="".join(["y", "es"]), split="".join(["tr", "ain"]),
                speaker="".join(["spk", "1"]))
    b = Example(id="b", path="b.wav", label="".join(["ye", "s"]), split="".join(["tra", "in"]),
                speaker="".join(["sp", "k1"]))
    assert a.label is b.label and a.split is b.split and a.speaker is b.speaker
    assert (a.label, a.split, a.speaker) == ("yes", "train", "spk1")
