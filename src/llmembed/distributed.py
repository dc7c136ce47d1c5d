"""Distributed embedding and batch prediction on Ray Data, written as resumable Parquet shards.

``embed_files(inputs, backbone, output)`` and ``predict_files(model_dir, inputs, output)`` (CLI:
``llmembed embed|predict ... --engine ray``) cut the input files into shards of ``shard_rows``
rows, in file order, and let Ray Data's ``map_batches`` hand the shards not yet written to a
pool of actors (``workers`` of them, each holding one :class:`~llmembed.backbones.Backbone` or
one classifier, with ``cpus_per_worker`` / ``gpus_per_worker`` / ``threads_per_worker``). Each
actor writes its shard as ``part-<file>-<shard>.parquet`` under a temporary name and renames it
into place when complete, so a killed run leaves no half-written shard that counts as done, and
re-running the same command computes only the shards that are missing.

A shard's columns: ``row_id`` (int64, ``file index << 40 | row in file``: input order is
``sort by row_id``), ``key`` (the embedding cache's 16-byte text key) and ``embedding`` (an
Arrow fixed-shape tensor, float32 [n_vectors, width]) — or, for predictions, ``label`` and
``probabilities``. The file metadata ``llmembed`` holds the backbone fingerprint and description
(or the model's classes), and the folder's ``_llmembed.json`` the run's settings: a second run
with other settings into the same folder is refused. :func:`import_embeddings` stores such a
folder in the embedding cache, so ``fit`` / ``llmembed train`` on the same texts extract
nothing.

The input files are read by the driver with :func:`llmembed.io.read_table` (the same parser and
checks as the local commands); see docs/scale.md for where that becomes the bottleneck.

Needs the ``ray`` extra: ``pip install 'llmembed[ray]'``.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, DataError, LLMEmbedError

__all__ = ["RunSummary", "embed_files", "import_embeddings", "predict_files", "read_shards"]

MANIFEST = "_llmembed.json"
ROW_BITS = 40  # row_id = file index << 40 | row: a trillion rows per file, 8M files
FORMAT_VERSION = 1


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise LLMEmbedError(
            "--engine ray needs Ray Data: pip install 'llmembed[ray]' (or 'ray[data]')"
        ) from None
    return ray


def _arrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise LLMEmbedError("Parquet output needs pyarrow: pip install 'llmembed[ray]'") from None
    return pa, pq


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What a run did: shards in total, shards computed now, rows computed now, seconds."""

    output: Path
    shards: int
    computed: int
    rows: int
    seconds: float

    @property
    def skipped(self) -> int:
        """Shards already written by an earlier run (not recomputed)."""
        return self.shards - self.computed


# -- planning -----------------------------------------------------------------------------------
def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files named or matched by globs, in the order given (each glob sorted), without repeats.

    Raises DataError for a name that is neither a file nor a glob matching one.
    """
    out: list[Path] = []
    for item in inputs:
        text = str(item)
        matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
        files = [Path(m) for m in matches if Path(m).is_file()]
        if not files:
            raise DataError(f"{text}: no such file (and no file matches it as a glob)")
        out += [f for f in files if f not in out]
    return out


def _shard_name(file: Path, index: int) -> str:
    digest = hashlib.blake2b(str(file.resolve()).encode(), digest_size=6).hexdigest()
    return f"part-{digest}-{index:06d}.parquet"


def _plan(
    files: list[Path], text_col: str, shard_rows: int, output: Path
) -> tuple[list[dict[str, Any]], int]:
    """The shards still to compute (name, first row_id, texts) and the number of shards."""
    from .io import read_table

    todo, total = [], 0
    for fi, file in enumerate(files):
        texts, _ = read_table(file, text_col=text_col)
        for si, start in enumerate(range(0, len(texts), shard_rows)):
            total += 1
            name = _shard_name(file, si)
            if not (output / name).exists():
                part = texts[start : start + shard_rows]
                todo.append({"name": name, "first_row": (fi << ROW_BITS) | start, "texts": part})
    return todo, total


def _check_manifest(output: Path, settings: dict[str, Any]) -> None:
    """Write the run's settings, or refuse a folder written with other settings."""
    from .files import atomic_write_json

    path = output / MANIFEST
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = None
        if previous != settings:
            raise ConfigError(
                f"{output} holds shards of another run ({path.name} differs: other inputs, "
                "backbone or shard size); use a new --output folder, or delete this one"
            )
        return
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, settings, indent=2)


