"""Has a unit LM learnt to read its units? Its frozen state against an untrained twin's (issue 25).

prompt-gslm-lv reads one thing: the frozen ULM's final state at the separator ``<s>`` that follows the source
units (rows ``</s> u_1..u_n <s>``), which its learnable verbalizer maps to classes; the prompts and the separator
can only steer that state. So what a linear classifier can read from that state, without prompts, says how much of
the task the LM's pretraining put there. The control is the LM's **untrained twin**: the same architecture and
shape, freshly initialised (fairseq's init, torch seed ``--twin-seed``). An LM that has learnt to read its units
carries more than its twin; one whose state is no more useful than random weights' has not.

Per classification task (built-in suite, units of the LM's own quantizer on its upstream, as the prompt methods
read them): logistic regression (C chosen on valid from 0.01, 0.1, 1, 10; test scored once) on

- ``separator``: the final-LayerNorm state at ``<s>`` (what the verbalizer reads);
- ``layer mean``: every layer's output averaged over the source positions, concatenated (an order-blind pooling
  of the contextual states, for reference).

One torch thread, so the same digits on a rerun. ``--write-twin DIR`` also writes the twin as an LM directory
(checkpoint, dict, the LM's quantizer and unit record) so the prompt method itself can be run on it:
``bench run --methods prompt-gslm-lv -o prompt-gslm-lv.lm_checkpoint=DIR``.

    python benchmarks/probe_lm_state.py [--lm DIR (default: bench's shipped ULM)] \
        [--tasks builtin-ks,builtin-scr,builtin-lid,builtin-ic,builtin-auc] [--json benchmarks/lm_state_probes.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TASKS = "builtin-ks,builtin-scr,builtin-lid,builtin-ic,builtin-auc"  # issue 25's check
C_GRID = (0.01, 0.1, 1.0, 10.0)


def lm_states(lm, sources) -> tuple[np.ndarray, np.ndarray]:
    """(separator state [N, D], layer-mean state [N, layers·D]) of each source, one utterance at a time."""
    import torch

    from bench.lms.model import run_prompted_layers

    vocab, sep, mean = lm.dictionary, [], []
    with torch.no_grad():
        for units in sources:
            tokens = torch.tensor([[vocab.eos, *(vocab.unit_to_index(int(u)) for u in units), vocab.bos]])
            pad = torch.zeros_like(tokens, dtype=torch.bool)
            x, layers = lm.embed(tokens, pad), []
            for layer in lm.layers:
                x = run_prompted_layers([layer], x, pad, None, None)
                layers.append(x[0, 1:-1].mean(0))
            sep.append(lm.layer_norm(x)[0, -1].numpy())
            mean.append(torch.cat(layers).numpy())
    return np.stack(sep), np.stack(mean)


def linear_probe(x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> dict:
    """Logistic regression on standardised states, C chosen on valid; test accuracy of that C."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = x["train"].mean(0), x["train"].std(0) + 1e-6
    best = None
    for c in C_GRID:
        clf = LogisticRegression(max_iter=3000, C=c).fit((x["train"] - mu) / sd, y["train"])
        valid = float(np.mean(clf.predict((x["valid"] - mu) / sd) == y["valid"]))
        if best is None or valid > best["valid"]:
            best = {"valid": valid, "C": c, "test": float(np.mean(clf.predict((x["test"] - mu) / sd) == y["test"]))}
    return best


def untrained_twin(lm, seed: int):
    """The same architecture, shape and dictionary, freshly initialised (nothing learnt)."""
    import torch

    from bench.lms.model import UnitLanguageModel

    torch.manual_seed(seed)
    return UnitLanguageModel(lm.cfg, lm.dictionary).eval()


