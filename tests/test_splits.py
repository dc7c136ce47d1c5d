"""Grouped splits (llmembed.splits) and fit(..., groups=...)."""

from __future__ import annotations

import csv
import dataclasses
import json
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from llmembed import DataError, LexicalConfig, LLMEmbedClassifier, splits
from llmembed.cli import app
from llmembed.lexical import LexicalChannel
from llmembed.selection import cv_splits
from llmembed.splits import (
    auto_groups,
    group_ids,
    group_kfold,
    group_validation,
    phrase_groups,
)
from llmembed.testing import tiny_recipe
from llmembed.training import split_validation


def leaky_texts(n_groups: int = 30, per_group: int = 6, seed: int = 0):
    """Texts whose label is random per group and readable only from the group's own made-up
    word: any split that puts one group on both sides leaks the label."""
    rng = np.random.default_rng(seed)
    filler = ["the", "a", "of", "film", "story", "and", "it", "was"]
    texts, labels, groups = [], [], []
    for g in range(n_groups):
        word, label = f"zq{g:03d}x", ["neg", "pos"][g % 2]
        for _ in range(per_group):
            texts.append(" ".join([word, *rng.choice(filler, 5)]))
            labels.append(label)
            groups.append(f"doc-{g}")
    order = rng.permutation(len(texts))
    return [texts[i] for i in order], [labels[i] for i in order], [groups[i] for i in order]


def phrase_texts(n_sentences: int = 30, seed: int = 0):
    """Sentences and phrases cut from them (SST-2's shape): the label is random per sentence
    and readable only from the sentence's own made-up word, which every phrase keeps."""
    rng = np.random.default_rng(seed)
    filler = ["the", "a", "of", "film", "story", "and", "it", "was"]
    texts, labels = [], []
    for g in range(n_sentences):
        words = [f"zq{g:03d}x", *rng.choice(filler, 7)]
        label = ["neg", "pos"][g % 2]
        for stop in range(2, len(words) + 1):  # the sentence and 6 of its prefixes
            texts.append(" ".join(words[:stop]))
            labels.append(label)
    order = rng.permutation(len(texts))
    return [texts[i] for i in order], [labels[i] for i in order]


def test_auto_groups_groups_phrases_only(monkeypatch):
    texts, _ = phrase_texts()
    assert auto_groups(texts) is None  # 210 texts: fewer than AUTO_MIN_TEXTS, not looked at
    monkeypatch.setattr(splits, "AUTO_MIN_TEXTS", 100)
    g = auto_groups(texts)
    assert g is not None and g.max() + 1 == 30
    np.testing.assert_array_equal(g, phrase_groups(texts))
    distinct = [f"text {i} about zq{i:04d}x and more" for i in range(400)]
    assert auto_groups(distinct) is None
    # 4 copies and 4 phrases of other texts (16 of 408 texts joined): left ungrouped
    assert auto_groups(distinct + distinct[:4] + [t[:-9] for t in distinct[4:8]]) is None
    assert auto_groups(["one"]) is None


def test_fit_groups_phrases_by_default(tiny_llama, tiny_bert, monkeypatch):
    monkeypatch.setattr(splits, "AUTO_MIN_TEXTS", 100)
    texts, labels = phrase_texts(seed=3)
    base = tiny_recipe(tiny_llama, tiny_bert, head={"fusion": "linear"})
    recipe = dataclasses.replace(base, lexical=LexicalConfig(enabled=True, char_ngrams=[]))

    def fit(**fit_kw):
        clf = LLMEmbedClassifier(recipe=recipe, ensemble=True, cv=3, verbose=False)
        return clf.fit(texts, labels, **fit_kw)

    auto, plain = fit(), fit(groups=None)
    assert auto.n_groups_ == 30 and plain.n_groups_ is None
    assert "groups" in auto.timings_ and "groups" not in plain.timings_
    with pytest.raises(DataError, match='groups must be "auto", None or one group label'):
        LLMEmbedClassifier(recipe=recipe, verbose=False).fit(texts, labels, groups="doc")
    assert plain.fold_scores_.mean() > 0.9  # held-out phrases of sentences its models saw
    assert auto.fold_scores_.mean() < 0.75  # whole sentences held out: chance


