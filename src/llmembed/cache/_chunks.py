"""Chunk files, the cache's unit of storage (format "1", unchanged since the first cache).

A chunk is ``chunk-<32 hex>.safetensors`` holding ``keys`` [k, 16] uint8 (text hashes) and
``embeddings`` [k, n_vectors, width] float32, with a sha256 ``checksum`` of keys then embeddings
in the safetensors metadata. It is written to a hidden temp file, fsync'ed and renamed into
place, so a visible chunk is always complete; it is never modified afterwards (compaction writes
a new chunk and deletes the old ones).
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from ..files import atomic_path

FORMAT_VERSION = "1"
CHUNK_PREFIX = "chunk-"
CHUNK_SUFFIX = ".safetensors"
KEY_BYTES = 16
_RUN_GAP = 8  # rows: requested rows closer than this are read as one contiguous slice


class CorruptChunk(ValueError):
    """A chunk file that cannot be read, fails its checksum or has the wrong shape."""


@dataclass(frozen=True)
class ChunkHeader:
    """What the safetensors header of a chunk says, plus its keys (read without the vectors)."""

    keys: np.ndarray  # [k, 16] uint8
    shape: tuple[int, int]  # (n_vectors, width)

    @property
    def n_rows(self) -> int:
        """Number of rows (texts) in the chunk."""
        return int(self.keys.shape[0])


def is_chunk_name(name: str) -> bool:
    """True for a file name that is a committed chunk (not a temp file)."""
    return name.startswith(CHUNK_PREFIX) and name.endswith(CHUNK_SUFFIX)


def new_chunk_name() -> str:
    """A fresh, never reused chunk file name."""
    return f"{CHUNK_PREFIX}{uuid.uuid4().hex}{CHUNK_SUFFIX}"


def checksum(keys: np.ndarray, embeddings: np.ndarray) -> str:
    """sha256 of a chunk's keys then embeddings (C order), streamed without joining the two."""
    h = hashlib.sha256(np.ascontiguousarray(keys).data)
    h.update(np.ascontiguousarray(embeddings).data)
    return h.hexdigest()


def row_sums(keys: Sequence[bytes], embeddings: np.ndarray) -> list[bytes]:
    """8-byte blake2b of each key followed by its row's float32 bytes.

    The index stores one per key and checks every row it hands out against it, so a corrupted
    row (or an index row pointing at the wrong place) is caught at the cost of what is read.
    """
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    return [
        hashlib.blake2b(bytes(k) + row.tobytes(), digest_size=8).digest()
        for k, row in zip(keys, emb)
    ]


def keys_array(keys: list[bytes]) -> np.ndarray:
    """[k, 16] uint8 array of 16-byte keys."""
    return np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES)


def write_chunk(folder: Path, keys: np.ndarray, embeddings: np.ndarray) -> str:
    """Write one chunk atomically (temp file, fsync, rename); returns its file name.

    Raises:
        OSError: the folder is missing or the write fails (no temp file is left behind).
    """
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    keys = np.ascontiguousarray(keys, dtype=np.uint8)
    name = new_chunk_name()
    with atomic_path(folder / name) as tmp:  # fsync'ed, then renamed into place
        save_file(
            {"keys": keys, "embeddings": emb},
            str(tmp),
            metadata={"checksum": checksum(keys, emb), "format": FORMAT_VERSION},
        )
    return name


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Map whatever safetensors raises for a bad file to CorruptChunk, or to FileNotFoundError
    when the file is gone (deleted by compaction, eviction or clear meanwhile)."""
    try:
        yield
    except (FileNotFoundError, CorruptChunk):
        raise
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad files
        if not path.exists():
            raise FileNotFoundError(str(path)) from e
        raise CorruptChunk(str(e)) from e


def read_header(path: Path) -> ChunkHeader:
    """Keys and (n_vectors, width) of a chunk, reading the header and the keys only.

    Raises:
        FileNotFoundError: the file is gone (deleted by compaction, eviction or clear).
        CorruptChunk: unreadable header, missing tensors, wrong dtypes or inconsistent shapes.
    """
    with _reading(path), safe_open(str(path), framework="numpy") as f:
        names = set(f.keys())
        if not {"keys", "embeddings"} <= names:
            raise CorruptChunk(f"tensors {sorted(names)}, expected keys and embeddings")
        ks, es = f.get_slice("keys"), f.get_slice("embeddings")
        kshape, eshape = list(ks.get_shape()), list(es.get_shape())
        if ks.get_dtype() != "U8" or len(kshape) != 2 or kshape[1] != KEY_BYTES:
            raise CorruptChunk(f"keys {ks.get_dtype()} {kshape}, expected U8 [k, 16]")
        if es.get_dtype() != "F32" or len(eshape) != 3 or eshape[0] != kshape[0]:
            raise CorruptChunk(f"embeddings {es.get_dtype()} {eshape}, expected F32 [k, n, w]")
        keys = f.get_tensor("keys")
    return ChunkHeader(keys, (int(eshape[1]), int(eshape[2])))


def load_verified(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The whole chunk (keys, embeddings), checksum verified.

    Raises:
        FileNotFoundError: the file is gone.
        CorruptChunk: unreadable, or the checksum does not match.
    """
    with _reading(path):
        with safe_open(str(path), framework="numpy") as f:
            expected = (f.metadata() or {}).get("checksum")
        data = load_file(str(path))
        keys, emb = data["keys"], data["embeddings"]
    if expected != checksum(keys, emb):
        raise CorruptChunk("checksum mismatch")
    return keys, emb


def read_rows(path: Path, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(keys[rows], embeddings[rows])`` of a chunk, reading only those rows (and gaps of
    under 8 rows between them).

    rows: sorted, unique row numbers (at least one).

    Raises:
        FileNotFoundError: the file is gone.
        CorruptChunk: unreadable, or a row is out of range.
    """
    with _reading(path), safe_open(str(path), framework="numpy") as f:
        ks, es = f.get_slice("keys"), f.get_slice("embeddings")
        n = es.get_shape()[0]
        if rows[0] < 0 or rows[-1] >= n or ks.get_shape()[0] != n:
            raise CorruptChunk(f"row {int(rows[-1])} out of range for {n} rows")
        key_parts, parts = [], []
        start = 0
        while start < len(rows):
            end = start + 1
            while end < len(rows) and rows[end] - rows[end - 1] < _RUN_GAP:
                end += 1
            lo, hi = int(rows[start]), int(rows[end - 1]) + 1
            kblock, block = ks[lo:hi], es[lo:hi]
            if hi - lo != end - start:
                kblock, block = kblock[rows[start:end] - lo], block[rows[start:end] - lo]
            key_parts.append(kblock)
            parts.append(block)
            start = end
    keys = key_parts[0] if len(key_parts) == 1 else np.concatenate(key_parts)
    out = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return np.ascontiguousarray(keys), np.ascontiguousarray(out, dtype=np.float32)
