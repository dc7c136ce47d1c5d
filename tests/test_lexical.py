"""The lexical channel: TF-IDF n-grams scored by a LinearSVC, fused as the head's last input.

Out-of-fold training scores, determinism, a pickle-free round trip, the recipe's ``[lexical]``
table, the estimator parameter, saved folders with the channel, and malformed lexical files
refused with one ModelLoadError line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import joblib
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from sklearn.base import clone
from sklearn.svm import LinearSVC

from llmembed import (
    ConfigError,
    DataError,
    LexicalConfig,
    LLMEmbedClassifier,
    ModelLoadError,
    lexical,
)
from llmembed.classifier import NotFittedError
from llmembed.heads import HeadConfig
from llmembed.lexical import (
    LexicalChannel,
    _char_wb_tfidf,
    _word_tfidf,
    head_config,
    output_width,
)
from llmembed.modelcard import (
    CARD_NAME,
    CONFIG_NAME,
    LEXICAL_CONFIG_NAME,
    LEXICAL_WEIGHTS_NAME,
    WEIGHTS_NAME,
)
from llmembed.recipes import Recipe, load_recipe
from llmembed.testing import WORDS, tiny_recipe

FILLER = [w for w in WORDS if w not in ("oil", "wheat", "ship")]
# Words the tiny models' tokenizers do not know: both read them as their unknown token, so only
# the lexical channel can tell these classes apart.
KEYWORDS = ["zorblax", "quintor", "vellumix"]


def keyword_texts(n: int, seed: int, n_classes: int = 3) -> tuple[list[str], list[str]]:
    """n texts of random filler words, each with one keyword that decides its label."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        c = i % n_classes
        words = list(rng.choice(FILLER, size=int(rng.integers(4, 8))))
        words.insert(int(rng.integers(0, len(words) + 1)), KEYWORDS[c])
        texts.append(" ".join(words))
        labels.append(f"class-{c}")
    return texts, labels


