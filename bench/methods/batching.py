"""Mini-batch layouts of the published recipes, so a method trains on the batches its paper trained on.

- :func:`fairseq_batches`: ``fairseq-train``'s layout, which SpeechPrompt's prompt tuning runs under
  (``--batch-size 32 --max-tokens 4096``, v1 ``train.py:506,511``). The dataset's ``ordered_indices`` sorts by size
  with ties in a random order drawn under ``numpy_seed(seed + 1)`` (seed + the first epoch); ``batch_by_size``
  then closes a batch when one more row would pass ``max_sentences`` or make ``rows × longest`` pass
  ``max_tokens``, cutting it to a multiple of ``required_multiple`` (``--required-batch-size-multiple``, 8). The batches are fixed for
  the whole run; only their order is reshuffled each epoch (:func:`shuffled`, seed + epoch).
- :func:`s3prl_buckets`: s3prl's ASR ``SequenceDataset``: utterances sorted longest first, cut into buckets of
  ``bucket_size``, the buckets shuffled each epoch by the DataLoader.

Both put rows of similar length together, so little of a batch is padding.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from bench.core.errors import BenchError


def fairseq_batches(sizes: Sequence[int], *, max_tokens: int | None, max_sentences: int | None,
                    required_multiple: int = 8, seed: int = 1) -> list[list[int]]:
    """Indices of ``sizes`` (tokens per row) grouped as fairseq's ``get_batch_iterator`` groups them for a run
    with ``--seed seed``; an epoch then visits ``shuffled(batches, seed + epoch)``. One deviation: fairseq >= 0.12
    drops a last batch whose size is no multiple of ``required_multiple`` (its longest rows never train); we
    keep it."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if max_tokens is not None and len(sizes) and int(sizes.max()) > max_tokens:
        i = int(sizes.argmax())
        raise BenchError(f"a row of {int(sizes[i])} tokens (index {i}) exceeds max_tokens {max_tokens}; "
                         "raise the method's max_tokens option")
    if required_multiple < 1:
        raise BenchError(f"required_multiple must be >= 1, got {required_multiple}")
    tie_break = np.random.RandomState(seed + 1).permutation(len(sizes))  # under numpy_seed(seed + epoch 1)
    order = np.lexsort([tie_break, sizes])
    return [b.tolist() for b in _batch_by_size(order, sizes[order], max_tokens or 0, max_sentences or 0,
                                               required_multiple) if len(b)]


def fairseq_layout(sizes: Sequence[int], *, max_tokens: int | None, max_sentences: int | None,
                   required_multiple: int = 8, seed: int = 1) -> tuple[list[list[int]], dict]:
    """:func:`fairseq_batches` and what a result record says about them, from the same settings."""
    batches = fairseq_batches(sizes, max_tokens=max_tokens, max_sentences=max_sentences,
                              required_multiple=required_multiple, seed=seed)
    info = {"layout": "fairseq (size-sorted, fixed; order reshuffled per epoch)", "max_sentences": max_sentences,
            "max_tokens": max_tokens, "required_multiple": required_multiple, "train_batches": len(batches)}
    return batches, info


def _batch_by_size(indices: np.ndarray, num_tokens: np.ndarray, max_tokens: int, max_sentences: int,
                   mult: int) -> list[np.ndarray]:
    """fairseq 0.12's ``batch_by_size_vec``: a running batch grows by a tail while batch + tail fits the limits;
    the tail joins it whenever the batch size is below ``mult`` or a multiple of it; on overflow the batch is
    closed and the tail starts the next one (two batches close when the tail alone overflows). 0 = no limit."""
    ends = [0]  # ends[k]: end of batch k-1; ends[-1]: end of the running batch
    batch_start = 0
    tail_max = batch_max = 0
    for pos in range(len(indices)):
        n = int(num_tokens[pos])
        tail_max = max(tail_max, n)
        new_end = pos + 1
        new_max = max(batch_max, tail_max)
        sentences = new_end - batch_start
        overflow = (0 < max_sentences < sentences) or (0 < max_tokens < sentences * new_max)
        fits_mult = sentences < mult or sentences % mult == 0
        if overflow:
            if 0 < max_tokens < tail_max * (new_end - ends[-1]):
                ends.append(pos)
                tail_max = n
            batch_start = ends[-1]
            ends.append(ends[-1])
            new_max = tail_max
        if overflow or fits_mult:
            ends[-1] = new_end
            batch_max = new_max
            tail_max = 0
    # ends[:-1] close finished batches; a tail after the running batch is the last batch
    return np.split(indices, ends[:-1] if ends[-1] == len(indices) else ends)


def s3prl_buckets(lengths: Sequence[int], bucket_size: int) -> list[list[int]]:
    """Indices sorted by length, longest first, in buckets of ``bucket_size`` (the last may be smaller).

    s3prl also drops a last bucket of one utterance and halves a bucket whose longest utterance passes 2000
    samples (which, its lengths being sample counts, is every LibriSpeech bucket: SUPERB's ASR batch 32 is 16 in
    effect). We keep every utterance, and ``bucket_size`` is the batch that runs."""
    if bucket_size < 1:
        raise BenchError(f"bucket size must be >= 1, got {bucket_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    return [order[i:i + bucket_size] for i in range(0, len(order), bucket_size)]


def shuffled(batches: Sequence[Sequence[int]], seed: int) -> list[list[int]]:
    """The batches in a seeded random order (fairseq's ``shuffle_batches``: ``numpy_seed(seed)`` + shuffle)."""
    out = [list(b) for b in batches]
    np.random.RandomState(seed).shuffle(out)
    return out
