import numpy as np
import pytest

from llmembed.errors import LLMEmbedError
from llmembed.heads import HeadConfig
from llmembed.metrics import classification_metrics
from llmembed.training import TrainConfig, split_validation, train_head


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = rng.normal(size=(3, 2, 8))
    a = centers[y] + 0.5 * rng.normal(size=(n, 2, 8))
    b = rng.normal(size=(n, 1, 4)) + y[:, None, None] * 0.5
    return [a.astype(np.float32), b.astype(np.float32)], y


HEAD = HeadConfig(proj_dim=8, hidden=[16], sigma=0.5)


def test_training_learns_and_is_deterministic():
    feats, y = _data()
    cfg = TrainConfig(lr=1e-2, batch_size=32, max_epochs=30, patience=10, seed=3)
    r1 = train_head(feats, y, 3, HEAD, cfg, progress=False)
    r2 = train_head(feats, y, 3, HEAD, cfg, progress=False)
    assert r1.val_metrics["accuracy"] > 0.9
    for (k, v1), v2 in zip(r1.head.state_dict().items(), r2.head.state_dict().values()):
        assert np.array_equal(v1.numpy(), v2.numpy()), k
    assert r1.history == r2.history


def test_early_stopping_restores_best_epoch():
    feats, y = _data()
    cfg = TrainConfig(lr=5e-2, batch_size=16, max_epochs=200, patience=3, seed=0)
    r = train_head(feats, y, 3, HEAD, cfg, progress=False)
    assert len(r.history) < 200
    assert len(r.history) - r.best_epoch == 3
    best = max(h["val_accuracy"] for h in r.history)
    assert r.val_metrics["accuracy"] == pytest.approx(best)


def test_fixed_epochs_without_validation():
    feats, y = _data(60)
    cfg = TrainConfig(lr=1e-3, max_epochs=4, patience=None, val_fraction=0.0)
    r = train_head(feats, y, 3, HEAD, cfg, progress=False)
    assert len(r.history) == 4 and r.best_epoch == 4 and r.val_metrics is None


def test_validation_split_is_stratified():
    y = np.array([0] * 90 + [1] * 10)
    tr, va = split_validation(y, 0.1, seed=0)
    assert len(va) == 10 and set(np.bincount(y[va])) == {9, 1}
    assert not set(tr) & set(va)


def test_class_weights_run():
    feats, y = _data(80)
    r = train_head(
        feats, y, 3, HEAD, TrainConfig(max_epochs=2, class_weight="balanced"), progress=False
    )
    assert len(r.history) == 2


def test_bad_train_config():
    with pytest.raises(LLMEmbedError):
        TrainConfig(monitor="f2")
    with pytest.raises(LLMEmbedError):
        TrainConfig(val_fraction=1.0)


def test_metrics_binary_and_multiclass():
    m = classification_metrics(["a", "b", "b", "a"], ["a", "b", "a", "a"], labels=["a", "b"])
    assert m["accuracy"] == 0.75
    assert m["positive_label"] == "b" and m["positive_f1"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[2, 0], [1, 1]]
    m3 = classification_metrics([0, 1, 2, 2], [0, 1, 2, 1])
    assert "positive_f1" not in m3
    assert m3["micro_f1"] == pytest.approx(0.75)
    assert set(m3["per_class"]) == {"0", "1", "2"}
