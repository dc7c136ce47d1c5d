"""Cost of one embed call with an empty cache vs a cache holding N texts, side by side.

    OMP_NUM_THREADS=1 python benchmarks/scripts/cache_lookup.py [--n 200000] [--model minilm-l6]

Measures, for the same backbone in one process: one new text (a forward pass + a chunk write)
and one cached text (a lookup), each against an empty cache and against a cache of ``--n``
texts, alternating the two caches call by call (a fresh ``EmbeddingCache`` per call, as
``LLMEmbedClassifier.predict`` makes); milliseconds (median, p90) and RSS growth (VmRSS after
minus before each call; the max over the calls, and the whole series). Then the chunk files
written by ``--calls`` one-text calls of new texts and of one cached text, and the time of the
first open of the N-text folder without an index (the index built from the chunks' keys).

The N cached texts are synthetic: random float32 vectors of the backbone's shape under keys
``text_key(f"synthetic cached text {i}")``, written with ``EmbeddingCache.add`` (the cache's own
chunk writer and index), so building a 200k-text cache takes seconds instead of 200k forward
passes. Default backbone: the tiny random Llama of ``llmembed.testing`` (offline); ``--model``
takes a zoo name, model folder or hub id. Writes JSON to ``--output`` (default
benchmarks/results/cache_lookup.json in this repository).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from llmembed.backbones import Backbone, BackboneSpec
from llmembed.cache import EmbeddingCache, text_key
from llmembed.testing import WORDS, make_tiny_llama

REPO = Path(__file__).resolve().parents[2]


def rss_bytes() -> int:
    """Current resident set size of this process (psutil, else /proc/self/status VmRSS)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak: an upper bound


def sentence(i: int, tag: str) -> str:
    """A text of known words (the tiny model's tokenizer is word-level), unique per (i, tag)."""
    words = list(WORDS)
    body = " ".join(words[(i * 7 + j) % len(words)] for j in range(8 + i % 12))
    return f"{body} {tag} {i}"


def chunk_count(root: Path) -> int:
    """Chunk files under a cache root."""
    return sum(1 for _ in root.glob("*/chunk-*.safetensors"))


def build_cache(root: Path, bb: Backbone, n: int, shape: tuple[int, int], step: int) -> float:
    """Write n synthetic texts through EmbeddingCache.add; returns seconds."""
    cache = EmbeddingCache(root)
    fp = bb.fingerprint()
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for start in range(0, n, step):
        stop = min(n, start + step)
        keys = [text_key(f"synthetic cached text {i}") for i in range(start, stop)]
        vectors = rng.standard_normal((stop - start, *shape), dtype=np.float32)
        cache.add(fp, keys, vectors, meta=bb.describe())
    return time.perf_counter() - t


def embed_one(root: Path, bb: Backbone, text: str) -> None:
    """One predict-like call: a fresh cache object, one text."""
    EmbeddingCache(root).embed(bb, [text], progress=False)


def timed(call: Callable[..., Any], *args: Any) -> tuple[float, int]:
    """(milliseconds, RSS growth in bytes) of ``call(*args)``."""
    before = rss_bytes()
    t = time.perf_counter()
    call(*args)
    ms = (time.perf_counter() - t) * 1e3
    return ms, rss_bytes() - before


