"""Rehearse the published recipes on checkpoints in the published formats (random weights) and mini corpora in the
official layouts: what a researcher with the real downloads runs, minus the downloads.

    python benchmarks/rehearsal_published.py OUT [--shape published|tiny] [--limit 8] [--max-epochs 1] [--device cpu]

1. writes, with random weights, every model the published recipes name, in the published formats and (default)
   shapes (``bench.lms.published_formats``): HuBERT Base (s3prl-converted, for ``hubert_local``), GSLM km100
   (joblib ``MiniBatchKMeans``, 100 × 768), the GSLM HuBERT-100 ULM (fairseq ``transformer_lm_big`` + ``dict.txt``),
   the pGSLM MS-TLM (``transformer_ulm_big``) and its F0 bins; with ``--shape published`` it checks them with
   ``verify_model`` (the published shapes), as docs/real-checkpoints.md §3 tells a user to;
2. configures them under their published names in ``OUT/config.yaml`` (``$BENCH_CONFIG``), with the corpus roots;
3. builds mini Speech Commands v0.01, Fluent Speech Commands and ESC-50 (v2 only) trees in the official layouts
   (``bench.data.minitrees``, the builders the adapter tests read);
4. runs ``bench run --recipe speechprompt-v2`` (KS, IC, ESC-50) and ``--recipe speechprompt-v1`` (KS, IC) with every
   method, ``--limit`` and no ``-o``: the recipes resolve the models themselves;
5. checks that every record names each model file it read with its sha256 and none is a stand-in, and prints
   ``bench compare --reference`` for each recipe (the papers' rows beside the rehearsal's).

The scores are meaningless (random weights, a few utterances); what is rehearsed is that the published files load,
connect (units from HuBERT layer 6 through km100 into the ULM's dictionary; F0 through the MS-TLM's bins) and are
recorded. Exit 0 when all of it holds. Measured: see docs/real-checkpoints.md §6.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = {"speechprompt-v2": ["ks-speech-commands-v1", "ic-fluent-speech-commands", "auc-esc50"],
        "speechprompt-v1": ["ks-speech-commands-v1", "ic-fluent-speech-commands"]}
READS = {"prompt-gslm": ("gslm_hubert100_lm", "gslm_hubert_km100"),
         "prompt-gslm-lv": ("gslm_hubert100_lm", "gslm_hubert_km100"),
         "prompt-pgslm": ("pgslm_ms_tlm", "pgslm_f0_bins", "gslm_hubert_km100"),
         "prompt-pgslm-lv": ("pgslm_ms_tlm", "pgslm_f0_bins", "gslm_hubert_km100")}  # besides hubert_base


def build_corpora(root: Path) -> dict[str, Path]:
    """Mini Speech Commands v0.01, Fluent Speech Commands and ESC-50 trees → {corpus root key: directory}."""
    from bench.data.minitrees import esc50_tree, fluent_commands_tree, speech_commands_v1_tree

    gsc, fsc, esc = root / "speech_commands", root / "fluent_speech_commands_dataset", root / "ESC-50-master"
    if not gsc.exists():
        speech_commands_v1_tree(gsc)
    if not fsc.exists():
        fluent_commands_tree(fsc)
    if not esc.exists():
        from bench.tasks.registry import load_task_file

        esc50_tree(esc, load_task_file(REPO / "tasks" / "corpora" / "auc-esc50.yaml").labels, seconds=0.2)
    return {"speech_commands_v1": gsc, "fluent_speech_commands": fsc, "esc50": esc}


def write_config(out: Path, models: dict[str, Path], corpora: dict[str, Path]) -> Path:
    cfg = out / "config.yaml"
    cfg.write_text("models:\n" + "".join(f"  {k}: {v}\n" for k, v in models.items())
                   + "corpora:\n" + "".join(f"  {k}: {v}\n" for k, v in corpora.items()), encoding="utf-8")
    return cfg


def bench(args: list[str], env: dict, log: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "bench.cli", *args], env=env, capture_output=True, text=True)
    if log is not None:
        log.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    return proc


def sha256(path: Path) -> str:
    from bench.data.manifest import file_digest

    return file_digest(path, "sha256")


def check_records(results: Path, expected: dict[str, str]) -> list[str]:
    """Problems with the records under ``results``: a published model missing from ``config.models``, a sha256
    that is not the file's, a stand-in. ``expected``: model name → sha256 of the file written."""
    problems = []
    records = [p for p in results.rglob("seed-*.json") if ".runs" not in p.parts]
    if not records:
        return [f"no records under {results}"]
    for p in records:
        rec = json.loads(p.read_text(encoding="utf-8"))
        config = rec["config"]
        if config.get("stand_in"):
            problems.append(f"{p}: stand_in {config['stand_in']}")
        models = config.get("models") or {}
        want = {"hubert_base", *READS.get(rec["method"], ())}
        for name in sorted(want):
            if name not in models:
                problems.append(f"{p}: config.models has no {name}")
            elif models[name]["sha256"] != expected[name]:
                problems.append(f"{p}: {name} sha256 {models[name]['sha256'][:12]} is not the file's")
        if rec["upstream"] != "hubert_local":
            problems.append(f"{p}: upstream {rec['upstream']}, expected the recipe's hubert_local")
    return problems


