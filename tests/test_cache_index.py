"""The indexed cache: old folders read as they are, lookups that read only what they need,
compaction, wrong-shape chunks, orphan temp files, crash points, LRU eviction."""

import hashlib
import os
import sqlite3
import time

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from llmembed.cache import EmbeddingCache, _chunks, _index, text_key


class Spec:
    model = "fake"


class FakeBackbone:
    """Deterministic vectors [n, n_vectors, width]; records the texts it embeds."""

    def __init__(self, fp: str = "fp-test", n_vectors: int = 2, width: int = 3):
        self.spec = Spec()
        self.calls: list[str] = []
        self._fp, self.n_vectors, self.width = fp, n_vectors, width

    def fingerprint(self):
        return self._fp

    def describe(self):
        return {"spec": {"model": "fake"}}

    def token_counts(self, texts):
        return [len(t.split()) for t in texts]  # the cache orders what it computes by these

    def embed(self, texts, progress=True, on_batch=None):
        self.calls.extend(texts)
        out = np.empty((len(texts), self.n_vectors, self.width), np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
            out[i] = np.random.default_rng(seed).standard_normal(out.shape[1:])
        if on_batch:
            on_batch(len(texts))
        return out


TEXTS = [f"text {i}" for i in range(60)]


def legacy_chunk(folder, texts, bb=None):
    """A chunk exactly as the first cache wrote it (format 1), with no index entry."""
    bb = bb or FakeBackbone()
    folder.mkdir(parents=True, exist_ok=True)
    keys = _chunks.keys_array([text_key(t) for t in texts])
    return _chunks.write_chunk(folder, keys, bb.embed(texts))


def chunk_files(folder):
    return sorted(p.name for p in folder.glob("chunk-*.safetensors"))


def test_legacy_folder_indexed_from_keys_then_read(tmp_path, monkeypatch):
    folder = tmp_path / "fp-test"
    legacy_chunk(folder, TEXTS[:30])
    legacy_chunk(folder, TEXTS[20:50])  # overlapping rows, as two old concurrent writers made
    loads = []
    real = _chunks.load_file
    monkeypatch.setattr(_chunks, "load_file", lambda p: loads.append(p) or real(p))
    cache = EmbeddingCache(tmp_path)
    [entry] = cache.entries()  # builds the index: keys only
    assert loads == [] and entry.n_texts == 50 and entry.n_chunks == 2
    bb = FakeBackbone()
    got = cache.embed(bb, TEXTS, progress=False)
    assert bb.calls == TEXTS[50:] and cache.last_hits == 50
    np.testing.assert_array_equal(got, FakeBackbone().embed(TEXTS))
    assert len(loads) == 2  # each old chunk verified once, on its first read
    loads.clear()
    again = EmbeddingCache(tmp_path).embed(FakeBackbone(), TEXTS, progress=False)
    np.testing.assert_array_equal(again, got)
    assert loads == []  # verified chunks: only the requested rows are read


def test_new_chunks_follow_format_1(tmp_path):
    cache = EmbeddingCache(tmp_path, chunk_size=16)
    cache.embed(FakeBackbone(), TEXTS, progress=False)
    for p in (tmp_path / "fp-test").glob("chunk-*.safetensors"):
        data = load_file(p)
        with safe_open(p, framework="numpy") as f:
            meta = f.metadata()
        assert data["keys"].dtype == np.uint8 and data["keys"].shape[1] == 16
        assert data["embeddings"].dtype == np.float32 and data["embeddings"].ndim == 3
        assert meta["checksum"] == _chunks.checksum(data["keys"], data["embeddings"])
        assert meta["format"] == "1"


def test_lookup_reads_only_requested_rows(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path, chunk_size=20)
    want = cache.embed(FakeBackbone(), TEXTS, progress=False)
    reads = []
    real = _chunks.read_rows
    monkeypatch.setattr(_chunks, "load_file", lambda p: pytest.fail("whole chunk loaded"))
    import llmembed.cache as cache_pkg

    monkeypatch.setattr(cache_pkg, "read_rows", lambda p, r: reads.append(len(r)) or real(p, r))
    got = EmbeddingCache(tmp_path).embed(FakeBackbone(), [TEXTS[7], TEXTS[45]], progress=False)
    np.testing.assert_array_equal(got, want[[7, 45]])
    assert sorted(reads) == [1, 1]


def test_repeated_hits_write_nothing(tmp_path):
    cache = EmbeddingCache(tmp_path, chunk_size=20)
    cache.embed(FakeBackbone(), TEXTS, progress=False)
    folder = tmp_path / "fp-test"

    def state():
        return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}

    before = state()
    for _ in range(3):
        EmbeddingCache(tmp_path).embed(FakeBackbone(), TEXTS[::7], progress=False)
    assert state() == before


