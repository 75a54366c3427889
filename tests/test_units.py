"""Speech-to-units: dedup keeps durations; k-means fits and predicts like sklearn; GSLM's km.bin loads by its
centroids; the unit cache computes each utterance once."""

from __future__ import annotations

import numpy as np
import pytest

from bench.core.errors import BenchError
from bench.units.dedup import dedup, expand
from bench.core.safe_load import load_sklearn_kmeans
from bench.units.kmeans import KMeansQuantizer, fit_kmeans, read_sklearn_centers


def test_dedup_collapses_runs_and_keeps_durations():
    units, durs = dedup([5, 5, 5, 2, 2, 7, 5, 5])
    assert units.tolist() == [5, 2, 7, 5]
    assert durs.tolist() == [3, 2, 1, 2]
    assert expand(units, durs).tolist() == [5, 5, 5, 2, 2, 7, 5, 5]
    u0, d0 = dedup([])
    assert len(u0) == 0 and len(d0) == 0
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 3, size=500)
    u, d = dedup(frames)
    assert (np.diff(u) != 0).all() and d.sum() == 500 and (expand(u, d) == frames).all()


def _blobs(seed=0, n=300, dim=8, k=4):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, size=(k, dim))
    labels = rng.integers(0, k, size=n)
    return (centers[labels] + rng.normal(0, 0.5, size=(n, dim))).astype(np.float32), labels


def test_fit_kmeans_recovers_clusters_and_is_seeded():
    x, labels = _blobs()
    q = fit_kmeans([x[:150], x[150:]], 4, seed=3, n_init=3)
    pred = q.predict(x)
    # the clustering equals the true partition up to renaming
    pairs = set(zip(labels.tolist(), pred.tolist()))
    assert len(pairs) == 4 and len({a for a, _ in pairs}) == 4 and len({b for _, b in pairs}) == 4
    q2 = fit_kmeans([x[:150], x[150:]], 4, seed=3, n_init=3)
    assert np.array_equal(q.centers, q2.centers) and q.hash == q2.hash
    assert q.meta["K"] == 4 and q.meta["frames"] == 300
    with pytest.raises(BenchError, match="expects"):
        q.predict(np.zeros((3, 5)))


@pytest.mark.parametrize("kind", ["KMeans", "MiniBatchKMeans"])
def test_gslm_km_bin_pickle_loads_by_centroids(tmp_path, kind):
    import joblib
    import sklearn.cluster

    x, _ = _blobs(seed=1, n=400, dim=6, k=5)
    km = getattr(sklearn.cluster, kind)(n_clusters=5, random_state=0, n_init=2).fit(x)
    path = tmp_path / "km.bin"
    joblib.dump(km, path)  # what GSLM's cluster_kmeans.py writes
    q = KMeansQuantizer.load(path)
    assert q.num_units == 5 and q.meta["class"] == kind
    np.testing.assert_array_equal(q.centers, km.cluster_centers_.astype(np.float32))
    probe = np.random.default_rng(2).normal(0, 10, size=(200, 6)).astype(np.float32)
    np.testing.assert_array_equal(q.predict(probe), km.predict(probe))
    # the reader never builds the sklearn object (no sklearn code runs, any sklearn version reads): its state only
    obj = load_sklearn_kmeans(path)
    assert obj.cls_name == kind
    np.testing.assert_array_equal(obj.state["cluster_centers_"], km.cluster_centers_)


def test_km_bin_reads_without_joblib_load_or_sklearn_classes(tmp_path, monkeypatch):
    import joblib
    from sklearn.cluster import KMeans

    x, _ = _blobs(seed=4, n=200, dim=3, k=3)
    km = KMeans(n_clusters=3, random_state=0, n_init=2).fit(x)
    joblib.dump(km, tmp_path / "km.bin")

    def broken(*a, **k):
        raise AttributeError("Can't get attribute '_k_means_fast' on <module 'sklearn.cluster'>")

    monkeypatch.setattr(joblib, "load", broken)
    centers, name = read_sklearn_centers(tmp_path / "km.bin")
    assert name == "KMeans"
    np.testing.assert_array_equal(centers, km.cluster_centers_)


