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