def topic_texts(n: int = 60, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """n texts in 3 classes told apart by a topic word ("oil", "wheat", "ship"), as integers."""
    rng = np.random.default_rng(seed)
    texts, y = [], []
    for i in range(n):
        c = i % 3
        words = list(rng.choice(FILLER, size=6))
        words.insert(int(rng.integers(0, 7)), ("oil", "wheat", "ship")[c])
        texts.append(" ".join(words))
        y.append(c)
    return texts, np.array(y)


def fit_channel(texts, y, n_classes=3, seed=0, **settings) -> tuple[LexicalChannel, np.ndarray]:
    channel = LexicalChannel(LexicalConfig(enabled=True, **settings))
    return channel, channel.fit_transform(texts, y, n_classes, seed)


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


# -- the channel ------------------------------------------------------------------------------
def test_out_of_fold_scores_differ_from_in_sample():
    texts, y = topic_texts()
    channel, oof = fit_channel(texts, y)
    in_sample = channel.transform(texts)
    assert oof.shape == in_sample.shape == (60, 1, 3)
    assert oof.dtype == in_sample.dtype == np.float32
    assert not np.allclose(oof, in_sample, atol=1e-3)
    # in-sample margins are what a head must not learn from: larger than out-of-fold ones
    true_oof = oof[np.arange(60), 0, y].mean()
    true_in = in_sample[np.arange(60), 0, y].mean()
    assert true_in > true_oof
    assert (oof[:, 0].argmax(1) == y).mean() >= 0.9  # the topic word is learnt out of fold too


def test_deterministic_given_the_seed():
    texts, y = topic_texts()
    a, oof_a = fit_channel(texts, y, seed=3)
    b, oof_b = fit_channel(texts, y, seed=3)
    np.testing.assert_array_equal(oof_a, oof_b)
    np.testing.assert_array_equal(a.transform(texts), b.transform(texts))
    _, oof_c = fit_channel(texts, y, seed=4)
    assert not np.array_equal(oof_a, oof_c)  # another seed, other folds


def test_binary_width_and_kfold_fallback():
    texts, y = topic_texts()
    yb = (y == 0).astype(int)
    channel, oof = fit_channel(texts, yb, n_classes=2)
    assert oof.shape == (60, 1, 1) and channel.shape == (1, 1) == (1, output_width(2))
    assert ((oof[:, 0, 0] > 0) == (yb == 1)).mean() >= 0.9
    # a class of 2 texts with 5 folds: plain KFold, some folds miss a class
    keep = np.r_[np.flatnonzero(y != 2), np.flatnonzero(y == 2)[:2]]
    small_texts, small_y = [texts[i] for i in keep], y[keep]
    channel, oof = fit_channel(small_texts, small_y)
    assert oof.shape == (len(keep), 1, 3) and np.isfinite(oof).all()
    assert channel.transform(small_texts).shape == (len(keep), 1, 3)


def test_large_training_sets_take_large_folds(monkeypatch):
    texts, y = topic_texts()
    ids = np.arange(len(texts))  # one group per text: group_kfold is given the fold count
    real, seen = lexical.group_kfold, []

    def spy(target, folds, seed, groups=None):
        seen.append(folds)
        return real(target, folds, seed, groups)

    def fit(**settings):
        channel = LexicalChannel(LexicalConfig(enabled=True, **settings))
        channel.fit_transform(texts, y, 3, 0, groups=ids)

    monkeypatch.setattr(lexical, "group_kfold", spy)
    fit()
    monkeypatch.setattr(lexical, "LARGE_ROWS", len(texts))
    fit()
    fit(large_folds=4)
    fit(folds=2, large_folds=4)  # never more than folds
    assert seen == [5, 3, 4, 2]


def multilabel_target(y: np.ndarray) -> np.ndarray:
    """A 0/1 matrix of 4 labels from 3 topics: one label every text has (nothing to fit)."""
    return np.stack([y == 0, y >= 1, np.ones_like(y, dtype=bool), y == 2], axis=1).astype(int)


@pytest.mark.parametrize("case", ["three-class", "binary", "classes-missing-from-folds", "multi"])
def test_worker_processes_give_the_same_channel(case, monkeypatch):
    """SVMs fitted in worker processes (n_jobs=2) give exactly the one-process channel."""
    texts, y = topic_texts()
    n_classes = 3
    if case == "binary":
        y, n_classes = (y == 0).astype(int), 2
    elif case == "classes-missing-from-folds":
        keep = np.r_[np.flatnonzero(y != 2), np.flatnonzero(y == 2)[:2]]
        texts, y = [texts[i] for i in keep], y[keep]
    elif case == "multi":
        y, n_classes = multilabel_target(y), 4
    monkeypatch.setattr(lexical, "PARALLEL_CHARS", 0)  # these few texts use workers too
    calls = []
    real = joblib.Parallel
    monkeypatch.setattr(joblib, "Parallel", lambda **kw: calls.append(kw) or real(**kw))
    one = LexicalChannel(LexicalConfig(enabled=True))
    oof_one = one.fit_transform(texts, y, n_classes, seed=1, n_jobs=1)
    assert calls == []
    two = LexicalChannel(LexicalConfig(enabled=True))
    oof_two = two.fit_transform(texts, y, n_classes, seed=1, n_jobs=2)
    assert calls == [{"n_jobs": 2, "backend": "loky"}] * 2  # the early start, then the fits
    np.testing.assert_array_equal(oof_one, oof_two)
    np.testing.assert_array_equal(one.coef, two.coef)
    np.testing.assert_array_equal(one.intercept, two.intercept)
    if case == "multi":  # one binary SVM per label that varies; the constant one scores +1
        x = one._matrix(texts)
        for j in (0, 1, 3):
            svm = LinearSVC(C=0.5, dual="auto", random_state=1).fit(x, y[:, j])
            np.testing.assert_array_equal(one.coef[j], svm.coef_[0].astype(np.float32))
        assert one.intercept[2] == 1.0 and not one.coef[2].any()


@pytest.mark.parametrize("max_features", [None, 40, 100000])
def test_char_wb_counts_by_word_match_scikit_learn(max_features):
    """The per-word char_wb path gives scikit-learn's vocabulary, idf and matrix, bit for bit:
    repeated and accented words, tabs and runs of spaces, empty texts, max_features ties."""
    rng = np.random.default_rng(0)
    words = [*WORDS, "Été", "naïve", "x", "a-b", "ÀB", "dots...", "İs"]
    texts = [
        (" " if i % 3 else "\t  ").join(rng.choice(words, size=int(rng.integers(0, 9))))
        for i in range(120)
    ]
    new = ["unseen wörds here", "", texts[5], "Été  \n naïve"]
    channel = LexicalChannel(LexicalConfig(max_features=max_features or 100000, min_df=2))
    ours, ref = channel._vectorizer("char"), channel._vectorizer("char")
    if max_features is None:
        ours.max_features = ref.max_features = None
    got, want = _char_wb_tfidf(ours, texts, fit=True), ref.fit_transform(texts)
    assert ours.vocabulary_ == ref.vocabulary_
    assert np.array_equal(ours.idf_, ref.idf_)
    assert (got != want).nnz == 0 and np.array_equal(got.indices, want.indices)
    assert (_char_wb_tfidf(ours, new, fit=False) != ref.transform(new)).nnz == 0
    with pytest.raises(ValueError, match="no terms remain"):
        _char_wb_tfidf(channel._vectorizer("char"), ["ab", "cd"], fit=True)


@pytest.mark.parametrize("ngrams", [[1, 1], [1, 2], [2, 3], [1, 3]])
@pytest.mark.parametrize("max_features", [None, 30])
def test_word_ngrams_by_integer_codes_match_scikit_learn(ngrams, max_features):
    """The integer-coded word n-gram path gives scikit-learn's vocabulary, idf and matrix, bit
    for bit: repeated words and n-grams within a text, one-token and empty texts, accents and
    case, punctuation the token pattern drops, max_features ties; unseen n-grams at transform."""
    rng = np.random.default_rng(1)
    words = [*WORDS, "Été", "naïve", "x", "a-b", "ÀB", "dots...", "İs", "film", "FILM"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(0, 9)))) for i in range(150)] + [
        "film film film",
        "x",
        "",
        "good good",
    ]
    new = ["unseen wörds here", "", texts[5], "Été naïve film film", "x y"]
    channel = LexicalChannel(LexicalConfig(word_ngrams=ngrams, min_df=2))
    ours, ref = channel._vectorizer("word"), channel._vectorizer("word")
    ours.max_features = ref.max_features = max_features
    got, want = _word_tfidf(ours, texts, fit=True), ref.fit_transform(texts)
    assert ours.vocabulary_ == ref.vocabulary_
    assert np.array_equal(ours.idf_, ref.idf_)
    assert (got != want).nnz == 0 and np.array_equal(got.indices, want.indices)
    assert np.array_equal(got.indptr, want.indptr)
    assert (_word_tfidf(ours, new, fit=False) != ref.transform(new)).nnz == 0
    with pytest.raises(ValueError, match="empty vocabulary"):
        _word_tfidf(channel._vectorizer("word"), ["", "a !"], fit=True)


