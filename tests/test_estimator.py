"""LLMEmbedClassifier as a scikit-learn estimator: the estimator contract, model selection,
pipelines, label validation and scikit-learn's own estimator checks (tiny random backbones)."""

from __future__ import annotations

import pickle
import warnings
from functools import partial

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn.exceptions
from sklearn.base import clone, is_classifier
from sklearn.model_selection import GridSearchCV, StratifiedKFold, check_cv, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import estimator_checks_generator
from sklearn.utils.validation import check_is_fitted

from llmembed import LLMEmbedClassifier, LLMEmbedError, Recipe, testing
from llmembed.classifier import NOT_FITTED_MESSAGE, NotFittedError
from llmembed.io import validate_labels
from llmembed.training import TrainConfig

FAST_TRAIN = {"max_epochs": 3, "patience": None}


def tiny_recipe(llama, bert) -> Recipe:
    return testing.tiny_recipe(llama, bert, head={"proj_dim": 8, "hidden": [16], "dropout": 0.0})


@pytest.fixture
def make_clf(tiny_llama, tiny_bert):
    def make(**params) -> LLMEmbedClassifier:
        defaults = {"recipe": tiny_recipe(tiny_llama, tiny_bert), "train": dict(FAST_TRAIN)}
        return LLMEmbedClassifier(**{**defaults, "verbose": False, **params})

    return make


@pytest.fixture
def data24(toy_texts) -> tuple[list[str], list[str]]:
    """24 texts, 12 per class (6 of every block of 10 in toy_texts)."""
    texts, labels = toy_texts
    keep = [i for i in range(len(texts)) if i % 10 < 6]
    return [texts[i] for i in keep], [labels[i] for i in keep]


@pytest.fixture
def fitted(make_clf, data24) -> LLMEmbedClassifier:
    return make_clf().fit(*data24)


def public_fitted_names(clf) -> list[str]:
    return sorted(k for k in vars(clf) if k.endswith("_") and not k.startswith("_"))


def _lowercase(texts):
    return [t.lower() for t in texts]


# -- the estimator contract ------------------------------------------------------------------
def test_is_a_classifier_taking_texts():
    clf = LLMEmbedClassifier()
    assert is_classifier(clf)
    tags = get_tags(clf)
    assert tags.estimator_type == "classifier"
    assert tags.input_tags.string and not tags.input_tags.two_d_array
    assert tags.target_tags.required and tags.requires_fit
    for name in ("classes_", "recipe_", "head_", "Parameters", "Attributes", "Raises"):
        assert name in LLMEmbedClassifier.__doc__


def test_init_stores_parameters_untouched():
    head, train, backbones = {"fusion": "mean"}, {"lr": 1.0}, ["x"]
    clf = LLMEmbedClassifier(recipe="nope", backbones=backbones, head=head, train=train)
    assert clf.head is head and clf.train is train and clf.backbones is backbones
    assert set(vars(clf)) == set(clf.get_params())
    # nothing is checked before fit, where bad values give a clear error
    with pytest.raises(LLMEmbedError, match="Unknown recipe"):
        clf.fit(["a b", "c d"], [0, 1])


def test_get_set_params_and_clone(make_clf):
    clf = make_clf(head={"proj_dim": 8})
    assert clf.set_params(head={"fusion": "mean"}) is clf
    assert clf.get_params()["head"] == {"fusion": "mean"}
    assert clf._resolved_recipe().head.fusion == "mean"
    # one setting of head / train at a time, the others kept, the old dict not mutated
    old = {"fusion": "mean", "sigma": 2.0}
    clf.set_params(head=old)
    clf.set_params(head__fusion="max", train__lr=0.5)
    assert clf.head == {"fusion": "max", "sigma": 2.0} and old["fusion"] == "mean"
    assert clf.train == {**FAST_TRAIN, "lr": 0.5}
    clf.set_params(train=TrainConfig(lr=0.1), train__seed=3)
    assert clf.train["lr"] == 0.1 and clf.train["seed"] == 3
    with pytest.raises(ValueError, match="not a dict"):
        LLMEmbedClassifier(head=3).set_params(head__fusion="mean")
    with pytest.raises(ValueError, match="Invalid parameter"):
        clf.set_params(nope=1)
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and twin.head is not clf.head


