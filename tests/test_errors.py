"""One error hierarchy: every kind of llmembed error is an LLMEmbedError (a ValueError)."""

from __future__ import annotations

import pytest

from llmembed import errors
from llmembed.errors import (
    ConfigError,
    DataError,
    ExtractionOOMError,
    LLMEmbedError,
    ModelLoadError,
)


@pytest.mark.parametrize("cls", [ConfigError, ModelLoadError, ExtractionOOMError, DataError])
def test_subclasses(cls: type) -> None:
    assert issubclass(cls, LLMEmbedError) and issubclass(cls, ValueError)
    assert cls.__doc__ and cls.__doc__.strip()
    with pytest.raises(LLMEmbedError):
        raise cls("x")
    assert cls.__name__ in errors.__all__


def test_typical_raise_sites(tmp_path) -> None:
    from llmembed import zoo
    from llmembed.backbones import BackboneSpec, parse_layers
    from llmembed.datasets import load_benchmark
    from llmembed.heads import HeadConfig
    from llmembed.recipes import load_recipe
    from llmembed.training import TrainConfig

    with pytest.raises(ConfigError):
        parse_layers("5:2:x", 7)
    with pytest.raises(ConfigError):
        BackboneSpec("m", pooling="nope")
    with pytest.raises(ConfigError):
        HeadConfig(fusion="sum")
    with pytest.raises(ConfigError):
        TrainConfig(monitor="f2")
    for tol in (0, -1e-4, True, "1e-4"):
        with pytest.raises(ConfigError, match="tol must be a positive number"):
            TrainConfig(tol=tol)
    with pytest.raises(ConfigError):
        load_recipe("no-such-recipe")
    with pytest.raises(ModelLoadError):
        zoo.install(["no-such-model"], progress=False)
    with pytest.raises(DataError):
        load_benchmark("imdb")
    with pytest.raises(DataError):
        load_benchmark("sst2", tmp_path / "missing")
