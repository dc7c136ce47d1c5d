"""Choose the CPU default recipe's layers and head on R8 by validation score (never test).

Features come from the embedding cache (extract once, then every head trains in seconds):
SmolLM2-135M layers 0..16 (mean pooling), all-MiniLM-L6-v2 and all-mpnet-base-v2 (last layer,
mean). Each candidate is trained on R8 train minus a stratified 10% validation split and scored
on that split; test scores are printed for information only.

    python benchmarks/head_search.py --data-dir ../shared/datasets [--cache-dir DIR] [-o out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from llmembed.backbones import Backbone, BackboneSpec
from llmembed.cache import EmbeddingCache
from llmembed.data import load_benchmark
from llmembed.heads import HeadConfig
from llmembed.metrics import classification_metrics
from llmembed.training import TrainConfig, predict_logits, train_head

SPECS = {
    "smollm2": BackboneSpec("smollm2-135m", layers="0:17", pooling="mean", max_length=512),
    "minilm": BackboneSpec("minilm-l6", layers="-1", pooling="mean", max_length=256),
    "mpnet": BackboneSpec("mpnet-base", layers="-1", pooling="mean", max_length=256),
}


def candidates() -> list[tuple[str, dict, dict, dict]]:
    """(name, smollm2 layer subset, head overrides, train overrides)."""
    train = {"lr": 1e-3, "batch_size": 128, "max_epochs": 100, "patience": 10}
    head = {"proj_dim": 256, "sigma": 0.1, "mean_of": [0, 1, 2]}
    wide = [4, 8, 12, 16]
    return [
        ("L4,8,12,16 mean_of=0 (paper-style)", {"layers": wide}, {**head, "mean_of": 0}, train),
        ("L4,8,12,16 mean_of=all", {"layers": wide}, head, train),
        ("L8,10,12 mean_of=all", {"layers": [8, 10, 12]}, head, train),
        ("L12,14,16 mean_of=all", {"layers": [12, 14, 16]}, head, train),
        ("L4,8,12,16 mean_of=all sigma=1", {"layers": wide}, {**head, "sigma": 1.0}, train),
        ("L4,8,12,16 mean_of=all fusion=concat", {"layers": wide},
         {**head, "fusion": "concat"}, train),
        ("L4,8,12,16 mean_of=all lr=1e-4", {"layers": wide}, head,
         {**train, "lr": 1e-4, "max_epochs": 200, "patience": 20}),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args()
    ds = load_benchmark("r8", args.data_dir)
    cache = EmbeddingCache(args.cache_dir)
    texts = ds.train_texts + ds.test_texts
    feats = {k: cache.embed(Backbone(s, "cpu"), texts, progress=True) for k, s in SPECS.items()}
    classes = sorted(set(ds.train_labels))
    y = np.array([classes.index(v) for v in ds.train_labels + ds.test_labels])
    n_tr = len(ds.train_texts)
    rows = []
    for name, smol, head, train in candidates():
        parts = [feats["smollm2"][:, smol["layers"]], feats["minilm"], feats["mpnet"]]
        t0 = time.perf_counter()
        res = train_head(
            [p[:n_tr] for p in parts],
            y[:n_tr],
            len(classes),
            HeadConfig.from_dict(head),
            TrainConfig.from_dict(train),
            progress=False,
        )
        import torch

        logits = predict_logits(res.head, [torch.as_tensor(p[n_tr:]) for p in parts])
        test = classification_metrics(y[n_tr:], logits.argmax(1).numpy(), range(len(classes)))
        row = {
            "name": name,
            "val_accuracy": res.val_metrics["accuracy"],
            "val_macro_f1": res.val_metrics["macro_f1"],
            "test_accuracy": test["accuracy"],
            "test_macro_f1": test["macro_f1"],
            "best_epoch": res.best_epoch,
            "train_seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        print(
            f"{name:45s} val acc {row['val_accuracy']:.4f} F1 {row['val_macro_f1']:.4f} | "
            f"test acc {row['test_accuracy']:.4f} F1 {row['test_macro_f1']:.4f} "
            f"(epoch {row['best_epoch']}, {row['train_seconds']:.0f}s)",
            flush=True,
        )
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
