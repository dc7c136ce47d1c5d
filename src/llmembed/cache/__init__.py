"""On-disk embedding cache: extraction is the expensive step, so each text is embedded once.

Layout of ``<root>/<backbone fingerprint>/``:

* ``meta.json``: what the backbone is (written once).
* ``chunk-*.safetensors``: ``keys`` [k, 16] uint8 (blake2b of each text) and ``embeddings``
  [k, n_vectors, width] float32, with a sha256 ``checksum`` in the metadata (format "1", the
  same as the first version of the cache: old folders are read as they are).
* ``index.sqlite`` (+ ``-wal`` / ``-shm``): key -> (chunk, row, row hash), see
  :mod:`llmembed.cache._index`. Built from the chunks' keys on first open; never the truth
  (deleting it is safe, it is rebuilt).
* ``write.lock``: the writers' ``flock`` (:mod:`llmembed.cache._lock`).

A lookup reads the index rows of the requested texts and, from each chunk, only the rows asked
for; each row handed out is checked against its hash in the index, a chunk's full checksum is
verified when the index first reads it (and whenever a row check or a read fails). A chunk that
fails, or whose vectors have another shape than the folder's, is deleted with a warning and its
texts recomputed. Writes go temp file -> fsync -> rename -> index transaction, so a run killed
at any moment leaves complete chunks and a consistent index (chunks the index lacks are taken in
on the next open; index rows of vanished files are dropped). Writers of one fingerprint take the
folder lock per chunk and re-check what is missing after getting it, so concurrent processes
split the work instead of duplicating it. Small chunks are merged (:meth:`EmbeddingCache.compact`,
automatic past ``compact_after`` of them); ``max_bytes`` evicts least recently used chunks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import LLMEmbedError
from ..files import atomic_write_json
from ._chunks import (
    FORMAT_VERSION,
    CorruptChunk,
    is_chunk_name,
    keys_array,
    load_verified,
    read_header,
    read_rows,
    row_sums,
    write_chunk,
)
from ._features import FeatureFile
from ._index import ChunkRow, FolderIndex
from ._lock import CacheClearedError, cleared_error, folder_lock

if TYPE_CHECKING:
    from ..backbones import Backbone

__all__ = [
    "FORMAT_VERSION",
    "CacheClearedError",
    "CacheEntry",
    "EmbeddingCache",
    "FeatureFile",
    "default_cache_dir",
    "text_key",
]

TOUCH_INTERVAL_S = 300.0  # last use is recorded at most this often per chunk (pure hits: no write)
_READ_TRIES = 3


def default_cache_dir() -> Path:
    """LLMEMBED_CACHE, else the user's cache dir (e.g. ~/.cache/llmembed/embeddings)."""
    env = os.environ.get("LLMEMBED_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("llmembed")) / "embeddings"


class _TokenBar:
    """The extraction progress bar, counted in tokens.

    Why not texts: cost follows tokens, and the missing texts go longest first (for padding), so
    a bar in texts/s would start at the slowest rate and promise, on R8 with EmbeddingGemma,
    47 minutes for a run that takes about 12. The tokens are each text's
    :meth:`~llmembed.backbones.Backbone.token_counts` (windows summed when chunking).
    """

    def __init__(self, keys: list[bytes], tokens: list[int], desc: str, disable: bool) -> None:
        self.tokens = dict(zip(keys, tokens))
        self.bar = tqdm(
            total=int(sum(tokens)), desc=desc, unit="tok", unit_scale=True, disable=disable
        )

    def done(self, keys: Sequence[bytes]) -> None:
        """Count these texts as finished."""
        self.bar.update(sum(self.tokens[k] for k in keys))

    def counter(self, keys: list[bytes]) -> Callable[[int], None]:
        """An ``on_batch(n)`` for :meth:`Backbone.embed` of ``keys``' texts: each call counts
        the next n of them (in order: close enough, they are sorted by length)."""
        position = 0

        def on_batch(n: int) -> None:
            nonlocal position
            self.done(keys[position : position + n])
            position += n

        return on_batch

    def close(self) -> None:
        self.bar.close()


def text_key(text: str) -> bytes:
    """16-byte identity of a text (blake2b)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _env_max_bytes() -> int | None:
    value = os.environ.get("LLMEMBED_CACHE_MAX_BYTES", "").strip()
    if not value:
        return None
    try:
        return int(float(value))
    except ValueError:
        raise LLMEmbedError(
            f"LLMEMBED_CACHE_MAX_BYTES={value!r} is not a number of bytes"
        ) from None


@dataclass
class CacheEntry:
    """One backbone's cached embeddings, as `llmembed cache info` shows them.

    n_texts counts unique texts; bytes is every file of the folder (chunks and index).
    """

    fingerprint: str
    path: Path
    n_texts: int
    n_chunks: int
    bytes: int
    meta: dict[str, Any]


class _Restart(Exception):
    """The folder's recorded shape was wrong (wrong-shape chunks held the majority): redo."""


@dataclass(frozen=True)
class _Spill:
    """Where a result larger than ``over`` bytes goes instead of memory: a FeatureFile at
    ``path`` (see ``EmbeddingCache.embed``'s ``spill_dir``)."""

    path: Path
    over: int

    def allocate(self, shape: tuple[int, ...]) -> np.ndarray | FeatureFile:
        if 4 * int(np.prod(shape, dtype=np.int64)) > self.over:
            return FeatureFile(self.path, shape)
        return np.empty(shape, dtype=np.float32)


class _Result:
    """Vectors of the unique requested keys, filled as they are read or computed (in memory,
    or in a FeatureFile on disk when ``spill`` says so)."""

    def __init__(self, keys: list[bytes], spill: _Spill | None = None) -> None:
        self.pos = {k: i for i, k in enumerate(keys)}
        self.filled = np.zeros(len(keys), dtype=bool)
        self.buf: np.ndarray | FeatureFile | None = None
        self.spill = spill

    def put(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        if self.buf is None:
            shape = (len(self.pos), *vectors.shape[1:])
            self.buf = (
                np.empty(shape, dtype=np.float32)
                if self.spill is None
                else self.spill.allocate(shape)
            )
        elif self.buf.shape[1:] != vectors.shape[1:]:
            raise _Restart
        idx = np.fromiter((self.pos[k] for k in keys), dtype=np.int64, count=len(keys))
        if isinstance(self.buf, FeatureFile):
            self.buf.write(idx, vectors)
        else:
            self.buf[idx] = vectors
        self.filled[idx] = True

    def has(self, key: bytes) -> bool:
        return bool(self.filled[self.pos[key]])

    def output(self, keys: list[bytes]) -> np.ndarray | FeatureFile:
        """The vectors of ``keys`` (duplicates allowed) in their order."""
        if self.buf is None:
            return np.zeros((0, 0), dtype=np.float32)
        if len(self.pos) == len(keys):
            return self.buf
        order = np.fromiter((self.pos[k] for k in keys), dtype=np.int64, count=len(keys))
        if not isinstance(self.buf, FeatureFile):
            return self.buf[order]
        unique = self.buf
        out = FeatureFile(unique.path.with_suffix(".rows.npy"), (len(keys), *unique.shape[1:]))
        step = max(1, (64 << 20) // max(1, unique.nbytes // max(1, len(unique))))
        for s in range(0, len(keys), step):
            part = order[s : s + step]
            rows, inverse = np.unique(part, return_inverse=True)
            out.write(np.arange(s, s + len(part)), unique.take(rows)[inverse])
        unique.close()
        unique.path.unlink()
        return out


def _remove_stale_spills(root: Path) -> None:
    """Delete the spill folders (``.spill-<pid>-*``) of processes that no longer run."""
    for folder in root.glob(".spill-*"):
        try:
            os.kill(int(folder.name.split("-")[1]), 0)
        except (ValueError, IndexError, ProcessLookupError):
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # PermissionError: another user's process, alive


def _same_dir(folder: Path, ident: os.stat_result) -> bool:
    try:
        return os.path.samestat(os.stat(folder), ident)
    except OSError:
        return False


def _read_only_rows(folder: Path, want: list[bytes], result: _Result) -> None:
    """Fill ``result`` with the wanted keys the folder's existing index holds, writing nothing.

    The index is opened read-only (:class:`FolderIndex` ``read_only``); a missing or unreadable
    index leaves every key a miss, a chunk that is gone, corrupt or does not match is skipped.
    """
    try:
        index = FolderIndex(folder, read_only=True)
    except sqlite3.Error:
        return
    try:
        shape = index.shape
        loc = index.lookup(want)
        by_chunk: dict[int, list[bytes]] = {}
        for k, (cid, _row, _sum) in loc.items():
            by_chunk.setdefault(cid, []).append(k)
        for info in index.chunks(by_chunk):
            if info.shape != shape:
                continue
            ks = sorted(by_chunk[info.id], key=lambda k: loc[k][1])
            with contextlib.suppress(OSError, CorruptChunk):
                data = _checked_rows(folder / info.name, info, ks, loc)
                if data is not None:
                    result.put(ks, data)
    except sqlite3.Error:
        pass  # not an index, or torn by a writer checkpointing: what was read is valid
    finally:
        index.close()


def _checked_rows(
    path: Path, info: ChunkRow, ks: list[bytes], loc: dict[bytes, tuple[int, int, bytes | None]]
) -> np.ndarray | None:
    """Vectors of the keys ``ks`` (sorted by row) from one chunk, or None if a key, a row hash
    the index has, or the shape does not match. A verified chunk with every row hash known is
    read row by row, any other one is checksum-verified whole, in memory (nothing is recorded).

    Raises:
        FileNotFoundError / CorruptChunk: as :func:`read_rows` / :func:`load_verified`.
    """
    rows = np.fromiter((loc[k][1] for k in ks), dtype=np.int64, count=len(ks))
    sums = [loc[k][2] for k in ks]
    if info.verified and None not in sums:
        file_keys, data = read_rows(path, rows)
    else:
        all_keys, emb = load_verified(path)
        if emb.ndim != 3 or rows[-1] >= min(len(all_keys), len(emb)):
            return None
        file_keys, data = all_keys[rows], np.ascontiguousarray(emb[rows], dtype=np.float32)
    if (
        tuple(data.shape[1:]) != info.shape
        or file_keys.tobytes() != b"".join(ks)
        or any(s is not None and s != r for s, r in zip(sums, row_sums(ks, data)))
    ):
        return None
    return data


class EmbeddingCache:
    """Cache of pooled embeddings keyed by (backbone fingerprint, text hash).

    Takes:
        root: cache folder (default :func:`default_cache_dir`).
        chunk_size: texts embedded between two writes (a killed run loses at most one chunk of
            work), and the size compaction merges small chunks up to.
        max_bytes: size limit of the whole cache; past it, least recently used chunks of any
            fingerprint are deleted after a write (default: ``LLMEMBED_CACHE_MAX_BYTES``, else
            none). Chunks used by the current call are kept.
        compact_after: a folder with more small chunks (under half ``chunk_size`` live rows, or
            half dead) than this is compacted after a write; 0 turns it off.
        read_only: ``embed`` never creates, modifies or deletes anything under ``root`` (for a
            server's request path): it reads the vectors the existing index points at whose
            keys and row hashes (or whole-chunk checksum) check out, computes the rest in
            memory without storing them, and treats a missing folder or index, an index it
            cannot read, and any bad chunk as misses. No LRU touch, compaction or eviction;
            chunks the index does not know are not taken in. ``add``, ``compact`` and
            ``clear`` still write.

    Raises:
        LLMEmbedError: LLMEMBED_CACHE_MAX_BYTES is not a number.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        chunk_size: int = 1024,
        *,
        max_bytes: int | None = None,
        compact_after: int = 32,
        read_only: bool = False,
    ) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.chunk_size = chunk_size
        self.max_bytes = max_bytes if max_bytes is not None else _env_max_bytes()
        self.compact_after = compact_after
        self.read_only = read_only
        self.last_hits = 0
        self.last_misses = 0

    # -- the main entry point ----------------------------------------------------------------------
    def embed(
        self,
        backbone: Backbone,
        texts: Sequence[str],
        progress: bool = True,
        *,
        spill_dir: str | os.PathLike | None = None,
        spill_over: int = 0,
    ) -> np.ndarray | FeatureFile:
        """Embeddings of `texts` [n, n_vectors, width]: cached ones read, only new ones computed.

        Takes: a backbone (``fingerprint()``, ``describe()``, ``embed(texts, progress,
        on_batch)``, ``spec.model``), the texts, and whether to show a progress bar;
        ``spill_dir``: a folder where a result of more than ``spill_over`` bytes is written, as
        a :class:`FeatureFile` named after the fingerprint, instead of being held in memory
        (for training sets larger than memory; the caller deletes the file).
        Returns: float32 [len(texts), n_vectors, width] in input order (``[0, 0]`` for no
        texts), a numpy array or a FeatureFile; ``last_hits`` / ``last_misses`` say how many
        were read / computed.
        Raises:
            CacheClearedError (an LLMEmbedError): the folder was removed by another process
                (``cache clear``) during the call.
            whatever ``backbone.embed`` raises (the chunks written before stay valid).
        """
        spill = None
        if spill_dir is not None:
            spill = _Spill(Path(spill_dir) / f"{backbone.fingerprint()}.npy", spill_over)
        if self.read_only:
            return self._embed_read_only(backbone, texts, progress, spill)
        folder = self.root / self.fingerprint_of(backbone)
        folder.mkdir(parents=True, exist_ok=True)
        ident = os.stat(folder)
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            meta = {"format": FORMAT_VERSION, **backbone.describe()}
            atomic_write_json(meta_path, meta, indent=2)
        keys = [text_key(t) for t in texts]
        for attempt in range(2):
            try:
                index = FolderIndex(folder)
                try:
                    out = self._embed(index, folder, ident, backbone, texts, keys, progress, spill)
                finally:
                    index.close()
            except _Restart:
                if attempt:
                    raise LLMEmbedError(f"inconsistent vector shapes in {folder}") from None
                continue
            except (OSError, sqlite3.Error) as e:
                if not _same_dir(folder, ident):
                    raise cleared_error(folder) from e
                raise
            break
        if self.max_bytes is not None and self.last_misses:
            self._evict(keep={folder.name})
        return out

    def _embed(
        self,
        index: FolderIndex,
        folder: Path,
        ident: os.stat_result,
        backbone: Backbone,
        texts: Sequence[str],
        keys: list[bytes],
        progress: bool,
        spill: _Spill | None,
    ) -> np.ndarray | FeatureFile:
        uniq = list(dict.fromkeys(keys))
        text_of = dict(zip(keys, texts))
        result = _Result(uniq, spill)
        used: dict[int, ChunkRow] = {}
        index.sync()
        self._read(index, folder, uniq, result, used)
        missing = [k for k in uniq if not result.has(k)]
        computed: set[bytes] = set()
        if missing:
            # Longest first over ALL missing texts, then cut into chunks: a chunk's batches hold
            # texts of similar length, so padding is not wasted (chunks stay the crash unit).
            lengths = backbone.token_counts([text_of[k] for k in missing])
            order = np.argsort(-np.asarray(lengths), kind="stable")
            missing = [missing[i] for i in order]
            bar = _TokenBar(
                missing,
                [lengths[i] for i in order],
                f"embed {backbone.spec.model} ({len(missing):,} texts)",
                disable=not progress,
            )
            try:
                start = 0
                while start < len(missing):
                    with self._locked(folder, ident):
                        index.sync()  # another process may have written what we miss
                        while start < len(missing):
                            window = missing[start : start + self.chunk_size]
                            start += self.chunk_size
                            self._read(index, folder, window, result, used)
                            bar.done([k for k in window if result.has(k)])
                            part = [k for k in window if not result.has(k)]
                            if part:
                                self._compute(index, folder, backbone, part, text_of, result, bar)
                                computed.update(part)
                                break
                        if start >= len(missing) and self.compact_after:
                            self._auto_compact(index, folder)
            finally:
                bar.close()
        self.last_misses = len(computed)
        self.last_hits = len(keys) - sum(1 for k in keys if k in computed)
        self._touch(index, used.values())
        return result.output(keys)

    @contextlib.contextmanager
    def _locked(self, folder: Path, ident: os.stat_result) -> Iterator[None]:
        with folder_lock(folder):
            if not _same_dir(folder, ident):
                raise cleared_error(folder)
            yield

    def _compute(
        self,
        index: FolderIndex,
        folder: Path,
        backbone: Backbone,
        part: list[bytes],
        text_of: dict[bytes, str],
        result: _Result,
        bar: _TokenBar,
    ) -> None:
        """Embed one chunk of missing texts, write it, index it (caller holds the lock)."""
        emb = backbone.embed([text_of[k] for k in part], progress=False, on_batch=bar.counter(part))
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        shape = (int(emb.shape[1]), int(emb.shape[2]))
        if index.shape != shape:
            index.set_shape(shape)  # computed vectors decide; other shapes are corrupt
        name = write_chunk(folder, keys_array(part), emb)
        size = os.stat(folder / name).st_size
        index.add_chunk(name, part, shape, size, row_sums(part, emb))
        result.put(part, emb)

    def add(
        self,
        fingerprint: str,
        keys: Sequence[bytes],
        embeddings: np.ndarray,
        meta: dict[str, Any] | None = None,
    ) -> int:
        """Store precomputed vectors under a fingerprint, through the same writer as ``embed``.

        Takes: the folder's fingerprint, 16-byte keys (:func:`text_key` of each text), float32
        vectors [len(keys), n_vectors, width], and the ``meta.json`` content to write if the
        folder has none (``format`` is added). Keys the cache already holds are skipped.
        Returns: the number of rows written. Raises LLMEmbedError on mismatched lengths or a
        shape that is not [k, n_vectors, width].
        """
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 3 or len(emb) != len(keys):
            raise LLMEmbedError(
                f"add: {len(keys)} keys and embeddings {list(emb.shape)}; expected [k, n, w]"
            )
        folder = self.root / fingerprint
        folder.mkdir(parents=True, exist_ok=True)
        ident = os.stat(folder)
        if not (folder / "meta.json").exists():
            atomic_write_json(
                folder / "meta.json", {"format": FORMAT_VERSION, **(meta or {})}, indent=2
            )
        pos = {bytes(k): i for i, k in enumerate(keys)}
        index = FolderIndex(folder)
        written = 0
        try:
            with self._locked(folder, ident):
                index.sync()
                shape = (int(emb.shape[1]), int(emb.shape[2]))
                if index.shape != shape:
                    index.set_shape(shape)
                have = index.lookup(list(pos))
                todo = [k for k in pos if k not in have]
                for start in range(0, len(todo), self.chunk_size):
                    part = todo[start : start + self.chunk_size]
                    rows = np.fromiter((pos[k] for k in part), dtype=np.int64, count=len(part))
                    vectors = np.ascontiguousarray(emb[rows])
                    name = write_chunk(folder, keys_array(part), vectors)
                    size = os.stat(folder / name).st_size
                    index.add_chunk(name, part, shape, size, row_sums(part, vectors))
                    written += len(part)
        finally:
            index.close()
        return written

    def fingerprint_of(self, backbone: Backbone) -> str:
        """The name of the folder that holds ``backbone``'s vectors here: its fingerprint,
        unless only the folder of its ``legacy_fingerprint()`` (llmembed 0.1.0's formula;
        optional for a backbone) exists, so that vectors cached then are read and added to
        instead of being computed again. For :meth:`cached` / :meth:`add` callers too."""
        current = backbone.fingerprint()
        legacy = getattr(backbone, "legacy_fingerprint", lambda: current)()
        if not (self.root / current).exists() and (self.root / legacy).is_dir():
            return legacy
        return current

    def cached(self, fingerprint: str, keys: Sequence[bytes]) -> int:
        """How many of ``keys`` (:func:`text_key` of each text) the fingerprint's folder holds,
        by its index, writing nothing: 0 for a folder that is not there. For callers that
        would build the vectors of :meth:`add` only to have them skipped."""
        folder = self.root / fingerprint
        if not (folder / "meta.json").is_file():
            return 0
        try:
            index = FolderIndex(folder, read_only=True)
        except sqlite3.Error:
            return 0
        try:
            return len(index.lookup(list(dict.fromkeys(bytes(k) for k in keys))))
        finally:
            index.close()

    # -- reading -------------------------------------------------------------------------------
    def _read(
        self,
        index: FolderIndex,
        folder: Path,
        want: list[bytes],
        result: _Result,
        used: dict[int, ChunkRow],
    ) -> None:
        """Fill ``result`` with the wanted keys the index holds (unreadable chunks dropped)."""
        want = [k for k in want if not result.has(k)]
        for _ in range(_READ_TRIES):
            if not want:
                return
            loc = index.lookup(want)
            by_chunk: dict[int, list[bytes]] = {}
            for k, (cid, _row, _sum) in loc.items():
                by_chunk.setdefault(cid, []).append(k)
            infos = {c.id: c for c in index.chunks(by_chunk)}
            retry: list[bytes] = []
            for cid, ks in by_chunk.items():
                info = infos.get(cid)
                if info is not None and self._read_chunk(index, folder, info, ks, loc, result):
                    used[cid] = info
                else:
                    retry += ks
            want = retry

    def _read_chunk(
        self,
        index: FolderIndex,
        folder: Path,
        info: ChunkRow,
        ks: list[bytes],
        loc: dict[bytes, tuple[int, int, bytes | None]],
        result: _Result,
    ) -> bool:
        """Rows ``ks`` of one chunk into ``result``; False if the chunk had to be dropped."""
        path = folder / info.name
        if info.shape != index.shape:
            index.discard(info, f"shape {info.shape}, expected {index.shape}")
            return False
        ks = sorted(ks, key=lambda k: loc[k][1])
        rows = np.fromiter((loc[k][1] for k in ks), dtype=np.int64, count=len(ks))
        try:
            data = None
            if info.verified and all(loc[k][2] is not None for k in ks):
                file_keys, data = read_rows(path, rows)
                if file_keys.tobytes() != b"".join(ks) or row_sums(ks, data) != [
                    loc[k][2] for k in ks
                ]:
                    data = None  # a key or a row changed on disk: check the whole chunk
            if data is None:
                data = self._verify(index, info, path, ks, rows)
                if data is None:
                    return False
        except FileNotFoundError:
            if not folder.is_dir():
                raise cleared_error(folder) from None
            if not path.exists():
                index.forget(info)  # compacted or evicted meanwhile: look the keys up again
            return False
        except CorruptChunk as e:
            index.discard(info, e)
            return False
        result.put(ks, data)
        return True

    def _verify(
        self, index: FolderIndex, info: ChunkRow, path: Path, ks: list[bytes], rows: np.ndarray
    ) -> np.ndarray | None:
        """Full checksum of a chunk; stores its row hashes; returns the rows ``ks`` (None when
        the index disagrees with the file, which is then re-taken in on the next sync).

        Raises:
            CorruptChunk / FileNotFoundError: as :func:`load_verified`.
        """
        keys, emb = load_verified(path)
        if emb.ndim != 3 or tuple(emb.shape[1:]) != info.shape or len(emb) != info.n_rows:
            raise CorruptChunk(f"embeddings {list(emb.shape)} do not match the index")
        if rows.size and (
            rows[-1] >= len(keys) or keys_array(ks).tobytes() != keys[rows].tobytes()
        ):
            index.forget(info)
            return None
        live = index.live_rows(info.id)
        live_rows = np.array([r for _, r in live], dtype=np.int64)
        sums = row_sums([k for k, _ in live], emb[live_rows]) if live else []
        index.mark_verified(info.id, {int(r): s for r, s in zip(live_rows, sums)})
        return np.ascontiguousarray(emb[rows])

    # -- read-only mode ------------------------------------------------------------------------
    def _embed_read_only(
        self, backbone: Backbone, texts: Sequence[str], progress: bool, spill: _Spill | None
    ) -> np.ndarray | FeatureFile:
        """``embed`` with ``read_only``: same result and counters, nothing written.

        Raises: whatever ``backbone.embed`` raises.
        """
        keys = [text_key(t) for t in texts]
        uniq = list(dict.fromkeys(keys))
        text_of = dict(zip(keys, texts))

        def compute(ks: list[bytes]) -> np.ndarray:
            emb = backbone.embed([text_of[k] for k in ks], progress=progress)
            return np.ascontiguousarray(emb, dtype=np.float32)

        result = _Result(uniq, spill)
        if uniq:
            _read_only_rows(self.root / self.fingerprint_of(backbone), uniq, result)
        missing = [k for k in uniq if not result.has(k)]
        computed = set(missing)
        if missing:
            emb = compute(missing)
            if result.buf is not None and result.buf.shape[1:] != emb.shape[1:]:
                # the folder holds another shape than the backbone computes: none of it is used
                cached = [k for k in uniq if result.has(k)]
                result = _Result(uniq, spill)
                result.put(cached, compute(cached))
                computed.update(cached)
            result.put(missing, emb)
        self.last_misses = len(computed)
        self.last_hits = len(keys) - sum(1 for k in keys if k in computed)
        return result.output(keys)

    def _touch(self, index: FolderIndex, chunks: Any) -> None:
        now = time.time()
        stale = [c.id for c in chunks if now - c.last_used > TOUCH_INTERVAL_S]
        with contextlib.suppress(sqlite3.Error):  # a read-only cache still reads
            index.touch(stale, now)

    @contextlib.contextmanager
    def spill_folder(self) -> Iterator[Path]:
        """A fresh folder under the cache root for results too large for memory (``embed``'s
        ``spill_dir``), deleted on exit; those left by killed processes are deleted first.

        Under the cache root rather than the temp dir: /tmp is often memory (tmpfs).
        Raises: OSError when the folder cannot be created.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        _remove_stale_spills(self.root)
        folder = self.root / f".spill-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # -- compaction ----------------------------------------------------------------------------
    def _is_small(self, c: ChunkRow) -> bool:
        return c.live < max(1, self.chunk_size // 2) or 2 * c.live <= c.n_rows

    def _auto_compact(self, index: FolderIndex, folder: Path) -> None:
        small = [c for c in index.chunks() if self._is_small(c)]
        if len(small) > self.compact_after:
            self._compact_folder(index, folder)

    def _compact_folder(self, index: FolderIndex, folder: Path) -> int:
        """Merge small chunks of one folder (caller holds the lock); returns files removed."""
        index.sync()
        shape = index.shape
        cands = [c for c in index.chunks() if c.shape == shape and self._is_small(c)]
        groups: list[list[ChunkRow]] = []
        group: list[ChunkRow] = []
        rows = 0
        for c in cands:
            if group and rows + c.live > self.chunk_size:
                groups.append(group)
                group, rows = [], 0
            group.append(c)
            rows += c.live
        if group:
            groups.append(group)
        removed = 0
        for group in groups:
            if len(group) == 1 and group[0].live == group[0].n_rows:
                continue
            removed += self._merge(index, folder, group, shape)
        return removed

    def _merge(self, index: FolderIndex, folder: Path, group: list[ChunkRow], shape: Any) -> int:
        keys: list[bytes] = []
        parts: list[np.ndarray] = []
        done: list[ChunkRow] = []
        for c in group:
            live = index.live_rows(c.id)
            try:
                file_keys, emb = load_verified(folder / c.name) if live else (None, None)
            except FileNotFoundError:
                index.forget(c)
                continue
            except CorruptChunk as e:
                index.discard(c, e)
                continue
            if live:
                rows = np.array([r for _, r in live], dtype=np.int64)
                lk = [k for k, _ in live]
                if rows[-1] >= len(file_keys) or file_keys[rows].tobytes() != b"".join(lk):
                    index.forget(c)  # index and file disagree: re-taken in by the next sync
                    continue
                keys += lk
                parts.append(emb[rows])
            done.append(c)
        if keys:
            emb = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
            name = write_chunk(folder, keys_array(keys), emb)
            size = os.stat(folder / name).st_size
            index.replace(done, name, keys, shape, size, row_sums(keys, emb))
        else:
            for c in done:
                index.forget(c)
        for c in done:  # only after the index no longer points at them
            with contextlib.suppress(OSError):
                (folder / c.name).unlink()
        return len(done) - (1 if keys else 0)

    def compact(self, fingerprint: str | None = None) -> int:
        """Merge small chunks (and drop duplicate rows) of one fingerprint (prefix) or all.

        Each merge writes the new chunk, repoints the index in one transaction, then deletes
        the old files; it waits for the folder's writer lock. Returns the number of chunk files
        removed. Raises CacheClearedError if a folder is cleared meanwhile.
        """
        removed = 0
        for folder in self._folders(fingerprint):
            ident = os.stat(folder)
            index = FolderIndex(folder)
            try:
                with self._locked(folder, ident):
                    removed += self._compact_folder(index, folder)
            finally:
                index.close()
        return removed

    # -- size limit ----------------------------------------------------------------------------
    def _evict(self, keep: set[str]) -> None:
        """Delete least recently used chunks until the cache fits ``max_bytes``. Chunks of the
        folders in ``keep`` used in the last TOUCH_INTERVAL_S are kept; busy folders skipped."""
        assert self.max_bytes is not None
        now = time.time()
        total = 0
        cands: list[tuple[float, Path, ChunkRow]] = []
        indexes: list[FolderIndex] = []
        try:
            for folder in self._folders(None):
                total += sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
                try:
                    index = FolderIndex(folder)
                except sqlite3.Error:
                    continue
                indexes.append(index)
                for c in index.chunks():
                    if folder.name in keep and now - c.last_used <= TOUCH_INTERVAL_S:
                        continue
                    cands.append((c.last_used, folder, c))
            cands.sort(key=lambda t: (t[0], t[2].id))
            by_folder = {ix.folder: ix for ix in indexes}
            for _, folder, c in cands:
                if total <= self.max_bytes:
                    break
                with folder_lock(folder, blocking=False) as got:
                    if not got:
                        continue
                    by_folder[folder].forget(c)
                    with contextlib.suppress(OSError):
                        (folder / c.name).unlink()
                    total -= c.bytes
        except (OSError, sqlite3.Error, CacheClearedError):
            pass  # eviction is best effort: a folder cleared meanwhile is simply gone
        finally:
            for ix in indexes:
                ix.close()

    # -- management ----------------------------------------------------------------------------
    def _folders(self, fingerprint: str | None) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(
            p
            for p in self.root.iterdir()
            if p.is_dir()
            and not p.name.startswith(".")
            and (fingerprint is None or p.name.startswith(fingerprint))
        )

    def entries(self) -> list[CacheEntry]:
        """Every backbone folder in the cache: unique texts, chunks, bytes, description.

        Opening a folder the index has not seen takes its chunks in (keys only). A folder whose
        index cannot be written (read-only cache) is counted from the chunks' keys instead.
        """
        out = []
        for folder in self._folders(None):
            try:
                index = FolderIndex(folder)
                try:
                    index.sync()
                    n, n_chunks = index.n_keys(), len(index.chunks())
                finally:
                    index.close()
            except (sqlite3.Error, OSError):
                n, n_chunks = self._count_without_index(folder)
            try:
                meta = json.loads((folder / "meta.json").read_text())
            except (OSError, ValueError):
                meta = {}
            size = 0
            for p in folder.iterdir():
                with contextlib.suppress(OSError):
                    if p.is_file():
                        size += p.stat().st_size
            out.append(CacheEntry(folder.name, folder, n, n_chunks, size, meta))
        return out

    @staticmethod
    def _count_without_index(folder: Path) -> tuple[int, int]:
        seen: set[bytes] = set()
        n_chunks = 0
        for p in folder.iterdir():
            if is_chunk_name(p.name):
                with contextlib.suppress(OSError, CorruptChunk):
                    seen.update(bytes(k) for k in read_header(p).keys)
                    n_chunks += 1
        return len(seen), n_chunks

    def clear(self, fingerprint: str | None = None) -> int:
        """Delete one backbone's entries (fingerprint prefix) or all; returns folders removed.

        Waits for each folder's writer lock (at most one chunk of another process's work), then
        renames the folder away and deletes it: a process still using it gets a
        CacheClearedError, never a half-deleted folder.
        """
        removed = 0
        for folder in self._folders(fingerprint):
            tomb = self.root / f".deleting-{uuid.uuid4().hex}"
            try:
                with folder_lock(folder):
                    os.rename(folder, tomb)
            except (CacheClearedError, FileNotFoundError):
                continue
            shutil.rmtree(tomb, ignore_errors=True)
            removed += 1
        if self.root.is_dir():  # leftovers of a clear or a fit that was killed
            for p in self.root.glob(".deleting-*"):
                shutil.rmtree(p, ignore_errors=True)
            _remove_stale_spills(self.root)
        return removed