# -- the actors ---------------------------------------------------------------------------------
def _write_shard(output: Path, name: str, table: Any, metadata: dict[str, Any]) -> None:
    """Write a Parquet shard under a temporary name and rename it into place."""
    from .files import atomic_path

    _, pq = _arrow()
    table = table.replace_schema_metadata({"llmembed": json.dumps(metadata)})
    with atomic_path(output / name) as tmp:
        pq.write_table(table, tmp)


def _tensor_column(values: np.ndarray) -> Any:
    pa, _ = _arrow()
    return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(values))


def _rows(first_row: int, n: int) -> np.ndarray:
    return np.arange(first_row, first_row + n, dtype=np.int64)


class _Worker:
    """Base of the Ray actors: threads, output folder, the shard loop of one call."""

    def __init__(self, output: str, threads: int | None) -> None:
        self.output = Path(output)
        self.threads = threads

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from .hardware import torch_threads

        done = []
        with torch_threads(self.threads):
            for name, first_row, texts in zip(batch["name"], batch["first_row"], batch["texts"]):
                texts = [str(t) for t in texts]
                table, metadata = self.compute(texts, int(first_row))
                _write_shard(self.output, str(name), table, metadata)
                done.append(len(texts))
        return {"name": list(batch["name"]), "rows": done}

    def compute(self, texts: list[str], first_row: int) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError


class _EmbedWorker(_Worker):
    """Holds one Backbone; a shard becomes row_id, key, embedding."""

    def __init__(self, output: str, spec: dict[str, Any], device: str, threads: int | None):
        from .backbones import Backbone, BackboneSpec

        super().__init__(output, threads)
        self.backbone = Backbone(BackboneSpec.from_dict(spec), device=device)
        self.backbone.load()
        self.metadata = {
            "format": FORMAT_VERSION,
            "fingerprint": self.backbone.fingerprint(),
            "backbone": self.backbone.describe(),
        }

    def compute(self, texts: list[str], first_row: int) -> tuple[Any, dict[str, Any]]:
        from .cache import text_key

        pa, _ = _arrow()
        emb = self.backbone.embed(texts, progress=False)
        table = pa.table(
            {
                "row_id": _rows(first_row, len(texts)),
                "key": pa.array([text_key(t) for t in texts], pa.binary(16)),
                "embedding": _tensor_column(emb),
            }
        )
        return table, self.metadata


class _PredictWorker(_Worker):
    """Holds one trained classifier; a shard becomes row_id, label, probabilities."""

    def __init__(self, output: str, model_dir: str, device: str, threads: int | None):
        from .classifier import LLMEmbedClassifier

        super().__init__(output, threads)
        self.clf = LLMEmbedClassifier.load(model_dir, device=device, verbose=False, use_cache=False)
        classes = [c.item() if hasattr(c, "item") else c for c in self.clf.classes_]
        self.metadata = {"format": FORMAT_VERSION, "classes": classes}

    def compute(self, texts: list[str], first_row: int) -> tuple[Any, dict[str, Any]]:
        pa, _ = _arrow()
        proba = self.clf.predict_proba(texts).astype(np.float32)
        labels = self.clf.predict_from_proba(proba, as_sets=True)
        if self.clf.multi_label_:
            labels = [list(s) for s in labels]
        table = pa.table(
            {
                "row_id": _rows(first_row, len(texts)),
                "label": pa.array([x.item() if hasattr(x, "item") else x for x in labels]),
                "probabilities": _tensor_column(proba),
            }
        )
        return table, self.metadata


