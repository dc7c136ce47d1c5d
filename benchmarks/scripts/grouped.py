"""Grouped splits on SST-2: does keeping each sentence's phrases on one side help? (issue #14)

    LLMEMBED_DATA=../shared/datasets python benchmarks/scripts/grouped.py --seeds 0,1,2 \
        -o benchmarks/results/grouped_sst2.json

SST-2's training split holds 67,349 phrases of about 6,900 sentences, so random folds put
phrases of one sentence on both sides: the lexical channel's out-of-fold scores, the head's
validation split and cross-validation all see near-copies of what they score.
``fit(texts, labels, groups=phrase_groups(texts))`` keeps each group whole. Per seed
(``train.seed``) and mode, through the public API, from the reproduce cache (warm), scored on
the test split (the GLUE dev set):

* ``default``: ``fit(texts, labels)``, which groups the phrases itself (``groups="auto"``);
* ``plain``: ``fit(texts, labels, groups=None)``;
* ``grouped``: ``fit(texts, labels, groups=phrase_groups(texts))``;
* ``grouped-ensemble``: the same with ``ensemble=True`` (5 fold models averaged);
* ``auto-grouped-ensemble``: ``recipe="auto"``, grouped, ensemble (seed 0 only: 15 fits).

Prints each figure and the mean ± std per mode; writes them as JSON.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from llmembed import LLMEmbedClassifier
from llmembed.datasets import load_benchmark
from llmembed.splits import phrase_groups
from llmembed_bench.jsonio import write_json
from llmembed_bench.tasks import reproduce_cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="cpu")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--modes", default="plain,grouped,grouped-ensemble")
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args()
    ds = load_benchmark("sst2")
    cache = reproduce_cache("sst2")
    texts, labels = list(ds.train_texts), list(ds.train_labels)
    test, test_labels = list(ds.test_texts), list(ds.test_labels)
    t0 = time.perf_counter()
    groups = phrase_groups(texts)
    out: dict = {
        "recipe": args.recipe,
        "groups": int(groups.max()) + 1,
        "grouping_seconds": round(time.perf_counter() - t0, 1),
        "modes": {},
    }
    print(f"{out['groups']} groups of {len(texts)} phrases in {out['grouping_seconds']} s")
    for mode in args.modes.split(","):
        rows = []
        seeds = [0] if mode.startswith("auto") else list(map(int, args.seeds.split(",")))
        for seed in seeds:
            clf = LLMEmbedClassifier(
                recipe="auto" if mode.startswith("auto") else args.recipe,
                train={"seed": seed},
                ensemble=mode.endswith("ensemble"),
                cache_dir=cache,
                verbose=False,
            )
            t0 = time.perf_counter()
            if mode == "default":
                clf.fit(texts, labels)
            else:
                clf.fit(texts, labels, groups=None if mode == "plain" else groups)
            row = {
                "seed": seed,
                "test_accuracy": clf.score(test, test_labels),
                "fit_seconds": round(time.perf_counter() - t0, 1),
                "n_groups": clf.n_groups_,
                "timings": {k: round(v, 2) for k, v in clf.timings_.items()},
            }
            if clf.selection_ is not None:
                row["chosen"] = clf.selection_.chosen
                row["cv"] = {c["recipe"]: c["mean"] for c in clf.selection_.candidates}
            rows.append(row)
            print(f"{mode} seed {seed}: {row}", flush=True)
        acc = [r["test_accuracy"] for r in rows]
        out["modes"][mode] = {"mean": float(np.mean(acc)), "std": float(np.std(acc)), "runs": rows}
        print(f"{mode}: {100 * np.mean(acc):.2f} ± {100 * np.std(acc):.2f}", flush=True)
        if args.output:
            write_json(Path(args.output), out)


if __name__ == "__main__":
    main()
