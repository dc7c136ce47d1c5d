import numpy as np
import pytest

from llmembed.backbones import Backbone, BackboneSpec
from llmembed.cache import EmbeddingCache, text_key


class CountingBackbone:
    """Stands in for a Backbone: deterministic vectors, counts the texts it embeds."""

    def __init__(self, fail_after: int | None = None, fp: str = "fp-test"):
        self.spec = BackboneSpec(model="counting")
        self.calls: list[str] = []
        self.fail_after = fail_after
        self._fp = fp

    def fingerprint(self):
        return self._fp

    def describe(self):
        return {"spec": self.spec.to_dict()}

    def token_counts(self, texts):
        return [len(t.split()) for t in texts]  # the cache orders what it computes by these

    def embed(self, texts, progress=True, on_batch=None):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls.extend(texts)
        out = np.stack([[[len(t), sum(map(ord, t)) % 97]] for t in texts]).astype(np.float32)
        if on_batch:
            on_batch(len(texts))
        return out


TEXTS = [f"text number {i}" for i in range(25)]


def test_hit_miss_and_new_texts_only(tmp_path):
    cache = EmbeddingCache(tmp_path, chunk_size=10)
    bb = CountingBackbone()
    first = cache.embed(bb, TEXTS, progress=False)
    assert (cache.last_hits, cache.last_misses) == (0, 25)
    assert len(bb.calls) == 25
    again = cache.embed(bb, TEXTS, progress=False)
    assert len(bb.calls) == 25  # zero new computations
    assert cache.last_hits == 25
    np.testing.assert_array_equal(first, again)
    more = cache.embed(bb, TEXTS + ["a new one", "text number 3"], progress=False)
    assert bb.calls[25:] == ["a new one"]
    np.testing.assert_array_equal(more[-1], first[3])


def test_duplicates_within_a_call_are_computed_once(tmp_path):
    bb = CountingBackbone()
    out = EmbeddingCache(tmp_path).embed(bb, ["x", "y", "x"], progress=False)
    assert bb.calls == ["x", "y"]
    np.testing.assert_array_equal(out[0], out[2])


def test_resume_after_interrupted_run(tmp_path):
    cache = EmbeddingCache(tmp_path, chunk_size=10)
    with pytest.raises(KeyboardInterrupt):
        cache.embed(CountingBackbone(fail_after=10), TEXTS, progress=False)
    # The first chunk was committed; no temp file is left looking like a chunk.
    folder = tmp_path / "fp-test"
    assert len(list(folder.glob("chunk-*.safetensors"))) == 1
    bb = CountingBackbone()
    out = cache.embed(bb, TEXTS, progress=False)
    assert bb.calls == TEXTS[10:]
    np.testing.assert_array_equal(
        out, EmbeddingCache(tmp_path / "fresh").embed(CountingBackbone(), TEXTS, progress=False)
    )


def test_corrupt_chunk_is_detected_and_recomputed(tmp_path):
    cache = EmbeddingCache(tmp_path, chunk_size=10)
    want = cache.embed(CountingBackbone(), TEXTS, progress=False)
    chunk = sorted((tmp_path / "fp-test").glob("chunk-*.safetensors"))[0]
    data = bytearray(chunk.read_bytes())
    data[-3] ^= 0xFF  # flip a byte in the embeddings
    chunk.write_bytes(bytes(data))
    bb = CountingBackbone()
    with pytest.warns(UserWarning, match="corrupt cache chunk"):
        got = cache.embed(bb, TEXTS, progress=False)
    assert 0 < len(bb.calls) <= 10
    np.testing.assert_array_equal(got, want)


def test_truncated_chunk_is_recomputed(tmp_path):
    cache = EmbeddingCache(tmp_path, chunk_size=100)
    cache.embed(CountingBackbone(), TEXTS, progress=False)
    chunk = next((tmp_path / "fp-test").glob("chunk-*.safetensors"))
    chunk.write_bytes(chunk.read_bytes()[:50])
    bb = CountingBackbone()
    with pytest.warns(UserWarning):
        cache.embed(bb, TEXTS, progress=False)
    assert len(bb.calls) == 25


def test_info_and_clear(tmp_path):
    cache = EmbeddingCache(tmp_path, chunk_size=10)
    cache.embed(CountingBackbone(fp="aaa"), TEXTS, progress=False)
    cache.embed(CountingBackbone(fp="bbb"), TEXTS[:5], progress=False)
    entries = {e.fingerprint: e for e in cache.entries()}
    assert entries["aaa"].n_texts == 25 and entries["aaa"].n_chunks == 3
    assert entries["bbb"].n_texts == 5
    assert entries["aaa"].meta["spec"]["model"] == "counting"
    assert cache.clear("aaa") == 1
    assert [e.fingerprint for e in cache.entries()] == ["bbb"]
    assert cache.clear() == 1 and cache.entries() == []


def test_real_backbone_cached_equals_uncached(tmp_path, tiny_llama):
    bb = Backbone(BackboneSpec(str(tiny_llama), layers="1,-1", dtype="float32"), "cpu")
    cache = EmbeddingCache(tmp_path)
    texts = ["good movie", "bad film", "the cat"]
    np.testing.assert_allclose(
        cache.embed(bb, texts, progress=False), bb.embed(texts, progress=False), rtol=1e-5
    )
    assert cache.embed(bb, texts, progress=False).shape == (3, 2, 32)
    assert cache.last_hits == 3


