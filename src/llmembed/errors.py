"""Exceptions raised by llmembed: one base class, so callers can catch all we raise on purpose."""


class LLMEmbedError(ValueError):
    """A problem with the user's input or environment, with a message that says how to fix it."""
