"""Choose the CPU default recipe's SmolLM2 layers and head training by validation score.

Runs on the features `llmembed-bench reproduce` has already cached (its superset extraction holds
SmolLM2-135M layers 0,3,4,6,8,9,12,15,16,18,21,24,26-30 with mean pooling, and the encoders' last
layer), so every candidate only trains a head. Each candidate is trained on the training split of
seed s minus a stratified 10% validation split and scored on that validation split: test is never
looked at. The winner is the best mean validation accuracy over datasets and seeds.

    LLMEMBED_DATA=../shared/datasets python benchmarks/scripts/head_search.py \
        --datasets mr,agnews,r8 --seeds 2 -o docs/head_search.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np

from llmembed.cache import default_cache_dir
from llmembed.heads import HeadConfig
from llmembed.recipes import load_recipe
from llmembed.training import TrainConfig, train_head
from llmembed_bench.features import FeatureStore
from llmembed_bench.tasks import load_task


def candidates() -> list[tuple[str, list[dict], dict, dict]]:
    """(name, per-backbone spec overrides, head overrides, train overrides) against the cpu
    recipe (backbones: SmolLM2-135M, MiniLM-L6, MPNet-base)."""
    return [
        ("L4,8,12,16 (recipe)", [{}, {}, {}], {}, {}),
        ("L4,8,12,16 lr=3e-4", [{}, {}, {}], {}, {"lr": 3e-4, "patience": 15}),
        ("L4,8,12,16 wd=1e-2", [{}, {}, {}], {}, {"weight_decay": 1e-2}),
        ("L8,12,16,21", [{"layers": "8,12,16,21"}, {}, {}], {}, {}),
        ("L9,12,15,18,21", [{"layers": "9,12,15,18,21"}, {}, {}], {}, {}),
        ("L4,8,12,16,21", [{"layers": "4,8,12,16,21"}, {}, {}], {}, {}),
        ("mpnet max_length 384", [{}, {}, {"max_length": 384}], {}, {}),
        ("linear head (hidden [])", [{}, {}, {}], {"hidden": []}, {}),
        ("mpnet 384, linear head", [{}, {}, {"max_length": 384}], {"hidden": []}, {}),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="mr,agnews,r8")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cache-dir", default=None, help="default: the reproduce cache")
    ap.add_argument("--only", default=None, help="';'-separated candidate names")
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args()
    recipe = load_recipe("cpu-fusion")
    root = args.cache_dir or default_cache_dir() / "reproduce"
    rows = []
    for name in args.datasets.split(","):
        task = load_task(name, args.data_dir)
        store = FeatureStore(task, root, progress=False)
        for cand, spec_over, head_over, train_over in candidates():
            if args.only and cand not in args.only.split(";"):
                continue
            specs = [replace(b, **o) for b, o in zip(recipe.backbones, spec_over, strict=True)]
            feats = [store.get(s) for s in specs]
            head = HeadConfig.from_dict({**recipe.head.to_dict(), **head_over})
            for seed in range(args.seeds):
                tr, _te, _ = task.split(seed)
                train = TrainConfig.from_dict(
                    {**recipe.train.to_dict(), **train_over, "seed": seed}
                )
                t0 = time.perf_counter()
                res = train_head(
                    [f[tr] for f in feats],
                    task.y[tr],
                    len(task.classes),
                    head,
                    train,
                    progress=False,
                )
                row = {
                    "dataset": name,
                    "candidate": cand,
                    "seed": seed,
                    "val_accuracy": res.val_metrics["accuracy"],
                    "val_macro_f1": res.val_metrics["macro_f1"],
                    "best_epoch": res.best_epoch,
                    "train_seconds": round(time.perf_counter() - t0, 1),
                }
                rows.append(row)
                print(
                    f"{name:7s} {cand:22s} seed {seed}: val acc {row['val_accuracy']:.4f} "
                    f"F1 {row['val_macro_f1']:.4f} (epoch {row['best_epoch']}, "
                    f"{row['train_seconds']}s)",
                    flush=True,
                )
        store.release()
    print("\nmean validation accuracy over datasets and seeds:")
    for cand, *_ in candidates():
        if not any(r["candidate"] == cand for r in rows):
            continue
        accs = [r["val_accuracy"] for r in rows if r["candidate"] == cand]
        per = {
            d: np.mean(
                [r["val_accuracy"] for r in rows if r["candidate"] == cand and r["dataset"] == d]
            )
            for d in args.datasets.split(",")
        }
        detail = "  ".join(f"{d} {v:.4f}" for d, v in per.items())
        print(f"  {cand:22s} {np.mean(accs):.4f}   ({detail})")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
