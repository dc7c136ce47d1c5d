"""llmembed.files: sha256 helpers and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from llmembed import files


def test_sha256_bytes_and_file(tmp_path: Path) -> None:
    data = os.urandom(5 * (1 << 20) + 7)  # more than one 4 MiB block
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert files.sha256_bytes(data) == want
    assert files.sha256_file(path) == want
    assert files.sha256_file(str(path), memo=False) == want
    assert files.sha256_bytes(b"") == hashlib.sha256(b"").hexdigest()
    with pytest.raises(OSError):
        files.sha256_file(tmp_path / "missing")


def test_sha256_file_memo_notices_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("first")
    assert files.sha256_file(path) == files.sha256_bytes(b"first")
    path.write_text("second, longer")  # size changes: re-read
    assert files.sha256_file(path) == files.sha256_bytes(b"second, longer")
    files.atomic_write_text(path, "third, longer!")  # replaced: new inode, re-read
    assert files.sha256_file(path) == files.sha256_bytes(b"third, longer!")
    # the same path relative or absolute is one entry
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert files.sha256_file("f.txt") == files.sha256_file(path)
    finally:
        os.chdir(cwd)


def test_sha256_file_disk_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large files' digests outlive the process; any rewrite, even one that puts the size and
    mtime back, is hashed again; a damaged or unwritable memo only costs a hash."""
    memo_path = tmp_path / "memo" / "file-digests.json"
    monkeypatch.setattr(files, "DISK_MEMO_BYTES", 4)
    monkeypatch.setattr(files, "disk_memo_path", lambda: memo_path)
    reads: list[str] = []
    real = files._hash_stream
    monkeypatch.setattr(files, "_hash_stream", lambda name: reads.append(name) or real(name))

    def fresh_process_digest(path: Path) -> str:
        files._memo_sha256.cache_clear()
        return files.sha256_file(path)

    path = tmp_path / "weights.bin"
    path.write_bytes(b"first weights")
    assert fresh_process_digest(path) == files.sha256_bytes(b"first weights")
    assert fresh_process_digest(path) == files.sha256_bytes(b"first weights")
    assert len(reads) == 1 and str(path) in json.loads(memo_path.read_text())
    st = path.stat()
    path.write_bytes(b"other weights")  # same size, mtime set back: ctime still moves
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fresh_process_digest(path) == files.sha256_bytes(b"other weights")
    assert len(reads) == 2
    small = tmp_path / "small.txt"
    small.write_bytes(b"abc")  # under DISK_MEMO_BYTES: never written to the memo
    fresh_process_digest(small)
    assert str(small) not in json.loads(memo_path.read_text())
    memo_path.write_text("{not json")
    assert fresh_process_digest(path) == files.sha256_bytes(b"other weights")
    assert len(reads) == 4 and json.loads(memo_path.read_text())[str(path)][-1] == (
        files.sha256_bytes(b"other weights")
    )
    monkeypatch.setattr(files, "disk_memo_path", lambda: tmp_path / "weights.bin" / "memo.json")
    assert fresh_process_digest(path) == files.sha256_bytes(b"other weights")  # cannot write
    files._memo_sha256.cache_clear()


def test_atomic_writes(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "dir" / "out.json"  # missing folders are created
    files.atomic_write_json(target, {"b": 1, "a": [1, 2]}, indent=2)
    assert target.read_text() == json.dumps({"b": 1, "a": [1, 2]}, indent=2)
    files.atomic_write_json(target, {"b": 1, "a": 2}, indent=None, sort_keys=True)
    assert target.read_text() == '{"a": 2, "b": 1}'
    files.atomic_write_json(target, {"p": Path("x")}, default=str)
    assert json.loads(target.read_text()) == {"p": "x"}
    files.atomic_write_text(target, "héllo\n")
    assert target.read_bytes() == "héllo\n".encode()
    files.atomic_write_bytes(target, b"\0\1", fsync=False)
    assert target.read_bytes() == b"\0\1"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]  # no temp left


def test_atomic_write_keeps_old_file_and_no_temp_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "keep.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        files.atomic_write_json(target, {"x": object()})
    with pytest.raises(RuntimeError, match="disk on fire"), files.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.json"]


def test_atomic_path_for_name_based_writers(tmp_path: Path) -> None:
    target = tmp_path / "chunk.bin"
    with files.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".chunk.bin.")
        assert not tmp.exists()
        tmp.write_bytes(b"data")
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_bytes() == b"data"
    with pytest.raises(FileNotFoundError), files.atomic_path(tmp_path / "never.bin"):
        pass  # the body wrote nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunk.bin"]


def test_atomic_write_uses_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        files.atomic_write_text(tmp_path / "p.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "p.txt").stat().st_mode & 0o777 == 0o644