def test_wrong_shape_chunk_is_corrupt(tmp_path):
    cache = EmbeddingCache(tmp_path, chunk_size=20)
    want = cache.embed(FakeBackbone(), TEXTS[:40], progress=False)
    bad = legacy_chunk(tmp_path / "fp-test", TEXTS[40:], FakeBackbone(width=5))
    bb = FakeBackbone()
    with pytest.warns(UserWarning, match="corrupt cache chunk.*shape"):
        got = cache.embed(bb, TEXTS, progress=False)
    assert bb.calls == TEXTS[40:]
    assert not (tmp_path / "fp-test" / bad).exists()
    np.testing.assert_array_equal(got[:40], want)
    assert got.shape == (60, 2, 3)


def test_one_text_calls_are_compacted(tmp_path):
    cache = EmbeddingCache(tmp_path, chunk_size=1024, compact_after=8)
    bb = FakeBackbone()
    for t in TEXTS:
        cache.embed(bb, [t], progress=False)
    folder = tmp_path / "fp-test"
    assert len(chunk_files(folder)) <= 9
    assert cache.entries()[0].n_texts == 60
    assert cache.compact() >= 1
    assert len(chunk_files(folder)) == 1
    np.testing.assert_array_equal(
        cache.embed(FakeBackbone(), TEXTS, progress=False), FakeBackbone().embed(TEXTS)
    )
    assert cache.last_hits == 60


def test_compact_drops_duplicate_rows(tmp_path):
    folder = tmp_path / "fp-test"
    for _ in range(3):
        legacy_chunk(folder, TEXTS[:30])
    cache = EmbeddingCache(tmp_path)
    assert cache.entries()[0].n_texts == 30
    cache.compact()
    [name] = chunk_files(folder)
    assert load_file(folder / name)["keys"].shape == (30, 16)
    np.testing.assert_array_equal(
        cache.embed(FakeBackbone(), TEXTS[:30], progress=False), FakeBackbone().embed(TEXTS[:30])
    )


def test_orphan_temp_files_cleaned(tmp_path):
    folder = tmp_path / "fp-test"
    folder.mkdir()
    old = folder / ".chunk-dead.safetensors.0123.tmp"
    fresh = folder / ".chunk-live.safetensors.4567.tmp"
    old.write_bytes(b"half")
    fresh.write_bytes(b"half")
    past = time.time() - _index.TMP_MAX_AGE_S - 60
    os.utime(old, (past, past))
    EmbeddingCache(tmp_path).embed(FakeBackbone(), TEXTS[:3], progress=False)
    assert not old.exists() and fresh.exists()


def test_missing_chunk_file_and_missing_index(tmp_path):
    cache = EmbeddingCache(tmp_path, chunk_size=20)
    want = cache.embed(FakeBackbone(), TEXTS, progress=False)
    folder = tmp_path / "fp-test"
    (folder / chunk_files(folder)[0]).unlink()  # index rows now point at nothing
    bb = FakeBackbone()
    np.testing.assert_array_equal(cache.embed(bb, TEXTS, progress=False), want)
    assert len(bb.calls) == 20
    for name in _index.INDEX_FILES:
        (folder / name).unlink(missing_ok=True)
    bb = FakeBackbone()
    np.testing.assert_array_equal(cache.embed(bb, TEXTS, progress=False), want)
    assert bb.calls == [] and cache.entries()[0].n_texts == 60


