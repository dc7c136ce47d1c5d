"""Temperature scaling (train.calibrate) and the expected calibration error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llmembed import LLMEmbedClassifier
from llmembed.errors import ModelLoadError
from llmembed.metrics import calibration_metrics, expected_calibration_error
from llmembed.testing import tiny_recipe
from llmembed.training import fit_temperature


def test_ece_of_known_cases():
    # perfectly confident and right: 0; always 0.9 confident but right half the time: 0.4
    assert expected_calibration_error([0, 1], np.array([[1.0, 0.0], [0.0, 1.0]])) == 0.0
    proba = np.array([[0.9, 0.1]] * 4)
    assert expected_calibration_error([0, 0, 1, 1], proba) == pytest.approx(0.4)
    assert expected_calibration_error([], np.zeros((0, 2))) == 0.0


def test_fit_temperature_cools_overconfident_logits():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 3000)
    true_logits = rng.normal(size=(3000, 3)) + 2.0 * np.eye(3)[y]
    sampled = np.array([rng.choice(3, p=np.exp(z) / np.exp(z).sum()) for z in true_logits])
    overconfident = torch.as_tensor(true_logits * 4.0)  # the model is 4x too sure
    t = fit_temperature(overconfident, sampled)
    assert 3.0 < t < 5.0
    before = calibration_metrics(sampled, torch.softmax(overconfident, 1).numpy(), 1.0)
    after = torch.softmax(overconfident / t, 1).numpy()
    assert expected_calibration_error(sampled, after) < before["ece"] / 2
    assert fit_temperature(torch.zeros((0, 3)), np.zeros(0, dtype=int)) == 1.0


def test_calibration_metrics_recover_the_uncalibrated_model():
    logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.3, -2.0]])
    y = [0, 2]
    for t in (0.5, 1.0, 3.0):
        proba = torch.softmax(torch.as_tensor(logits) / t, 1).numpy()
        raw = torch.softmax(torch.as_tensor(logits), 1).numpy()
        m = calibration_metrics(y, proba, t)
        assert m["ece_uncalibrated"] == pytest.approx(expected_calibration_error(y, raw))
        assert m["temperature"] == t


@pytest.mark.parametrize("fusion", ["linear", "cooc"])
def test_fit_calibrates_without_changing_predictions(tmp_path, tiny_llama, tiny_bert, fusion):
    rng = np.random.default_rng(1)
    words = ["good", "bad", "film", "plot", "great", "awful", "fine", "dull"]
    texts = [" ".join(rng.choice(words, 4)) + f" {i}" for i in range(60)]
    labels = ["pos" if ("good" in t or "great" in t) else "neg" for t in texts]
    recipe = tiny_recipe(tiny_llama, tiny_bert, head={"fusion": fusion})
    clf = LLMEmbedClassifier(recipe=recipe, verbose=False).fit(texts, labels)
    flat = LLMEmbedClassifier(recipe=recipe, verbose=False, train={"calibrate": False})
    flat.fit(texts, labels)
    assert flat.temperature_ == 1.0 and clf.temperature_ > 0
    assert list(clf.predict(texts)) == list(flat.predict(texts))
    m = clf.evaluate(texts, labels)
    assert {"ece", "ece_uncalibrated", "temperature"} <= set(m)
    assert m["temperature"] == clf.temperature_
    clf.save(tmp_path / "m")
    again = LLMEmbedClassifier.load(tmp_path / "m", verbose=False)
    assert again.temperature_ == clf.temperature_
    assert (
        f"softmax temperature {clf.temperature_:.3f}" in (tmp_path / "m" / "README.md").read_text()
    )
    np.testing.assert_allclose(again.predict_proba(texts), clf.predict_proba(texts), atol=1e-6)


def test_older_folders_load_with_temperature_one_and_bad_ones_are_refused(
    tmp_path, tiny_llama, tiny_bert, toy_texts
):
    clf = LLMEmbedClassifier(recipe=tiny_recipe(tiny_llama, tiny_bert), verbose=False)
    clf.fit(*toy_texts).save(tmp_path / "m")
    config = tmp_path / "m" / "llmembed.json"
    data = json.loads(config.read_text())
    data.pop("temperature")
    config.write_text(json.dumps(data))
    assert LLMEmbedClassifier.load(tmp_path / "m", verbose=False).temperature_ == 1.0
    data["temperature"] = -2
    config.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="temperature"):
        LLMEmbedClassifier.load(tmp_path / "m", verbose=False)


def test_calibration_metrics_map_labels_and_leave_out_unseen_ones():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    by_label = calibration_metrics(["a", "b", "never seen"], proba, 2.0, classes=["a", "b"])
    assert by_label == calibration_metrics([0, 1], proba[:2], 2.0)
