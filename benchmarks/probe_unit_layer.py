"""Which hidden state of an upstream should the offline default LM's units come from? A measured probe.

For each hidden state of the upstream: k-means (K units, GSLM's MiniBatchKMeans via bench.units) fitted on the
TRAINING audio of every built-in task, then, per classification task, a logistic regression on the test split's
bag of deduplicated units (normalised unit histogram), trained on the train split. The unit layer the default LM
uses (``bench.lms.default_lm.UNIT_LAYERS``) is the one with the best mean accuracy; this script prints the
table that choice rests on (and the mean-pooled-feature probe of the same layer for reference).

    python benchmarks/probe_unit_layer.py [--upstream whisper_tiny_en] [-k 100] [--size default]

With ``--kmeans`` (e.g. the shipped LM's ``bench/assets/default_lms/ulm-default-*/kmeans.npy``) the units are that
quantizer's instead of a new fit, and ``--tasks`` narrows the tasks: a ceiling of what the LM's units carry for a
task, measured where the test split is large enough to resolve it (``--size large``). Every row also prints the
accuracy a system needs on that test split to be above chance by 3 binomial standard errors (the offline-evidence
issue's bar), and a bag of unit bigrams beside the unigrams.

Beside the bags, an order-aware probe (``bench.units.probe``: a 1-layer BiGRU over 64-d unit embeddings, 128
hidden, mean- and max-pooled), trained from scratch on the train split's units, its epoch chosen on valid, scored
on test (seed ``--seed``, one thread); ``--json`` writes every probe's scores with that recipe for
``benchmarks/offline_evidence.py --probes``. Note that the *layer* this script reports as best is chosen on test
(it scores the test splits); the sequence probe's own choice (its epoch) is made on valid.

    python benchmarks/probe_unit_layer.py --kmeans bench/assets/default_lms/ulm-default-99b1f15ad37d/kmeans.npy \
        --tasks builtin-ks,builtin-scr,builtin-lid,builtin-ic,builtin-auc --json benchmarks/unit_probes.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", default="whisper_tiny_en")
    ap.add_argument("-k", "--num-units", type=int, default=100)
    ap.add_argument("--size", default="default")
    ap.add_argument("--max-frames", type=int, default=100_000)
    ap.add_argument("--layers", default="", help="comma-separated; default every hidden state")
    ap.add_argument("--kmeans", default="", help="a fitted quantizer (.npy) to use instead of fitting one")
    ap.add_argument("--tasks", default="builtin", help="registry selection (default: every built-in task)")
    ap.add_argument("--no-sequence", action="store_true", help="skip the order-aware (BiGRU) probe")
    ap.add_argument("--seed", type=int, default=0, help="the sequence probe's seed (init, batch order, dropout)")
    ap.add_argument("--sequence-epochs", type=int, default=30)
    ap.add_argument("--json", default="", help="write the scores (and how they were made) to this file")
    args = ap.parse_args()

    from sklearn.linear_model import LogisticRegression

    from bench.data.sources import prepare_manifest
    from bench.features.store import FeatureStore
    from bench.results.stats import chance_accuracy
    from bench.tasks.registry import TaskRegistry
    from bench.units.kmeans import KMeansQuantizer
    from bench.units.probe import SequenceProbeConfig, fit_sequence_probe, unit_histogram
    from bench.units.store import UnitStore, fit_quantizer

    seq_cfg = SequenceProbeConfig(seed=args.seed, epochs=args.sequence_epochs)

    specs = [s for s in TaskRegistry().select(args.tasks)]
    manifests = {s.name: prepare_manifest(s, args.size, 0) for s in specs}
    features = FeatureStore(args.upstream)
    t0 = time.perf_counter()
    for s in specs:  # extract (and cache) every split once
        features.get(manifests[s.name], manifests[s.name].examples)
    print(f"features of {sum(len(m.examples) for m in manifests.values())} clips: {time.perf_counter() - t0:.1f} s")
    n_layers = features.info.num_layers
    given = KMeansQuantizer.load(Path(args.kmeans)) if args.kmeans else None
    if given is not None and not args.layers:
        args.layers = str(given.meta.get("layer", n_layers - 1))
    layers = [int(x) for x in args.layers.split(",")] if args.layers else list(range(n_layers))
    items = [(manifests[s.name], manifests[s.name].split("train")) for s in specs]
    cls_specs = [s for s in specs if s.kind == "classification"]

    bag = unit_histogram

    def bigrams(seqs, k):
        out = np.zeros((len(seqs), k * k), dtype=np.float32)
        for i, seq in enumerate(seqs):
            u = np.asarray(seq.units)
            if len(u) > 1:
                np.add.at(out[i], u[:-1] * k + u[1:], 1.0)
                out[i] /= len(u) - 1
        return out

    rows, reports = [], []
    for layer in layers:
        t = time.perf_counter()
        q = given or fit_quantizer(features, items, layer, args.num_units, 0, None, max_frames=args.max_frames,
                                   n_init=1)
        k = q.num_units
        store = UnitStore(features, layer, q)
        accs, pooled, pairs, bars, seqs = {}, {}, {}, {}, {}
        for s in cls_specs:
            m = manifests[s.name]
            tr, te = m.split("train"), m.split("test")
            ytr, yte = [e.label for e in tr], [e.label for e in te]
            utr, ute = store.get(m, tr), store.get(m, te)
            clf = LogisticRegression(max_iter=2000, C=10.0).fit(bag(utr, k), ytr)
            accs[s.name] = float(np.mean(clf.predict(bag(ute, k)) == np.array(yte)))
            clf = LogisticRegression(max_iter=2000, C=10.0).fit(bigrams(utr, k), ytr)
            pairs[s.name] = float(np.mean(clf.predict(bigrams(ute, k)) == np.array(yte)))
            chance, se = chance_accuracy(yte)
            bars[s.name] = (chance + 3 * se, len(yte))
            if not args.no_sequence:
                va = m.split("valid")
                t_seq = time.perf_counter()
                probe = fit_sequence_probe(utr, ytr, store.get(m, va), [e.label for e in va], k, seq_cfg)
                seqs[s.name] = {"test": float(np.mean(np.array(probe.predict(ute)) == np.array(yte))),
                                "valid": probe.valid_accuracy, "epoch": probe.best_epoch,
                                "n_train": len(utr), "n_valid": len(va),
                                "seconds": round(time.perf_counter() - t_seq, 1)}
            ftr = np.stack([f[layer].astype(np.float32).mean(0) for f in features.get(m, tr)])
            fte = np.stack([f[layer].astype(np.float32).mean(0) for f in features.get(m, te)])
            mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
            clf = LogisticRegression(max_iter=2000).fit((ftr - mu) / sd, ytr)
            pooled[s.name] = float(np.mean(clf.predict((fte - mu) / sd) == np.array(yte)))
        rows.append((layer, accs, pooled, time.perf_counter() - t))
        print(f"\nstate {layer}, K={k}{' (' + args.kmeans + ')' if given else ''}, size {args.size}: task | n test | "
              f"needed for z >= 3 | bag of units | bag of unit bigrams | mean-pooled features"
              + ("" if args.no_sequence else " | BiGRU on units (valid, epoch)"))
        for s in cls_specs:
            bar, n = bars[s.name]
            extra = ""
            if s.name in seqs:
                sq = seqs[s.name]
                extra = f" {100 * sq['test']:6.1f} ({100 * sq['valid']:.1f}, {sq['epoch']})"
            print(f"  {s.name:16} {n:5d} {100 * bar:6.1f} {100 * accs[s.name]:6.1f} {100 * pairs[s.name]:6.1f} "
                  f"{100 * pooled[s.name]:6.1f}{extra}")
        reports.append({"layer": layer, "K": k, "quantizer": args.kmeans or None, "quantizer_hash": q.hash,
                        "tasks": {s.name: {"n_test": bars[s.name][1], "needs": round(bars[s.name][0], 4),
                                           "bag_of_units": accs[s.name], "bag_of_unit_bigrams": pairs[s.name],
                                           "mean_pooled_features": pooled[s.name],
                                           **({"sequence": seqs[s.name]} if s.name in seqs else {})}
                                  for s in cls_specs}})

    names = [s.name.removeprefix("builtin-") for s in cls_specs]
    print(f"\n{args.upstream}, K={k}: test accuracy of a logistic regression on bags of units "
          f"(mean-pooled features in brackets)")
    print("layer | " + " | ".join(names) + " | mean units | mean pooled")
    for layer, accs, pooled, secs in rows:
        vals = [f"{100 * accs[s.name]:.1f} ({100 * pooled[s.name]:.1f})" for s in cls_specs]
        print(f"{layer} | " + " | ".join(vals) + f" | {100 * np.mean(list(accs.values())):.1f} | "
              f"{100 * np.mean(list(pooled.values())):.1f}   [{secs:.0f} s]")
    best = max(rows, key=lambda r: np.mean(list(r[1].values())))
    print(f"\nbest unit layer: {best[0]} (chosen on the test splits)")
    if args.json:
        _write_json(Path(args.json), args, None if args.no_sequence else seq_cfg.to_dict(), reports)


def _write_json(path: Path, args, sequence_probe: dict | None, reports: list) -> None:
    """Every probe's test accuracy and the recipe behind it (date, commit, data seed, the sequence probe's config)."""
    import datetime
    import json
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "bench",
                                "benchmarks/probe_unit_layer.py"], capture_output=True, text=True,
                               cwd=here.parent).stdout.strip()  # the code behind the numbers, not docs
        rev += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        rev = "unknown"
    opts = [f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in vars(args).items()
            if v not in ("", False, None)]
    doc = {"command": "python benchmarks/probe_unit_layer.py " + " ".join(opts),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"), "git_revision": rev,
           "upstream": args.upstream, "size": args.size, "data_seed": 0,
           "bag_probe": "sklearn LogisticRegression(C=10, max_iter=2000) on normalised unit histograms / bigrams, "
                        "train split -> test split",
           "sequence_probe": sequence_probe, "layers": reports}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
