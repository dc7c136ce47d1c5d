"""The Ray Data path (llmembed.distributed) measured on this machine: 1 vs 2 workers, memory while
streaming many texts, and its overhead against the local path.

    python benchmarks/scripts/ray_scale.py workers --model minilm-l6 --n 20000
    python benchmarks/scripts/ray_scale.py memory --n 100000,1000000
    python benchmarks/scripts/ray_scale.py overhead --model minilm-l6 --n 10000 --repeat 3
    python benchmarks/scripts/ray_scale.py startup --model minilm-l6

``workers``: SST-2 train sentences embedded by ``embed_files`` with 1 worker, then 2 (1 torch
thread each), into fresh folders, Ray started once before both (its start-up is not in either
time). ``memory``: ``--n`` short random texts in one CSV through a tiny random BERT (width 32),
the peak resident memory of the whole Ray session (this driver, raylet, workers: the process tree)
sampled every 0.2 s. ``overhead``: the same ``--n`` texts through ``Backbone.embed`` (1 thread,
model load included) and through ``embed_files`` with 1 worker (Ray start-up, actor start-up and
model load included); with ``--cluster``, a Ray head started before the timing (``ray start
--head``, as on a cluster that runs many jobs) instead of the one the job starts. ``startup``:
the fixed cost taken apart (``ray.init``, one actor made ready, ``ray.shutdown``). Results go
to ``--output`` (default benchmarks/results/ray_scale.json), one key per experiment.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from llmembed_bench.environment import process_tree_rss_mb

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "ray_scale.json"


class PeakRSS:
    """Samples the process tree's RSS in a thread; ``peak`` in MB."""

    def __init__(self, every: float = 0.2) -> None:
        self.every, self.peak, self._stop = every, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, process_tree_rss_mb(os.getpid()))
            self._stop.wait(self.every)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def write_csv(path: Path, texts: list[str]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        w.writerows([t] for t in texts)
    return path


def sst2_texts(n: int) -> list[str]:
    from llmembed.datasets import load_benchmark

    return list(load_benchmark("sst2").train_texts[:n])


def random_texts(n: int) -> list[str]:
    from llmembed.testing import WORDS

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 12, size=n)
    words = rng.choice(WORDS, size=int(lengths.sum()))
    out, start = [], 0
    for k in lengths:
        out.append(" ".join(words[start : start + k]))
        start += k
    return out


def workers(model: str, n: int, shard_rows: int, tmp: Path) -> dict[str, Any]:
    import ray

    from llmembed import BackboneSpec
    from llmembed.distributed import embed_files

    data = write_csv(tmp / "sst2.csv", sst2_texts(n))
    spec = BackboneSpec(model, layers="-1", pooling="mean", max_length=256)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = {}
    try:
        for k in (1, 2):
            s = embed_files([data], spec, tmp / f"w{k}", shard_rows=shard_rows, workers=k,
                            threads_per_worker=1, progress=False)  # fmt: skip
            rows[k] = {"seconds": round(s.seconds, 1), "texts_per_s": round(n / s.seconds, 1)}
            print(k, rows[k], flush=True)
    finally:
        ray.shutdown()
    ratio = round(rows[2]["texts_per_s"] / rows[1]["texts_per_s"], 2)
    return {"model": model, "texts": n, "shard_rows": shard_rows, "workers": rows,
            "ratio_2_over_1": ratio}  # fmt: skip


def memory(ns: list[int], tmp: Path) -> dict[str, Any]:
    from llmembed import BackboneSpec
    from llmembed.distributed import embed_files
    from llmembed.testing import make_tiny_bert

    bert = make_tiny_bert(tmp / "bert")
    spec = BackboneSpec(str(bert), layers="-1", pooling="mean", dtype="float32", max_length=32)
    out = {}
    for n in ns:
        data = write_csv(tmp / f"texts-{n}.csv", random_texts(n))
        with PeakRSS() as rss:
            s = embed_files([data], spec, tmp / f"m{n}", shard_rows=10_000, workers=2,
                            threads_per_worker=1, progress=False)  # fmt: skip
        out[str(n)] = {"peak_rss_mb": round(rss.peak, 1), "seconds": round(s.seconds, 1),
                       "texts_per_s": round(n / s.seconds, 1)}  # fmt: skip
        print(n, out[str(n)], flush=True)
        shutil.rmtree(tmp / f"m{n}")
    big, small = out[str(max(ns))], out[str(min(ns))]
    return {"runs": out, "ratio_peak_rss": round(big["peak_rss_mb"] / small["peak_rss_mb"], 3)}


