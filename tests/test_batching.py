"""Batch layouts match the published recipes: fairseq-train's (prompt tuning) checked against fairseq's own
MonolingualDataset + get_batch_iterator, and s3prl's ASR length buckets (the LSTM-CTC head)."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

from bench.methods.batching import fairseq_batches, s3prl_buckets, shuffled
from bench.core.errors import BenchError


def _fairseq_iterator(sizes, max_tokens, max_sentences, seed):
    """fairseq's LM-task batch iterator over rows of the given sizes (break mode eos: one row per line)."""
    warnings.filterwarnings("ignore")
    logging.getLogger("fairseq").setLevel(logging.ERROR)
    torch = pytest.importorskip("torch")
    pytest.importorskip("fairseq")
    from fairseq.data import Dictionary, MonolingualDataset
    from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask

    d = Dictionary()
    for u in range(10):
        d.add_symbol(str(u))
    rng = np.random.RandomState(0)

    class Lines(list):  # what TokenBlockDataset(break_mode="eos") yields: (source, future target, past target)
        pass

    lines = Lines()
    for n in sizes:
        t = torch.tensor([*rng.randint(4, 14, size=n - 1).tolist(), d.eos()])
        lines.append((t, t, None))
    lines.sizes = np.asarray(sizes)
    dataset = MonolingualDataset(lines, lines.sizes, d, d, add_eos_for_other_targets=False, shuffle=True,
                                 targets=["future"])
    task = LanguageModelingTask(LanguageModelingConfig(), d, d)
    return task.get_batch_iterator(dataset, max_tokens=max_tokens, max_sentences=max_sentences, seed=seed, epoch=1,
                                   required_batch_size_multiple=8)


@pytest.mark.parametrize("seed,max_tokens", [(0, 400), (3, 4096), (1, 150)])
def test_fairseq_batches_are_fairseqs(seed, max_tokens):
    sizes = np.random.RandomState(seed).randint(3, 60, size=90).tolist()
    itr = _fairseq_iterator(sizes, max_tokens, 32, seed)
    theirs = [sorted(int(i) for i in b) for b in itr.frozen_batches]
    ours = fairseq_batches(sizes, max_tokens=max_tokens, max_sentences=32, seed=seed)
    # fairseq >= 0.12 drops a last batch whose size is no multiple of 8 (its longest rows never train): we keep it
    if len(ours) == len(theirs) + 1:
        assert len(ours[-1]) % 8 != 0
        ours_compared = ours[:-1]
    else:
        ours_compared = ours
    assert [sorted(b) for b in ours_compared] == theirs
    assert sorted(i for b in ours for i in b) == list(range(len(sizes)))
    # the order of an epoch: fairseq shuffles the frozen batches under numpy_seed(seed + epoch)
    for epoch in (1, 2):
        visited = [sorted(int(i) for i in s["id"]) for s in itr.next_epoch_itr(shuffle=True)]
        assert visited == [sorted(b) for b in shuffled(theirs, seed + epoch)]


def test_fairseq_batches_respect_both_limits_and_group_by_length():
    sizes = np.random.RandomState(5).randint(10, 200, size=300)
    batches = fairseq_batches(sizes, max_tokens=4096, max_sentences=32, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(300))
    for b in batches:
        assert len(b) <= 32 and len(b) * max(sizes[i] for i in b) <= 4096
    padded = sum(len(b) * max(sizes[i] for i in b) for b in batches)
    assert padded < 1.1 * sizes.sum()  # sorted rows: little padding (random batches of 32: ~1.7x)
    assert fairseq_batches(sizes, max_tokens=4096, max_sentences=32, seed=0) == batches  # deterministic
    with pytest.raises(BenchError, match="exceeds max_tokens 100"):
        fairseq_batches([50, 101], max_tokens=100, max_sentences=32)


def test_s3prl_buckets_longest_first_and_shuffled_order_is_seeded():
    lengths = [5, 9, 1, 7, 7, 3, 8]
    buckets = s3prl_buckets(lengths, 3)
    assert buckets == [[1, 6, 3], [4, 0, 5], [2]]
    assert shuffled(buckets, 4) == shuffled(buckets, 4)
    assert sorted(map(tuple, shuffled(buckets, 4))) == sorted(map(tuple, buckets))
    with pytest.raises(BenchError):
        s3prl_buckets(lengths, 0)


def test_batch_by_size_is_fairseqs_on_random_limits():
    pytest.importorskip("fairseq")
    from fairseq.data.data_utils_fast import batch_by_size_vec

    from bench.methods.batching import _batch_by_size

    rng = np.random.RandomState(11)
    for _ in range(40):
        n = int(rng.randint(1, 120))
        sizes = rng.randint(1, 90, size=n).astype(np.int64)
        order = np.argsort(sizes, kind="stable").astype(np.int64)
        max_tokens, max_sentences, mult = int(rng.choice([0, 100, 500, 2000])), int(rng.choice([0, 7, 32])), \
            int(rng.choice([1, 3, 8]))
        if max_tokens and sizes.max() > max_tokens:
            continue
        theirs = batch_by_size_vec(order, sizes[order], max_tokens, max_sentences, mult)
        ours = _batch_by_size(order, sizes[order], max_tokens, max_sentences, mult)
        assert [b.tolist() for b in ours] == [b.tolist() for b in theirs]