def test_km_bin_that_is_not_kmeans_is_refused(tmp_path):
    import joblib

    joblib.dump({"weights": np.zeros(3)}, tmp_path / "km.bin")
    with pytest.raises(BenchError, match="not a fitted sklearn k-means"):
        KMeansQuantizer.load(tmp_path / "km.bin")
    with pytest.raises(BenchError, match="not found"):
        KMeansQuantizer.load(tmp_path / "missing.bin")


def test_centroid_file_roundtrip(tmp_path):
    x, _ = _blobs(seed=5)
    q = fit_kmeans([x], 4, seed=0, n_init=2)
    q.save(tmp_path / "km.npy")
    r = KMeansQuantizer.load(tmp_path / "km.npy")
    assert r.hash == q.hash and r.meta["K"] == 4
    np.testing.assert_array_equal(r.predict(x), q.predict(x))


def _tone_manifest(root):
    from bench.data.audio import write_audio
    from bench.data.manifest import Example, Manifest

    sr = 16_000
    t = np.arange(int(0.4 * sr)) / sr
    examples = []
    for i, (split, f) in enumerate([("train", 300), ("train", 1500), ("train", 3000), ("test", 800)]):
        wav = 0.3 * np.sin(2 * np.pi * f * t) * (t < 0.25) + 0.01 * np.random.default_rng(i).normal(size=t.size)
        write_audio(root / f"u{i}.wav", wav.astype(np.float32))
        examples.append(Example(id=f"u{i}", path=f"u{i}.wav", label="x", split=split))
    return Manifest(examples, root)


def test_unit_store_quantizes_fbank_once_and_caches(tmp_path):
    from bench.features.store import FeatureStore
    from bench.units.store import UnitStore, fit_quantizer

    man = _tone_manifest(tmp_path)
    feats = FeatureStore("fbank", cache_dir=tmp_path / "cache")
    train = man.split("train")
    q = fit_quantizer(feats, [(man, train)], layer=-1, num_units=6, seed=0, models_dir=tmp_path / "models",
                      n_init=2)
    again = fit_quantizer(feats, [(man, train)], layer=-1, num_units=6, seed=0, models_dir=tmp_path / "models")
    assert again.hash != "" and (tmp_path / "models" / "kmeans").is_dir()
    store = UnitStore(feats, -1, q, cache_dir=tmp_path / "cache")
    seqs = store.get(man, list(man))
    hidden = feats.get(man, list(man))
    for s, h in zip(seqs, hidden):
        assert s.durations.sum() == h.shape[1]  # every frame is in exactly one run
        assert (np.diff(s.units) != 0).all() and s.units.max() < 6
        np.testing.assert_array_equal(expand(s.units, s.durations), q.predict(h[-1].astype(np.float32)))
    assert store.stats == {"computed": 4, "cached": 0}
    seqs2 = UnitStore(feats, -1, q, cache_dir=tmp_path / "cache").get(man, list(man))
    assert all(np.array_equal(a.units, b.units) for a, b in zip(seqs, seqs2))
    other = UnitStore(feats, -1, fit_kmeans([hidden[0][-1].astype(np.float32)], 3, seed=1, n_init=1),
                      cache_dir=tmp_path / "cache")
    assert other.config_id != store.config_id  # another quantizer is another cache entry
    with pytest.raises(BenchError, match="layer 5 does not exist"):
        UnitStore(feats, 5, q, cache_dir=tmp_path / "cache2").get(man, list(man))