def test_analyzers_can_be_turned_off():
    texts, y = topic_texts()
    for settings in ({"char_ngrams": []}, {"word_ngrams": []}):
        channel, oof = fit_channel(texts, y, **settings)
        arrays, meta = channel.state()
        assert len(meta["vocabularies"]) == 1 and len(arrays) == 3
        assert (oof[:, 0].argmax(1) == y).mean() >= 0.8


def test_state_round_trip_gives_identical_transform(tmp_path):
    texts, y = topic_texts()
    channel, _ = fit_channel(texts, y)
    arrays, meta = channel.state()
    assert set(arrays) == {"word.idf", "char.idf", "svm.coef", "svm.intercept"}
    assert meta["n_classes"] == 3 and meta["config"] == channel.config.to_dict()
    # through the files a saved model uses: safetensors for the arrays, JSON text for the rest
    save_file(arrays, str(tmp_path / "lex.safetensors"))
    again = LexicalChannel.from_state(
        load_file(str(tmp_path / "lex.safetensors")), json.loads(json.dumps(meta))
    )
    new_texts, _ = topic_texts(30, seed=9)
    for batch in (texts, new_texts, ["an oil text never seen", "WHEAT! Wheat, wheat."]):
        np.testing.assert_array_equal(again.transform(batch), channel.transform(batch))
    for name in ("word", "char"):
        np.testing.assert_array_equal(again.vectorizers[name].idf_, channel.vectorizers[name].idf_)