def test_killed_between_chunk_and_index(tmp_path, monkeypatch):
    def killed(self, *a, **k):
        raise KeyboardInterrupt("killed after the rename, before the index commit")

    monkeypatch.setattr(_index.FolderIndex, "add_chunk", killed)
    with pytest.raises(KeyboardInterrupt):
        EmbeddingCache(tmp_path, chunk_size=20).embed(FakeBackbone(), TEXTS, progress=False)
    monkeypatch.undo()
    assert len(chunk_files(tmp_path / "fp-test")) == 1
    bb = FakeBackbone()
    got = EmbeddingCache(tmp_path, chunk_size=20).embed(bb, TEXTS, progress=False)
    assert bb.calls == TEXTS[20:]  # the unindexed chunk was taken in, not recomputed
    np.testing.assert_array_equal(got, FakeBackbone().embed(TEXTS))


def test_index_corrupted_row_detected(tmp_path):
    cache = EmbeddingCache(tmp_path, chunk_size=20)
    want = cache.embed(FakeBackbone(), TEXTS, progress=False)
    db = sqlite3.connect(tmp_path / "fp-test" / _index.INDEX_NAME)
    db.execute("UPDATE keys SET row = (row + 1) % 20")  # every key points at a wrong row
    db.commit()
    db.close()
    np.testing.assert_array_equal(cache.embed(FakeBackbone(), TEXTS, progress=False), want)


def test_max_bytes_evicts_least_recently_used(tmp_path):
    cache = EmbeddingCache(tmp_path, chunk_size=20)
    cache.embed(FakeBackbone("old"), TEXTS, progress=False)
    cache.embed(FakeBackbone("mid"), TEXTS, progress=False)
    for fp, age in (("old", 5000), ("mid", 1000)):
        db = sqlite3.connect(tmp_path / fp / _index.INDEX_NAME)
        db.execute("UPDATE chunks SET last_used = last_used - ?", (age,))
        db.commit()
        db.close()
    sizes = {e.fingerprint: e.bytes for e in cache.entries()}
    limited = EmbeddingCache(tmp_path, chunk_size=20, max_bytes=sizes["mid"] * 2 + sizes["old"] - 1)
    limited.embed(FakeBackbone("new"), TEXTS, progress=False)
    counts = {e.fingerprint: e.n_texts for e in cache.entries()}
    assert counts["new"] == 60 and counts["mid"] == 60 and counts["old"] < 60
    bb = FakeBackbone("old")
    np.testing.assert_array_equal(
        cache.embed(bb, TEXTS, progress=False), FakeBackbone().embed(TEXTS)
    )
    assert 0 < len(bb.calls) == 60 - counts["old"]


def test_add_writes_through_the_cache_writer(tmp_path):
    cache = EmbeddingCache(tmp_path, chunk_size=16)
    keys = [text_key(t) for t in TEXTS]
    vectors = FakeBackbone().embed(TEXTS)
    assert cache.cached("fp-test", keys) == 0  # no folder yet
    assert cache.add("fp-test", keys[:25], vectors[:25], meta={"spec": {"model": "fake"}}) == 25
    assert cache.cached("fp-test", keys + keys[:5]) == 25  # duplicates counted once
    assert cache.add("fp-test", keys, vectors) == 35
    assert cache.cached("fp-test", keys) == 60
    assert cache.add("fp-test", keys[:10], vectors[:10]) == 0  # already there
    bb = FakeBackbone()
    np.testing.assert_array_equal(cache.embed(bb, TEXTS, progress=False), vectors)
    assert bb.calls == [] and cache.entries()[0].n_chunks == 2 + 3  # 25 and 35 rows by 16


def test_concurrent_opens_of_a_new_index_all_succeed(tmp_path):
    """Processes opening a new cache folder at once: the WAL conversion needs the file to
    itself and SQLite's busy timeout does not cover it. 32 threads open each of 40 new folders
    at once; with a single ``PRAGMA journal_mode=WAL`` 1-2 of the 40 raised "database is
    locked" in each of three runs (a CI failure of test_cache_concurrency), now none does."""
    import threading

    errors: list[str] = []

    def open_index(folder):
        try:
            _index.FolderIndex(folder, 30.0).close()
        except sqlite3.Error as e:
            errors.append(repr(e))

    for i in range(40):
        folder = tmp_path / str(i)
        folder.mkdir()
        threads = [threading.Thread(target=open_index, args=(folder,)) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        index = _index.FolderIndex(folder)
        assert index.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        index.close()
    assert errors == []
