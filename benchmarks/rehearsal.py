"""Full-size rehearsal: corpora in their official layouts at published size, read by bench's own adapters and run
with `bench run`, measuring wall time, peak memory and cache bytes per stage.

It generates, under ``--workdir`` (never inside the repository):
  - Speech Commands v0.01 as distributed: ``speech_commands_v0.01/<30 words>/<speaker>_nohash_<n>.wav`` (64,721
    one-second clips at ``--fraction 1``, with ``validation_list.txt`` / ``testing_list.txt`` and six
    ``_background_noise_`` files) and ``speech_commands_test_set_v0.01/<12 classes>/`` (3,081 clips);
  - a LibriSpeech-layout corpus of ``--librispeech-hours`` (default 10 h at fraction 1; 80/10/10 % in
    train-clean-100 / dev-clean / test-clean): ``<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac`` and one
    ``<speaker>-<chapter>.trans.txt`` per chapter.
The audio is cheap synthetic sound, not speech and not TTS: each word is a few formant-like harmonic syllables at
its speaker's pitch plus noise (Speech Commands), each character a short tone of its own pitch (LibriSpeech), so
generation takes minutes at full size and the heads have something to learn. The figures it measures are memory,
time and bytes, not accuracy.

Then, per upstream (``--upstreams``, default whisper_tiny_en and fbank), one ``bench run`` per stage in a fresh
process: linear and prompt-gslm-lv on ks-speech-commands-v1, lstm on asr-librispeech (``--stages``). Per stage it
prints the wall time, the peak resident memory of the whole process tree (sum over bench and its worker processes,
sampled every 0.2 s with psutil) and of the largest single process (at least the bench process's own high-water
mark, ``ru_maxrss`` from ``wait4``), the bytes the stage added to the cache, and
bench's own cache estimate where bench prints one (a ``feature cache: ~N`` line), else "n/a". The cells'
own wall time and peak RSS (from their records) are printed beside. prompt-gslm-lv on an upstream other than
whisper_tiny_en first builds that upstream's stand-in unit LM from the built-in suite (generated with espeak-ng,
then k-means and ULM pretraining: a one-off of many minutes on 2 cores, inside that stage's figures).

    python benchmarks/rehearsal.py --workdir /scratch/rehearsal --fraction 0.1
    python benchmarks/rehearsal.py --workdir /scratch/rehearsal --fraction 1.0
    python benchmarks/rehearsal.py --workdir /tmp/reh --fraction 0.01 --prompt-epochs 1 --stages ks-linear,ls-lstm
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SR = 16_000
SC_TRAIN_CLIPS = 64_721  # Speech Commands v0.01: every clip of speech_commands_v0.01 (train + valid + test lists)
SC_TEST_CLIPS = 3_081  # speech_commands_test_set_v0.01
SC_SPEAKERS = 1_881
SC_WORDS = ("bed", "bird", "cat", "dog", "down", "eight", "five", "four", "go", "happy", "house", "left", "marvin",
            "nine", "no", "off", "on", "one", "right", "seven", "sheila", "six", "stop", "three", "tree", "two", "up",
            "wow", "yes", "zero")
SC_TEST_CLASSES = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_")
NOISE_FILES = ("doing_the_dishes", "dude_miaowing", "exercise_bike", "pink_noise", "running_tap", "white_noise")
LS_SUBSETS = (("train-clean-100", 0.8), ("dev-clean", 0.1), ("test-clean", 0.1))
LETTERS = "abcdefghijklmnopqrstuvwxyz'"
STAGES = {"ks-linear": ("ks-speech-commands-v1", "linear"), "ks-prompt": ("ks-speech-commands-v1", "prompt-gslm-lv"),
          "ls-lstm": ("asr-librispeech", "lstm")}


# ---- Speech Commands v0.01 ---------------------------------------------------------------------------------
def word_sound(word: str, pitch: float, rng: np.random.Generator, seconds: float = 1.0) -> np.ndarray:
    """A word as 1-3 'syllables': harmonics of ``pitch`` shaped by two word-specific formants, in a 1-s clip."""
    n = int(seconds * SR)
    h = sum(ord(c) * (i + 1) for i, c in enumerate(word))
    syllables = 1 + h % 3
    f1, f2 = 300 + (h * 37) % 600, 900 + (h * 91) % 1600
    out = np.zeros(n, np.float32)
    start = int(rng.uniform(0.05, 0.25) * SR)
    length = int(0.5 * SR / syllables)
    t = np.arange(length) / SR
    env = np.sin(np.pi * np.arange(length) / length) ** 2
    for s in range(syllables):
        f1s, f2s = f1 * (1 + 0.15 * s), f2 * (1 - 0.1 * s)
        wav = sum(np.sin(2 * np.pi * k * pitch * t) * (np.exp(-((k * pitch - f1s) / 150) ** 2)
                                                        + 0.5 * np.exp(-((k * pitch - f2s) / 250) ** 2))
                  for k in range(1, int(3500 // pitch)))
        a = start + s * length
        out[a:a + length] += (0.3 * env * wav / (np.abs(wav).max() + 1e-6))[: n - a]
    return out + 0.01 * rng.standard_normal(n).astype(np.float32)


def write_wav(path: Path, wav: np.ndarray) -> None:
    sf.write(str(path), np.clip(wav, -1, 1), SR, subtype="PCM_16")


def speech_commands(root: Path, fraction: float, seed: int = 0) -> dict:
    """The two Speech Commands v0.01 folders at ``fraction`` of the published size."""
    from bench.data.corpora.speech_commands_v1 import hash_split

    rng = np.random.default_rng(seed)
    train_dir, test_dir = root / "speech_commands_v0.01", root / "speech_commands_test_set_v0.01"
    n_clips = max(len(SC_WORDS), round(SC_TRAIN_CLIPS * fraction))
    speakers = [f"{x:08x}" for x in rng.integers(0, 2**32, size=max(100, round(SC_SPEAKERS * fraction)))]
    pitch = {s: float(rng.uniform(90, 260)) for s in speakers}
    counts: dict[tuple[str, str], int] = {}
    lists = {"valid": [], "test": []}
    for i in range(n_clips):
        word, spk = SC_WORDS[i % len(SC_WORDS)], speakers[int(rng.integers(len(speakers)))]
        k = counts[(spk, word)] = counts.get((spk, word), -1) + 1
        name = f"{spk}_nohash_{k}.wav"
        (train_dir / word).mkdir(parents=True, exist_ok=True)
        write_wav(train_dir / word / name, word_sound(word, pitch[spk], rng))
        split = hash_split(name)  # the published lists follow the same hash
        if split != "train":
            lists["valid" if split == "valid" else "test"].append(f"{word}/{name}")
    (train_dir / "validation_list.txt").write_text("".join(p + "\n" for p in sorted(lists["valid"])))
    (train_dir / "testing_list.txt").write_text("".join(p + "\n" for p in sorted(lists["test"])))
    noise = train_dir / "_background_noise_"
    noise.mkdir(parents=True, exist_ok=True)
    for j, name in enumerate(NOISE_FILES):
        white = rng.standard_normal(60 * SR).astype(np.float32)
        wav = np.cumsum(white) * 0.01 if j % 2 else white  # brown-ish and white
        write_wav(noise / f"{name}.wav", 0.2 * wav / (np.abs(wav).max() + 1e-6))
    n_test = max(len(SC_TEST_CLASSES), round(SC_TEST_CLIPS * fraction))
    others = [w for w in SC_WORDS if w not in SC_TEST_CLASSES]
    test_speakers = [f"{x:08x}" for x in rng.integers(0, 2**32, size=max(20, round(250 * fraction)))]
    for i in range(n_test):
        cls, spk = SC_TEST_CLASSES[i % len(SC_TEST_CLASSES)], test_speakers[int(rng.integers(len(test_speakers)))]
        (test_dir / cls).mkdir(parents=True, exist_ok=True)
        if cls == "_silence_":
            wav = 0.05 * rng.standard_normal(SR).astype(np.float32)
        else:
            wav = word_sound(cls if cls != "_unknown_" else others[i % len(others)], float(rng.uniform(90, 260)), rng)
        write_wav(test_dir / cls / f"{spk}_nohash_{i}.wav", wav)
    return {"clips": n_clips, "test_clips": n_test, "valid_list": len(lists["valid"]),
            "testing_list": len(lists["test"]), "hours": (n_clips + n_test + 6 * 60) / 3600}


# ---- LibriSpeech layout ------------------------------------------------------------------------------------
def spelled(text: str, rng: np.random.Generator, pitch: float) -> np.ndarray:
    """Each character 60 ms of a tone of its own pitch (scaled by the speaker's), 40 ms between words."""
    char = int(0.06 * SR)
    gap = np.zeros(int(0.04 * SR), np.float32)
    t = np.arange(char) / SR
    env = np.hanning(char).astype(np.float32)
    tones = {c: (env * np.sin(2 * np.pi * (250 + 60 * i) * pitch / 150 * t)).astype(np.float32)
             for i, c in enumerate(LETTERS)}
    parts = [gap]
    for word in text.split(" "):
        parts += [tones[c] for c in word] + [gap]
    wav = 0.3 * np.concatenate(parts)
    return wav + 0.005 * rng.standard_normal(len(wav)).astype(np.float32)


def librispeech(root: Path, hours: float, seed: int = 0) -> dict:
    """``LibriSpeech/`` with at least ``hours`` of audio over the three subsets (80/10/10 %), ~10-s utterances,
    two chapters a speaker, utterances dealt to speakers in turn."""
    rng = np.random.default_rng(seed)
    vocab = ["".join(rng.choice(list(LETTERS[:-1]), size=int(rng.integers(2, 8)))) for _ in range(400)]
    made = {}
    for subset, share in LS_SUBSETS:
        target, total, u = hours * share * 3600, 0.0, 0
        base = {"train-clean-100": 1000, "dev-clean": 5000, "test-clean": 7000}[subset]
        n_spk = max(2, min(40, round(target / 600)))  # ~10 min a speaker, at most 40 per subset
        pitch = {base + s: float(rng.uniform(100, 220)) for s in range(n_spk)}
        lines: dict[tuple[int, int], list[str]] = {}
        while total < target or u < 3:
            spk = base + u % n_spk
            chapter = 100 + 7 * (spk - base) + (u // n_spk) % 2
            k = len(lines.setdefault((spk, chapter), []))
            text = " ".join(vocab[int(i)] for i in rng.integers(len(vocab), size=int(rng.integers(20, 45))))
            wav = spelled(text, rng, pitch[spk])
            folder = root / subset / str(spk) / str(chapter)
            folder.mkdir(parents=True, exist_ok=True)
            utt = f"{spk}-{chapter}-{k:04d}"
            sf.write(str(folder / f"{utt}.flac"), np.clip(wav, -1, 1), SR, subtype="PCM_16")
            lines[(spk, chapter)].append(f"{utt} {text.upper()}")
            total += len(wav) / SR
            u += 1
        for (spk, chapter), rows in lines.items():
            (root / subset / str(spk) / str(chapter) / f"{spk}-{chapter}.trans.txt").write_text(
                "".join(x + "\n" for x in rows))
        made[subset] = {"utterances": u, "hours": round(total / 3600, 3)}
    return made


# ---- measuring a stage -------------------------------------------------------------------------------------
class TreeMemory:
    """Peak RSS of a process and all its descendants: of their sum and of the largest one (psutil, 0.2 s)."""

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)
        self.peak_sum = self.peak_one = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                except psutil.Error:
                    pass
            if rss:
                self.peak_sum, self.peak_one = max(self.peak_sum, sum(rss)), max(self.peak_one, max(rss))
            self._stop.wait(0.2)

    def stop(self):
        self._stop.set()
        self._thread.join()


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def human(n: float) -> str:
    """Decimal units (1 MB = 10^6 bytes), as bench's cache estimate prints them."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return str(n)


ESTIMATE = re.compile(r"feature cache[^:\n]*: (?:about |~)([\d.]+ ?[KMGT]?B)")  # bench's estimate line


def run_stage(name: str, cmd: list[str], env: dict, log: Path) -> dict:
    start = time.perf_counter()
    cache = Path(env["BENCH_HOME"]) / "cache"
    before = tree_bytes(cache)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        mem = TreeMemory(proc.pid)
        # the bench process's own peak is the kernel's high-water mark (a 0.2-s sample can miss a short peak: a
        # tenth-size lstm stage sampled 885 MB where its cell's record had 944 MB)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
        mem.stop()
        exact = usage.ru_maxrss * 1024  # KiB on Linux
        mem.peak_one, mem.peak_sum = max(mem.peak_one, exact), max(mem.peak_sum, exact)
    text = log.read_text(errors="replace")
    estimates = ESTIMATE.findall(text)
    return {"stage": name, "rc": rc, "wall_s": time.perf_counter() - start, "peak_rss_sum": mem.peak_sum,
            "peak_rss_one": mem.peak_one, "cache_added": tree_bytes(cache) - before,
            "estimate": ", ".join(estimates) if estimates else "n/a", "log": str(log)}


def cell_figures(results: Path, task: str, method: str, upstream: str) -> str:
    found = sorted((results / task / method / upstream).rglob("seed-0.json"))
    if not found:
        return "no record"
    r = json.loads(found[-1].read_text())
    main = r.get("main_metric")
    return (f"cell {r['wall_time_s']:.1f} s, cell peak RSS {r['peak_rss_mb']:.0f} MB, {main} "
            f"{r['scores'].get(main, float('nan')):.4f}, epochs {r['info'].get('epochs_run')}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True, help="Where corpora, BENCH_HOME and results go (not "
                    "inside the repository).")
    ap.add_argument("--fraction", type=float, default=1.0, help="Share of the published size (e.g. 0.1, 1.0).")
    ap.add_argument("--librispeech-hours", type=float, default=10.0, help="LibriSpeech-layout hours at fraction 1.")
    ap.add_argument("--upstreams", default="whisper_tiny_en,fbank")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"Comma-separated of {', '.join(STAGES)}.")
    ap.add_argument("--prompt-epochs", type=int, default=2, help="Epoch budget of the prompt cell (--max-epochs).")
    ap.add_argument("--epochs", type=int, default=None, help="Epoch budget of linear and lstm (default: theirs).")
    ap.add_argument("--jobs", type=int, default=1, help="bench run --jobs.")
    ap.add_argument("--regenerate", action="store_true", help="Generate the corpora again.")
    ap.add_argument("--bench-args", default="", help="Extra arguments for every bench run (e.g. '--device cuda').")
    args = ap.parse_args()

    work = args.workdir.resolve()
    if work == REPO or REPO in work.parents:
        sys.exit(f"--workdir {work} is inside the repository; choose a folder outside it")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        sys.exit(f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
    tag = f"f{args.fraction:g}"
    corpora = work / f"corpora-{tag}"
    sc_root, ls_root = corpora / "speech_commands", corpora / "LibriSpeech"
    rows = []

    stamp = corpora / "generated.json"
    if args.regenerate or not stamp.is_file():
        import resource
        import shutil

        shutil.rmtree(corpora, ignore_errors=True)
        t0 = time.perf_counter()
        made = {"speech_commands": speech_commands(sc_root, args.fraction)}
        t1 = time.perf_counter()
        made["librispeech"] = librispeech(ls_root, args.librispeech_hours * args.fraction)
        t2 = time.perf_counter()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        stamp.write_text(json.dumps(made, indent=1))
        rows.append({"stage": "generate speech commands", "rc": 0, "wall_s": t1 - t0, "peak_rss_sum": peak,
                     "peak_rss_one": peak, "cache_added": tree_bytes(sc_root), "estimate": "(corpus bytes)"})
        rows.append({"stage": "generate librispeech", "rc": 0, "wall_s": t2 - t1, "peak_rss_sum": peak,
                     "peak_rss_one": peak, "cache_added": tree_bytes(ls_root), "estimate": "(corpus bytes)"})
    made = json.loads(stamp.read_text())
    print(f"corpora ({tag}): Speech Commands {made['speech_commands']}; LibriSpeech {made['librispeech']}", flush=True)

    home, results, logs = work / f"home-{tag}", work / f"results-{tag}", work / f"logs-{tag}"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BENCH_HOME": str(home), "BENCH_CORPUS_SPEECH_COMMANDS_V1": str(sc_root),
           "BENCH_CORPUS_LIBRISPEECH": str(ls_root), "COLUMNS": "200", "PYTHONPATH": str(REPO)}
    cells = []
    for upstream in [u.strip() for u in args.upstreams.split(",") if u.strip()]:
        for stage in stages:
            task, method = STAGES[stage]
            cmd = [sys.executable, "-m", "bench.cli", "run", "--tasks", task, "--methods", method, "--upstream",
                   upstream, "--results", str(results), "--no-compare", "--jobs", str(args.jobs),
                   *args.bench_args.split()]
            epochs = args.prompt_epochs if method.startswith("prompt") else args.epochs
            if epochs:
                cmd += ["--max-epochs", str(epochs)]
            name = f"{stage} {upstream}"
            print(f"running {name}: {' '.join(cmd[1:])}", flush=True)
            row = run_stage(name, cmd, env, logs / f"{stage}-{upstream}.log")
            rows.append(row)
            cells.append((name, cell_figures(results, task, method, upstream)))
            print(f"  {row['wall_s']:.1f} s, exit {row['rc']}, peak RSS {human(row['peak_rss_sum'])}", flush=True)

    print(f"\nrehearsal at fraction {args.fraction:g} (workdir {work})")
    print(f"{'stage':34} {'exit':>4} {'wall':>9} {'peak RSS (all)':>15} {'(largest)':>10} {'cache added':>12}  "
          "estimate")
    for r in rows:
        print(f"{r['stage']:34} {r['rc']:>4} {r['wall_s']:>8.1f}s {human(r['peak_rss_sum']):>15} "
              f"{human(r['peak_rss_one']):>10} {human(r['cache_added']):>12}  {r['estimate']}")
    for name, figures in cells:
        print(f"  {name}: {figures}")
    (work / f"rehearsal-{tag}.json").write_text(json.dumps({"fraction": args.fraction, "stages": rows,
                                                            "cells": dict(cells)}, indent=1))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
