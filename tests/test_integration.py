"""Real pretrained weights on real data: runs when the zoo models are installed (CI installs them
with `make models`) and the benchmark data is reachable; skipped otherwise."""

from pathlib import Path

import numpy as np
import pytest

from llmembed import LLMEmbedClassifier, Recipe
from llmembed.backbones import Backbone, BackboneSpec
from llmembed.datasets import data_dir, load_benchmark
from llmembed.heads import HeadConfig
from llmembed.training import TrainConfig
from llmembed.zoo import is_installed

pytestmark = pytest.mark.integration
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _needs(*models):
    missing = [m for m in models if not is_installed(m)]
    if missing:
        pytest.skip(f"zoo models not installed: {missing} (run: make models)")


@pytest.fixture(scope="module")
def r8_subset():
    root = data_dir() or (SHARED if SHARED.is_dir() else None)
    if root is None:
        pytest.skip("R8 not reachable: set LLMEMBED_DATA")
    return load_benchmark("r8", root).subsample(200, 100, seed=0)


def test_smollm2_separates_unrelated_texts():
    """The first token dominates a plain mean in small decoders; mean_no_first fixes that."""
    _needs("smollm2-135m")
    texts = [
        "Oil prices rose after OPEC cut production.",
        "Crude oil climbed as OPEC reduced its output.",
        "The cat slept on the warm windowsill all afternoon.",
    ]
    bb = Backbone(BackboneSpec("smollm2-135m", layers="15", pooling="mean,mean_no_first"), "cpu")
    emb = bb.embed(texts, progress=False)

    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    plain, no_first = emb[:, 0], emb[:, 1]
    assert cos(plain[0], plain[2]) > 0.9  # plain mean: everything looks alike
    assert cos(no_first[0], no_first[1]) > cos(no_first[0], no_first[2]) + 0.1


def test_r8_subset_accuracy_floor(r8_subset, tmp_path):
    _needs("smollm2-135m", "minilm-l6")
    recipe = Recipe(
        name="ci-r8",
        backbones=[
            BackboneSpec(
                "smollm2-135m", layers="12,15,18", pooling="mean_no_first", max_length=256
            ),
            BackboneSpec("minilm-l6", layers="-1", pooling="mean", max_length=256),
        ],
        head=HeadConfig(proj_dim=128, hidden=[256], sigma=0.1),
        train=TrainConfig(lr=1e-3, batch_size=32, max_epochs=60, patience=15),
    )
    clf = LLMEmbedClassifier(recipe=recipe, cache_dir=tmp_path, verbose=False)
    clf.fit(r8_subset.train_texts, r8_subset.train_labels)
    metrics = clf.evaluate(r8_subset.test_texts, r8_subset.test_labels)
    # 200 training documents only; the full-data demo reaches much higher.
    assert metrics["accuracy"] >= 0.85, metrics["accuracy"]
    clf.save(tmp_path / "model")
    again = LLMEmbedClassifier.load(tmp_path / "model", cache_dir=tmp_path, verbose=False)
    assert list(again.predict(r8_subset.test_texts[:10])) == list(
        clf.predict(r8_subset.test_texts[:10])
    )
