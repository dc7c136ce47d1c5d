"""Classification metrics as the paper reports them (accuracy, F1) plus a per-class report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score


def classification_metrics(
    y_true: Sequence[Any], y_pred: Sequence[Any], labels: Sequence[Any] | None = None
) -> dict[str, Any]:
    """accuracy, macro-F1, micro-F1, positive-class F1 (binary tasks: the second of `labels`),
    a per-class report and the confusion matrix (rows = true, columns = predicted, in `labels`
    order).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(labels) if labels is not None else sorted(set(y_true) | set(y_pred))
    out: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "micro_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="micro", zero_division=0)
        ),
    }
    if len(labels) == 2:
        out["positive_label"] = _plain(labels[1])
        out["positive_f1"] = float(
            f1_score(y_true, y_pred, pos_label=labels[1], average="binary", zero_division=0)
        )
    report = classification_report(y_true, y_pred, labels=labels, output_dict=True, zero_division=0)
    out["per_class"] = {
        str(lab): {k: float(v) for k, v in report[str(lab)].items()} for lab in labels
    }
    out["labels"] = [_plain(lab) for lab in labels]
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out


def accuracy_macro_f1(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int
) -> tuple[float, float]:
    """Accuracy and macro-F1 over classes 0..n_classes-1 (a class never seen nor predicted
    scores 0), the values :func:`classification_metrics` gives for integer labels.

    Why: training scores every epoch or C of a head on held-out rows and needs only these two;
    scikit-learn's full report took 0.12 s on SST-2's 67,349 rows, 0.4 ms here.
    Takes: class indices [n] for both (ints in 0..n_classes-1). Returns: (accuracy, macro-F1);
    (0.0, 0.0) for no rows.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if not len(y_true):
        return 0.0, 0.0
    confusion = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    confusion = confusion.reshape(n_classes, n_classes)
    tp = np.diag(confusion).astype(np.float64)
    denominator = confusion.sum(0) + confusion.sum(1)  # 2 tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros(n_classes), where=denominator > 0)
    return float(tp.sum() / len(y_true)), float(f1.mean())


def expected_calibration_error(y_true: Sequence[int], proba: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of the top-class confidence: the texts are binned by
    ``max(proba)`` into ``n_bins`` equal-width bins, and the gaps between each bin's mean
    confidence and its accuracy are averaged, weighted by the bin's share of texts.

    Takes: integer labels (column indices of ``proba``), probabilities [n, n_classes].
    Returns: the ECE in [0, 1] (0.0 for no texts).
    """
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y_true)
    if not len(y):
        return 0.0
    confidence = proba.max(1)
    correct = proba.argmax(1) == y
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(confidence[in_bin].mean() - correct[in_bin].mean())
    return float(ece)


def calibration_metrics(
    y_true: Sequence[Any],
    proba: np.ndarray,
    temperature: float,
    classes: Sequence[Any] | None = None,
) -> dict[str, float]:
    """``ece`` of probabilities computed at softmax ``temperature``, ``ece_uncalibrated`` of the
    same model at temperature 1 (recovered from ``proba``: softmax(T log p) = softmax(z)), and
    the ``temperature``.

    Takes: the true labels, as column indices of ``proba`` or, with ``classes`` (the label of
    each column), as labels; rows whose label is not among ``classes`` (never seen in
    training: no column) are left out.
    """
    from scipy.special import softmax

    proba = np.asarray(proba, dtype=np.float64)
    if classes is not None:
        column = {c: i for i, c in enumerate(classes)}
        known = [i for i, label in enumerate(y_true) if label in column]
        y_true, proba = [column[y_true[i]] for i in known], proba[known]
    with np.errstate(divide="ignore"):  # p = 0: log 0 = -inf, still 0 after the softmax
        raw = softmax(temperature * np.log(proba), axis=1)
    return {
        "ece": expected_calibration_error(y_true, proba),
        "ece_uncalibrated": expected_calibration_error(y_true, raw),
        "temperature": float(temperature),
    }


def _plain(value: Any) -> Any:
    """numpy scalar -> Python scalar, for JSON."""
    return value.item() if hasattr(value, "item") else value


def multilabel_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[Any]
) -> dict[str, Any]:
    """Multi-label metrics of 0/1 matrices [n, n_labels] (columns in ``labels`` order):
    micro-, macro- and samples-averaged F1, subset accuracy (the share of texts whose whole
    label set is right), Hamming loss (the share of wrong text x label decisions), label
    cardinality of truth and prediction, and a per-label report (precision, recall, F1,
    support).
    """
    from sklearn.metrics import hamming_loss, precision_recall_fscore_support

    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    out: dict[str, Any] = {"n": int(len(y_true))}
    for average in ("micro", "macro", "samples"):
        out[f"{average}_f1"] = float(
            f1_score(y_true, y_pred, average=average, zero_division=0) if len(y_true) else 0.0
        )
    out["subset_accuracy"] = float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0
    out["hamming_loss"] = float(hamming_loss(y_true, y_pred)) if len(y_true) else 0.0
    out["label_cardinality"] = float(y_true.sum(1).mean()) if len(y_true) else 0.0
    out["predicted_cardinality"] = float(y_pred.sum(1).mean()) if len(y_true) else 0.0
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    out["per_class"] = {
        str(lab): {
            "precision": float(pi),
            "recall": float(ri),
            "f1-score": float(fi),
            "support": float(si),
        }
        for lab, pi, ri, fi, si in zip(labels, p, r, f, s)
    }
    out["labels"] = [_plain(lab) for lab in labels]
    return out
