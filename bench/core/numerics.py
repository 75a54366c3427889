"""``--numerics``: which vectorised code paths the math libraries may pick, so one record is the same on every x86-64
machine.

ATen (torch's CPU kernels), MKL (torch's BLAS), oneDNN (torch's convolutions and RNNs) and OpenBLAS (numpy, scipy,
scikit-learn) each choose an instruction set when they load, from the CPU they find: AVX-512 on one machine, AVX2 on
another, and a float sum taken in another order moves a score (issue 26 lists 7 of 60 records that moved between two
AMD EPYC VMs, one with and one without AVX-512). ``pinned`` (the default) sets, before any of them loads, the one
choice every x86-64 machine of the last decade supports (AVX2, Intel Haswell / AMD Zen); ``fast`` lets them choose:

- ``ATEN_CPU_CAPABILITY=avx2``: read once when torch loads (``aten/src/ATen/native/DispatchStub.cpp``);
- ``MKL_CBWR=AVX2``: MKL's conditional numerical reproducibility, the AVX2 code branch with deterministic
  reductions (oneMKL developer guide, "Specifying Code Branches"; on non-Intel CPUs MKL may run its AUTO branch
  instead, which the guide says may differ), and ``MKL_ENABLE_INSTRUCTIONS=AVX2`` as its dispatch ceiling;
- ``ONEDNN_MAX_CPU_ISA=AVX2`` (and its older name ``DNNL_MAX_CPU_ISA``): oneDNN's ceiling, read at its first use;
- ``OPENBLAS_CORETYPE=Haswell``: the kernel set of a DYNAMIC_ARCH OpenBLAS (numpy's wheels). A machine that already
  sets ``OPENBLAS_CORETYPE`` does so for correctness (older OpenBLAS builds compute wrong results on some CPUs):
  its value is kept, and recorded.

The thread counts are fixed by ``--cell-threads`` as before. Every process that computes gets these variables:
the ``bench`` command sets them at its entry (``bench run``, ``evaluate``, ``data``, ``units``, ``pretrain``,
``params``, ``cache``), :func:`bench.api.run` at its call, ``tests/conftest.py`` for the test suite, all before
torch or numpy loads; ``--jobs`` workers are spawned with that environment and check what torch chose
(:func:`check_process`), Slurm jobs export it in their setup lines (:func:`exports`). Each mode keeps its own
feature, unit and F0 cache (:func:`cache_subdir`). Only the CPU's code paths are pinned: under ``--device cuda``
the CPU work (k-means, F0, numpy and scikit-learn, the metrics) is pinned and the GPU kernels are whatever
cuBLAS/cuDNN choose for that GPU.

Chosen or defaulted. ``--numerics pinned`` (or ``BENCH_NUMERICS=pinned``) is refused where it cannot be had (not
x86-64, no AVX2, torch or numpy already imported unpinned); ``--numerics fast`` is refused in a process that is
already pinned (torch or numpy loaded with the variables). Nothing chosen means pinned where it can be had, else
``fast`` with a one-line note saying why (an aarch64 machine, a Python session that imported torch or numpy
before bench); the note is in every record's ``environment.numerics``, so a record never claims a mode it did
not run in.

Config hash: a pinned cell's resolved configuration holds ``"numerics": "pinned-avx2"``; a fast one holds nothing,
as every record made before the mode existed (the committed leaderboard's among them). So a record made in one
mode never shares a config hash with one made in the other (their scores can differ on an AVX-512 machine, and
neither may be reused for the other), fast records keep the hashes they always had, and pinned ones are named by
the pinned level alone, since they are meant to be equal on every x86-64 machine.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any, Callable

from bench.core.errors import BenchError

MODES = ("fast", "pinned")
DEFAULT = "pinned"  # what a process runs when nothing chose (where it can be had; else fast, with a note)
MODE_VARIABLE = "BENCH_NUMERICS"  # the user's choice; then the mode bench set up, inherited by workers and Slurm jobs
SET_VARIABLE = "BENCH_NUMERICS_SET"  # the variables bench set (not the machine), so `fast` in a child can drop them
NOTE_VARIABLE = "BENCH_NUMERICS_NOTE"  # why a process that chose nothing runs fast (recorded)
ISA = "avx2"  # the pinned level: x86-64-v3
PINNED_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
}
KEPT_IF_SET = ("OPENBLAS_CORETYPE",)  # set by the machine for correctness: never overridden
LOADERS = ("torch", "numpy")  # modules whose import reads the variables above


def apply(requested: str | None = None, note: Callable[[str], None] | None = None) -> str:
    """Set this process's numerics before torch or numpy loads; returns the mode in effect.

    ``requested`` is the user's choice (``--numerics``); None reads ``BENCH_NUMERICS``, and when that is unset too
    the default applies: ``pinned`` where it can be had, else ``fast``, with ``note(line)`` saying why. A mode the
    user chose and that cannot be had is a BenchError (nothing ran yet). Calling it again with the mode in effect
    changes nothing."""
    chosen = requested or os.environ.get(MODE_VARIABLE) or None
    if chosen is not None and chosen not in MODES:
        raise BenchError(f"--numerics must be one of {', '.join(MODES)}, not '{chosen}'")
    loaded = [m for m in LOADERS if m in sys.modules]
    fallback = None
    if (chosen or DEFAULT) == "pinned":
        why = cannot_pin_here()
        if why is None and loaded and not pinned_in_effect():
            if chosen == "pinned":
                raise BenchError(f"--numerics pinned must be chosen before {' and '.join(loaded)} is imported: "
                                 "start a new process with BENCH_NUMERICS=pinned (or `bench run --numerics pinned`)")
            why = f"{' and '.join(loaded)} {'was' if len(loaded) == 1 else 'were'} imported before bench could pin " \
                  "the code paths"
        if why is None:
            _pin()
            return "pinned"
        if chosen == "pinned":
            raise BenchError(f"--numerics pinned runs the x86-64 AVX2 code paths; {why} (use --numerics fast)")
        fallback = f"{why}: running --numerics fast (the libraries pick their own code paths; recorded)"
    ours = _set_by_bench()
    if ours and loaded:
        raise BenchError(f"--numerics fast must be chosen before {' and '.join(loaded)} is imported: this process "
                         "already runs the pinned code paths; start a new process with BENCH_NUMERICS=fast")
    for key in ours:
        os.environ.pop(key, None)
    os.environ.pop(SET_VARIABLE, None)
    os.environ[MODE_VARIABLE] = "fast"
    if fallback:
        os.environ[NOTE_VARIABLE] = fallback
        if note is not None:
            note(f"numerics: {fallback}")
    return "fast"


def cannot_pin_here() -> str | None:
    """Why this machine cannot run the pinned code paths (None: it can): not x86-64, or no AVX2."""
    machine = platform.machine()
    if machine.lower() not in ("x86_64", "amd64"):
        return f"this machine is {machine or 'of unknown architecture'}, not x86-64: no AVX2 code paths to pin"
    if not _has_avx2():
        return "this CPU has no AVX2"
    return None


def pinned_in_effect() -> bool:
    """Whether this process was set up pinned (the variables set before torch and numpy loaded, here or by the
    process that started it); torch's own choice is then checked by :func:`check_process`."""
    if os.environ.get(MODE_VARIABLE) != "pinned":
        return False
    return all(os.environ.get(k) == v for k, v in PINNED_ENV.items() if k not in KEPT_IF_SET)


