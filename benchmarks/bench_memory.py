"""Peak memory of a linear and an lstm cell at two corpus sizes (issue #23: "memory bounded by a batch, not by the
corpus"). A script that prints figures, never a test.

It writes two user-manifest tasks of N generated one-second clips each (a 4-class tone task for ``linear``, a
tone-spelling transcription task for ``lstm``) and their N/10 versions, runs ``bench run`` on each in a fresh
BENCH_HOME (features extracted, then ``--max-epochs`` epochs: memory per epoch is what is measured), and prints per
cell: utterances, feature frames, the cell's own peak RSS (the record's ``peak_rss_mb``), the peak RSS of any
process of the run (sampled every 50 ms with psutil: the extraction stage runs in the main process), the wall
time, and the ratio of the peak at N to the peak at N/10 (bounded memory: about 1).

    .venv/bin/python benchmarks/bench_memory.py [--n 2000] [--upstream fbank] [--max-epochs 2] [--ram-mb MB]
        [--methods linear,lstm] [--keep DIR]

``--ram-mb``: the lstm's in-memory budget for frame-averaged features (``BENCH_FEATURE_RAM_MB``; default 512): a
split under it is kept in memory after its first read, so at small N the lstm's peak grows with N up to it; 0
streams every batch from the cache.

Generated audio, caches and results go to a temporary directory (removed unless --keep).

Measured (2-core VM shared with other jobs, fbank, 2 epochs, two rounds; peak RSS of any process at n=200 -> 2000):
linear 447-451 -> 498-499 MB (1.11x; before the streaming reader 447-448 -> 569-570 MB, 1.27x), wall 10.3-11.6 s at
2000 (before 11.1-22.5 s); lstm 514-517 -> 635-643 MB with the default 512 MB budget (the split is kept: before
517-524 -> 640 MB), 515 -> 553 MB (1.07x) with --ram-mb 0, wall 21-24 s at 2000 either way. What still grows
from 200 to 2000 clips is extraction's shard buffer filling up to its 600 s / 64 MB cap: in-process, extraction of
2000 and 4000 clips peaks at 480 and 483 MB.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SR = 16_000
TONES = {"a": 300.0, "b": 700.0, "c": 1500.0, "d": 3000.0}


def _tone(rng, freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6.28)) + 0.02 * rng.standard_normal(t.size))


def write_tasks(root: Path, n: int, seed: int = 0) -> dict[str, str]:
    """Two task files (classification and generation) over ``n`` one-second clips each; returns method -> task."""
    from bench.data.audio import write_audio

    rng = np.random.default_rng(seed)
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rows_cls, rows_gen = [], []
    for i in range(n):
        split = "train" if i % 10 < 8 else ("valid" if i % 10 == 8 else "test")
        label = "abcd"[i % 4]
        p = audio / f"c{i}.wav"
        write_audio(p, _tone(rng, TONES[label] * rng.uniform(0.95, 1.05), 1.0).astype(np.float32))
        rows_cls.append({"audio": p.name, "label": label, "split": split, "id": f"c{i}"})
        text = "".join(rng.choice(list(TONES), size=4))
        wav = np.concatenate([_tone(rng, TONES[ch], 0.25) for ch in text]).astype(np.float32)
        q = audio / f"g{i}.wav"
        write_audio(q, wav)
        rows_gen.append({"audio": q.name, "text": " ".join(text), "split": split, "id": f"g{i}"})
    for name, rows in (("cls", rows_cls), ("gen", rows_gen)):
        with open(root / f"{name}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    (root / "mem-cls.yaml").write_text(
        f"name: mem-cls-{n}\nversion: 1\nfamily: KS\nkind: classification\norigin: synthetic\n"
        f"description: {n} one-second tones, 4 classes (bench_memory.py)\nlabels: [a, b, c, d]\n"
        "metrics: [accuracy]\ndata: {source: manifest, path: cls.csv, audio_root: audio}\n")
    (root / "mem-gen.yaml").write_text(
        f"name: mem-gen-{n}\nversion: 1\nfamily: ASR\nkind: generation\norigin: synthetic\n"
        f"description: {n} one-second tone spellings (bench_memory.py)\n"
        "metrics: [cer]\ndata: {source: manifest, path: gen.csv, audio_root: audio}\n")
    return {"linear": f"mem-cls-{n}", "lstm": f"mem-gen-{n}"}


class TreePeak:
    """Peak RSS of any single process of a process tree, sampled every 50 ms."""

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import psutil

        while not self._stop.wait(0.05):
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for p in procs:
                try:
                    self.peak = max(self.peak, p.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_cell(work: Path, task_dir: Path, task: str, method: str, upstream: str, max_epochs: int,
             ram_mb: float | None = None) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BENCH_HOME": str(work / "home"), "COLUMNS": "400"}  # one estimate line, unwrapped
    if ram_mb is not None:
        env["BENCH_FEATURE_RAM_MB"] = str(ram_mb)
    results = work / "results"
    cmd = [sys.executable, "-m", "bench.cli", "run", "--tasks", task, "--methods", method, "--upstream", upstream,
           "--task-dir", str(task_dir), "--max-epochs", str(max_epochs), "--jobs", "1", "--results", str(results),
           "--no-compare"]
    start = time.perf_counter()
    # cwd outside any checkout: the bench that runs is the one this interpreter imports (PYTHONPATH, the venv)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=work)
    peak = TreePeak(proc.pid)
    out, _ = proc.communicate()
    tree_peak = peak.stop()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    record = json.loads(next(results.rglob("seed-0.json")).read_text())
    info = record.get("info", {})
    frames = info.get("frames")
    frames = sum(frames.values()) if isinstance(frames, dict) else None
    estimate = [line for line in out.splitlines() if line.startswith("feature cache")]
    return {"cell_peak_mb": record.get("peak_rss_mb"), "tree_peak_mb": round(tree_peak / 2**20, 1),
            "wall_s": round(wall, 1), "frames": frames, "estimate": estimate[0].strip() if estimate else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="utterances of the large task (the small one has n/10)")
    ap.add_argument("--upstream", default="fbank")
    ap.add_argument("--max-epochs", type=int, default=2)
    ap.add_argument("--methods", default="linear,lstm")
    ap.add_argument("--ram-mb", type=float, default=None, help="BENCH_FEATURE_RAM_MB for the runs")
    ap.add_argument("--keep", type=Path, default=None, help="keep the generated data and results here")
    args = ap.parse_args()
    base = Path(args.keep or tempfile.mkdtemp(prefix="bench-memory-"))
    rows = []
    try:
        for n in (args.n // 10, args.n):
            data = base / f"data-{n}"
            tasks = write_tasks(data, n)
            for method in args.methods.split(","):
                r = run_cell(base / f"run-{method}-{n}", data, tasks[method], method, args.upstream, args.max_epochs,
                             args.ram_mb)
                rows.append({"method": method, "n": n, **r})
                print(f"{method:6s} n={n:6d} frames={r['frames'] or '-'!s:>8s} cell peak {r['cell_peak_mb']:7.1f} MB"
                      f"  any process {r['tree_peak_mb']:7.1f} MB  wall {r['wall_s']:6.1f} s", flush=True)
                if r["estimate"]:
                    print(f"       {r['estimate']}", flush=True)
        print(f"\nupstream {args.upstream}, {args.max_epochs} epochs; peak at n={args.n} / peak at n={args.n // 10}:")
        for method in args.methods.split(","):
            small, large = [r for r in rows if r["method"] == method]
            print(f"  {method:6s} cell {large['cell_peak_mb'] / small['cell_peak_mb']:.2f}x, "
                  f"any process {large['tree_peak_mb'] / small['tree_peak_mb']:.2f}x")
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
