"""The Reuters-21578 ModApte reader, on a tiny SGML folder of the real layout."""

from __future__ import annotations

import pytest

from llmembed_bench.multilabel_data import N_FILES, load_reuters_modapte, parse_sgml


def _doc(split: str, topics_attr: str, topics: list[str], body: str | None, title="T") -> str:
    d = "".join(f"<D>{t}</D>" for t in topics)
    text = f"<TITLE>{title}</TITLE>" + (f"<BODY>{body}</BODY>" if body is not None else "")
    return (
        f'<REUTERS TOPICS="{topics_attr}" LEWISSPLIT="{split}" CGISPLIT="TRAINING-SET" '
        f'OLDID="1" NEWID="1">\n<DATE>1987</DATE>\n<TOPICS>{d}</TOPICS>\n<PLACES></PLACES>\n'
        f"<TEXT>&#2;\n{text}</TEXT>\n</REUTERS>\n"
    )


@pytest.fixture
def folder(tmp_path):
    docs = [
        _doc("TRAIN", "YES", ["grain", "wheat"], "Wheat &lt;up&gt;"),
        _doc("TRAIN", "YES", ["grain"], "Grain"),
        _doc("TRAIN", "YES", ["cocoa"], "only in training"),  # no test doc: dropped
        _doc("TRAIN", "NO", ["grain"], "not ModApte"),
        _doc("NOT-USED", "YES", ["grain"], "not used"),
        _doc("TEST", "YES", ["wheat"], "Wheat test"),
        _doc("TEST", "YES", ["grain", "ship"], "ship never in training: its label dropped"),
    ]
    unproc = (
        '<REUTERS TOPICS="YES" LEWISSPLIT="TRAIN" NEWID="9">\n<TOPICS><D>wheat</D></TOPICS>\n'
        '<TEXT TYPE="UNPROC">&#2;\nraw wheat text\n</TEXT>\n</REUTERS>\n'
    )
    (tmp_path / "reut2-000.sgm").write_text("".join(docs) + unproc, encoding="latin-1")
    for i in range(1, N_FILES):
        (tmp_path / f"reut2-{i:03d}.sgm").write_text("", encoding="latin-1")
    return tmp_path


def test_modapte_split_categories_and_text(folder):
    data = load_reuters_modapte(folder)
    assert data.categories == ["grain", "wheat"]
    assert data.train_labels == [["grain", "wheat"], ["grain"], ["wheat"]]
    assert data.train_texts[0] == "T\nWheat <up>"
    assert data.train_texts[2] == "raw wheat text"
    assert data.test_labels == [["wheat"], ["grain"]]
    assert data.info["modapte_train"] == 4 and data.info["modapte_test"] == 2
    assert data.info["train"] == 3 and data.info["categories"] == 2


def test_missing_folder_or_files_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMEMBED_REUTERS21578", raising=False)
    with pytest.raises(FileNotFoundError, match="no package registry"):
        load_reuters_modapte(None)
    with pytest.raises(FileNotFoundError, match="found 0"):
        load_reuters_modapte(tmp_path)


def test_parse_sgml_reads_topics_and_split():
    ((split, attr, topics, text),) = parse_sgml(_doc("TEST", "YES", ["a", "b"], "x"))
    assert (split, attr, topics, text) == ("TEST", "YES", ["a", "b"], "T\nx")
