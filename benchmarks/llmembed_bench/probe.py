"""Linear probe on every layer and pooling of one backbone: which layers carry the task?

All layers and poolings come from one (cached) forward pass per text, optionally through a
prompt template. A standardized ridge classifier (closed form: milliseconds per fit, so every
layer can be probed) is fitted per (layer, pooling) and scored by stratified k-fold
cross-validation on a train subset, never on test. The result drives the default layer choice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from llmembed import Backbone, BackboneSpec, EmbeddingCache, classification_metrics

DEFAULT_POOLINGS = ("mean", "mean_no_first", "last")
RIDGE_ALPHA = 10.0


def ridge_probe(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray) -> np.ndarray:
    """Predictions on `x_val` of a standardized ridge classifier fitted on (x_fit, y_fit): the
    closed-form linear probe (milliseconds per fit) that both the probe command and the
    best-layer ablation use to score a layer."""
    clf = make_pipeline(StandardScaler(), RidgeClassifier(alpha=RIDGE_ALPHA))
    return clf.fit(x_fit, y_fit).predict(x_val)


@dataclass
class ProbeResult:
    """One row per (layer, pooling): cross-validated accuracy (mean and std over the folds)
    and macro-F1."""

    model: str
    dataset: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    n_train: int = 0
    folds: int = 0
    template: str = "{text}"
    extract_seconds: float = 0.0

    def best(self, pooling: str | None = None) -> dict[str, Any]:
        rows = [r for r in self.rows if pooling is None or r["pooling"] == pooling]
        return max(rows, key=lambda r: (r["accuracy"], r["macro_f1"]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "n_train": self.n_train,
            "folds": self.folds,
            "template": self.template,
            "extract_seconds": self.extract_seconds,
            "rows": self.rows,
        }


def probe_layers(
    model: str,
    texts: Sequence[str],
    labels: Sequence[Any],
    dataset: str = "",
    poolings: Sequence[str] = DEFAULT_POOLINGS,
    max_length: int = 256,
    template: str = "{text}",
    folds: int = 5,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    device: str = "auto",
    progress: bool = True,
) -> ProbeResult:
    """Probe every hidden state of `model` with each pooling on (texts, labels), the texts put
    in `template`: `folds`-fold stratified cross-validation."""
    y = np.asarray(list(labels))
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(y, y))
    spec = BackboneSpec(
        model,
        layers="all",
        pooling=",".join(poolings),
        max_length=max_length,
        template=template,
    )
    backbone = Backbone(spec, device=device)
    t0 = time.perf_counter()
    emb = EmbeddingCache(cache_dir).embed(backbone, list(texts), progress=progress)
    result = ProbeResult(
        model,
        dataset,
        n_train=len(y),
        folds=folds,
        template=template,
        extract_seconds=time.perf_counter() - t0,
    )
    emb = emb.reshape(len(y), len(backbone.layer_indices), len(poolings), -1)
    cells = [(li, pi) for li in range(emb.shape[1]) for pi in range(len(poolings))]
    for li, pi in tqdm(cells, desc="probe", unit="fit", disable=not progress, leave=False):
        scores = []
        for fit, val in splits:
            pred = ridge_probe(emb[fit, li, pi], y[fit], emb[val, li, pi])
            m = classification_metrics(y[val], pred)
            scores.append((m["accuracy"], m["macro_f1"]))
        acc, f1 = np.asarray(scores).T
        result.rows.append(
            {
                "layer": backbone.layer_indices[li],
                "pooling": poolings[pi],
                "accuracy": float(acc.mean()),
                "accuracy_std": float(acc.std()),
                "macro_f1": float(f1.mean()),
            }
        )
    return result


def plot_probe(results: Sequence[ProbeResult], path: str | os.PathLike) -> Path:
    """Accuracy by depth, one panel per result, one line per pooling (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, res in zip(axes[0], results):
        for pooling in dict.fromkeys(r["pooling"] for r in res.rows):
            rows = [r for r in res.rows if r["pooling"] == pooling]
            ax.plot(
                [r["layer"] for r in rows],
                [r["accuracy"] for r in rows],
                marker="o",
                markersize=3,
                label=pooling,
            )
        best = res.best()
        ax.axvline(best["layer"], color="grey", linestyle=":", linewidth=1)
        ax.set_title(
            f"{res.model} on {res.dataset} ({res.n_train} texts, {res.folds}-fold CV)", fontsize=9
        )
        ax.set_xlabel("hidden-state index (0 = embeddings)")
        ax.set_ylabel("validation accuracy (ridge probe)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    from .plots import save_png  # here: plots imports the methods, which import this module

    return save_png(fig, path, dpi=120)
