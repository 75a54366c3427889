"""Several bench processes on one ``$BENCH_HOME``: inter-process locks around shared builds, unique temp names.

A shared artefact (a built-in task's audio, a default unit LM, a k-means fit) is built under :func:`build_lock`:
``fcntl.flock`` on a lock file beside it, so a second process waits (saying what for) and then finds the artefact
built instead of building it again. The kernel drops a ``flock`` when its process dies, so a killed build never
leaves a stale lock behind. Temporary files and directories are named ``.<name>.<pid>-<random>@<host>.tmp``:
unique per process and thread, and :func:`clean_stale_temps` can tell one left by a dead process of this host
(its pid is gone) from one another process is still writing. On a cluster (``--executor slurm``) the results
directory is shared by many hosts: a temp of another host is never judged by its pid here, only removed once it
is older than :data:`FOREIGN_TEMP_AGE_S`.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from bench.core.errors import BenchError

LOCK_TIMEOUT_ENV = "BENCH_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 6 * 3600.0  # a default-size suite + LM build takes minutes; a stuck holder is a real problem
_POLL_SECONDS = 0.2
_held = threading.local()  # lock files this thread holds (re-entrant use is a no-op)

# .<name>.<pid>-<hex>@<host>.tmp[.<ext>] (this module), and the older .<name>.<pid>-<hex>.tmp / .<name>.<pid>.tmp
TEMP_RE = re.compile(r"^\..+\.(?P<pid>\d+)(?:-[0-9a-f]+)?(?:@(?P<host>[A-Za-z0-9_-]+))?\.tmp(?:\.[A-Za-z0-9]+)?$")
FOREIGN_TEMP_AGE_S = 7 * 24 * 3600.0  # a temp of another host is stale only when this old (a cell can run days)


def this_host() -> str:
    """The short host name, as temp names carry it (letters, digits, ``_`` and ``-`` only)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0]) or "host"


def temp_path(path: str | os.PathLike) -> Path:
    """A sibling of ``path`` no other process, thread or host uses: ``.<name>.<pid>-<random>@<host>.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}@{this_host()}.tmp")


def lock_timeout() -> float:
    raw = os.environ.get(LOCK_TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise BenchError(f"{LOCK_TIMEOUT_ENV} must be a number of seconds >= 0, got {raw!r}")
    return value


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextmanager
def build_lock(artefact: str | os.PathLike, what: str, timeout: float | None = None,
               log: Callable[[str], object] | None = None) -> Iterator[None]:
    """Hold the inter-process lock of ``artefact`` (lock file ``.<name>.lock`` beside it) for the block.

    While another process holds it, says once "waiting for another bench process building <what>" and polls;
    after ``timeout`` seconds (default ``$BENCH_LOCK_TIMEOUT`` or 6 h) raises a BenchError naming the lock file and
    the holder's pid. Callers re-check whether the artefact exists after acquiring: the other process may have
    built it. Re-entrant within a thread; a no-op where ``fcntl`` does not exist (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    artefact = Path(artefact)
    lock_file = artefact.with_name(f".{artefact.name}.lock")
    held = getattr(_held, "files", None)
    if held is None:
        held = _held.files = set()
    key = str(lock_file.resolve())
    if key in held:
        yield
        return
    timeout = lock_timeout() if timeout is None else timeout
    log = log or _stderr
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start, said = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_pid(fd)
                if not said:
                    log(f"waiting for another bench process building {what} (pid {holder or '?'}, lock {lock_file})")
                    said = True
                if time.monotonic() - start >= timeout:
                    raise BenchError(
                        f"timed out after {timeout:.0f} s waiting for another bench process (pid {holder or '?'}) "
                        f"building {what}; lock file {lock_file}",
                        hint=f"if no other bench process is running, delete {lock_file}; {LOCK_TIMEOUT_ENV} sets the "
                             "wait") from None
                time.sleep(_POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 32, 0).decode().strip()
        return int(raw) if raw else None
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temps(roots: Iterable[str | os.PathLike]) -> list[Path]:
    """Remove temp files/directories (``.<name>.<pid>[-<hex>][@<host>].tmp``) whose process is gone, under
    ``roots``; returns what was removed. A temp of a live process is kept (it is being written); one of another
    host is kept until it is :data:`FOREIGN_TEMP_AGE_S` old (its pid means nothing here)."""
    removed = []
    host = this_host()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in list(dirnames) + filenames:
                m = TEMP_RE.match(name)
                if not m:
                    continue
                p = Path(dirpath) / name
                if m["host"] not in (None, host):
                    try:
                        if time.time() - p.lstat().st_mtime < FOREIGN_TEMP_AGE_S:
                            continue
                    except OSError:
                        continue
                elif pid_alive(int(m["pid"])):
                    continue
                try:
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                        dirnames.remove(name)
                    else:
                        p.unlink()
                    removed.append(p)
                except OSError:
                    pass
    return removed


__all__ = ["build_lock", "temp_path", "clean_stale_temps", "pid_alive", "this_host", "TEMP_RE", "FOREIGN_TEMP_AGE_S"]
