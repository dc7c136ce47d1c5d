"""Recipe selection by k-fold cross-validation: recipe=[...] and recipe="auto"."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from llmembed import ConfigError, LexicalConfig, LLMEmbedClassifier, ModelLoadError
from llmembed.backbones import Backbone
from llmembed.cli import app
from llmembed.selection import AUTO_RECIPES, Selection, cross_validate, cv_splits
from llmembed.testing import tiny_recipe

from .test_lexical import keyword_texts


@pytest.fixture
def candidates(tiny_llama, tiny_bert):
    """Two recipes over the same tiny backbones: neural features only, and with the lexical
    channel. The texts' labels hang on words the tiny tokenizers do not know, so only the
    lexical channel can learn them."""
    base = tiny_recipe(tiny_llama, tiny_bert, head={"fusion": "linear"})
    neural = dataclasses.replace(base, name="neural")
    lexical = dataclasses.replace(base, name="lexical", lexical=LexicalConfig(enabled=True))
    return neural, lexical


def test_selection_trains_the_best_cross_validated_recipe(candidates, tmp_path):
    neural, lexical = candidates
    texts, labels = keyword_texts(90, seed=0)
    clf = LLMEmbedClassifier(recipe=[neural, lexical], cv=3, verbose=False).fit(texts, labels)
    sel = clf.selection_
    assert sel.folds == 3 and sel.chosen == "lexical" and clf.recipe_.name == "lexical"
    assert [c["recipe"] for c in sel.candidates] == ["neural", "lexical"]
    by_name = {c["recipe"]: c for c in sel.candidates}
    assert by_name["lexical"]["mean"] > by_name["neural"]["mean"] + 0.2
    assert all(len(c["scores"]) == 3 for c in sel.candidates)
    assert clf.lexical_ is not None and "select" in clf.timings_
    # the scores are cross_validate's on the same folds
    y = np.unique(labels, return_inverse=True)[1]
    splits = cv_splits(y, 3, lexical.train.seed)
    feats = LLMEmbedClassifier(recipe=lexical, verbose=False).embed(texts)
    scores = cross_validate(lexical, feats, texts, y, 3, splits)
    np.testing.assert_allclose(by_name["lexical"]["scores"], scores, atol=1e-6)
    # the model trained is the one a plain fit of the chosen recipe gives
    plain = LLMEmbedClassifier(recipe=lexical, verbose=False).fit(texts, labels)
    new = ["zorblax shares fell", "quintor rose", "vellumix"]
    np.testing.assert_allclose(clf.predict_proba(new), plain.predict_proba(new), atol=1e-5)
    assert plain.selection_ is None
    # saved with the model, printed in its card, loaded back
    folder = clf.save(tmp_path / "model")
    assert json.loads((folder / "llmembed.json").read_text())["selection"] == sel.to_dict()
    assert "<- chosen" in (folder / "README.md").read_text()
    loaded = LLMEmbedClassifier.load(folder, verbose=False)
    assert loaded.selection_ == sel
    np.testing.assert_array_equal(loaded.predict_proba(new), clf.predict_proba(new))
    assert "selection" not in json.loads(
        (plain.save(tmp_path / "plain") / "llmembed.json").read_text()
    )


def test_each_backbone_is_extracted_once(candidates, monkeypatch):
    calls = []
    real = Backbone.embed
    monkeypatch.setattr(
        Backbone,
        "embed",
        lambda self, texts, **kw: calls.append(self.spec.model) or real(self, texts, **kw),
    )
    texts, labels = keyword_texts(30, seed=1)
    LLMEmbedClassifier(recipe=list(candidates), cv=2, use_cache=False, verbose=False).fit(
        texts, labels
    )
    assert len(calls) == 2  # two backbones, shared by both candidates, and the refit reuses them


def test_auto_is_the_shipped_candidates():
    clf = LLMEmbedClassifier(recipe="auto")
    assert (
        [r.name for r in clf._candidates()]
        == list(AUTO_RECIPES)
        == ["cpu", "cpu-neural", "cpu-duo", "cpu-stack"]
    )
    assert clf._resolved_recipe().name == "cpu"  # embed() before fit uses the first
    lexical = [r.lexical.enabled for r in clf._candidates()]
    assert lexical == [True, False, True, True]
    assert [r.head.stack for r in clf._candidates()] == [False, False, False, True]


def test_refusals(candidates):
    neural, lexical = candidates
    texts, labels = keyword_texts(30, seed=2)
    cases = [
        (dict(recipe=[neural, dataclasses.replace(lexical, name="neural")]), "names must differ"),
        (dict(recipe=[]), "non-empty list"),
        (dict(recipe=[neural, 3]), "not 3"),
        (dict(recipe=[neural, lexical], cv=1), "cv must be an integer >= 2"),
        (dict(recipe=[neural, lexical], cv=31), "at least 31 training texts"),
        (dict(recipe=[neural, lexical], out_of_core=True, use_cache=True), "holds the features"),
    ]
    for params, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            LLMEmbedClassifier(verbose=False, **params).fit(texts, labels)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="single-label"):
        LLMEmbedClassifier(recipe=[neural, lexical], verbose=False).fit(
            texts, [[label] for label in labels]
        )


def test_a_damaged_selection_record_is_refused(candidates, tmp_path):
    texts, labels = keyword_texts(30, seed=3)
    clf = LLMEmbedClassifier(recipe=list(candidates), cv=2, verbose=False).fit(texts, labels)
    folder = clf.save(tmp_path / "model")
    meta = json.loads((folder / "llmembed.json").read_text())
    for bad, message in [
        ({**meta["selection"], "chosen": "other"}, "not one of the candidates"),
        ({**meta["selection"], "folds": 1}, "folds"),
        ({**meta["selection"], "candidates": [{"recipe": "lexical"}]}, "candidates"),
    ]:
        (folder / "llmembed.json").write_text(json.dumps({**meta, "selection": bad}))
        with pytest.raises(ModelLoadError, match="field 'selection'") as info:
            LLMEmbedClassifier.load(folder, verbose=False)
        assert message in str(info.value)
    other = dict(meta["selection"], chosen="neural")
    (folder / "llmembed.json").write_text(json.dumps({**meta, "selection": other}))
    with pytest.raises(ModelLoadError, match="selection.chosen"):
        LLMEmbedClassifier.load(folder, verbose=False)


def test_selection_record_round_trip():
    sel = Selection(
        2,
        "b",
        [
            {"recipe": "a", "scores": [0.5, 0.6], "mean": 0.55, "std": 0.05, "seconds": 1.0},
            {"recipe": "b", "scores": [0.7, 0.8], "mean": 0.75, "std": 0.05, "seconds": 2.0},
        ],
    )
    assert Selection.from_dict(json.loads(json.dumps(sel.to_dict()))) == sel
    assert sel.lines() == ["a: 55.00 ± 5.00 (1 s)", "b: 75.00 ± 5.00 (2 s)  <- chosen"]


def test_cli_train_with_several_recipes(tiny_llama, tiny_bert, tmp_path):
    files = []
    for name, lexical in (("neural", "false"), ("lexical", "true")):
        path = tmp_path / f"{name}.toml"
        path.write_text(
            f'[[backbones]]\nmodel = "{tiny_llama}"\nlayers = "-1"\ndtype = "float32"\n'
            f'[[backbones]]\nmodel = "{tiny_bert}"\nlayers = "-1"\npooling = "first"\n'
            f'[head]\nfusion = "linear"\n[train]\nval_fraction = 0.2\n'
            f"[lexical]\nenabled = {lexical}\n"
        )
        files.append(str(path))
    texts, labels = keyword_texts(60, seed=4)
    data = tmp_path / "data.csv"
    with open(data, "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *zip(texts, labels)])
    model = tmp_path / "model"
    argv = ["train", str(data), "--recipe", ",".join(files), "-o", str(model), "-q"]
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 0, r.output
    report = json.loads((model / "metrics.json").read_text())
    assert report["recipe"] == "lexical" and report["selection"]["chosen"] == "lexical"
    assert "<- chosen" in r.output
    r = CliRunner().invoke(app, [*argv, "--select-budget", "0"])
    assert r.exit_code == 0, r.output
    report = json.loads((model / "metrics.json").read_text())
    assert report["selection"]["skipped"] == ["lexical"] and "skipped (the time" in r.output


def test_the_time_budget_skips_the_later_candidates(candidates, tmp_path):
    neural, lexical = candidates
    texts, labels = keyword_texts(45, seed=5)
    clf = LLMEmbedClassifier(recipe=[neural, lexical], cv=3, select_budget=0, verbose=False)
    clf.fit(texts, labels)
    sel = clf.selection_
    assert [c["recipe"] for c in sel.candidates] == ["neural"] and sel.skipped == ["lexical"]
    assert sel.chosen == "neural" and clf.recipe_.name == "neural"
    assert sel.lines()[-1] == "lexical: skipped (the time budget was spent)"
    folder = clf.save(tmp_path / "model")
    assert "skipped (the time budget" in (folder / "README.md").read_text()
    assert LLMEmbedClassifier.load(folder, verbose=False).selection_ == sel
    roomy = LLMEmbedClassifier(recipe=[neural, lexical], cv=3, select_budget=1e6, verbose=False)
    assert roomy.fit(texts, labels).selection_.skipped == []
    assert "skipped" not in roomy.selection_.to_dict()
    for bad in (-1, "10", True):
        with pytest.raises(ConfigError, match="select_budget must be") as info:
            LLMEmbedClassifier(recipe=[neural, lexical], select_budget=bad).fit(texts, labels)
        assert "\n" not in str(info.value)
