"""Reuters-21578, ModApte split, 90 categories: the standard multi-label text benchmark.

No package registry carries Reuters-21578, so nothing is downloaded: the loader reads the
original distribution's 22 SGML files (``reut2-000.sgm`` .. ``reut2-021.sgm``, 21,578
documents) from a folder the user gives (argument, or ``LLMEMBED_REUTERS21578``).

The split is the usual one (Lewis's ModApte as used by e.g. Yang & Liu 1999 and NLTK's
``reuters`` corpus): training documents have ``LEWISSPLIT="TRAIN"``, test documents
``LEWISSPLIT="TEST"``, both with ``TOPICS="YES"`` (9,603 / 3,299); the categories kept are the
90 with at least one training and one test document, and documents with none of them (or with
no text) are dropped: 7,769 training and 3,019 test documents. A document's text is its title
and body, or for the few unprocessed ones (``TYPE="UNPROC"``) their whole text (``&lt;`` etc.
unescaped, whitespace as in the file).
"""

from __future__ import annotations

import html
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ENV_VAR", "MultiLabelData", "load_reuters_modapte"]

ENV_VAR = "LLMEMBED_REUTERS21578"
N_FILES = 22

_DOC = re.compile(r"<REUTERS([^>]*)>(.*?)</REUTERS>", re.S)
_ATTR = re.compile(r'(\w+)="([^"]*)"')
_TOPICS = re.compile(r"<TOPICS>(.*?)</TOPICS>", re.S)
_D = re.compile(r"<D>(.*?)</D>", re.S)
_TITLE = re.compile(r"<TITLE>(.*?)</TITLE>", re.S)
_BODY = re.compile(r"<BODY>(.*?)</BODY>", re.S)
_TEXT = re.compile(r"<TEXT[^>]*>(.*?)</TEXT>", re.S)
_TAG = re.compile(r"<[^>]+>")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f]")  # the files' &#2; / &#3; start / end marks


@dataclass
class MultiLabelData:
    """A multi-label benchmark: texts and label sets of both splits, and how it was built."""

    name: str
    train_texts: list[str]
    train_labels: list[list[str]]
    test_texts: list[str]
    test_labels: list[list[str]]
    categories: list[str]
    info: dict[str, object] = field(default_factory=dict)


def _folder(folder: str | os.PathLike | None) -> Path:
    value = folder or os.environ.get(ENV_VAR)
    if not value:
        raise FileNotFoundError(
            f"Reuters-21578 is in no package registry: give the folder holding its reut2-*.sgm "
            f"files (--reuters-dir or {ENV_VAR})"
        )
    path = Path(value).expanduser()
    files = sorted(path.glob("reut2-*.sgm"))
    if len(files) != N_FILES:
        raise FileNotFoundError(
            f"{path}: expected the {N_FILES} files reut2-000.sgm .. reut2-021.sgm of "
            f"Reuters-21578, found {len(files)}"
        )
    return path


def parse_sgml(raw: str) -> list[tuple[str, str, list[str], str]]:
    """(LEWISSPLIT, TOPICS attribute, topic list, text) of every document in one SGML file."""
    out = []
    for m in _DOC.finditer(raw):
        attrs = dict(_ATTR.findall(m.group(1)))
        body = m.group(2)
        topics = _TOPICS.search(body)
        labels = _D.findall(topics.group(1)) if topics else []
        parts = [p.group(1).strip() for p in (_TITLE.search(body), _BODY.search(body)) if p]
        if not _BODY.search(body) and (whole := _TEXT.search(body)):  # TYPE="UNPROC": no tags
            parts = [_TAG.sub(" ", whole.group(1)).strip()]
        text = _CONTROL.sub("", html.unescape("\n".join(p for p in parts if p))).strip()
        out.append((attrs.get("LEWISSPLIT", ""), attrs.get("TOPICS", ""), labels, text))
    return out


def load_reuters_modapte(folder: str | os.PathLike | None = None) -> MultiLabelData:
    """The ModApte split of Reuters-21578 with its 90 categories (see the module docstring).

    Takes: the folder of the 22 SGML files (default: ``LLMEMBED_REUTERS21578``).
    Returns: a :class:`MultiLabelData` whose ``info`` has the counts at each step.
    Raises: FileNotFoundError, one line, when the folder or its files are missing.
    """
    path = _folder(folder)
    docs = []
    for file in sorted(path.glob("reut2-*.sgm")):
        docs.extend(parse_sgml(file.read_bytes().decode("latin-1")))
    train = [d for d in docs if d[0] == "TRAIN" and d[1] == "YES"]
    test = [d for d in docs if d[0] == "TEST" and d[1] == "YES"]
    in_train = Counter(c for d in train for c in set(d[2]))
    in_test = Counter(c for d in test for c in set(d[2]))
    categories = sorted(c for c in in_train if in_test[c])
    keep = set(categories)

    def kept(split: list) -> tuple[list[str], list[list[str]]]:
        rows = [(d[3], sorted(set(d[2]) & keep)) for d in split]
        rows = [(t, labels) for t, labels in rows if labels and t.strip()]
        return [t for t, _ in rows], [labels for _, labels in rows]

    tr_x, tr_y = kept(train)
    te_x, te_y = kept(test)
    info = {
        "source": str(path),
        "documents": len(docs),
        "modapte_train": len(train),
        "modapte_test": len(test),
        "categories": len(categories),
        "train": len(tr_x),
        "test": len(te_x),
        "label_cardinality_train": round(sum(map(len, tr_y)) / max(len(tr_y), 1), 4),
        "multi_label_share_train": round(sum(len(y) > 1 for y in tr_y) / max(len(tr_y), 1), 4),
        "rule": "LEWISSPLIT TRAIN/TEST with TOPICS=YES; categories with >= 1 train and >= 1 test "
        "document; documents with none of them or without text dropped",
    }
    return MultiLabelData("reuters-modapte", tr_x, tr_y, te_x, te_y, categories, info)
