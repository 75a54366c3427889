"""Arrays on disk for the caches: atomic ``.npy`` writes, and a sharded store for many small arrays.

Files stay plain ``.npy`` (+ JSON sidecars), readable by any tool.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.data.manifest import write_text_atomic


def save_array_atomic(path: str | os.PathLike, arr: np.ndarray, what: str = "cache array") -> None:
    """``np.save`` to a temporary name in the same directory, then rename: a reader never sees half a file. An OS
    error (disk full, permission) is a BenchError naming the path and ``what``; the temporary is removed."""
    from bench.data.manifest import write_error
    from bench.core.locks import temp_path

    path = os.fspath(path)
    tmp = os.fspath(temp_path(path))
    try:
        try:
            f = open(tmp, "xb")
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            f = open(tmp, "xb")
        with f:
            np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)
        os.replace(tmp, path)
    except OSError as err:
        if err.errno is None and disk_is_full(tmp):  # numpy's short write: "N requested and M written"
            err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        error = write_error(path, what, err)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise error from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def disk_is_full(path: str | os.PathLike) -> bool:
    """Whether the file system holding ``path`` (or its nearest existing parent) has no block or inode left for
    this user: the cause of a failed write whose error does not say it (asked while the partial file exists)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except (OSError, AttributeError):
        return False
    return st.f_bavail == 0 or (st.f_files > 0 and st.f_favail == 0)


class ShardedArrayStore:
    """Many small arrays (one per utterance) stored in few files: shards of arrays concatenated on ``axis``.

    Creating a file costs ~1 ms on this kind of disk, 40x the cost of writing a 1-s clip's fbank into an open
    one, so per-utterance files made writing the cache the slowest part of feature extraction. Each
    ``put_many`` writes one shard ``<id>.npy`` and then its sidecar ``<id>.json`` (keys, offsets, lengths); a
    shard without a sidecar is unfinished and ignored. ``index.json`` merges the sidecars so a lookup reads
    one file; it is only a cache of them (rebuilt from the sidecars when a key is not in it), so two
    processes writing at once can at worst cost a rescan, never an entry.
    """

    def __init__(self, directory: str | os.PathLike, axis: int = 1):
        self.dir = os.fspath(directory)
        self.axis = axis
        self._index: dict[str, tuple[str, int, int]] | None = None
        self._merged: set[str] = set()

    # -- index -------------------------------------------------------------------------------------------
    def _index_file(self) -> str:
        return os.path.join(self.dir, "index.json")

    def _load_index(self) -> dict[str, tuple[str, int, int]]:
        if self._index is None:
            self._index = {}
            try:
                with open(self._index_file(), encoding="utf-8") as f:
                    data = json.load(f)
                self._merged = set(data["shards"])
                shards: dict[str, str] = {}  # one string per shard, not one per entry (~75 B an utterance)
                self._index = {k: (shards.setdefault(v[0], v[0]), v[1], v[2]) for k, v in data["entries"].items()}
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                self._index, self._merged = {}, set()
        return self._index

    def _rescan(self) -> bool:
        """Merge sidecars the index does not know yet; True if any were found."""
        index = self._load_index()
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return False
        found = False
        for name in names:
            if not name.endswith(".json") or name == "index.json" or name.startswith("."):
                continue
            shard = name[:-5]
            if shard in self._merged:
                continue
            try:
                with open(os.path.join(self.dir, name), encoding="utf-8") as f:
                    side = json.load(f)
            except (OSError, ValueError):
                continue
            for k, off, n in zip(side["keys"], side["offsets"], side["lengths"]):
                index[k] = (shard, off, n)
            self._merged.add(shard)
            found = True
        return found

    def save_index(self) -> None:
        data = {"shards": sorted(self._merged), "entries": self._load_index()}
        write_text_atomic(Path(self._index_file()), json.dumps(data, separators=(",", ":")))

    # -- reading and writing -----------------------------------------------------------------------------
    def get_many(self, keys: list[str]) -> list[np.ndarray | None]:
        """The arrays for ``keys`` in order (copies, not views of the shard files); None where absent."""
        index = self._load_index()
        if any(k not in index for k in keys) and self._rescan():
            self.save_index()
        out: list[np.ndarray | None] = [None] * len(keys)
        by_shard: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            if k in index:
                by_shard.setdefault(index[k][0], []).append(i)
        lost = []
        for shard, rows in by_shard.items():
            try:
                data = np.load(os.path.join(self.dir, shard + ".npy"), mmap_mode="r")
            except (FileNotFoundError, ValueError):
                lost.append(shard)  # deleted or damaged by hand: recompute what it held
                continue
            for i in rows:
                _, off, n = index[keys[i]]
                sl = [slice(None)] * data.ndim
                sl[self.axis] = slice(off, off + n)
                out[i] = np.array(data[tuple(sl)])
        if lost:
            for k in [k for k, v in index.items() if v[0] in lost]:
                del index[k]
            self._merged.difference_update(lost)
            self.save_index()
        return out

    def put_many(self, keys: list[str], arrays: list[np.ndarray], save_index: bool = True) -> None:
        """Write ``arrays`` (same shape but for ``axis``) as one shard, atomically, then record them."""
        if not keys:
            return
        lengths = [int(a.shape[self.axis]) for a in arrays]
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
        shard = hashlib.sha1("|".join(keys).encode()).hexdigest()[:20] + f"-{os.getpid()}"
        save_array_atomic(os.path.join(self.dir, shard + ".npy"), np.concatenate(arrays, axis=self.axis))
        write_text_atomic(Path(self.dir, shard + ".json"),
                          json.dumps({"keys": keys, "offsets": offsets, "lengths": lengths}))
        index = self._load_index()
        for k, off, n in zip(keys, offsets, lengths):
            index[k] = (shard, off, n)
        self._merged.add(shard)
        if save_index:
            self.save_index()

    # -- streaming reads ---------------------------------------------------------------------------------
    def entries(self, keys: list[str]) -> list[tuple[str, int, int] | None]:
        """(shard, offset, length) of each key, None where absent; reads no array data. A shard file deleted
        (by hand, or by ``bench cache prune`` in another process) counts as absent: recomputed, as in get_many."""
        index = self._load_index()
        if any(k not in index for k in keys) and self._rescan():
            self.save_index()
        out = [index.get(k) for k in keys]
        lost = {e[0] for e in out if e is not None and not os.path.isfile(os.path.join(self.dir, e[0] + ".npy"))}
        if lost:
            for k in [k for k, v in index.items() if v[0] in lost]:
                del index[k]
            self._merged.difference_update(lost)
            for shard in lost:  # its sidecar would bring the entries back at the next rescan
                try:
                    os.unlink(os.path.join(self.dir, shard + ".json"))
                except OSError:
                    pass
            self.save_index()
            out = [None if e is not None and e[0] in lost else e for e in out]
        return out

    def reader(self) -> "ShardReader":
        return ShardReader(self.dir, self.axis)


