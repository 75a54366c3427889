"""Offline default LMs shipped with bench: built once by ``bench pretrain ulm [--prosody]``, checked by sha256.

The stand-in GSLM ULM and pGSLM MS-TLM of the built-in grid (``bench.lms.default_lm``/``default_pgslm``) take
minutes to build on 2 CPU cores (k-means, unit extraction, F0, pretraining) and their k-means comes out
differently on another CPU, so every machine prompted a slightly different LM. bench therefore ships the
directories its own builders wrote for the default configurations, under ``bench/assets/default_lms/<name>/``
where ``<name>`` is the cache directory name (``ulm-default-<config hash>``): the same name means the same build
config and recipe. Each holds a ``SHA256SUMS`` file; a shipped directory is verified against it and copied into
``$BENCH_HOME/models/`` the first time it is needed, and records name it (``SHIPPED.json`` beside the files).
A directory already in ``$BENCH_HOME/models/`` (e.g. one ``bench pretrain ulm --rebuild`` built locally) wins.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.core.errors import BenchError

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "assets" / "default_lms"
SUMS_FILE = "SHA256SUMS"
MARKER_FILE = "SHIPPED.json"


def _sha256(path: Path) -> str:
    from bench.data.manifest import file_digest

    return file_digest(path, "sha256")


def ensure(out: Path, what: str, is_built, build, rebuild: bool = False, log=None) -> Path:
    """The default LM directory ``out``: cached, else installed from its shipped copy, else ``build(out)`` — under
    a build lock, re-checked once the lock is held. ``rebuild`` replaces a shipped copy by a local build."""
    from bench.core.locks import build_lock

    if is_built(out) and not (rebuild and shipped_marker(out)):
        return out
    with build_lock(out, f"{what} {out}", log=log):
        if rebuild and shipped_marker(out):
            shutil.rmtree(out)
        if is_built(out):  # another process built it while this one waited
            return out
        if not rebuild and install(out.name, out):
            return out
        return build(out)


def shipped_dir(name: str) -> Path | None:
    """The shipped directory of a default LM named ``name``, or None."""
    d = SHIPPED_DIR / name
    return d if (d / SUMS_FILE).is_file() else None


def verify(directory: Path) -> dict[str, str]:
    """{file: sha256} of a shipped directory, each checked against its SHA256SUMS (a mismatch is an error naming
    the file: a corrupted or hand-edited checkpoint is never prompted)."""
    sums = {}
    for line in (directory / SUMS_FILE).read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip()] = digest
    for name, digest in sums.items():
        path = directory / name
        if not path.is_file():
            raise BenchError(f"shipped LM {directory}: {name} is missing (listed in {SUMS_FILE})")
        got = _sha256(path)
        if got != digest:
            raise BenchError(f"shipped LM {path}: sha256 {got[:12]}… differs from {SUMS_FILE} ({digest[:12]}…); "
                             "the file is corrupted or was edited: restore it from git")
    return sums


def install(name: str, out: Path) -> bool:
    """Copy the verified shipped directory ``name`` to ``out`` (atomically); False when none is shipped."""
    from bench.data.manifest import atomic_directory

    src = shipped_dir(name)
    if src is None:
        return False
    sums = verify(src)
    with atomic_directory(Path(out)) as tmp:
        for file in sums:
            shutil.copy2(src / file, tmp / file)
        (tmp / MARKER_FILE).write_text(json.dumps({"shipped_from": f"bench/assets/default_lms/{name}",
                                                   "sha256": sums}, indent=1))
    return True


def write_sums(directory: Path) -> None:
    """Write SHA256SUMS over every file of a built LM directory (used once, when a build is shipped)."""
    directory = Path(directory)
    files = sorted(p.name for p in directory.iterdir() if p.is_file() and p.name not in (SUMS_FILE, MARKER_FILE))
    (directory / SUMS_FILE).write_text("".join(f"{_sha256(directory / f)}  {f}\n" for f in files))


def shipped_marker(directory: Path) -> dict:
    """What ``install`` recorded for a models-dir copy of a shipped LM ({} for a locally built one)."""
    p = Path(directory) / MARKER_FILE
    return json.loads(p.read_text()) if p.is_file() else {}