def summary(samples: list[tuple[float, int]], rss_start: int, rss_end: int) -> dict[str, float]:
    """Median / p90 ms and RSS growth (MB) of a series of calls."""
    ms = sorted(s[0] for s in samples)
    return {
        "ms_median": statistics.median(ms),
        "ms_p90": ms[min(len(ms) - 1, int(0.9 * len(ms)))],
        "rss_growth_max_mb": max(s[1] for s in samples) / 1e6,
        "rss_growth_series_mb": (rss_end - rss_start) / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="texts in the big cache")
    ap.add_argument("--model", default=None, help="zoo name / folder / hub id (default: tiny)")
    ap.add_argument("--repeats", type=int, default=30, help="timed calls per cell")
    ap.add_argument("--calls", type=int, default=600, help="one-text calls for the file count")
    ap.add_argument("--step", type=int, default=16_384, help="rows per add() while building")
    ap.add_argument(
        "--output", type=Path, default=REPO / "benchmarks" / "results" / "cache_lookup.json"
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cache-lookup-"))
    model = args.model or str(make_tiny_llama(tmp / "tiny-llama"))
    bb = Backbone(BackboneSpec(model), "cpu").load()
    probe = bb.embed(["warm up the model"], progress=False)
    shape = (int(probe.shape[1]), int(probe.shape[2]))
    roots = {"empty": tmp / "empty", "big": tmp / "big"}
    build_s = build_cache(roots["big"], bb, args.n, shape, args.step)
    big_folder = roots["big"] / bb.fingerprint()
    for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (big_folder / name).unlink(missing_ok=True)  # as an old cache folder: no index yet
    t = time.perf_counter()
    [entry] = EmbeddingCache(roots["big"]).entries()
    index_build_s = time.perf_counter() - t
    assert entry.n_texts == args.n, entry

    cached_text = {label: sentence(0, f"cached-{label}") for label in roots}
    for label, root in roots.items():  # warm-up: imports, first chunk verification
        EmbeddingCache(root).embed(bb, [cached_text[label]], progress=False)
        EmbeddingCache(root).embed(bb, [sentence(1, f"warm-{label}")], progress=False)

    cells: dict[str, list[tuple[float, int]]] = {}
    rss_start = rss_bytes()
    for r in range(args.repeats):
        for label, root in roots.items():  # alternate: both caches see the same machine state
            text = sentence(r, f"new-{label}")
            new = cells.setdefault(f"new text, {label} cache", [])
            new.append(timed(embed_one, root, bb, text))
            hit = cells.setdefault(f"cached text, {label} cache", [])
            hit.append(timed(embed_one, root, bb, cached_text[label]))
    rss_end = rss_bytes()
    results = {name: summary(s, rss_start, rss_end) for name, s in cells.items()}

    files: dict[str, int] = {}
    for kind in ("new", "cached"):
        root = tmp / f"files-{kind}"
        cache = EmbeddingCache(root)
        cache.embed(bb, ["seed text"], progress=False)
        before = chunk_count(root)
        t = time.perf_counter()
        for i in range(args.calls):
            text = sentence(i, "files") if kind == "new" else "seed text"
            EmbeddingCache(root).embed(bb, [text], progress=False)
        files[f"chunk files on disk after {args.calls} one-text calls ({kind} texts)"] = (
            chunk_count(root)
        )
        files[f"net chunk files added by them ({kind} texts)"] = max(0, chunk_count(root) - before)
        files[f"seconds for the {args.calls} calls ({kind} texts)"] = round(
            time.perf_counter() - t, 2
        )

    ratio_new = results["new text, big cache"]["ms_median"] / max(
        results["new text, empty cache"]["ms_median"], 1e-9
    )
    ratio_cached = results["cached text, big cache"]["ms_median"] / max(
        results["cached text, empty cache"]["ms_median"], 1e-9
    )
    print(f"backbone {args.model or 'tiny random llama'}, vectors {shape}, N = {args.n:,}")
    print(
        f"built the N-text cache in {build_s:.1f} s; first open without index {index_build_s:.2f} s"
    )
    print(f"{'call':32} {'ms median':>10} {'ms p90':>8} {'RSS max MB':>11} {'RSS series MB':>14}")
    for name, row in results.items():
        print(
            f"{name:32} {row['ms_median']:10.2f} {row['ms_p90']:8.2f} "
            f"{row['rss_growth_max_mb']:11.2f} {row['rss_growth_series_mb']:14.2f}"
        )
    print(f"big / empty, new text: {ratio_new:.2f}x; cached text: {ratio_cached:.2f}x")
    for name, value in files.items():
        print(f"{name}: {value}")

    record = {
        "script": "benchmarks/scripts/cache_lookup.py",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "backbone": args.model or "tiny random llama (llmembed.testing)",
        "vector_shape": list(shape),
        "n_cached": args.n,
        "build_seconds": build_s,
        "first_open_without_index_seconds": index_build_s,
        "calls": results,
        "ratio_big_over_empty": {"new_text": ratio_new, "cached_text": ratio_cached},
        "files": files,
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
