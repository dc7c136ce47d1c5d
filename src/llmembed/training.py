"""Train a fusion head on cached embeddings: stratified validation split, early stopping with
best-weights restore, Adam. Seeded: two runs on the same CPU give identical weights.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from .config import Settings
from .errors import ConfigError
from .heads import FusionHead, HeadConfig
from .metrics import classification_metrics

MONITORS = ("accuracy", "macro_f1", "loss")


@dataclass
class TrainConfig(Settings):
    """Training settings.

    patience: epochs without validation improvement before stopping; None trains max_epochs
        (the published protocol, which also sets val_fraction = 0).
    monitor: validation score that picks the best epoch: accuracy, macro_f1 or loss.
    class_weight: None or "balanced" (weights inversely proportional to class frequency).

    Raises:
        ConfigError: an unknown monitor or class_weight, or val_fraction outside [0, 1).
    """

    table = "training setting"

    lr: float = 1e-4
    batch_size: int = 64
    max_epochs: int = 200
    patience: int | None = 20
    val_fraction: float = 0.1
    weight_decay: float = 0.0
    class_weight: str | None = None
    monitor: str = "accuracy"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.monitor not in MONITORS:
            raise ConfigError(f"monitor must be one of {MONITORS}, not {self.monitor!r}")
        if self.class_weight not in (None, "balanced"):
            raise ConfigError("class_weight must be None or 'balanced'")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError("val_fraction must be in [0, 1)")




@dataclass
class TrainResult:
    """What :func:`train_head` returns: the trained head (best validation epoch restored), one
    history record per epoch, the best epoch, its validation metrics and the training time."""

    head: FusionHead
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    val_metrics: dict[str, Any] | None = None
    seconds: float = 0.0


def split_validation(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val), stratified when every class has at least 2 examples."""
    idx = np.arange(len(y))
    if fraction <= 0:
        return idx, idx[:0]
    counts = np.bincount(y)
    n_val = int(round(fraction * len(y)))
    stratify = y if counts[counts > 0].min() >= 2 and n_val >= len(counts[counts > 0]) else None
    if stratify is None:
        warnings.warn(
            "Some class has fewer than 2 examples: validation split is not stratified.",
            stacklevel=2,
        )
    tr, va = train_test_split(idx, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(tr), np.sort(va)


def predict_logits(
    head: FusionHead, features: list[torch.Tensor], batch_size: int = 4096
) -> torch.Tensor:
    """Logits in eval mode, batched."""
    head.eval()
    n = len(features[0])
    with torch.inference_mode():
        parts = [head([x[s : s + batch_size] for x in features]) for s in range(0, n, batch_size)]
    return torch.cat(parts) if parts else torch.zeros((0, head.n_classes))


def train_head(
    features: list[np.ndarray],
    y: np.ndarray,
    n_classes: int,
    head_config: HeadConfig | None = None,
    config: TrainConfig | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> TrainResult:
    """Fit a FusionHead on per-backbone features [n, n_vectors, width] and integer labels y."""
    head_config = head_config or HeadConfig()
    config = config or TrainConfig()
    start = time.perf_counter()
    device = torch.device(device)
    y = np.asarray(y, dtype=np.int64)
    tr_idx, va_idx = split_validation(y, config.val_fraction, config.seed)

    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    feats = [torch.as_tensor(f, dtype=torch.float32) for f in features]
    head = FusionHead([tuple(f.shape[1:]) for f in feats], n_classes, head_config)
    head.set_standardization([f[tr_idx] for f in feats])
    head.to(device)
    train_x = [f[tr_idx].to(device) for f in feats]
    train_y = torch.as_tensor(y[tr_idx], device=device)
    val_x = [f[va_idx].to(device) for f in feats]
    weight = None
    if config.class_weight == "balanced":
        counts = np.bincount(y[tr_idx], minlength=n_classes).astype(np.float64)
        w = len(tr_idx) / (n_classes * np.maximum(counts, 1))
        weight = torch.as_tensor(w, dtype=torch.float32, device=device)
    # fused Adam: one kernel for all parameters (measured ~30% faster per step on CPU).
    opt = torch.optim.Adam(
        head.parameters(),
        lr=config.lr,
        weight_decay=config.weight_decay,
        fused=device.type in ("cpu", "cuda"),
    )

    result = TrainResult(head=head)
    best_score, best_state, since_best = -np.inf, None, 0
    bar = tqdm(
        range(config.max_epochs), desc="train head", unit="epoch", disable=not progress, leave=False
    )
    for epoch in bar:
        head.train()
        perm = torch.randperm(len(tr_idx), generator=gen)
        total = 0.0
        for s in range(0, len(perm), config.batch_size):
            b = perm[s : s + config.batch_size].to(device)
            loss = head.loss(head([x[b] for x in train_x]), train_y[b], weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        record = {"epoch": epoch + 1, "train_loss": total / max(len(perm), 1)}
        if len(va_idx):
            logits = predict_logits(head, val_x).cpu()
            pred = logits.argmax(1).numpy()
            record["val_loss"] = float(head.loss(logits, torch.as_tensor(y[va_idx])))
            record["val_accuracy"] = float((pred == y[va_idx]).mean())
            m = classification_metrics(y[va_idx], pred, labels=range(n_classes))
            record["val_macro_f1"] = m["macro_f1"]
            score = (
                -record["val_loss"] if config.monitor == "loss" else record[f"val_{config.monitor}"]
            )
            if score > best_score:
                best_score, since_best = score, 0
                best_state = copy.deepcopy(head.state_dict())
                result.best_epoch, result.val_metrics = epoch + 1, m
            else:
                since_best += 1
            bar.set_postfix(val_acc=f"{record['val_accuracy']:.4f}", best=result.best_epoch)
        result.history.append(record)
        if config.patience is not None and len(va_idx) and since_best >= config.patience:
            break
    bar.close()
    if best_state is not None:
        head.load_state_dict(best_state)
    else:
        result.best_epoch = len(result.history)
    head.eval()
    result.seconds = time.perf_counter() - start
    return result