# -- running ------------------------------------------------------------------------------------
def _run(
    worker: type,
    worker_args: dict[str, Any],
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    settings: dict[str, Any],
    *,
    text_col: str,
    shard_rows: int,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    address: str | None,
    progress: bool,
) -> RunSummary:
    for name, value in (("shard_rows", shard_rows), ("workers", workers)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, not {value!r}")
    if cpus_per_worker <= 0 or gpus_per_worker < 0:
        raise ConfigError("cpus_per_worker must be > 0 and gpus_per_worker >= 0")
    ray = _ray()
    t0 = time.perf_counter()
    out = Path(output).expanduser()
    files = expand_inputs(inputs)
    settings = {
        "format": FORMAT_VERSION,
        **settings,
        "inputs": [str(f.resolve()) for f in files],
        "text_col": text_col,
        "shard_rows": shard_rows,
    }
    _check_manifest(out, settings)
    todo, total = _plan(files, text_col, shard_rows, out)
    rows = 0
    if todo:
        started_here = not ray.is_initialized()
        if started_here:
            local = {} if address else {"include_dashboard": False}
            ray.init(address=address, log_to_driver=False, **local)
        try:
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = progress
            ds = ray.data.from_items(todo, override_num_blocks=len(todo))
            done = ds.map_batches(
                worker,
                fn_constructor_kwargs={"output": str(out), **worker_args},
                batch_size=1,
                concurrency=workers,
                num_cpus=cpus_per_worker,
                num_gpus=gpus_per_worker,
            )
            rows = sum(int(r["rows"]) for r in done.iter_rows())
        finally:
            if started_here:
                ray.shutdown()
    return RunSummary(out, total, len(todo), rows, time.perf_counter() - t0)


def embed_files(
    inputs: Sequence[str | os.PathLike],
    backbone: Any,
    output: str | os.PathLike,
    *,
    text_col: str = "text",
    shard_rows: int = 10_000,
    workers: int = 1,
    cpus_per_worker: float = 1,
    gpus_per_worker: float = 0,
    threads_per_worker: int | None = 1,
    device: str = "auto",
    address: str | None = None,
    progress: bool = True,
) -> RunSummary:
    """Embed the texts of ``inputs`` with ``backbone`` on Ray Data, into Parquet shards.

    Takes: input files or globs (CSV, TSV, JSONL, JSON, Parquet), a BackboneSpec (or a model
    name, or a spec dict), the output folder; the text column; rows per shard (the unit of
    resumption); the actor pool (``workers``, CPUs / GPUs each, torch threads each); the
    device; a Ray cluster ``address`` (None: the running Ray, else a local one).
    Returns: a :class:`RunSummary`. Shards already in ``output`` are not recomputed.
    Raises: DataError for missing or unreadable inputs; ConfigError for bad settings or an
    output folder written by another run; LLMEmbedError when Ray is not installed; what the
    backbone raises (shards written before stay valid).
    """
    from .backbones import BackboneSpec

    if isinstance(backbone, str):
        backbone = BackboneSpec(model=backbone)
    elif isinstance(backbone, dict):
        backbone = BackboneSpec.from_dict(backbone)
    if not isinstance(backbone, BackboneSpec):
        raise ConfigError(f"backbone must be a BackboneSpec, a dict or a model name: {backbone!r}")
    spec = backbone.to_dict()
    return _run(
        _EmbedWorker,
        {"spec": spec, "device": device, "threads": threads_per_worker},
        inputs,
        output,
        {"kind": "embeddings", "backbone": spec},
        text_col=text_col,
        shard_rows=shard_rows,
        workers=workers,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        address=address,
        progress=progress,
    )


def predict_files(
    model_dir: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    text_col: str = "text",
    shard_rows: int = 10_000,
    workers: int = 1,
    cpus_per_worker: float = 1,
    gpus_per_worker: float = 0,
    threads_per_worker: int | None = 1,
    device: str = "auto",
    address: str | None = None,
    progress: bool = True,
) -> RunSummary:
    """Predict labels and probabilities of a saved model over ``inputs`` on Ray Data.

    Takes and returns as :func:`embed_files`, with a saved-model folder instead of a backbone;
    shards hold ``row_id``, ``label`` (a list of labels for a multi-label model) and
    ``probabilities`` (columns in the classes order of the file metadata). Raises as
    :func:`embed_files`, and ModelLoadError for a folder that is not a saved model (checked
    before Ray starts).
    """
    from . import modelcard

    folder = Path(model_dir).expanduser()
    saved = modelcard.read_saved_model(folder)
    return _run(
        _PredictWorker,
        {"model_dir": str(folder.resolve()), "device": device, "threads": threads_per_worker},
        inputs,
        output,
        {"kind": "predictions", "model": str(folder.resolve()), "classes": saved.classes},
        text_col=text_col,
        shard_rows=shard_rows,
        workers=workers,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        address=address,
        progress=progress,
    )


# -- reading back -------------------------------------------------------------------------------
def _shard_files(folder: Path) -> list[Path]:
    if not (folder / MANIFEST).is_file():
        raise DataError(f"{folder}: no {MANIFEST}; not a folder written by --engine ray")
    return sorted(folder.glob("part-*.parquet"))


def read_shards(folder: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every shard of a run folder, concatenated in input order (sorted by ``row_id``).

    Returns: the columns as numpy arrays (``embedding`` / ``probabilities`` as [n, ...] float32,
    ``key`` as 16-byte ``bytes`` objects) and the metadata of the shards.
    Raises: DataError for a folder that is not a run folder or has no shards yet.
    """
    pa, pq = _arrow()
    root = Path(folder).expanduser()
    files = _shard_files(root)
    if not files:
        raise DataError(f"{root}: no shards written yet")
    columns: dict[str, list[np.ndarray]] = {}
    meta: dict[str, Any] = {}
    for f in files:
        table = pq.read_table(f)
        meta = json.loads(table.schema.metadata[b"llmembed"])
        for name in table.column_names:
            col = table.column(name).combine_chunks()
            if isinstance(col, pa.FixedShapeTensorArray):
                value = col.to_numpy_ndarray()
            else:  # row_id: int64; label and key: object arrays of str / int / bytes
                value = col.to_numpy(zero_copy_only=False)
            columns.setdefault(name, []).append(value)
    out = {k: np.concatenate(v) for k, v in columns.items()}
    order = np.argsort(out["row_id"], kind="stable")
    return {k: v[order] for k, v in out.items()}, meta


def import_embeddings(folder: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> int:
    """Store the embeddings of a run folder in the embedding cache (under their backbone's
    fingerprint), so that ``fit`` / ``predict`` / ``llmembed train`` on these texts with that
    backbone extract nothing. Reads and stores one shard at a time.

    Returns: the number of vectors written (those already cached are skipped).
    Raises: DataError for a folder that is not an embeddings run folder.
    """
    from .cache import EmbeddingCache

    _, pq = _arrow()
    root = Path(folder).expanduser()
    cache = EmbeddingCache(cache_dir)
    written = 0
    for f in _shard_files(root):
        table = pq.read_table(f, columns=["key", "embedding"])
        meta = json.loads(table.schema.metadata[b"llmembed"])
        if "fingerprint" not in meta:
            raise DataError(f"{f}: holds predictions, not embeddings")
        keys = [bytes(k) for k in table.column("key").to_pylist()]
        emb = table.column("embedding").combine_chunks().to_numpy_ndarray()
        written += cache.add(meta["fingerprint"], keys, emb, meta=meta["backbone"])
    return written
