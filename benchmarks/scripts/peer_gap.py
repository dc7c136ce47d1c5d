"""Diagnostic: what would close ours' gap to the best peer (logistic regression on
all-mpnet-base-v2)?

Trains on the features `llmembed-bench reproduce` has cached (no extraction) and reports TEST
accuracy for each seed, next to the benchmark records. This is a diagnostic of the published
table, not a way to choose the recipe: candidates are chosen on validation
(benchmarks/scripts/head_search.py).

    LLMEMBED_DATA=../shared/datasets OMP_NUM_THREADS=1 python benchmarks/scripts/peer_gap.py \
        --datasets r8,r52 --variants mpnet384 -o docs/head_search/reuters_gap_test.json
    LLMEMBED_DATA=../shared/datasets OMP_NUM_THREADS=1 python benchmarks/scripts/peer_gap.py \
        --datasets mr,agnews,r8,r52,sst2 --variants linear -o docs/head_search/linear_head_test.json

It first prints, from the records, what choosing among ours and the ablations on validation
gives (`--records-only` stops there). Variants: `mpnet384`, the recipe's MLP co-occurrence head
with MPNet read at 384 tokens (its sentence-transformers default) instead of 256; `linear`,
logistic regression on the recipe's features concatenated (every layer vector of every backbone,
standardized, C chosen on the head's 10% validation split, then refitted on the whole training
split), followed by the rule a `head = "auto"` recipe would apply: per seed, the linear head if
its validation accuracy beats ours' record (the MLP's best-epoch validation accuracy on the same
split), else ours.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from llmembed.cache import default_cache_dir
from llmembed.recipes import load_recipe
from llmembed.training import predict_logits, train_head
from llmembed_bench.features import FeatureStore
from llmembed_bench.peers import choose_and_fit
from llmembed_bench.records import load_records
from llmembed_bench.tasks import load_task

LINEAR_C = (0.01, 0.1, 1.0)  # the peers' LR_C without 10, to keep the diagnostic short


def mlp_mpnet384(store, task, recipe, tr, te, seed) -> tuple[float, float]:
    """(test accuracy, best-epoch validation accuracy)."""
    specs = [replace(b, max_length=384) if b.model == "mpnet-base" else b for b in recipe.backbones]
    feats = [store.get(s) for s in specs]
    train = replace(recipe.train, seed=seed)
    res = train_head(
        [f[tr] for f in feats], task.y[tr], len(task.classes), recipe.head, train, progress=False
    )
    pred = predict_logits(res.head, [torch.as_tensor(f[te]) for f in feats]).argmax(1).numpy()
    return float((pred == task.y[te]).mean()), float(res.val_metrics["accuracy"])


def linear_concat(store, task, recipe, tr, te, seed) -> tuple[float, float]:
    """(test accuracy, validation accuracy at the chosen C)."""
    x = np.concatenate(
        [store.get(s).reshape(len(task.texts), -1) for s in recipe.backbones], axis=1
    ).astype(np.float32)
    model, _, _, val_acc, *_ = choose_and_fit(
        lambda c: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=300)),
        x[tr],
        task.y[tr],
        LINEAR_C,
        seed,
    )
    return float(model.score(x[te], task.y[te])), float(val_acc)


def chosen_on_validation(records: list[dict], dataset: str) -> list[tuple[str, float]]:
    """Per seed, the record among ours and the ablations with the best validation accuracy:
    (method, its test accuracy). Choosing the backbone subset / layer / fusion this way is the
    cheapest fix the ablations suggest."""
    best: dict[int, tuple[float, str, float]] = {}
    for r in records:
        val = (r.get("validation") or {}).get("accuracy")
        if r["dataset"] != dataset or val is None:
            continue
        if not (r["method"] == "llmembed" or r["method"].startswith("abl-")):
            continue
        if val > best.get(r["seed"], (-1.0, "", 0.0))[0]:
            best[r["seed"]] = (val, r["method"], r["metrics"]["accuracy"])
    return [(m, acc) for _, m, acc in (best[s] for s in sorted(best))]


VARIANTS = {
    "mpnet384": ("MLP head, MPNet 384 tokens", mlp_mpnet384),
    "linear": ("linear (LR) on concatenated features", linear_concat),
}
AUTO = "auto: linear if its val acc beats ours' MLP"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="r8,r52")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=", ".join(VARIANTS))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--results-dir", type=Path, default=Path("results"))
    ap.add_argument("--records-only", action="store_true", help="only the record-based choice")
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args()
    records = load_records(args.results_dir)
    for name in args.datasets.split(","):
        chosen = chosen_on_validation(records, name)
        if chosen:
            mean = 100 * np.mean([acc for _, acc in chosen])
            print(f"{name}: best of ours + ablations on validation: test {mean:.2f} ({chosen})")
    if args.records_only:
        return
    torch.set_num_threads(1)
    recipe = load_recipe("cpu-fusion")
    variants = [VARIANTS[v] for v in args.variants.split(",")]
    ours = {(r["dataset"], r["seed"]): r for r in records if r["method"] == "llmembed"}
    rows = []
    for name in args.datasets.split(","):
        task = load_task(name, args.data_dir)
        store = FeatureStore(task, default_cache_dir() / "reproduce", progress=False)
        for variant, run in variants:
            for seed in range(args.seeds):
                tr, te, _ = task.split(seed)
                acc, val = run(store, task, recipe, tr, te, seed)
                row = {"dataset": name, "variant": variant, "seed": seed}
                rows.append(row | {"test_accuracy": acc, "val_accuracy": val})
                print(
                    f"{name:6s} {variant:38s} seed {seed}: test {acc:.4f} val {val:.4f}", flush=True
                )
                if run is linear_concat:
                    mlp = ours[(name, seed)]  # its validation accuracy is the best epoch's
                    linear = val > mlp["validation"]["accuracy"]
                    pick = "linear" if linear else "ours (MLP)"
                    auto_acc = acc if linear else mlp["metrics"]["accuracy"]
                    rows.append(row | {"variant": AUTO, "picks": pick, "test_accuracy": auto_acc})
                    print(
                        f"{name:6s} {AUTO:38s} seed {seed}: picks {pick}, test {auto_acc:.4f}",
                        flush=True,
                    )
        store.release()
    print("\nmean test accuracy:")
    for name in args.datasets.split(","):
        for variant in sorted({r["variant"] for r in rows}):
            accs = [
                r["test_accuracy"] for r in rows if (r["dataset"], r["variant"]) == (name, variant)
            ]
            mean, std = 100 * np.mean(accs), 100 * np.std(accs, ddof=1)
            print(f"  {name:6s} {variant:44s} {mean:.2f} ± {std:.2f}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
