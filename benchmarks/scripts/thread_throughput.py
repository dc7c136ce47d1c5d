"""Texts/s of 1 thread vs 2 / 4 / 8 threads calling Backbone.embed on ONE shared Backbone.

    OMP_NUM_THREADS=1 python benchmarks/scripts/thread_throughput.py
    python benchmarks/scripts/thread_throughput.py --model minilm-l6 --torch-threads 1 --n 2000

Every thread embeds its own texts (varied lengths) in calls of ``--per-call`` texts; each
configuration is timed ``--repeats`` times (median kept) after one warm-up call per thread. The
results of every threaded run are checked to be exactly (``np.array_equal``) the sequential
ones. Prints a table and writes JSON to ``--output`` (default: this repository's
``benchmarks/results/thread_throughput.json``). The default model is the tiny random Llama of
``llmembed.testing`` (offline); ``--model`` takes any zoo name, folder or hub id.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmembed.backbones import Backbone, BackboneSpec
from llmembed.testing import WORDS, make_tiny_llama

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "thread_throughput.json"


def make_texts(n: int, seed: int, min_words: int, max_words: int) -> list[str]:
    """``n`` texts of ``min_words``..``max_words`` words drawn from the tiny vocabulary.

    Takes: count, seed, word range. Returns: the texts (different for every seed).
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_words, max_words + 1, size=n)
    return [" ".join(rng.choice(WORDS, size=int(k))) for k in lengths]


def calls_of(texts: list[str], per_call: int) -> list[list[str]]:
    """``texts`` cut into consecutive calls of ``per_call`` texts."""
    return [texts[i : i + per_call] for i in range(0, len(texts), per_call)]


def run(bb: Backbone, work: list[list[list[str]]]) -> tuple[float, list[list[np.ndarray]]]:
    """Each of ``len(work)`` threads makes its calls on ``bb``, all starting together.

    Takes: the shared backbone and, per thread, its list of calls. Returns: wall seconds from
    the common start to the last thread's end, and per thread the arrays of its calls.
    """
    n = len(work)
    barrier = threading.Barrier(n + 1)

    def worker(calls: list[list[str]]) -> list[np.ndarray]:
        barrier.wait()
        return [bb.embed(c, progress=False) for c in calls]

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(worker, calls) for calls in work]
        barrier.wait()
        start = time.perf_counter()
        results = [f.result() for f in futures]
        elapsed = time.perf_counter() - start
    return elapsed, results


def main() -> None:
    """Parse the arguments, time every thread count, print the table, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="zoo name, folder or hub id (default: tiny)")
    ap.add_argument("--layers", default="1,2,-1", help="layer spec (default: 1,2,-1)")
    ap.add_argument("--pooling", default="mean", help="pooling (default: mean)")
    ap.add_argument("--dtype", default="float32", help="float32 | bfloat16 | auto")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--threads", default="1,2,4,8", help="thread counts (default: 1,2,4,8)")
    ap.add_argument("--n", type=int, default=2000, help="texts in all, split over the threads")
    ap.add_argument("--per-call", type=int, default=16, help="texts per embed call")
    ap.add_argument("--min-words", type=int, default=3)
    ap.add_argument("--max-words", type=int, default=60)
    ap.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args()

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    tmp = None
    model = args.model
    if model is None:
        tmp = tempfile.TemporaryDirectory()
        model = str(make_tiny_llama(Path(tmp.name) / "tiny-llama"))
    spec = BackboneSpec(
        model,
        layers=args.layers,
        pooling=args.pooling,
        dtype=args.dtype,
        max_length=args.max_length,
    )
    bb = Backbone(spec, device=args.device).load()
    counts = [int(t) for t in args.threads.split(",")]
    # The same texts for every thread count: text i belongs to slot i % max(counts) and each
    # thread count deals the slots round robin, so only the way they are shared out changes.
    slots = max(counts)
    per_slot = max(1, args.n // slots)
    slot_texts = [
        make_texts(per_slot, seed, args.min_words, args.max_words) for seed in range(slots)
    ]
    sequential = [
        [bb.embed(c, progress=False) for c in calls_of(t, args.per_call)] for t in slot_texts
    ]
    n_texts = per_slot * slots

    rows: list[dict[str, Any]] = []
    for threads in counts:
        mine = [[s for s in range(slots) if s % threads == k] for k in range(threads)]
        work = [
            [c for s in group for c in calls_of(slot_texts[s], args.per_call)] for group in mine
        ]
        want = [[a for s in group for a in sequential[s]] for group in mine]
        run(bb, [calls[:1] for calls in work])  # warm-up
        times, equal = [], True
        for _ in range(args.repeats):
            elapsed, got = run(bb, work)
            times.append(elapsed)
            equal = equal and all(
                np.array_equal(g, w)
                for gs, ws in zip(got, want, strict=True)
                for g, w in zip(gs, ws, strict=True)
            )
        seconds = statistics.median(times)
        rows.append(
            {
                "threads": threads,
                "texts": n_texts,
                "seconds": seconds,
                "texts_per_s": n_texts / seconds,
                "equal_to_sequential": equal,
            }
        )
    base = rows[0]["texts_per_s"]
    for row in rows:
        row["speedup_vs_first"] = row["texts_per_s"] / base

    print(
        f"model {spec.model}  layers {bb.layer_indices}  dtype {bb.dtype}  "
        f"torch threads {torch.get_num_threads()}  texts {n_texts}"
    )
    print(f"{'threads':>7} {'texts/s':>10} {'speedup':>8} {'equal':>6}")
    for row in rows:
        print(
            f"{row['threads']:>7} {row['texts_per_s']:>10.1f} {row['speedup_vs_first']:>7.2f}x "
            f"{'yes' if row['equal_to_sequential'] else 'NO':>6}"
        )
    record = {
        "script": "benchmarks/scripts/thread_throughput.py",
        "model": spec.model if args.model else "llmembed.testing.make_tiny_llama",
        "spec": spec.to_dict() | ({} if args.model else {"model": "tiny-llama"}),
        "layers": bb.layer_indices,
        "dtype": str(bb.dtype).replace("torch.", ""),
        "device": str(bb.device),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "per_call": args.per_call,
        "words": [args.min_words, args.max_words],
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}")
    if tmp is not None:
        tmp.cleanup()
    if not all(row["equal_to_sequential"] for row in rows):
        raise SystemExit("threaded results differ from the sequential ones")


if __name__ == "__main__":
    main()
