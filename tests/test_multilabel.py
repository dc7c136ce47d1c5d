"""Multi-label classification: label sets or indicator matrices in, sigmoid head, per-label
thresholds, label sets out; metrics, saving, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmembed import LLMEmbedClassifier
from llmembed.errors import DataError, LLMEmbedError
from llmembed.metrics import multilabel_metrics
from llmembed.multilabel import MultiLabel, decide, is_label_sets, read_target, tune_thresholds
from llmembed.testing import tiny_recipe

TOPICS = {"oil": ("oil", "ship"), "grain": ("wheat", "trade"), "money": ("bank", "rate")}
FILLER = ["the", "a", "market", "price", "stock", "is", "very", "really"]


def _data(n: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """Texts with 0-3 topics each; a topic's words are in the text iff it has the topic."""
    rng = np.random.default_rng(seed)
    texts, sets = [], []
    for i in range(n):
        topics = [t for t in TOPICS if rng.random() < 0.4] or (["oil"] if i % 3 else [])
        words = list(rng.choice(FILLER, 3)) + [rng.choice(TOPICS[t]) for t in topics]
        rng.shuffle(words)
        texts.append(" ".join(words) + f" {i}")
        sets.append(topics)
    return texts, sets


@pytest.fixture
def recipe(tiny_llama, tiny_bert):
    return tiny_recipe(tiny_llama, tiny_bert, head={"fusion": "linear"})


def test_detects_label_sets_and_matrices():
    assert is_label_sets([["a"], ["a", "b"], []])
    assert is_label_sets([("a",), {"b"}])
    assert is_label_sets(np.zeros((3, 2)))
    assert not is_label_sets(["a", "b"])
    assert not is_label_sets(np.array([1, 0, 1]))
    assert not is_label_sets("ab")


@pytest.mark.filterwarnings("ignore:labels. 1 label")
def test_read_target_label_sets_and_indicator():
    labels, y, form, at_least_one = read_target([["b", "a"], ["a"], []], 3)
    assert list(labels) == ["a", "b"] and form == "sets" and not at_least_one
    assert y.tolist() == [[1, 1], [1, 0], [0, 0]]
    matrix = np.array([[1, 0], [0, 1], [1, 1]])
    labels, y, form, at_least_one = read_target(matrix, 3, classes=["x", "y"])
    assert list(labels) == ["x", "y"] and form == "indicator" and at_least_one
    assert read_target(matrix, 3)[0].tolist() == [0, 1]


@pytest.mark.parametrize(
    ("y", "message"),
    [
        ([["a"], ["a", None]], "missing"),
        ([["a"], ["a", 1]], "all be strings or all numbers"),
        ([[], []], "no text has a label"),
        ([["a"], "a"], "not a label set"),
        ([["a"]], "2 texts but 1"),
        (np.array([[1, 2], [0, 1]]), "0 and 1 only"),
        (np.array([[1, 0], [1, 0]]), "nothing to learn"),
    ],
)
def test_read_target_refuses_bad_labels(y, message):
    with pytest.raises(DataError, match=message):
        read_target(y, 2)


def test_a_label_seen_once_warns():
    with pytest.warns(UserWarning, match="only one training text"):
        read_target([["a"], ["a", "b"], ["a"]], 3)


def test_tune_thresholds_finds_the_separating_threshold():
    rng = np.random.default_rng(0)
    truth = (rng.random((400, 2)) < 0.3).astype(np.float32)
    # label 0's positives score 0.3-0.4, its negatives 0-0.25: 0.5 would miss them all
    proba = np.where(truth, 0.3 + 0.1 * rng.random((400, 2)), 0.25 * rng.random((400, 2)))
    proba[:, 1] = np.where(truth[:, 1], 0.8, 0.6)  # label 1 separates at 0.65-0.8
    t = tune_thresholds(proba, truth)
    assert 0.25 < t[0] <= 0.3 and 0.6 < t[1] <= 0.8
    pred = decide(proba, MultiLabel(list(t), at_least_one=False))
    assert (pred == truth.astype(bool)).all()
    assert tune_thresholds(np.zeros((0, 3)), np.zeros((0, 3))).tolist() == [0.5] * 3


