import numpy as np
import pytest

from llmembed import LLMEmbedClassifier, LLMEmbedError, available_recipes, load_recipe
from llmembed.config import DEFAULT_RECIPE
from llmembed.testing import tiny_recipe


@pytest.fixture
def fitted(tiny_llama, tiny_bert, toy_texts):
    texts, labels = toy_texts
    clf = LLMEmbedClassifier(recipe=tiny_recipe(tiny_llama, tiny_bert), verbose=False)
    return clf.fit(texts, labels)


def test_fit_predict_string_labels(fitted, toy_texts):
    texts, labels = toy_texts
    pred = fitted.predict(texts)
    assert set(pred) <= {"pos", "neg"} and pred.dtype.kind == "U"
    assert fitted.score(texts, labels) >= 0.8
    proba = fitted.predict_proba(texts[:3])
    assert proba.shape == (3, 2)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    m = fitted.evaluate(texts, labels)
    assert {"accuracy", "macro_f1", "micro_f1", "positive_f1", "confusion_matrix"} <= set(m)


def test_int_labels_come_back_as_ints(tiny_llama, tiny_bert, toy_texts):
    texts, labels = toy_texts
    y = [1 if lab == "pos" else 0 for lab in labels]
    clf = LLMEmbedClassifier(recipe=tiny_recipe(tiny_llama, tiny_bert), verbose=False)
    pred = clf.fit(texts, y).predict(texts[:4])
    assert pred.dtype.kind == "i" and set(pred) <= {0, 1}


def test_save_load_round_trip(fitted, toy_texts, tmp_path):
    texts, _ = toy_texts
    fitted.save(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "README.md",
        "head.safetensors",
        "llmembed.json",
    ]
    loaded = LLMEmbedClassifier.load(tmp_path / "model", device="cpu", verbose=False)
    np.testing.assert_array_equal(loaded.predict_proba(texts), fitted.predict_proba(texts))
    assert list(loaded.predict(texts)) == list(fitted.predict(texts))
    assert loaded.best_epoch_ == fitted.best_epoch_
    # llmembed.json keeps the validation summary, not the per-class report or confusion matrix
    assert loaded.val_metrics_ == {
        k: fitted.val_metrics_[k] for k in ("n", "accuracy", "macro_f1", "micro_f1", "positive_f1")
    }
    fingerprints = [bb.fingerprint() for bb in fitted.backbones_]
    assert [bb.fingerprint() for bb in loaded.backbones_] == fingerprints  # float32: same cache


def test_save_pretrained_is_save(fitted, toy_texts, tmp_path):
    texts, _ = toy_texts
    folder = fitted.save_pretrained(tmp_path / "m")
    loaded = LLMEmbedClassifier.from_pretrained(folder, device="cpu", verbose=False)
    assert list(loaded.predict(texts)) == list(fitted.predict(texts))
    assert "# tiny" in (folder / "README.md").read_text()


def test_second_fit_uses_cache(fitted, toy_texts):
    texts, labels = toy_texts
    bb = fitted.backbones_[0]
    calls = []
    original = bb.embed
    bb.embed = lambda t, **kw: calls.append(len(t)) or original(t, **kw)
    fitted.embed(texts)
    assert calls == []  # everything came from the cache


def test_bad_inputs(tiny_llama, tiny_bert, toy_texts):
    texts, labels = toy_texts
    clf = LLMEmbedClassifier(recipe=tiny_recipe(tiny_llama, tiny_bert), verbose=False)
    with pytest.raises(LLMEmbedError, match="single class"):
        clf.fit(texts, ["pos"] * len(texts))
    with pytest.raises(LLMEmbedError, match="3"):
        clf.fit(texts[:3] + [""] + texts[4:], labels)
    with pytest.raises(LLMEmbedError):
        clf.fit(texts[:5] + [None] + texts[6:], labels)
    with pytest.raises(LLMEmbedError, match="labels"):
        clf.fit(texts, labels[:-1])
    with pytest.raises(LLMEmbedError, match="not fitted"):
        clf.predict(texts)


