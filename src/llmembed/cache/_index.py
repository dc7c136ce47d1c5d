"""The per-fingerprint key index: ``<folder>/index.sqlite`` (SQLite, WAL journal).

Tables: ``chunks`` (one row per chunk file: rows, live rows, shape, bytes, verified, last use)
and ``keys`` (text key -> chunk, row, 8-byte hash of the row's vectors). Why SQLite: it ships
with Python (no dependency, no server), a lookup of k keys costs k B-tree probes whatever the
cache size, an append is one small transaction, WAL lets readers run while a writer commits and
gives every reader a consistent snapshot, and a crash at any moment rolls back to the last
committed transaction. LMDB would need a dependency and a map size; a sorted key file would need
rewriting (or a merge scheme) on every append.

The chunk files stay the truth: the index only says where each key is. ``sync`` reconciles it
with the folder (chunks not in the index are taken in by reading their keys only; rows of
chunks whose file is gone are dropped), so deleting ``index.sqlite`` is always safe.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._chunks import ChunkHeader, CorruptChunk, is_chunk_name, read_header

INDEX_NAME = "index.sqlite"
INDEX_FILES = (INDEX_NAME, INDEX_NAME + "-wal", INDEX_NAME + "-shm")
SCHEMA_VERSION = "1"
TMP_MAX_AGE_S = 15 * 60  # orphan temp files (killed writers) older than this are deleted
_BATCH = 500  # keys per SELECT ... IN (...)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    n_rows INTEGER NOT NULL,
    live INTEGER NOT NULL,
    n_vectors INTEGER NOT NULL,
    width INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    verified INTEGER NOT NULL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    key BLOB PRIMARY KEY,
    chunk INTEGER NOT NULL,
    row INTEGER NOT NULL,
    rowsum BLOB
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS keys_by_chunk ON keys (chunk);
"""


@dataclass(frozen=True)
class ChunkRow:
    """One chunk as the index knows it."""

    id: int
    name: str
    n_rows: int
    live: int
    shape: tuple[int, int]
    bytes: int
    verified: bool
    last_used: float


def _chunk_row(r: Sequence) -> ChunkRow:
    return ChunkRow(r[0], r[1], r[2], r[3], (r[4], r[5]), r[6], bool(r[7]), r[8])


_CHUNK_COLS = "id, name, n_rows, live, n_vectors, width, bytes, verified, last_used"


def warn_corrupt(name: str, reason: object) -> None:
    """The one warning for a dropped chunk (tests match 'corrupt cache chunk')."""
    warnings.warn(
        f"Dropping corrupt cache chunk {name} ({reason}); its texts will be recomputed.",
        stacklevel=4,
    )


