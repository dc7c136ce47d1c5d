"""The thread policy on a busy machine: default threads vs every fixed count, side by side.

    python benchmarks/scripts/thread_policy.py --model minilm-l6 --n 1500

Starts ``--competitors`` CPU-bound processes (each a 1-thread torch matmul loop, like another
user's job), waits until they run, then times, in one process and in alternating order,
extraction (``Backbone.embed`` of ``--n`` SST-2-like texts, cache off) and a head training
(the linear head on random features) with torch set to 1, 2, ... usable cores threads and with
``llmembed.hardware.default_threads()`` (what the library picks when the user says nothing).
Then the same without competitors. Reports seconds and the ratio default / best fixed count.
Writes JSON to ``--output`` (default: benchmarks/results/thread_policy.json).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmembed.backbones import Backbone, BackboneSpec
from llmembed.hardware import busy_cores, default_threads, torch_threads, usable_cores
from llmembed.heads import HeadConfig
from llmembed.testing import WORDS
from llmembed.training import TrainConfig, train_head

REPO = Path(__file__).resolve().parents[2]


def _spin(stop: Any) -> None:
    torch.set_num_threads(1)
    a = torch.randn(512, 512)
    while not stop.is_set():
        a = torch.tanh(a @ a)


def _texts(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 30)))) for _ in range(n)]


def _time(fn: Any, threads: int, repeats: int) -> float:
    out = []
    with torch_threads(threads):
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(out)


def measure(bb: Backbone, texts: list[str], repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(20000, 1, 768)).astype(np.float32)]
    y = rng.integers(0, 2, 20000)
    jobs = {
        "extract": lambda: bb.embed(texts, progress=False),
        "linear head": lambda: train_head(
            feats, y, 2, HeadConfig(fusion="linear"), TrainConfig(C=0.1), progress=False
        ),
    }
    picked = default_threads()
    counts = list(range(1, usable_cores() + 1))
    rows: dict[str, Any] = {"default_threads": picked, "busy_cores": round(busy_cores(0.5), 2)}
    for name, fn in jobs.items():
        fn()  # warm-up
        secs = {str(t): _time(fn, t, repeats) for t in counts}
        secs["default"] = _time(fn, picked, repeats)
        best = min(secs[str(t)] for t in counts)
        rows[name] = {"seconds": secs, "default_over_best": round(secs["default"] / best, 3)}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--competitors", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("-o", "--output", default=str(REPO / "benchmarks/results/thread_policy.json"))
    args = ap.parse_args()
    bb = Backbone(BackboneSpec(args.model, max_length=128), device="cpu").load()
    texts = _texts(args.n)
    result: dict[str, Any] = {"model": args.model, "texts": args.n, "cores": usable_cores()}
    stop = mp.Event()
    procs = [mp.Process(target=_spin, args=(stop,)) for _ in range(args.competitors)]
    for p in procs:
        p.start()
    time.sleep(2.0)
    try:
        result["busy"] = measure(bb, texts, args.repeats)
    finally:
        stop.set()
        for p in procs:
            p.join()
    time.sleep(2.0)
    result["quiet"] = measure(bb, texts, args.repeats)
    print(json.dumps(result, indent=2))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
