"""linear: SUPERB's utterance-level probe on a frozen upstream (the "FT" rows of SpeechPrompt v1, §5 there).

Head (s3prl ``downstream/model.py:UtteranceLevel``, new API ``s3prl.nn.MeanPoolingLinear``): weighted sum of
layers → Linear(D→256) → mean over valid frames → Linear(256→C), no nonlinearity. Multi-slot tasks (IC) use one
Linear(256→ΣC) cut into per-slot softmaxes; the loss is the sum of per-slot cross-entropies and the prediction
the per-slot argmaxes joined by a space (SUPERB ``fluent_commands``). Trainable: L·[L>1] + 256·D + 256 + 257·C.

Everything up to the pooling is linear, so each utterance's frames are averaged once per layer before training
(mean_t(W·Σ_l a_l h_lt + b) = W·Σ_l a_l mean_t(h_lt) + b): the same model and outputs, epochs ~T times cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.data.manifest import Example, Manifest
from bench.core.errors import BenchError
from bench.features.featurizer import KNOWN_UPSTREAMS, build_featurizer, featurizer_parameters, upstream_dims
from bench.methods.base import Method, MethodOutput, ParamCount, Predictions, RunContext, stage_features
from bench.methods.training import TrainSettings, baseline_defaults, fit
from bench.tasks.registry import TaskSpec


def output_groups(task: TaskSpec) -> list[tuple[str, list[str]]]:
    """(slot name, values) per softmax: one group of ``labels``, or one per slot of a multi-slot task."""
    if task.slots:
        return [(name, list(values)) for name, values in task.slots.items()]
    return [("label", list(task.labels or []))]


def encode_label(task: TaskSpec, groups, ex: Example) -> list[int]:
    """Class index per group for one example's label (multi-slot labels are values joined by one space)."""
    values = ex.label.split(" ") if task.slots else [ex.label]
    if len(values) != len(groups):
        raise BenchError(f"task '{task.name}': utterance '{ex.id}' has label '{ex.label}', expected "
                         f"{len(groups)} space-separated slot values ({', '.join(g for g, _ in groups)})")
    out = []
    for (name, labels), v in zip(groups, values):
        if v not in labels:
            raise BenchError(f"task '{task.name}': utterance '{ex.id}' has {name} '{v}', not one of {labels}")
        out.append(labels.index(v))
    return out


def build_head(num_layers: int, hidden_size: int, num_outputs: int, projector_dim: int = 256):
    """Featurizer + SUPERB UtteranceLevel head, both s3prl's own modules."""
    import torch

    from bench.core.compat import apply

    apply()
    from s3prl.nn.linear import MeanPoolingLinear

    class UtteranceProbe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.featurizer = build_featurizer(num_layers, hidden_size)
            self.head = MeanPoolingLinear(hidden_size, num_outputs, hidden_size=projector_dim)

        def forward(self, all_hs, all_lens):
            """all_hs: per layer (B, T, D); all_lens: per layer (B,) → logits (B, ΣC)."""
            hs, lens = self.featurizer(all_hs, all_lens)
            return self.head(hs, lens)

    return UtteranceProbe()


def head_parameter_count(hidden_size: int, num_layers: int, num_outputs: int, projector_dim: int = 256,
                         frozen: int = 0) -> ParamCount:
    """Count by building the real module (what ``bench params`` prints for any (D, L, C))."""
    model = build_head(num_layers, hidden_size, num_outputs, projector_dim)
    breakdown = {
        "featurizer": sum(p.numel() for p in model.featurizer.parameters()),
        "projector": sum(p.numel() for p in model.head.hidden_layers.parameters()),
        "classifier": sum(p.numel() for p in model.head.final_proj.parameters()),
    }
    assert breakdown["featurizer"] == featurizer_parameters(num_layers)
    trainable = sum(breakdown.values())
    return ParamCount(trainable=trainable, frozen=frozen, stored_per_task=trainable, breakdown=breakdown)


