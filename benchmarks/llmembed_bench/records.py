"""Records: one JSON file per (dataset, method, seed), written atomically."""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from llmembed.metrics import classification_metrics

from .base import Method, config_hash
from .environment import machine_info
from .settings import SCHEMA, log
from .tasks import Task


def stale(path: Path, want_hash: str) -> bool:
    """True when the record is missing, unreadable, or made with other settings (its config
    hash differs: e.g. the CPU recipe changed since)."""
    if not path.is_file():
        return True
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return True
    if rec.get("config_hash") != want_hash:
        log(f"stale record (settings changed since): {path}")
        return True
    return False


def record_path(results_dir: str | os.PathLike, dataset: str, method: str, seed: int) -> Path:
    return Path(results_dir) / "runs" / dataset / method / f"seed{seed}.json"


def load_records(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    out = []
    for p in sorted((Path(results_dir) / "runs").glob("*/*/seed*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            log(f"skipping unreadable record {p}")
            continue
        if rec.get("schema") == SCHEMA:
            out.append(rec)
    return out


def make_record(
    task: Task,
    method: Method,
    seed: int,
    split_desc: str,
    result: dict[str, Any],
    y_true: np.ndarray,
    env: dict[str, Any],
    wall: float,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    pred = np.asarray(result.pop("pred"))
    m = classification_metrics(y_true, pred, labels=range(len(task.classes)))
    metrics = {k: m[k] for k in ("n", "accuracy", "macro_f1", "micro_f1") if k in m}
    if "positive_f1" in m:
        metrics["positive_f1"] = m["positive_f1"]
        metrics["positive_label"] = task.classes[1]
    n_test = int(m["n"])
    head_test = result.get("head_infer_seconds_per_1000", 0.0) * n_test / 1000
    total = (
        result.get("extract_seconds", 0.0)
        + result.get("selection_seconds", 0.0)
        + result.get("train_seconds", 0.0)
        + head_test
    )
    return {
        "schema": SCHEMA,
        "dataset": task.name,
        "protocol": task.protocol,
        "split": split_desc,
        "quick": task.quick,
        "note": task.note,
        "method": method.name,
        "group": method.group,
        "label": method.label,
        "seed": seed,
        "metrics": metrics,
        **result,
        "total_seconds": total,
        "wall_seconds": wall,
        "config_hash": config_hash(config or {}),
        "config": config or {},
        "machine": env["machine"] | {"load_avg_1m": machine_info().get("load_avg_1m")},
        "packages": env["packages"],
        "git": env["git"],
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
    }