def test_load_missing_folder(tmp_path):
    with pytest.raises(LLMEmbedError, match="not a saved llmembed model"):
        LLMEmbedClassifier.load(tmp_path)


def test_shipped_recipes():
    assert {"cpu", "cpu-fusion", "paper"} <= set(available_recipes())
    paper = load_recipe("paper")
    assert [b.layers for b in paper.backbones] == ["-5:", "-1", "-1"]
    assert paper.head.proj_dim == 1024 and not paper.head.project_same_width
    cpu = load_recipe("cpu")
    assert cpu.backbones[0].model == "embeddinggemma-300m" and cpu.backbones[0].template != "{text}"
    assert cpu.head.fusion == "linear" and cpu.lexical.enabled
    assert load_recipe("cpu-fusion").backbones[0].model == "smollm2-135m"


def test_the_default_recipe_is_the_stacked_pair():
    assert LLMEmbedClassifier().recipe == DEFAULT_RECIPE == "cpu-stack"
    default = load_recipe(DEFAULT_RECIPE)
    assert [b.model for b in default.backbones] == ["embeddinggemma-300m", "mpnet-base"]
    assert default.head.stack and default.head.fusion == "linear" and default.lexical.enabled


def test_recipe_file_and_errors(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[[backbones]]\nmodel = "x"\nlayers = "-2"\n[head]\nsigma = 2.0\n')
    r = load_recipe(path)
    assert r.backbones[0].layers == "-2" and r.head.sigma == 2.0 and r.name == "r"
    with pytest.raises(LLMEmbedError, match="Unknown recipe"):
        load_recipe("nope")
    path.write_text('[[backbones]]\nmodel = "x"\n[trian]\nlr = 1\n')
    with pytest.raises(LLMEmbedError, match="trian"):
        load_recipe(path)


def test_overrides(tiny_llama, tiny_bert):
    clf = LLMEmbedClassifier(
        recipe=tiny_recipe(tiny_llama, tiny_bert), head={"fusion": "mean"}, train={"lr": 0.5}
    )
    r = clf._resolved_recipe()
    assert r.head.fusion == "mean" and r.head.proj_dim == 16 and r.train.lr == 0.5


def test_linear_head_fits_saves_and_loads(tiny_llama, tiny_bert, toy_texts, tmp_path):
    texts, labels = toy_texts
    recipe = tiny_recipe(tiny_llama, tiny_bert, head={"fusion": "linear"})
    clf = LLMEmbedClassifier(recipe=recipe, verbose=False).fit(texts, labels)
    assert clf.score(texts, labels) >= 0.8
    assert clf.best_epoch_ == 0 and "C" in clf.history_[-1]
    loaded = LLMEmbedClassifier.load(clf.save(tmp_path / "m"), device="cpu", verbose=False)
    np.testing.assert_array_equal(loaded.predict_proba(texts), clf.predict_proba(texts))
    assert loaded.recipe_.head.fusion == "linear"
    assert loaded.recipe_.train.C == recipe.train.C


def test_predict_proba_scores_big_inputs_in_chunks(fitted, toy_texts, monkeypatch):
    import llmembed.classifier as classifier_module

    texts, labels = toy_texts
    whole = fitted.predict_proba(texts)
    monkeypatch.setattr(classifier_module, "PREDICT_CHUNK", 7)
    sizes = []
    extract = fitted._extract

    def spy(chunk, *args, **kwargs):
        sizes.append(len(chunk))
        return extract(chunk, *args, **kwargs)

    monkeypatch.setattr(fitted, "_extract", spy)
    np.testing.assert_allclose(fitted.predict_proba(texts), whole, atol=1e-5)
    assert sizes == [7] * 5 + [5]  # 40 texts: memory holds 7 texts' features at a time
    assert fitted.score(texts, labels) == pytest.approx(
        float(np.mean(fitted.predict(texts) == labels))
    )
