"""Load test of `llmembed serve` with a real HTTP client on loopback: throughput and latency at
several client counts with batching on and off, a soak at a sustained rate with the server's RSS
sampled, and a fuzz run of malformed requests.

    python benchmarks/scripts/serve_load.py build --kind cpu --out /tmp/serve-models/cpu-sst2
    python benchmarks/scripts/serve_load.py load --model /tmp/serve-models/cpu-sst2 --label cpu
    python benchmarks/scripts/serve_load.py soak --model /tmp/serve-models/cpu-sst2 --minutes 10
    python benchmarks/scripts/serve_load.py fuzz --model /tmp/serve-models/cpu-sst2
    python benchmarks/scripts/serve_load.py profile --model /tmp/serve-models/cpu-sst2

``build`` trains the model served: ``--kind cpu`` the default recipe (EmbeddingGemma-300M +
lexical channel + linear head), ``--kind minilm`` a single encoder (all-MiniLM-L6-v2, linear
head), on SST-2 train from ``LLMEMBED_DATA`` (``--cache-dir`` may point at a warm cache).
``load`` starts the server (``python -m llmembed serve``, its own process) once with batching
and once without; for each client count, that many asyncio clients (httpx, one connection
each) send one SST-2 dev sentence per request, back to back, for ``--seconds``; it reports
texts/s, p50 / p95 / p99 latency, error codes, the server's batch sizes and seconds per stage
(from /metrics: queue wait, embed = tokenization + forward, lexical, head). The client runs on
the same 2 cores as the server (it costs a few percent of one core). Results are merged into
``--output`` (default benchmarks/results/serving.json), keyed by label and section.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from llmembed_bench.environment import process_tree_rss_mb

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "serving.json"


# -- the models ---------------------------------------------------------------------------------
def build(kind: str, out: Path, cache_dir: str | None, threads: int | None) -> dict[str, Any]:
    from llmembed import BackboneSpec, LLMEmbedClassifier
    from llmembed.datasets import load_benchmark

    data = load_benchmark("sst2")
    if kind == "cpu":
        clf = LLMEmbedClassifier(recipe="cpu", cache_dir=cache_dir, threads=threads)
    else:
        clf = LLMEmbedClassifier(
            recipe="cpu",
            backbones=[BackboneSpec("minilm-l6", layers="-1", pooling="mean", max_length=256)],
            lexical={"enabled": False},
            cache_dir=cache_dir,
            threads=threads,
        )
    t0 = time.perf_counter()
    clf.fit(data.train_texts, data.train_labels)
    fit_s = time.perf_counter() - t0
    acc = clf.score(data.test_texts, data.test_labels)
    clf.save(out)
    return {"kind": kind, "fit_s": round(fit_s, 1), "test_accuracy": round(acc, 4)}


# -- the server process -------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(model: Path, args: list[str], threads: int) -> Iterator[tuple[str, int]]:
    """A `llmembed serve` process on loopback; yields (url, pid) once /readyz says ready."""
    port = _free_port()
    cmd = [sys.executable, "-m", "llmembed", "serve", str(model), "--port", str(port)]
    cmd += ["--threads", str(threads), *args]
    log = open(f"/tmp/serve-{port}.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"server did not start: see {log.name}")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def scrape(url: str) -> dict[str, float]:
    """The server's counters and histogram sums, flat: {'name{labels}': value}."""
    out = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def _delta(after: dict[str, float], before: dict[str, float], pattern: str) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if re.fullmatch(pattern, k) is not None}


def stage_summary(after: dict[str, float], before: dict[str, float]) -> dict[str, Any]:
    """Batches, mean texts per batch and mean seconds per batch of each stage between scrapes."""
    sums = _delta(after, before, r'llmembed_stage_seconds_sum\{stage="(.*)"\}')
    counts = _delta(after, before, r'llmembed_stage_seconds_count\{stage="(.*)"\}')
    batches = after.get("llmembed_batch_size_texts_count", 0) - before.get(
        "llmembed_batch_size_texts_count", 0
    )
    texts = after.get("llmembed_batch_size_texts_sum", 0) - before.get(
        "llmembed_batch_size_texts_sum", 0
    )
    stages = {}
    for k, total in sums.items():
        name = k.split('"')[1]
        n = counts[k.replace("_sum", "_count")]
        if n:
            stages[name] = round(1000 * total / n, 2)
    return {
        "batches": int(batches),
        "texts_per_batch": round(texts / batches, 2) if batches else None,
        "ms_per_batch": stages,
    }


