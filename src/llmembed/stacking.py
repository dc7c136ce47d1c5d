"""Late fusion: each backbone's vectors scored by their own logistic regression, out of fold.

With ``[head] stack = true`` a recipe's backbones do not reach the head as vectors. Each one is
first scored by a logistic regression on its standardized vectors (the linear head of
:func:`llmembed.training.train_head`, C chosen by k-fold cross-validation over the training
rows). The head then fuses those scores, one [n, 1, n_classes] input per backbone, next to the
lexical channel's (which is built the same way, from TF-IDF).

Concatenating two encoders' vectors under one linear head gives every dimension the same
penalty, so the wider or noisier block drowns the sharper one. Scoring each block apart and
letting the head weigh the scores (stacked generalization, Wolpert 1992) kept the better of
two encoders where they disagree across datasets: EmbeddingGemma-300M on sentiment,
all-mpnet-base-v2 on Reuters news (docs/layer-choice.md, "Stacking").

On the training texts the scores are **out of fold**, each row scored by a fit that did not
see it (:attr:`~llmembed.training.TrainResult.oof_logits`), for the reason the lexical channel's
are: in-sample scores would make the head trust them more than they deserve on new texts. The
regressions refitted on every row score new texts. The scores are log-probabilities
(log-softmax of the logits) for single-label targets and the logits of each label's sigmoid
for multi-label ones.

:class:`BackboneScores` is a module: its regressions' weights and standardization buffers are
saved in ``head.safetensors`` beside the head's, under ``stack.``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from .heads import FusionHead, HeadConfig
from .splits import LARGE_ROWS
from .training import TrainConfig, predict_logits, train_head

__all__ = ["LARGE_FOLDS", "LARGE_ROWS", "STACK_FOLDS", "BackboneScores", "PREFIX", "stack_folds"]

# Folds of the out-of-fold scores when the recipe's C_folds is 0: five, or three from
# LARGE_ROWS training rows on. A fold fit misses 1/k of the rows, which on small data makes its
# scores worse than the full fit's (R52, 6,532 texts, 3 folds: 95.61 ± 0.28 on test against
# 95.87 ± 0.11 with 5); on large data it does not (SST-2, 67,349: the same), and there the folds
# are the cost (0.6x the evaluations with 3). docs/layer-choice.md, "The default becomes
# `cpu-stack`".
STACK_FOLDS = 5
LARGE_FOLDS = 3
PREFIX = "stack."  # of the regressions' tensors in head.safetensors
_LINEAR = HeadConfig(fusion="linear")


def stack_folds(n_rows: int) -> int:
    """The folds of the out-of-fold scores of ``n_rows`` training rows: :data:`STACK_FOLDS`, or
    :data:`LARGE_FOLDS` from :data:`LARGE_ROWS` rows on."""
    return LARGE_FOLDS if n_rows >= LARGE_ROWS else STACK_FOLDS


class BackboneScores(nn.Module):
    """One fitted logistic regression per backbone; :meth:`forward` turns each backbone's
    features [n, n_vectors, width] into scores [n, 1, n_classes].

    Takes: the backbones' feature shapes (n_vectors, width), the class (label) count, and
    ``multi_label``: sigmoid logits instead of log-softmax scores.
    """

    def __init__(
        self, shapes: Sequence[tuple[int, int]], n_classes: int, multi_label: bool = False
    ) -> None:
        super().__init__()
        self.heads = nn.ModuleList(FusionHead([s], n_classes, _LINEAR) for s in shapes)
        self.multi_label = multi_label

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """The backbones' feature shapes, in order."""
        return [h.shapes[0] for h in self.heads]

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        scores = logits if self.multi_label else torch.log_softmax(logits, dim=1)
        return scores.float().unsqueeze(1)

    def forward(self, features: Sequence[np.ndarray | torch.Tensor]) -> list[torch.Tensor]:
        """The scores of new texts, one [n, 1, n_classes] tensor per backbone."""
        return [
            self._scores(predict_logits(head, [torch.as_tensor(f, dtype=torch.float32)]))
            for head, f in zip(self.heads, features)
        ]

    @classmethod
    def fit(
        cls,
        features: Sequence[np.ndarray],
        y: np.ndarray,
        n_classes: int,
        config: TrainConfig,
        groups: np.ndarray | None = None,
    ) -> tuple[BackboneScores, list[np.ndarray]]:
        """Fit one regression per backbone on all the rows.

        Takes: the backbones' features (arrays [n, n_vectors, width]), the target (class
        indices, or a 0/1 matrix [n, n_classes] for multi-label), the class count, the recipe's
        training settings (C grid, seed, iterations; ``C_folds`` 0 becomes
        :func:`stack_folds` of the row count) and the texts' group ids, which the folds keep
        whole.
        Returns: the fitted module and the training rows' out-of-fold scores, one float32
        array [n, 1, n_classes] per backbone.
        """
        config = replace(config, C_folds=config.C_folds or stack_folds(len(y)))
        module = cls([tuple(f.shape[1:]) for f in features], n_classes, np.ndim(y) == 2)
        oof = []
        for i, f in enumerate(features):
            result = train_head([f], y, n_classes, _LINEAR, config, progress=False, groups=groups)
            module.heads[i] = result.head
            oof.append(module._scores(torch.as_tensor(result.oof_logits)).numpy())
        return module.eval(), oof
