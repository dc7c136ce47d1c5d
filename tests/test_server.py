"""The HTTP server (llmembed.server): API contract in-process, bad input never a 5xx, dynamic
batching that does not change answers, overload and timeouts, and one real uvicorn process on
loopback that drains its requests on SIGTERM."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from llmembed import LLMEmbedClassifier, ModelLoadError  # noqa: E402
from llmembed.errors import ConfigError  # noqa: E402
from llmembed.server import Batcher, HTTPError, Metrics, ServeConfig, create_app  # noqa: E402
from llmembed.testing import tiny_recipe  # noqa: E402

TEXTS = ["good movie", "bad movie", "great film", "awful film", "fine plot", "dull plot"] * 4
LABELS = ["pos", "neg", "pos", "neg", "pos", "neg"] * 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_llama, tiny_bert) -> Path:
    folder = tmp_path_factory.mktemp("served") / "model"
    clf = LLMEmbedClassifier(recipe=tiny_recipe(tiny_llama, tiny_bert), verbose=False)
    clf.fit(TEXTS, LABELS).save(folder)
    return folder


def _ready(client: TestClient) -> None:
    for _ in range(400):
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.025)
    raise AssertionError(f"never ready: {client.get('/readyz').json()}")


IN_PROCESS = {"model_process": False}  # quicker to start; the model process is tested below


@pytest.fixture(scope="module")
def client(model_dir):
    app = create_app(model_dir, ServeConfig(max_texts_per_request=8, **IN_PROCESS))
    with TestClient(app) as c:
        _ready(c)
        yield c


def test_predict_contract(client, model_dir):
    texts = ["good movie", "awful film", "a text never seen in training"]
    r = client.post("/v1/predict", json={"texts": texts, "return_probabilities": True})
    assert r.status_code == 200, r.text
    body = r.json()
    local = LLMEmbedClassifier.load(model_dir, verbose=False)
    assert body["classes"] == ["neg", "pos"]
    assert body["labels"] == list(local.predict(texts))
    np.testing.assert_allclose(body["probabilities"], local.predict_proba(texts), atol=1e-5)
    assert all(isinstance(label, str) for label in body["labels"])
    no_proba = client.post("/v1/predict", json={"texts": texts}).json()
    assert "probabilities" not in no_proba and no_proba["labels"] == body["labels"]


def test_model_health_metrics_and_docs(client, model_dir):
    info = client.get("/v1/model").json()
    saved = json.loads((model_dir / "llmembed.json").read_text())
    assert info["classes"] == ["neg", "pos"]
    assert [b["fingerprint"] for b in info["backbones"]] == [
        b["fingerprint"] for b in saved["backbones"]
    ]
    assert info["recipe"]["name"] == "tiny" and "llmembed" in info["versions"]
    assert info["server"]["max_texts_per_request"] == 8
    assert client.get("/healthz").json() == {"status": "alive"}
    client.post("/v1/predict", json={"texts": ["good"]})
    client.post("/v1/predict", json={"texts": []})
    text = client.get("/metrics").text
    for needle in (
        'llmembed_requests_total{code="200",path="/v1/predict"}',
        'llmembed_requests_total{code="422",path="/v1/predict"}',
        "llmembed_request_latency_seconds_bucket",
        "llmembed_batch_size_texts_bucket",
        "llmembed_queue_depth_texts 0.0",
        "llmembed_throughput_texts_per_second",
        'llmembed_stage_seconds_count{stage="head"}',
        "llmembed_ready 1.0",
    ):
        assert needle in text, needle
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


def test_integer_labels_come_back_as_integers(tmp_path, tiny_llama, tiny_bert):
    clf = LLMEmbedClassifier(recipe=tiny_recipe(tiny_llama, tiny_bert), verbose=False)
    clf.fit(TEXTS, [1 if x == "pos" else 0 for x in LABELS]).save(tmp_path / "m")
    with TestClient(create_app(tmp_path / "m", ServeConfig(**IN_PROCESS))) as c:
        _ready(c)
        body = c.post("/v1/predict", json={"texts": ["good movie"]}).json()
    assert body["classes"] == [0, 1] and isinstance(body["labels"][0], int)


BAD_BODIES = [
    (b"{", 400, "not valid JSON"),
    (b"\xff\xfe{}", 400, "not valid UTF-8"),
    (b"", 400, "not valid JSON"),
    (b"[]", 422, "JSON object"),
    (b"null", 422, "JSON object"),
    (b'{"texts": []}', 422, "texts is empty"),
    (b'{"texts": "one text"}', 422, "texts: Input should be a valid list"),
    (b'{"texts": [1, 2]}', 422, "texts.0"),
    (b'{"texts": ["ok", null]}', 422, "texts.1"),
    (b'{"texts": ["ok", " "]}', 422, "texts.1 is empty or whitespace-only"),
    (b'{"text": ["ok"]}', 422, "texts: Field required"),
    (b'{"texts": ["ok"], "extra": 1}', 422, "extra: Extra inputs"),
    (b'{"texts": ["ok"], "return_probabilities": "yes"}', 422, "return_probabilities"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    (b'{"texts": ["ok", "bad \\ud800 half"]}', 422, "texts.1 has an unpaired surrogate"),
    (json.dumps({"texts": ["a"] * 9}).encode(), 413, "the limit is 8"),
    (json.dumps({"texts": ["x" * 20_001]}).encode(), 413, "the limit is 20000"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_BODIES)
def test_bad_input_is_a_clear_4xx(client, body, status, message):
    r = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_oversized_body_refused_before_it_is_read(client):
    limit = client.app.state.config.max_body_bytes
    r = client.post("/v1/predict", content=b" " * (limit + 1))
    assert r.status_code == 413 and f"limit is {limit}" in r.json()["error"]


def test_fuzzed_requests_never_give_a_5xx(client):
    rng = random.Random(0)
    pieces = [
        b"{",
        b"}",
        b"[",
        b"]",
        b'"texts"',
        b":",
        b",",
        b'"a"',
        b"1",
        b"null",
        b"\xff",
        b"\\u0000",
        b'"\\ud800"',
        b"true",
        b'""',
        b" ",
        b"\x00",
        "é".encode(),
    ]
    codes = set()
    for _ in range(300):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        r = client.post("/v1/predict", content=body)
        codes.add(r.status_code)
        assert r.status_code < 500, (body, r.text)
    for path, method in [("/v1/predict", "GET"), ("/nope", "GET"), ("/v1/model", "POST")]:
        assert client.request(method, path).status_code < 500
    assert codes <= {200, 400, 413, 422}


def test_answers_do_not_depend_on_batching(model_dir):
    """Concurrent one-text requests are merged into one model call, and every text gets what it
    gets alone."""
    app = create_app(model_dir, ServeConfig(max_batch_texts=16, max_wait_ms=200, **IN_PROCESS))
    texts = [
        "good movie",
        "a much longer text about an awful film with a dull plot",
        "fine",
        "great film, truly great",
        "bad",
        "the best acting of the year, fun plot",
    ]
    with TestClient(app) as c:
        _ready(c)
        batches: list[int] = []
        model_predict = app.state.batcher.predict
        app.state.batcher.predict = lambda t: (batches.append(len(t)), model_predict(t))[1]
        with concurrent.futures.ThreadPoolExecutor(len(texts)) as pool:
            jobs = [
                pool.submit(
                    c.post, "/v1/predict", json={"texts": [t], "return_probabilities": True}
                )
                for t in texts
            ]
            merged = [j.result().json()["probabilities"][0] for j in jobs]
        alone = [
            c.post("/v1/predict", json={"texts": [t], "return_probabilities": True}).json()[
                "probabilities"
            ][0]
            for t in texts
        ]
    assert max(batches[: len(batches) - len(texts)]) > 1  # some requests were merged
    assert batches[-len(texts) :] == [1] * len(texts)
    np.testing.assert_allclose(merged, alone, atol=1e-5)


def _run(coro):
    return asyncio.run(coro)


class _SlowModel:
    """A predict function that blocks until released (to hold the queue full)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[int] = []

    def __call__(self, texts):
        self.release.wait(10)
        self.calls.append(len(texts))
        return np.tile([[0.25, 0.75]], (len(texts), 1)), {"head": 0.0}


