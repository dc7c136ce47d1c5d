"""Multi-label targets: label sets or indicator matrices in, per-label decision thresholds out.

A multi-label classifier gives every text a *set* of labels (none, one or several). Its head has
one sigmoid output per label, trained with binary cross-entropy; a label is predicted when its
probability reaches the label's threshold, tuned on held-out rows (:func:`tune_thresholds`).
This module reads the two forms users give (:func:`read_target`), tunes the thresholds and turns
probabilities into label sets again (:func:`decide`); the classifier, the CLI, the server and
the distributed predictor share it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DataError
from .io import LABEL_SET_TYPES, validate_label_sets, validate_labels

__all__ = [
    "FORMS",
    "MultiLabel",
    "binarize",
    "decide",
    "is_label_sets",
    "label_sets",
    "read_target",
    "tune_thresholds",
]

FORMS = ("sets", "indicator")
"""How the training labels were given, and so how ``predict`` answers: a list of label sets
(tuples, in ``classes_`` order) or a binary indicator matrix [n_texts, n_labels]."""

GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)
"""Candidate thresholds."""

MIN_POSITIVES = 5
"""Held-out positives a label needs for a threshold of its own (else the global one)."""


@dataclass
class MultiLabel:
    """What a fitted multi-label model adds to a single-label one.

    thresholds: one decision threshold per label (``classes_`` order), in (0, 1).
    at_least_one: every training text had a label, so a text whose probabilities all stay
        below their thresholds still gets its most probable label.
    form: "sets" or "indicator" (:data:`FORMS`).
    """

    thresholds: list[float]
    at_least_one: bool
    form: str = "sets"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored in a saved model's ``llmembed.json`` (``multi_label``)."""
        return {
            "thresholds": [float(t) for t in self.thresholds],
            "at_least_one": bool(self.at_least_one),
            "form": self.form,
        }


def is_label_sets(y: object) -> bool:
    """True when ``y`` is multi-label: a 2-D array (an indicator matrix) or a sequence whose
    items are label collections (list, tuple, set, frozenset, 1-D array); False for one label
    per text (strings, numbers, booleans)."""
    if getattr(y, "ndim", 1) == 2:
        return True
    if isinstance(y, (str, bytes)) or not hasattr(y, "__iter__"):
        return False
    try:
        first = next(iter(y))  # type: ignore[call-overload]
    except (StopIteration, TypeError):
        return False
    return isinstance(first, LABEL_SET_TYPES)


def read_target(
    y: object,
    n_texts: int,
    classes: Sequence[Any] | None = None,
    where: str = "labels",
    stacklevel: int = 2,
) -> tuple[np.ndarray, np.ndarray, str, bool]:
    """Check multi-label training labels; return them as a binary indicator matrix.

    Takes: ``y``, one label collection per text (labels all strings, all numbers or all
    booleans; an empty collection is a text with no label) or a 0/1 indicator matrix
    [n_texts, n_labels] (array, pandas DataFrame or scipy sparse); ``classes``: the labels of the
    matrix's columns (default: 0 .. n_labels-1; the columns of a DataFrame), or for label sets an
    explicit, complete label list.
    Returns: (classes, Y float32 [n_texts, n_classes], form, at_least_one): the sorted labels
    (label sets) or the column labels (indicator), the matrix, "sets" or "indicator", and whether
    every text has a label.
    Raises: DataError for a missing label, labels of mixed kinds, a length that differs from
    the texts, a matrix that is not 0/1, a label no text has (nothing to learn), or no label at
    all. Warns for a label that only one text has (its threshold falls back to the global one),
    at ``stacklevel`` (2: the caller's line).
    """
    if getattr(y, "ndim", 1) == 2:
        classes_arr, matrix, form = _indicator(y, n_texts, classes, where)
    else:
        classes_arr, matrix, form = _label_sets(y, n_texts, classes, where)
    counts = matrix.sum(0)
    if not counts.any():
        raise DataError(f"{where}: no text has a label; a multi-label classifier needs some")
    if (counts == 0).any():
        never = [_plain(c) for c in classes_arr[counts == 0]][:5]
        raise DataError(
            f"{where}: no training text has the label(s) {never}: nothing to learn for them; "
            "drop them (or their indicator columns)"
        )
    once = [_plain(c) for c in classes_arr[counts == 1]]
    if once:
        warnings.warn(
            f"{where}: {len(once)} label(s) appear in only one training text ({once[:5]}): "
            "they are learned, but their decision threshold is the global one",
            stacklevel=stacklevel,
        )
    at_least_one = bool((matrix.sum(1) > 0).all())
    return classes_arr, matrix, form, at_least_one


def _indicator(
    y: Any, n_texts: int, classes: Sequence[Any] | None, where: str
) -> tuple[np.ndarray, np.ndarray, str]:
    if classes is None and hasattr(y, "columns"):  # pandas DataFrame
        classes = list(y.columns)
    matrix = _dense(y)
    if matrix.shape[0] != n_texts:
        raise DataError(
            f"{where}: {n_texts} texts but an indicator matrix of {matrix.shape[0]} rows"
        )
    try:
        values = matrix.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: an indicator matrix must hold 0 and 1 only") from None
    if not np.isin(values, (0.0, 1.0)).all():
        raise DataError(f"{where}: an indicator matrix must hold 0 and 1 only")
    k = values.shape[1]
    if classes is None:
        classes = list(range(k))
    labels = validate_labels(list(classes), k, where="classes")
    if len(set(labels.tolist())) != k:
        raise DataError("classes: the same label twice; give one label per indicator column")
    return labels, values.astype(np.float32), "indicator"