def _start_cluster() -> None:
    """``ray start --head`` on this machine, as an operator runs it once before the jobs."""
    cmd = ["ray", "start", "--head", f"--num-cpus={os.cpu_count()}", "--include-dashboard=false",
           "--disable-usage-stats"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)


def overhead(
    model: str, n: int, tmp: Path, cluster: bool = False, repeat: int = 1
) -> dict[str, Any]:
    import torch

    from llmembed import Backbone, BackboneSpec
    from llmembed.distributed import embed_files, read_shards

    texts = sst2_texts(n)
    data = write_csv(tmp / "sst2.csv", texts)
    spec = BackboneSpec(model, layers="-1", pooling="mean", max_length=256)
    torch.set_num_threads(1)
    runs, diff = [], 0.0
    for i in range(repeat):  # local then Ray, side by side, each time
        t0 = time.perf_counter()
        local = Backbone(spec).embed(texts, progress=False)
        local_s = time.perf_counter() - t0
        if cluster:
            _start_cluster()
        try:
            t0 = time.perf_counter()
            embed_files([data], spec, tmp / f"o{i}", shard_rows=n, workers=1,
                        threads_per_worker=1, address="auto" if cluster else None,
                        progress=False)  # fmt: skip
            ray_s = time.perf_counter() - t0
        finally:
            if cluster:
                subprocess.run(["ray", "stop", "--force"], capture_output=True)
        diff = max(diff, float(np.abs(read_shards(tmp / f"o{i}")[0]["embedding"] - local).max()))
        runs.append({"local_s": round(local_s, 1), "ray_s": round(ray_s, 1),
                     "overhead_pct": round(100 * (ray_s - local_s) / local_s, 1)})  # fmt: skip
        print(runs[-1], flush=True)
    ray = "running cluster" if cluster else "started by the job"
    median = float(np.median([r["overhead_pct"] for r in runs]))
    return {"model": model, "texts": n, "ray": ray, "runs": runs, "overhead_pct": median,
            "max_abs_diff": diff}  # fmt: skip


def startup(model: str) -> dict[str, Any]:
    """Where the Ray path's fixed cost goes: ``ray.init`` of a local runtime, one actor made
    ready (process start, torch / transformers import, model load), ``ray.shutdown``."""
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0

    @ray.remote(num_cpus=1)
    class Probe:
        def __init__(self) -> None:
            t = time.perf_counter()
            import torch  # noqa: F401
            import transformers  # noqa: F401

            self.import_s = time.perf_counter() - t
            from llmembed import Backbone, BackboneSpec

            t = time.perf_counter()
            Backbone(BackboneSpec(model, layers="-1", pooling="mean", max_length=256)).load()
            self.load_s = time.perf_counter() - t

        def times(self) -> tuple[float, float]:
            return self.import_s, self.load_s

    t0 = time.perf_counter()
    import_s, load_s = ray.get(Probe.remote().times.remote())
    actor_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray.shutdown()
    shutdown_s = time.perf_counter() - t0
    return {"model": model, "ray_init_s": round(init_s, 1), "actor_ready_s": round(actor_s, 1),
            "of_which_import_s": round(import_s, 1), "of_which_model_load_s": round(load_s, 1),
            "ray_shutdown_s": round(shutdown_s, 1)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["workers", "memory", "overhead", "startup"])
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--n", default="20000")
    p.add_argument("--shard-rows", type=int, default=2000)
    p.add_argument("--cluster", action="store_true",
                   help="overhead: against a Ray already running (ray start --head), not one "
                   "the job starts")  # fmt: skip
    p.add_argument("--repeat", type=int, default=1, help="overhead: runs (the median is kept)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUT)
    a = p.parse_args()
    ns = [int(x) for x in a.n.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        if a.what == "workers":
            result = workers(a.model, ns[0], a.shard_rows, Path(tmp))
        elif a.what == "memory":
            result = memory(ns, Path(tmp))
        elif a.what == "startup":
            result = startup(a.model)
        else:
            result = overhead(a.model, ns[0], Path(tmp), a.cluster, a.repeat)
    result.update(measured=time.strftime("%Y-%m-%d %H:%M"), cpu_count=os.cpu_count(),
                  loadavg=os.getloadavg()[0])  # fmt: skip
    data = json.loads(a.output.read_text()) if a.output.exists() else {}
    data[a.what + ("_cluster" if a.cluster else "")] = result
    a.output.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