def test_full_queue_answers_503_with_retry_after():
    async def scenario():
        model = _SlowModel()
        b = Batcher(model, ServeConfig(max_queue_texts=4, max_texts_per_request=4), Metrics())
        b.start()
        first = asyncio.ensure_future(b.submit(["a"]))  # taken by the worker, which blocks
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(b.submit(["b", "c"])) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert b.queued_texts == 4
        with pytest.raises(HTTPError) as e:
            await b.submit(["d"])
        assert e.value.status == 503 and int(e.value.headers["Retry-After"]) >= 1
        model.release.set()
        results = await asyncio.gather(first, *queued)
        await b.stop()
        return results, model.calls

    results, calls = _run(scenario())
    assert [len(r) for r in results] == [1, 2, 2] and calls == [1, 4]


def test_timeout_answers_503_and_drops_the_waiting_texts():
    async def scenario():
        model = _SlowModel()
        b = Batcher(model, ServeConfig(timeout_s=0.2), Metrics())
        b.start()
        first = asyncio.ensure_future(b.submit(["a"]))
        await asyncio.sleep(0.05)
        with pytest.raises(HTTPError) as e:
            await b.submit(["late"])
        assert e.value.status == 503 and "no answer within 0.2 s" in e.value.message
        model.release.set()
        with pytest.raises(HTTPError):
            await first  # the first one timed out too, while the model was blocked
        await asyncio.sleep(0.05)
        await b.stop()
        return model.calls

    assert _run(scenario()) == [1]  # "late" never reached the model


