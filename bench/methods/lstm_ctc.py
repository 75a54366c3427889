"""lstm: SUPERB's ASR / slot-filling head on a frozen upstream, trained with CTC (SpeechPrompt v1 §5 "FT" rows).

Head (s3prl ``downstream/asr/model.py:RNNs`` with SUPERB's ``asr/config.yaml``; new API ``s3prl.nn.RNNEncoder``):
weighted sum of layers → Linear(D→project_dim) → 2 × BiLSTM(hidden per direction, dropout 0.2 after each) →
Linear(2·hidden→vocab). CTC with blank 0 and ``zero_infinity`` (Graves et al. 2006), greedy best-path decoding,
no language model. Targets are characters (ASR) or characters + slot-tag tokens (SF), see ``bench.tasks.text``.
Sizes live in ``baselines/lstm.yaml``: ``superb`` (1024/1024, ≈42.8M for a 768-dim 13-layer upstream) and
``small`` (128/128 on frames averaged in pairs, ``frame_stride`` 2: the CPU default on the built-in suite).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.methods.batching import s3prl_buckets
from bench.data.manifest import Manifest
from bench.core.errors import BenchError
from bench.features.featurizer import KNOWN_UPSTREAMS, build_featurizer, featurizer_parameters, upstream_dims
from bench.methods.base import Method, MethodOutput, ParamCount, Predictions, RunContext, stage_features
from bench.methods.training import TrainSettings, baseline_defaults, fit, pad_layers
from bench.tasks.registry import TaskSpec
from bench.tasks.text import CTCTokenizer, normalize_spaces, slot_tag_tokens

# For counting without data (``bench params``): SUPERB's character set, a-z and the apostrophe
ASSUMED_CHARACTERS = 27


def build_ctc_head(num_layers: int, hidden_size: int, vocab_size: int, project_dim: int, lstm_hidden: int,
                   lstm_layers: int = 2, dropout: float = 0.2):
    """Featurizer + s3prl ``RNNEncoder`` configured as SUPERB's ASR head (bidirectional LSTM, no per-layer
    projection, layer norm or downsampling)."""
    import torch

    from bench.core.compat import apply

    apply()
    from s3prl.nn.rnn import RNNEncoder

    class CTCHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.featurizer = build_featurizer(num_layers, hidden_size)
            self.encoder = RNNEncoder(
                hidden_size, vocab_size, module="LSTM", proj_size=project_dim,
                hidden_size=[lstm_hidden] * lstm_layers, dropout=[dropout] * lstm_layers,
                layer_norm=[False] * lstm_layers, proj=[False] * lstm_layers, sample_rate=[1] * lstm_layers,
                bidirectional=True,
            )

        def forward(self, all_hs, all_lens):
            """→ (B, T, vocab) logits and (B,) lengths: ``self.encoder``'s computation with dense BiLSTMs."""
            hs, lens = self.featurizer(all_hs, all_lens)
            xs = self.encoder.proj(hs)
            for rnn in self.encoder.rnns:
                xs = dense_bidirectional_lstm(rnn.layer, xs, lens)
                if rnn.dropout > 0:
                    xs = rnn.dp_layer(xs)
            return self.encoder.linear(xs), lens

    return CTCHead()