def test_not_fitted_errors(make_clf, data24):
    texts, labels = data24
    clf = make_clf()
    with pytest.raises(sklearn.exceptions.NotFittedError):
        check_is_fitted(clf)
    assert issubclass(NotFittedError, LLMEmbedError)
    assert issubclass(NotFittedError, sklearn.exceptions.NotFittedError)
    for call in (
        lambda: clf.predict(texts),
        lambda: clf.predict_proba(texts),
        lambda: clf.score(texts, labels),
        lambda: clf.evaluate(texts, labels),
        lambda: clf.save("unused"),
    ):
        with pytest.raises(NotFittedError) as info:
            call()
        assert str(info.value) == NOT_FITTED_MESSAGE
    assert not hasattr(clf, "backbones_") and not hasattr(clf, "classes_")


def test_embed_works_before_fit_and_sets_no_fitted_attribute(make_clf, data24):
    texts, _ = data24
    clf = make_clf()
    feats = clf.embed(texts[:5])
    assert [f.shape for f in feats] == [(5, 3, 32), (5, 1, 24)]
    assert public_fitted_names(clf) == []
    with pytest.raises(sklearn.exceptions.NotFittedError):
        check_is_fitted(clf)
    assert not hasattr(LLMEmbedClassifier, "transform")
    with pytest.raises(LLMEmbedError, match="item 1"):
        clf.embed(["fine", "  "])


def test_fit_sets_only_fitted_attributes(make_clf, data24):
    clf = make_clf(head={"fusion": "mean"})
    before = dict(vars(clf))
    hashes = {k: joblib.hash(v) for k, v in clf.get_params().items()}
    assert clf.fit(*data24) is clf
    check_is_fitted(clf)
    assert public_fitted_names(clf) == [
        "best_epoch_",
        "classes_",
        "fold_scores_",
        "head_",
        "history_",
        "multi_label_",
        "n_groups_",
        "recipe_",
        "selection_",
        "temperature_",
        "thresholds_",
        "timings_",
        "val_metrics_",
    ]
    new_public = {k for k in vars(clf) if not k.startswith("_")} - set(before)
    assert all(k.endswith("_") for k in new_public)
    assert all(vars(clf)[k] is v for k, v in before.items())  # parameters neither replaced...
    assert {k: joblib.hash(v) for k, v in clf.get_params().items()} == hashes  # ...nor mutated
    assert clf.recipe_.head.fusion == "mean" and list(clf.classes_) == ["neg", "pos"]
    assert {"train_head", f"embed:{clf.recipe_.backbones[0].model}"} <= set(clf.timings_)
    assert len(clf.backbones_) == 2
    assert public_fitted_names(clone(clf)) == []


def test_predict_methods_leave_state_unchanged(fitted, data24):
    texts, labels = data24
    before = dict(vars(fitted))
    fitted.predict(texts)
    fitted.predict_proba(texts)
    fitted.score(texts, labels)
    fitted.evaluate(texts, labels)
    fitted.embed(texts)
    after = vars(fitted)
    assert set(after) == set(before) and all(after[k] is v for k, v in before.items())


def test_predict_records_extraction_time_in_timings(fitted, data24):
    """What run_demo relies on: reset timings_, evaluate, read the test extraction times."""
    fitted.timings_ = {}
    fitted.evaluate(*data24)
    assert sorted(fitted.timings_) == sorted(f"embed:{b.model}" for b in fitted.recipe_.backbones)


def test_fit_is_idempotent_and_predictions_subset_invariant(make_clf, data24):
    texts, labels = data24
    clf = make_clf()
    first = clf.fit(texts, labels).predict_proba(texts)
    np.testing.assert_allclose(clf.fit(texts, labels).predict_proba(texts), first, atol=1e-6)
    clf.set_params(use_cache=False)  # extract again, in other batches
    np.testing.assert_allclose(clf.predict_proba(texts[3:9]), first[3:9], atol=1e-4)


