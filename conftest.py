"""Fixtures of both test suites (tests/ and benchmarks/tests/): tiny random models saved to
disk (llmembed.testing), and caches isolated from the user's, so every test runs offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmembed.testing import make_tiny_bert, make_tiny_llama


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
    from llmembed import files

    memo = tmp_path.parent / f"{tmp_path.name}-memo"  # beside tmp_path, which tests list
    monkeypatch.setattr(files, "disk_memo_path", lambda: memo / "file-digests.json")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once at import: set its constant too, so a hub lookup
    # fails at once instead of timing out on a machine without network.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
