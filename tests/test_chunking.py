"""long_texts = "chunk": a text longer than max_length is embedded in overlapping windows whose
vectors are pooled; a text that fits is embedded exactly as with truncation."""

import math

import numpy as np
import pytest

from llmembed.backbones import Backbone, BackboneSpec
from llmembed.cache import EmbeddingCache
from llmembed.errors import ConfigError

SHORT = ["good movie", "the plot was dull", "a cat", "it is not really fun and very boring"]
# 40 words, one token each for both tiny tokenizers (the tiny BERT's are all [UNK]).
LONG = " ".join(["good", "bad", "movie", "cat", "dog", "the", "plot", "was"] * 5)
HALF = " ".join(LONG.split()[:20])
# What a default spec's to_dict held before chunking: the fingerprints of existing caches.
OLD_KEYS = {
    "model",
    "layers",
    "pooling",
    "max_length",
    "dtype",
    "padding",
    "token_budget",
    "max_batch_size",
}


def _backbone(model, **settings) -> Backbone:
    settings = {"layers": "1,-1", "pooling": "mean,last", "dtype": "float32", **settings}
    return Backbone(BackboneSpec(str(model), **settings), device="cpu")


def _window_vectors(bb: Backbone, windows: list[list[int]]) -> np.ndarray:
    """Each window embedded alone: [n_windows, n_vectors, hidden]."""
    return np.concatenate([bb._forward(*bb._pad([ids])).numpy() for ids in windows])


@pytest.fixture(params=["tiny_llama", "tiny_bert"])
def model(request):
    return request.getfixturevalue(request.param)


def test_the_new_settings_stay_out_of_a_default_spec_and_round_trip():
    assert set(BackboneSpec("m").to_dict()) == OLD_KEYS
    spec = BackboneSpec("m", long_texts="chunk", chunk_stride=7, chunk_pooling="max", max_chunks=3)
    data = spec.to_dict()
    assert data["long_texts"] == "chunk" and data["chunk_stride"] == 7
    assert BackboneSpec.from_dict(data) == spec


@pytest.mark.parametrize(
    "settings",
    [
        {"long_texts": "split"},
        {"chunk_pooling": "sum"},
        {"chunk_stride": 0},
        {"chunk_stride": True},
        {"chunk_stride": 2.5},
        {"max_chunks": 0},
        {"max_chunks": -1},
    ],
)
def test_bad_values_are_refused(settings):
    with pytest.raises(ConfigError, match=next(iter(settings))):
        BackboneSpec("m", **settings)


def test_short_texts_are_bit_identical_in_both_modes(model):
    truncate = _backbone(model, max_length=16)
    chunk = _backbone(model, max_length=16, long_texts="chunk")
    # The last text has exactly 16 tokens with the special ones: it fits, no window is cut.
    fits = " ".join(["good"] * (16 - truncate.load().tokenizer.num_special_tokens_to_add()))
    texts = [*SHORT, fits]
    assert len(truncate.tokenize([fits])[0]) == 16
    assert chunk.windows(texts) == [[ids] for ids in truncate.tokenize(texts)]
    assert np.array_equal(truncate.embed(texts, progress=False), chunk.embed(texts, progress=False))
    assert chunk.count_windows(texts).tolist() == [1] * len(texts)
    assert chunk.fingerprint() != truncate.fingerprint()


def test_chunk_settings_do_not_change_a_truncating_fingerprint(tiny_llama):
    plain = _backbone(tiny_llama)
    ignored = _backbone(tiny_llama, chunk_stride=5, chunk_pooling="max", max_chunks=2)
    assert ignored.fingerprint() == plain.fingerprint()
    assert ignored.count_windows([LONG]).tolist() == [1]


def test_one_window_reproduces_the_tokenizer(model):
    """A window's special tokens are where ``tokenizer(text)`` puts them (with the template)."""
    for template in ("{text}", "this movie is {text} really"):
        bb = _backbone(model, long_texts="chunk", template=template).load()
        plan = bb._window_plan
        tokenizer = bb.tokenizer
        for text in SHORT:
            body = tokenizer(plan.glue + text, add_special_tokens=False)["input_ids"]
            assert plan.cut(body) == bb.tokenize([text])
        template_tokens = 0 if template == "{text}" else 4
        specials = len(plan.before) + len(plan.after) - template_tokens
        assert specials == tokenizer.num_special_tokens_to_add()