def test_from_state_refuses_inconsistent_state():
    texts, y = topic_texts()
    arrays, meta = fit_channel(texts, y)[0].state()
    bad_vocab = json.loads(json.dumps(meta))
    term = next(iter(bad_vocab["vocabularies"]["word"]))
    bad_vocab["vocabularies"]["word"][term] = 10**6
    cases = [
        ({**arrays, "svm.coef": arrays["svm.coef"][:, :-1]}, meta, "svm.coef"),
        ({k: v for k, v in arrays.items() if k != "char.idf"}, meta, "expected the arrays"),
        ({**arrays, "word.idf": arrays["word.idf"][:-1]}, meta, "word.idf"),
        (arrays, bad_vocab, "columns are not"),
        (arrays, {**meta, "n_classes": 4}, "svm.coef"),
        (arrays, {**meta, "config": {**meta["config"], "C": -1}}, "C must be"),
        ({**arrays, "svm.intercept": np.full(3, np.nan, np.float32)}, meta, "non-finite"),
    ]
    for bad_arrays, bad_meta, message in cases:
        with pytest.raises(ConfigError, match=message):
            LexicalChannel.from_state(bad_arrays, bad_meta)
    with pytest.raises(ConfigError, match="not fitted"):
        LexicalChannel().transform(["text"])


def test_too_few_texts_for_min_df_is_a_data_error():
    with pytest.raises(DataError, match="min_df") as info:
        fit_channel(["oil up", "wheat down", "ship late"], np.array([0, 1, 2]), min_df=5)
    one_line(info)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"word_ngrams": [2, 1]}, "word_ngrams"),
        ({"word_ngrams": [0, 2]}, "word_ngrams"),
        ({"char_ngrams": [3]}, "char_ngrams"),
        ({"char_ngrams": "2-5"}, "char_ngrams"),
        ({"word_ngrams": [], "char_ngrams": []}, "both"),
        ({"max_features": 0}, "max_features"),
        ({"min_df": 0}, "min_df"),
        ({"min_df": 1.5}, "min_df"),
        ({"C": 0}, "C must"),
        ({"C": "big"}, "C must"),
        ({"C": float("inf")}, "C must"),
        ({"folds": 1}, "folds"),
        ({"large_folds": 1}, "large_folds"),
        ({"enabled": "yes"}, "enabled"),
        ({"sublinear_tf": 1}, "sublinear_tf"),
        ({"nope": 1}, "Unknown lexical setting"),
    ],
)
def test_bad_settings_are_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message) as info:
        LexicalConfig.from_dict(settings)
    one_line(info)


# -- the recipe -------------------------------------------------------------------------------
def test_recipe_lexical_table(tmp_path, tiny_llama, tiny_bert):
    base = tiny_recipe(tiny_llama, tiny_bert)
    assert base.lexical == LexicalConfig() and not base.lexical.enabled
    assert "lexical" not in base.to_dict()  # the default is left out, as in a TOML without it
    data = {**base.to_dict(), "lexical": {"enabled": True, "C": 2}}
    recipe = Recipe.from_dict(data)
    assert recipe.lexical == LexicalConfig(enabled=True, C=2.0)
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    toml = tmp_path / "lex.toml"
    toml.write_text(
        '[[backbones]]\nmodel = "minilm-l6"\n\n[lexical]\nenabled = true\nchar_ngrams = []\n'
    )
    loaded = load_recipe(toml)
    assert loaded.lexical.enabled and loaded.lexical.char_ngrams == []
    toml.write_text('[[backbones]]\nmodel = "minilm-l6"\n\n[lexical]\nenabeld = true\n')
    with pytest.raises(ConfigError, match="Unknown lexical setting"):
        load_recipe(toml)


# -- the estimator parameter ------------------------------------------------------------------
def test_lexical_parameter_and_set_params(tiny_llama, tiny_bert):
    recipe = tiny_recipe(tiny_llama, tiny_bert)
    clf = LLMEmbedClassifier(recipe=recipe, verbose=False)
    assert clf.get_params()["lexical"] is None
    assert not clf._resolved_recipe().lexical.enabled
    clf.set_params(lexical__enabled=True)
    assert clf.lexical == {"enabled": True}
    resolved = clf._resolved_recipe().lexical
    assert resolved.enabled and resolved.C == LexicalConfig().C
    clf.set_params(lexical=LexicalConfig(C=2.0), lexical__folds=3)
    assert clf.lexical["C"] == 2.0 and clf.lexical["folds"] == 3
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and twin.lexical is not clf.lexical
    settings = {"enabled": True}
    assert LLMEmbedClassifier(lexical=settings).lexical is settings  # stored untouched
    with pytest.raises(ConfigError, match="lexical must be a LexicalConfig"):
        LLMEmbedClassifier(recipe=recipe, lexical=3).fit(["a b", "c d"], [0, 1])
    with pytest.raises(ConfigError, match="folds"):
        LLMEmbedClassifier(recipe=recipe, lexical={"folds": 1}).fit(["a b", "c d"], [0, 1])


