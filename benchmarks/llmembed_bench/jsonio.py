"""JSON files of the harness (records, rates), written atomically with the product's helper."""

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