def test_score_with_sample_weight(fitted, data24):
    texts, _ = data24
    pred = fitted.predict(texts)
    flip = {"pos": "neg", "neg": "pos"}
    y = [flip[p] if i < 6 else p for i, p in enumerate(pred)]  # the first 6 are wrong
    assert fitted.score(texts, y) == pytest.approx(18 / 24)
    weights = [0.0] * 6 + [1.0] * 18
    assert fitted.score(texts, y, sample_weight=weights) == pytest.approx(1.0)
    assert fitted.score(texts, y, sample_weight=[3.0] * 6 + [1.0] * 18) == pytest.approx(0.5)
    with pytest.raises(LLMEmbedError, match="24 texts but 23 labels"):
        fitted.score(texts, y[:-1])


def test_pickle_round_trip_leaves_backbones_out(fitted, data24):
    texts, _ = data24
    assert fitted.backbones_[0]._model is not None  # loaded by fit
    blob = pickle.dumps(fitted)
    assert "_backbone_pool" not in fitted.__getstate__()
    again = pickle.loads(blob)
    check_is_fitted(again)
    np.testing.assert_allclose(again.predict_proba(texts), fitted.predict_proba(texts), atol=1e-6)


def test_load_is_fitted(fitted, data24, tmp_path):
    texts, _ = data24
    loaded = LLMEmbedClassifier.load(fitted.save(tmp_path / "m"), device="cpu", verbose=False)
    check_is_fitted(loaded)
    assert public_fitted_names(loaded) == public_fitted_names(fitted)
    assert list(loaded.predict(texts)) == list(fitted.predict(texts))
    fresh = clone(loaded)
    assert public_fitted_names(fresh) == [] and isinstance(fresh.recipe, Recipe)


# -- model selection and pipelines -----------------------------------------------------------
def test_grid_search_over_nested_dict_parameter(make_clf, data24):
    texts, labels = data24
    grid = [{"fusion": "mean"}, {"fusion": "cooc"}]
    search = GridSearchCV(make_clf(), {"head": grid}, cv=2, error_score="raise")
    search.fit(texts, labels)
    assert [p["head"] for p in search.cv_results_["params"]] == grid
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    best = search.best_estimator_
    assert best.recipe_.head.fusion == search.best_params_["head"]["fusion"]
    assert set(search.predict(texts)) <= {"pos", "neg"}
    assert grid == [{"fusion": "mean"}, {"fusion": "cooc"}]  # the grid is not mutated


def test_cross_val_score_stratified(make_clf, data24):
    texts, labels = data24
    clf = make_clf()
    assert isinstance(check_cv(2, labels, classifier=is_classifier(clf)), StratifiedKFold)
    scores = cross_val_score(clf, texts, labels, cv=2, error_score="raise")
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))
    assert public_fitted_names(clf) == []  # cross_val_score fits clones


def test_pipeline_last_step_and_nested_setting_names(make_clf, data24):
    texts, labels = data24
    shouting = [t.upper() for t in texts]  # the tiny tokenizers only know lowercase words
    pipe = make_pipeline(FunctionTransformer(_lowercase), make_clf())
    assert is_classifier(pipe)
    pipe.set_params(llmembedclassifier__head__fusion="mean")
    assert pipe.get_params()["llmembedclassifier__head"] == {"fusion": "mean"}
    pipe.fit(shouting, labels)
    clf = pipe[-1]
    assert clf.recipe_.head.fusion == "mean"
    assert list(pipe.predict(shouting)) == list(clf.predict(texts))
    assert pipe.score(shouting, labels) == clf.score(texts, labels)
    assert list(pipe.classes_) == ["neg", "pos"]


# -- labels ----------------------------------------------------------------------------------
MISSING = [None, float("nan"), np.nan, np.float32("nan"), pd.NA, pd.NaT, "", "  \t"]


