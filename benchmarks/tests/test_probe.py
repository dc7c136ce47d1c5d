"""The layer probe (`llmembed-bench probe`) on a tiny random decoder."""

from __future__ import annotations

import numpy as np

from llmembed_bench.probe import plot_probe, probe_layers, ridge_probe


def test_ridge_probe_separates_separable_data():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 1, (30, 4)), rng.normal(2, 1, (30, 4))])
    y = np.array([0] * 30 + [1] * 30)
    assert (ridge_probe(x[::2], y[::2], x[1::2]) == y[1::2]).mean() > 0.9


def test_probe_every_layer_and_pooling(tiny_llama, tmp_path):
    texts = [f"{w} movie {i}" for i in range(12) for w in ("good", "bad")]
    labels = ["pos", "neg"] * 12
    res = probe_layers(
        str(tiny_llama),
        texts,
        labels,
        poolings=["mean", "last"],
        cache_dir=tmp_path / "c",
        device="cpu",
        progress=False,
    )
    # 3 blocks -> 4 hidden states, each with both poolings
    assert sorted({(r["layer"], r["pooling"]) for r in res.rows}) == [
        (layer, p) for layer in range(4) for p in ("last", "mean")
    ]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in res.rows)
    assert res.n_train == len(texts) and res.folds == 5
    assert res.best("mean")["pooling"] == "mean"
    png = plot_probe([res], tmp_path / "probe.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