def test_decide_at_least_one_gives_the_top_label():
    proba = np.array([[0.1, 0.3], [0.9, 0.2]])
    assert decide(proba, MultiLabel([0.5, 0.5], at_least_one=True)).tolist() == [
        [False, True],
        [True, False],
    ]
    assert decide(proba, MultiLabel([0.5, 0.5], at_least_one=False))[0].tolist() == [False] * 2


def test_multilabel_metrics_known_case():
    truth = np.array([[1, 0, 1], [0, 1, 0]])
    pred = np.array([[1, 0, 0], [0, 1, 0]])
    m = multilabel_metrics(truth, pred, labels=["a", "b", "c"])
    assert m["subset_accuracy"] == 0.5
    assert m["hamming_loss"] == pytest.approx(1 / 6)
    assert m["micro_f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    assert m["macro_f1"] == pytest.approx((1 + 1 + 0) / 3)
    assert m["samples_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["per_class"]["c"]["support"] == 1.0


@pytest.mark.parametrize("fusion", ["linear", "cooc"])
def test_fit_predict_label_sets(recipe, fusion):
    texts, sets = _data(90)
    clf = LLMEmbedClassifier(
        recipe=recipe, head={"fusion": fusion}, lexical={"enabled": True}, verbose=False
    )
    clf.fit(texts, sets)
    assert clf.multi_label_ and list(clf.classes_) == ["grain", "money", "oil"]
    assert clf.thresholds_.shape == (3,) and ((clf.thresholds_ > 0) & (clf.thresholds_ < 1)).all()
    proba = clf.predict_proba(texts[:5])
    assert proba.shape == (5, 3) and not np.allclose(proba.sum(1), 1.0)
    pred = clf.predict(texts)
    assert isinstance(pred, list) and all(isinstance(p, tuple) for p in pred)
    assert all(label in clf.classes_ for p in pred for label in p)
    # the lexical channel sees the topic words: the training sets are learned
    m = clf.evaluate(texts, sets)
    assert m["micro_f1"] > 0.9, m
    assert {"macro_f1", "samples_f1", "subset_accuracy", "hamming_loss"} <= set(m)
    assert clf.score(texts, sets) == pytest.approx(m["subset_accuracy"])


def test_indicator_in_indicator_out_and_int_labels(recipe):
    texts, sets = _data(60, seed=1)
    matrix = np.array([[t in s for t in TOPICS] for s in sets], dtype=np.int64)
    clf = LLMEmbedClassifier(recipe=recipe, verbose=False).fit(texts, matrix, classes=[7, 8, 9])
    assert clf.classes_.tolist() == [7, 8, 9]
    pred = clf.predict(texts[:4])
    assert isinstance(pred, np.ndarray) and pred.shape == (4, 3) and set(pred.ravel()) <= {0, 1}
    by_sets = LLMEmbedClassifier(recipe=recipe, verbose=False).fit(
        texts, [[10 + j for j in np.flatnonzero(row)] for row in matrix]
    )
    assert all(isinstance(x, int) for p in by_sets.predict(texts) for x in p)


def test_every_text_labelled_gives_every_prediction_a_label(recipe):
    texts, sets = _data(60, seed=2)
    sets = [s or ["oil"] for s in sets]
    clf = LLMEmbedClassifier(recipe=recipe, verbose=False).fit(texts, sets)
    assert all(len(p) >= 1 for p in clf.predict(["the market", "very really", *texts]))


def test_save_load_round_trip(tmp_path, recipe):
    texts, sets = _data(60, seed=3)
    clf = LLMEmbedClassifier(recipe=recipe, lexical={"enabled": True}, verbose=False)
    clf.fit(texts, sets)
    clf.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "llmembed.json").read_text())
    assert saved["multi_label"]["form"] == "sets"
    assert len(saved["multi_label"]["thresholds"]) == 3
    assert "multi-label" in (tmp_path / "m" / "README.md").read_text()
    back = LLMEmbedClassifier.load(tmp_path / "m", verbose=False)
    assert back.multi_label_
    np.testing.assert_allclose(back.predict_proba(texts), clf.predict_proba(texts), atol=1e-6)
    assert back.predict(texts) == clf.predict(texts)
    np.testing.assert_array_equal(back.thresholds_, clf.thresholds_)


