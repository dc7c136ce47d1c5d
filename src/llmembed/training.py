"""Train a fusion head on cached embeddings: stratified validation split, early stopping with
best-weights restore, Adam. The linear head instead is a logistic regression fitted full-batch by
L-BFGS, its L2 strength chosen on the validation split. Seeded: two runs on the same CPU give
identical weights.

Single-label targets (one class index per text) train a softmax with cross-entropy; multi-label
targets (a 0/1 matrix [n, n_labels]) one sigmoid per label with binary cross-entropy, and the
held-out rows then tune a decision threshold per label (:mod:`llmembed.multilabel`).

Features given as :class:`~llmembed.cache.FeatureFile` (on disk, e.g. a training set larger
than memory) are streamed: read in blocks of rows for the standardization moments, every epoch
(a shuffle buffer of random blocks) and every L-BFGS step; only the validation rows and one
buffer are held in memory.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn
from tqdm.auto import tqdm

from .cache import FeatureFile
from .config import Settings
from .errors import ConfigError
from .heads import FusionHead, HeadConfig
from .metrics import accuracy_macro_f1, classification_metrics, multilabel_metrics
from .multilabel import tune_thresholds
from .splits import group_kfold, group_validation

MONITORS = ("accuracy", "macro_f1", "loss")
BLOCK_BYTES = 8 << 20  # rows read from disk at a time (features streamed from a FeatureFile)
SHUFFLE_BYTES = 512 << 20  # random blocks whose rows are shuffled together (one buffer)


@dataclass
class TrainConfig(Settings):
    """Training settings.

    patience: epochs without validation improvement before stopping; None trains max_epochs
        (the published protocol, which also sets val_fraction = 0).
    monitor: validation score that picks the best epoch: accuracy, macro_f1 or loss. For
        multi-label targets "accuracy" reads as micro-F1 (the share of texts whose whole label
        set is right is too coarse to pick epochs by); scores use threshold 0.5.
    class_weight: None or "balanced" (weights inversely proportional to class frequency; for
        multi-label targets, each label's positives weighted by its negatives / positives).
    C: the linear head's inverse L2 strength, as in scikit-learn's LogisticRegression (loss =
        C x summed cross-entropy + 0.5 |W|^2). A list is a grid: each value is fitted on the
        training part, the best on the validation split wins and is refitted on all the data.
    max_iter: L-BFGS iterations per fit of the linear head.
    tol: L-BFGS stops once no gradient component exceeds it (in the preconditioned coordinates
        of :func:`_lbfgs`, where it bounds the distance to the optimum). 1e-4, scikit-learn's
        LogisticRegression default, left the objective within 1e-5 (relative) of a 1e-8 fit's
        on SST-2 for 0.6x the evaluations of 1e-5 (docs/performance.md, "Warm fit").
    C_folds: 0 chooses the linear head's C on the validation split; k >= 2 by stratified
        k-fold cross-validation over all training rows instead (k times the cost, steadier;
        with a single C, its k out-of-fold fits still give the held-out logits).
    calibrate: fit a softmax temperature on the held-out logits (the validation split, or
        the linear head's out-of-fold rows) so that probabilities match accuracy (temperature
        scaling, Guo et al. 2017); predictions, and so accuracy, do not change. Without
        held-out rows, or False: temperature 1. Single-label only: multi-label models tune
        per-label thresholds on the same rows instead.

    Raises:
        ConfigError: an unknown monitor or class_weight, or val_fraction outside [0, 1).
    """

    table = "training setting"
    quiet_defaults = ("C", "max_iter", "tol", "C_folds", "calibrate")

    lr: float = 1e-4
    batch_size: int = 64
    max_epochs: int = 200
    patience: int | None = 20
    val_fraction: float = 0.1
    weight_decay: float = 0.0
    class_weight: str | None = None
    monitor: str = "accuracy"
    seed: int = 0
    C: float | list[float] = field(
        default_factory=lambda: [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
    )
    max_iter: int = 200
    tol: float = 1e-4
    C_folds: int = 0
    calibrate: bool = True

    def __post_init__(self) -> None:
        grid = self.C if isinstance(self.C, list) else [self.C]
        if not grid or any(not isinstance(c, (int, float)) or c <= 0 for c in grid):
            raise ConfigError(f"C must be a positive number or a list of them, not {self.C!r}")
        if self.max_iter < 1:
            raise ConfigError("max_iter must be positive")
        if isinstance(self.tol, bool) or not isinstance(self.tol, (int, float)) or self.tol <= 0:
            raise ConfigError(f"tol must be a positive number (e.g. 1e-4), not {self.tol!r}")
        if self.C_folds < 0 or self.C_folds == 1:
            raise ConfigError("C_folds must be 0 (use the validation split) or at least 2")
        if self.monitor not in MONITORS:
            raise ConfigError(f"monitor must be one of {MONITORS}, not {self.monitor!r}")
        if self.class_weight not in (None, "balanced"):
            raise ConfigError("class_weight must be None or 'balanced'")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError("val_fraction must be in [0, 1)")

    @property
    def C_grid(self) -> list[float]:
        """C as a list of floats (one value when C is a number)."""
        return [float(c) for c in (self.C if isinstance(self.C, list) else [self.C])]


@dataclass
class TrainResult:
    """What :func:`train_head` returns: the trained head (best validation epoch restored), one
    history record per epoch (per C for the linear head), the best epoch (0 for the linear
    head: it has no epochs), its validation metrics, the training time, the softmax temperature
    (single-label) and the per-label decision thresholds (multi-label; else None).
    ``oof_logits``: for the linear head with ``C_folds`` >= 2, the chosen C's out-of-fold
    logits [n, n_classes] (every row scored once, by a fit that did not see it; row order);
    else None."""

    head: FusionHead
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    val_metrics: dict[str, Any] | None = None
    seconds: float = 0.0
    temperature: float = 1.0
    thresholds: np.ndarray | None = None
    oof_logits: np.ndarray | None = None


def split_validation(
    y: np.ndarray, fraction: float, seed: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val), stratified when every class has at least 2 examples (multi-label
    targets, a 0/1 matrix: a plain shuffled split); with ``groups`` (ids, one per row), whole
    groups (:func:`llmembed.splits.group_validation`)."""
    idx = np.arange(len(y))
    if fraction <= 0:
        return idx, idx[:0]
    if groups is not None:
        return group_validation(y, fraction, seed, groups)
    if y.ndim == 2:
        tr, va = train_test_split(idx, test_size=fraction, random_state=seed)
        return np.sort(tr), np.sort(va)
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


def fit_temperature(logits: torch.Tensor, y: np.ndarray) -> float:
    """The softmax temperature T > 0 minimizing the cross-entropy of ``logits / T`` on labels
    ``y`` (held-out rows), searched in [0.05, 20]; 1.0 for no rows."""
    from scipy.optimize import minimize_scalar

    if not len(y):
        return 1.0
    z = torch.as_tensor(logits, dtype=torch.float64)
    target = torch.as_tensor(np.asarray(y), dtype=torch.long)

    def nll(t: float) -> float:
        return float(nn.functional.cross_entropy(z / t, target))

    best = minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded")
    return float(best.x) if nll(best.x) < nll(1.0) else 1.0


class _Objective:
    """The loss and the held-out scores of one target kind: single-label (class indices,
    cross-entropy through the head's own loss) or multi-label (a 0/1 matrix, binary
    cross-entropy per label, scores at threshold 0.5)."""

    def __init__(
        self, head: FusionHead, y: np.ndarray, weight: torch.Tensor | None, monitor: str
    ) -> None:
        self.head, self.weight = head, weight
        self.multi = y.ndim == 2
        self.monitor = "micro_f1" if self.multi and monitor == "accuracy" else monitor

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss of logits against targets (class indices or a 0/1 matrix)."""
        if self.multi:
            return nn.functional.binary_cross_entropy_with_logits(
                logits, target, pos_weight=self.weight
            )
        if self.head.config.fusion == "linear":  # the published double softmax is MLP-only
            return nn.functional.cross_entropy(logits, target, weight=self.weight)
        return self.head.loss(logits, target, self.weight)

    def mass(self, target: torch.Tensor) -> float:
        """The denominator of the mean loss over these targets (their class weights' sum, or
        their count), so that block losses add up to the loss over all rows."""
        if self.weight is not None and not self.multi:
            return float(self.weight[target].sum())
        return float(len(target))

    def score(self, logits: torch.Tensor, y: np.ndarray) -> dict[str, float]:
        """The history record of held-out logits against labels y: val_loss, val_<metric>
        for accuracy / micro-F1 and macro-F1, and "score" (higher is better, by ``monitor``).
        Cheap (every epoch or C is scored); :meth:`metrics` gives the full report."""
        target = torch.as_tensor(y)
        loss = float(self.loss(logits, target))
        if self.multi:
            m = self.metrics(logits, y)
            record = {"val_loss": loss, "val_micro_f1": m["micro_f1"]}
            record["val_macro_f1"] = m["macro_f1"]
        else:
            accuracy, macro_f1 = accuracy_macro_f1(y, logits.argmax(1).numpy(), logits.shape[1])
            record = {"val_loss": loss, "val_accuracy": accuracy, "val_macro_f1": macro_f1}
        record["score"] = -loss if self.monitor == "loss" else record[f"val_{self.monitor}"]
        return record

    def metrics(self, logits: torch.Tensor, y: np.ndarray) -> dict[str, Any]:
        """The held-out metrics report of logits against labels y (the model's
        ``val_metrics``)."""
        if self.multi:
            pred = (torch.sigmoid(logits) >= 0.5).numpy()
            return multilabel_metrics(y, pred, labels=range(y.shape[1]))
        return classification_metrics(y, logits.argmax(1).numpy(), labels=range(logits.shape[1]))

    def finish(
        self, result: TrainResult, logits: torch.Tensor, y: np.ndarray, calibrate: bool
    ) -> None:
        """Fit what held-out logits decide after training: the per-label thresholds
        (multi-label) or the softmax temperature (single-label, with ``calibrate``)."""
        if self.multi:
            result.thresholds = tune_thresholds(torch.sigmoid(logits).numpy(), y)
        elif calibrate and len(y):
            result.temperature = fit_temperature(logits, y)


class _Rows:
    """Feature rows, some arrays in memory and some FeatureFiles on disk, read block by block
    (``block`` rows, :data:`BLOCK_BYTES` at most) as float32 tensors."""

    def __init__(self, features: list[np.ndarray | FeatureFile]) -> None:
        self.features = features
        self.n = len(features[0])
        self.row_bytes = sum(4 * int(np.prod(f.shape[1:])) for f in features)
        self.block = max(1, BLOCK_BYTES // max(1, self.row_bytes))

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(f.shape[1:]) for f in self.features]

    def read(self, start: int, stop: int) -> list[torch.Tensor]:
        """Rows start:stop of every array."""
        return [
            torch.from_numpy(f.read(start, stop))
            if isinstance(f, FeatureFile)
            else torch.as_tensor(f[start:stop], dtype=torch.float32)
            for f in self.features
        ]

    def blocks(self, rows: np.ndarray) -> Iterator[tuple[slice, list[torch.Tensor]]]:
        """The rows ``rows`` (sorted), block by block: (their slice of ``rows``, the arrays)."""
        for start in range(0, self.n, self.block):
            lo, hi = np.searchsorted(rows, [start, start + self.block])
            if lo < hi:
                local = torch.as_tensor(rows[lo:hi] - start)
                yield slice(lo, hi), [x[local] for x in self.read(start, start + self.block)]

    def take(self, rows: np.ndarray) -> list[torch.Tensor]:
        """The rows ``rows`` (sorted) of every array, in memory."""
        parts = [data for _, data in self.blocks(rows)]
        if not parts:
            return [torch.zeros((0, *shape)) for shape in self.shapes]
        return [torch.cat(column) for column in zip(*parts)]

    def moments(self, rows: np.ndarray) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-dimension mean and standard deviation (n - 1) of the rows ``rows``, summed in
        float64 block by block."""
        sums = [torch.zeros(shape, dtype=torch.float64) for shape in self.shapes]
        squares = [torch.zeros(shape, dtype=torch.float64) for shape in self.shapes]
        for _, data in self.blocks(rows):
            for i, x in enumerate(data):
                x = x.double()
                sums[i] += x.sum(0)
                squares[i] += (x * x).sum(0)
        n = len(rows)
        means = [t / max(n, 1) for t in sums]
        if n < 2:
            return [m.float() for m in means], [torch.ones(shape) for shape in self.shapes]
        stds = [((q - n * m * m) / (n - 1)).clamp(min=0).sqrt() for q, m in zip(squares, means)]
        return [m.float() for m in means], [sd.float() for sd in stds]

    def shuffled(
        self, rows: np.ndarray, batch_size: int, gen: torch.Generator
    ) -> Iterator[tuple[list[torch.Tensor], np.ndarray]]:
        """Minibatches of the rows ``rows`` in a random order: the blocks are shuffled, a
        buffer of them (:data:`SHUFFLE_BYTES`) is read, and its rows are shuffled together.
        Yields (the arrays of the batch, its row numbers)."""
        wanted = np.zeros(self.n, dtype=bool)
        wanted[rows] = True
        n_blocks = -(-self.n // self.block)
        per_buffer = max(1, SHUFFLE_BYTES // max(1, self.block * self.row_bytes))
        order = torch.randperm(n_blocks, generator=gen).numpy()
        for g in range(0, n_blocks, per_buffer):
            starts = np.sort(order[g : g + per_buffer]) * self.block
            ids = np.concatenate([np.arange(s, min(s + self.block, self.n)) for s in starts])
            keep = torch.as_tensor(np.flatnonzero(wanted[ids]))
            data = [
                torch.cat(column)[keep]
                for column in zip(*(self.read(s, s + self.block) for s in starts))
            ]
            ids = ids[keep.numpy()]
            perm = torch.randperm(len(ids), generator=gen)
            for s in range(0, len(perm), batch_size):
                b = perm[s : s + batch_size]
                yield [x[b] for x in data], ids[b.numpy()]


def train_head(
    features: list[np.ndarray | FeatureFile],
    y: np.ndarray,
    n_classes: int,
    head_config: HeadConfig | None = None,
    config: TrainConfig | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    groups: np.ndarray | None = None,
) -> TrainResult:
    """Fit a FusionHead on per-backbone features [n, n_vectors, width] and labels y: integer
    class indices [n] (single-label), or a 0/1 matrix [n, n_classes] (multi-label).
    ``groups``: group ids [n] (:func:`llmembed.splits.group_ids`), kept whole by the validation
    split and the linear head's C folds.

    The MLP heads train by Adam with early stopping on the validation split; the linear head
    (fusion "linear") by L-BFGS, see :func:`_fit_linear`. Features may be numpy arrays or
    FeatureFiles on disk; with any FeatureFile among them every array is streamed in blocks
    (the minibatch order then differs from the in-memory one: the same model up to SGD noise,
    and the same linear head up to float rounding).
    """
    head_config = head_config or HeadConfig()
    config = config or TrainConfig()
    start = time.perf_counter()
    device = torch.device(device)
    multi = np.ndim(y) == 2
    y = np.asarray(y, dtype=np.float32 if multi else np.int64)
    tr_idx, va_idx = split_validation(y, config.val_fraction, config.seed, groups)

    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    streamed = any(isinstance(f, FeatureFile) for f in features)
    head = FusionHead([tuple(f.shape[1:]) for f in features], n_classes, head_config)
    if streamed:
        source: _Rows | list[torch.Tensor] = _Rows(features)
        head.set_moments(*source.moments(tr_idx))
    else:
        source = [torch.as_tensor(f, dtype=torch.float32) for f in features]
        head.set_standardization([f[tr_idx] for f in source])
    weight = None
    if config.class_weight == "balanced" and multi:
        positives = y[tr_idx].sum(0).astype(np.float64)
        w = (len(tr_idx) - positives) / np.maximum(positives, 1)
        weight = torch.as_tensor(w, dtype=torch.float32, device=device)
    elif config.class_weight == "balanced":
        counts = np.bincount(y[tr_idx], minlength=n_classes).astype(np.float64)
        w = len(tr_idx) / (n_classes * np.maximum(counts, 1))
        weight = torch.as_tensor(w, dtype=torch.float32, device=device)
    head.to(device)
    objective = _Objective(head, y, weight, config.monitor)
    if head_config.fusion == "linear":
        result = _fit_linear(
            head, source, y, tr_idx, va_idx, config, objective, device, progress, groups
        )
        result.seconds = time.perf_counter() - start
        return result
    target = torch.as_tensor(y, device=device)
    if isinstance(source, _Rows):
        stream = source
        val_x = [f.to(device) for f in stream.take(va_idx)]

        def batches() -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
            for xs, ids in stream.shuffled(tr_idx, config.batch_size, gen):
                yield [x.to(device) for x in xs], target[torch.as_tensor(ids, device=device)]

    else:
        train_x = [f[tr_idx].to(device) for f in source]
        train_y = target[torch.as_tensor(tr_idx, device=device)]
        val_x = [f[va_idx].to(device) for f in source]

        def batches() -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
            perm = torch.randperm(len(tr_idx), generator=gen)
            for s in range(0, len(perm), config.batch_size):
                b = perm[s : s + config.batch_size].to(device)
                yield [x[b] for x in train_x], train_y[b]

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
        total = 0.0
        for xs, yb in batches():
            loss = objective.loss(head(xs), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
        record = {"epoch": epoch + 1, "train_loss": total / max(len(tr_idx), 1)}
        if len(va_idx):
            scores = objective.score(predict_logits(head, val_x).cpu(), y[va_idx])
            score = scores.pop("score")
            record.update(scores)
            if score > best_score:
                best_score, since_best = score, 0
                best_state = copy.deepcopy(head.state_dict())
                result.best_epoch = epoch + 1
            else:
                since_best += 1
            bar.set_postfix(val=f"{score:.4f}", best=result.best_epoch)
        result.history.append(record)
        if config.patience is not None and len(va_idx) and since_best >= config.patience:
            break
    bar.close()
    if best_state is not None:
        head.load_state_dict(best_state)
    else:
        result.best_epoch = len(result.history)
    head.eval()
    val_logits = predict_logits(head, val_x).cpu()
    if best_state is not None:
        result.val_metrics = objective.metrics(val_logits, y[va_idx])
    objective.finish(result, val_logits, y[va_idx], config.calibrate)
    result.seconds = time.perf_counter() - start
    return result


GRAD_ROWS = 256  # rows per part of the linear head's gradient product (see _Affine)


class _Affine(torch.autograd.Function):
    """``x @ w.T + b`` for a fixed design matrix ``x`` (no gradient of its own).

    Why not autograd's own: on CPU its gradient ``g.T @ x`` ([k, n] @ [n, d], k classes, n rows)
    reaches MKL as one long reduction that runs on one thread, at a third of memory speed (SST-2,
    60,614 x 769, two classes: 26-30 ms on 1 or 2 threads, against 6 ms for the forward
    product). Cut into parts of :data:`GRAD_ROWS` rows, as one batched product summed over the
    parts, it takes 10 ms on 2 threads (17.5 ms on 1), and sums in a fixed order (same result
    every run).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.addmm(b, x, w.T)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[None, torch.Tensor, torch.Tensor]:
        (x,) = ctx.saved_tensors
        parts = len(x) // GRAD_ROWS
        if x.device.type != "cpu" or parts < 2:
            return None, g.T @ x, g.sum(0)
        split = parts * GRAD_ROWS
        head = torch.bmm(
            g[:split].view(parts, GRAD_ROWS, -1).transpose(1, 2),
            x[:split].view(parts, GRAD_ROWS, -1),
        ).sum(0)
        return None, head + g[split:].T @ x[split:], g.sum(0)


class _Fused:
    """The linear head's design matrix in memory: the fused features of every row."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def data_term(
        self, rows: np.ndarray | None, target: torch.Tensor, objective: _Objective
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """A function of (W, b) that back-propagates the mean loss over ``rows`` (None: all)
        and returns it."""
        x, y = (self.x, target) if rows is None else (self.x[rows], target[rows])

        def term(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            loss = objective.loss(_Affine.apply(x, w, b), y)
            loss.backward()
            return loss.detach()

        return term

    def scorer(
        self, rows: np.ndarray
    ) -> Callable[[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """A function of (W, b) that returns the logits of ``rows`` (gathered once: a fold's
        held-out rows are scored at every C)."""
        x = self.x[rows]
        return lambda params: (x @ params[0].T + params[1]).cpu()

    def second_moment(self) -> torch.Tensor:
        """X^T X / n over every row [d, d]."""
        return self.x.T @ self.x / len(self.x)


class _StreamedFused:
    """The linear head's design matrix streamed from disk: each block of rows is read, fused
    (standardized) and dropped; the loss of every block is back-propagated on its own, so
    memory holds one block."""

    def __init__(self, rows: _Rows, head: FusionHead, device: torch.device) -> None:
        self.rows, self.head, self.device = rows, head, device

    def _blocks(self, rows: np.ndarray) -> Iterator[tuple[slice, torch.Tensor]]:
        for sl, data in self.rows.blocks(rows):
            with torch.no_grad():  # not around the yield: the caller's autograd stays on
                x = self.head.fuse([f.to(self.device) for f in data])
            yield sl, x

    def data_term(
        self, rows: np.ndarray | None, target: torch.Tensor, objective: _Objective
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """As :meth:`_Fused.data_term`, one block at a time."""
        rows = np.arange(self.rows.n) if rows is None else rows
        y = target[torch.as_tensor(rows, device=target.device)]
        mass = objective.mass(y)

        def term(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            total = torch.zeros(())
            for sl, x in self._blocks(rows):
                part = objective.loss(_Affine.apply(x, w, b), y[sl])
                part = part * (objective.mass(y[sl]) / mass)
                part.backward()
                total += part.detach().cpu()
            return total

        return term

    def scorer(
        self, rows: np.ndarray
    ) -> Callable[[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """As :meth:`_Fused.scorer`, the rows read again at every call."""

        def logits(params: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            parts = [(x @ params[0].T + params[1]).cpu() for _, x in self._blocks(rows)]
            return torch.cat(parts) if parts else torch.zeros((0, self.head.n_classes))

        return logits

    def second_moment(self) -> torch.Tensor:
        """As :meth:`_Fused.second_moment`, summed one block at a time."""
        total = None
        for _, x in self._blocks(np.arange(self.rows.n)):
            total = x.T @ x if total is None else total + x.T @ x
        return total / self.rows.n


PRECONDITION_MAX_DIM = 2048  # wider designs: X^T X costs more than the evaluations it saves


def _eigenbasis(design: _Fused | _StreamedFused) -> tuple[torch.Tensor, torch.Tensor]:
    """The eigenvectors [d, d] and eigenvalues [d] of the design's second-moment matrix: the
    preconditioner of :func:`_lbfgs`."""
    values, vectors = torch.linalg.eigh(design.second_moment().double())
    return vectors.float(), values.clamp_min(0).float()


def _fit_linear(
    head: FusionHead,
    feats: list[torch.Tensor] | _Rows,
    y: np.ndarray,
    tr_idx: np.ndarray,
    va_idx: np.ndarray,
    config: TrainConfig,
    objective: _Objective,
    device: torch.device,
    progress: bool,
    groups: np.ndarray | None = None,
) -> TrainResult:
    """Logistic regression on the head's (fixed, standardized) features, full batch, L-BFGS
    (multinomial; one-vs-rest for multi-label targets: one sigmoid per label).

    Each C of the grid, from the strongest regularization to the weakest (warm-started from the
    previous solution), is fitted on the training part and scored on the held-out rows: the
    validation split, or with ``C_folds`` >= 2 every row once, out of fold (stratified k-fold
    on all rows, plain k-fold for multi-label targets: a steadier choice than one small split;
    with ``groups``, folds of whole groups). The best C is refitted on all rows.
    One C fits all rows directly, unless ``C_folds`` >= 2 asks for its out-of-fold logits.

    Raises:
        ConfigError: a grid of several C but neither a validation split nor C_folds.
    """
    grid = sorted(config.C_grid)
    if config.C_folds >= 2 and groups is not None:
        splits = group_kfold(y, config.C_folds, config.seed, groups)
    elif config.C_folds >= 2:
        from sklearn.model_selection import KFold, StratifiedKFold

        kind = KFold if objective.multi else StratifiedKFold
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            kfold = kind(config.C_folds, shuffle=True, random_state=config.seed)
            splits = list(kfold.split(y, None if objective.multi else y))
    elif len(grid) > 1 and len(va_idx):
        splits = [(tr_idx, va_idx)]
    elif len(grid) > 1:
        raise ConfigError(
            f"C is a grid {grid} but val_fraction is 0: give one C, a validation fraction "
            "or C_folds >= 2"
        )
    else:
        splits = []
    torch.manual_seed(config.seed)
    if isinstance(feats, _Rows):
        design: _Fused | _StreamedFused = _StreamedFused(feats, head, device)
    else:
        with torch.no_grad():
            step = 8192
            parts = [
                head.fuse([f[s : s + step].to(device) for f in feats])
                for s in range(0, len(y), step)
            ]
            design = _Fused(torch.cat(parts))
    target = torch.as_tensor(y, device=device)
    layer = head.mlp[-1]
    basis = _eigenbasis(design) if layer.in_features <= PRECONDITION_MAX_DIM else None
    zero = torch.zeros_like(layer.weight), torch.zeros_like(layer.bias)
    result = TrainResult(head=head)
    held = np.concatenate([va for _, va in splits]) if splits else np.zeros(0, dtype=np.int64)
    logits = {c: torch.zeros((len(y), head.n_classes)) for c in grid} if splits else {}
    starts: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}
    bar = tqdm(total=len(grid) * len(splits), desc="linear head: C", disable=not progress)
    for fit, val in splits:
        params = zero
        term = design.data_term(fit, target, objective)  # one copy of the rows for every C
        held_out = design.scorer(val)
        for c in grid:
            params = _lbfgs(term, len(fit), params, c, config, basis)
            logits[c][val] = held_out(params)
            starts.setdefault(c, params)
            bar.update()
    bar.close()
    best = (-np.inf, grid[0])
    for c in grid if splits else []:
        record = objective.score(logits[c][held], y[held])
        score = record.pop("score")
        result.history.append({"C": c, **record})
        if score > best[0]:
            best = (score, c)
    c = best[1]
    if splits:  # out-of-sample logits of the chosen C
        result.val_metrics = objective.metrics(logits[c][held], y[held])
        objective.finish(result, logits[c][held], y[held], config.calibrate)
        if config.C_folds >= 2:  # the folds cover every row
            result.oof_logits = logits[c].numpy()
    else:
        objective.finish(result, torch.zeros((0, head.n_classes)), y[:0], config.calibrate)
    term = design.data_term(None, target, objective)
    params = _lbfgs(term, len(y), starts.get(c, zero), c, config, basis)
    with torch.no_grad():
        layer.weight.copy_(params[0])
        layer.bias.copy_(params[1])
    result.history.append({"C": c, "refit_rows": len(y)})
    head.eval()
    return result


def _lbfgs(
    data_term: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    n_rows: int,
    start: tuple[torch.Tensor, torch.Tensor],
    c: float,
    config: TrainConfig,
    basis: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimize the mean loss over ``n_rows`` rows (cross-entropy, or binary cross-entropy per
    label; ``data_term(W, b)`` back-propagates it and returns it) + |W|^2 / (2 C n)
    (scikit-learn's objective divided by C n) from ``start``, within ``config``'s ``max_iter``
    and ``tol``; returns (W, b).

    ``basis``: (U, s), the eigenvectors and eigenvalues of the design's X^T X / n
    (:func:`_eigenbasis`). L-BFGS then runs on V with W = (V * q) U^T, q = (s + 1 / (C n))^-1/2:
    the same objective and minimum (U is orthogonal, so |W| = |V * q|), in coordinates where
    every direction's regularized curvature is about the same. Why: a standardized design's
    eigenvalues spread over 3-4 orders of magnitude (SST-2 with EmbeddingGemma: 0.012 to 53),
    which L-BFGS pays in evaluations (367 along the SST-2 head's C grid, 125 preconditioned).
    """
    l2 = 1.0 / (c * n_rows)
    u, q = (None, None) if basis is None else (basis[0], torch.rsqrt(basis[1] + l2))

    def weights(v: torch.Tensor) -> torch.Tensor:
        return v if u is None else (v * q) @ u.T

    v = (start[0].clone() if u is None else start[0] @ u / q).requires_grad_(True)
    b = start[1].clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [v, b],
        lr=1.0,
        max_iter=config.max_iter,
        history_size=10,
        tolerance_grad=config.tol,
        tolerance_change=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        w = weights(v)
        leaf = w.detach().requires_grad_(True)  # data_term may back-propagate block by block
        penalty = 0.5 * l2 * leaf.square().sum()
        penalty.backward()
        loss = data_term(leaf, b)
        w.backward(leaf.grad)
        return loss + penalty.detach()

    opt.step(closure)
    return weights(v).detach(), b.detach()
