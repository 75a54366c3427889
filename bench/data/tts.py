"""Offline text-to-speech for the built-in suite: espeak-ng through its C API, from the PyPI wheel alone.

``espeakng_loader`` ships ``libespeak-ng.so`` and ``espeak-ng-data``; we load the library with ctypes and run it
in synchronous mode with a synthesis callback that collects 16-bit samples at 22,050 Hz, then resample to
16 kHz (bench.data.audio.resample). No apt package, no subprocess, no network.

A ``Voice`` is (language/accent, variant, pitch, rate, range); its ``speaker_id`` is a stable string. espeak-ng
has one global synthesiser state, so the engine is a process-wide singleton guarded by a lock.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass, replace

import numpy as np

from bench.core.errors import BenchError, DependencyError

ESPEAK_RATE = 22_050

# espeak_AUDIO_OUTPUT, espeak_PARAMETER, flags (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}
_CHARS_UTF8, _SSML, _ENDPAUSE = 0x1, 0x10, 0x1000
_POS_CHARACTER = 1

# The eight English accents espeak-ng ships (rule-based pronunciation and intonation, not real accents).
ENGLISH_ACCENTS = ("en-us", "en-gb-x-rp", "en-gb-scotland", "en-us-nyc", "en-029", "en-gb-x-gbclan",
                   "en-gb-x-gbcwmd", "en")
# Variants whose pitch settings put them in a male/female F0 range (median F0 measured: m* ~90-100 Hz,
# f* ~175-200 Hz, one sentence, measured for bench).
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: espeak language/accent, variant and the four prosodic parameters.

    ``pitch``/``range`` are espeak's 0-100 scales (default 50), ``rate`` is words per minute (default 175).
    """

    language: str
    variant: str = ""
    pitch: int = 50
    rate: int = 175
    range: int = 50
    volume: int = 100

    @property
    def espeak_name(self) -> str:
        return f"{_variant_safe_language(self.language, self.variant)}+{self.variant}" if self.variant \
            else self.language

    @property
    def identity(self) -> str:
        """The (language, variant) timbre, without the pitch/rate offsets: the unit held out between splits."""
        return f"{self.language}+{self.variant or 'base'}"

    @property
    def speaker_id(self) -> str:
        return f"espeak:{self.identity}:p{self.pitch}:r{self.rate}:g{self.range}"

    def with_(self, **kw) -> "Voice":
        return replace(self, **kw)

    def as_dict(self) -> dict:
        return {"engine": "espeak-ng", "language": self.language, "variant": self.variant, "pitch": self.pitch,
                "rate": self.rate, "range": self.range, "volume": self.volume}


def _variant_safe_language(language: str, variant: str) -> str:
    """Work around the ``en-gb+f3`` gotcha: espeak-ng ignores a variant's pitch on the ``en-gb`` voice name.

    ``en`` is the same British voice under a name that honours variants (measured: every ``en-gb+*`` stays at ~99 Hz);
    ``test_builtin_tts`` checks every English accent × variant combination actually moves F0.
    """
    return "en" if variant and language.lower() == "en-gb" else language


class EspeakEngine:
    """The espeak-ng shared library, initialised once per process in synchronous (retrieval) mode."""

    _instance: "EspeakEngine | None" = None
    _lock = threading.Lock()

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError:
            raise DependencyError("the built-in suite needs the PyPI package 'espeakng-loader' "
                                  "(pip install espeakng-loader)") from None
        lib_path, data_path = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
        try:
            lib = ctypes.CDLL(str(lib_path))
        except OSError as err:
            raise DependencyError(f"cannot load libespeak-ng from {lib_path}: {err}") from None
        self._CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [self._CB]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path).encode(), _INITIALIZE_DONT_EXIT)
        if rate != ESPEAK_RATE:
            raise DependencyError(f"espeak_Initialize with data {data_path} returned {rate}, expected {ESPEAK_RATE} Hz")
        self._lib = lib
        self._chunks: list[np.ndarray] = []

        def _collect(samples, n, _events):
            if n > 0 and samples:
                self._chunks.append(np.ctypeslib.as_array(samples, shape=(n,)).copy())
            return 0

        self._callback = self._CB(_collect)  # keep a reference: ctypes does not
        lib.espeak_SetSynthCallback(self._callback)
        # espeak-ng seeds its noise generator from the clock at initialisation; fix it (reset per utterance).
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is None:
            raise DependencyError(f"{lib_path} lacks espeak_ng_SetRandSeed (espeak-ng >= 1.52 needed for "
                                  "reproducible audio); upgrade espeakng-loader")
        self._set_seed.argtypes = [ctypes.c_long]
        self.version = "espeak-ng " + getattr(espeakng_loader, "__version__", "")

    @classmethod
    def get(cls) -> "EspeakEngine":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def synth_raw(self, text: str, voice: Voice, ssml: bool = False) -> np.ndarray:
        """int16 samples at 22,050 Hz, a function of (text, voice) alone.

        espeak-ng keeps synthesiser state between utterances in static variables (pitch-flutter phase, noise
        generator, resonator memories), so the same call returns different samples depending on what was spoken
        before — even across espeak_Terminate/Initialize. Each utterance is therefore synthesised in a forked child
        of a process whose engine has never spoken: every utterance starts from the same pristine state, and a
        manifest's audio hashes do not depend on build order.
        """
        with self._lock:
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # child: speak once, send the samples (or an error message), exit without cleanup
                status = 0
                try:
                    os.close(read_fd)
                    payload = b"A" + self._speak(text, voice, ssml).tobytes()
                except BaseException as err:  # noqa: BLE001 - reported to the parent
                    payload, status = b"E" + str(err).encode(), 1
                try:
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(write_fd, view):]
                finally:
                    os._exit(status)
            os.close(write_fd)
            chunks = []
            with os.fdopen(read_fd, "rb") as f:
                while True:
                    b = f.read(1 << 16)
                    if not b:
                        break
                    chunks.append(b)
            os.waitpid(pid, 0)
        data = b"".join(chunks)
        if not data.startswith(b"A"):
            raise BenchError(data[1:].decode(errors="replace") or f"espeak-ng worker died on {text[:60]!r}")
        return np.frombuffer(data[1:], dtype=np.int16).copy()

    def _speak(self, text: str, voice: Voice, ssml: bool) -> np.ndarray:
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.espeak_name.encode()) != 0:
            raise BenchError(f"espeak-ng has no voice '{voice.espeak_name}' (language codes are espeak-ng's, "
                             "e.g. en-us, fr, de; variants e.g. m3, f2)")
        for name in ("rate", "pitch", "range", "volume"):
            lib.espeak_SetParameter(_PARAM[name], int(getattr(voice, name)), 0)
        self._chunks = []
        self._set_seed(1)
        data = text.encode("utf-8") + b"\0"
        flags = _CHARS_UTF8 | (_SSML if ssml else 0)
        err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, flags, None, None)
        lib.espeak_Synchronize()
        if err != 0:
            raise BenchError(f"espeak-ng failed (error {err}) on text {text[:60]!r} with voice {voice.espeak_name}")
        out = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        self._chunks = []
        return out


