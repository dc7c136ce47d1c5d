"""Fold models: a recipe's model fitted on rows of the features, and k of them averaged.

A *member* is what ``fit`` trains on cached neural features: the recipe's lexical channel (when
on) and its head. :func:`fit_member` is the one place where both are fitted, on all the
training rows (a plain ``fit``) or on some of them (a cross-validation fold).

``LLMEmbedClassifier(ensemble=True)`` trains one member per fold of a stratified ``cv``-fold
split (:func:`fit_folds`): each on the texts outside its fold, scored on the fold. Its
``predict_proba`` averages the members' calibrated probabilities, as scikit-learn's
``CalibratedClassifierCV(ensemble=True)`` does. The members differ in the rows they saw, so their
average varies less with the seed than one model on every text, and was more accurate on SST-2,
MR and R8 (``benchmarks/scripts/fold_ensemble.py``, docs/layer-choice.md). The fold scores are
an honest estimate of a member's accuracy: every text is scored once, by a model that never saw
it. Recipe selection (:func:`llmembed.selection.cross_validate`) trains the same members, so the
chosen candidate's become the ensemble without a second training.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .lexical import LexicalChannel, head_config
from .recipes import Recipe
from .stacking import BackboneScores
from .training import TrainResult, predict_logits, train_head

__all__ = ["Member", "fit_folds", "fit_member"]


@dataclass
class Member:
    """One fitted model on a recipe's neural features.

    result: the head's :class:`~llmembed.training.TrainResult` (head, temperature, history,
    thresholds). lexical: the fitted lexical channel, None when the recipe has it off. score:
    accuracy on the held-out fold it was not trained on; None for a member fitted on every row.
    stack: the per-backbone regressions whose scores the head fuses (``head.stack``), or None.
    """

    result: TrainResult
    lexical: LexicalChannel | None = None
    score: float | None = None
    stack: BackboneScores | None = None

    def logits(
        self,
        features: Sequence[np.ndarray],
        texts: Sequence[str],
        timings: dict[str, float] | None = None,
    ) -> torch.Tensor:
        """The head's logits [n, width] for texts whose neural features (one array per
        backbone) are given; the lexical channel, when on, scores the texts (its seconds are
        added to ``timings["lexical"]``)."""
        if self.stack is not None:
            inputs = self.stack(features)
        else:
            inputs = [torch.as_tensor(f) for f in features]
        if self.lexical is not None:
            t0 = time.perf_counter()
            inputs.append(torch.as_tensor(self.lexical.transform(texts)))
            _add(timings, "lexical", t0)
        return predict_logits(self.result.head, inputs)


def _add(timings: dict[str, float] | None, key: str, since: float) -> None:
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - since


def fit_member(
    recipe: Recipe,
    features: Sequence[np.ndarray],
    texts: Sequence[str],
    y: np.ndarray,
    n_classes: int,
    rows: np.ndarray | None = None,
    n_jobs: int = 1,
    progress: bool = False,
    timings: dict[str, float] | None = None,
    groups: np.ndarray | None = None,
) -> Member:
    """Fit the recipe's lexical channel (when on) and head on ``rows`` of the data.

    Takes: the recipe, its backbones' features (arrays [n, n_vectors, width], or FeatureFiles
    when ``rows`` is None), the texts and their target (class indices, or a 0/1 matrix for
    multi-label), the class count, the rows to fit on (None: all), the processes for the
    lexical channel's SVMs, whether to show the head's progress, a dict that gains the
    seconds spent in "stack", "lexical" and "train_head", and the texts' group ids, which the
    lexical channel's and the stack's folds and the head's validation split keep whole
    (:mod:`llmembed.splits`). With ``recipe.head.stack`` the head is trained on the
    backbones' out-of-fold scores (:mod:`llmembed.stacking`), not on their vectors.
    Returns: the :class:`Member` (no score).
    Raises: DataError when the lexical channel keeps no n-gram of the texts.
    """
    if rows is None:
        feats, fit_texts, target = list(features), list(texts), y
    else:
        feats = [f[rows] for f in features]
        fit_texts, target = [texts[i] for i in rows], y[rows]
        groups = None if groups is None else np.unique(groups[rows], return_inverse=True)[1]
    stack = None
    if recipe.head.stack:
        t0 = time.perf_counter()
        stack, feats = BackboneScores.fit(feats, target, n_classes, recipe.train, groups)
        _add(timings, "stack", t0)
    channel = None
    if recipe.lexical.enabled:  # after the backbones: head.mean_of unaffected
        t0 = time.perf_counter()
        channel = LexicalChannel(recipe.lexical)
        feats.append(
            channel.fit_transform(
                fit_texts, target, n_classes, recipe.train.seed, n_jobs, groups=groups
            )
        )
        _add(timings, "lexical", t0)
    t0 = time.perf_counter()
    result = train_head(
        feats,
        target,
        n_classes,
        head_config(recipe.head, len(recipe.backbones), recipe.lexical),  # + lexical's input
        recipe.train,
        device="cpu",
        progress=progress,
        groups=groups,
    )
    _add(timings, "train_head", t0)
    return Member(result, channel, stack=stack)


def fit_folds(
    recipe: Recipe,
    features: Sequence[np.ndarray],
    texts: Sequence[str],
    y: np.ndarray,
    n_classes: int,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    n_jobs: int = 1,
    timings: dict[str, float] | None = None,
    report: bool = False,
    groups: np.ndarray | None = None,
) -> list[Member]:
    """One member per fold of ``splits``, fitted on its training rows and scored (accuracy) on
    its held-out rows.

    Takes: as :func:`fit_member` (single-label class indices ``y``), the folds
    (:func:`llmembed.selection.cv_splits`), and ``report``: print one line per fold to stderr.
    Returns: the members, in fold order, each with its ``score``.
    """
    members = []
    texts = list(texts)
    for i, (fit, held) in enumerate(splits):
        member = fit_member(
            recipe, features, texts, y, n_classes, fit, n_jobs, timings=timings, groups=groups
        )
        logits = member.logits([f[held] for f in features], [texts[j] for j in held])
        member.score = float((logits.argmax(1).numpy() == y[held]).mean())
        members.append(member)
        if report:
            print(
                f"llmembed: {recipe.name} fold {i + 1}/{len(splits)}: held-out accuracy "
                f"{100 * member.score:.2f}",
                file=sys.stderr,
            )
    return members