def _pin() -> None:
    if not pinned_in_effect():
        ours = _set_by_bench()
        set_now = []
        for key, value in PINNED_ENV.items():
            if key in KEPT_IF_SET and os.environ.get(key) and key not in ours:
                continue
            os.environ[key] = value
            set_now.append(key)
        os.environ[SET_VARIABLE] = ",".join(set_now)
    os.environ[MODE_VARIABLE] = "pinned"
    os.environ.pop(NOTE_VARIABLE, None)


def _set_by_bench() -> list[str]:
    return [k for k in os.environ.get(SET_VARIABLE, "").split(",") if k in PINNED_ENV]


def current() -> str:
    """This process's mode: what :func:`apply` set up here or in the process that started it; ``fast`` when
    nothing did (a Python process that never called it: the libraries pick)."""
    mode = os.environ.get(MODE_VARIABLE, "fast")
    return mode if mode in MODES else "fast"


def config_entry(mode: str) -> dict[str, Any]:
    """What the mode adds to a cell's resolved configuration: nothing for ``fast`` (records keep the hashes they had
    before the mode existed; which kernels a machine picks is, like the machine, outside a record's identity),
    ``{"numerics": "pinned-avx2"}`` for ``pinned``: its records differ from ``fast`` ones on a machine with AVX-512,
    so they must not be reused for each other, and they are meant to be equal on every x86-64 machine, so the
    pinned level alone names them."""
    return {} if mode == "fast" else {"numerics": f"{mode}-{ISA}"}