def test_bad_config_and_bad_folder(tmp_path, model_dir):
    with pytest.raises(ConfigError, match="max_batch_texts"):
        create_app(model_dir, ServeConfig(max_batch_texts=0))
    with pytest.raises(ConfigError, match="cache must be one of"):
        create_app(model_dir, ServeConfig(cache="sometimes"))
    with pytest.raises(ModelLoadError, match="not a folder"):
        create_app(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError):
        create_app(tmp_path / "empty")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_arrived(url: str, n: int, per_request: int, timeout: float = 30.0) -> None:
    """Wait until the server holds ``n`` predict requests (queued, running or answered) with
    some still queued, read from /metrics: a fixed sleep lost the race on a loaded machine,
    where requests still connecting when SIGTERM came were refused."""
    deadline = time.time() + timeout
    while True:
        text = httpx.get(f"{url}/metrics", timeout=5).text
        queued = answered = 0.0
        for line in text.splitlines():
            if line.startswith("llmembed_queue_depth_texts "):
                queued = float(line.split()[-1]) / per_request
            elif line.startswith("llmembed_requests_total{") and '"/v1/predict"' in line:
                answered += float(line.split()[-1])
        if queued >= 1 and queued + answered + 1 >= n:  # + 1: the request running now
            return
        assert time.time() < deadline, f"only {queued + answered} of {n} requests arrived"
        time.sleep(0.05)


