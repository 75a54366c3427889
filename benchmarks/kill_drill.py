"""Kill drill: SIGKILL `bench run` at random moments, re-run to completion, and check nothing was lost or corrupted.

1. An uninterrupted reference run of a tiny grid in a fresh BENCH_HOME.
2. In a second fresh BENCH_HOME: start the same run, SIGKILL its process group after a random delay (0.5-1.5 x
   the reference run's duration / (N + 1), so the N kills land all along the grid as cached stages pile up), check every JSON file under BENCH_HOME and the results directory parses;
   N times. Then run to completion (must exit 0).
3. Print: kills survived, records lost (a record seen after some kill and gone later; must be 0), corrupt JSON
   files (must be 0), temp files of dead processes left after the final run (0: the run cleans them), and whether
   the final records equal the reference run's (scores, prediction counts, parameter counts, manifest checksum,
   config hash; timings ignored).

    python benchmarks/kill_drill.py --kills 6 --seed 0
    python benchmarks/kill_drill.py --kills 4 --pid-only          # `kill -9 PID` of bench run alone, as users do
    python benchmarks/kill_drill.py --kills 4 --pid-only --signal TERM

Every kill also counts the processes the run had started (worker processes, multiprocessing's resource tracker)
that are still alive 5 s after it (must be 0: workers end with their parent, bench/runner/cells.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's bench, for the script and (cwd) for the runs it starts

COMPARED = ("scores", "predictions", "params", "config_hash", "main_metric")


def command(results: Path, tasks: str, methods: str, size: str) -> list[str]:
    return [sys.executable, "-m", "bench.cli", "run", "--tasks", tasks, "--methods", methods, "--size", size,
            "--results", str(results), "--no-compare"]


def env_for(home: Path) -> dict:
    return {**os.environ, "BENCH_HOME": str(home), "COLUMNS": "200"}


def records(results: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(results.rglob("seed-*.json")):
        if ".work" in p.parts:
            continue
        try:
            out[str(p.relative_to(results))] = json.loads(p.read_text())
        except (OSError, ValueError):
            out[str(p.relative_to(results))] = None
    return out


def corrupt_json(*roots: Path) -> list[Path]:
    bad = []
    for root in roots:
        for p in root.rglob("*.json"):
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                continue
            try:
                json.loads(p.read_text())
            except (OSError, ValueError):
                bad.append(p)
    return bad


def dead_temps(*roots: Path) -> list[Path]:
    from bench.core.locks import TEMP_RE, pid_alive

    out = []
    for root in roots:
        for p in root.rglob(".*"):
            m = TEMP_RE.match(p.name)
            if m and not pid_alive(int(m["pid"])):
                out.append(p)
    return out


def descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def alive_after(pids: list[int], seconds: float) -> list[int]:
    """The processes of ``pids`` still running (zombies excepted) after waiting up to ``seconds`` for them."""
    import psutil

    deadline, alive = time.monotonic() + seconds, list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    return alive


def summary(rec: dict | None) -> dict | None:
    if rec is None:
        return None
    return {**{k: rec.get(k) for k in COMPARED}, "manifest_sha256": rec.get("data", {}).get("manifest_sha256")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", default="builtin-ks,builtin-vad")
    ap.add_argument("--methods", default="linear")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--workdir", type=Path, default=None, help="Keep the homes here (default: a temp dir).")
    ap.add_argument("--pid-only", action="store_true", help="Signal only the `bench run` process, not its process "
                    "group (its workers must then end by themselves).")
    ap.add_argument("--signal", choices=["KILL", "TERM"], default="KILL")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-kill-drill-"))

    ref_home, ref_results = work / "ref-home", work / "ref-results"
    t0 = time.perf_counter()
    r = subprocess.run(command(ref_results, args.tasks, args.methods, args.size), env=env_for(ref_home), cwd=REPO,
                       capture_output=True, text=True)
    ref_seconds = time.perf_counter() - t0
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:])
        print(f"reference run failed (exit {r.returncode})")
        return 1
    reference = records(ref_results)
    print(f"reference run: {len(reference)} record(s) in {ref_seconds:.1f} s")

    survived, attempts, rounds, orphans = 0, 0, [], []
    sig = getattr(signal, f"SIG{args.signal}")
    while survived < args.kills and attempts < 4 * args.kills:
        # a round: one fresh BENCH_HOME, runs killed at random moments until one finishes (or the kills run out)
        r_i = len(rounds)
        home, results = work / f"home-{r_i}", work / f"results-{r_i}"
        seen, lost, corrupt = set(), set(), []
        while survived < args.kills and attempts < 4 * args.kills:
            attempts += 1
            delay = rng.uniform(0.1, 1.0) * ref_seconds
            p = subprocess.Popen(command(results, args.tasks, args.methods, args.size), env=env_for(home),
                                 cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
            try:
                p.wait(timeout=delay)
                finished = True
            except subprocess.TimeoutExpired:
                tree = descendants(p.pid)
                if args.pid_only:
                    os.kill(p.pid, sig)
                else:
                    os.killpg(p.pid, sig)
                p.wait()
                left = alive_after(tree, 5.0)
                orphans += left
                if left:  # do not let them spoil the next run
                    for pid in left:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except OSError:
                            pass
                finished = False
            now = records(results)
            lost |= {k for k in seen if k not in now or now[k] is None}
            seen |= {k for k, v in now.items() if v is not None}
            corrupt += [c for c in corrupt_json(home, results) if c not in corrupt]
            survived += not finished
            print(f"round {r_i}, run {attempts}: {'finished before the kill' if finished else f'SIG{args.signal}ed'} "
                  f"after {delay:5.1f} s; {len(now)} record(s) so far")
            if finished:
                break
        # complete the round (a no-op run when its last run finished) and compare with the reference
        r = subprocess.run(command(results, args.tasks, args.methods, args.size), env=env_for(home), cwd=REPO,
                           capture_output=True, text=True)
        final = records(results)
        lost |= {k for k in seen if k not in final or final[k] is None}
        corrupt += [c for c in corrupt_json(home, results) if c not in corrupt]
        same = set(final) == set(reference) and all(summary(final.get(k)) == summary(v) for k, v in reference.items())
        rounds.append({"exit": r.returncode, "lost": lost, "corrupt": corrupt, "same": same,
                       "leftovers": dead_temps(home, results), "scratch": (results / ".work").exists()})
    lost = set().union(*(x["lost"] for x in rounds))
    corrupt = [c for x in rounds for c in x["corrupt"]]
    leftovers = [c for x in rounds for c in x["leftovers"]]
    print(f"rounds (fresh BENCH_HOME each): {len(rounds)}; final runs' exits {[x['exit'] for x in rounds]}")
    print(f"kills survived:          {survived}")
    print(f"records lost:            {len(lost)}" + (f" {sorted(lost)}" if lost else ""))
    print(f"corrupt JSON files:      {len(corrupt)}" + (f" {[str(c) for c in corrupt]}" if corrupt else ""))
    print(f"dead-process temps left: {len(leftovers)}" + (f" {[str(c) for c in leftovers]}" if leftovers else ""))
    print(f"scratch left (.work/):   {any(x['scratch'] for x in rounds)}")
    print(f"processes alive 5 s after a kill: {len(orphans)}" + (" (pid only)" if args.pid_only else " (group)"))
    print(f"final == uninterrupted:  {all(x['same'] for x in rounds)} ({sum(x['same'] for x in rounds)}/{len(rounds)} "
          "rounds equal the reference run)")
    ok = all(x["exit"] == 0 and x["same"] for x in rounds) and not lost and not corrupt and not orphans
    print(f"workdir: {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
