"""The per-fingerprint writer lock: ``<folder>/write.lock``, an advisory ``flock``.

Held while a process decides which texts are still missing and writes their chunk, while it
compacts or evicts, and by ``clear`` before it removes the folder. Readers never take it (the
SQLite index gives them consistent snapshots). The kernel drops the lock when its holder dies,
so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from ..errors import LLMEmbedError

LOCK_NAME = "write.lock"


class CacheClearedError(LLMEmbedError):
    """The cache folder was removed (``llmembed cache clear``) while this run was using it."""


def cleared_error(folder: Path) -> CacheClearedError:
    """The error raised when ``folder`` disappears under a running process."""
    return CacheClearedError(
        f"The embedding cache folder {folder} was removed while this run was using it "
        "(`llmembed cache clear` in another process?); run again to recompute."
    )


if sys.platform != "win32":
    import fcntl

    def _lock_fd(fd: int, blocking: bool) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True

    @contextlib.contextmanager
    def folder_lock(folder: Path, blocking: bool = True) -> Iterator[bool]:
        """Hold the folder's writer lock for the body; yields False if not blocking and busy.

        After locking, the lock file must still be the one at ``folder/write.lock`` (``clear``
        removes the folder while holding the lock; a waiter then holds a dead file's lock).

        Raises:
            CacheClearedError: the folder is gone.
        """
        path = folder / LOCK_NAME
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError:
                raise cleared_error(folder) from None
            try:
                if not _lock_fd(fd, blocking):
                    os.close(fd)
                    yield False
                    return
                try:
                    same = os.path.samestat(os.fstat(fd), os.stat(path))
                except FileNotFoundError:
                    same = False
            except BaseException:
                os.close(fd)
                raise
            if same:
                break
            os.close(fd)
            if not folder.is_dir():
                raise cleared_error(folder)
        try:
            yield True
        finally:
            os.close(fd)  # closing the descriptor releases the flock

else:  # pragma: no cover - Windows: filelock (installed with huggingface_hub)

    @contextlib.contextmanager
    def folder_lock(folder: Path, blocking: bool = True) -> Iterator[bool]:
        """Hold the folder's writer lock for the body (filelock on Windows)."""
        from filelock import FileLock, Timeout

        if not folder.is_dir():
            raise cleared_error(folder)
        lock = FileLock(str(folder / LOCK_NAME))
        try:
            lock.acquire(timeout=-1 if blocking else 0)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()
