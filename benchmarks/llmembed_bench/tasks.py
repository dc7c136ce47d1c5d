"""Tasks: a benchmark dataset as (all texts, labels, train/test indices per seed)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def cache_group(name: str) -> str:
    """A benchmark's cache group: R8 and R52 share their documents, so one cache folder."""
    return "reuters" if name in ("r8", "r52") else name


def reproduce_cache(name: str) -> Path:
    """The embedding cache folder ``llmembed-bench reproduce`` fills for benchmark ``name``
    (by default; its ``--cache-dir`` moves the root)."""
    from llmembed.cache import default_cache_dir

    return default_cache_dir() / "reproduce" / cache_group(name)


@dataclass
class Task:
    """A benchmark's texts and labels with its evaluation protocol.

    ``texts`` holds every text once (train then test for the official protocol, the labelled
    pool for a CV fallback); :meth:`split` gives the train / test indices of one seed.
    """

    name: str
    protocol: str
    texts: list[str]
    y: np.ndarray
    classes: list[str]
    folds: list[tuple[np.ndarray, np.ndarray]] | None = None
    n_train: int = 0
    note: str = ""
    quick: bool = False

    @property
    def group(self) -> str:
        """Cache group (:func:`cache_group`)."""
        return cache_group(self.name)

    def split(self, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
        if self.folds is None:
            n = len(self.texts)
            tr, te = np.arange(self.n_train), np.arange(self.n_train, n)
            return tr, te, f"official train {len(tr)} / test {len(te)}"
        k = seed % len(self.folds)
        tr, te = self.folds[k]
        return tr, te, f"fold {k} of {len(self.folds)}: train {len(tr)} / test {len(te)}"


def load_task(
    name: str,
    data_dir: str | os.PathLike | None = None,
    quick: bool = False,
    n_train: int | None = None,
    n_test: int | None = None,
) -> Task:
    """Load a benchmark (optionally a stratified subset) as a Task."""
    from llmembed.datasets import load_benchmark

    ds = load_benchmark(name, data_dir)
    if quick or n_train is not None or n_test is not None:
        if ds.is_cv:
            pool = (n_train or 0) + (n_test or 0) or None
            ds = ds.subsample(None, pool, seed=0)
        else:
            ds = ds.subsample(n_train, n_test, seed=0)
    classes = list(ds.label_names)
    index = {c: i for i, c in enumerate(classes)}
    if not ds.is_cv:
        texts = list(ds.train_texts) + list(ds.test_texts)
        labels = list(ds.train_labels) + list(ds.test_labels)
        return Task(
            name,
            ds.protocol,
            texts,
            np.array([index[v] for v in labels]),
            classes,
            n_train=len(ds.train_texts),
            note=ds.note,
            quick=quick,
        )
    texts = list(ds.train_texts) + list(ds.test_texts)
    labels = list(ds.train_labels) + list(ds.test_labels)
    positions: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        positions.setdefault(t, []).append(i)
    folds = []
    for _tr_t, _tr_l, te_t, _te_l in ds.splits(n_folds=5, seed=0):
        # Map the fold's test texts back to pool indices (duplicates taken in pool order).
        queues = {t: list(p) for t, p in positions.items()}
        te = np.array(sorted(queues[t].pop(0) for t in te_t))
        tr = np.setdiff1d(np.arange(len(texts)), te)
        folds.append((tr, te))
    return Task(
        name,
        ds.protocol,
        texts,
        np.array([index[v] for v in labels]),
        classes,
        folds=folds,
        note=ds.note,
        quick=quick,
    )
