"""Threads sharing one Backbone / classifier get exactly the sequential results."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from llmembed import LLMEmbedClassifier
from llmembed.backbones import Backbone, BackboneSpec
from llmembed.testing import WORDS, tiny_recipe

THREADS = 8
CALLS = 24


def _texts(call: int) -> list[str]:
    """Call `call`'s texts: 1-5 texts of 1-60 words, different for every call."""
    rng = np.random.default_rng(call)
    return [
        " ".join(rng.choice(WORDS, size=int(rng.integers(1, 60))))
        for _ in range(int(rng.integers(1, 6)))
    ]


def _run_concurrently(work: Callable[[int], Any], calls: int = CALLS) -> list[Any]:
    """work(0..calls-1) on THREADS threads that all start together; results in call order."""
    barrier = threading.Barrier(THREADS)

    def start(call: int) -> Any:
        if call < THREADS:
            barrier.wait(timeout=60)  # the first THREADS calls start at the same moment
        return work(call)

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(start, range(calls)))


SPECS = {
    # several layers, early stop after layer 2 (of 3), embeddings (layer 0), two poolings
    "llama": dict(layers="0,1,2", pooling="mean_no_first,last", token_budget=64),
    "llama-last": dict(layers="1,-1", pooling="mean", token_budget=64),
    "bert": dict(layers="all", pooling="mean,first", token_budget=64),
    "bert-pooler": dict(pooling="pooler"),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_threads_on_one_backbone_equal_sequential(name, tiny_llama, tiny_bert):
    folder = tiny_llama if name.startswith("llama") else tiny_bert
    spec = BackboneSpec(str(folder), dtype="float32", max_length=256, **SPECS[name])
    sequential = Backbone(spec, "cpu")
    want = [sequential.embed(_texts(c), progress=False) for c in range(CALLS)]
    shared = Backbone(spec, "cpu")  # not loaded: the threads race to load it too
    got = _run_concurrently(lambda c: shared.embed(_texts(c), progress=False))
    for call, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == np.float32 and g.shape == w.shape, call
        assert np.array_equal(g, w), f"call {call} differs from the sequential result"


def test_threads_loading_at_once_load_once(tiny_llama, monkeypatch):
    import transformers

    loads: list[int] = []
    real = transformers.AutoModel.from_pretrained

    def counting(*args, **kwargs):
        loads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", counting)
    bb = Backbone(BackboneSpec(str(tiny_llama), max_length=256), "cpu")
    barrier = threading.Barrier(THREADS)

    def load(_: int) -> tuple[Any, str]:
        barrier.wait(timeout=60)
        return bb.load().model, bb.fingerprint()

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(load, range(THREADS)))
    assert len(loads) == 1
    assert all(model is results[0][0] for model, _ in results)
    assert len({fp for _, fp in results}) == 1


def test_hooks_do_nothing_outside_embed(tiny_llama):
    """The hooks stay registered after load; a direct model call is not captured or stopped."""
    import torch

    bb = Backbone(BackboneSpec(str(tiny_llama), layers="1", dtype="float32"), "cpu").load()
    ids = torch.tensor([bb.tokenize(["good movie"])[0]])
    with torch.inference_mode():
        out = bb.model(input_ids=ids, output_hidden_states=True)
    assert len(out.hidden_states) == bb.num_hidden_states  # ran to the end: not stopped


def test_threads_predict_proba_on_one_classifier(tiny_llama, tiny_bert, toy_texts):
    texts, labels = toy_texts
    recipe = tiny_recipe(tiny_llama, tiny_bert)
    recipe.train.max_epochs = 3
    clf = LLMEmbedClassifier(recipe=recipe, use_cache=False, verbose=False).fit(texts, labels)
    calls = [_texts(c) + texts[c % len(texts) :][:3] for c in range(CALLS)]
    want = [clf.predict_proba(t) for t in calls]
    got = _run_concurrently(lambda c: clf.predict_proba(calls[c]))
    for call, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == w.dtype and np.array_equal(g, w), f"call {call} differs"
