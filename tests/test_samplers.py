"""Data-side recipe choices: s3prl's class-balanced Speech Commands resample, MUStARD's speaker-dependent fold of
split_indices.p, s3prl's SNIPS text normalisation."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bench.data.corpora.base import load_corpus
from bench.data.samplers import apply_resample, class_balanced_resample, class_balanced_weights
from bench.runner.recipes import load_recipe, task_for_recipe
from tests.test_corpora_adapters import _gsc_tree, task, text, wav


@pytest.fixture(autouse=True)
def _home(bench_home):
    return bench_home


def s3prl_training_list(root: Path, split: str) -> list[str]:
    """s3prl speech_commands/dataset.py:48-65, re-stated: every hash-split file of the split (words outside the
    ten keywords become _unknown_) plus every background-noise file once as _silence_. Returns the labels."""
    from bench.data.corpora.speech_commands_v1 import KEYWORDS, hash_split

    tr = root / "speech_commands_v0.01"
    labels = []
    for folder in sorted(d for d in tr.iterdir() if d.is_dir() and d.name != "_background_noise_"):
        for f in sorted(folder.glob("*.wav")):
            if hash_split(f.name) == split:
                labels.append(folder.name if folder.name in KEYWORDS else "_unknown_")
    labels += ["_silence_"] * len(list((tr / "_background_noise_").glob("*.wav")))
    return labels


def test_speech_commands_balanced_resample_reproduces_s3prls_per_class_counts(tmp_path):
    import torch
    from torch.utils.data import WeightedRandomSampler

    _gsc_tree(tmp_path)
    m = load_corpus(task("ks-speech-commands-v1"), tmp_path)
    before = Counter(e.label for e in m.split("train"))
    assert before["_unknown_"] == 2 and before["_silence_"] == 2  # 1 unknown word (bed) x 2 speakers; mean count
    s3prl = s3prl_training_list(tmp_path, "train")
    # s3prl draws len(data) items: 10 words x 2 + bed x 2 + 2 noise files = 24
    assert len(s3prl) == 24
    out = apply_resample(m, "class_balanced", ["train", "valid"], seed=0)
    train = out.split("train")
    assert len(train) == len(s3prl)  # as many draws as s3prl's list has items (a noise file counts once)
    assert out.split("test") == m.split("test")  # the official test set is never resampled
    # every class has the same total weight in both: expected count len/12 for each of the 12 classes
    for labels in ([e.label for e in m.split("train")], s3prl):
        w = class_balanced_weights(labels)
        share = {c: sum(x for x, l in zip(w, labels) if l == c) / sum(w) for c in set(labels)}
        assert len(share) == 12 and all(abs(v - 1 / 12) < 1e-12 for v in share.values())
    # many seeds: bench's per-class counts follow s3prl's (its own sampler on its own list), within sampling noise
    n, seeds, ours, theirs = len(s3prl), range(200), Counter(), Counter()
    for s in seeds:
        ours.update(e.label for e in class_balanced_resample(m.split("train"), s))
        idx = list(WeightedRandomSampler(class_balanced_weights(s3prl), n, generator=torch.Generator().manual_seed(s)))
        theirs.update(s3prl[i] for i in idx)
    expected = n * len(seeds) / 12
    sd = (n * len(seeds) * (1 / 12) * (11 / 12)) ** 0.5
    for c in theirs:
        assert abs(ours[c] - expected) < 4 * sd and abs(theirs[c] - expected) < 4 * sd, c


def test_balanced_draw_is_with_replacement_seeded_and_order_free(tmp_path):
    _gsc_tree(tmp_path)
    m = load_corpus(task("ks-speech-commands-v1"), tmp_path)
    train = m.split("train")
    a = [e.id for e in class_balanced_resample(train, 3, num_samples=500)]
    assert a == [e.id for e in class_balanced_resample(list(reversed(train)), 3, num_samples=500)]
    assert a != [e.id for e in class_balanced_resample(train, 4, num_samples=500)]
    base = Counter(x.split("@")[0] for x in a)
    assert max(base.values()) > 1 and len(set(a)) == 500  # duplicates of a file get distinct ids
    counts = Counter(e.label for e in class_balanced_resample(train, 3, num_samples=12_000))
    assert all(abs(v - 1000) < 4 * (12_000 / 12 * 11 / 12) ** 0.5 for v in counts.values())


def write_split_indices(path: Path, n: int, folds: int = 5, seed: int = 7) -> list[tuple[np.ndarray, np.ndarray]]:
    """MUStARD's split_indices.p format: a Python-2 pickle (protocol 2) of 5 (train+valid, test) pairs of int64
    numpy arrays indexing sarcasm_data.json's records in file order."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    parts = np.array_split(perm, folds)
    out = [(np.sort(np.concatenate([p for j, p in enumerate(parts) if j != k])).astype(np.int64),
            np.sort(parts[k]).astype(np.int64)) for k in range(folds)]
    path.write_bytes(pickle.dumps(out, protocol=2))
    return out