@pytest.mark.parametrize("missing", MISSING, ids=repr)
def test_missing_label_is_refused_with_its_row(missing):
    labels = ["pos", "neg", "pos", missing, "neg"]
    with pytest.raises(LLMEmbedError, match="label at row 3 is missing"):
        validate_labels(labels, 5)


@pytest.mark.parametrize(
    "labels",
    [[1, "1"], ["a", 2, "b"], [1.5, "x"], [np.int64(1), np.str_("2")], [1, True], [True, "yes"]],
    ids=repr,
)
def test_mixed_label_kinds_are_refused(labels):
    with pytest.raises(LLMEmbedError, match="must all be strings or all numbers"):
        validate_labels(labels, len(labels))


def test_label_inputs_and_shapes():
    assert validate_labels(pd.Series(["a", "b"], index=[7, 9]), 2).tolist() == ["a", "b"]
    assert validate_labels((1, 2.5), 2).dtype.kind == "f"
    assert validate_labels(np.array([True, False]), 2).dtype.kind == "b"
    assert validate_labels(np.array(["x", "y"], dtype=object), 2).dtype.kind == "U"
    for series in (
        pd.Series(["pos", "neg", None, "pos"], dtype=object),
        pd.Series(["pos", "neg", None, "pos"], dtype="string"),
        pd.Series([1, 0, None, 1], dtype="Int64"),
        pd.Series([1, 0, None, 1]),  # float64 with NaN
    ):
        with pytest.raises(LLMEmbedError, match="label at row 2 is missing"):
            validate_labels(series, 4)
    with pytest.raises(LLMEmbedError, match="3 texts but 2 labels"):
        validate_labels(["a", "b"], 3)
    with pytest.raises(LLMEmbedError, match="1-D"):
        validate_labels(np.array([["a"], ["b"]]), 2)
    with pytest.raises(LLMEmbedError, match="1-D"):
        validate_labels(pd.DataFrame({"y": ["a", "b"]}), 2)
    with pytest.raises(LLMEmbedError, match="single str"):
        validate_labels("ab", 2)
    with pytest.raises(LLMEmbedError, match="target y is None"):
        validate_labels(None, 2)
    with pytest.raises(LLMEmbedError, match="row 1 is a tuple"):
        validate_labels(["a", ("b",)], 2)


def test_fit_refuses_bad_labels_before_extracting(make_clf, data24):
    texts, labels = data24
    clf = make_clf(recipe="no-such-recipe")  # fit would fail on it after the labels
    bad = list(labels)
    bad[3] = pd.NA
    with pytest.raises(LLMEmbedError, match="label at row 3 is missing"):
        clf.fit(texts, bad)
    with pytest.raises(LLMEmbedError, match="label at row 5 is missing"):
        clf.fit(texts, pd.Series([*labels[:5], None, *labels[6:]], dtype=object))
    with pytest.raises(LLMEmbedError, match="must all be strings or all numbers"):
        clf.fit(texts, [1, *labels[1:]])
    with pytest.raises(LLMEmbedError, match="24 texts but 23 labels"):
        clf.fit(texts, labels[:-1])
    with pytest.raises(LLMEmbedError, match="single class"):
        clf.fit(texts, ["pos"] * len(texts))
    with pytest.raises(LLMEmbedError, match="target y is None"):
        clf.fit(texts, None)
    assert public_fitted_names(clf) == []


@pytest.mark.parametrize(
    ("to_label", "kind"),
    [(lambda s: s, "U"), (lambda s: int(s == "pos"), "i"), (lambda s: np.bool_(s == "pos"), "b")],
    ids=["str", "int", "numpy-bool"],
)
def test_labels_come_back_as_given(make_clf, data24, to_label, kind):
    texts, labels = data24
    y = pd.Series([to_label(s) for s in labels], index=range(100, 124))  # index is ignored
    clf = make_clf().fit(pd.Series(texts), y)
    pred = clf.predict(texts[:4])
    assert pred.dtype.kind == kind and set(pred.tolist()) <= set(y.tolist())


