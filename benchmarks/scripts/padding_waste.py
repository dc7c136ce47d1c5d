"""Padded vs real tokens when the cache computes a dataset's texts: input-order chunks (the old
cache) against chunks cut after one global longest-first sort (the cache now).

    LLMEMBED_DATA=../shared/datasets python benchmarks/scripts/padding_waste.py \
        [--dataset sst2] [--model smollm2-135m] [--chunk 1024]

Only tokenizes (no forward pass): the batches are the ones `Backbone.plan_batches` gives, the
plan `Backbone.embed` runs for each chunk. Prints one line per ordering.
"""

from __future__ import annotations

import argparse

import numpy as np

from llmembed import Backbone, load_recipe
from llmembed.datasets import load_benchmark


def padded_tokens(bb: Backbone, lengths: np.ndarray, order: np.ndarray, chunk: int) -> int:
    """Tokens the forward passes see (pads included) when `order` is cut into chunks."""
    total = 0
    for start in range(0, len(order), chunk):
        part = lengths[order[start : start + chunk]]
        total += sum(len(b) * int(part[b].max()) for b in bb.plan_batches(list(part)))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--model", default="smollm2-135m", help="a backbone of the cpu recipe")
    ap.add_argument("--chunk", type=int, default=1024, help="the cache's chunk_size")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    spec = next(b for b in load_recipe("cpu-fusion").backbones if b.model == args.model)
    texts = list(load_benchmark(args.dataset, args.data_dir).train_texts)
    bb = Backbone(spec, device="cpu")
    lengths = np.array([len(ids) for ids in bb.tokenize(texts)])
    real = int(lengths.sum())
    print(
        f"{args.dataset} train, {len(texts):,} texts, {args.model} tokens, chunks of {args.chunk}"
    )
    for name, order in (
        ("input order", np.arange(len(texts))),
        ("global longest-first sort", np.argsort(-lengths, kind="stable")),
    ):
        padded = padded_tokens(bb, lengths, order, args.chunk)
        waste = 100 * (padded - real) / padded
        print(f"{name:26s} real {real:,}  padded {padded:,}  waste {waste:.2f}%")


if __name__ == "__main__":
    main()
