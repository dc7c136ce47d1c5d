"""The user's own data: table readers (CSV, TSV, JSONL, JSON, Parquet) and input validation.

Every reader and validator raises :class:`~llmembed.errors.LLMEmbedError` with a message that
names the file, column or row at fault, so the CLI can print it as one line.
"""

from __future__ import annotations

import csv
import json
import numbers
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

__all__ = ["read_table", "validate_labels", "validate_texts"]


_TABLE_EXTS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def _is_missing(v: object) -> bool:
    """None, NaN of any float type, pandas NA / NaT, or numpy NaT."""
    if v is None:
        return True
    pd = sys.modules.get("pandas")  # pandas.NA / NaT without importing pandas here
    if pd is not None and (v is pd.NA or v is pd.NaT):
        return True
    try:
        return bool(v != v)  # NaN, NaT
    except (TypeError, ValueError):  # arrays, or objects whose != is not a bool
        return False


def _label_str(v: object) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if hasattr(v, "item") and not isinstance(v, str):  # numpy scalars
        return _label_str(v.item())
    return str(v)


def _records_csv(path: Path, delimiter: str) -> tuple[list[str], list[dict[str, object]]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return [], []
            rows: list[dict[str, object]] = []
            for n, row in enumerate(reader, start=1):
                if not row:
                    continue
                if len(row) > len(header):
                    raise DataError(
                        f"{path}: data row {n} has {len(row)} fields but the header has "
                        f"{len(header)}; quote fields that contain {delimiter!r}"
                    )
                # a short row leaves its last columns missing
                rows.append(dict(zip(header, row[: len(header)], strict=False)))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e}); save it as UTF-8") from e
    return header, rows


def _records_json(path: Path, lines: bool) -> tuple[list[str], list[dict[str, object]]]:
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e})") from e
    records: list[object] = []
    try:
        if lines:
            for ln, line in enumerate(raw.splitlines(), start=1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}: line {ln} is not valid JSON ({e})") from e
        else:
            obj = json.loads(raw)
            if not isinstance(obj, list):
                raise DataError(
                    f"{path}: expected a JSON list of records ([{{...}}, ...]), got "
                    f"{type(obj).__name__}; use .jsonl for one record per line"
                )
            records = obj
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    columns: dict[str, None] = {}
    for n, rec in enumerate(records, start=1):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: record {n} is a {type(rec).__name__}, not an object")
        for k in rec:
            columns.setdefault(str(k), None)
    return list(columns), records  # type: ignore[return-value]


def _records_parquet(path: Path) -> tuple[list[str], list[dict[str, object]]]:
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise DataError(
            "reading .parquet needs pandas and pyarrow: pip install 'llmembed[parquet]' pandas"
        ) from e
    try:
        df = pd.read_parquet(path)
    except ImportError as e:  # pragma: no cover
        raise DataError(f"reading {path} needs pyarrow: pip install pyarrow") from e
    except Exception as e:
        raise DataError(f"{path}: could not read Parquet ({e})") from e
    cols = [str(c) for c in df.columns]
    df.columns = cols
    return cols, df.to_dict(orient="records")


