"""Training from features on disk (FeatureFile): the cache spills, the head streams, and the
result matches the in-memory one (the linear head to rounding, the MLP head to SGD noise)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import llmembed.classifier as classifier_module
import llmembed.training as training
from llmembed import Backbone, BackboneSpec, EmbeddingCache, LLMEmbedClassifier
from llmembed.cache import FeatureFile
from llmembed.errors import ConfigError
from llmembed.heads import HeadConfig
from llmembed.testing import tiny_recipe
from llmembed.training import TrainConfig, train_head


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few rows and buffers of a few blocks, so that small data spans many."""
    monkeypatch.setattr(training, "BLOCK_BYTES", 2048)
    monkeypatch.setattr(training, "SHUFFLE_BYTES", 3 * 2048)


def _data(n: int = 600, seed: int = 0, classes: int = 3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    a = rng.normal(size=(n, 2, 12)).astype(np.float32)
    a[:, 0, :classes] += 2.5 * np.eye(classes, dtype=np.float32)[y]
    b = rng.normal(size=(n, 1, 8)).astype(np.float32) * 50 + 7  # far from standardized
    return [a, b], y


def _on_disk(tmp_path, arrays):
    out = []
    for i, a in enumerate(arrays):
        f = FeatureFile(tmp_path / f"f{i}.npy", a.shape)
        order = np.random.default_rng(i).permutation(len(a))  # written in any row order
        f.write(order, a[order])
        out.append(FeatureFile(tmp_path / f"f{i}.npy"))
    return out


def test_feature_file_round_trip(tmp_path):
    a = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    f = FeatureFile(tmp_path / "a.npy", a.shape)
    f.write(np.array([4, 0, 1]), a[[4, 0, 1]])
    f.write(np.array([3, 2]), a[[3, 2]])
    assert np.array_equal(np.load(tmp_path / "a.npy"), a)  # a standard .npy file
    g = FeatureFile(tmp_path / "a.npy")
    assert g.shape == (5, 2, 3) and len(g) == 5 and g.nbytes == a.nbytes
    assert np.array_equal(g.read(1, 4), a[1:4]) and g.read(4, 99).shape == (1, 2, 3)
    assert np.array_equal(g.take(np.array([0, 2, 3])), a[[0, 2, 3]])
    np.save(tmp_path / "d.npy", a.astype(np.float64))
    with pytest.raises(ValueError, match="float32"):
        FeatureFile(tmp_path / "d.npy")


def test_streamed_moments_and_epochs_cover_the_rows(tmp_path, small_blocks):
    arrays, _ = _data(203)
    rows = training._Rows(_on_disk(tmp_path, arrays))
    assert rows.block < 50  # many blocks
    wanted = np.sort(np.random.default_rng(1).choice(203, 150, replace=False))
    means, stds = rows.moments(wanted)
    for x, m, s in zip(arrays, means, stds):
        t = torch.as_tensor(x[wanted])
        torch.testing.assert_close(m, t.mean(0), atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(s, t.std(0), atol=1e-4, rtol=1e-5)
    gen = torch.Generator().manual_seed(0)
    seen, batches = [], []
    for xs, ids in rows.shuffled(wanted, 16, gen):
        for x, a in zip(xs, arrays):
            assert torch.equal(x, torch.as_tensor(a[ids]))  # each row with its own features
        seen.extend(ids.tolist())
        batches.append(ids)
    assert sorted(seen) == wanted.tolist()  # every wanted row once per epoch, no other
    assert max(int(np.ptp(b)) for b in batches) > 4 * rows.block  # mixed across blocks
    assert all(len(b) <= 16 for b in batches)


@pytest.mark.parametrize("multi", [False, True])
def test_streamed_linear_head_equals_the_in_memory_one(tmp_path, small_blocks, multi):
    arrays, y = _data()
    if multi:
        y = np.eye(3, dtype=np.float32)[y]
        y[::7, 1] = 1  # some rows with two labels
    config = TrainConfig(class_weight="balanced", max_iter=100)
    head = HeadConfig(fusion="linear")
    ref = train_head(arrays, y, 3, head, config, progress=False)
    got = train_head(_on_disk(tmp_path, arrays), y, 3, head, config, progress=False)
    assert [h.get("C") for h in got.history] == [h.get("C") for h in ref.history]
    for key in ("mean_0", "std_0", "mean_1", "std_1"):
        torch.testing.assert_close(getattr(got.head, key), getattr(ref.head, key))
    torch.testing.assert_close(got.head.mlp[-1].weight, ref.head.mlp[-1].weight, atol=2e-4, rtol=0)
    if multi:
        np.testing.assert_allclose(got.thresholds, ref.thresholds)
    else:
        assert got.temperature == pytest.approx(ref.temperature, abs=1e-3)


def test_streamed_mlp_head_learns_like_the_in_memory_one(tmp_path, small_blocks):
    arrays, y = _data(900)
    head = HeadConfig(fusion="mean", proj_dim=16, hidden=[16], mean_of=None, dropout=0.0)
    config = TrainConfig(lr=3e-3, batch_size=32, max_epochs=15, patience=None)
    ref = train_head(arrays, y, 3, head, config, progress=False)
    got = train_head(_on_disk(tmp_path, arrays), y, 3, head, config, progress=False)
    again = train_head(_on_disk(tmp_path, arrays), y, 3, head, config, progress=False)
    assert ref.val_metrics["accuracy"] > 0.8  # the task is learnable
    assert got.val_metrics["accuracy"] >= ref.val_metrics["accuracy"] - 0.05
    assert got.history[-1]["train_loss"] < 0.5 * got.history[0]["train_loss"]
    torch.testing.assert_close(got.head.mlp[-1].weight, again.head.mlp[-1].weight)  # seeded


def test_cache_spills_to_a_feature_file(tmp_path, tiny_bert):
    bb = Backbone(BackboneSpec(str(tiny_bert), layers="-1", dtype="float32"), device="cpu")
    texts = ["alpha beta", "gamma", "alpha beta", "delta epsilon zeta", "gamma"]
    cache = EmbeddingCache(tmp_path / "cache")
    ref = cache.embed(bb, texts, progress=False)
    with cache.spill_folder() as folder:
        assert folder.parent == cache.root and folder.name.startswith(".spill-")
        got = cache.embed(bb, texts, progress=False, spill_dir=folder, spill_over=0)
        assert isinstance(got, FeatureFile) and got.shape == ref.shape
        assert np.array_equal(got.read(0, len(texts)), ref)
        assert [p.name for p in folder.iterdir()] == [got.path.name]  # duplicates expanded
        small = cache.embed(bb, texts, progress=False, spill_dir=folder, spill_over=10**9)
        assert isinstance(small, np.ndarray) and np.array_equal(small, ref)
    assert not folder.exists()
    assert [e.fingerprint for e in cache.entries()] == [bb.fingerprint()]  # not a folder entry


def test_spill_folders_of_dead_processes_are_removed(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    stale = cache.root / f".spill-{dead}-abc"
    alive = cache.root / f".spill-{os.getpid()}-def"
    for d in (stale, alive):
        d.mkdir(parents=True)
    with cache.spill_folder():
        pass
    assert not stale.exists() and alive.exists()


def _fit(recipe, texts, labels, **params):
    return LLMEmbedClassifier(recipe=recipe, verbose=False, **params).fit(texts, labels)


def test_fit_out_of_core_matches_in_memory(tiny_llama, tiny_bert, toy_texts, small_blocks):
    texts, labels = toy_texts
    recipe = tiny_recipe(tiny_llama, tiny_bert, head={"fusion": "linear"})
    ref = _fit(recipe, texts, labels, out_of_core=False)
    got = _fit(recipe, texts, labels, out_of_core=True)
    np.testing.assert_allclose(got.predict_proba(texts), ref.predict_proba(texts), atol=1e-3)
    assert list(got.predict(texts)) == list(ref.predict(texts))
    assert not list(EmbeddingCache().root.glob(".spill-*"))  # the spill folder is gone


def test_out_of_core_auto_spills_when_memory_is_short(
    tiny_llama, tiny_bert, toy_texts, monkeypatch, capsys
):
    texts, labels = toy_texts
    recipe = tiny_recipe(tiny_llama, tiny_bert)
    monkeypatch.setattr(classifier_module, "available_memory", lambda: 10**12)
    LLMEmbedClassifier(recipe=recipe, verbose=True).fit(texts, labels)
    assert "streamed from" not in capsys.readouterr().err
    monkeypatch.setattr(classifier_module, "available_memory", lambda: 1000)
    clf = LLMEmbedClassifier(recipe=recipe, verbose=True).fit(texts, labels)
    assert "streamed from" in capsys.readouterr().err
    assert clf.score(texts, labels) >= 0.8


def test_out_of_core_refusals(tiny_llama, tiny_bert, toy_texts):
    texts, labels = toy_texts
    recipe = tiny_recipe(tiny_llama, tiny_bert)
    with pytest.raises(ConfigError, match="use_cache=True"):
        _fit(recipe, texts, labels, out_of_core=True, use_cache=False)
    with pytest.raises(ConfigError, match="out_of_core must be"):
        _fit(recipe, texts, labels, out_of_core="yes")
    with pytest.raises(ConfigError, match="use_cache=True"):
        LLMEmbedClassifier(recipe=recipe, use_cache=False, verbose=False).fit(
            texts, labels, embeddings="somewhere"
        )
