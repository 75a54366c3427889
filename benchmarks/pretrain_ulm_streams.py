"""Does long-form context make the stand-in ULM read its units? An experiment of issue 25.

GSLM's ULM learns from long stretches of one speaker's speech (Libri-Light), where carrying the language, the voice
and what was said helps predict the next unit; bench's pretraining corpus is short sentences, one per sample. This
trains the ULM of ``bench pretrain ulm --speech-hours H`` (same suite units, corpus, shipped quantizer, shape,
epochs and seed) with the corpus utterances joined into streams instead: ``--per`` consecutive utterances of one
language and espeak-ng voice variant concatenated (a unit repeated across a join collapsed, as deduplication
would), the suite's training utterances one per sample as before. The LM directory it writes is read by
``benchmarks/probe_lm_state.py --lm DIR`` and ``bench run -o prompt-gslm-lv.lm_checkpoint=DIR``.

    python benchmarks/pretrain_ulm_streams.py --hours 10 --per 8 --out $BENCH_HOME/models/ulm-streams8
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections import defaultdict
from pathlib import Path


def join_streams(utterances: list[tuple[tuple, list[int]]], per: int) -> list[list[int]]:
    """(group key, deduplicated units) in corpus order → streams of ``per`` consecutive utterances of one group."""
    groups = defaultdict(list)
    for key, units in utterances:
        if len(units) > 1:
            groups[key].append(units)
    streams = []
    for key in sorted(groups):
        for i in range(0, len(groups[key]), per):
            stream: list[int] = []
            for units in groups[key][i:i + per]:
                stream += units[1:] if stream and units[0] == stream[-1] else units
            streams.append(stream)
    return streams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=10.0, help="hours of the rendered pretraining corpus")
    ap.add_argument("--per", type=int, default=8, help="utterances per stream")
    ap.add_argument("--out", type=Path, required=True, help="the LM directory to write")
    args = ap.parse_args()

    from bench.core.paths import cache_dir, data_dir
    from bench.data.manifest import atomic_directory
    from bench.features.store import FeatureStore
    from bench.lms.default_lm import (DefaultLMConfig, builtin_training_items, default_lm_dir,
                                      pretraining_speech_examples)
    from bench.lms.pretrain import pretrain_unit_lm
    from bench.lms.shipped import shipped_dir
    from bench.units.kmeans import KMeansQuantizer
    from bench.units.store import UnitStore

    started = time.perf_counter()
    config = DefaultLMConfig(speech_hours=args.hours)
    base = shipped_dir(default_lm_dir(config.units_base()).name)  # the shipped ULM: its quantizer, as --speech-hours
    items = [(manifest, exs) for _, manifest, exs in builtin_training_items(config)]
    quantizer = KMeansQuantizer.load(base / "kmeans.npy")
    features = FeatureStore(config.upstream, None, cache_dir(), "cpu", keep="none", layers=(config.unit_layer,))
    store = UnitStore(features, config.unit_layer, quantizer, cache_dir())
    suite = [s.units.tolist() for manifest, exs in items for s in store.get(manifest, exs)]
    suite = [s for s in suite if len(s) > 1]
    corpus, kept = pretraining_speech_examples(config.speech_corpus(), [m for m, _ in items], print, data_dir())
    streams = join_streams([((e.extra["language"], e.extra["voice"]["variant"]), s.units.tolist())
                            for e, s in zip(kept, store.get(corpus, kept))], args.per)
    print(f"{len(kept)} corpus utterances -> {len(streams)} streams, {sum(map(len, streams))} units; "
          f"suite {len(suite)} utterances ({time.perf_counter() - started:.0f} s)", flush=True)
    with atomic_directory(args.out) as tmp:
        pretrain_unit_lm(suite + streams, config.lm_config(), tmp, seed=config.seed, max_epochs=config.max_epochs,
                         log=print)
        for name in ("kmeans.npy", "kmeans.json", "units.json"):
            shutil.copy2(base / name, tmp / name)
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
