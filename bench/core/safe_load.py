"""Loading model files without running code from them.

Checkpoints, ``km.bin`` quantizers, F0 bins and MUStARD's fold file are pickles, downloaded from the internet and
passed around labs; a pickle can name any importable callable (``os.system``) and unpickling calls it. Every such
file is read here, through an unpickler that admits only the globals the published formats hold:

- torch files (fairseq / GSLM / pGSLM / HuBERT checkpoints, pGSLM's F0 bins): ``torch.load(weights_only=True)``
  plus :func:`torch_safe_globals`: fairseq's legacy ``args`` (``argparse.Namespace``), its hydra ``cfg`` when saved
  as an omegaconf ``DictConfig`` (containers, nodes, metadata and the types they reference), numpy arrays and
  scalars (``extra_state``), and ``task_state``'s ``Dictionary``, read as plain attributes without fairseq
  (fairseq ``checkpoint_utils.load_checkpoint_to_cpu`` and ``Trainer.state_dict``).
- ``km.bin`` (joblib or pickle of scikit-learn ``KMeans`` / ``MiniBatchKMeans``): joblib's own unpickler (its
  ``NumpyArrayWrapper`` format, compressed or not) restricted to those two classes, read as their attribute
  state, and numpy arrays and scalars.
- plain pickles of numpy arrays (MUStARD's ``split_indices.p``).

A file that asks for anything else is refused with one line naming the file and the global. ``bench run
--trust-model-files`` (and ``bench models --verify --trust-model-files``) is the only way past: then the file is
unpickled in full, as fairseq and joblib would, and the run's records say so (``trust_model_files``).
"""

from __future__ import annotations

import importlib
import pickle
import re
from pathlib import Path
from typing import Any

from bench.core.errors import BenchError

TRUST_FLAG = "--trust-model-files"
_TRUST = {"on": False}


def set_trust(on: bool) -> None:
    """Whether files that need more than the safe globals are unpickled in full (``--trust-model-files``)."""
    _TRUST["on"] = bool(on)


def trusted() -> bool:
    return _TRUST["on"]


class UnsafeModelFileError(BenchError):
    """A model file asked for a global outside the safe set (its code was not run)."""

    def __init__(self, path, global_name: str):
        super().__init__(f"{path}: refused to load: it asks for {global_name}, which no published model file of "
                         f"this kind holds and which could run code (nothing was executed; pass {TRUST_FLAG} only "
                         "if you trust the file)")
        self.path, self.global_name = str(path), global_name

    def __reduce__(self):  # crosses process boundaries (worker → parent) intact
        return (UnsafeModelFileError, (self.path, self.global_name))


# ---- numpy (arrays and scalars, as numpy 1.x and 2.x pickle them) ------------------------------------------------
NUMPY_GLOBALS = (
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",  # ndarray, protocol 2-4
    "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer",  # ndarray, protocol 5
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",  # np.float64 and friends
    "numpy.ndarray", "numpy.dtype",
    "_codecs.encode",  # bytes under protocol 2 (a str encoded as latin-1)
)


def _resolve(name: str) -> Any:
    """The object a dotted global name names (numpy 1.x names resolved in numpy 2's ``numpy._core``)."""
    module, _, attr = name.rpartition(".")
    candidates = [module]
    if module.startswith("numpy.core."):
        candidates.insert(0, "numpy._core." + module[len("numpy.core."):])
    for mod in candidates:
        try:
            return getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(name)


class _FairseqDictionary:
    """``fairseq.data.dictionary.Dictionary`` in a checkpoint's ``task_state`` (HuBERT), kept as its attributes."""


def torch_safe_globals() -> list:
    import argparse
    import collections
    import typing

    out: list = [argparse.Namespace, collections.defaultdict, typing.Any, dict, list, int, float, str, bool,
                 (_FairseqDictionary, "fairseq.data.dictionary.Dictionary")]
    for name in NUMPY_GLOBALS:
        if name.startswith("_codecs"):
            continue  # torch's weights_only unpickler handles it itself
        try:
            out.append((_resolve(name), name))
        except AttributeError:
            pass
    try:  # torch builds a dtype (a scalar's, an array's) only when its class is allowed
        import numpy as np

        out += list({type(np.dtype(t)) for t in "?bBhHiIlLqQefdgFDG"} - {np.dtype})
    except ImportError:  # pragma: no cover
        pass
    try:
        from omegaconf import DictConfig, ListConfig
        from omegaconf.base import ContainerMetadata, Metadata
        from omegaconf.nodes import AnyNode, BooleanNode, FloatNode, IntegerNode, StringNode

        out += [DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, StringNode, IntegerNode, FloatNode,
                BooleanNode]
    except ImportError:  # pragma: no cover - without omegaconf a DictConfig cfg is refused by name
        pass
    return out


_GLOBAL_IN_ERROR = re.compile(r"GLOBAL ([\w.]+)|but got <class '([\w.]+)'>")


def torch_load(path: Path, *, mmap: bool = False) -> Any:
    """``torch.load`` of ``path`` on the CPU with :func:`torch_safe_globals` only; a file that needs another global
    is refused (:class:`UnsafeModelFileError`) unless :func:`trusted`. Other failures propagate (unreadable file)."""
    return torch_load_checked(path, mmap=mmap)[0]


def torch_load_checked(path: Path, *, mmap: bool = False) -> tuple[Any, bool]:
    """(:func:`torch_load` of ``path``, whether it loaded with the safe globals alone)."""
    import torch

    def load(weights_only: bool):
        kw = {"map_location": "cpu", "weights_only": weights_only}
        if mmap:
            try:
                return torch.load(path, mmap=True, **kw)
            except RuntimeError as err:  # legacy (non-zip) serialization cannot be memory-mapped
                if "mmap" not in str(err) and "zip" not in str(err):
                    raise
        return torch.load(path, **kw)

    try:
        with torch.serialization.safe_globals(torch_safe_globals()):
            return load(True), True
    except pickle.UnpicklingError as err:
        m = _GLOBAL_IN_ERROR.search(str(err))
        if m is None:
            raise
        if not trusted():
            raise UnsafeModelFileError(path, m.group(1) or m.group(2)) from None
        return load(False), False


