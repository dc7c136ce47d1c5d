"""HTTP serving of a saved model: ``llmembed serve MODEL_DIR`` (FastAPI + uvicorn).

Endpoints: ``POST /v1/predict`` (labels, optionally probabilities), ``GET /v1/model`` (recipe,
classes, backbone pins, versions), ``GET /healthz`` (alive), ``GET /readyz`` (model loaded and
warmed up), ``GET /metrics`` (Prometheus text format), ``/docs`` (OpenAPI).

Requests wait in one bounded queue; one worker thread takes from it batches of up to
``max_batch_texts`` texts (whole requests, merged: dynamic micro-batching, as in
text-embeddings-inference), waiting at most ``max_wait_ms`` for a batch to fill when the model
is idle, and hands them to the model, which runs in a process of its own. A full queue
answers 503 with ``Retry-After`` at once, so memory stays bounded; bad input is a 4xx with a
one-line ``{"error": ...}``; SIGTERM stops accepting connections and answers the requests
already received before the process exits (uvicorn's graceful shutdown).
The embedding cache is off on the request path by default (a server must not write a file per
request); ``cache="read-only"`` reads a cache filled beforehand without writing to it.

Needs the ``serve`` extra: ``pip install 'llmembed[serve]'``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import ConfigError, LLMEmbedError, ModelLoadError

try:
    import prometheus_client as prom
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from pydantic import BaseModel, ConfigDict, ValidationError
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ModelLoadError(
        f"llmembed serve needs FastAPI, uvicorn and prometheus-client ({e.name} is missing): "
        "pip install 'llmembed[serve]'"
    ) from None

__all__ = ["ServeConfig", "create_app", "serve"]

log = logging.getLogger("llmembed.server")

CACHE_MODES = ("off", "read-only", "read-write")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
CPU_TOKEN_BUDGET = 512


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """How the server batches, bounds and times out requests.

    Attributes:
        max_batch_texts: texts merged into one model call (whole requests; a request with
            more texts than this runs alone).
        max_wait_ms: how long an idle model waits for a batch to fill before it runs.
        batching: False runs every request alone (one model call per request).
        max_queue_texts: texts waiting at most; past it a request gets 503 + Retry-After.
        max_texts_per_request: more texts in one request is a 413.
        max_chars_per_text: a longer text is a 413.
        timeout_s: a request not answered within this many seconds gets 503 + Retry-After
            (its texts are dropped from the queue if they have not started).
        cache: "off" (default), "read-only" (read a cache filled beforehand, never write) or
            "read-write" (the library's normal cache, one chunk written per batch).
        cache_dir: the embedding cache folder (None: the library's default).
        threads: torch threads of the model (None: the library's default policy).
        model_process: run the model in a process of its own (default), so that it never
            competes with the HTTP event loop for the GIL; False runs it on a thread of the
            server's process (quicker to start, for tests and debugging).
        token_budget: padded tokens per forward pass inside a batch, so a merged batch of texts
            of mixed lengths runs as sub-batches of similar length instead of everything padded
            to the longest (None: the recipe's, else 512 on CPU, where 32 SST-2 sentences took
            26.9 ms per text against 37.1 with the extraction default of 2048; the backbone's
            own on a GPU).

    Raises (``check``): ConfigError for a value out of range.
    """

    max_batch_texts: int = 32
    max_wait_ms: float = 2.0
    batching: bool = True
    max_queue_texts: int = 1024
    max_texts_per_request: int = 64
    max_chars_per_text: int = 20_000
    timeout_s: float = 30.0
    cache: str = "off"
    cache_dir: str | None = None
    threads: int | None = None
    token_budget: int | None = None
    model_process: bool = True

    def check(self) -> ServeConfig:
        """Self, after checking every value; raises ConfigError naming the bad one."""
        positive = ("max_batch_texts", "max_queue_texts", "max_texts_per_request")
        for name in (*positive, "max_chars_per_text"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, not {getattr(self, name)!r}")
        if not (self.max_wait_ms >= 0 and math.isfinite(self.max_wait_ms)):
            raise ConfigError(f"max_wait_ms must be >= 0, not {self.max_wait_ms!r}")
        if not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise ConfigError(f"timeout_s must be > 0, not {self.timeout_s!r}")
        if self.cache not in CACHE_MODES:
            raise ConfigError(f"cache must be one of {', '.join(CACHE_MODES)}, not {self.cache!r}")
        if self.max_texts_per_request > self.max_queue_texts:
            raise ConfigError(
                f"max_texts_per_request ({self.max_texts_per_request}) exceeds max_queue_texts "
                f"({self.max_queue_texts}): such a request could never be queued"
            )
        for name in ("threads", "token_budget"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or None, not {value!r}")
        return self

    @property
    def max_body_bytes(self) -> int:
        """The largest request body accepted: every text at its limit, 4 bytes per character
        (UTF-8's worst case) plus JSON quoting and slack; bigger bodies are refused unread."""
        return self.max_texts_per_request * (4 * self.max_chars_per_text + 16) + 4096


class PredictRequest(BaseModel):
    """Body of ``POST /v1/predict``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    texts: list[str]
    return_probabilities: bool = False


class PredictResponse(BaseModel):
    """Answer of ``POST /v1/predict``: one label per text, as trained (strings stay strings),
    or for a multi-label model one list of labels per text; ``probabilities`` (when asked) has
    one row per text, columns in ``classes`` order (multi-label: independent per label)."""

    labels: list[Any]
    classes: list[Any]
    probabilities: list[list[float]] | None = None


class HTTPError(Exception):
    """An error answer: status code, one-line message, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "code": status}, status_code=status, headers=headers)


class Metrics:
    """The Prometheus metrics of one app (own registry, so several apps in a process are
    independent)."""

    def __init__(self) -> None:
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter(
            "llmembed_requests", "HTTP requests answered", ["path", "code"], registry=r
        )
        self.latency = prom.Histogram(
            "llmembed_request_latency_seconds",
            "Time from receiving a predict request to answering it",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage = prom.Histogram(
            "llmembed_stage_seconds",
            "Seconds per batch in each stage: queue (wait of the batch's oldest request), "
            "embed:<model> (tokenization + forward), lexical, head",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = prom.Histogram(
            "llmembed_batch_size_texts", "Texts per model call", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = prom.Gauge(
            "llmembed_queue_depth_texts", "Texts waiting for the model", registry=r
        )
        self.texts = prom.Counter("llmembed_texts", "Texts classified", registry=r)
        self.throughput = prom.Gauge(
            "llmembed_throughput_texts_per_second",
            "Texts classified per second over the last 10 s",
            registry=r,
        )
        self.rejected = prom.Counter(
            "llmembed_rejected_texts",
            "Texts refused (queue full or timed out)",
            ["reason"],
            registry=r,
        )
        self.ready = prom.Gauge("llmembed_ready", "1 once the model is loaded and warm", registry=r)
        self._recent: collections.deque[tuple[float, int]] = collections.deque()

    def count_texts(self, n: int) -> None:
        """Record n texts classified now (counter and the 10 s throughput gauge)."""
        now = time.monotonic()
        self.texts.inc(n)
        self._recent.append((now, n))
        while self._recent and now - self._recent[0][0] > 10.0:
            self._recent.popleft()
        span = max(now - self._recent[0][0], 1.0)
        self.throughput.set(sum(k for _, k in self._recent) / span)


@dataclasses.dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future
    received: float  # time.perf_counter()


class Batcher:
    """The bounded queue and the inference loop (runs on the event loop; the model runs on one
    worker thread, so it is never called concurrently).

    Takes: ``predict(texts) -> (probabilities [n, n_classes], stage seconds)``, the config and
    the metrics.
    """

    def __init__(
        self,
        predict: Callable[[list[str]], tuple[np.ndarray, dict[str, float]]],
        config: ServeConfig,
        metrics: Metrics,
    ) -> None:
        self.predict = predict
        self.config = config
        self.metrics = metrics
        self.queued_texts = 0
        self._queue: collections.deque[_Job] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmembed-infer")
        self._rate = 0.0  # texts/s of the last batch, for Retry-After

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop the loop (after uvicorn has drained the requests) and the worker thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    def retry_after(self) -> str:
        """Seconds until the queue has likely drained, for a Retry-After header (>= 1)."""
        if self._rate <= 0:
            return "1"
        return str(max(1, math.ceil(self.queued_texts / self._rate)))

    async def submit(self, texts: list[str]) -> np.ndarray:
        """Probabilities [len(texts), n_classes] once the model has run on them.

        Raises: HTTPError 503 (+ Retry-After) when the queue is full or the answer takes longer
        than ``timeout_s``; whatever the model raised.
        """
        if self.queued_texts + len(texts) > self.config.max_queue_texts:
            self.metrics.rejected.labels("queue_full").inc(len(texts))
            raise HTTPError(
                503,
                f"server overloaded: {self.queued_texts} texts queued (limit "
                f"{self.config.max_queue_texts}); retry later",
                {"Retry-After": self.retry_after()},
            )
        job = _Job(texts, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._queue.append(job)
        self._set_queued(len(texts))
        assert self._arrived is not None
        self._arrived.set()
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), self.config.timeout_s)
        except asyncio.TimeoutError:
            if not job.future.done():
                job.future.cancel()  # dropped from the queue if it has not started
            self.metrics.rejected.labels("timeout").inc(len(texts))
            raise HTTPError(
                503,
                f"no answer within {self.config.timeout_s:g} s (server overloaded); retry later "
                "or send fewer texts",
                {"Retry-After": self.retry_after()},
            ) from None

    def _set_queued(self, delta: int) -> None:
        self.queued_texts += delta
        self.metrics.queue_depth.set(self.queued_texts)

    def _next(self) -> _Job | None:
        """The oldest job still waiting (cancelled ones are dropped), or None."""
        while self._queue:
            job = self._queue.popleft()
            self._set_queued(-len(job.texts))
            if not job.future.done():
                return job
        return None

    async def _take_batch(self) -> list[_Job]:
        assert self._arrived is not None
        first = None
        while first is None:
            self._arrived.clear()
            first = self._next()
            if first is None:
                await self._arrived.wait()
        batch, n = [first], len(first.texts)
        if not self.config.batching:
            return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.max_wait_ms / 1000
        while n < self.config.max_batch_texts:
            while self._queue and self._queue[0].future.done():
                self._next()
            if self._queue:
                if n + len(self._queue[0].texts) > self.config.max_batch_texts:
                    break
                job = self._next()
                assert job is not None
                batch.append(job)
                n += len(job.texts)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._take_batch()
            texts = [t for job in batch for t in job.texts]
            started = time.perf_counter()
            self.metrics.stage.labels("queue").observe(started - batch[0].received)
            self.metrics.batch_size.observe(len(texts))
            try:
                probs, stages = await loop.run_in_executor(self._executor, self.predict, texts)
            except Exception as e:  # the model failed: every request of the batch gets it
                log.exception("inference failed on a batch of %d texts", len(texts))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            seconds = time.perf_counter() - started
            self._rate = len(texts) / max(seconds, 1e-6)
            for stage, s in stages.items():
                self.metrics.stage.labels(stage).observe(s)
            self.metrics.count_texts(len(texts))
            start = 0
            for job in batch:
                part = probs[start : start + len(job.texts)]
                start += len(job.texts)
                if not job.future.done():
                    job.future.set_result(part)


class InferenceError(RuntimeError):
    """The model failed on a batch, or its process died; the message says how."""


class _Model:
    """The loaded classifier (warmed up on one text), in this process."""

    def __init__(self, folder: Path, config: ServeConfig, device: str) -> None:
        from .classifier import LLMEmbedClassifier

        use_cache: bool | str = {"off": False, "read-only": "read-only", "read-write": True}[
            config.cache
        ]
        self.clf = LLMEmbedClassifier.from_pretrained(
            folder,
            device=device,
            cache_dir=config.cache_dir,
            use_cache=use_cache,
            verbose=False,
            threads=config.threads,
        )
        for bb in self.clf.backbones_:
            if config.token_budget is not None:
                bb.token_budget = config.token_budget
            elif bb.device.type == "cpu" and bb.spec.token_budget is None:
                bb.token_budget = CPU_TOKEN_BUDGET
        self.predict(["warm up"])

    def predict(self, texts: list[str]) -> tuple[np.ndarray, dict[str, float]]:
        """Probabilities and the seconds spent per stage (embed:<model>, lexical, head).

        Called from one thread at a time (the batcher's worker thread)."""
        t0 = time.perf_counter()
        self.clf.timings_.clear()
        probs = self.clf.predict_proba(texts)
        stages = dict(self.clf.timings_)
        stages["head"] = max(0.0, time.perf_counter() - t0 - sum(stages.values()))
        return probs, stages

    def close(self) -> None:
        """Nothing to release in-process."""


def _labels(probs: np.ndarray, saved: Any) -> list[Any]:
    """The answer's labels: the most probable class per text, or (multi-label) the list of
    labels at or above their thresholds."""
    if saved.multi_label is None:
        return [saved.classes[i] for i in probs.argmax(1)]
    from .multilabel import decide, label_sets

    return [list(s) for s in label_sets(decide(probs, saved.multi_label), saved.classes)]


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0]


def _release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``; elsewhere a
    no-op), so the model process's RSS follows what it uses rather than its peak."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _model_process_main(folder: str, config: ServeConfig, device: str, conn: Any) -> None:
    """The model process: load, report ("ready", None) or ("error", message), then answer
    each batch of texts with ("ok", (probabilities, stages)) or ("error", message) until it
    receives None or the pipe closes. It ignores SIGINT / SIGTERM: the server drains its
    requests first, then tells it to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        model = _Model(Path(folder), config, device)
    except BaseException as e:  # noqa: BLE001 - sent to the server, which reports it
        conn.send(("error", str(e) if isinstance(e, LLMEmbedError) else _one_line(e)))
        return
    conn.send(("ready", None))
    trimmed = time.monotonic()
    while True:
        if time.monotonic() - trimmed > 1.0 and not conn.poll():
            _release_free_memory()  # idle: batches of changing shapes fragment the heap
            trimmed = time.monotonic()
        try:
            texts = conn.recv()
        except EOFError:
            return
        if texts is None:
            return
        try:
            conn.send(("ok", model.predict(texts)))
        except Exception as e:  # noqa: BLE001 - the batch fails, the process goes on
            conn.send(("error", _one_line(e)))


class _ModelProcess:
    """The model in a process of its own: tokenization and the forward pass never hold the HTTP
    process's GIL, the model's memory is not the HTTP process's, and a model killed for memory
    is noticed (the server stops) instead of taking the HTTP process with it. Same interface
    as :class:`_Model`; texts and probabilities go through a pipe.

    Raises (constructor): ModelLoadError when the model fails to load.
    """

    def __init__(self, folder: Path, config: ServeConfig, device: str) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process running threads
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_model_process_main,
            args=(str(folder), config, device, child),
            name="llmembed-model",
            daemon=True,
        )
        self.proc.start()
        child.close()
        kind, value = self._receive()
        if kind != "ready":
            self.close()
            raise ModelLoadError(value)

    def _receive(self) -> tuple[str, Any]:
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(5)
            raise InferenceError(
                f"the model process died (exit code {self.proc.exitcode}; out of memory?)"
            ) from None

    def predict(self, texts: list[str]) -> tuple[np.ndarray, dict[str, float]]:
        """As :meth:`_Model.predict`; raises InferenceError when the model failed."""
        try:
            self.conn.send(texts)
        except OSError:
            self._receive()  # reports the dead process
        kind, value = self._receive()
        if kind != "ok":
            raise InferenceError(value)
        return value

    def close(self) -> None:
        """Tell the process to stop and wait for it (terminated after 30 s)."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self.conn.close()


def _validate(body: bytes, config: ServeConfig) -> PredictRequest:
    """The request, checked; raises HTTPError 4xx with a message saying what to change."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HTTPError(
            400, f"the body is not valid UTF-8 (byte {e.start}): send UTF-8 JSON"
        ) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise HTTPError(
            400, f"the body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except RecursionError:
        raise HTTPError(400, "the body is JSON nested too deeply: send a flat object") from None
    if not isinstance(raw, dict):
        raise HTTPError(422, 'the body must be a JSON object like {"texts": ["..."]}')
    try:
        req = PredictRequest.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise HTTPError(422, f"{where}: {err['msg']}") from None
    if not req.texts:
        raise HTTPError(422, "texts is empty: send at least one text")
    if len(req.texts) > config.max_texts_per_request:
        raise HTTPError(
            413,
            f"{len(req.texts)} texts in one request; the limit is "
            f"{config.max_texts_per_request}: split the request",
        )
    for i, t in enumerate(req.texts):
        if not t.strip():
            raise HTTPError(422, f"texts.{i} is empty or whitespace-only")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate escape such as "\ud800"
            raise HTTPError(
                422,
                f"texts.{i} has an unpaired surrogate at character {e.start}: send valid Unicode",
            ) from None
        if len(t) > config.max_chars_per_text:
            raise HTTPError(
                413,
                f"texts.{i} has {len(t)} characters; the limit is {config.max_chars_per_text}: "
                "shorten it",
            )
    return req


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, read up to ``limit`` bytes; raises HTTPError 413 past it (memory stays
    bounded whatever the client sends, with or without Content-Length)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, f"the body has {declared} bytes; the limit is {limit}")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"the body exceeds {limit} bytes: send fewer or shorter texts")
        parts.append(chunk)
    return b"".join(parts)


def create_app(
    model_dir: str | os.PathLike,
    config: ServeConfig | None = None,
    device: str = "auto",
    on_fatal: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The FastAPI app serving the saved model in ``model_dir``.

    The model loads (and runs once on a warm-up text) in the background once the app starts,
    so ``/healthz`` answers at once and ``/readyz`` turns 200 when it is done. A failed load,
    or a model process that dies (killed for memory), makes ``/readyz`` and ``/v1/predict``
    answer 503 with the error and calls ``on_fatal`` (the CLI stops the server with it).

    Takes: the model folder, the ServeConfig, the device. Returns: the app (run it with any
    ASGI server; :func:`serve` runs uvicorn). Raises: ConfigError for a bad config;
    ModelLoadError when ``model_dir`` is not a saved model (checked before anything starts).
    """
    from . import modelcard

    config = (config or ServeConfig()).check()
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a folder: give a folder written by llmembed train")
    saved = modelcard.read_saved_model(folder)  # a broken folder fails now, not later
    metrics = Metrics()
    state: dict[str, Any] = {"model": None, "error": None}

    def run_model(texts: list[str]) -> tuple[np.ndarray, dict[str, float]]:
        model = state["model"]
        try:
            return model.predict(texts)
        except InferenceError as e:
            if isinstance(model, _ModelProcess) and not model.proc.is_alive():
                state["model"], state["error"] = None, str(e)
                metrics.ready.set(0)
                log.error("%s: stopping", e)
                if on_fatal is not None:
                    on_fatal(e)
            raise

    batcher = Batcher(run_model, config, metrics)

    def load() -> None:
        try:
            model = (_ModelProcess if config.model_process else _Model)(folder, config, device)
        except BaseException as e:  # noqa: BLE001 - reported through /readyz and the callback
            detail = str(e) if isinstance(e, ModelLoadError) else _one_line(e)
            state["error"] = f"the model failed to load: {detail}"
            log.error(state["error"])
            if on_fatal is not None:
                on_fatal(e)
            return
        state["model"] = model
        metrics.ready.set(1)
        log.info("model ready: %s (%d classes)", folder, len(saved.classes))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        loader = asyncio.get_running_loop().run_in_executor(batcher._executor, load)
        yield
        await loader
        await batcher.stop()
        if state["model"] is not None:
            state["model"].close()

    app = FastAPI(
        title="llmembed",
        description="Text classification with a saved llmembed model.",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.metrics = metrics
    app.state.batcher = batcher

    app.add_middleware(_CountRequests, metrics=metrics)

    def not_ready() -> JSONResponse | None:
        if state["model"] is not None:
            return None
        if state["error"] is not None:
            return _error(503, state["error"])
        return _error(503, "the model is still loading", {"Retry-After": "5"})

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
            }
        },
        responses={400: {}, 413: {}, 422: {}, 503: {}},
    )
    async def predict(request: Request) -> Any:
        """Labels (and probabilities) of the texts; merged with concurrent requests."""
        started = time.perf_counter()
        try:
            req = _validate(await _read_body(request, config.max_body_bytes), config)
            if (waiting := not_ready()) is not None:
                return waiting
            probs = await batcher.submit(req.texts)
        except HTTPError as e:
            return _error(e.status, e.message, e.headers)
        except Exception as e:  # the model failed on the batch (logged by the batcher)
            detail = str(e) if isinstance(e, InferenceError) else _one_line(e)
            return _error(500, f"inference failed: {detail}")
        labels = _labels(probs, saved)
        out: dict[str, Any] = {"labels": labels, "classes": saved.classes}
        if req.return_probabilities:
            out["probabilities"] = probs.tolist()
        metrics.latency.observe(time.perf_counter() - started)
        return JSONResponse(out)

    @app.get("/v1/model")
    async def model_info() -> Any:
        """The saved model's recipe, classes, backbone pins and versions, and the server's
        limits."""
        return {
            "path": str(folder.resolve()),
            **saved.to_dict(),
            "server": {**dataclasses.asdict(config), "versions": modelcard.package_versions()},
        }

    @app.get("/healthz")
    async def healthz() -> Any:
        """200 while the process is alive."""
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> Any:
        """200 once the model is loaded and warmed up, 503 before (or if it failed)."""
        return not_ready() or {"status": "ready"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(prom.generate_latest(metrics.registry), media_type=prom.CONTENT_TYPE_LATEST)

    return app


class _CountRequests:
    """ASGI middleware counting answers by route and status code (a plain ASGI wrapper: cheaper
    per request than Starlette's BaseHTTPMiddleware)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what Starlette answers if the app raises before starting a response

        async def send_and_note(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # the route's path, not the URL: a scan of random URLs cannot grow the metrics
            path = getattr(scope.get("route"), "path", "other")
            self.metrics.requests.labels(path, str(status)).inc()


def serve(
    model_dir: str | os.PathLike,
    config: ServeConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    access_log: bool = False,
    log_level: str = "info",
) -> None:
    """Serve the model with uvicorn until SIGINT / SIGTERM (requests in flight are answered).

    Raises: ConfigError / ModelLoadError as :func:`create_app`, and ModelLoadError when the
    model fails to load after the server started, or its process dies (the server stops
    first).
    """
    config = (config or ServeConfig()).check()
    server: uvicorn.Server | None = None
    failure: list[BaseException] = []

    def stop(e: BaseException) -> None:
        failure.append(e)
        if server is not None:
            server.should_exit = True

    app = create_app(model_dir, config, device=device, on_fatal=stop)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            access_log=access_log,
            log_level=log_level,
            timeout_graceful_shutdown=int(config.timeout_s) + 5,
        )
    )
    server.run()
    if failure:
        e = failure[0]
        if isinstance(e, LLMEmbedError):
            raise e
        if isinstance(e, InferenceError):
            raise ModelLoadError(f"{e}: the server stopped") from e
        raise ModelLoadError(f"the model failed to load: {_one_line(e)}") from e