def test_group_kfold_holds_each_group_out_once():
    _, labels, groups = leaky_texts()
    y = np.unique(labels, return_inverse=True)[1]
    g = group_ids(groups, len(groups))
    for target in (y, np.eye(2, dtype=np.int64)[y]):  # class indices and a 0/1 matrix
        folds = group_kfold(target, 5, 0, g)
        held = np.concatenate([va for _, va in folds])
        assert sorted(held) == list(range(len(y)))
        for tr, va in folds:
            assert not set(g[tr]) & set(g[va])
        other = group_kfold(target, 5, 1, g)  # the seed moves the folds
        assert any(set(a) != set(b) for (_, a), (_, b) in zip(folds, other))
    assert [list(va) for _, va in cv_splits(y, 5, 0, g)] == [
        list(va) for _, va in group_kfold(y, 5, 0, g)
    ]
    tr, va = group_validation(y, 0.2, 0, g)
    assert not set(g[tr]) & set(g[va]) and 0.1 < len(va) / len(y) < 0.3
    tr2, va2 = split_validation(y, 0.2, 0, g)
    np.testing.assert_array_equal(va, va2)
    with pytest.raises(DataError, match="cannot fill 50 folds"):
        group_kfold(y, 50, 0, g)


@pytest.mark.parametrize("n_classes,k", [(2, 10), (3, 5), (7, 3)])
def test_stratified_group_folds_are_scikit_learns(n_classes, k):
    from sklearn.model_selection import StratifiedGroupKFold

    rng = np.random.default_rng(n_classes)
    y = rng.choice(
        n_classes, 600, p=np.linspace(1, 0.2, n_classes) / np.linspace(1, 0.2, n_classes).sum()
    )
    groups = group_ids(rng.integers(0, 90, 600), 600)
    for seed in (0, 1, 7):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rare classes: scikit-learn warns
            ref = StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(y, y, groups)
            for (tr, va), (tr_ref, va_ref) in zip(group_kfold(y, k, seed, groups), ref):
                np.testing.assert_array_equal(tr, tr_ref)
                np.testing.assert_array_equal(va, va_ref)
    with pytest.raises(DataError, match="need a class with at least 50 texts"):
        group_kfold(np.arange(60) % 2, 50, 0, group_ids(np.arange(60), 60))