# ---- plain pickles -----------------------------------------------------------------------------------------
class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only ``allowed`` globals (dotted names → object or a stand-in); anything else is refused."""

    allowed: dict[str, Any] = {}
    path = "?"

    def find_class(self, module, name):
        full = f"{module}.{name}"
        if full in self.allowed:
            got = self.allowed[full]
            return got if got is not None else _resolve(full)
        raise UnsafeModelFileError(self.path, full)


def load_pickle(path: Path, *, encoding: str = "ASCII") -> Any:
    """A pickle of numpy arrays, numbers, strings and containers (e.g. MUStARD's ``split_indices.p``)."""
    class Unpickler(_RestrictedUnpickler):
        allowed = {n: None for n in NUMPY_GLOBALS}

    Unpickler.path = str(path)
    with open(path, "rb") as f:
        try:
            return Unpickler(f, encoding=encoding).load()
        except UnsafeModelFileError:
            if not trusted():
                raise
    with open(path, "rb") as f:
        return pickle.load(f, encoding=encoding)


# ---- joblib / pickle of scikit-learn k-means ---------------------------------------------------------------------
KMEANS_CLASSES = ("KMeans", "MiniBatchKMeans")


class SklearnState:
    """Stands in for a scikit-learn k-means while unpickling: keeps its pickled attributes (``state``), so the
    centroids read the same whatever sklearn version wrote the file and no sklearn code runs."""

    cls_name = "?"

    def __init__(self, *args, **kwargs):
        self.state: dict = {}

    def __setstate__(self, state):
        if isinstance(state, tuple):  # (dict, slots) form
            state = state[0] or {}
        self.state = dict(state) if isinstance(state, dict) else {}


def _kmeans_stand_in(module: str, name: str):
    # sklearn.cluster._kmeans (0.22+), sklearn.cluster.k_means_ (older)
    if module.split(".")[:2] == ["sklearn", "cluster"] and name in KMEANS_CLASSES:
        return type(name, (SklearnState,), {"cls_name": name})
    return None


def load_sklearn_kmeans(path: Path) -> Any:
    """The object of a joblib- or pickle-written scikit-learn k-means file (GSLM ``km.bin``): a
    :class:`SklearnState` (its attributes in ``.state``); with :func:`trusted`, a file needing more is loaded by
    ``joblib.load`` in full (a real sklearn object)."""
    from joblib import numpy_pickle

    allowed = set(NUMPY_GLOBALS) | {"joblib.numpy_pickle.NumpyArrayWrapper"}

    class Unpickler(numpy_pickle.NumpyUnpickler):
        dispatch = numpy_pickle.NumpyUnpickler.dispatch.copy()

        def find_class(self, module, name):
            stand_in = _kmeans_stand_in(module, name)
            if stand_in is not None:
                return stand_in
            full = f"{module}.{name}"
            if full in ("copy_reg._reconstructor", "copyreg._reconstructor"):  # protocol 0/1 objects
                return _reconstruct_state_holder
            if full in ("__builtin__.object", "builtins.object"):
                return object
            if full in allowed:
                return _resolve(full)
            raise UnsafeModelFileError(path, full)

        def load_build(self):
            # an object array's payload is a nested pickle: not in any k-means state, so not read at all
            inst, state = self.stack[-2], self.stack[-1]
            if isinstance(inst, numpy_pickle.NumpyArrayWrapper) and isinstance(state, dict):
                dtype = state.get("dtype")
                if getattr(dtype, "hasobject", False):
                    raise UnsafeModelFileError(path, "a numpy object array (nested pickle)")
            numpy_pickle.NumpyUnpickler.load_build(self)

        dispatch[pickle.BUILD[0]] = load_build

    def _reconstruct_state_holder(cls, base, state):
        """``copyreg._reconstructor`` for a k-means stand-in only (what protocol 0/1 pickles of one call)."""
        if not (isinstance(cls, type) and issubclass(cls, SklearnState)) or base is not object or state is not None:
            raise UnsafeModelFileError(path, f"copyreg._reconstructor of {getattr(cls, '__name__', cls)!s}")
        return cls.__new__(cls)

    opener = getattr(numpy_pickle, "_validate_fileobject_and_memmap", None)
    try:
        with open(path, "rb") as f:
            if opener is None:  # joblib < 1.5
                ctx = numpy_pickle._read_fileobject(f, str(path), None)
            else:
                ctx = opener(f, str(path), None)
            with ctx as fobj:
                fobj = fobj[0] if isinstance(fobj, tuple) else fobj
                if isinstance(fobj, str):  # joblib < 0.10 format: arrays in side files
                    raise UnsafeModelFileError(path, "joblib.numpy_pickle_compat (a joblib < 0.10 file)")
                try:
                    return Unpickler(str(path), fobj, ensure_native_byte_order=True).load()
                except TypeError:  # older joblib signature (no ensure_native_byte_order)
                    fobj.seek(0)
                    return Unpickler(str(path), fobj).load()
    except UnsafeModelFileError:
        if not trusted():
            raise
    import joblib

    return joblib.load(path)


__all__ = ["TRUST_FLAG", "UnsafeModelFileError", "load_pickle", "load_sklearn_kmeans", "set_trust", "torch_load",
           "torch_load_checked", "trusted", "SklearnState", "KMEANS_CLASSES"]