class LinearBaseline(Method):
    """SUPERB linear probe (weighted layers → Linear → mean pool → Linear) for classification tasks."""

    name = "linear"
    kinds = ("classification",)

    @dataclass
    class Config:  # defaults chosen and documented in baselines/linear.yaml
        lr: float = 1e-3
        batch_size: int = 32
        max_epochs: int = 200
        patience: int = 30
        projector_dim: int = 256

    def __init__(self, config: dict | None = None):
        super().__init__({**baseline_defaults("linear.yaml"), **(config or {})})

    def count_parameters(self, task: TaskSpec, ctx: RunContext) -> ParamCount:
        dims = upstream_dims(ctx)
        return head_parameter_count(dims.hidden_size, dims.num_layers, task.num_outputs,
                                    self.config.projector_dim, frozen=dims.frozen or 0)

    def stage(self, task: TaskSpec, manifest: Manifest, ctx: RunContext) -> None:
        stage_features(manifest, ctx, pooled=True, task=task.name)

    def run(self, task: TaskSpec, manifest: Manifest, ctx: RunContext) -> MethodOutput:
        import torch
        import torch.nn.functional as F

        groups = output_groups(task)
        sizes = [len(labels) for _, labels in groups]
        splits = {s: manifest.split(s) for s in ("train", "valid", "test")}
        for s, exs in splits.items():
            if not exs:
                raise BenchError(f"task '{task.name}': the {s} split is empty; linear needs train, valid and test")
        targets = {s: torch.tensor([encode_label(task, groups, e) for e in exs]) for s, exs in splits.items()}

        store, pooled, frames, (num_layers, hidden) = _pooled_features(manifest, splits, ctx, task.name)
        chunk = eval_chunk_rows(num_layers, hidden)

        torch.manual_seed(ctx.seed)
        model = build_head(num_layers, hidden, sum(sizes), self.config.projector_dim)

        def logits_of(x: torch.Tensor) -> torch.Tensor:
            ones = torch.ones(len(x), dtype=torch.long)
            return model([x[:, layer, None, :] for layer in range(num_layers)], [ones] * num_layers)

        def loss_of(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            parts = logits.split(sizes, dim=-1)
            return sum(F.cross_entropy(p, y[:, g]) for g, p in enumerate(parts))

        def train_loss(batch):
            idx = torch.tensor(batch)
            return loss_of(logits_of(pooled["train"].batch(idx)), targets["train"][idx])

        def validate():
            logits = pooled["valid"].logits(logits_of, chunk)
            y = targets["valid"]
            pred = torch.stack([p.argmax(-1) for p in logits.split(sizes, dim=-1)], dim=-1)
            acc = float((pred == y).all(dim=-1).float().mean())
            loss = float(loss_of(logits, y))
            return (-acc, loss), {"accuracy": acc, "loss": loss}

        max_epochs = ctx.max_epochs or self.config.max_epochs
        settings = TrainSettings(lr=self.config.lr, batch_size=self.config.batch_size, max_epochs=max_epochs,
                                 patience=self.config.patience)
        result = fit(model, len(splits["train"]), train_loss, validate, settings, ctx.seed, log=ctx.log,
                     advance=ctx.track("train linear", max_epochs), resume=ctx.resume_dir)

        with torch.no_grad():
            logp = [F.log_softmax(p, dim=-1) for p in pooled["test"].logits(logits_of, chunk).split(sizes, dim=-1)]
        for split in pooled.values():
            split.close()
        hyps, scores = _test_predictions(task, groups, logp, len(splits["test"]))

        frozen = KNOWN_UPSTREAMS.get(ctx.upstream, (0, 0, None))[2] if ctx.upstream_path is None else None
        if frozen is None:
            frozen = store.info.num_parameters
        count = head_parameter_count(hidden, num_layers, sum(sizes), self.config.projector_dim, frozen=frozen)
        if count.trainable != sum(p.numel() for p in model.parameters() if p.requires_grad):
            raise AssertionError("parameter count disagrees with the trained model")
        info = {
            **result.as_info(),
            "upstream": {"name": ctx.upstream, "num_layers": num_layers, "hidden_size": hidden},
            "layer_weights": _layer_weights(model),
            "features": dict(store.stats),
            "feature_cache": store.keep,
            "frames": frames,
            "pooled_in_memory": {s: v.in_memory for s, v in pooled.items()},
        }
        preds = Predictions(ids=[e.id for e in splits["test"]], references=[e.label for e in splits["test"]],
                            hypotheses=hyps, scores=scores)
        trained = {"method": self.name, "model": model.state_dict(), "num_layers": num_layers,
                   "hidden_size": hidden, "projector_dim": self.config.projector_dim,
                   "groups": [[name, list(labels)] for name, labels in groups]}
        return MethodOutput(predictions=preds, params=count, info=info, trained=trained)


def predict_trained(trained: dict, task: TaskSpec, manifest: Manifest, ctx: RunContext) -> Predictions:
    """A kept head (``seed-N.pt``) scoring ``task``'s test split (``bench evaluate``); its label groups must hold
    the same labels as the task's (the caller checks), in any order."""
    import torch
    import torch.nn.functional as F

    groups = [(name, list(labels)) for name, labels in trained["groups"]]
    test = manifest.split("test")
    if not test:
        raise BenchError(f"task '{task.name}': the test split is empty")
    from bench.features.store import FeatureStore

    store = FeatureStore(ctx.upstream, ctx.upstream_path, ctx.cache_dir, device=ctx.device)
    test_means = PooledSplit(store.pooled_reader(manifest, test, ctx.track(f"features {ctx.upstream}", len(test))))
    dims = test_means.reader.dims
    if dims != (trained["num_layers"], trained["hidden_size"]):
        raise BenchError(f"the head was trained on (layers, dim) {(trained['num_layers'], trained['hidden_size'])}"
                         f", the {ctx.upstream} features of '{task.name}' have {dims}")
    model = build_head(dims[0], dims[1], sum(len(labels) for _, labels in groups), trained["projector_dim"])
    model.load_state_dict(trained["model"])
    model.eval()

    def logits_of(x):
        ones = torch.ones(len(x), dtype=torch.long)
        return model([x[:, layer, None, :] for layer in range(dims[0])], [ones] * dims[0])

    with torch.no_grad():  # the means and the evaluation chunks the run used: the run's outputs again
        logits = test_means.logits(logits_of, eval_chunk_rows(*dims))
        logp = [F.log_softmax(p, dim=-1) for p in logits.split([len(lb) for _, lb in groups], dim=-1)]
    test_means.close()
    hyps, scores = _test_predictions(task, groups, logp, len(test))
    return Predictions(ids=[e.id for e in test], references=[e.label for e in test], hypotheses=hyps,
                       scores=scores)


# A split's pooled means are held in memory up to this size (the built-in suite's splits, at most ~7 MB each on
# whisper_tiny_en, train as fast as before), and read from the cache batch by batch beyond it (a real corpus:
# Speech Commands on Whisper tiny.en is 0.5 GB of means, VoxCeleb1 on HuBERT Base 6 GB). The values are the same
# either way. 16 MB, not more: the full-size rehearsal's Speech Commands valid and test splits (75 MB of means)
# held in memory were a third of what its linear cell grew by over a tenth of the corpus.
IN_MEMORY_BYTES = 16 * 2**20
# Validation and test logits are computed in chunks of at most this many bytes of means. A fixed size per (layers,
# dim), never a machine setting: a chunk is one matrix product, and its size can move the last bits of the logits.
# The forward pass holds about twice its chunk (measured: a 52 MB chunk peaked 125 MB above the cell); 16 MB is
# still one chunk for every built-in split (at most 480 utterances; 1,170 rows on whisper_base's 7 x 512).
EVAL_CHUNK_BYTES = 16 * 2**20


def eval_chunk_rows(num_layers: int, hidden: int) -> int:
    """Utterances per evaluation chunk: every built-in split is one chunk (the whole split at once, as before)."""
    return max(1, EVAL_CHUNK_BYTES // (num_layers * hidden * 4))


class PooledSplit:
    """One split's pooled means for the probe: in memory when small, else read from the cache as asked for."""

    def __init__(self, reader, limit: int = IN_MEMORY_BYTES):
        import torch

        self.reader = reader
        self.in_memory = reader.nbytes <= limit
        self._all = torch.from_numpy(reader.rows(range(len(reader)))) if self.in_memory else None

    def __len__(self) -> int:
        return len(self.reader)

    def batch(self, indices):
        """(B, layers, dim) float32 tensor of these utterances' means (``indices``: a 1-d index tensor)."""
        import torch

        if self._all is not None:
            return self._all[indices]
        return torch.from_numpy(self.reader.rows(indices.tolist()))

    def logits(self, logits_of, chunk: int):
        """``logits_of`` over the whole split, ``chunk`` utterances at a time, concatenated."""
        import torch

        n = len(self)
        if self._all is not None and n <= chunk:
            return logits_of(self._all)
        parts = [logits_of(self._all[a:a + chunk] if self._all is not None
                           else torch.from_numpy(self.reader.rows(range(a, min(a + chunk, n)))))
                 for a in range(0, n, chunk)]
        return torch.cat(parts)

    def close(self) -> None:
        self.reader.close()


def _pooled_features(manifest: Manifest, splits: dict, ctx: RunContext, task: str | None = None):
    """(FeatureStore, per-split :class:`PooledSplit` of mean-pooled features [N, layers, dim], frame counts,
    (layers, dim)).

    The means come from the feature store's pooled cache (computed once per utterance at extraction, exactly as
    ``f.astype(float32).mean(axis=1)`` of the cached float16 frames): no frame-level array is read here, and a
    large split's means are read batch by batch, so memory is bounded by a batch, not by the corpus."""
    from bench.methods.base import feature_store

    store = feature_store(ctx, task)
    advance = ctx.track(f"features {ctx.upstream}", sum(len(v) for v in splits.values()))
    pooled, frames, train_dims = {}, {}, None
    for s, exs in splits.items():
        reader = store.pooled_reader(manifest, exs, advance)
        dims = reader.dims
        if s == "train":
            train_dims = dims
        elif dims != train_dims:
            raise BenchError(f"cached {s} features have (layers, dim) {dims}, train has {train_dims}")
        pooled[s] = PooledSplit(reader)
        frames[s] = int(reader.lengths.sum())
    return store, pooled, frames, train_dims


def _test_predictions(task: TaskSpec, groups, logp, n: int) -> tuple[list[str], list[dict]]:
    """Argmax label per slot, and per-class log-probabilities (slot=value keys for IC)."""
    hyps, scores = [], []
    for i in range(n):
        hyps.append(" ".join(labels[int(lp[i].argmax())] for (_, labels), lp in zip(groups, logp)))
        if task.slots:
            scores.append({f"{name}={v}": float(lp[i, j]) for (name, labels), lp in zip(groups, logp)
                           for j, v in enumerate(labels)})
        else:
            scores.append({v: float(logp[0][i, j]) for j, v in enumerate(groups[0][1])})
    return hyps, scores


def _layer_weights(model) -> list[float]:
    """softmax(w) of the featurizer (which layers the probe used); [] for a single layer."""
    import torch

    w = getattr(model.featurizer, "weights", None)
    return [] if w is None else [round(float(v), 6) for v in torch.softmax(w.detach(), dim=-1)]