class ShardReader:
    """Reads one array at a time out of a :class:`ShardedArrayStore`'s shard files with ``os.pread``: no
    memory-mapping (mapped pages a process has touched count in its RSS) and nothing cached but a few open file
    descriptors and the shards' headers, so memory is what the caller keeps."""

    def __init__(self, directory: str | os.PathLike, axis: int = 1, max_open: int = 16):
        self.dir = os.fspath(directory)
        self.axis = axis
        self.max_open = max_open
        self._open: dict[str, tuple[int, tuple, np.dtype, int]] = {}  # shard -> (fd, shape, dtype, data offset)

    def header(self, shard: str) -> tuple[int, tuple, np.dtype, int]:
        if shard in self._open:
            self._open[shard] = self._open.pop(shard)  # most recently used last
            return self._open[shard]
        path = os.path.join(self.dir, shard + ".npy")
        fd = os.open(path, os.O_RDONLY)
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                         else np.lib.format.read_array_header_2_0(f))
                offset = f.tell()
        except BaseException:
            os.close(fd)
            raise
        if fortran:
            os.close(fd)
            raise ValueError(f"{path}: a Fortran-ordered array; cache shards are written in C order")
        while len(self._open) >= self.max_open:
            old = next(iter(self._open))
            os.close(self._open.pop(old)[0])
        self._open[shard] = (fd, tuple(shape), np.dtype(dtype), offset)
        return self._open[shard]

    def shape(self, shard: str) -> tuple:
        return self.header(shard)[1]

    def read(self, shard: str, offset: int, length: int, rows: Sequence[int] | None = None) -> np.ndarray:
        """The array stored at (``shard``, ``offset``, ``length``), a fresh C-ordered array; ``rows``: only these
        indices of the axes before ``axis`` flattened (e.g. one layer of a (layers, frames, dim) store)."""
        fd, shape, dtype, start = self.header(shard)
        ax = self.axis
        outer = int(np.prod(shape[:ax], dtype=np.int64))
        inner = int(np.prod(shape[ax + 1:], dtype=np.int64))
        picked = rows is not None
        rows = list(rows) if picked else list(range(outer))
        out = np.empty((len(rows), length * inner), dtype=dtype)
        nbytes = length * inner * dtype.itemsize
        for j, r in enumerate(rows):
            pos = start + ((r * shape[ax] + offset) * inner) * dtype.itemsize
            buf = _pread_all(fd, nbytes, pos)
            out[j] = np.frombuffer(buf, dtype=dtype)
        if picked:
            return out.reshape((len(rows), length) + tuple(shape[ax + 1:]))
        return out.reshape(tuple(shape[:ax]) + (length,) + tuple(shape[ax + 1:]))

    def close(self) -> None:
        for fd, *_ in self._open.values():
            os.close(fd)
        self._open.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _pread_all(fd: int, nbytes: int, pos: int) -> bytes:
    parts, got = [], 0
    while got < nbytes:
        b = os.pread(fd, nbytes - got, pos + got)
        if not b:
            raise ValueError(f"cache shard ends early (fd {fd}: wanted {nbytes} bytes at {pos})")
        parts.append(b)
        got += len(b)
    return parts[0] if len(parts) == 1 else b"".join(parts)