def test_a_folder_of_the_legacy_fingerprint_is_still_read(tmp_path, tiny_llama):
    """Vectors cached by llmembed 0.1.0 sit under the backbone's legacy fingerprint: they are
    read (and new texts added there) rather than computed again into a second folder."""
    spec = BackboneSpec(str(tiny_llama), layers="-1", dtype="float32")
    texts = ["good movie", "bad film", "the cat"]
    first = Backbone(spec, "cpu")
    expected = EmbeddingCache(tmp_path).embed(first, texts, progress=False)
    legacy = first.legacy_fingerprint()
    (tmp_path / first.fingerprint()).rename(tmp_path / legacy)  # the folder as 0.1.0 named it
    cache = EmbeddingCache(tmp_path)
    out = cache.embed(Backbone(spec, "cpu"), [*texts, "a new text"], progress=False)
    assert (cache.last_hits, cache.last_misses) == (3, 1)
    np.testing.assert_array_equal(out[:3], expected)
    assert [p.name for p in tmp_path.iterdir()] == [legacy]
    assert cache.fingerprint_of(first) == legacy and cache.cached(legacy, [text_key("bad film")])
    reader = EmbeddingCache(tmp_path, read_only=True)
    reader.embed(Backbone(spec, "cpu"), [*texts, "a new text"], progress=False)
    assert reader.last_misses == 0


def test_failed_chunk_write_leaves_no_temp_file(tmp_path, monkeypatch):
    from llmembed.cache import _chunks as cache_module

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a chunk")
        raise OSError("disk full")

    monkeypatch.setattr(cache_module, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        EmbeddingCache(tmp_path, chunk_size=10).embed(CountingBackbone(), TEXTS, progress=False)
    names = sorted(p.name for p in (tmp_path / "fp-test").iterdir())
    assert not [n for n in names if n.endswith((".tmp", ".safetensors"))], names


def test_meta_json_is_plain_indented_json(tmp_path):
    import json

    EmbeddingCache(tmp_path).embed(CountingBackbone(), TEXTS[:2], progress=False)
    text = (tmp_path / "fp-test" / "meta.json").read_text()
    meta = json.loads(text)
    assert text == json.dumps(meta, indent=2) and meta["format"] == "1"


def test_all_cached_never_loads_the_model(tiny_llama, tmp_path):
    """The fingerprint of a local model comes from its files and config: a call whose texts
    are all cached does not load the model (and the fingerprint equals the loaded one's)."""
    from llmembed.backbones import Backbone, BackboneSpec
    from llmembed.cache import EmbeddingCache

    spec = BackboneSpec(str(tiny_llama), layers="1,-1", pooling="mean,last")
    texts = ["good movie", "bad film", "the plot was really boring"]
    first = Backbone(spec, device="cpu")
    expected = EmbeddingCache(tmp_path).embed(first, texts, progress=False)
    assert first._model is not None  # it computed, so it loaded
    again = Backbone(spec, device="cpu")
    cache = EmbeddingCache(tmp_path)
    np.testing.assert_array_equal(cache.embed(again, texts, progress=False), expected)
    assert cache.last_misses == 0 and again._model is None
    assert again.fingerprint() == first.fingerprint()


def test_texts_to_compute_are_sorted_by_length_before_chunking(tmp_path):
    """Chunks of similar lengths: the cache orders ALL missing texts longest first before it
    cuts them into chunks, and still returns the vectors in input order."""
    rng = np.random.default_rng(0)
    texts = [" ".join(["w"] * int(n)) + f" {i}" for i, n in enumerate(rng.integers(1, 40, 50))]
    bb = CountingBackbone()
    cache = EmbeddingCache(tmp_path, chunk_size=8)
    out = cache.embed(bb, texts, progress=False)
    lengths = [len(t.split()) for t in bb.calls]
    assert lengths == sorted(lengths, reverse=True) and sorted(bb.calls) == sorted(texts)
    np.testing.assert_array_equal(out, CountingBackbone().embed(texts))


def test_progress_bar_counts_tokens(tmp_path, monkeypatch):
    """The extraction bar's total is the missing texts' tokens, and it reaches it: cached texts
    count as done, computed ones as their batches finish."""
    import llmembed.cache as cache_module

    bars = []

    class Recorder:
        def __init__(self, total, **kw):
            self.total, self.n, self.kw = total, 0, kw
            bars.append(self)

        def update(self, n):
            self.n += n

        def close(self):
            pass

    monkeypatch.setattr(cache_module, "tqdm", Recorder)
    texts = [" ".join(["w"] * (i % 7 + 1)) + f" {i}" for i in range(30)]
    cache = EmbeddingCache(tmp_path, chunk_size=4)
    cache.embed(CountingBackbone(), texts[:10])
    cache.embed(CountingBackbone(), texts)  # 10 cached, 20 to compute
    tokens = [len(t.split()) for t in texts]
    assert [b.total for b in bars] == [sum(tokens[:10]), sum(tokens[10:])]
    assert all(b.n == b.total and b.kw["unit"] == "tok" for b in bars)
    assert bars[1].kw["desc"] == "embed counting (20 texts)"
