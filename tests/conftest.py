"""Shared fixtures: tiny random models saved to disk, so every test runs offline in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmembed.testing import WORDS, make_tiny_bert, make_tiny_llama  # noqa: F401


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Never touch the user's real caches from tests."""
    monkeypatch.setenv("LLMEMBED_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once at import: set its constant too, so a hub lookup
    # fails at once instead of timing out on a machine without network.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def toy_texts() -> tuple[list[str], list[str]]:
    """A small, separable sentiment set (40 texts)."""
    pos = [
        "good movie",
        "great film",
        "love this story",
        "best acting",
        "fun plot",
        "nice day",
        "happy cat",
        "really good",
        "very great",
        "fine film",
    ]
    neg = [
        "bad movie",
        "awful film",
        "hate this story",
        "worst acting",
        "boring plot",
        "sad day",
        "dull dog",
        "really bad",
        "very poor",
        "not good film",
    ]
    texts = pos + neg + [f"the {t}" for t in pos] + [f"the {t}" for t in neg]
    labels = (["pos"] * 10 + ["neg"] * 10) * 2
    return texts, labels
