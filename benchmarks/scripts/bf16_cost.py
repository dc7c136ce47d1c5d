"""What a bf16 backbone costs on this CPU: bf16 compute against its bf16 weights run in fp32.

    LLMEMBED_DATA=../shared/datasets python benchmarks/scripts/bf16_cost.py mpnet-base --n 64

A saved model pins the dtype its features were made in, so one trained where bf16 is native (a
GPU, an avx512_bf16 CPU) asks for bf16 wherever it is loaded. On a CPU without native bf16
matmul, ``llmembed.backbones.compute_dtype`` runs those bf16-rounded weights in fp32 instead.
This script times both ways on the first ``--n`` SST-2 test sentences, one after the other in
one process (the bf16 way by telling the library the CPU has bf16), and prints the seconds and
the cosine between the two ways' embeddings as JSON. On a CPU with native bf16 both ways are
plain bf16 and fp32 runs.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

import llmembed.backbones as backbones
from llmembed.backbones import Backbone, BackboneSpec
from llmembed.datasets import load_benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="zoo name, hub id or folder")
    ap.add_argument("--n", type=int, default=64, help="SST-2 test sentences")
    args = ap.parse_args()
    texts = list(load_benchmark("sst2").test_texts[: args.n])
    has_bf16 = backbones.cpu_has_bf16
    out, vectors = {"model": args.model, "texts": len(texts), "cpu_has_bf16": has_bf16()}, []
    for way, native in (("fp32_compute_seconds", False), ("bf16_compute_seconds", True)):
        backbones.cpu_has_bf16 = (lambda: True) if native else (lambda: False)
        try:
            bb = Backbone(BackboneSpec(args.model, dtype="bfloat16", max_length=128), "cpu")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the fp32-compute warning: expected here
                bb.load()
        finally:
            backbones.cpu_has_bf16 = has_bf16
        bb.embed(texts[:8], progress=False)  # warm-up
        t = time.perf_counter()
        vectors.append(bb.embed(texts, progress=False).reshape(len(texts), -1))
        out[way] = round(time.perf_counter() - t, 3)
    a, b = vectors
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    out["cosine_min"], out["cosine_mean"] = float(cos.min()), float(cos.mean())
    out["slowdown"] = round(out["bf16_compute_seconds"] / out["fp32_compute_seconds"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
