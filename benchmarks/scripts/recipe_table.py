"""Named recipes side by side on the benchmarks' test splits, several seeds (issue #14.6, #15.5).

    LLMEMBED_DATA=../shared/datasets python benchmarks/scripts/recipe_table.py \
        --recipes cpu-fast --datasets r8,r52,mr,sst2,agnews --seeds 0,1,2 \
        -o benchmarks/results/recipe_table.json

Per recipe, dataset and seed (``train.seed``: the head's validation split and the lexical
channel's folds): one ``LLMEmbedClassifier(recipe=...).fit(train)`` through the public API, scored
on the test split (accuracy and macro-F1; the seconds of the fits' stacked regressions,
lexical channel and head from ``timings_``, and the linear head's chosen C). AG News has no
training split here: each seed runs on the 5 stratified folds of its test split (train on
four, score the fifth) and counts their mean. ``--train`` / ``--head``: training / head
settings over the recipe's (JSON, e.g. another C grid, or ``{"balance": true}``).
``--stack-folds K``: the stacked recipes' out-of-fold scores on K folds at every training-set
size (``llmembed.stacking``: 5, or 3 from 20,000 rows on).
Features come from the reproduce cache of the dataset's group, extracted on first use. Prints
mean ± std over the seeds and writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import llmembed.stacking as stacking
from llmembed import LLMEmbedClassifier
from llmembed.datasets import load_benchmark
from llmembed_bench.jsonio import seed_summary, write_json
from llmembed_bench.tasks import reproduce_cache


def score(recipe: str, seed: int, cache, splits, settings: dict, head: dict) -> dict[str, float]:
    """Accuracy and macro-F1 of one seed, averaged over the dataset's splits, and the seconds
    of the fits' stacked regressions, lexical channel and head, summed over the splits."""
    rows, seconds, chosen = [], {"stack": 0.0, "lexical": 0.0, "train_head": 0.0}, []
    for train, train_y, test, test_y in splits:
        clf = LLMEmbedClassifier(
            recipe=recipe,
            train={**settings, "seed": seed},
            head=head or None,
            cache_dir=cache,
            verbose=False,
        )
        clf.fit(list(train), np.asarray(train_y))
        chosen.append(clf.history_[-1].get("C"))  # the linear head's C (None for an MLP)
        for stage in seconds:
            seconds[stage] += clf.timings_.get(stage, 0.0)
        metrics = clf.evaluate(list(test), np.asarray(test_y))
        rows.append((metrics["accuracy"], metrics["macro_f1"]))
    acc, f1 = np.mean(rows, axis=0)
    return {
        "seed": seed,
        "accuracy": round(float(acc), 4),
        "macro_f1": round(float(f1), 4),
        **{f"{stage}_seconds": round(t, 2) for stage, t in seconds.items()},
        "C": chosen,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default="cpu-fast")
    ap.add_argument("--datasets", default="r8,r52,mr,sst2,agnews")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--train", default="{}", help='training settings, JSON: {"C": [0.1, 1]}')
    ap.add_argument("--head", default="{}", help='head settings, JSON: {"balance": true}')
    ap.add_argument("--stack-folds", type=int, default=None, help="stacked recipes: K folds")
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args()
    if args.stack_folds:
        stacking.STACK_FOLDS = stacking.LARGE_FOLDS = args.stack_folds
    settings, head = json.loads(args.train), json.loads(args.head)
    seeds = [int(s) for s in args.seeds.split(",")]
    out: dict[str, dict] = {}
    for name in args.datasets.split(","):
        ds = load_benchmark(name)
        cache, splits = reproduce_cache(name), list(ds.splits())
        for recipe in args.recipes.split(","):
            rows = [score(recipe, s, cache, splits, settings, head) for s in seeds]
            summary = seed_summary(rows, ("accuracy", "macro_f1"))
            out.setdefault(name, {})[recipe] = {"splits": len(splits), "seeds": rows, **summary}
            print(
                f"{name} {recipe}: accuracy {100 * summary['accuracy']['mean']:.2f} ± "
                f"{100 * summary['accuracy']['std']:.2f}, macro-F1 "
                f"{100 * summary['macro_f1']['mean']:.2f}",
                flush=True,
            )
            if args.output:
                write_json(Path(args.output), out)


if __name__ == "__main__":
    main()
