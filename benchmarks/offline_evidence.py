"""Does the built-in grid tell methods apart? The checks of the offline-evidence issue, read from result records.

For every classification task and method (records that differ by seed alone are pooled): test accuracy, mean
over seeds, against chance = the accuracy of the best constant guess (the majority class of the test references),
and z = (accuracy - chance) / sqrt(chance * (1 - chance) / n), the binomial standard error under chance with n the
test utterances (seeds share their test set, so they are not counted as more draws); ``needs``: the accuracy at
which z = 3 on that test split (how small an effect the split can resolve). Then the linear-probe floors, and
``--method``'s mean beside what its units carry: the bag-of-units and the order-aware (BiGRU) probe of the same
units, read from the JSON ``benchmarks/probe_unit_layer.py --json`` wrote (``--probes``; issue 25's check: the
method within 5 points of the order-aware probe, or above it, on at least 4 of KS, SCR, LID, IC, AUC). Last,
what a linear probe reads from the frozen LM's state where the verbalizer reads it, against the LM's untrained
twin (``benchmarks/probe_lm_state.py --json``; ``--lm-state``).

    python benchmarks/offline_evidence.py leaderboards/records/builtin [--upstream whisper_tiny_en]
        [--probes benchmarks/unit_probes.json] [--lm-state benchmarks/lm_state_probes.json]
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

PROBES = Path(__file__).resolve().parent / "unit_probes.json"
LM_STATE = Path(__file__).resolve().parent / "lm_state_probes.json"
PROBE_TASKS = ("builtin-ks", "builtin-scr", "builtin-lid", "builtin-ic", "builtin-auc")  # issue 25's check
LINEAR_FLOORS = {"builtin-ks": 0.90, "builtin-scr": 0.90, "builtin-lid": 0.85, "builtin-ic": 0.75, "builtin-vad": 0.95}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--upstream", default="whisper_tiny_en")
    ap.add_argument("--method", default="prompt-gslm-lv", help="the method whose margin over chance is counted")
    ap.add_argument("--probes", type=Path, default=PROBES,
                    help="unit-probe scores from probe_unit_layer.py --json (skipped when the file is absent)")
    ap.add_argument("--lm-state", type=Path, default=LM_STATE,
                    help="the frozen LM's state against its untrained twin's, from probe_lm_state.py --json "
                         "(skipped when the file is absent)")
    args = ap.parse_args()

    from bench.results.records import read_records
    from bench.results.stats import chance_accuracy

    cells = defaultdict(list)
    for rec in read_records(args.results):
        if rec["upstream"] == args.upstream and rec.get("task_kind") == "classification" and rec.get("outputs"):
            cells[(rec["task"], rec["method"], rec.get("group_hash"))].append(rec)
    rows = []
    for (task, method, _), recs in sorted(cells.items()):
        refs = recs[0]["outputs"]["references"]
        n = len(refs)
        chance, se = chance_accuracy(refs)
        accs = [sum(r == h for r, h in zip(rec["outputs"]["references"], rec["outputs"]["hypotheses"])) / n
                for rec in recs]
        acc = sum(accs) / len(accs)
        std = math.sqrt(sum((a - acc) ** 2 for a in accs) / (len(accs) - 1)) if len(accs) > 1 else float("nan")
        rows.append((task, method, len(recs), n, chance, chance + 3 * se, acc, std, (acc - chance) / se))

    print(f"{'task':18} {'method':16} {'seeds':>5} {'n':>4} {'chance':>7} {'needs':>6} {'accuracy':>15} {'z':>6}")
    for task, method, k, n, chance, needs, acc, std, z in rows:
        spread = f" ± {100 * std:4.1f}" if not math.isnan(std) else ""
        print(f"{task:18} {method:16} {k:5d} {n:4d} {100 * chance:6.1f}% {100 * needs:5.1f}% {100 * acc:7.2f}{spread:7} "
              f"{z:6.1f}")
    focus = [r for r in rows if r[1] == args.method]
    above = [r[0] for r in focus if r[8] >= 3]
    print(f"\n{args.method}: above chance by >= 3 standard errors on {len(above)} of {len(focus)} classification "
          f"tasks: {', '.join(t.removeprefix('builtin-') for t in above)}")
    at_chance = sorted({r[0] for r in rows} - {r[0] for r in rows if r[8] >= 3})
    print(f"at chance for every method (z < 3): {', '.join(at_chance) or 'none'}")
    for task, floor in LINEAR_FLOORS.items():
        got = [r for r in rows if r[0] == task and r[1] == "linear"]
        if got:
            acc = got[0][6]
            print(f"linear {task}: {100 * acc:.2f} (floor {100 * floor:.0f}) {'ok' if acc >= floor else 'BELOW'}")
    if args.probes.is_file():
        print_unit_bound(args.probes, args.method, {r[0]: r[6] for r in focus})
    if args.lm_state.is_file():
        print_lm_state(args.lm_state)


def print_unit_bound(path: Path, method: str, method_acc: dict[str, float]) -> None:
    """The method's mean beside the bag-of-units and the order-aware probe of the units it reads."""
    import json

    doc = json.loads(path.read_text())
    layer = doc["layers"][0]
    probes = layer["tasks"]
    seq = doc.get("sequence_probe") or {}
    print(f"\nwhat the units carry ({path.name}: {doc['upstream']} state {layer['layer']}, K = {layer['K']}, "
          f"size {doc['size']}, data seed {doc['data_seed']}, probe seed {seq.get('seed', '-')}, "
          f"{doc['date']} at {doc['git_revision']}), test accuracy:")
    print(f"{'task':18} {'bag of units':>13} {'BiGRU on units':>15} {method:>16} {'gap to BiGRU':>13}")
    within = []
    for task, p in sorted(probes.items()):
        bag, order = 100 * p["bag_of_units"], (100 * p["sequence"]["test"] if "sequence" in p else float("nan"))
        got = 100 * method_acc[task] if task in method_acc else float("nan")
        gap = got - order
        if task in PROBE_TASKS and gap >= -5:
            within.append(task.removeprefix("builtin-"))
        print(f"{task:18} {bag:13.1f} {order:15.1f} {got:16.1f} {gap:+13.1f}")
    checked = [t.removeprefix("builtin-") for t in PROBE_TASKS if t in probes]
    print(f"{method} within 5 points of the order-aware probe, or above it: {len(within)} of {len(checked)} "
          f"({', '.join(checked)}): {', '.join(within) or 'none'} (issue 25 asks for 4 of 5)")


def print_lm_state(path: Path) -> None:
    """What a linear probe reads from the frozen LM's state at the separator (what the learnable verbalizer reads)
    and from its untrained twin's: how much of each task the LM's pretraining put where the prompts look."""
    import json

    doc = json.loads(path.read_text())
    print(f"\nwhat the frozen LM's state carries ({path.name}: {doc['lm']}, {doc['date']} at "
          f"{doc['git_revision'][:7]}), test accuracy of a linear probe:")
    print(f"{'task':18} {'separator: LM':>14} {'twin':>6} {'layer mean: LM':>15} {'twin':>6}")
    for task, row in sorted(doc["tasks"].items()):
        vals = [100 * row[k]["test"] for k in ("lm_separator", "twin_separator", "lm_layer_mean", "twin_layer_mean")]
        print(f"{task:18} {vals[0]:14.1f} {vals[1]:6.1f} {vals[2]:15.1f} {vals[3]:6.1f}")


if __name__ == "__main__":
    main()