def test_lexical_attribute_without_the_channel(tiny_llama, tiny_bert, toy_texts):
    clf = LLMEmbedClassifier(recipe=tiny_recipe(tiny_llama, tiny_bert), verbose=False)
    with pytest.raises(NotFittedError):
        _ = clf.lexical_
    assert not hasattr(clf, "lexical_")
    clf.fit(*toy_texts)
    assert clf.lexical_ is None and "lexical" not in clf.timings_
    assert len(clf.head_.shapes) == 2


@pytest.fixture(scope="module")
def lexical_model(tmp_path_factory, tiny_llama, tiny_bert) -> tuple[Path, LLMEmbedClassifier]:
    """A tiny classifier with the lexical channel on, fitted on keyword texts, and saved."""
    texts, labels = keyword_texts(90, seed=0)
    recipe = tiny_recipe(tiny_llama, tiny_bert)
    clf = LLMEmbedClassifier(recipe=recipe, lexical={"enabled": True}, verbose=False)
    clf.fit(texts, labels)
    folder = tmp_path_factory.mktemp("lexical") / "model"
    clf.save_pretrained(folder)
    return folder, clf


@pytest.fixture
def broken(lexical_model, tmp_path) -> Path:
    """A private copy of the saved lexical model, free to be broken."""
    return Path(shutil.copytree(lexical_model[0], tmp_path / "model"))


def test_fit_predict_save_load_round_trip(lexical_model, toy_texts, tmp_path):
    folder, clf = lexical_model
    texts, labels = keyword_texts(30, seed=1)
    assert isinstance(clf.lexical_, LexicalChannel) and clf.lexical_.shape == (1, 3)
    assert clf.head_.shapes[-1] == (1, 3) and len(clf.head_.shapes) == 3
    assert "lexical" in clf.timings_ and "train_head" in clf.timings_
    # its scores also join the MLP raw: index 2 (after the 2 backbones) added to mean_of
    assert clf.head_.config.mean_of == [0, 2] and clf.recipe_.head.mean_of == 0
    assert [f.shape[1:] for f in clf.embed(texts[:2])] == [(3, 32), (1, 24)]  # neural only
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [CARD_NAME, WEIGHTS_NAME, CONFIG_NAME, LEXICAL_WEIGHTS_NAME, LEXICAL_CONFIG_NAME]
    )
    data = json.loads((folder / CONFIG_NAME).read_text())
    assert data["shapes"] == [[3, 32], [1, 24]]  # per backbone; the lexical one is derived
    assert data["recipe"]["lexical"]["enabled"] is True
    assert "lexical channel" in (folder / CARD_NAME).read_text()
    loaded = LLMEmbedClassifier.from_pretrained(folder, device="cpu", verbose=False)
    assert loaded.recipe_.lexical == clf.recipe_.lexical
    assert loaded.head_.config == clf.head_.config and loaded.recipe_.head == clf.recipe_.head
    np.testing.assert_array_equal(loaded.predict_proba(texts), clf.predict_proba(texts))
    assert list(loaded.predict(texts)) == list(clf.predict(texts))
    np.testing.assert_array_equal(loaded.lexical_.transform(texts), clf.lexical_.transform(texts))
    again = LLMEmbedClassifier.load(loaded.save(tmp_path / "again"), device="cpu", verbose=False)
    np.testing.assert_array_equal(again.predict_proba(texts), clf.predict_proba(texts))
    # a model without the channel saved over it leaves no stale lexical file behind
    plain = LLMEmbedClassifier(recipe=clf.recipe_, lexical={"enabled": False}, verbose=False)
    plain.fit(*toy_texts).save(tmp_path / "again")
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == sorted(
        [CARD_NAME, WEIGHTS_NAME, CONFIG_NAME]
    )
    assert LLMEmbedClassifier.load(tmp_path / "again", device="cpu", verbose=False).lexical_ is None


