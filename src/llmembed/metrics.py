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


def _plain(value: Any) -> Any:
    """numpy scalar -> Python scalar, for JSON."""
    return value.item() if hasattr(value, "item") else value