def rehearse(out: Path, shape: str = "published", limit: int = 8, max_epochs: int = 1, device: str = "cpu",
             recipes: dict[str, list[str]] | None = None, methods: str = "all", log=print) -> dict:
    """Steps 1-5; returns {"problems": [...], "timings": {...}, "compare": {recipe: text}}."""
    from bench.lms.published_formats import write_published_models

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    done = out / "models" / f".written-{shape}"
    if done.is_file():  # a second rehearsal in the same OUT reuses the files (same names, same seeds)
        models = {k: Path(v) for k, v in json.loads(done.read_text(encoding="utf-8")).items()}
    else:
        models = write_published_models(out / "models", shape)  # under the published file names
        done.write_text(json.dumps({k: str(v) for k, v in models.items()}), encoding="utf-8")
    timings["write_models_s"] = time.perf_counter() - t
    corpora = build_corpora(out / "corpora")
    cfg = write_config(out, models, corpora)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_MODEL_", "BENCH_CORPUS_"))}
    env.update(BENCH_CONFIG=str(cfg), BENCH_HOME=str(out / "home"), COLUMNS="200",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    problems: list[str] = []
    if shape == "published":
        t = time.perf_counter()
        code = ("from bench.core.model_paths import resolve_model as r\n"
                "for n in ('hubert_base','gslm_hubert_km100','gslm_hubert100_lm','pgslm_ms_tlm','pgslm_f0_bins'):\n"
                "    print(n, r(n, verify=True).info)\n")
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        log(proc.stdout.strip())
        if proc.returncode:
            problems.append("verify_model refused a published-shape file: " + proc.stderr.strip().splitlines()[-1])
        timings["verify_s"] = time.perf_counter() - t
    expected = {}
    for name, path in models.items():
        f = path / "checkpoint_best.pt" if path.is_dir() else path
        expected[name] = sha256(f)
    # without the models the recipe refuses, in one line, before any work
    bare = {**env, "BENCH_CONFIG": str(out / "empty.yaml")}
    (out / "empty.yaml").write_text(f"corpora:\n" + "".join(f"  {k}: {v}\n" for k, v in corpora.items()))
    t = time.perf_counter()
    proc = bench(["run", "--recipe", "speechprompt-v2", "--tasks", "ks-speech-commands-v1", "--results",
                  str(out / "refused")], bare)
    timings["refusal_s"] = time.perf_counter() - t
    if proc.returncode != 2 or "not configured" not in proc.stderr:
        problems.append(f"without models: exit {proc.returncode}, expected 2 naming the missing models")
    compare = {}
    for recipe, tasks in (recipes or RUNS).items():
        results = out / f"results-{recipe}"
        t = time.perf_counter()
        proc = bench(["run", "--recipe", recipe, "--tasks", ",".join(tasks), "--methods", methods, "--limit",
                      str(limit), "--max-epochs", str(max_epochs), "--device", device, "--results", str(results),
                      "--no-compare"], env, log=out / f"run-{recipe}.log")
        timings[f"run_{recipe}_s"] = time.perf_counter() - t
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            problems.append(f"bench run --recipe {recipe}: exit {proc.returncode}: {' | '.join(tail)}")
        problems += check_records(results, expected)
        proc = bench(["compare", str(results), "--reference", recipe, "--out", str(results / "leaderboards"),
                      "--no-plot"], env)
        compare[recipe] = proc.stdout
        if proc.returncode != 0:
            problems.append(f"bench compare --reference {recipe}: exit {proc.returncode}: {proc.stderr.strip()}")
        elif "paper:" not in proc.stdout:
            problems.append(f"bench compare --reference {recipe}: no 'paper:' columns")
    return {"problems": problems, "timings": timings, "compare": compare}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--shape", choices=["published", "tiny"], default="published")
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--max-epochs", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--recipe", action="append", choices=list(RUNS), help="only this recipe (repeatable)")
    ap.add_argument("--tasks", help="comma-separated subset of each recipe's tasks")
    ap.add_argument("--methods", default="all", help="bench run --methods (default: all)")
    a = ap.parse_args()
    runs = {r: [t for t in tasks if not a.tasks or t in a.tasks.split(",")]
            for r, tasks in RUNS.items() if not a.recipe or r in a.recipe}
    started = time.perf_counter()
    result = rehearse(a.out, a.shape, a.limit, a.max_epochs, a.device, recipes=runs, methods=a.methods)
    for recipe, text in result["compare"].items():
        print(f"== bench compare --reference {recipe}\n{text}")
    for k, v in result["timings"].items():
        print(f"{k}: {v:.1f}")
    print(f"total: {time.perf_counter() - started:.1f} s")
    for p in result["problems"]:
        print("PROBLEM:", p)
    print("rehearsal " + ("failed" if result["problems"] else "passed"))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