def test_balanced_linear_head_round_trip(tiny_llama, tiny_bert, tmp_path):
    texts, labels = keyword_texts(60, seed=0)
    recipe = tiny_recipe(tiny_llama, tiny_bert, head={"fusion": "linear", "balance": True})
    clf = LLMEmbedClassifier(recipe=recipe, lexical={"enabled": True}, verbose=False)
    clf.fit(texts, labels)
    plain = clone(clf).set_params(head={"balance": False}).fit(texts, labels)
    # blocks 3x32, 1x24 and the lexical 1x3: each one's deviations divided by sqrt(96 / width)
    assert [n * w for n, w in clf.head_.shapes] == [96, 24, 3]
    for i, scale in enumerate([1.0, 2.0, 32**0.5]):
        np.testing.assert_allclose(
            getattr(plain.head_, f"std_{i}").numpy() / getattr(clf.head_, f"std_{i}").numpy(),
            scale,
            rtol=1e-5,
        )
    folder = clf.save_pretrained(tmp_path / "model")
    assert json.loads((folder / CONFIG_NAME).read_text())["recipe"]["head"]["balance"] is True
    loaded = LLMEmbedClassifier.from_pretrained(folder, device="cpu", verbose=False)
    assert loaded.head_.config.balance is True
    np.testing.assert_array_equal(loaded.predict_proba(texts), clf.predict_proba(texts))


def test_lexical_channel_wins_where_words_decide(lexical_model, tiny_llama, tiny_bert):
    """Labels decided by words the tiny models read as their unknown token: the neural head is
    at chance, the lexical channel alone, and the head fusing it, are right."""
    _, fused = lexical_model
    texts, labels = keyword_texts(90, seed=0)
    test_texts, test_labels = keyword_texts(45, seed=1)
    neural = LLMEmbedClassifier(recipe=tiny_recipe(tiny_llama, tiny_bert), verbose=False)
    neural_acc = neural.fit(texts, labels).score(test_texts, test_labels)
    lexical_alone = fused.lexical_.transform(test_texts)[:, 0].argmax(1)
    truth = np.searchsorted(fused.classes_, test_labels)
    assert (lexical_alone == truth).mean() >= 0.95
    fused_acc = fused.score(test_texts, test_labels)
    assert fused_acc >= 0.9 and neural_acc <= 0.6


# -- malformed lexical files ------------------------------------------------------------------
def load(folder: Path) -> LLMEmbedClassifier:
    return LLMEmbedClassifier.load(folder, device="cpu", verbose=False)


def edit_meta(folder: Path, change) -> None:
    meta = json.loads((folder / LEXICAL_CONFIG_NAME).read_text())
    change(meta)
    (folder / LEXICAL_CONFIG_NAME).write_text(json.dumps(meta))


def test_corrupted_lexical_safetensors(broken):
    (broken / LEXICAL_WEIGHTS_NAME).write_bytes(b"\x00\x01 not a safetensors file" * 10)
    with pytest.raises(ModelLoadError, match="lexical.safetensors: not a valid safetensors"):
        load(broken)


def test_truncated_lexical_safetensors(broken):
    data = (broken / LEXICAL_WEIGHTS_NAME).read_bytes()
    (broken / LEXICAL_WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="lexical.safetensors") as info:
        load(broken)
    one_line(info)


def test_lexical_arrays_of_another_shape(broken):
    arrays = load_file(str(broken / LEXICAL_WEIGHTS_NAME))
    arrays["svm.coef"] = arrays["svm.coef"][:2]
    save_file(arrays, str(broken / LEXICAL_WEIGHTS_NAME))
    with pytest.raises(ModelLoadError, match="svm.coef") as info:
        load(broken)
    one_line(info)


@pytest.mark.parametrize("name", [LEXICAL_WEIGHTS_NAME, LEXICAL_CONFIG_NAME])
def test_missing_lexical_file(broken, name):
    (broken / name).unlink()
    with pytest.raises(ModelLoadError, match=f"{name}: missing") as info:
        load(broken)
    one_line(info)