def test_unit_store_split_is_get_flattened_and_ensure_reads_nothing_cached(tmp_path, monkeypatch):
    """get_split (what a prompt cell keeps: flat arrays) equals get; ensure computes only what is missing."""
    from bench.core.arrayfile import ShardedArrayStore
    from bench.features.store import FeatureStore
    from bench.units.store import UnitStore

    man = _tone_manifest(tmp_path)
    feats = FeatureStore("fbank", cache_dir=tmp_path / "cache")
    q = fit_kmeans([h[-1].astype(np.float32) for h in feats.get(man, man.split("train"))], 5, seed=0, n_init=1)
    first = UnitStore(feats, -1, q, cache_dir=tmp_path / "cache")
    first.ensure(man, list(man)[:2])
    assert first.stats == {"computed": 2, "cached": 0}
    store = UnitStore(feats, -1, q, cache_dir=tmp_path / "cache")
    order = list(man)[::-1]
    split = store.get_split(man, order, dtype=np.int16)  # two cached, two computed
    assert store.stats == {"computed": 2, "cached": 2}
    seqs = UnitStore(feats, -1, q, cache_dir=tmp_path / "cache").get(man, order)
    assert len(split) == 4 and split.units.dtype == np.int16
    for i, seq in enumerate(seqs):
        a, b = split.offsets[i], split.offsets[i + 1]
        assert split.units[a:b].tolist() == seq.units.tolist()
        assert split.durations[a:b].tolist() == seq.durations.tolist()
    monkeypatch.setattr(ShardedArrayStore, "get_many", lambda *a: pytest.fail("ensure read cached units"))
    again = UnitStore(feats, -1, q, cache_dir=tmp_path / "cache")
    again.ensure(man, list(man))
    assert again.stats["computed"] == 0
    assert len(UnitStore(feats, -1, q, cache_dir=tmp_path / "cache").get_split(man, [])) == 0


@pytest.mark.parametrize("max_frames", [None, 40])
def test_fit_quantizer_reads_only_its_sample_and_fits_what_the_stacked_frames_fit(tmp_path, max_frames):
    """k-means draws its frame indices from the utterance lengths and reads only those frames of the layer: the
    same centroids as fit_kmeans on every frame of the split stacked in memory (the former path)."""
    from bench.features.store import FeatureStore
    from bench.units.store import fit_quantizer

    man = _tone_manifest(tmp_path)
    feats = FeatureStore("mfcc", cache_dir=tmp_path / "cache")
    train = man.split("train")
    want = fit_kmeans([h[-1].astype(np.float32) for h in feats.get(man, train)], 5, seed=2, max_frames=max_frames,
                      n_init=1)
    read = []
    from bench.features import store as feature_store

    real_layer = feature_store.FeatureReader.layer

    def spy(self, i, layer):
        out = real_layer(self, i, layer)
        read.append(len(out))
        return out

    feature_store.FeatureReader.layer = spy
    whole = feature_store.FeatureReader.__getitem__
    feature_store.FeatureReader.__getitem__ = lambda self, i: pytest.fail("k-means read every layer")
    try:
        got = fit_quantizer(feats, [(man, train)], layer=-1, num_units=5, seed=2, models_dir=tmp_path / "models",
                            max_frames=max_frames, n_init=1)
    finally:
        feature_store.FeatureReader.layer = real_layer
        feature_store.FeatureReader.__getitem__ = whole
    np.testing.assert_array_equal(got.centers, want.centers)
    assert got.meta["frames"] == want.meta["frames"] and got.meta["fitted_frames"] == want.meta["fitted_frames"]
    assert read and sum(read) <= want.meta["frames"]  # one layer of an utterance at a time, never all layers


