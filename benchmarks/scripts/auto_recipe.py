"""recipe="auto" on the benchmarks: what cross-validation on train chooses, and what it scores.

    LLMEMBED_DATA=../shared/datasets python benchmarks/scripts/auto_recipe.py \
        --datasets sst2,mr,r8,r52 -o benchmarks/results/auto_recipe.json

Per dataset (its training split, features from the reproduce cache of its group: run
``llmembed-bench reproduce`` first), fits ``LLMEmbedClassifier(recipe="auto")`` through the
public API and records the candidates' 5-fold CV accuracies, the recipe chosen, the fit time
and its test accuracy. For the report only (never for the choice), each candidate is also
fitted alone on the whole training split and scored on test, so the table shows whether the
cross-validated ordering holds on the test split (``--no-alone`` skips them). AG News, which
has no training split here, runs on each of the 5 folds of its test split (its CV fallback).

``--recipes a,b``: those candidates instead of "auto"'s (:data:`llmembed.selection.AUTO_RECIPES`).
``--ensemble``: ``LLMEmbedClassifier(recipe="auto", ensemble=True)``, whose model is the chosen
candidate's 5 cross-validation fold models averaged (no refit); its fold scores are recorded.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from llmembed import LLMEmbedClassifier
from llmembed.datasets import load_benchmark
from llmembed.selection import AUTO_RECIPES
from llmembed_bench.jsonio import write_json
from llmembed_bench.tasks import reproduce_cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="sst2,mr,r8,r52")
    ap.add_argument("--cv", type=int, default=5)
    ap.add_argument("--recipes", default="auto", help='"auto", or the candidates, comma-separated')
    ap.add_argument("--ensemble", action="store_true", help="average the fold models")
    ap.add_argument("--no-alone", dest="alone", action="store_false")
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args()
    out = {}
    for name in args.datasets.split(","):
        ds = load_benchmark(name)
        cache = reproduce_cache(name)
        rows = [
            run(list(tr), list(tr_y), list(te), list(te_y), cache, args)
            for tr, tr_y, te, te_y in ds.splits()
        ]
        if len(rows) == 1:
            out[name] = rows[0]
        else:  # the CV fallback (AG News): one row per fold of its test split
            acc = [r["test_accuracy"] for r in rows]
            out[name] = {
                "protocol": "5-fold CV on the test split",
                "test_accuracy": round(float(np.mean(acc)), 4),
                "test_std": round(float(np.std(acc)), 4),
                "splits": rows,
            }
            print(f"{name}: test {100 * np.mean(acc):.2f} ± {100 * np.std(acc):.2f}", flush=True)
        if args.output:
            write_json(Path(args.output), out)


def run(train, labels, test, test_labels, cache, args) -> dict:
    """Fit "auto" on one split, score it on test, and each candidate alone (``--alone``)."""
    t0 = time.perf_counter()
    given = AUTO_RECIPES if args.recipes == "auto" else tuple(args.recipes.split(","))
    clf = LLMEmbedClassifier(
        recipe=list(given), cv=args.cv, ensemble=args.ensemble, cache_dir=cache, verbose=False
    )
    clf.fit(train, labels)
    fit_s = time.perf_counter() - t0
    row = {
        "chosen": clf.selection_.chosen,
        "ensemble": args.ensemble,
        "fit_seconds": round(fit_s, 1),
        "test_accuracy": round(clf.score(test, test_labels), 4),
        "candidates": clf.selection_.candidates,
        "alone_test_accuracy": {},
    }
    for recipe in given if args.alone else ():  # reported, not used for the choice
        alone = LLMEmbedClassifier(recipe=recipe, cache_dir=cache, verbose=False)
        row["alone_test_accuracy"][recipe] = round(
            alone.fit(train, labels).score(test, test_labels), 4
        )
    cv = ", ".join(f"{c['recipe']} {100 * c['mean']:.2f}" for c in row["candidates"])
    tests = ", ".join(f"{k} {100 * v:.2f}" for k, v in row["alone_test_accuracy"].items())
    print(
        f"chose {row['chosen']} (CV {cv}); test {100 * row['test_accuracy']:.2f} "
        f"in {fit_s:.0f} s; each alone on test: {tests}",
        flush=True,
    )
    return row


if __name__ == "__main__":
    main()