def read_table(
    path: str | os.PathLike,
    text_col: str = "text",
    label_col: str | None = None,
    label_sep: str | None = None,
) -> tuple[list[str], list[Any] | None]:
    """Read texts (and labels, if ``label_col``) from the user's own CSV, TSV, JSONL/NDJSON,
    JSON (a list of records) or Parquet file, chosen by extension.

    CSV/TSV are read with Python's csv module (header row, standard ``"`` quoting, UTF-8); all
    cells stay strings. Texts are returned as given; labels as strings (``1`` -> ``"1"``).
    With ``label_sep`` (multi-label), each label cell is a set of labels: a string split at
    ``label_sep`` (parts stripped, empty parts dropped; an empty cell is a text without labels)
    or, in JSON / Parquet, a list; labels come back as lists of strings.
    Raises :class:`LLMEmbedError` naming the file, the column or the 1-based data row on problems.
    """
    p = Path(path).expanduser()
    kind = _TABLE_EXTS.get(p.suffix.lower())
    if kind is None:
        raise DataError(
            f"{p}: unsupported file type {p.suffix or '(no extension)'!r}; use one of "
            f"{', '.join(sorted(_TABLE_EXTS))}"
        )
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    if kind in ("csv", "tsv"):
        columns, records = _records_csv(p, "," if kind == "csv" else "\t")
    elif kind in ("json", "jsonl"):
        columns, records = _records_json(p, lines=kind == "jsonl")
    else:
        columns, records = _records_parquet(p)
    if not records:
        raise DataError(f"{p}: no data rows")
    for col, what in ((text_col, "text"), (label_col, "label")):
        if col is not None and col not in columns:
            raise DataError(
                f"{p}: no {what} column {col!r}; available columns: "
                f"{', '.join(repr(c) for c in columns)}"
            )
    texts: list[str] = []
    labels: list[str] | None = [] if label_col is not None else None
    for n, rec in enumerate(records, start=1):
        t = rec.get(text_col)
        if _is_missing(t):
            raise DataError(f"{p}: data row {n} has no value in text column {text_col!r}")
        if not isinstance(t, str):
            raise DataError(
                f"{p}: data row {n}, column {text_col!r}: text must be a string, got "
                f"{type(t).__name__} {t!r}"
            )
        if not t.strip():
            raise DataError(f"{p}: data row {n}, column {text_col!r}: empty text")
        texts.append(t)
        if labels is not None and label_sep is not None:
            labels.append(_label_set(rec.get(label_col), label_sep, p, n, label_col))  # type: ignore[arg-type]
        elif labels is not None:
            lab = rec.get(label_col)  # type: ignore[arg-type]
            if _is_missing(lab) or (isinstance(lab, str) and not lab.strip()):
                raise DataError(f"{p}: data row {n} has no label in column {label_col!r}")
            labels.append(_label_str(lab))
    return texts, labels


def _label_set(cell: object, sep: str, path: Path, row: int, col: str) -> list[str]:
    """One multi-label cell as a list of label strings (see :func:`read_table`)."""
    if isinstance(cell, (list, tuple, np.ndarray)):
        parts = [_label_str(v) for v in cell if not _is_missing(v)]
    elif isinstance(cell, str):
        parts = cell.split(sep)
    elif _is_missing(cell):
        parts = []
    else:
        raise DataError(
            f"{path}: data row {row}, column {col!r}: expected labels joined by {sep!r} or a "
            f"list, got {type(cell).__name__} {cell!r:.60}"
        )
    return [p.strip() for p in parts if p.strip()]


def validate_texts(texts: Sequence[object], where: str = "input") -> list[str]:
    """Check that ``texts`` is a non-empty sequence of non-blank strings; return it as a list.

    Raises :class:`LLMEmbedError` naming ``where`` and the first offending index.
    """
    if isinstance(texts, (str, bytes)):
        raise DataError(f"{where}: expected a list of strings, got a single {type(texts).__name__}")
    try:
        items = list(texts)
    except TypeError as e:
        raise DataError(f"{where}: expected a list of strings, got {type(texts).__name__}") from e
    if not items:
        raise DataError(f"{where}: no texts (empty list)")
    out: list[str] = []
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise DataError(f"{where}: item {i} is a {type(t).__name__} ({t!r:.60}), not a string")
        if not t.strip():
            raise DataError(f"{where}: item {i} is empty or whitespace-only")
        out.append(str(t))
    return out


def _label_missing(v: object) -> bool:
    """A missing value (see _is_missing) or a blank string."""
    return (not v.strip()) if isinstance(v, str) else _is_missing(v)


def _label_kind(v: object) -> str | None:
    if isinstance(v, str):
        return "string"
    if isinstance(v, (bool, np.bool_)):
        return "boolean"
    if isinstance(v, numbers.Real):  # Python and numpy ints and floats
        return "number"
    return None


