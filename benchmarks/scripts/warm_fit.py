"""Warm fit of a recipe on a benchmark's full training split: embeddings already cached.

    LLMEMBED_DATA=../shared/datasets python benchmarks/scripts/warm_fit.py --dataset sst2

Fits ``LLMEmbedClassifier(recipe)`` on the training split with the reproduce cache of the
dataset's group (run ``llmembed-bench reproduce`` first, or a first fit, to fill it), scores the
test split, and prints the wall time of fit and its stages (``timings_``) as JSON.
"""

from __future__ import annotations

import argparse
import json
import time

from llmembed import LLMEmbedClassifier
from llmembed.cache import default_cache_dir
from llmembed.datasets import load_benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--recipe", default="cpu")
    ap.add_argument("--group", default=None, help="cache group (default: dataset; r8/r52: reuters)")
    args = ap.parse_args()
    ds = load_benchmark(args.dataset)
    group = args.group or ("reuters" if args.dataset in ("r8", "r52") else args.dataset)
    clf = LLMEmbedClassifier(
        recipe=args.recipe, cache_dir=default_cache_dir() / "reproduce" / group, verbose=False
    )
    t0 = time.perf_counter()
    clf.fit(list(ds.train_texts), list(ds.train_labels))
    fit = time.perf_counter() - t0
    stages = dict(clf.timings_)  # predict below refreshes the extraction entries
    acc = clf.score(list(ds.test_texts), list(ds.test_labels))
    out = {
        "dataset": args.dataset,
        "recipe": args.recipe,
        "train_texts": len(ds.train_texts),
        "fit_seconds": round(fit, 2),
        "fit_stages": {k: round(v, 2) for k, v in stages.items()},
        "test_accuracy": round(acc, 4),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