def _use_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Put the database in WAL mode, waiting up to ``timeout`` s for other connections.

    Why not one ``PRAGMA journal_mode=WAL``: the conversion needs the file to itself, and SQLite
    does not run the busy handler for it, so two processes opening a new cache folder at once
    could fail immediately ("database is locked"; seen in CI as a writer that computed nothing).
    WAL is a property of the file: once any connection has converted it there is nothing left
    to do and no lock to take.

    Raises:
        sqlite3.OperationalError: still not converted after ``timeout`` s, or another error.
    """
    deadline, delay = time.monotonic() + timeout, 0.005
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal":
                return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError(f"database is locked: WAL mode not set in {timeout} s")
        time.sleep(delay)
        delay = min(2 * delay, 0.1)


class FolderIndex:
    """An open connection to one fingerprint folder's index.

    Takes: the folder, how long to wait for another writer's lock, and ``read_only``: open the
    existing index as ``file:...?mode=ro&immutable=1``, which creates, writes and locks nothing
    (plain ``mode=ro`` would create the ``-wal`` / ``-shm`` files); commits still in another
    process's WAL are not seen, and only the SELECT methods (``shape``, ``lookup``, ``chunks``,
    ``live_rows``, ``n_keys``) may be used.

    Raises (constructor):
        sqlite3.Error: the database cannot be opened or created (read-only: it does not exist;
            a file that is not an index raises on the first query instead).
    """

    def __init__(self, folder: Path, timeout: float = 120.0, *, read_only: bool = False) -> None:
        self.folder = folder
        if read_only:
            uri = (folder / INDEX_NAME).absolute().as_uri() + "?mode=ro&immutable=1"
            self.conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False
            )
            return
        self.conn = sqlite3.connect(
            str(folder / INDEX_NAME),
            timeout=timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        _use_wal(self.conn, timeout)
        self.conn.execute("PRAGMA synchronous=NORMAL")
        if self.conn.execute("SELECT 1 FROM sqlite_master WHERE name='keys'").fetchone() is None:
            with self.write() as c:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        c.execute(statement)
                self.conn.execute(
                    "INSERT OR IGNORE INTO info VALUES ('schema', ?)", (SCHEMA_VERSION,)
                )

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT; rolled back if the body raises)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- folder shape --------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int] | None:
        """(n_vectors, width) every chunk of this folder must have; None until known."""
        row = self.conn.execute("SELECT value FROM info WHERE name='shape'").fetchone()
        if row is None:
            return None
        nv, w = row[0].split(",")
        return int(nv), int(w)

    def set_shape(self, shape: tuple[int, int]) -> None:
        """Record the folder's shape (from computed vectors: authoritative). Chunks of another
        shape are dropped as corrupt."""
        if self.shape == shape:
            return
        with self.write() as c:
            value = f"{shape[0]},{shape[1]}"
            c.execute("INSERT OR REPLACE INTO info VALUES ('shape', ?)", (value,))
        for ch in self.chunks():
            if ch.shape != shape:
                self.discard(ch, f"shape {ch.shape}, expected {shape}")

    # -- reconciling with the folder -----------------------------------------------------------
    def sync(self) -> None:
        """Take in chunk files the index does not know (reading their keys only), forget chunks
        whose file is gone, drop unreadable or wrong-shape chunks (warning, file deleted), and
        delete orphan temp files older than 15 minutes."""
        now = time.time()
        on_disk: set[str] = set()
        with os.scandir(self.folder) as it:
            for entry in it:
                name = entry.name
                if is_chunk_name(name):
                    on_disk.add(name)
                elif name.startswith(".") and name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        if now - entry.stat().st_mtime > TMP_MAX_AGE_S:
                            os.unlink(entry.path)
        known = dict(self.conn.execute("SELECT name, id FROM chunks").fetchall())
        new = sorted(on_disk - known.keys())
        gone = [known[n] for n in known.keys() - on_disk]
        if not new and not gone:
            return
        headers: dict[str, ChunkHeader] = {}
        for name in new:
            try:
                headers[name] = read_header(self.folder / name)
            except FileNotFoundError:
                continue
            except CorruptChunk as e:
                self._delete_file(name, e)
        shape = self.shape
        if shape is None and headers:  # first open of a folder: the shape most rows have
            votes: dict[tuple[int, int], int] = {}
            for h in headers.values():
                votes[h.shape] = votes.get(h.shape, 0) + h.n_rows
            shape = max(votes, key=votes.__getitem__)
            with self.write() as c:
                c.execute(
                    "INSERT OR IGNORE INTO info VALUES ('shape', ?)", (f"{shape[0]},{shape[1]}",)
                )
            shape = self.shape
        for name, h in list(headers.items()):
            if h.shape != shape:
                del headers[name]
                self._delete_file(name, f"shape {h.shape}, expected {shape}")
        with self.write() as c:
            for cid in gone:
                row = c.execute("SELECT name FROM chunks WHERE id=?", (cid,)).fetchone()
                if row is not None and not (self.folder / row[0]).exists():
                    self._forget(c, cid)
            for name, h in headers.items():
                try:
                    size = os.stat(self.folder / name).st_size
                except FileNotFoundError:
                    continue
                self._insert(c, name, h.keys, h.shape, size, None, verified=False, now=now)

    # -- reading -------------------------------------------------------------------------------
    def lookup(self, keys: Sequence[bytes]) -> dict[bytes, tuple[int, int, bytes | None]]:
        """key -> (chunk id, row, row hash or None) for the keys the index holds."""
        out: dict[bytes, tuple[int, int, bytes | None]] = {}
        for start in range(0, len(keys), _BATCH):
            part = keys[start : start + _BATCH]
            q = ",".join("?" * len(part))
            for k, cid, row, s in self.conn.execute(
                f"SELECT key, chunk, row, rowsum FROM keys WHERE key IN ({q})", part
            ):
                out[bytes(k)] = (cid, row, s)
        return out

    def chunks(self, ids: Iterable[int] | None = None) -> list[ChunkRow]:
        """The given chunks (all when ids is None) that are still indexed."""
        if ids is None:
            rows = self.conn.execute(f"SELECT {_CHUNK_COLS} FROM chunks ORDER BY id").fetchall()
            return [_chunk_row(r) for r in rows]
        ids = list(ids)
        out = []
        for start in range(0, len(ids), _BATCH):
            part = ids[start : start + _BATCH]
            q = ",".join("?" * len(part))
            out += [
                _chunk_row(r)
                for r in self.conn.execute(
                    f"SELECT {_CHUNK_COLS} FROM chunks WHERE id IN ({q})", part
                )
            ]
        return out

    def live_rows(self, chunk_id: int) -> list[tuple[bytes, int]]:
        """(key, row) of the keys that point at this chunk, by row."""
        return [
            (bytes(k), r)
            for k, r in self.conn.execute(
                "SELECT key, row FROM keys WHERE chunk=? ORDER BY row", (chunk_id,)
            )
        ]

    def n_keys(self) -> int:
        """Unique texts indexed."""
        return int(self.conn.execute("SELECT COUNT(*) FROM keys").fetchone()[0])

    # -- writing -------------------------------------------------------------------------------
    def _insert(
        self,
        c: sqlite3.Connection,
        name: str,
        keys: Sequence[bytes] | object,
        shape: tuple[int, int],
        size: int,
        sums: Sequence[bytes] | None,
        verified: bool,
        now: float,
    ) -> int:
        """Insert (or re-mark) a chunk and the keys no other chunk holds; returns its id."""
        key_list = [bytes(k) for k in keys]  # type: ignore[attr-defined]
        c.execute(
            "INSERT INTO chunks (name, n_rows, live, n_vectors, width, bytes, verified, last_used)"
            " VALUES (?, ?, 0, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
            " verified = MAX(verified, excluded.verified)",
            (name, len(key_list), shape[0], shape[1], size, int(verified), now),
        )
        cid = c.execute("SELECT id FROM chunks WHERE name=?", (name,)).fetchone()[0]
        rows = (
            ((k, cid, i, sums[i]) for i, k in enumerate(key_list))
            if sums is not None
            else ((k, cid, i, None) for i, k in enumerate(key_list))
        )
        c.executemany("INSERT OR IGNORE INTO keys VALUES (?, ?, ?, ?)", rows)
        if sums is not None:  # a verified copy: fill row hashes a key-only take-in left empty
            # by primary key: "WHERE chunk=? AND row=?" scanned the chunk's rows per row
            c.executemany(
                "UPDATE keys SET rowsum=? WHERE key=? AND chunk=? AND rowsum IS NULL",
                ((sums[i], k, cid) for i, k in enumerate(key_list)),
            )
        live = c.execute("SELECT COUNT(*) FROM keys WHERE chunk=?", (cid,)).fetchone()[0]
        c.execute("UPDATE chunks SET live=? WHERE id=?", (live, cid))
        return int(cid)

    def add_chunk(
        self,
        name: str,
        keys: Sequence[bytes],
        shape: tuple[int, int],
        size: int,
        sums: Sequence[bytes],
    ) -> int:
        """Index a chunk this process has just written (verified, row hashes known)."""
        with self.write() as c:
            return self._insert(c, name, keys, shape, size, sums, verified=True, now=time.time())

    def mark_verified(self, chunk_id: int, sums_by_row: dict[int, bytes]) -> None:
        """A key-only chunk passed its checksum: store its row hashes."""
        with self.write() as c:
            c.executemany(
                "UPDATE keys SET rowsum=? WHERE chunk=? AND row=?",
                ((s, chunk_id, r) for r, s in sums_by_row.items()),
            )
            c.execute("UPDATE chunks SET verified=1 WHERE id=?", (chunk_id,))

    def touch(self, chunk_ids: Iterable[int], now: float) -> None:
        """Record a use of these chunks (for least-recently-used eviction)."""
        ids = list(chunk_ids)
        if ids:
            with self.write() as c:
                c.executemany("UPDATE chunks SET last_used=? WHERE id=?", ((now, i) for i in ids))

    def replace(
        self,
        old: Sequence[ChunkRow],
        name: str,
        keys: Sequence[bytes],
        shape: tuple[int, int],
        size: int,
        sums: Sequence[bytes],
    ) -> None:
        """Compaction's commit: the keys of ``old`` now live in chunk ``name``, in one
        transaction (the old files are deleted by the caller afterwards)."""
        now = time.time()
        last = max((o.last_used for o in old), default=now)
        with self.write() as c:
            for o in old:
                self._forget(c, o.id)
            self._insert(c, name, keys, shape, size, sums, verified=True, now=last)

    def _forget(self, c: sqlite3.Connection, chunk_id: int) -> None:
        c.execute("DELETE FROM keys WHERE chunk=?", (chunk_id,))
        c.execute("DELETE FROM chunks WHERE id=?", (chunk_id,))

    def forget(self, chunk: ChunkRow) -> None:
        """Drop a chunk's rows from the index (the file is left alone)."""
        with self.write() as c:
            self._forget(c, chunk.id)

    def _delete_file(self, name: str, reason: object) -> None:
        warn_corrupt(name, reason)
        with contextlib.suppress(OSError):
            (self.folder / name).unlink()

    def discard(self, chunk: ChunkRow, reason: object) -> None:
        """A corrupt chunk: warn, forget it, delete its file."""
        self.forget(chunk)
        self._delete_file(chunk.name, reason)
