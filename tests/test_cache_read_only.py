"""EmbeddingCache(read_only=True): same vectors as the read-write cache, nothing written."""

import hashlib
import os

import numpy as np

from llmembed.cache import EmbeddingCache

from .test_cache import CountingBackbone
from .test_cache_index import TEXTS, FakeBackbone, chunk_files, legacy_chunk


def tree(root):
    """Every directory and file under root: name -> (size, mtime_ns, sha256 of the bytes)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            digest = None
            if name in filenames:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns, digest)
    return out


def expected(tmp_path, texts, bb_class=FakeBackbone):
    """What a read-write cache on a fresh root returns."""
    return EmbeddingCache(tmp_path / "reference").embed(bb_class(), texts, progress=False)


def warm(root, texts, chunk_size=10):
    EmbeddingCache(root, chunk_size=chunk_size).embed(FakeBackbone(), texts, progress=False)
    return tree(root)


def test_warm_cache_mix_of_cached_and_new_texts(tmp_path):
    root = tmp_path / "cache"
    before = warm(root, TEXTS[:30])
    texts = TEXTS[20:40] + [TEXTS[25], TEXTS[35]]  # 10 cached, 10 new, a duplicate of each
    ro = EmbeddingCache(root, chunk_size=10, read_only=True)
    assert ro.read_only
    bb = FakeBackbone()
    got = ro.embed(bb, texts, progress=False)
    assert got.dtype == np.float32 and got.shape == (22, 2, 3)
    np.testing.assert_array_equal(got, expected(tmp_path, texts))
    assert (ro.last_hits, ro.last_misses) == (11, 10)
    assert sorted(bb.calls) == sorted(TEXTS[30:40])  # cached texts are not recomputed
    assert tree(root) == before
    # Nothing was stored: the new texts are misses again.
    np.testing.assert_array_equal(ro.embed(bb, texts, progress=False), got)
    assert ro.last_misses == 10 and len(bb.calls) == 20
    assert tree(root) == before


def test_all_cached_computes_nothing(tmp_path):
    root = tmp_path / "cache"
    before = warm(root, TEXTS)
    ro = EmbeddingCache(root, read_only=True)
    bb = CountingBackbone()  # would give other vectors: every row must come from the cache
    got = ro.embed(bb, TEXTS[::-1], progress=False)
    assert bb.calls == [] and (ro.last_hits, ro.last_misses) == (60, 0)
    np.testing.assert_array_equal(got, expected(tmp_path, TEXTS[::-1]))
    assert tree(root) == before


def test_missing_root_creates_nothing(tmp_path):
    root = tmp_path / "does" / "not" / "exist"
    ro = EmbeddingCache(root, read_only=True)
    bb = FakeBackbone()
    texts = ["a", "b", "a"]
    np.testing.assert_array_equal(ro.embed(bb, texts, progress=False), expected(tmp_path, texts))
    assert bb.calls == ["a", "b"] and (ro.last_hits, ro.last_misses) == (0, 2)
    empty = ro.embed(bb, [], progress=False)
    assert empty.shape == (0, 0) and empty.dtype == np.float32
    assert (ro.last_hits, ro.last_misses) == (0, 0)
    assert not (tmp_path / "does").exists()


def test_corrupt_chunk_is_a_miss_and_left_alone(tmp_path):
    root = tmp_path / "cache"
    warm(root, TEXTS[:30])
    folder = root / "fp-test"
    chunk = folder / chunk_files(folder)[0]
    data = bytearray(chunk.read_bytes())
    data[-3] ^= 0xFF  # a byte of the last row's embeddings
    chunk.write_bytes(bytes(data))
    before = tree(root)
    ro = EmbeddingCache(root, read_only=True)
    bb = FakeBackbone()
    got = ro.embed(bb, TEXTS[:30], progress=False)
    np.testing.assert_array_equal(got, expected(tmp_path, TEXTS[:30]))
    assert 1 <= ro.last_misses <= 10 and ro.last_hits == 30 - ro.last_misses
    assert len(bb.calls) == ro.last_misses
    assert tree(root) == before  # not deleted, not forgotten by the index


def test_unverified_chunk_is_verified_in_memory_only(tmp_path):
    root = tmp_path / "cache"
    folder = root / "fp-test"
    legacy_chunk(folder, TEXTS[:10])  # format-1 chunk without row hashes
    EmbeddingCache(root).entries()  # indexes it from its keys: not verified yet
    good = tree(root)
    ro = EmbeddingCache(root, read_only=True)
    bb = FakeBackbone()
    np.testing.assert_array_equal(
        ro.embed(bb, TEXTS[:10], progress=False), expected(tmp_path, TEXTS[:10])
    )
    assert bb.calls == [] and ro.last_hits == 10
    assert tree(root) == good  # the verification was not recorded
    chunk = folder / chunk_files(folder)[0]
    chunk.write_bytes(chunk.read_bytes()[:-4] + b"\0\0\0\0")  # fails the checksum
    bad = tree(root)
    np.testing.assert_array_equal(
        ro.embed(bb, TEXTS[:10], progress=False), expected(tmp_path, TEXTS[:10])
    )
    assert (ro.last_hits, ro.last_misses) == (0, 10)
    assert tree(root) == bad


def test_no_index_or_unreadable_index_is_all_misses(tmp_path):
    root = tmp_path / "cache"
    warm(root, TEXTS[:10])
    index = root / "fp-test" / "index.sqlite"
    ro = EmbeddingCache(root, read_only=True)
    for content in (None, b"not a database at all" * 100):
        if content is None:
            index.unlink()
        else:
            index.write_bytes(content)
        before = tree(root)
        bb = FakeBackbone()
        got = ro.embed(bb, TEXTS[:10], progress=False)
        np.testing.assert_array_equal(got, expected(tmp_path, TEXTS[:10]))
        assert (ro.last_hits, ro.last_misses) == (0, 10) and len(bb.calls) == 10
        assert tree(root) == before


def test_cached_vectors_of_another_shape_are_not_used(tmp_path):
    before = warm(tmp_path, TEXTS[:10])  # [n, 2, 3] under fp-test; the only writer here
    ro = EmbeddingCache(tmp_path, read_only=True)
    bb = FakeBackbone(n_vectors=1, width=4)  # same fingerprint, another shape
    got = ro.embed(bb, TEXTS[:5] + ["new"], progress=False)
    assert got.shape == (6, 1, 4) and ro.last_misses == 6
    want = FakeBackbone(n_vectors=1, width=4).embed(TEXTS[:5] + ["new"])
    np.testing.assert_array_equal(got, want)
    assert tree(tmp_path) == before
