"""ensemble=True: cv fold models whose probabilities are averaged (llmembed.ensemble)."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

import llmembed.ensemble
from llmembed import ConfigError, LexicalConfig, LLMEmbedClassifier, ModelLoadError
from llmembed.cli import app
from llmembed.selection import cv_splits
from llmembed.testing import tiny_recipe

from .test_lexical import keyword_texts

NEW = ["zorblax shares fell", "quintor rose", "vellumix", "an unrelated text"]


@pytest.fixture
def lexical(tiny_llama, tiny_bert):
    """Tiny backbones + the lexical channel, an MLP head (its epochs make members differ)."""
    base = tiny_recipe(tiny_llama, tiny_bert)
    return dataclasses.replace(base, name="lexical", lexical=LexicalConfig(enabled=True))


def test_the_ensemble_averages_fold_models_fitted_as_plain_fits(lexical):
    texts, labels = keyword_texts(60, seed=0)
    clf = LLMEmbedClassifier(recipe=lexical, ensemble=True, cv=3, verbose=False)
    clf.fit(texts, labels)
    assert clf.fold_scores_.shape == (3,) and clf.temperature_ == 1.0
    assert set(clf.timings_) >= {"lexical", "train_head"}
    # each member is what fit gives on the texts outside its fold, scored on the fold
    y = np.unique(labels, return_inverse=True)[1]
    proba, scores = 0.0, []
    for fit, held in cv_splits(y, 3, lexical.train.seed):
        one = LLMEmbedClassifier(recipe=lexical, verbose=False)
        one.fit([texts[i] for i in fit], [labels[i] for i in fit])
        proba = proba + one.predict_proba(NEW)
        scores.append(one.score([texts[i] for i in held], [labels[i] for i in held]))
    np.testing.assert_allclose(clf.predict_proba(NEW), proba / 3, atol=1e-6)
    np.testing.assert_allclose(clf.fold_scores_, scores, atol=1e-9)
    single = LLMEmbedClassifier(recipe=lexical, verbose=False).fit(texts, labels)
    assert single.fold_scores_ is None
    assert not np.allclose(single.predict_proba(NEW), clf.predict_proba(NEW), atol=1e-4)


def test_save_load_round_trip_and_card(lexical, tmp_path):
    texts, labels = keyword_texts(45, seed=1)
    clf = LLMEmbedClassifier(recipe=lexical, ensemble=True, cv=3, verbose=False)
    folder = clf.fit(texts, labels).save(tmp_path / "model")
    for i in (1, 2):
        for name in ("head.safetensors", "lexical.safetensors", "lexical.json"):
            assert (folder / f"fold-{i}" / name).is_file()
    assert not (folder / "fold-3").exists()
    meta = json.loads((folder / "llmembed.json").read_text())
    assert meta["format_version"] == 3 and meta["temperature"] == 1.0
    assert meta["ensemble"]["scores"] == pytest.approx(clf.fold_scores_.tolist())
    assert len(meta["ensemble"]["temperatures"]) == 3
    assert "ensemble: 3 fold models" in (folder / "README.md").read_text()
    loaded = LLMEmbedClassifier.load(folder, verbose=False)
    assert loaded.ensemble is True and loaded.cv == 3
    np.testing.assert_array_equal(loaded.fold_scores_, clf.fold_scores_)
    np.testing.assert_array_equal(loaded.predict_proba(NEW), clf.predict_proba(NEW))
    # a single model saved over it leaves no fold folder behind
    LLMEmbedClassifier(recipe=lexical, verbose=False).fit(texts, labels).save(folder)
    assert not any(folder.glob("fold-*"))
    assert LLMEmbedClassifier.load(folder, verbose=False).fold_scores_ is None


def test_a_damaged_ensemble_is_refused(lexical, tmp_path):
    texts, labels = keyword_texts(30, seed=2)
    clf = LLMEmbedClassifier(recipe=lexical, ensemble=True, cv=2, verbose=False)
    folder = clf.fit(texts, labels).save(tmp_path / "model")
    meta = json.loads((folder / "llmembed.json").read_text())
    for bad in [
        {**meta["ensemble"], "scores": [0.5]},
        {**meta["ensemble"], "temperatures": [1.0, -1.0]},
        {"scores": [0.5, 0.5]},
    ]:
        (folder / "llmembed.json").write_text(json.dumps({**meta, "ensemble": bad}))
        with pytest.raises(ModelLoadError, match="field 'ensemble'") as info:
            LLMEmbedClassifier.load(folder, verbose=False)
        assert "\n" not in str(info.value)
    (folder / "llmembed.json").write_text(json.dumps(meta))
    shutil.rmtree(folder / "fold-1")
    with pytest.raises(ModelLoadError, match=r"fold-1.head\.safetensors"):
        LLMEmbedClassifier.load(folder, verbose=False)


def test_selection_keeps_the_chosen_candidates_fold_models(lexical, monkeypatch):
    neural = dataclasses.replace(lexical, name="neural", lexical=LexicalConfig())
    texts, labels = keyword_texts(60, seed=3)
    fits = []
    real = llmembed.ensemble.fit_member
    monkeypatch.setattr(
        llmembed.ensemble, "fit_member", lambda *a, **kw: fits.append(1) or real(*a, **kw)
    )
    clf = LLMEmbedClassifier(recipe=[neural, lexical], ensemble=True, cv=3, verbose=False)
    clf.fit(texts, labels)
    assert len(fits) == 6  # 3 folds x 2 candidates, no refit
    assert clf.selection_.chosen == "lexical"
    chosen = {c["recipe"]: c for c in clf.selection_.candidates}["lexical"]
    np.testing.assert_allclose(clf.fold_scores_, chosen["scores"], atol=1e-6)
    alone = LLMEmbedClassifier(recipe=lexical, ensemble=True, cv=3, verbose=False)
    alone.fit(texts, labels)
    np.testing.assert_allclose(clf.predict_proba(NEW), alone.predict_proba(NEW), atol=1e-6)


def test_refusals(lexical):
    texts, labels = keyword_texts(30, seed=4)
    cases = [
        (dict(ensemble="yes"), ConfigError, "ensemble must be True or False"),
        (dict(ensemble=True, out_of_core=True), ConfigError, "holds the features in memory"),
        (dict(ensemble=True, cv=1), ConfigError, "cv must be an integer >= 2"),
    ]
    for params, error, message in cases:
        with pytest.raises(error, match=message) as info:
            LLMEmbedClassifier(recipe=lexical, verbose=False, **params).fit(texts, labels)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="single-label"):
        LLMEmbedClassifier(recipe=lexical, ensemble=True, verbose=False).fit(
            texts, [[label] for label in labels]
        )


def test_cli_train_ensemble(tiny_llama, tiny_bert, tmp_path):
    texts, labels = keyword_texts(60, seed=5)
    data = tmp_path / "train.csv"
    with data.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *zip(texts, labels)])
    recipe = tmp_path / "lexical.toml"
    recipe.write_text(
        f'[[backbones]]\nmodel = "{tiny_llama}"\nlayers = "-1"\ndtype = "float32"\n'
        f'[[backbones]]\nmodel = "{tiny_bert}"\nlayers = "-1"\npooling = "first"\n'
        '[head]\nfusion = "linear"\n[lexical]\nenabled = true\n'
    )
    out = tmp_path / "model"
    result = CliRunner().invoke(
        app, ["train", str(data), "--recipe", str(recipe), "--ensemble", "-o", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    assert "ensemble of 5 fold models" in result.output
    assert len(json.loads((out / "metrics.json").read_text())["fold_scores"]) == 5
    assert (out / "fold-4" / "head.safetensors").is_file()
