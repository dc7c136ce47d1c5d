"""llmembed: text classification the LLMEmbed way (Liu et al., ACL 2024).

Frozen language models give pooled hidden states of several layers; a small fusion head with
co-occurrence pooling is the only trained part.
"""

__version__ = "0.1.0"

from .backbones import Backbone, BackboneSpec  # noqa: E402
from .cache import EmbeddingCache  # noqa: E402
from .classifier import LLMEmbedClassifier, NotFittedError  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError,
    DataError,
    ExtractionOOMError,
    LLMEmbedError,
    ModelLoadError,
)
from .heads import FusionHead, HeadConfig  # noqa: E402
from .lexical import LexicalConfig  # noqa: E402
from .metrics import classification_metrics  # noqa: E402
from .recipes import Recipe, available_recipes, load_recipe  # noqa: E402
from .training import TrainConfig, train_head  # noqa: E402

__all__ = [
    "Backbone",
    "BackboneSpec",
    "ConfigError",
    "DataError",
    "EmbeddingCache",
    "ExtractionOOMError",
    "FusionHead",
    "HeadConfig",
    "LLMEmbedClassifier",
    "LLMEmbedError",
    "LexicalConfig",
    "ModelLoadError",
    "NotFittedError",
    "Recipe",
    "TrainConfig",
    "available_recipes",
    "classification_metrics",
    "load_recipe",
    "train_head",
    "__version__",
]
