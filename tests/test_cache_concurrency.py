"""Processes sharing one cache folder: no duplicated work, unique counts, clean errors."""

import multiprocessing as mp
import time
import traceback

import numpy as np

from llmembed.cache import EmbeddingCache
from llmembed.errors import LLMEmbedError

TEXTS = [f"tiny text {i}" for i in range(4000)]


class Spec:
    model = "fast"


class FastBackbone:
    """Cheap deterministic vectors; a short sleep per call lets two processes interleave."""

    def __init__(self, delay: float = 0.002):
        self.spec = Spec()
        self.n = 0
        self.delay = delay

    def fingerprint(self):
        return "fp-shared"

    def describe(self):
        return {"spec": {"model": "fast"}}

    def token_counts(self, texts):
        return [len(t.split()) for t in texts]  # the cache orders what it computes by these

    def embed(self, texts, progress=True, on_batch=None):
        time.sleep(self.delay)
        self.n += len(texts)
        out = np.array([[[len(t), sum(map(ord, t)) % 1009, i % 7]] for i, t in enumerate(texts)])
        if on_batch:
            on_batch(len(texts))
        return out.astype(np.float32)


def expected(texts):
    return np.array([[[len(t), sum(map(ord, t)) % 1009, 0]] for t in texts], np.float32)


def _writer(root, start, queue):
    bb = FastBackbone()
    start.wait()
    try:
        out = EmbeddingCache(root, chunk_size=100).embed(bb, TEXTS, progress=False)
        queue.put(("ok", bb.n, out[:, :, :2].tobytes()))
    except BaseException:  # noqa: BLE001 - reported to the parent
        queue.put(("error", bb.n, traceback.format_exc()))


def test_two_processes_write_the_same_texts_once(tmp_path):
    ctx = mp.get_context("spawn")
    start, queue = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), start, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    time.sleep(0.5)
    start.set()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    errors = [r[2] for r in results if r[0] == "error"]
    assert not errors, "\n".join(errors)  # the writers' whole tracebacks
    assert sum(r[1] for r in results) == 4000  # nothing computed twice
    want = expected(TEXTS)[:, :, :2].tobytes()
    assert all(r[2] == want for r in results)
    cache = EmbeddingCache(tmp_path)
    [entry] = cache.entries()
    assert entry.n_texts == 4000
    assert cache.last_hits == 0
    got = cache.embed(FastBackbone(), TEXTS, progress=False)
    assert cache.last_hits == 4000
    np.testing.assert_array_equal(got[:, :, :2], expected(TEXTS)[:, :, :2])


def _slow_writer(root, queue):
    try:
        EmbeddingCache(root, chunk_size=10).embed(FastBackbone(0.1), TEXTS[:200], progress=False)
        queue.put("finished")
    except LLMEmbedError as e:
        queue.put(f"LLMEmbedError: {e}")
    except BaseException:  # noqa: BLE001 - reported to the parent
        queue.put(traceback.format_exc())


def test_clear_during_a_run_is_a_clear_error_or_a_finish(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_slow_writer, args=(str(tmp_path), queue))
    p.start()
    folder = tmp_path / "fp-shared"
    deadline = time.time() + 120
    while not list(folder.glob("chunk-*.safetensors")) and time.time() < deadline:
        time.sleep(0.05)
    assert EmbeddingCache(tmp_path).clear() == 1
    outcome = queue.get(timeout=300)
    p.join(60)
    assert outcome == "finished" or outcome.startswith("LLMEmbedError: The embedding cache"), (
        outcome
    )
    assert "Traceback" not in outcome