@pytest.mark.parametrize("stride", [None, 1, 5, 13])
def test_windows_cover_a_long_text(model, stride):
    bb = _backbone(model, max_length=16, long_texts="chunk", chunk_stride=stride).load()
    body = bb.tokenizer(LONG, add_special_tokens=False)["input_ids"]
    # The special tokens around a text: [CLS] .. [SEP] (BERT), <s> .. (Llama).
    one = bb.tokenize(["good"])[0]
    at = one.index(bb.tokenizer("good", add_special_tokens=False)["input_ids"][0])
    before, after = one[:at], one[at + 1 :]
    size = 16 - len(before) - len(after)
    stride = stride or size * 3 // 4
    windows = bb.windows([LONG])[0]
    n = len(windows)
    assert n == 1 + math.ceil((len(body) - size) / stride)
    for k, window in enumerate(windows):
        assert window == before + body[k * stride : k * stride + size] + after
        assert len(window) <= 16
    # The last window is the first to reach the end of the text.
    assert (n - 2) * stride + size < len(body) <= (n - 1) * stride + size
    assert bb.count_windows([LONG, "cat"]).tolist() == [n, 1]
    assert bb.token_counts([LONG, "cat"]) == [sum(map(len, windows)), len(bb.tokenize(["cat"])[0])]


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_window_vectors_are_pooled(model, pooling):
    # A budget of two windows per batch: a text's windows are spread over several batches.
    bb = _backbone(model, max_length=16, long_texts="chunk", chunk_pooling=pooling, token_budget=32)
    texts = [SHORT[0], LONG, SHORT[1], HALF]
    got = bb.embed(texts, progress=False)
    for text, vectors in zip(texts, got):
        per_window = _window_vectors(bb, bb.windows([text])[0])
        want = per_window.mean(0) if pooling == "mean" else per_window.max(0)
        np.testing.assert_allclose(vectors, want, rtol=1e-5, atol=1e-6)
    seen, counted = [], []
    for idx, vectors in bb.iter_embed(texts):
        np.testing.assert_array_equal(vectors, got[idx])
        seen.extend(idx.tolist())
    bb.embed(texts, progress=False, on_batch=counted.append)
    assert sorted(seen) == list(range(len(texts))) and sum(counted) == len(texts)


def test_max_chunks_keeps_the_first_windows(tiny_llama):
    every = _backbone(tiny_llama, max_length=16, long_texts="chunk")
    capped = _backbone(tiny_llama, max_length=16, long_texts="chunk", max_chunks=2)
    assert every.count_windows([LONG])[0] > 2 and capped.count_windows([LONG]).tolist() == [2]
    assert capped.windows([LONG])[0] == every.windows([LONG])[0][:2]
    want = _window_vectors(every, every.windows([LONG])[0][:2]).mean(0)
    np.testing.assert_allclose(capped.embed([LONG], progress=False)[0], want, rtol=1e-5, atol=1e-6)


def test_a_stride_past_a_window_is_refused_at_load(tiny_llama):
    bb = _backbone(tiny_llama, max_length=16, long_texts="chunk", chunk_stride=16)
    with pytest.raises(ConfigError, match=r"chunk_stride=16 .* use chunk_stride <= 15"):
        bb.load()
    crowded = _backbone(tiny_llama, max_length=4, long_texts="chunk", template="a b c {text}")
    with pytest.raises(ConfigError, match="no room for text"):
        crowded.load()


def test_the_template_is_in_every_window(tiny_llama):
    bb = _backbone(
        tiny_llama, max_length=16, long_texts="chunk", template="this movie is {text} really"
    )
    tokenizer = bb.load().tokenizer
    head = tokenizer("this movie is")["input_ids"]  # <s> this movie is
    tail = tokenizer("really", add_special_tokens=False)["input_ids"]
    windows = bb.windows([LONG])[0]
    assert len(windows) > 1
    for window in windows:
        assert window[: len(head)] == head and window[-len(tail) :] == tail and len(window) <= 16


def test_the_cache_gives_what_embed_gives(model, tmp_path):
    bb = _backbone(model, max_length=16, long_texts="chunk", token_budget=48)
    texts = [SHORT[0], LONG, SHORT[2], HALF, SHORT[3]]
    cache = EmbeddingCache(tmp_path / "cache", chunk_size=2)
    direct = bb.embed(texts, progress=False)
    np.testing.assert_allclose(cache.embed(bb, texts, progress=False), direct, rtol=1e-5, atol=1e-6)
    assert cache.last_misses == len(texts)
    again = cache.embed(bb, texts, progress=False)
    assert cache.last_hits == len(texts)
    np.testing.assert_allclose(again, direct, rtol=1e-5, atol=1e-6)