def _mustard(root: Path, n: int = 30) -> list[str]:
    data = {}
    for i in range(n):
        uid = f"{(i * 7) % n}_{500 - i}"  # file order differs from sorted order
        data[uid] = {"utterance": "yeah", "speaker": f"S{i % 4}", "context": [], "context_speakers": [],
                     "show": "FRIENDS" if i % 5 == 0 else "BBT", "sarcasm": bool(i % 2)}
        wav(root / "utterances_final_wav" / f"{uid}.wav", seconds=0.02)
    text(root / "sarcasm_data.json", json.dumps(data))
    return list(data)


def test_mustard_speaker_dependent_fold_from_split_indices(tmp_path):
    ids = _mustard(tmp_path)
    folds = write_split_indices(tmp_path / "split_indices.p", len(ids))
    spec = task_for_recipe(load_recipe("speechprompt-v2"), task("sd-mustard"))
    assert spec.data.params["speaker_dependent"] is True and spec.data.params["k_fold"] == 0
    m = load_corpus(spec, tmp_path)
    assert {e.id for e in m.split("test")} == {ids[i] for i in folds[0][1]}  # file order, not sorted order
    assert {e.id for e in m.split("train") + m.split("valid")} == {ids[i] for i in folds[0][0]}
    m2 = load_corpus(task("sd-mustard", speaker_dependent=True, k_fold=2), tmp_path)
    assert {e.id for e in m2.split("test")} == {ids[i] for i in folds[2][1]}
    # default (cpu-default): speaker-independent, FRIENDS = test, split_indices.p not read
    m3 = load_corpus(task_for_recipe(load_recipe("cpu-default"), task("sd-mustard")), tmp_path)
    assert all(e.speaker.startswith("FRIENDS:") for e in m3.split("test"))


def test_mustard_bad_fold_file_is_named(tmp_path):
    from tests.test_corpora_adapters import malformed

    ids = _mustard(tmp_path)
    (tmp_path / "split_indices.p").write_bytes(pickle.dumps([(np.arange(5), np.arange(len(ids) + 3))], protocol=2))
    msg = malformed(task("sd-mustard", speaker_dependent=True, k_fold=0), tmp_path)
    assert "split_indices.p" in msg and "fold 0" in msg


def test_snips_s3prl_normalisation_drops_punctuation_words_and_spells_ampersand(tmp_path):
    uid = "Ivy-snips-train-0"
    line = f"{uid} BOS play r & b by the beatles , please ? EOS\tO O B-genre I-genre I-genre O B-artist I-artist O O O PlayMusic\n"
    for split, spk in (("train", "Ivy"), ("valid", "Amy"), ("test", "Brian")):
        wav(tmp_path / split / f"{spk}-snips-{split}-0.wav")
    others = "".join(f"{s}-snips-{p}-0 BOS hi EOS\tO O Greet\n" for p, s in (("valid", "Amy"), ("test", "Brian")))
    text(tmp_path / "all.iob.snips.txt", line + others)
    bench = {e.id: e.label for e in load_corpus(task("sf-audio-snips"), tmp_path)}[uid]
    assert bench == "play B-genre r & b E-genre by B-artist the beatles E-artist , please ?"
    s3prl = {e.id: e.label for e in load_corpus(task("sf-audio-snips", text_normalization="s3prl"), tmp_path)}[uid]
    assert s3prl == "play B-genre r and b E-genre by B-artist the beatles E-artist please"
    spec = task_for_recipe(load_recipe("superb"), task("sf-audio-snips"))
    assert spec.data.params["text_normalization"] == "s3prl"