def test_single_label_models_save_no_multi_label_field(tmp_path, recipe, toy_texts):
    clf = LLMEmbedClassifier(recipe=recipe, verbose=False).fit(*toy_texts)
    assert not clf.multi_label_ and clf.thresholds_ is None
    clf.save(tmp_path / "m")
    assert "multi_label" not in json.loads((tmp_path / "m" / "llmembed.json").read_text())


def test_declared_multi_label_reads_single_labels_as_sets(recipe, toy_texts):
    texts, labels = toy_texts
    clf = LLMEmbedClassifier(recipe=recipe, verbose=False, multi_label=True).fit(texts, labels)
    assert clf.multi_label_ and all(isinstance(p, tuple) for p in clf.predict(texts[:3]))
    with pytest.raises(LLMEmbedError, match="multi_label=False"):
        LLMEmbedClassifier(recipe=recipe, verbose=False, multi_label=False).fit(
            texts, [[x] for x in labels]
        )
    with pytest.raises(LLMEmbedError, match="multi_label must be"):
        LLMEmbedClassifier(recipe=recipe, verbose=False, multi_label="yes").fit(texts, labels)


def test_evaluate_refuses_single_labels_for_a_multi_label_model(recipe):
    texts, sets = _data(40, seed=4)
    clf = LLMEmbedClassifier(recipe=recipe, verbose=False).fit(texts, sets)
    with pytest.raises(LLMEmbedError, match="label set per text"):
        clf.evaluate(texts, ["oil"] * len(texts))
    with pytest.raises(LLMEmbedError, match="40 texts but 2"):
        clf.score(texts, sets[:2])


def _write_csv(path, texts, sets, sep="|"):
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "topics"])
        w.writerows((t, sep.join(s)) for t, s in zip(texts, sets))
    return path


def test_cli_train_evaluate_predict_multi_label(tmp_path, tiny_llama, tiny_bert):
    from typer.testing import CliRunner

    from llmembed.cli import app

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        f'[[backbones]]\nmodel = "{tiny_bert}"\npooling = "first"\ndtype = "float32"\n'
        '[head]\nfusion = "linear"\n[lexical]\nenabled = true\n'
    )
    texts, sets = _data(80, seed=5)
    data = _write_csv(tmp_path / "train.csv", texts, sets, sep=";")
    runner = CliRunner()
    common = ["--label-col", "topics", "--label-sep", ";", "-q"]
    r = runner.invoke(
        app,
        [
            "train",
            str(data),
            "--recipe",
            str(recipe),
            "-o",
            str(tmp_path / "m"),
            "--multi-label",
            *common,
            "--test",
            str(data),
        ],
    )
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert report["test"]["micro_f1"] > 0.9 and "hamming_loss" in report["test"]
    r = runner.invoke(app, ["evaluate", str(tmp_path / "m"), str(data), *common])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["micro_f1"] == pytest.approx(report["test"]["micro_f1"])
    r = runner.invoke(
        app, ["predict", str(tmp_path / "m"), str(data), "--label-sep", ";", "--proba", "-q"]
    )
    assert r.exit_code == 0, r.output
    rows = r.stdout.strip().splitlines()
    assert rows[0] == "text,prediction,p_grain,p_money,p_oil"
    predicted = [row.split(",")[1] for row in rows[1:]]
    assert all(set(p.split(";")) <= set(TOPICS) for p in predicted if p)
    right = sum(set(filter(None, p.split(";"))) == set(s) for p, s in zip(predicted, sets))
    assert right > 0.8 * len(sets)


def test_server_answers_label_lists(tmp_path, recipe):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from llmembed.server import ServeConfig, create_app

    texts, sets = _data(60, seed=6)
    clf = LLMEmbedClassifier(recipe=recipe, lexical={"enabled": True}, verbose=False)
    clf.fit(texts, sets).save(tmp_path / "m")
    with TestClient(create_app(tmp_path / "m", ServeConfig(model_process=False))) as c:
        for _ in range(400):
            if c.get("/readyz").status_code == 200:
                break
        r = c.post("/v1/predict", json={"texts": texts[:5], "return_probabilities": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["labels"] == [list(s) for s in clf.predict(texts[:5])]
    np.testing.assert_allclose(body["probabilities"], clf.predict_proba(texts[:5]), atol=1e-5)
