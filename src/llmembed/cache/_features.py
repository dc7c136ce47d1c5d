"""Feature arrays on disk, for training sets whose embeddings do not fit in memory.

A :class:`FeatureFile` is a float32 [n, n_vectors, width] array in a standard ``.npy`` file
(``numpy.load(path, mmap_mode="r")`` opens it). It is written and read by rows with plain
``pwrite`` / ``pread`` instead of a memory map, so the rows it hands out are the only memory it
uses: the operating system's page cache holds the rest, and gives it back under pressure.
:meth:`EmbeddingCache.embed <llmembed.cache.EmbeddingCache.embed>` writes one (``spill_dir``) and
:func:`llmembed.training.train_head` streams it in blocks of rows.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

__all__ = ["FeatureFile"]

_DTYPE = np.dtype("<f4")


class FeatureFile:
    """A float32 array of rows in a ``.npy`` file, read and written by rows, never mapped.

    Takes: the path; ``shape`` to create the file (zero-filled, replacing any file there), or
    None to open an existing one read-only.
    Raises: OSError when the file cannot be created or opened; ValueError for a file that is
    not a little-endian float32 C-order ``.npy`` array.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...] | None = None) -> None:
        self.path = Path(path)
        if shape is not None:
            self.shape = tuple(int(s) for s in shape)
            header = {"descr": _DTYPE.str, "fortran_order": False, "shape": self.shape}
            with open(self.path, "wb") as f:
                np.lib.format.write_array_header_1_0(f, header)
                self._offset = f.tell()
                f.truncate(self._offset + self._row_bytes * self.shape[0])
            self._fd = os.open(self.path, os.O_RDWR)
        else:
            with open(self.path, "rb") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape_, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape_, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                self._offset = f.tell()
            if dtype != _DTYPE or fortran:
                raise ValueError(f"{self.path}: not a little-endian float32 C-order array")
            self.shape = tuple(shape_)
            self._fd = os.open(self.path, os.O_RDONLY)

    @property
    def _row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * _DTYPE.itemsize

    @property
    def nbytes(self) -> int:
        """Size of the array in bytes (the header not counted)."""
        return self._row_bytes * self.shape[0]

    def __len__(self) -> int:
        return self.shape[0]

    def write(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Write ``values[i]`` as row ``rows[i]`` (any order); consecutive rows go in one call."""
        rows = np.asarray(rows, dtype=np.int64)
        values = np.ascontiguousarray(values, dtype=_DTYPE).reshape(len(rows), -1)
        order = np.argsort(rows, kind="stable")
        rows, values = rows[order], values[order]
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for run in np.split(np.arange(len(rows)), breaks):
            if len(run):
                data = values[run[0] : run[-1] + 1].tobytes()
                os.pwrite(self._fd, data, self._offset + int(rows[run[0]]) * self._row_bytes)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a new in-memory array.

        Raises: OSError when the file is shorter than its header says.
        """
        stop = min(stop, self.shape[0])
        n = max(0, stop - start)
        out = np.empty((n, *self.shape[1:]), dtype=_DTYPE)
        view = memoryview(out.reshape(-1).view(np.uint8))
        done, offset = 0, self._offset + start * self._row_bytes
        while done < len(view):
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got <= 0:
                raise OSError(f"{self.path}: file is shorter than its header says")
            done += got
        return out

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (sorted, unique) as a new in-memory array, read run by run."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape[1:]), dtype=_DTYPE)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        at = 0
        for run in np.split(rows, breaks):
            if len(run):
                out[at : at + len(run)] = self.read(int(run[0]), int(run[-1]) + 1)
                at += len(run)
        return out

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self.close()

    def __repr__(self) -> str:
        return f"FeatureFile({str(self.path)!r}, shape={self.shape})"
