"""Token pooling: turn one layer's hidden states [batch, tokens, width] into one vector per text.

Kept apart from model loading (as sentence-transformers separates Transformer and Pooling) so the
pooling choice is a plain function that tests can check against a hand computation.
"""

from __future__ import annotations

import torch

POOLINGS: dict[str, str] = {
    "mean": "masked mean over the text's real tokens (default)",
    "mean_no_first": "masked mean without the first token (it dominates small decoders' means)",
    "last": "last real (non-pad) token",
    "first": "first token: [CLS] / <s>",
    "pooler": "the model's pooler_output (BERT); ignores the layer spec",
    "mean_padded": "mean over ALL positions, padding included (the published code's flaw; "
    "use with padding='max_length')",
}


def check_pooling(name: str) -> str:
    """Return `name` if it is a known pooling.

    Raises:
        ConfigError: an unknown pooling (the message lists the known ones).
    """
    if name not in POOLINGS:
        from .errors import ConfigError

        known = ", ".join(POOLINGS)
        raise ConfigError(f"Unknown pooling {name!r}. Known poolings: {known}.")
    return name


def pool(hidden: torch.Tensor, mask: torch.Tensor, method: str) -> torch.Tensor:
    """Pool `hidden` [b, t, h] with `mask` [b, t] (1 = real token, right padding) into [b, h].

    Computation is done in float32 whatever the model's dtype, so pooling adds no rounding error.
    """
    hidden = hidden.float()
    mask = mask.to(hidden.dtype)
    if method == "mean":
        return _masked_mean(hidden, mask)
    if method == "mean_no_first":
        lengths = mask.sum(1)
        trimmed = mask.clone()
        trimmed[:, 0] = 0
        # A one-token text has nothing left without its first token: keep that token.
        trimmed[lengths <= 1, 0] = 1
        return _masked_mean(hidden, trimmed)
    if method == "last":
        last = mask.sum(1).long().clamp(min=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if method == "first":
        return hidden[:, 0]
    if method == "mean_padded":
        return hidden.mean(1)
    raise ValueError(f"pool() cannot handle {method!r}")


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    summed = torch.einsum("bth,bt->bh", hidden, mask)
    return summed / mask.sum(1, keepdim=True).clamp(min=1.0)