# -- scikit-learn's estimator checks ---------------------------------------------------------
class _AllChecks(LLMEmbedClassifier):
    """LLMEmbedClassifier claiming 2-D input, only so that scikit-learn yields its checks.

    The real tags (two_d_array=False, string=True) make scikit-learn skip every check but
    check_estimator_cloneable (see test_real_tags_make_sklearn_skip_its_checks); with this
    claim it yields them all, and those that feed a numeric matrix are expected to fail.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


NUMERIC_X = "feeds a numeric matrix as X: texts only, refused with LLMEmbedError ('not a string')"
EXPECTED_FAILED = {
    "check_fit_score_takes_y": NUMERIC_X,
    "check_estimators_overwrite_params": NUMERIC_X + "; see test_fit_sets_only_fitted_attributes",
    "check_dont_overwrite_parameters": NUMERIC_X + "; see test_fit_sets_only_fitted_attributes",
    "check_estimators_fit_returns_self": NUMERIC_X + "; see test_fit_sets_only_fitted_attributes",
    "check_readonly_memmap_input": NUMERIC_X + " (a read-only memmap)",
    "check_n_features_in_after_fitting": NUMERIC_X + "; n_features_in_ does not apply to texts",
    "check_positive_only_tag_during_fit": NUMERIC_X + " (negative values)",
    "check_estimators_dtypes": NUMERIC_X + " (float32 / int64 / int32 matrices)",
    "check_complex_data": NUMERIC_X + "; expects a 'complex data' message",
    "check_dtype_object": NUMERIC_X + " (object-dtype numbers)",
    "check_estimators_empty_data_messages": NUMERIC_X + "; expects a '0 feature(s)' message",
    "check_pipeline_consistency": NUMERIC_X
    + "; see test_pipeline_last_step_and_nested_setting_names",
    "check_estimators_nan_inf": NUMERIC_X + "; expects a NaN / inf message about X",
    "check_estimator_sparse_array": "feeds a sparse matrix as X; expects a 'sparse' message",
    "check_estimator_sparse_matrix": "feeds a sparse matrix as X; expects a 'sparse' message",
    "check_estimators_pickle": NUMERIC_X + "; see test_pickle_round_trip_leaves_backbones_out",
    "check_array_api_input": NUMERIC_X + "; array API does not apply (skips itself unless "
    "SCIPY_ARRAY_API=1)",
    "check_f_contiguous_array_estimator": NUMERIC_X + " (Fortran-ordered)",
    "check_classifier_data_not_an_array": NUMERIC_X + " (wrapped in a non-array sequence)",
    "check_classifiers_one_label": NUMERIC_X + "; single-class error: "
    "test_fit_refuses_bad_labels_before_extracting",
    "check_classifiers_classes": NUMERIC_X + "; see test_labels_come_back_as_given",
    "check_classifiers_train": NUMERIC_X + " (blobs)",
    "check_classifiers_regression_target": NUMERIC_X + "; and float labels are valid classes "
    "here (all numbers), not a regression target",
    "check_supervised_y_2d": NUMERIC_X + "; a 2-D y is a multi-label indicator matrix here",
    "check_classifiers_multilabel_representation_invariance": NUMERIC_X
    + "; see test_multilabel.py::test_indicator_in_indicator_out_and_int_labels",
    "check_classifiers_multilabel_output_format_predict": NUMERIC_X
    + "; see test_multilabel.py::test_indicator_in_indicator_out_and_int_labels",
    "check_classifiers_multilabel_output_format_predict_proba": NUMERIC_X
    + "; see test_multilabel.py::test_fit_predict_label_sets",
    "check_classifiers_multilabel_output_format_decision_function": NUMERIC_X
    + "; and there is no decision_function",
    "check_methods_sample_order_invariance": NUMERIC_X,
    "check_methods_subset_invariance": NUMERIC_X
    + "; see test_fit_is_idempotent_and_predictions_subset_invariant",
    "check_fit2d_1sample": NUMERIC_X + "; expects a '1 sample' message",
    "check_fit2d_1feature": NUMERIC_X + "; expects a '1 feature(s)' message",
    "check_dict_unchanged": NUMERIC_X + "; see test_predict_methods_leave_state_unchanged",
    "check_fit_idempotent": NUMERIC_X
    + "; see test_fit_is_idempotent_and_predictions_subset_invariant",
    "check_fit_check_is_fitted": NUMERIC_X + "; see test_fit_sets_only_fitted_attributes",
    "check_n_features_in": NUMERIC_X + "; n_features_in_ does not apply to texts",
    "check_fit2d_predict1d": NUMERIC_X + "; n_features_in_ does not apply to texts",
}
MUST_PASS = {
    "check_estimator_cloneable",
    "check_estimator_tags_renamed",
    "check_valid_tag_types",
    "check_estimator_repr",
    "check_no_attributes_set_in_init",
    "check_estimators_unfitted",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_mixin_order",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_requires_y_none",
}


# Checks that pass, but on the numeric X they feed they test little about a text classifier:
PASS_BUT_TEST_LITTLE = {
    "check_supervised_y_no_nan": "passes because the numeric X is refused (a ValueError) before "
    "the NaN labels; NaN labels with texts: test_missing_label_is_refused_with_its_row",
    "check_fit1d": "a 1-D numeric X is refused with a ValueError, as it should be",
    "check_classifiers_one_label_sample_weights": "fit takes no sample_weight (TypeError)",
    "check_estimators_partial_fit_n_features": "no partial_fit: nothing to check",
    "check_non_transformer_estimators_n_iter": "no max_iter parameter: nothing to check",
    "check_decision_proba_consistency": "no decision_function: nothing to check",
    "check_estimator_sparse_tag": "the sparse tag is False and sparse X is refused",
}


def _check_name(check) -> str:
    return check.func.__name__ if isinstance(check, partial) else check.__name__


def _check_id(check) -> str:
    kwargs = check.keywords if isinstance(check, partial) else {}
    args = ",".join(f"{k}={v}" for k, v in kwargs.items() if k != "name")
    return _check_name(check) + (f"[{args}]" if args else "")


def _sklearn_checks() -> list:
    """scikit-learn's checks for an _AllChecks instance, expected failures marked xfail (strict).

    Collected on a placeholder; every test runs its check on the tiny-backbone `checked`."""
    out = []
    items = estimator_checks_generator(
        _AllChecks(),
        legacy=True,
        expected_failed_checks=EXPECTED_FAILED,
        mark="xfail",
        xfail_strict=True,
    )
    for item in items:
        marked = hasattr(item, "marks")  # a pytest.param (a tuple too) or (estimator, check)
        (_, check), marks = (item.values, item.marks) if marked else (item, ())
        out.append(pytest.param(check, marks=marks, id=_check_id(check)))
    return out


SKLEARN_CHECKS = _sklearn_checks()


@pytest.fixture
def checked(tiny_llama, tiny_bert) -> _AllChecks:
    return _AllChecks(
        recipe=tiny_recipe(tiny_llama, tiny_bert), train=dict(FAST_TRAIN), verbose=False
    )


@pytest.mark.parametrize("check", SKLEARN_CHECKS)
def test_sklearn_estimator_check(check, checked):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(checked)


def test_sklearn_check_lists_are_current():
    names = {_check_name(p.values[0]) for p in SKLEARN_CHECKS}
    assert names - set(EXPECTED_FAILED) >= MUST_PASS
    assert set(EXPECTED_FAILED) <= names, set(EXPECTED_FAILED) - names
    assert set(PASS_BUT_TEST_LITTLE) <= names - set(EXPECTED_FAILED) - MUST_PASS


def test_real_tags_make_sklearn_skip_its_checks():
    with pytest.warns(sklearn.exceptions.SkipTestWarning, match="Can't test estimator"):
        checks = [c for _, c in estimator_checks_generator(LLMEmbedClassifier())]
    assert [_check_name(c) for c in checks] == ["check_estimator_cloneable"]