def _label_sets(
    y: Any, n_texts: int, classes: Sequence[Any] | None, where: str
) -> tuple[np.ndarray, np.ndarray, str]:
    rows = validate_label_sets(y, n_texts, where=where)
    flat = [label for row in rows for label in row]
    if not flat:
        raise DataError(f"{where}: no text has a label; a multi-label classifier needs some")
    if classes is not None:
        labels = validate_labels(list(classes), len(list(classes)), where="classes")
    else:
        labels = np.unique(np.asarray(flat))
    matrix, unknown = _fill(rows, labels)
    if unknown:
        raise DataError(f"{where}: label(s) {unknown[:5]} are not in classes")
    return labels, matrix, "sets"


def _dense(y: Any) -> np.ndarray:
    """An indicator matrix (array, DataFrame or scipy sparse) as a numpy array."""
    return y.toarray() if hasattr(y, "toarray") else np.asarray(y)


def _fill(rows: list[Any], labels: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """Label sets as a float32 0/1 matrix over ``labels``, and the labels not among them
    (sorted, left out of the matrix)."""
    column = {c: j for j, c in enumerate(labels.tolist())}
    matrix = np.zeros((len(rows), len(labels)), dtype=np.float32)
    unknown: set[Any] = set()
    for i, row in enumerate(rows):
        for label in row:
            label = _plain(label)
            if label in column:
                matrix[i, column[label]] = 1.0
            else:
                unknown.add(label)
    return matrix, sorted(unknown, key=str)


def binarize(y: object, classes: np.ndarray, n_texts: int, where: str = "labels") -> np.ndarray:
    """Label sets or an indicator matrix of labels to evaluate, as a 0/1 matrix over ``classes``.

    Labels not among ``classes`` (never seen in training) are dropped with a warning.
    Raises: DataError for input that is neither form, a matrix of the wrong width, or a length
    that differs from ``n_texts``.
    """
    if getattr(y, "ndim", 1) == 2:
        matrix = _dense(y)
        if matrix.shape != (n_texts, len(classes)):
            raise DataError(
                f"{where}: an indicator matrix of shape {list(matrix.shape)}, but {n_texts} "
                f"texts and a model of {len(classes)} labels"
            )
        return matrix.astype(np.float32)
    if not is_label_sets(y):
        raise DataError(f"{where}: this model is multi-label; give one label set per text")
    rows = list(y)  # type: ignore[call-overload]
    if len(rows) != n_texts:
        raise DataError(f"{where}: {n_texts} texts but {len(rows)} label sets")
    matrix, unknown = _fill(rows, classes)
    if unknown:
        warnings.warn(
            f"{where}: label(s) never seen in training are ignored: {unknown[:5]}", stacklevel=3
        )
    return matrix


def _f1(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-label F1 [k] and micro-F1 of 0/1 matrices (0 where a label has no support)."""
    tp = (pred * truth).sum(0)
    fp = (pred * (1 - truth)).sum(0)
    fn = ((1 - pred) * truth).sum(0)
    denom = 2 * tp + fp + fn
    per_label = np.divide(2 * tp, denom, out=np.zeros_like(denom), where=denom > 0)
    total = denom.sum()
    return per_label, float(2 * tp.sum() / total) if total else 0.0


def tune_thresholds(proba: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-label decision thresholds from held-out probabilities.

    First the one threshold of :data:`GRID` with the best micro-F1 over all labels; then, for
    every label with at least :data:`MIN_POSITIVES` held-out positives, the threshold with the
    best F1 of that label (ties: the one nearest the global threshold). Rarer labels keep the
    global one: a threshold tuned on two positives is noise.

    Takes: probabilities and the 0/1 truth, both [n_rows, n_labels]. Returns: float64 [n_labels]
    (all 0.5 for no rows).
    """
    k = truth.shape[1]
    if not len(truth):
        return np.full(k, 0.5)
    proba = np.asarray(proba, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    per_label = np.zeros((len(GRID), k))
    micro = np.zeros(len(GRID))
    for g, t in enumerate(GRID):
        per_label[g], micro[g] = _f1((proba >= t).astype(np.float64), truth)
    best = int(micro.argmax())  # argmax: the first (lowest) of equal scores
    thresholds = np.full(k, GRID[best])
    distance = np.abs(np.arange(len(GRID)) - best)
    for j in np.flatnonzero(truth.sum(0) >= MIN_POSITIVES):
        scores = per_label[:, j]
        candidates = np.flatnonzero(scores == scores.max())
        thresholds[j] = GRID[candidates[distance[candidates].argmin()]]
    return thresholds


def decide(proba: np.ndarray, multi_label: MultiLabel) -> np.ndarray:
    """The 0/1 decisions [n, n_labels] of probabilities under a model's thresholds.

    With ``at_least_one``, a row with no label above its threshold gets its most probable one.
    """
    pred = np.asarray(proba) >= np.asarray(multi_label.thresholds)
    if multi_label.at_least_one and len(pred):
        empty = ~pred.any(1)
        pred[empty, np.asarray(proba)[empty].argmax(1)] = True
    return pred


def label_sets(decisions: np.ndarray, classes: Sequence[Any]) -> list[tuple[Any, ...]]:
    """0/1 decisions [n, n_labels] as one tuple of labels per row, in ``classes`` order."""
    plain = [_plain(c) for c in classes]
    return [tuple(plain[j] for j in np.flatnonzero(row)) for row in decisions]


def _plain(value: Any) -> Any:
    """numpy scalar -> Python scalar."""
    return value.item() if hasattr(value, "item") else value