def cache_subdir() -> str:
    """Where this process's mode keeps its feature, unit and F0 caches below ``$BENCH_HOME/cache``
    (bench.core.paths.cache_dir): ``""`` for fast (the cache as it always was), ``pinned-avx2`` for pinned, since
    features extracted on another machine's code paths would make a pinned record depend on the cache's history."""
    return CACHE_SUBDIRS[current()]


CACHE_SUBDIRS = {"fast": "", "pinned": f"pinned-{ISA}"}


def exports(mode: str) -> list[str]:
    """Shell lines that give a Slurm job this process's numerics before its Python starts."""
    if mode == "fast":
        return []
    lines = [f"export {MODE_VARIABLE}={mode}"]
    for key in [*PINNED_ENV, SET_VARIABLE]:
        if os.environ.get(key):
            lines.append(f"export {key}={os.environ[key]}")
    return lines


def check_process(mode: str | None = None) -> None:
    """In a process that runs cells: ``mode`` (the run's, else this process's) must be the process's own, and under
    ``pinned`` torch must run the pinned kernels (it read ``ATEN_CPU_CAPABILITY`` when it loaded); a BenchError
    otherwise, so no cell computes on other code paths than its record's name says."""
    mode = mode or current()
    if mode != current():
        raise BenchError(f"the run asks for --numerics {mode} but this process was set up {current()} (the mode is "
                         "chosen when a process starts: start a new one with BENCH_NUMERICS=" + mode + ")")
    if mode != "pinned":
        return
    import torch

    got = torch.backends.cpu.get_cpu_capability()
    if got.lower() != ISA:
        raise BenchError(f"--numerics pinned: torch runs {got} kernels, not {ISA.upper()} (ATEN_CPU_CAPABILITY="
                         f"{os.environ.get('ATEN_CPU_CAPABILITY')!r}: set after torch loaded, or "
                         f"{cannot_pin_here() or 'this CPU cannot run them'})")


def effective() -> dict[str, Any]:
    """For a record's environment: the mode, why it is fast where the default could not pin (``note``), the
    variables as this process has them, the kernels torch runs and the BLAS cores threadpoolctl sees (OpenBLAS
    ``architecture``)."""
    out: dict[str, Any] = {"mode": current(),
                           "env": {k: os.environ[k] for k in PINNED_ENV if os.environ.get(k) is not None}}
    if out["mode"] == "fast" and os.environ.get(NOTE_VARIABLE):
        out["note"] = os.environ[NOTE_VARIABLE]
    try:
        import torch

        out["aten_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except (ImportError, AttributeError):
        pass
    try:
        from threadpoolctl import threadpool_info

        out["blas"] = sorted({f"{i.get('internal_api')}:{i.get('architecture')}" for i in threadpool_info()
                              if i.get("user_api") == "blas"})
    except Exception:  # noqa: BLE001 - informative, never required
        pass
    return out


def _has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx2" in line.split()
    except OSError:
        pass
    return True  # no /proc (not Linux): torch's capability check in every worker still catches a mismatch


__all__ = ["MODES", "DEFAULT", "PINNED_ENV", "ISA", "apply", "cannot_pin_here", "pinned_in_effect", "current",
           "config_entry", "cache_subdir", "exports", "check_process", "effective"]
