"""head.stack: each backbone scored by its own logistic regression, out of fold, and the head
fusing the scores (llmembed.stacking)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

import llmembed.stacking as stacking
from llmembed import ConfigError, HeadConfig, LexicalConfig, LLMEmbedClassifier, ModelLoadError
from llmembed.stacking import BackboneScores
from llmembed.testing import tiny_recipe
from llmembed.training import TrainConfig

from .test_lexical import keyword_texts
from .test_multilabel import _data as label_set_texts
from .test_out_of_core import small_blocks  # noqa: F401  (a fixture)

NEW = ["zorblax shares fell", "quintor rose", "vellumix", "an unrelated text"]


@pytest.fixture
def stacked(tiny_llama, tiny_bert):
    """The tiny backbones stacked, with the lexical channel, under a linear head."""
    base = tiny_recipe(tiny_llama, tiny_bert, head={"fusion": "linear", "stack": True})
    return dataclasses.replace(base, name="stacked", lexical=LexicalConfig(enabled=True))


def _blocks(n: int, seed: int = 0):
    """Two blocks of features: the first tells the 3 classes apart, the second is wide noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    a = rng.normal(size=(n, 1, 6)).astype(np.float32)
    a[:, 0, :3] += 3.0 * np.eye(3, dtype=np.float32)[y]
    b = rng.normal(size=(n, 2, 40)).astype(np.float32)
    return [a, b], y


def test_training_scores_are_out_of_fold():
    features, y = _blocks(90)
    config = TrainConfig(C=[0.1, 1.0, 100.0], seed=0)
    module, oof = BackboneScores.fit(features, y, 3, config)
    assert [s.shape for s in oof] == [(90, 1, 3), (90, 1, 3)]
    assert module.shapes == [(1, 6), (2, 40)]
    # log-probabilities: each row's exponentials sum to 1
    np.testing.assert_allclose(np.exp(oof[0][:, 0]).sum(1), 1.0, rtol=1e-5)
    informative, noise = ((s[:, 0].argmax(1) == y).mean() for s in oof)
    assert informative > 0.9
    # 80 noise dimensions for 72 rows a fold: in sample they fit the labels, out of fold not
    in_sample = (module(features)[1][:, 0].argmax(1).numpy() == y).mean()
    assert in_sample > 0.9 and noise < 0.6, (in_sample, noise)


def test_large_training_sets_get_fewer_folds(monkeypatch):
    assert stacking.stack_folds(stacking.LARGE_ROWS - 1) == stacking.STACK_FOLDS == 5
    assert stacking.stack_folds(stacking.LARGE_ROWS) == stacking.LARGE_FOLDS == 3
    seen, real = [], stacking.train_head

    def spy(*args, **kwargs):
        seen.append(args[4].C_folds)  # the TrainConfig each regression is fitted with
        return real(*args, **kwargs)

    monkeypatch.setattr(stacking, "train_head", spy)
    monkeypatch.setattr(stacking, "LARGE_ROWS", 60)
    features, y = _blocks(90)
    BackboneScores.fit(features, y, 3, TrainConfig(C=1.0))
    BackboneScores.fit([f[:50] for f in features], y[:50], 3, TrainConfig(C=1.0))
    BackboneScores.fit(features, y, 3, TrainConfig(C=1.0, C_folds=4))  # the recipe's own
    assert seen == [3, 3, 5, 5, 4, 4]


def test_multi_label_scores_are_logits():
    features, y = _blocks(60, seed=1)
    target = np.eye(3, dtype=np.float32)[y]
    module, oof = BackboneScores.fit(features, target, 3, TrainConfig(C=1.0))
    assert module.multi_label and oof[0].shape == (60, 1, 3)
    assert not np.allclose(np.exp(oof[0][:, 0]).sum(1), 1.0)
    assert ((oof[0][:, 0] > 0) == (target > 0)).mean() > 0.85