def write_twin(twin, lm_dir: Path, out: Path) -> None:
    """The twin as an LM directory the prompt methods load (its quantizer and unit record are the LM's)."""
    from bench.lms.checkpoint import save_unit_lm

    save_unit_lm(twin, out, {"epoch": 0, "untrained_twin_of": str(lm_dir)})
    for name in ("kmeans.npy", "kmeans.json", "units.json"):
        if (lm_dir / name).is_file():
            shutil.copy2(lm_dir / name, out / name)
    print(f"wrote the untrained twin to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lm", type=Path, default=None, help="a unit LM directory (checkpoint_best.pt, dict.txt, "
                    "units.json with its quantizer); default: the shipped offline ULM")
    ap.add_argument("--tasks", default=TASKS)
    ap.add_argument("--size", default="default")
    ap.add_argument("--twin-seed", type=int, default=0)
    ap.add_argument("--write-twin", type=Path, default=None)
    ap.add_argument("--unit-probes", type=Path, default=HERE / "unit_probes.json",
                    help="probe_unit_layer.py's JSON, for the BiGRU column (skipped when absent)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from bench.data.sources import prepare_manifest
    from bench.features.store import FeatureStore
    from bench.lms.checkpoint import checkpoint_weights_sha256, load_unit_lm
    from bench.lms.default_lm import default_lm_dir, locate_lm
    from bench.lms.shipped import shipped_dir
    from bench.results.records import git_revision
    from bench.tasks.registry import TaskRegistry
    from bench.units.kmeans import KMeansQuantizer
    from bench.units.store import UnitStore

    torch.set_num_threads(1)
    args.lm = args.lm or shipped_dir(default_lm_dir().name)
    files = locate_lm(str(args.lm))
    meta = files.units or {}
    if not meta.get("kmeans"):
        raise SystemExit(f"{args.lm}: no units.json naming the LM's quantizer")
    lm = load_unit_lm(files.checkpoint, files.dict).eval()
    twin = untrained_twin(lm, args.twin_seed)
    if args.write_twin:
        write_twin(twin, args.lm, args.write_twin)
    quantizer = KMeansQuantizer.load(Path(meta["kmeans"]))
    store = UnitStore(FeatureStore(meta.get("upstream", "whisper_tiny_en"), meta.get("upstream_path")),
                      meta.get("layer", -1), quantizer)
    bigru = {}
    if args.unit_probes.is_file():
        doc = json.loads(args.unit_probes.read_text())
        if doc["layers"][0]["quantizer_hash"] == quantizer.hash:
            bigru = {t: p["sequence"]["test"] for t, p in doc["layers"][0]["tasks"].items() if "sequence" in p}

    t0, results = time.perf_counter(), {}
    print(f"{args.lm.name} ({lm.cfg.num_layers} x {lm.cfg.embed_dim}) and its untrained twin (seed "
          f"{args.twin_seed}), test accuracy of a linear probe (C on valid)")
    print(f"{'task':14} {'BiGRU on units':>14} {'separator: LM':>14} {'twin':>6} {'layer mean: LM':>15} {'twin':>6}")
    for spec in TaskRegistry().select(args.tasks):
        if spec.kind != "classification":
            continue
        manifest = prepare_manifest(spec, args.size, 0)
        splits = {s: manifest.split(s) for s in ("train", "valid", "test")}
        units = {s: [np.asarray(u.units) for u in store.get(manifest, ex)] for s, ex in splits.items()}
        labels = {s: np.array([e.label for e in ex]) for s, ex in splits.items()}
        row = {}
        for who, model in (("lm", lm), ("twin", twin)):
            states = {s: lm_states(model, units[s]) for s in splits}
            for i, where in enumerate(("separator", "layer_mean")):
                row[f"{who}_{where}"] = linear_probe({s: v[i] for s, v in states.items()}, labels)
        results[spec.name] = row
        b = 100 * bigru[spec.name] if spec.name in bigru else float("nan")
        print(f"{spec.name:14} {b:14.1f} {100 * row['lm_separator']['test']:14.1f} "
              f"{100 * row['twin_separator']['test']:6.1f} {100 * row['lm_layer_mean']['test']:15.1f} "
              f"{100 * row['twin_layer_mean']['test']:6.1f}")
    print(f"{time.perf_counter() - t0:.0f} s")
    if args.json:
        lm_arg = args.lm.resolve()
        lm_arg = lm_arg.relative_to(HERE.parent) if lm_arg.is_relative_to(HERE.parent) else lm_arg
        doc = {"command": f"python benchmarks/probe_lm_state.py --lm {lm_arg} --tasks {args.tasks} "
                          f"--size {args.size} --twin-seed {args.twin_seed}",
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
               "git_revision": git_revision(), "lm": args.lm.name,
               "lm_weights_sha256": checkpoint_weights_sha256(files.checkpoint),
               "lm_shape": [lm.cfg.num_layers, lm.cfg.embed_dim], "quantizer_hash": quantizer.hash,
               "size": args.size, "data_seed": 0, "twin_seed": args.twin_seed, "threads": 1,
               "probe": f"sklearn LogisticRegression(max_iter=3000), C in {list(C_GRID)} chosen on valid",
               "tasks": results}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