@pytest.mark.parametrize(
    "change, message",
    [
        (None, "not valid JSON"),
        (lambda m: m.update(n_classes=2), "n_classes"),
        (lambda m: m["config"].update(C=9.0), "differs from recipe.lexical"),
        (lambda m: m["config"].update(C="x"), "config.C"),
        (lambda m: m.pop("vocabularies"), "vocabularies"),
        (lambda m: m["vocabularies"].pop("char"), "vocabularies"),
        (lambda m: m["vocabularies"]["word"].update(extra=0), "columns are not"),
    ],
)
def test_malformed_lexical_json(broken, change, message):
    if change is None:
        (broken / LEXICAL_CONFIG_NAME).write_text("{not json")
    else:
        edit_meta(broken, change)
    with pytest.raises(ModelLoadError, match=message) as info:
        load(broken)
    assert LEXICAL_CONFIG_NAME in one_line(info)


def test_bad_lexical_table_in_llmembed_json(broken):
    data = json.loads((broken / CONFIG_NAME).read_text())
    data["recipe"]["lexical"]["folds"] = "five"
    (broken / CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="recipe.lexical.folds") as info:
        load(broken)
    one_line(info)


def test_head_config_adds_the_lexical_input_once():
    on, off = LexicalConfig(enabled=True), LexicalConfig()
    head = HeadConfig(mean_of=[0, 1])
    assert head_config(head, 3, off) is head
    assert head_config(head, 3, on).mean_of == [0, 1, 3] and head.mean_of == [0, 1]
    assert head_config(HeadConfig(mean_of=None), 2, on).mean_of == [2]
    assert head_config(HeadConfig(mean_of=[0, 2]), 2, on).mean_of == [0, 2]
    linear = HeadConfig(fusion="linear")
    assert head_config(linear, 2, on) is linear  # the linear head takes every input raw


def test_linear_head_with_the_channel_saves_and_loads(tiny_llama, tiny_bert, tmp_path):
    texts, labels = keyword_texts(90, seed=0)
    test_texts, test_labels = keyword_texts(45, seed=1)
    recipe = tiny_recipe(tiny_llama, tiny_bert, head={"fusion": "linear"})
    clf = LLMEmbedClassifier(recipe=recipe, lexical={"enabled": True}, verbose=False)
    clf.fit(texts, labels)
    assert clf.head_.shapes[-1] == (1, 3) and clf.score(test_texts, test_labels) >= 0.9
    loaded = load(clf.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.predict_proba(test_texts), clf.predict_proba(test_texts))


def test_from_hub_fetches_the_lexical_files_of_the_same_commit(
    lexical_model, monkeypatch, tmp_path
):
    import huggingface_hub

    folder, _ = lexical_model
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = Path(shutil.copytree(folder, tmp_path / "snapshots" / commit))
    calls = []

    def fake_download(repo_id, revision=None, allow_patterns=None, **kw):
        calls.append((revision, sorted(allow_patterns)))
        return str(snapshot)

    monkeypatch.chdir(tmp_path)  # no folder "someone/lexical-model" here
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    clf = LLMEmbedClassifier.from_pretrained(
        "someone/lexical-model", revision="main", verbose=False
    )
    assert clf.lexical_ is not None
    assert calls == [
        ("main", [CARD_NAME, WEIGHTS_NAME, CONFIG_NAME]),
        (commit, [LEXICAL_CONFIG_NAME, LEXICAL_WEIGHTS_NAME]),
    ]


@pytest.mark.parametrize("n_classes", [3, 4])
def test_a_class_missing_from_training_keeps_its_column(n_classes):
    """Fitted on classes 0 and 1 (or 0-2) of more (a cross-validation fold can miss a rare
    class), the scores keep one column per class, the missing ones at -1."""
    texts, y = topic_texts(90)
    keep = y < n_classes - 1
    texts = [t for t, k in zip(texts, keep) if k]
    channel, oof = fit_channel(texts, y[keep], n_classes=n_classes)
    new = channel.transform(["oil oil", "wheat"])
    assert oof.shape == (len(texts), 1, n_classes) and new.shape == (2, 1, n_classes)
    assert (new[:, 0, n_classes - 1] == -1.0).all()
    assert new[0, 0].argmax() == 0 and new[1, 0].argmax() == 1