def test_real_server_drains_requests_on_sigterm(model_dir, tmp_path):
    """`llmembed serve` in its own process on loopback: concurrent requests are all answered
    (200) although SIGTERM arrives while most are still queued, then the process exits."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmembed",
            "serve",
            str(model_dir),
            "--port",
            str(port),
            "--no-batching",
            "--threads",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
            time.sleep(0.1)
        long_text = " ".join(["a fairly long sentence about a good film"] * 25)
        body = {"texts": [long_text] * 64}

        def call() -> tuple[int, float]:
            r = httpx.post(f"{url}/v1/predict", json=body, timeout=60)
            return r.status_code, time.time()

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            jobs = [pool.submit(call) for _ in range(12)]
            _wait_until_arrived(url, 12, per_request=64)
            sent_term = time.time()
            proc.send_signal(signal.SIGTERM)
            answers = [j.result() for j in jobs]
        assert [code for code, _ in answers] == [200] * 12
        assert any(done > sent_term for _, done in answers), "all answered before SIGTERM"
        # uvicorn re-raises SIGTERM once it has shut down, so the exit status says "terminated"
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Finished server process" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_serve_bad_folder_is_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "llmembed", "serve", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "not a folder" in r.stderr and "Traceback" not in r.stderr


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("mode", ["off", "read-only"])
def test_request_path_writes_no_cache_file(model_dir, tmp_path, mode):
    cache = tmp_path / "cache"
    texts = ["good movie", "never seen before"]
    local = LLMEmbedClassifier.load(model_dir, verbose=False, use_cache=False)
    expected = list(local.predict(texts))
    local.set_params(cache_dir=cache, use_cache=True).predict(texts[:1])  # a hit for read-only
    before = _tree(cache)
    app = create_app(model_dir, ServeConfig(cache=mode, cache_dir=str(cache), **IN_PROCESS))
    with TestClient(app) as c:
        _ready(c)
        r = c.post("/v1/predict", json={"texts": texts})
    assert r.status_code == 200 and r.json()["labels"] == expected
    assert _tree(cache) == before


def test_read_write_cache_mode_stores_the_texts(model_dir, tmp_path):
    cache = tmp_path / "cache"
    app = create_app(model_dir, ServeConfig(cache="read-write", cache_dir=str(cache), **IN_PROCESS))
    with TestClient(app) as c:
        _ready(c)
        assert c.post("/v1/predict", json={"texts": ["good movie"]}).status_code == 200
    assert any(p.name.startswith("chunk-") for p in cache.rglob("*"))


def test_a_model_failure_is_a_json_500_and_the_server_keeps_serving(model_dir):
    app = create_app(model_dir, ServeConfig(**IN_PROCESS))
    with TestClient(app) as c:
        _ready(c)
        model_predict = app.state.batcher.predict

        def broken(texts):
            raise RuntimeError("boom")

        app.state.batcher.predict = broken
        r = c.post("/v1/predict", json={"texts": ["good movie"]})
        assert r.status_code == 500 and r.json()["error"] == "inference failed: RuntimeError: boom"
        app.state.batcher.predict = model_predict
        assert c.post("/v1/predict", json={"texts": ["good movie"]}).status_code == 200


def test_model_process_answers_like_the_local_model_and_its_death_stops_the_server(model_dir):
    fatal: list[BaseException] = []
    app = create_app(model_dir, on_fatal=fatal.append)  # the default: a model process
    texts = ["good movie", "awful film"]
    with TestClient(app) as c:
        _ready(c)
        r = c.post("/v1/predict", json={"texts": texts, "return_probabilities": True})
        local = LLMEmbedClassifier.load(model_dir, verbose=False)
        np.testing.assert_allclose(r.json()["probabilities"], local.predict_proba(texts), atol=1e-5)
        proc = next(p for p in multiprocessing.active_children() if p.name == "llmembed-model")
        proc.kill()
        proc.join(10)
        r = c.post("/v1/predict", json={"texts": texts})
        assert r.status_code == 500 and "the model process died" in r.json()["error"]
        assert c.get("/readyz").status_code == 503
        assert c.post("/v1/predict", json={"texts": texts}).status_code == 503
    assert fatal and "the model process died" in str(fatal[0])