@pytest.mark.parametrize("mode", ["layers", "none"])
def test_units_and_their_kmeans_under_feature_cache_layers_and_none_equal_those_of_all(tmp_path, mode):
    """The prompt methods' units read one upstream layer: --feature-cache layers caches only it, none computes it
    in the run (Whisper batched as the cache's extraction batches it): the same k-means and the same units."""
    from bench.data.audio import write_audio
    from bench.data.manifest import Example, Manifest
    from bench.features.store import FeatureStore
    from bench.units.store import UnitStore, fit_quantizer

    rng = np.random.default_rng(0)
    examples = []
    for i in range(8):
        write_audio(tmp_path / f"u{i}.wav", 0.1 * rng.standard_normal(4800 + 1600 * (i % 5)).astype(np.float32))
        examples.append(Example(id=f"u{i}", path=f"u{i}.wav", label="x", split="train" if i < 6 else "test"))
    man = Manifest(examples, tmp_path)

    def units(keep):
        root = tmp_path / keep
        feats = FeatureStore("whisper_tiny_en", cache_dir=root, keep=keep, layers=(2,), batch_seconds=1.5)
        q = fit_quantizer(feats, [(man, man.split("train"))], layer=2, num_units=4, seed=0,
                          models_dir=root / "models", n_init=1)
        return q, UnitStore(feats, 2, q, cache_dir=root).get(man, list(man)), root / "features"

    q_all, seqs_all, _ = units("all")
    q, seqs, features = units(mode)
    assert q.hash == q_all.hash
    assert all(np.array_equal(a.units, b.units) and np.array_equal(a.durations, b.durations)
               for a, b in zip(seqs, seqs_all))
    stores = sorted(p.name for p in features.glob("*/*") if p.is_dir())
    assert stores == (["pooled-L2", "shards-L2"] if mode == "layers" else []), stores


def test_units_and_features_do_not_depend_on_whether_a_baseline_filled_the_feature_cache_first(tmp_path, monkeypatch):
    """A prompt-only run fills the cache through k-means (the training split) and units (256 at a time); a grid
    fills it from the baselines' whole-manifest stage. Whisper's last bits depend on its batch: both must cache
    the bits of the cold whole-manifest extraction, so the records of one configuration do not depend on history."""
    from bench.data.audio import write_audio
    from bench.data.manifest import Example, Manifest
    from bench.features.store import FeatureStore
    from bench.units import store as unit_store
    from bench.units.store import UnitStore, fit_quantizer

    rng = np.random.default_rng(1)
    examples = []
    for i in range(14):
        write_audio(tmp_path / f"u{i}.wav", 0.1 * rng.standard_normal(4800 + 1100 * (i % 7)).astype(np.float32))
        examples.append(Example(id=f"u{i}", path=f"u{i}.wav", label="x", split=["train", "valid", "test"][i % 3]))
    man = Manifest(examples, tmp_path)

    def run(root, baseline_first: bool):
        feats = FeatureStore("whisper_tiny_en", cache_dir=root, batch_seconds=1.5)
        if baseline_first:
            feats.ensure(man, man.examples)
        q = fit_quantizer(feats, [(man, man.split("train"))], layer=2, num_units=4, seed=0,
                          models_dir=root / "models", n_init=1)
        seqs = UnitStore(feats, 2, q, cache_dir=root).get(man, man.split("test") + man.split("valid"))
        return q, seqs, FeatureStore("whisper_tiny_en", cache_dir=root, batch_seconds=1.5).get(man, man.examples)

    q_grid, units_grid, feats_grid = run(tmp_path / "grid", True)
    real_chunks = getattr(unit_store, "_chunks", None)
    monkeypatch.setattr(unit_store, "_chunks", lambda groups, size: real_chunks(groups, 2),  # 256 of a corpus
                        raising=False)
    q, units, feats = run(tmp_path / "prompt", False)
    assert all(np.array_equal(a, b) for a, b in zip(feats, feats_grid)), "the cached bits of a cold extraction"
    assert q.hash == q_grid.hash
    assert all(np.array_equal(a.units, b.units) and np.array_equal(a.durations, b.durations)
               for a, b in zip(units, units_grid))