# -- clients ------------------------------------------------------------------------------------
def dev_texts() -> list[str]:
    from llmembed.datasets import load_benchmark

    return list(load_benchmark("sst2").test_texts)


def _pct(latencies: list[float], q: float) -> float | None:
    return round(1000 * float(np.percentile(latencies, q)), 1) if latencies else None


async def _predict_one(
    http: httpx.AsyncClient, text: str, latencies: list[float], codes: dict[str, int]
) -> None:
    """One request of one text: its status (or error class) counted, its latency kept if 200."""
    t0 = time.perf_counter()
    try:
        r = await http.post("/v1/predict", json={"texts": [text]})
        code = str(r.status_code)
    except httpx.HTTPError as e:
        code = type(e).__name__
    codes[code] = codes.get(code, 0) + 1
    if code == "200":
        latencies.append(time.perf_counter() - t0)


async def closed_loop(url: str, texts: list[str], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` clients, each sending one text per request back to back for ``seconds``."""
    latencies: list[float] = []
    codes: dict[str, int] = {}
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(i: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(i)
        while time.perf_counter() < stop_at:
            await _predict_one(http, rng.choice(texts), latencies, codes)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        wall = time.perf_counter() - t0
    return _summary(clients, wall, latencies, codes)


def _summary(clients: int, wall: float, latencies: list[float], codes: dict) -> dict[str, Any]:
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "texts_per_s": round(len(latencies) / wall, 1),
        "p50_ms": _pct(latencies, 50),
        "p95_ms": _pct(latencies, 95),
        "p99_ms": _pct(latencies, 99),
        "codes": codes,
        "_latencies": latencies,
    }


def _client_process(args: tuple[str, list[str], int, float]) -> dict[str, Any]:
    return asyncio.run(closed_loop(*args))


def many_clients(
    url: str, texts: list[str], clients: int, seconds: float, procs: int
) -> dict[str, Any]:
    """``closed_loop`` split over ``procs`` client processes (one asyncio client process
    cannot keep 128 connections busy: its own event loop becomes the bottleneck)."""
    import multiprocessing

    procs = max(1, min(procs, clients))
    if procs == 1:
        row = asyncio.run(closed_loop(url, texts, clients, seconds))
    else:
        shares = [clients // procs + (i < clients % procs) for i in range(procs)]
        with multiprocessing.get_context("spawn").Pool(procs) as pool:
            parts = pool.map(_client_process, [(url, texts, k, seconds) for k in shares])
        codes: dict[str, int] = {}
        for part in parts:
            for k, v in part["codes"].items():
                codes[k] = codes.get(k, 0) + v
        latencies = [x for part in parts for x in part["_latencies"]]
        row = _summary(clients, max(p["seconds"] for p in parts), latencies, codes)
    row.pop("_latencies")
    row["client_processes"] = procs
    return row


def load(
    model: Path, clients: list[int], seconds: float, threads: int, per_process: int
) -> dict[str, Any]:
    texts = dev_texts()
    out: dict[str, Any] = {}
    for mode, flag in (("batching", "--batching"), ("no_batching", "--no-batching")):
        rows = []
        with server(model, [flag], threads) as (url, pid):
            asyncio.run(closed_loop(url, texts, 8, 5.0))  # warm up
            for n in clients:
                before = scrape(url)
                row = many_clients(url, texts, n, seconds, -(-n // per_process))
                row.update(stage_summary(scrape(url), before))
                row["server_rss_mb"] = round(process_tree_rss_mb(pid), 1)
                print(mode, json.dumps(row), flush=True)
                rows.append(row)
        out[mode] = rows
    by_clients = {r["clients"]: r for r in out["no_batching"]}
    out["speedup"] = {
        str(r["clients"]): round(r["texts_per_s"] / by_clients[r["clients"]]["texts_per_s"], 2)
        for r in out["batching"]
    }
    return out


async def open_loop(
    url: str, pid: int, texts: list[str], rate: float, seconds: float, sample_s: float
) -> dict[str, Any]:
    """Requests sent at ``rate`` per second (one text each) for ``seconds``, RSS sampled."""
    latencies: list[float] = []
    codes: dict[str, int] = {}
    rss: list[tuple[float, float]] = []
    rng = random.Random(0)
    pending: set[asyncio.Task] = set()
    async with httpx.AsyncClient(
        base_url=url, timeout=120, limits=httpx.Limits(max_connections=256)
    ) as http:
        start = time.perf_counter()
        next_sample = start
        sent = 0
        while (now := time.perf_counter()) - start < seconds:
            if now >= next_sample:
                rss.append((round(now - start, 1), round(process_tree_rss_mb(pid), 1)))
                next_sample += sample_s
            due = int((now - start) * rate) + 1
            while sent < due:
                task = asyncio.create_task(_predict_one(http, rng.choice(texts), latencies, codes))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            await asyncio.sleep(min(0.01, 1 / rate))
        await asyncio.gather(*pending)
        rss.append((round(time.perf_counter() - start, 1), round(process_tree_rss_mb(pid), 1)))
    warm = [m for t, m in rss if t >= 60] or [m for _, m in rss]
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "requests": sent,
        "codes": codes,
        "p50_ms": _pct(latencies, 50),
        "p99_ms": _pct(latencies, 99),
        "rss_mb_first_after_60s": warm[0],
        "rss_mb_last": rss[-1][1],
        "rss_mb_max": max(m for _, m in rss),
        "rss_growth_pct": round(100 * (rss[-1][1] - warm[0]) / warm[0], 2),
        "rss_samples": rss,
    }


def soak(model: Path, minutes: float, rate: float, threads: int) -> dict[str, Any]:
    texts = dev_texts()
    with server(model, [], threads) as (url, pid):
        asyncio.run(closed_loop(url, texts, 8, 5.0))
        before = scrape(url)
        row = asyncio.run(open_loop(url, pid, texts, rate, 60 * minutes, 5.0))
        row.update(stage_summary(scrape(url), before))
    print(json.dumps({k: v for k, v in row.items() if k != "rss_samples"}), flush=True)
    return row


def profile(model: Path, sizes: list[int], threads: int, repeats: int = 5) -> dict[str, Any]:
    """In-process, no server: milliseconds per call of tokenization, forward (embed minus
    tokenization), lexical channel and head, per batch size, on SST-2 dev sentences."""
    from llmembed import LLMEmbedClassifier

    texts = dev_texts()
    clf = LLMEmbedClassifier.load(model, use_cache=False, verbose=False, threads=threads)
    for bb in clf.backbones_:
        bb.token_budget = 512  # what the server uses on CPU
    clf.predict_proba(texts[:32])
    rows = []
    for n in sizes:
        parts: dict[str, list[float]] = {"tokenize": [], "forward": [], "lexical": [], "head": []}
        for r in range(repeats):
            batch = texts[r * n : (r + 1) * n]
            t0 = time.perf_counter()
            for bb in clf.backbones_:
                bb.tokenize(batch)
            t1 = time.perf_counter()
            clf.embed(batch)
            t2 = time.perf_counter()
            if clf.lexical_ is not None:
                clf.lexical_.transform(batch)
            t3 = time.perf_counter()
            clf.predict_proba(batch)
            t4 = time.perf_counter()
            parts["tokenize"].append(t1 - t0)
            parts["forward"].append(max(0.0, (t2 - t1) - (t1 - t0)))
            parts["lexical"].append(t3 - t2)
            parts["head"].append(max(0.0, (t4 - t3) - (t2 - t1) - (t3 - t2)))
        row = {"texts": n, **{k: round(1000 * float(np.median(v)), 2) for k, v in parts.items()}}
        row["ms_per_text"] = round(sum(row[k] for k in parts) / n, 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {"rows": rows}


# -- fuzz ---------------------------------------------------------------------------------------
PIECES = [b"{", b"}", b"[", b"]", b'"texts"', b":", b",", b'"a"', b"1", b"-1e999", b"null",
          b"\xff", b"\xc3", b"\\u0000", b'"\\ud800"', b"true", b'""', b" ", b"\x00", b'"\\"',
          "é".encode(), b'"return_probabilities"', b"\n", b"{" * 50]  # fmt: skip


def fuzz_bodies(n: int, seed: int = 0) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    """(method, body, headers) of malformed or hostile requests, reproducible from the seed."""
    rng = random.Random(seed)
    fixed = [
        b"",
        b'{"texts": []}',
        b'{"texts": [""]}',
        b'{"texts": ["  "]}',
        b'{"texts": [null]}',
        b'{"texts": [1.5]}',
        b'{"texts": "x"}',
        b'{"texts": {"a": 1}}',
        json.dumps({"texts": ["x"] * 1000}).encode(),
        json.dumps({"texts": ["x" * 30_000]}).encode(),
        b'{"texts": ["ok"], "return_probabilities": 1}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"texts": ["' + b"\\ud800" * 10 + b'"]}',
        b'{"texts": ["\xed\xa0\x80"]}',
        json.dumps({"texts": ["ok"] * 64, "return_probabilities": True}).encode(),
    ]
    headers = [{"content-type": "application/json"}, {"content-type": "text/plain"}, {}]
    for body in fixed:
        yield "POST", body, headers[0]
    for _ in range(n - len(fixed)):
        body = b"".join(rng.choice(PIECES) for _ in range(rng.randint(0, 40)))
        if rng.random() < 0.3:
            body = b'{"texts": [' + body + b"]}"
        yield rng.choice(["POST"] * 8 + ["GET", "PUT"]), body, rng.choice(headers)


def fuzz(model: Path, n: int, threads: int) -> dict[str, Any]:
    codes: dict[str, int] = {}
    server_errors: list[str] = []
    with server(model, [], threads) as (url, _pid), httpx.Client(base_url=url, timeout=60) as c:
        for method, body, headers in fuzz_bodies(n):
            path = "/v1/predict" if random.random() < 0.95 else "/v1/model"
            try:
                r = c.request(method, path, content=body, headers=headers)
                code = str(r.status_code)
            except httpx.HTTPError as e:
                code = type(e).__name__
            codes[code] = codes.get(code, 0) + 1
            if not code.isdigit() or int(code) >= 500:
                server_errors.append(f"{code}: {body[:80]!r}")
        healthy = c.get("/readyz").status_code == 200
    out = {"requests": n, "codes": codes, "server_errors": server_errors[:20],
           "ready_after": healthy}  # fmt: skip
    print(json.dumps(out), flush=True)
    return out


# -- command line -------------------------------------------------------------------------------
def _save(path: Path, label: str, section: str, value: Any, meta: dict[str, Any]) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault(label, {})[section] = {**meta, **value} if isinstance(value, dict) else value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {path} [{label}][{section}]")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["build", "load", "soak", "fuzz", "profile"])
    p.add_argument("--model", type=Path, help="The saved model to serve (build: where to write)")
    p.add_argument("--kind", choices=["cpu", "minilm"], default="cpu")
    p.add_argument("--label", default=None, help="Key in the output file (default: --kind)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--clients", default="1,8,32,128")
    p.add_argument("--sizes", default="1,4,8,16,32", help="profile: batch sizes")
    p.add_argument("--clients-per-process", type=int, default=32)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=20.0, help="soak: requests per second")
    p.add_argument("--requests", type=int, default=2000, help="fuzz: requests")
    p.add_argument("--threads", type=int, default=2, help="server torch threads")
    p.add_argument("--output", type=Path, default=DEFAULT_OUT)
    a = p.parse_args()
    label = a.label or a.kind
    meta = {
        "measured": time.strftime("%Y-%m-%d %H:%M"),
        "cpu_count": os.cpu_count(),
        "server_threads": a.threads,
        "loadavg_at_start": os.getloadavg()[0],
        "command": " ".join(sys.argv),
    }
    if a.what == "build":
        result = build(a.kind, a.model, a.cache_dir, a.threads)
    elif a.what == "load":
        clients = [int(x) for x in a.clients.split(",")]
        result = load(a.model, clients, a.seconds, a.threads, a.clients_per_process)
    elif a.what == "soak":
        result = soak(a.model, a.minutes, a.rate, a.threads)
    elif a.what == "profile":
        result = profile(a.model, [int(x) for x in a.sizes.split(",")], a.threads)
    else:
        result = fuzz(a.model, a.requests, a.threads)
    _save(a.output, label, a.what, result, meta)


if __name__ == "__main__":
    main()