def test_fit_predict_save_load_and_card(stacked, tmp_path):
    texts, labels = keyword_texts(60, seed=0)
    clf = LLMEmbedClassifier(recipe=stacked, verbose=False).fit(texts, labels)
    assert set(clf.timings_) >= {"stack", "lexical", "train_head"}
    # the head fuses two backbones' scores and the lexical channel's: three (1, 3) inputs
    assert clf.head_.shapes == [(1, 3), (1, 3), (1, 3)]
    assert clf.score(texts, labels) > 0.9
    folder = clf.save(tmp_path / "model")
    state = load_file(str(folder / "head.safetensors"))
    assert {"stack.heads.0.mlp.0.weight", "stack.heads.1.std_0"} <= set(state)
    assert "stacked: each backbone's vectors" in (folder / "README.md").read_text()
    loaded = LLMEmbedClassifier.load(folder, verbose=False)
    assert loaded.recipe_.head.stack is True
    np.testing.assert_array_equal(loaded.predict_proba(NEW), clf.predict_proba(NEW))
    # a head file without the regressions is another model's head
    del state["stack.heads.1.mlp.0.weight"]
    save_file(state, str(folder / "head.safetensors"))
    with pytest.raises(ModelLoadError, match=r"head.safetensors: missing tensor.*stack\.heads\.1"):
        LLMEmbedClassifier.load(folder, verbose=False)


def test_stacked_ensemble_and_selection(stacked, tmp_path):
    texts, labels = keyword_texts(45, seed=1)
    clf = LLMEmbedClassifier(recipe=stacked, ensemble=True, cv=3, verbose=False)
    folder = clf.fit(texts, labels).save(tmp_path / "model")
    assert all(m.stack is not None for m in clf._members)
    loaded = LLMEmbedClassifier.load(folder, verbose=False)
    np.testing.assert_array_equal(loaded.predict_proba(NEW), clf.predict_proba(NEW))
    plain = dataclasses.replace(
        stacked, name="plain", head=dataclasses.replace(stacked.head, stack=False)
    )
    sel = LLMEmbedClassifier(recipe=[plain, stacked], cv=3, verbose=False).fit(texts, labels)
    assert [c["recipe"] for c in sel.selection_.candidates] == ["plain", "stacked"]


def test_multi_label_model_round_trips(tiny_llama, tiny_bert, tmp_path):
    recipe = tiny_recipe(tiny_llama, tiny_bert, head={"fusion": "linear", "stack": True})
    texts, sets = label_set_texts(90)
    clf = LLMEmbedClassifier(recipe=recipe, lexical={"enabled": True}, verbose=False)
    clf.fit(texts, sets)
    assert clf.multi_label_ and clf.evaluate(texts, sets)["micro_f1"] > 0.9
    loaded = LLMEmbedClassifier.load(clf.save(tmp_path / "m"), verbose=False)
    np.testing.assert_array_equal(loaded.predict_proba(texts[:5]), clf.predict_proba(texts[:5]))


def test_setting_is_checked_and_quiet_by_default():
    with pytest.raises(ConfigError, match="stack must be true or false"):
        HeadConfig(stack="yes")
    assert "stack" not in HeadConfig().to_dict()
    assert HeadConfig(stack=True).to_dict()["stack"] is True


@pytest.mark.usefixtures("small_blocks")
def test_out_of_core_matches_in_memory(tiny_llama, tiny_bert, toy_texts):
    """Features streamed from disk give the stack the same regressions (to rounding)."""
    texts, labels = toy_texts
    recipe = tiny_recipe(tiny_llama, tiny_bert, head={"fusion": "linear", "stack": True})
    ref = LLMEmbedClassifier(recipe=recipe, out_of_core=False, verbose=False).fit(texts, labels)
    got = LLMEmbedClassifier(recipe=recipe, out_of_core=True, verbose=False).fit(texts, labels)
    np.testing.assert_allclose(got.predict_proba(texts), ref.predict_proba(texts), atol=1e-3)