class _Server:
    """A small helper process (``python -m bench.data.tts``) holding a pristine engine and forking once per utterance.

    Forking the caller (which may hold torch and gigabytes of pages) costs ~15 ms per utterance; forking this
    small process costs ~1 ms, and a crash inside libespeak-ng cannot take the caller down.
    """

    _instance: "_Server | None" = None
    _lock = threading.Lock()

    def __init__(self):
        import subprocess
        import sys

        self.proc = subprocess.Popen([sys.executable, "-m", "bench.data.tts"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env={**os.environ, "PYTHONHASHSEED": "0"})

    @classmethod
    def get(cls) -> "_Server":
        with cls._lock:
            if cls._instance is None or cls._instance.proc.poll() is not None:
                cls._instance = cls()
            return cls._instance

    def request(self, text: str, voice: Voice, ssml: bool) -> np.ndarray:
        import json
        import struct

        msg = json.dumps({"text": text, "voice": voice.as_dict(), "ssml": ssml}).encode()
        with self._lock:
            self.proc.stdin.write(struct.pack("<I", len(msg)) + msg)
            self.proc.stdin.flush()
            head = self.proc.stdout.read(4)
            if len(head) < 4:
                raise BenchError("the espeak-ng helper process (python -m bench.data.tts) exited unexpectedly")
            data = self.proc.stdout.read(struct.unpack("<I", head)[0])
        if not data.startswith(b"A"):
            raise BenchError(data[1:].decode(errors="replace"))
        return np.frombuffer(data[1:], dtype=np.int16).copy()


def _serve() -> None:
    """Helper-process loop: length-prefixed JSON requests on stdin, ``A``+int16 or ``E``+message on stdout."""
    import json
    import struct
    import sys

    engine = EspeakEngine.get()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return
        req = json.loads(stdin.read(struct.unpack("<I", head)[0]))
        v = req["voice"]
        voice = Voice(v["language"], v["variant"], v["pitch"], v["rate"], v["range"], v["volume"])
        try:
            payload = b"A" + engine.synth_raw(req["text"], voice, req["ssml"]).tobytes()
        except BenchError as err:
            payload = b"E" + err.message.encode()
        stdout.write(struct.pack("<I", len(payload)) + payload)
        stdout.flush()


def synthesize(text: str, voice: Voice, ssml: bool = False, sample_rate: int = 16_000) -> np.ndarray:
    """float32 mono samples at ``sample_rate`` for ``text`` spoken by ``voice`` (deterministic)."""
    from bench.data.audio import resample

    raw = _Server.get().request(text, voice, ssml)
    if raw.size == 0:
        raise BenchError(f"espeak-ng produced no audio for {text[:60]!r} with voice {voice.espeak_name}")
    return resample(raw.astype(np.float32) / 32768.0, ESPEAK_RATE, sample_rate)


def estimate_f0(wav: np.ndarray, sample_rate: int = 16_000, fmin: float = 60.0, fmax: float = 400.0,
                frame: float = 0.04, hop: float = 0.01) -> np.ndarray:
    """Per-frame F0 (Hz) of voiced frames by normalised autocorrelation; a check, not a production tracker."""
    n, h = int(frame * sample_rate), int(hop * sample_rate)
    lo, hi = int(sample_rate / fmax), int(sample_rate / fmin)
    energy_floor = 0.05 * np.max(np.abs(wav)) if wav.size else 0.0
    f0 = []
    for start in range(0, max(0, wav.size - n - hi), h):
        x = wav[start:start + n + hi].astype(np.float64)
        if np.max(np.abs(x[:n])) < energy_floor:
            continue
        x = x - x.mean()
        a = x[:n]
        r = np.array([np.dot(a, x[k:k + n]) for k in range(lo, hi + 1)])
        norm = np.sqrt(np.dot(a, a) * np.array([np.dot(x[k:k + n], x[k:k + n]) for k in range(lo, hi + 1)])) + 1e-12
        r = r / norm
        k = int(np.argmax(r))
        if r[k] > 0.6:
            f0.append(sample_rate / (lo + k))
    return np.asarray(f0)


def median_f0(wav: np.ndarray, sample_rate: int = 16_000) -> float:
    f0 = estimate_f0(wav, sample_rate)
    return float(np.median(f0)) if f0.size else float("nan")


if __name__ == "__main__":
    _serve()