def dense_bidirectional_lstm(lstm, x, lens):
    """What s3prl's ``RNNLayer`` computes with ``pack_padded_sequence`` (outputs at real frames, zeros at padding),
    on dense tensors: the forward direction runs on the right-padded batch as it is, the backward direction on
    every sequence reversed within its own length (so its state never sees padding), then un-reversed.

    Why: on CPU, oneDNN's fast LSTM kernel takes dense batches only; packed variable-length batches fall back to
    a path measured ~6x slower here (0.34 vs ~2 s a step on ASR-sized batches, B=16, T≈117, 128/128), which
    made the baseline the slowest cell of ``bench run``. Same parameters and names as ``nn.LSTM(bidirectional=True)``."""
    import torch

    if not (lstm.bidirectional and lstm.num_layers == 1 and lstm.batch_first and lstm.bias):
        raise ValueError("dense_bidirectional_lstm expects a 1-layer, batch-first, biased bidirectional LSTM")
    B, T, _ = x.shape
    lens = lens.to(x.device)
    steps = torch.arange(T, device=x.device)[None, :]
    real = steps < lens[:, None]
    rev = torch.where(real, lens[:, None] - 1 - steps, steps)  # an involution: applying it twice is identity
    h0 = x.new_zeros(1, B, lstm.hidden_size)

    def run(inputs, suffix):
        weights = [getattr(lstm, f"{n}_l0{suffix}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        out, _, _ = torch._VF.lstm(inputs, (h0, h0), weights, True, 1, 0.0, lstm.training, False, True)
        return out

    def reverse(t):
        return t.gather(1, rev[..., None].expand_as(t))

    out = torch.cat([run(x, ""), reverse(run(reverse(x), "_reverse"))], dim=-1)
    return out * real[..., None].to(out.dtype)


def average_frames(feats: np.ndarray, stride: int) -> np.ndarray:
    """(L, T, D) → (L, ceil(T / stride), D): the mean of each run of ``stride`` frames (the last run may be
    shorter). A frame-rate change in front of the head; it adds no parameters."""
    if stride == 1:
        return feats
    L, T, D = feats.shape
    n = -(-T // stride)
    padded = np.zeros((L, n * stride, D), dtype=np.float32)
    padded[:, :T] = feats
    counts = np.minimum(stride, T - np.arange(n) * stride).astype(np.float32)
    return padded.reshape(L, n, stride, D).sum(2) / counts[None, :, None]


def ctc_parameter_count(hidden_size: int, num_layers: int, vocab_size: int, project_dim: int, lstm_hidden: int,
                        lstm_layers: int = 2, frozen: int = 0) -> ParamCount:
    """Count by building the real module."""
    model = build_ctc_head(num_layers, hidden_size, vocab_size, project_dim, lstm_hidden, lstm_layers)
    enc = model.encoder
    breakdown = {
        "featurizer": sum(p.numel() for p in model.featurizer.parameters()),
        "projection": sum(p.numel() for p in enc.proj.parameters()),
        "bilstm": sum(p.numel() for p in enc.rnns.parameters()),
        "output": sum(p.numel() for p in enc.linear.parameters()),
    }
    assert breakdown["featurizer"] == featurizer_parameters(num_layers)
    trainable = sum(breakdown.values())
    return ParamCount(trainable=trainable, frozen=frozen, stored_per_task=trainable, breakdown=breakdown)


class LSTMCTCBaseline(Method):
    """SUPERB BiLSTM-CTC head for generation tasks (ASR, SF)."""

    name = "lstm"
    kinds = ("generation",)

    @dataclass
    class Config:  # defaults chosen and documented in baselines/lstm.yaml
        size: str = "small"  # a key of `sizes:` in baselines/lstm.yaml (small | superb)
        lr: float = 1e-3
        batch_size: int = 16
        max_epochs: int = 60
        patience: int = 8
        project_dim: int | None = None  # overrides of the chosen size
        hidden_size: int | None = None
        frame_stride: int | None = None  # average every k upstream frames before the head (1 = SUPERB)

    def __init__(self, config: dict | None = None):
        super().__init__({**baseline_defaults("lstm.yaml"), **(config or {})})
        self.sizes = baseline_defaults("lstm.yaml", "sizes")
        if self.config.size not in self.sizes:
            raise BenchError(f"method 'lstm': size '{self.config.size}' is not in baselines/lstm.yaml; "
                             f"known: {sorted(self.sizes)}")

    def architecture(self) -> dict:
        arch = dict(self.sizes[self.config.size])
        if self.config.project_dim:
            arch["project_dim"] = self.config.project_dim
        if self.config.hidden_size:
            arch["hidden_size"] = self.config.hidden_size
        if self.config.frame_stride is not None:
            arch["frame_stride"] = self.config.frame_stride
        arch.setdefault("frame_stride", 1)
        if not isinstance(arch["frame_stride"], int) or arch["frame_stride"] < 1:
            raise BenchError(f"method 'lstm': frame_stride must be a positive integer, got {arch['frame_stride']!r}")
        return arch

    def resolved_config(self, upstream: str | None = None) -> dict:
        return {**super().resolved_config(upstream), "architecture": self.architecture()}

    def _count(self, hidden: int, layers: int, vocab: int, frozen: int) -> ParamCount:
        a = self.architecture()
        return ctc_parameter_count(hidden, layers, vocab, a["project_dim"], a["hidden_size"], a["num_layers"],
                                   frozen=frozen)

    def count_parameters(self, task: TaskSpec, ctx: RunContext) -> ParamCount:
        """Vocabulary assumed to be blank, unk, delimiter, a-z, ' and the task's slot tags (the real one is
        built from the train split at run time and recorded)."""
        dims = upstream_dims(ctx)
        vocab = 3 + ASSUMED_CHARACTERS + len(slot_tag_tokens(task.slot_tags or []))
        return self._count(dims.hidden_size, dims.num_layers, vocab, dims.frozen or 0)

    def stage(self, task: TaskSpec, manifest: Manifest, ctx: RunContext) -> None:
        stage_features(manifest, ctx, task=task.name)

    def run(self, task: TaskSpec, manifest: Manifest, ctx: RunContext) -> MethodOutput:
        import torch

        splits = {s: manifest.split(s) for s in ("train", "valid", "test")}
        texts, tok, targets = _texts_and_targets(task, splits)
        a = self.architecture()
        store, feats, (num_layers, hidden) = _strided_features(manifest, splits, targets, a["frame_stride"], ctx,
                                                                 task=task.name)
        torch.manual_seed(ctx.seed)
        model = build_ctc_head(num_layers, hidden, len(tok), a["project_dim"], a["hidden_size"], a["num_layers"],
                               a["dropout"])
        run = _CTCRun(model, feats, targets, tok, self.config.batch_size)
        max_epochs = ctx.max_epochs or self.config.max_epochs
        settings = TrainSettings(lr=self.config.lr, batch_size=self.config.batch_size, max_epochs=max_epochs,
                                 patience=self.config.patience)
        result = fit(model, len(feats["train"]), lambda b: run.loss_of("train", b),
                     lambda: run.validate(task, texts["valid"]), settings, ctx.seed,
                     log=ctx.log, advance=ctx.track(f"train lstm ({self.config.size})", max_epochs),
                     layout=run.by_length("train"), resume=ctx.resume_dir)
        with torch.no_grad():
            hyps, _ = run.decode("test")

        frozen = KNOWN_UPSTREAMS.get(ctx.upstream, (0, 0, None))[2] if ctx.upstream_path is None else None
        if frozen is None:
            frozen = store.info.num_parameters
        count = self._count(hidden, num_layers, len(tok), frozen)
        if count.trainable != sum(p.numel() for p in model.parameters() if p.requires_grad):
            raise AssertionError("parameter count disagrees with the trained model")
        w = getattr(model.featurizer, "weights", None)
        info = {
            **result.as_info(),
            "size": self.config.size,
            "architecture": a,
            "batching": {"layout": "s3prl length buckets (longest first, fixed; order reshuffled per epoch)",
                         "bucket_size": self.config.batch_size},
            "vocabulary": tok.to_dict(),
            "upstream": {"name": ctx.upstream, "num_layers": num_layers, "hidden_size": hidden},
            "layer_weights": [] if w is None else [round(float(v), 6) for v in torch.softmax(w.detach(), -1)],
            "features": dict(store.stats),
            "feature_cache": store.keep,
            "mean_frames_per_token": round(float(np.mean([int(n) / max(len(y), 1) for n, y in
                                                          zip(feats["train"].lengths, targets["train"])])), 3),
        }
        preds = Predictions(ids=[e.id for e in splits["test"]], references=texts["test"], hypotheses=hyps)
        trained = {"method": self.name, "model": model.state_dict(), "num_layers": num_layers,
                   "hidden_size": hidden, "architecture": a, "vocabulary": tok.to_dict(),
                   "batch_size": self.config.batch_size}
        return MethodOutput(predictions=preds, params=count, info=info, trained=trained)


def predict_trained(trained: dict, task: TaskSpec, manifest: Manifest, ctx: RunContext) -> Predictions:
    """A kept CTC head (``seed-N.pt``) transcribing ``task``'s test split (``bench evaluate``)."""
    import torch

    from bench.features.store import FeatureStore  # local imports: independent of how the run reads features
    from bench.methods.training import feature_dims, pad_layers

    test = manifest.split("test")
    if not test:
        raise BenchError(f"task '{task.name}': the test split is empty")
    a, tok = trained["architecture"], CTCTokenizer.from_dict(trained["vocabulary"])
    store = FeatureStore(ctx.upstream, ctx.upstream_path, ctx.cache_dir, device=ctx.device)
    feats = [average_frames(f, a["frame_stride"]) for f in store.get(manifest, test, ctx.track("features", len(test)))]
    dims = feature_dims(feats)
    if dims != (trained["num_layers"], trained["hidden_size"]):
        raise BenchError(f"the head was trained on (layers, dim) {(trained['num_layers'], trained['hidden_size'])}"
                         f", the {ctx.upstream} features of '{task.name}' have {dims}")
    model = build_ctc_head(dims[0], dims[1], len(tok), a["project_dim"], a["hidden_size"], a["num_layers"],
                           a["dropout"])
    model.load_state_dict(trained["model"])
    model.eval()
    hyps: list[str] = [""] * len(test)
    with torch.no_grad():  # the run's decoding: s3prl length buckets, greedy best path
        for idx in s3prl_buckets([f.shape[1] for f in feats], trained["batch_size"]):
            logits, lens = model(*pad_layers([feats[i] for i in idx])[:2])
            best = logits.argmax(-1)
            for j, i in enumerate(idx):
                hyps[i] = tok.ctc_greedy(best[j, : int(lens[j])].tolist())
    return Predictions(ids=[e.id for e in test], references=[normalize_spaces(e.label) for e in test],
                       hypotheses=hyps)


def _texts_and_targets(task: TaskSpec, splits: dict):
    """(normalised texts per split, the train-set CTC tokenizer, token targets of train and valid)."""
    for s, exs in splits.items():
        if not exs:
            raise BenchError(f"task '{task.name}': the {s} split is empty; lstm needs train, valid and test")
    texts = {s: [normalize_spaces(e.label) for e in exs] for s, exs in splits.items()}
    for s in ("train", "valid"):
        empty = [e.id for e, t in zip(splits[s], texts[s]) if not t]
        if empty:
            raise BenchError(f"task '{task.name}': {s} utterances with an empty target text, e.g. {empty[:3]}")
    tok = CTCTokenizer.from_texts(texts["train"], task.slot_tags)
    return texts, tok, {s: [tok.encode(t) for t in texts[s]] for s in ("train", "valid")}


# The splits whose frame-averaged features take at most this many bytes, all together, are kept in memory after
# their first read (re-reading and re-averaging every epoch would slow the small built-in tasks), train first; the
# others are read from the cache batch by batch, every epoch. Override with BENCH_FEATURE_RAM_MB.
IN_MEMORY_BYTES = 512 * 2**20


def memory_budget(memory_bytes: int | None = None) -> int:
    """The in-memory budget of one cell's features: ``memory_bytes``, else BENCH_FEATURE_RAM_MB, else 512 MB."""
    import os

    if memory_bytes is not None:
        return memory_bytes
    env = os.environ.get("BENCH_FEATURE_RAM_MB")
    return int(float(env) * 2**20) if env else IN_MEMORY_BYTES


class StridedFeatures:
    """One split's features as the CTC head sees them (``average_frames`` of each cached utterance), read from
    the feature cache (or computed by the upstream, :class:`bench.features.store.OnTheFlyReader` under
    ``--feature-cache pooled | none``) when asked for: ``feats[i]``, ``feats.batch(indices)``, ``len(feats)``,
    ``feats.lengths`` (frames after striding, from the cache index or the upstream's frame count). Kept in memory
    after the first read only when the whole split fits ``memory_bytes``; otherwise memory is one batch."""

    def __init__(self, reader, stride: int, memory_bytes: int | None = None):
        self.reader, self.stride = reader, stride
        self.lengths = -(-reader.lengths // stride)
        layers, dim = reader.dims
        itemsize = 2 if stride == 1 else 4  # average_frames keeps float16 at stride 1, else float32
        self.nbytes = int(self.lengths.sum()) * layers * dim * itemsize  # the whole split, kept
        self.in_memory = self.nbytes <= memory_budget(memory_bytes)
        self._kept: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int) -> np.ndarray:
        f = self._kept.get(i)
        if f is None:
            f = average_frames(self.reader[i], self.stride)
            if self.in_memory:
                self._kept[i] = f
        return f

    def batch(self, indices) -> list[np.ndarray]:
        """``[self[i] for i in indices]``, reading the ones not kept in one call (one upstream batch on the fly)."""
        missing = [i for i in indices if i not in self._kept]
        read = dict(zip(missing, (average_frames(f, self.stride) for f in self.reader.batch(missing)))) \
            if missing else {}
        if self.in_memory:
            self._kept.update(read)
        return [self._kept[i] if i in self._kept else read[i] for i in indices]


def _strided_features(manifest: Manifest, splits: dict, targets: dict, stride: int, ctx: RunContext,
                      memory_bytes: int | None = None, task: str | None = None):
    """(FeatureStore, :class:`StridedFeatures` per split, (layers, dim)); warns about CTC-infeasible utterances."""
    from bench.methods.base import feature_store

    store = feature_store(ctx, task)
    advance = ctx.track(f"features {ctx.upstream}", sum(len(v) for v in splits.values()))
    # plan: on the fly, a batched upstream is batched as the stage's extraction of the manifest batches it
    feats, budget = {}, memory_budget(memory_bytes)  # one budget for the cell's splits, not one each
    for s, exs in splits.items():
        feats[s] = StridedFeatures(store.reader(manifest, exs, advance, plan=manifest.examples), stride, budget)
        if feats[s].in_memory:
            budget -= feats[s].nbytes
    dims = feats["train"].reader.dims
    for s in ("valid", "test"):
        if feats[s].reader.dims != dims:
            raise BenchError(f"cached {s} features disagree with train in (layers, dim)")
    too_short = [e.id for e, n, y in zip(splits["train"], feats["train"].lengths, targets["train"]) if n < len(y)]
    if too_short:
        ctx.log(f"lstm: {len(too_short)} train utterances have fewer frames than target tokens "
                f"(CTC loss is zeroed for them), e.g. {too_short[:3]}")
    return store, feats, dims


class _CTCRun:
    """The CTC head over one task's cached features: loss, s3prl length buckets, greedy decoding, validation."""

    def __init__(self, model, feats: dict, targets: dict, tok, batch_size: int):
        import torch

        self.model, self.feats, self.targets, self.tok, self.batch_size = model, feats, targets, tok, batch_size
        self.ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)

    def forward(self, split: str, idx):
        all_hs, all_lens, _ = pad_layers(self.feats[split].batch(idx))
        return self.model(all_hs, all_lens)

    def ctc_loss(self, logits, lens, ys):
        import torch
        import torch.nn.functional as F

        flat = torch.tensor([t for y in ys for t in y], dtype=torch.long)
        ylens = torch.tensor([len(y) for y in ys], dtype=torch.long)
        logp = F.log_softmax(logits, dim=-1).transpose(0, 1)  # (T, B, V)
        return self.ctc(logp, flat, lens, ylens)

    def loss_of(self, split: str, idx):
        logits, lens = self.forward(split, idx)
        return self.ctc_loss(logits, lens, [self.targets[split][i] for i in idx])

    def by_length(self, split: str) -> list[list[int]]:
        return s3prl_buckets([int(n) for n in self.feats[split].lengths], self.batch_size)

    def decode(self, split: str, with_loss: bool = False) -> tuple[list[str], float]:
        """Greedy CTC hypotheses in manifest order (and the mean valid CTC loss from the same forward)."""
        out: dict[int, str] = {}
        loss_sum = 0.0
        for idx in self.by_length(split):
            logits, lens = self.forward(split, idx)
            if with_loss:
                loss_sum += float(self.ctc_loss(logits, lens, [self.targets[split][i] for i in idx])) * len(idx)
            best = logits.argmax(-1)
            for j, i in enumerate(idx):
                out[i] = self.tok.ctc_greedy(best[j, : int(lens[j])].tolist())
        n = len(self.feats[split])
        return [out[i] for i in range(n)], loss_sum / max(n, 1)

    def validate(self, task: TaskSpec, references: list[str]):
        from bench.tasks.metrics import METRICS, compute

        main = task.main_metric
        sign = -1.0 if METRICS[main].higher_is_better else 1.0
        hyps, loss = self.decode("valid", with_loss=True)
        score = compute(main, references, hyps, positive_label=task.positive_label)
        key = (sign * score if not math.isnan(score) else math.inf, loss)
        return key, {main: score, "loss": loss}
