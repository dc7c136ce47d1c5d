"""Does averaging k fold heads lower the seed spread? (a cheap ensemble, issue #14.4)

    LLMEMBED_DATA=../shared/datasets python benchmarks/scripts/fold_ensemble.py \
        --datasets mr,r8 --seeds 0,1,2 -o benchmarks/results/fold_ensemble.json

Per dataset and seed (``train.seed``: the validation split that picks C and the lexical
channel's folds), two models of the same recipe through the public API, scored on the test split:

* single: one fit on the whole training split (what ``fit`` does);
* fold average: ``ensemble=True``, k fold models, each fitted on the training split minus one
  stratified fold (folds shuffled by the seed), their ``predict_proba`` averaged on test
  (:mod:`llmembed.ensemble`; tests/test_ensemble.py checks that this equals k plain fits on
  those subsets, averaged).

Features come from the reproduce cache of the dataset's group (warm). Prints mean ± std over the
seeds of both, and writes every figure as JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from llmembed import LLMEmbedClassifier
from llmembed.datasets import load_benchmark
from llmembed_bench.jsonio import seed_summary, write_json
from llmembed_bench.tasks import reproduce_cache


def model(recipe: str, seed: int, cache, folds: int = 0) -> LLMEmbedClassifier:
    """The recipe with ``train.seed`` set, reading the given cache, quiet; with ``folds``, an
    ensemble of that many fold models."""
    return LLMEmbedClassifier(
        recipe=recipe,
        train={"seed": seed},
        cache_dir=cache,
        verbose=False,
        ensemble=folds > 0,
        cv=max(folds, 2),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="mr,r8")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--recipe", default="cpu")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args()
    out: dict[str, dict] = {}
    for name in args.datasets.split(","):
        ds = load_benchmark(name)
        cache = reproduce_cache(name)
        texts, labels = list(ds.train_texts), np.asarray(ds.train_labels)
        test, test_labels = list(ds.test_texts), np.asarray(ds.test_labels)
        rows = []
        for seed in map(int, args.seeds.split(",")):
            single = model(args.recipe, seed, cache).fit(texts, labels).score(test, test_labels)
            ensemble = model(args.recipe, seed, cache, args.folds).fit(texts, labels)
            averaged = ensemble.score(test, test_labels)
            rows.append({"seed": seed, "single": single, "fold_average": averaged})
            print(
                f"{name} seed {seed}: single {100 * single:.2f}, fold average {100 * averaged:.2f}"
            )
        summary = seed_summary(rows, ("single", "fold_average"), digits=None)
        out[name] = {"recipe": args.recipe, "folds": args.folds, "seeds": rows, **summary}
        print(
            f"{name}: single {100 * summary['single']['mean']:.2f} ± "
            f"{100 * summary['single']['std']:.2f}, fold average "
            f"{100 * summary['fold_average']['mean']:.2f} ± "
            f"{100 * summary['fold_average']['std']:.2f}",
            flush=True,
        )
        if args.output:
            write_json(Path(args.output), out)


if __name__ == "__main__":
    main()
