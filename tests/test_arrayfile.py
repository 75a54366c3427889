"""The sharded array store behind the feature and unit caches: exact round trips, few files, self-repair."""

from __future__ import annotations

import json
import os

import numpy as np

from bench.core.arrayfile import ShardedArrayStore, save_array_atomic


def _arrays(rng, n, layers=2, dim=5):
    return [rng.standard_normal((layers, int(rng.integers(1, 30)), dim)).astype(np.float16) for _ in range(n)]


def test_round_trip_in_any_order_across_shards(tmp_path):
    rng = np.random.default_rng(0)
    store = ShardedArrayStore(tmp_path / "s")
    a, b = _arrays(rng, 7), _arrays(rng, 5)
    store.put_many([f"a{i}" for i in range(7)], a)
    store.put_many([f"b{i}" for i in range(5)], b)
    want = {**{f"a{i}": x for i, x in enumerate(a)}, **{f"b{i}": x for i, x in enumerate(b)}}
    keys = ["b3", "a0", "zz", "a6", "b0"]
    got = ShardedArrayStore(tmp_path / "s").get_many(keys)  # a fresh reader: from the files alone
    assert got[2] is None
    for k, g in zip(keys, got):
        if k != "zz":
            assert g.dtype == np.float16 and np.array_equal(g, want[k])
            assert type(g) is np.ndarray and g.flags.owndata  # a copy: no open shard file behind it
    # 12 arrays, 2 shards: 2 .npy + 2 sidecars + the index
    assert sorted(p.suffix for p in (tmp_path / "s").iterdir()) == [".json"] * 3 + [".npy"] * 2


def test_index_is_rebuilt_from_sidecars(tmp_path):
    """Another process's shards (not in the index this one wrote) are found by rescanning the sidecars."""
    rng = np.random.default_rng(1)
    first, second = ShardedArrayStore(tmp_path), ShardedArrayStore(tmp_path)
    first.get_many(["x"])  # loads an empty index
    second.put_many(["x"], _arrays(rng, 1))
    assert first.get_many(["x"])[0] is not None
    os.remove(tmp_path / "index.json")
    assert ShardedArrayStore(tmp_path).get_many(["x"])[0] is not None


def test_unfinished_or_deleted_shards_read_as_missing(tmp_path):
    rng = np.random.default_rng(2)
    store = ShardedArrayStore(tmp_path)
    save_array_atomic(tmp_path / "orphan.npy", np.zeros((1, 3, 5)))  # a shard whose sidecar was never written
    store.put_many(["k"], _arrays(rng, 1))
    shard = json.loads((tmp_path / "index.json").read_text())["entries"]["k"][0]
    os.remove(tmp_path / f"{shard}.npy")
    again = ShardedArrayStore(tmp_path)
    assert again.get_many(["k"]) == [None]
    assert "k" not in json.loads((tmp_path / "index.json").read_text())["entries"]


def test_unit_arrays_use_axis_one(tmp_path):
    store = ShardedArrayStore(tmp_path, axis=1)
    u = [np.array([[3, 5, 9], [2, 1, 4]], np.int32), np.array([[7], [8]], np.int32)]
    store.put_many(["u0", "u1"], u)
    got = ShardedArrayStore(tmp_path, axis=1).get_many(["u1", "u0"])
    assert np.array_equal(got[0], u[1]) and np.array_equal(got[1], u[0])


def test_loaded_index_holds_one_string_per_shard(tmp_path):
    """A real corpus's index has 10^5 entries in a few hundred shards: the shard name is one object, not one per
    entry (75 B an utterance per store)."""
    rng = np.random.default_rng(2)
    ShardedArrayStore(tmp_path).put_many([f"k{i}" for i in range(4)], _arrays(rng, 4))
    index = ShardedArrayStore(tmp_path)._load_index()  # from index.json, as a later process reads it
    shards = {id(entry[0]) for entry in index.values()}
    assert len(index) == 4 and len(shards) == 1
