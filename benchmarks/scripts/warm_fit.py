"""Warm fit of a recipe on a benchmark's full training split: embeddings already cached.

    LLMEMBED_DATA=../shared/datasets python benchmarks/scripts/warm_fit.py --dataset sst2

Fits ``LLMEmbedClassifier(recipe)`` on the training split with the reproduce cache of the
dataset's group (run ``llmembed-bench reproduce`` first, or a first fit, to fill it), scores the
test split, and prints the wall time of fit and its stages (``timings_``) as JSON. With
``--repeat N`` it runs N fits, each in a fresh process (what ``llmembed train`` pays: imports,
model fingerprint, worker processes), and adds their median. ``--ensemble``: the recipe with
``ensemble=True`` (5 fold models averaged); ``--no-groups``: ``fit(..., groups=None)`` (plain
splits; by default fit groups phrases itself, ``n_groups_``). ``score_seconds``: scoring the
test split (cached features, so mostly the heads and the lexical channel).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from llmembed import LLMEmbedClassifier
from llmembed.datasets import load_benchmark
from llmembed_bench.jsonio import write_json
from llmembed_bench.tasks import reproduce_cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--recipe", default="cpu")
    ap.add_argument("--group", default=None, help="cache group (default: dataset; r8/r52: reuters)")
    ap.add_argument("--repeat", type=int, default=1, help="fits, each in a fresh process")
    ap.add_argument("--ensemble", action="store_true", help="5 fold models averaged")
    ap.add_argument("--no-groups", action="store_true", help="fit(..., groups=None): plain splits")
    ap.add_argument("-o", "--output", default=None, help="also write the JSON here")
    args = ap.parse_args()
    if args.repeat > 1:
        argv = [sys.executable, __file__, "--dataset", args.dataset, "--recipe", args.recipe]
        argv += ["--group", args.group] if args.group else []
        argv += ["--ensemble"] if args.ensemble else []
        argv += ["--no-groups"] if args.no_groups else []
        runs = [
            json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)
            for _ in range(args.repeat)
        ]
        out = {
            **{k: runs[0][k] for k in ("dataset", "recipe", "ensemble", "groups", "train_texts")},
            "median_fit_seconds": statistics.median(r["fit_seconds"] for r in runs),
            "runs": [
                {k: r[k] for k in ("fit_seconds", "fit_stages", "score_seconds", "test_accuracy")}
                for r in runs
            ],
        }
        emit(out, args.output)
        return
    ds = load_benchmark(args.dataset)
    cache = reproduce_cache(args.group or args.dataset)
    clf = LLMEmbedClassifier(
        recipe=args.recipe, cache_dir=cache, verbose=False, ensemble=args.ensemble
    )
    t0 = time.perf_counter()
    kw = {"groups": None} if args.no_groups else {}  # else fit's default, "auto"
    clf.fit(list(ds.train_texts), list(ds.train_labels), **kw)
    fit = time.perf_counter() - t0
    stages = dict(clf.timings_)  # predict below refreshes the extraction entries
    t0 = time.perf_counter()
    acc = clf.score(list(ds.test_texts), list(ds.test_labels))
    score = time.perf_counter() - t0
    out = {
        "dataset": args.dataset,
        "recipe": args.recipe,
        "ensemble": args.ensemble,
        "groups": clf.n_groups_,
        "train_texts": len(ds.train_texts),
        "fit_seconds": round(fit, 2),
        "fit_stages": {k: round(v, 2) for k, v in stages.items()},
        "score_seconds": round(score, 2),
        "test_accuracy": round(acc, 4),
    }
    emit(out, args.output)


def emit(out: dict, path: str | None) -> None:
    """Print ``out`` as JSON, and write it to ``path`` when given."""
    print(json.dumps(out, indent=2))
    if path:
        write_json(Path(path), out)


if __name__ == "__main__":
    main()
