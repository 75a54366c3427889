"""``--numerics``: which vectorised code paths the math libraries may pick, so one record is the same on every x86-64
machine.

ATen (torch's CPU kernels), MKL (torch's BLAS), oneDNN (torch's convolutions and RNNs) and OpenBLAS (numpy, scipy,
scikit-learn) each choose an instruction set when they load, from the CPU they find: AVX-512 on one machine, AVX2 on
another, and a float sum taken in another order moves a score (issue 26 lists 7 of 60 records that moved between two
AMD EPYC VMs, one with and one without AVX-512). ``fast`` (the default) lets them choose. ``pinned`` sets, before any
of them loads, the one choice every x86-64 machine of the last decade supports (AVX2, Intel Haswell / AMD Zen):

- ``ATEN_CPU_CAPABILITY=avx2``: read once when torch loads (``aten/src/ATen/native/DispatchStub.cpp``);
- ``MKL_CBWR=AVX2``: MKL's conditional numerical reproducibility, the AVX2 code branch with deterministic
  reductions (oneMKL developer guide, "Specifying Code Branches"; on non-Intel CPUs MKL may run its AUTO branch
  instead, which the guide says may differ), and ``MKL_ENABLE_INSTRUCTIONS=AVX2`` as its dispatch ceiling;
- ``ONEDNN_MAX_CPU_ISA=AVX2`` (and its older name ``DNNL_MAX_CPU_ISA``): oneDNN's ceiling, read at its first use;
- ``OPENBLAS_CORETYPE=Haswell``: the kernel set of a DYNAMIC_ARCH OpenBLAS (numpy's wheels). A machine that already
  sets ``OPENBLAS_CORETYPE`` does so for correctness (older OpenBLAS builds compute wrong results on some CPUs):
  its value is kept, and recorded.

The thread counts are fixed by ``--cell-threads`` as before. Every process that computes gets these variables: the
``bench run`` process sets them at the command's entry (refusing when torch or numpy is already loaded, since they
would be read too late), ``--jobs`` workers are spawned with this process's environment and check what torch chose
(:func:`check_process`), Slurm jobs export them in their setup lines (:func:`exports`).
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from bench.core.errors import BenchError

MODES = ("fast", "pinned")
MODE_VARIABLE = "BENCH_NUMERICS"  # the mode of this process; inherited by workers and Slurm jobs
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


def apply(mode: str) -> dict[str, str]:
    """Make ``mode`` this process's numerics, before torch or numpy loads; returns the variables it set."""
    if mode not in MODES:
        raise BenchError(f"--numerics must be one of {', '.join(MODES)}, not '{mode}'")
    os.environ[MODE_VARIABLE] = mode
    if mode == "fast":
        return {}
    loaded = [m for m in LOADERS if m in sys.modules]
    if loaded:
        raise BenchError(f"--numerics pinned must be chosen before {' and '.join(loaded)} is imported: start a new "
                         f"process with BENCH_NUMERICS=pinned (or `bench run --numerics pinned`)")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise BenchError(f"--numerics pinned pins x86-64 code paths; this machine is {platform.machine()}")
    if not _has_avx2():
        raise BenchError("--numerics pinned runs the AVX2 code paths; this CPU has no AVX2 (use --numerics fast)")
    set_now = {}
    for key, value in PINNED_ENV.items():
        if key in KEPT_IF_SET and os.environ.get(key):
            continue
        os.environ[key] = set_now[key] = value
    return set_now


def current() -> str:
    """This process's mode (``fast`` unless it, or the process that started it, applied ``pinned``)."""
    return os.environ.get(MODE_VARIABLE, "fast")


def config_entry(mode: str) -> dict[str, Any]:
    """What the mode adds to a cell's resolved configuration: nothing for ``fast`` (records keep their hashes; which
    kernels a machine picks is, like the machine, outside a record's identity), ``{"numerics": "pinned-avx2"}`` for
    ``pinned``: its records differ from ``fast`` ones on a machine with AVX-512, so they must not be reused for each
    other, and they are meant to be equal on every x86-64 machine, so the pinned level alone names them."""
    return {} if mode == "fast" else {"numerics": f"{mode}-{ISA}"}


def exports(mode: str) -> list[str]:
    """Shell lines that give a Slurm job this process's numerics before its Python starts."""
    if mode == "fast":
        return []
    lines = [f"export {MODE_VARIABLE}={mode}"]
    for key in PINNED_ENV:
        if os.environ.get(key):
            lines.append(f"export {key}={os.environ[key]}")
    return lines


def check_process(mode: str | None = None) -> None:
    """In a process that runs cells: under ``pinned`` (``mode``, else this process's), torch must run the pinned
    kernels (it read ``ATEN_CPU_CAPABILITY`` when it loaded); a BenchError otherwise, so no cell computes on other
    code paths under a pinned record's name."""
    if (mode or current()) != "pinned":
        return
    import torch

    got = torch.backends.cpu.get_cpu_capability()
    if got.lower() != ISA:
        raise BenchError(f"--numerics pinned: torch runs {got} kernels, not {ISA.upper()} (ATEN_CPU_CAPABILITY="
                         f"{os.environ.get('ATEN_CPU_CAPABILITY')!r} was set after torch loaded)")


def effective() -> dict[str, Any]:
    """For a record's environment: the mode, the variables as this process has them, the kernels torch runs and
    the BLAS cores threadpoolctl sees (OpenBLAS ``architecture``)."""
    out: dict[str, Any] = {"mode": current(),
                           "env": {k: os.environ[k] for k in PINNED_ENV if os.environ.get(k) is not None}}
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


__all__ = ["MODES", "PINNED_ENV", "ISA", "apply", "current", "config_entry", "exports", "check_process", "effective"]
