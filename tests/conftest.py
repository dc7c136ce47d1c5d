"""Fixtures of the product's tests (the tiny models and cache isolation are in ../conftest.py)."""

from __future__ import annotations

import pytest


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