def validate_labels(labels: object, n_texts: int, where: str = "labels") -> np.ndarray:
    """Check training labels and return them as a 1-D numpy array, values as given.

    ``labels`` is any 1-D sequence (list, tuple, numpy array, pandas Series), one label per
    text: all strings, all numbers (ints and floats) or all booleans. Strings come back as a
    ``str`` array, ints as an int array, and so on.

    Raises :class:`LLMEmbedError` naming ``where`` and the first offending row (0-based) for a
    missing label (None, NaN, ``pd.NA``, ``pd.NaT``, an empty or whitespace-only string), for
    labels of mixed kinds (``[1, "1"]``) or of another type, for a length that differs from
    ``n_texts``, and for None or input that is not a 1-D sequence.
    """
    if labels is None:
        raise DataError(
            f"{where}: this requires y to be passed, but the target y is None; give one label "
            "per text"
        )
    if isinstance(labels, (str, bytes)):
        raise DataError(
            f"{where}: expected one label per text, got a single {type(labels).__name__}"
        )
    ndim = getattr(labels, "ndim", 1)
    if ndim != 1:
        raise DataError(
            f"{where}: expected a 1-D sequence of labels, got an array of shape "
            f"{getattr(labels, 'shape', '?')}"
        )
    try:
        items = list(labels)  # type: ignore[call-overload]
    except TypeError as e:
        raise DataError(
            f"{where}: expected a sequence of labels, got {type(labels).__name__}"
        ) from e
    if len(items) != n_texts:
        raise DataError(f"{where}: {n_texts} texts but {len(items)} labels")
    if not items:
        raise DataError(f"{where}: no labels (empty list)")
    _check_labels(items, [f"row {i}" for i in range(len(items))], where)
    return np.asarray(items)


LABEL_SET_TYPES = (list, tuple, set, frozenset, np.ndarray)
"""What one text's labels may be held in, for multi-label targets."""


def validate_label_sets(labels: object, n_texts: int, where: str = "labels") -> list[list[Any]]:
    """Check multi-label training labels: one collection of labels per text (list, tuple, set,
    frozenset or 1-D array; empty for a text without labels), the labels all strings, all
    numbers or all booleans. Returns them as lists, values as given.

    Raises :class:`LLMEmbedError` naming ``where`` and the text (0-based) for an item that is
    not a collection, a missing label, labels of mixed kinds, or a length that differs from
    ``n_texts``.
    """
    if labels is None or isinstance(labels, (str, bytes)) or not hasattr(labels, "__iter__"):
        raise DataError(f"{where}: expected one label set per text, got {type(labels).__name__}")
    rows = list(labels)  # type: ignore[call-overload]
    if len(rows) != n_texts:
        raise DataError(f"{where}: {n_texts} texts but {len(rows)} label sets")
    out: list[list[Any]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, LABEL_SET_TYPES):
            raise DataError(
                f"{where}: item {i} is a {type(row).__name__} ({row!r:.60}), not a label set; "
                "give every text a list / tuple / set of labels (empty for none)"
            )
        out.append(list(row))
    flat = [label for row in out for label in row]
    _check_labels(flat, [f"text {i}" for i, row in enumerate(out) for _ in row], where)
    return out


def _check_labels(items: list[object], positions: list[str], where: str) -> None:
    """Refuse a missing label, one of another type, or labels of mixed kinds; ``positions``
    names each item in the messages ("row 3", "text 3")."""
    first: tuple[str, str, object] | None = None
    for at, v in zip(positions, items):
        if _label_missing(v):
            raise DataError(f"{where}: label at {at} is missing ({v!r}); every text needs a label")
        kind = _label_kind(v)
        if kind is None:
            raise DataError(
                f"{where}: label at {at} is a {type(v).__name__} ({v!r:.60}); labels must "
                "be strings, numbers or booleans"
            )
        if first is None:
            first = (kind, at, v)
        elif kind != first[0]:
            raise DataError(
                f"{where}: labels must all be strings or all numbers (or all booleans), but "
                f"{first[1]} is {type(first[2]).__name__} {first[2]!r} and {at} is "
                f"{type(v).__name__} {v!r}"
            )
