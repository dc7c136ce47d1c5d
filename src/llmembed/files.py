"""File helpers shared by the whole package: sha256 hashing and atomic writes.

One implementation of each, so every checksum and every "write then rename into place" in
llmembed behaves the same way:

* :func:`sha256_file` streams a file (4 MiB blocks) and memoizes the digest per
  (absolute path, size, mtime_ns, ctime_ns, inode, device) within the process, and for files of
  :data:`DISK_MEMO_BYTES` or more across processes too (:func:`disk_memo_path`): a model's
  weights are read once, not by every process that fingerprints them. Pass ``memo=False`` for
  an integrity check that must re-read the bytes.
* :func:`atomic_path` / :func:`atomic_write_bytes` / :func:`atomic_write_text` /
  :func:`atomic_write_json` write to a temp file in the destination's folder, flush it to disk
  and :func:`os.replace` it over the destination: readers see the old file or the complete new
  one, never a half-written one; a failed write leaves no temp file behind.

Nothing here imports torch, numpy or transformers.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "read_json_memo",
    "remember_json",
    "sha256_bytes",
    "sha256_file",
]

_BLOCK = 1 << 22  # 4 MiB read blocks
# Files this large have their digest remembered on disk as well: hashing EmbeddingGemma's 1.2 GB
# of weights took 2.95 s of every warm fit and every `llmembed predict` before.
DISK_MEMO_BYTES = 16 << 20

PathLike = str | os.PathLike[str]


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _hash_stream(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def disk_memo_path() -> Path:
    """The JSON file where :func:`sha256_file` remembers large files' digests across processes
    (``file-digests.json`` in the user cache dir, e.g. ``~/.cache/llmembed``)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("llmembed")) / "file-digests.json"


def read_json_memo(path: Path) -> dict[str, Any]:
    """The dict a JSON memo file holds (:func:`remember_json`); empty when the file is missing,
    unreadable or damaged: a memo only saves work, so a bad one is started afresh."""
    try:
        memo = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def remember_json(path: Path, key: str, value: Any) -> None:
    """Add ``key``: ``value`` to the JSON memo file at ``path`` (read again first: another
    process may have added entries meanwhile), written atomically. A file that cannot be
    written (a read-only home) is skipped: it only costs the next process the work again."""
    memo = read_json_memo(path)
    memo[key] = value
    with contextlib.suppress(OSError):
        atomic_write_json(path, memo, fsync=False)


@functools.lru_cache(maxsize=1024)
def _memo_sha256(path: str, *stamp: int) -> str:
    size = stamp[0]
    if size < DISK_MEMO_BYTES:
        return _hash_stream(path)
    known = read_json_memo(disk_memo_path()).get(path)
    if isinstance(known, list) and known[:-1] == list(stamp) and isinstance(known[-1], str):
        return known[-1]
    digest = _hash_stream(path)
    remember_json(disk_memo_path(), path, [*stamp, digest])
    return digest


def sha256_file(path: PathLike, *, memo: bool = True) -> str:
    """Hex sha256 of the file at ``path``, read in 4 MiB blocks (never whole into memory).

    With ``memo`` (the default) the digest is remembered, keyed by the file's absolute path,
    size, modification and status-change times (ns), inode and device: an unchanged file is
    read once, a rewritten or replaced one is read again (any write moves the status-change
    time, which no user can set back). It is remembered for the process, and for files of
    :data:`DISK_MEMO_BYTES` or more also in :func:`disk_memo_path`, for later processes. Use
    ``memo=False`` where the point is to detect corruption of the bytes themselves.

    Raises:
        OSError: the file does not exist or cannot be read.
    """
    name = os.path.abspath(os.fspath(path))
    if not memo:
        return _hash_stream(name)
    st = os.stat(name)
    return _memo_sha256(name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _temp_name(path: Path) -> Path:
    """A fresh hidden name next to ``path``: ``.NAME.<random>.tmp``."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Context manager for writers that want a file *name* (``safetensors.save_file``, ...).

    Yields a temp path in the same folder as ``path`` (not created yet); the body writes the
    complete file there. On normal exit the temp file is flushed to disk (``fsync``) and
    renamed over ``path`` with :func:`os.replace`; if the body raises, the temp file is removed
    and the exception propagates, leaving ``path`` untouched. The folder of ``path`` is created
    if missing.

    Raises:
        FileNotFoundError: the body returned without writing the temp file.
        OSError: the folder cannot be created, or the fsync / rename fails.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(target)
    try:
        yield tmp
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: PathLike, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + :func:`os.replace`).

    The new file gets the usual permissions (``0666 & ~umask``), like a plain ``open(path,
    "wb")``. ``fsync`` flushes the temp file to disk before the rename, so a crash right after
    leaves the old or the new content, not an empty file. The folder is created if missing.

    Raises:
        OSError: the folder cannot be created or the file cannot be written or renamed.
    """
    with atomic_path(path, fsync=False) as tmp, open(tmp, "xb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(
    path: PathLike, text: str, *, encoding: str = "utf-8", fsync: bool = True
) -> None:
    """Write ``text`` (encoded with ``encoding``, newlines kept as given) atomically to ``path``.

    See :func:`atomic_write_bytes`.

    Raises:
        OSError: as :func:`atomic_write_bytes`.
        UnicodeEncodeError: ``text`` cannot be encoded with ``encoding``.
    """
    atomic_write_bytes(path, text.encode(encoding), fsync=fsync)


def atomic_write_json(
    path: PathLike,
    obj: Any,
    indent: int | None = 2,
    *,
    default: Callable[[Any], Any] | None = None,
    sort_keys: bool = False,
    fsync: bool = True,
) -> None:
    """Write ``obj`` as JSON (UTF-8) atomically to ``path``.

    The text is exactly ``json.dumps(obj, indent=indent, default=default, sort_keys=sort_keys)``
    (no trailing newline). ``default`` converts objects json cannot encode (numpy scalars,
    paths, ...), as in :func:`json.dumps`.

    Raises:
        TypeError / ValueError: ``obj`` is not JSON-serializable (nothing is written then).
        OSError: as :func:`atomic_write_bytes`.
    """
    text = json.dumps(obj, indent=indent, default=default, sort_keys=sort_keys)
    atomic_write_text(path, text, fsync=fsync)
