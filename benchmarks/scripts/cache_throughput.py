"""Extraction texts/s of a tiny random Llama with and without the embedding cache.

    OMP_NUM_THREADS=1 python benchmarks/scripts/cache_throughput.py [--n 5000]

Cold cache = every text computed and written; warm cache = the same texts again (zero forward
passes); no cache = Backbone.embed alone. Builds its model offline (llmembed.testing).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from llmembed.backbones import Backbone, BackboneSpec
from llmembed.cache import EmbeddingCache
from llmembed.testing import WORDS, make_tiny_llama


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    n = ap.parse_args().n
    tmp = Path(tempfile.mkdtemp())
    bb = Backbone(BackboneSpec(str(make_tiny_llama(tmp / "m")), layers="1,2,-1"), "cpu").load()
    words = list(WORDS)
    texts = [
        " ".join(words[(i * 7 + j) % len(words)] for j in range(5 + i % 20)) + f" {i}"
        for i in range(n)
    ]
    cache = EmbeddingCache(tmp / "cache")
    for label in ("cold cache", "warm cache"):
        t = time.perf_counter()
        cache.embed(bb, texts, progress=False)
        dt = time.perf_counter() - t
        print(
            f"{label}: {n / dt:,.0f} texts/s (hits {cache.last_hits}, misses {cache.last_misses})"
        )
    t = time.perf_counter()
    bb.embed(texts, progress=False)
    print(f"no cache: {n / (time.perf_counter() - t):,.0f} texts/s")


if __name__ == "__main__":
    main()
