"""The one place that makes s3prl 0.4.18 importable on torchaudio 2.11 with a CPU-only torch.

Why: ``s3prl.hub`` imports every upstream eagerly, and three of those imports fail on current torchaudio
(measured on torchaudio 2.11.0): torchaudio's C++ extension loader raises on CPU torch (its wheels are CUDA builds),
``byol_s`` calls the removed ``torchaudio.set_audio_backend`` (s3prl issue #575), and ``mos_prediction`` imports
the removed ``torchaudio.sox_effects``. We keep the extension loader from running and provide the two removed
names as no-ops; the pure-Python parts (``torchaudio.compliance.kaldi``) that fbank/mfcc use are untouched.

``tests/test_compat.py`` fails loudly when a new torchaudio/s3prl makes this unnecessary or wrong.
"""

from __future__ import annotations

import importlib
import logging
import sys
import types

TESTED_TORCHAUDIO = "2.11.0"
TESTED_S3PRL = "0.4.18"
_applied = False


def apply() -> list[str]:
    """Patch torchaudio before the first s3prl import. Returns what was patched (empty if already done)."""
    global _applied
    if _applied:
        return []
    patched: list[str] = []
    # (1) keep torchaudio's extension loader from loading libtorchaudio (needs libc10_cuda.so)
    try:
        ext = importlib.import_module("torchaudio._extension")
    except OSError:
        ext = None
    if ext is None or not getattr(ext, "_bench_patched", False):
        stub = types.ModuleType("torchaudio._extension")
        stub._bench_patched = True
        stub._IS_TORCHAUDIO_EXT_AVAILABLE = False
        stub._IS_RIR_AVAILABLE = False
        stub._IS_ALIGN_AVAILABLE = False
        stub._check_cuda_version = lambda: None
        stub.fail_if_no_rir = lambda f: f
        stub.fail_if_no_align = lambda f: f
        stub._init_dll_path = lambda: None
        if ext is None:
            sys.modules["torchaudio._extension"] = stub
            patched.append("torchaudio._extension")
    import torchaudio

    # (2) byol_s: torchaudio.set_audio_backend was removed in 2.9
    if not hasattr(torchaudio, "set_audio_backend"):
        torchaudio.set_audio_backend = lambda *a, **k: None
        patched.append("torchaudio.set_audio_backend")
    # (3) mos_prediction: torchaudio.sox_effects was removed in 2.9
    if "torchaudio.sox_effects" not in sys.modules and not _module_exists("torchaudio.sox_effects"):
        sox = types.ModuleType("torchaudio.sox_effects")

        def _removed(*_a, **_k):
            raise RuntimeError("torchaudio.sox_effects is not available in torchaudio >= 2.9")

        sox.apply_effects_tensor = _removed
        sox.apply_effects_file = _removed
        sys.modules["torchaudio.sox_effects"] = sox
        torchaudio.sox_effects = sox
        patched.append("torchaudio.sox_effects")
    # (4) s3prl.hub imports espnet_hubert, which warns on every run that ESPnet is absent; bench never uses it
    logging.getLogger("s3prl.upstream.espnet_hubert.expert").setLevel(logging.ERROR)
    _applied = True
    return patched


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError, OSError):
        return False


def import_s3prl_upstream():
    """``s3prl.nn.S3PRLUpstream`` and ``Featurizer``, importable offline on CPU torch."""
    apply()
    from s3prl.nn import Featurizer, S3PRLUpstream

    return S3PRLUpstream, Featurizer


def import_pyworld():
    """``pyworld`` (WORLD vocoder / F0), without the ``pkg_resources`` deprecation warning pyworld 0.3.5 prints on
    import (it still uses the API; setuptools is pinned below 81 for it, see pyproject.toml)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import pyworld

    return pyworld
