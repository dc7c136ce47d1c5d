"""On-disk embedding cache: extraction is the expensive step, so each text is embedded once.

Layout: ``<root>/<backbone fingerprint>/meta.json`` plus ``chunk-*.safetensors`` files, each holding
``keys`` (16-byte text hashes) and ``embeddings`` [k, n_layers, width] with a sha256 checksum in the
safetensors metadata. A chunk is written to a temp file and renamed into place, so a run killed at
any moment leaves only complete chunks and resumes from them; a chunk whose checksum fails is
deleted and its texts are recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from .files import atomic_path, atomic_write_json

if TYPE_CHECKING:
    from .backbones import Backbone

FORMAT_VERSION = "1"


def default_cache_dir() -> Path:
    """LLMEMBED_CACHE, else the user's cache dir (e.g. ~/.cache/llmembed/embeddings)."""
    env = os.environ.get("LLMEMBED_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("llmembed")) / "embeddings"


def text_key(text: str) -> bytes:
    """16-byte identity of a text (blake2b)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _checksum(keys: np.ndarray, embeddings: np.ndarray) -> str:
    """sha256 of a chunk's keys then embeddings (C order), streamed without joining the two."""
    h = hashlib.sha256(np.ascontiguousarray(keys).data)
    h.update(np.ascontiguousarray(embeddings).data)
    return h.hexdigest()


@dataclass
class CacheEntry:
    """One backbone's cached embeddings, as `llmembed cache info` shows them."""

    fingerprint: str
    path: Path
    n_texts: int
    n_chunks: int
    bytes: int
    meta: dict[str, Any]


class EmbeddingCache:
    """Cache of pooled embeddings keyed by (backbone fingerprint, text hash).

    chunk_size: texts embedded between two writes; a killed run loses at most one chunk of work.
    """

    def __init__(self, root: str | os.PathLike | None = None, chunk_size: int = 1024) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.chunk_size = chunk_size
        self.last_hits = 0
        self.last_misses = 0

    # -- reading -------------------------------------------------------------------------------
    def _load_chunks(self, folder: Path) -> dict[bytes, tuple[np.ndarray, int]]:
        """key -> (chunk embeddings array, row). Corrupt chunks are deleted with a warning."""
        index: dict[bytes, tuple[np.ndarray, int]] = {}
        for chunk in sorted(folder.glob("chunk-*.safetensors")):
            try:
                from safetensors import safe_open

                with safe_open(chunk, framework="numpy") as f:
                    expected = (f.metadata() or {}).get("checksum")
                data = load_file(chunk)
                keys, emb = data["keys"], data["embeddings"]
                if expected != _checksum(keys, emb):
                    raise ValueError("checksum mismatch")
            except Exception as e:  # noqa: BLE001 - any unreadable chunk is treated the same
                warnings.warn(
                    f"Dropping corrupt cache chunk {chunk.name} ({e}); its texts will "
                    "be recomputed.",
                    stacklevel=3,
                )
                chunk.unlink(missing_ok=True)
                continue
            for row, key in enumerate(keys):
                index[key.tobytes()] = (emb, row)
        return index

    # -- the main entry point ----------------------------------------------------------------------
    def embed(self, backbone: Backbone, texts: Sequence[str], progress: bool = True) -> np.ndarray:
        """Embeddings of `texts` [n, n_layers, width]: cached ones read, only new ones computed."""
        folder = self.root / backbone.fingerprint()
        folder.mkdir(parents=True, exist_ok=True)
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            meta = {"format": FORMAT_VERSION, **backbone.describe()}
            atomic_write_json(meta_path, meta, indent=2)
        index = self._load_chunks(folder)
        keys = [text_key(t) for t in texts]
        missing: dict[bytes, str] = {}
        for k, t in zip(keys, texts):
            if k not in index and k not in missing:
                missing[k] = t
        self.last_hits = len(keys) - sum(1 for k in keys if k in missing)
        self.last_misses = len(missing)
        if missing:
            todo = list(missing.items())
            bar = tqdm(
                total=len(todo),
                desc=f"embed {backbone.spec.model}",
                unit="text",
                disable=not progress,
            )
            try:
                for start in range(0, len(todo), self.chunk_size):
                    part = todo[start : start + self.chunk_size]
                    emb = backbone.embed([t for _, t in part], progress=False, on_batch=bar.update)
                    key_arr = np.frombuffer(b"".join(k for k, _ in part), dtype=np.uint8)
                    key_arr = key_arr.reshape(len(part), 16)
                    self._write_chunk(folder, key_arr, emb)
                    for row, (k, _) in enumerate(part):
                        index[k] = (emb, row)
            finally:
                bar.close()
        first = index[keys[0]][0] if keys else np.zeros((0, 0), np.float32)
        out = np.empty((len(keys), *first.shape[1:]), dtype=np.float32)
        for i, k in enumerate(keys):
            arr, row = index[k]
            out[i] = arr[row]
        return out

    def _write_chunk(self, folder: Path, keys: np.ndarray, emb: np.ndarray) -> None:
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        name = f"chunk-{uuid.uuid4().hex}.safetensors"
        with atomic_path(folder / name) as tmp:  # fsync'ed, then renamed into place
            save_file(
                {"keys": keys, "embeddings": emb},
                str(tmp),
                metadata={"checksum": _checksum(keys, emb), "format": FORMAT_VERSION},
            )

    # -- management ----------------------------------------------------------------------------
    def entries(self) -> list[CacheEntry]:
        """Every backbone folder in the cache, with its size and description."""
        out = []
        if not self.root.is_dir():
            return out
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            chunks = list(folder.glob("chunk-*.safetensors"))
            n = 0
            for c in chunks:
                from safetensors import safe_open

                try:
                    with safe_open(c, framework="numpy") as f:
                        n += f.get_slice("keys").get_shape()[0]
                except Exception:  # noqa: BLE001 - counted as empty; embed() will drop it
                    pass
            try:
                meta = json.loads((folder / "meta.json").read_text())
            except (OSError, ValueError):
                meta = {}
            size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            out.append(CacheEntry(folder.name, folder, n, len(chunks), size, meta))
        return out

    def clear(self, fingerprint: str | None = None) -> int:
        """Delete one backbone's entries (or all); returns the number of folders removed."""
        removed = 0
        for entry in self.entries():
            if fingerprint is None or entry.fingerprint.startswith(fingerprint):
                shutil.rmtree(entry.path)
                removed += 1
        return removed