def test_group_kfold_remembers_its_last_folds():
    """A fit cuts the same folds for every backbone's head: the second call is not cut
    again, gives the same folds, and labels spelled differently (strings) share them."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    g = group_ids(rng.integers(0, 60, 400), 400)
    splits._memo_folds.cache_clear()
    first = group_kfold(y, 5, 0, g)
    again = group_kfold(np.array(["neg", "pos"])[y], 5, 0, g)
    info = splits._memo_folds.cache_info()
    assert (info.hits, info.misses) == (1, 1)
    for (tr, va), (tr2, va2) in zip(first, again):
        np.testing.assert_array_equal(tr, tr2)
        np.testing.assert_array_equal(va, va2)
    group_kfold(y, 5, 1, g)  # another seed: cut anew
    assert splits._memo_folds.cache_info().misses == 2


def test_group_ids_and_their_refusals():
    np.testing.assert_array_equal(group_ids(["b", "a", "b", 3], 4), [0, 1, 0, 2])
    for bad, n, message in [
        (["a", "b"], 3, "2 group labels for 3 texts"),
        (["a", None], 2, "item 1 is missing"),
        (["a", float("nan")], 2, "item 1 is missing"),
        ([["a"], "b"], 2, "not hashable"),
        (["a", "a"], 2, "one group"),
    ]:
        with pytest.raises(DataError, match=message) as info:
            group_ids(bad, n)
        assert "\n" not in str(info.value)


def test_phrase_groups_join_phrases_to_their_sentence():
    texts = [
        "a great movie , truly",
        "great movie",
        "great",
        "a terrible film",
        "terrible film ",
        "film",
        "great movie",
        "unrelated words here",
    ]
    g = phrase_groups(texts)
    assert len(set(g[[0, 1, 2, 6]])) == 1  # contained in text 0, equal texts too
    assert len(set(g[[3, 4, 5]])) == 1 and g[3] != g[0]
    assert g[7] not in set(g[:7])


def test_the_lexical_channel_scores_out_of_group(monkeypatch):
    texts, labels, groups = leaky_texts()
    y = np.unique(labels, return_inverse=True)[1]
    config = LexicalConfig(enabled=True, char_ngrams=[], min_df=1)
    leaked = LexicalChannel(config).fit_transform(texts, y, 2, seed=0)
    honest = LexicalChannel(config).fit_transform(
        texts, y, 2, seed=0, groups=group_ids(groups, len(texts))
    )
    # a binary channel scores one margin per text: its sign is the predicted class
    assert ((leaked[:, 0, 0] > 0) == y).mean() > 0.9
    assert ((honest[:, 0, 0] > 0) == y).mean() < 0.7


def test_fit_with_groups_keeps_them_whole_everywhere(tiny_llama, tiny_bert):
    texts, labels, groups = leaky_texts(seed=1)
    base = tiny_recipe(tiny_llama, tiny_bert, head={"fusion": "linear"})
    recipe = dataclasses.replace(base, lexical=LexicalConfig(enabled=True, char_ngrams=[]))

    def folds(**fit_kw):
        clf = LLMEmbedClassifier(recipe=recipe, ensemble=True, cv=3, verbose=False)
        return clf.fit(texts, labels, **fit_kw).fold_scores_

    assert folds().mean() > 0.9  # held-out phrases of a group its models saw
    assert folds(groups=groups).mean() < 0.75  # whole groups held out: chance
    with pytest.raises(DataError, match="groups: 3 group labels") as info:
        LLMEmbedClassifier(recipe=recipe, verbose=False).fit(texts, labels, groups=groups[:3])
    assert "\n" not in str(info.value)


def test_cli_train_group_col(tiny_llama, tiny_bert, tmp_path):
    texts, labels, groups = leaky_texts(seed=2)
    data = tmp_path / "train.csv"
    with data.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "label", "doc"), *zip(texts, labels, groups)])
    recipe = tmp_path / "lexical.toml"
    recipe.write_text(
        f'[[backbones]]\nmodel = "{tiny_llama}"\nlayers = "-1"\ndtype = "float32"\n'
        f'[[backbones]]\nmodel = "{tiny_bert}"\nlayers = "-1"\npooling = "first"\n'
        '[head]\nfusion = "linear"\n[lexical]\nenabled = true\nchar_ngrams = []\n'
    )
    base = ["train", str(data), "--recipe", str(recipe), "--ensemble", "-q", "-o"]
    scores = {}
    for name, extra in [("plain", []), ("grouped", ["--group-col", "doc"])]:
        r = CliRunner().invoke(app, [*base, str(tmp_path / name), *extra])
        assert r.exit_code == 0, r.output
        scores[name] = np.mean(
            json.loads((tmp_path / name / "metrics.json").read_text())["fold_scores"]
        )
    assert scores["plain"] > 0.9 and scores["grouped"] < 0.75
    r = CliRunner().invoke(app, [*base, str(tmp_path / "p"), "--phrase-groups"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, [*base, str(tmp_path / "x"), "--group-col", "nope"])
    assert r.exit_code != 0 and "no group column 'nope'" in r.output
