"""JSON files of the harness (records, rates, seed summaries), written atomically with the
product's helper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmembed.files import atomic_write_json


def json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def write_json(path: Path, data: Any) -> None:
    """Write `data` (numpy values allowed) to `path` atomically, creating its folder."""
    atomic_write_json(path, data, indent=2, default=json_default)


def seed_summary(
    rows: list[dict[str, Any]], keys: Any, digits: int | None = 4
) -> dict[str, dict[str, float]]:
    """``{key: {"mean", "std"}}`` over the rows (one per seed; population std), rounded to
    ``digits`` (None: not rounded): the summary every side study writes."""

    def fix(x: Any) -> float:
        return float(x) if digits is None else round(float(x), digits)

    return {
        k: {"mean": fix(np.mean([r[k] for r in rows])), "std": fix(np.std([r[k] for r in rows]))}
        for k in keys
    }
