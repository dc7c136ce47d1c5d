"""Choosing a recipe by k-fold cross-validation on the training texts.

``LLMEmbedClassifier(recipe="auto")`` (the shipped candidates :data:`AUTO_RECIPES`) or
``recipe=[...]`` (any recipes) scores every candidate by stratified k-fold cross-validation on
the training texts, and only on them: in each fold the candidate's lexical channel (when on) and
head are fitted on the other folds, exactly as ``fit`` would, and scored (accuracy) on the fold.
The best mean wins (the earlier candidate on a tie); ``fit`` then trains it on all the texts.

Why not the early-stopping validation split: an MLP's best-epoch score on that split is biased
upward (the epoch is chosen on it), so it favours MLP heads over linear ones even where the
linear one wins; every text scored once, out of fold, is an unbiased and steadier estimate.
The features come from the embedding cache, so a candidate costs its extraction once (shared
backbones once in all) plus k head fits.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .ensemble import fit_folds
from .errors import ConfigError
from .recipes import Recipe
from .splits import group_kfold

__all__ = ["AUTO_RECIPES", "Selection", "choose", "cross_validate", "cv_splits", "record"]

# recipe="auto": the CPU default, the same without its lexical channel, the same with a second
# encoder (about twice the extraction), and that pair stacked (each encoder scored apart): the
# channel on / off, one backbone or two, one head or two levels. The default first (embed()
# before fit uses it), the dearest last: a select_budget that runs out skips it.
AUTO_RECIPES = ("cpu", "cpu-neural", "cpu-duo", "cpu-stack")


@dataclass
class Selection:
    """The outcome of a recipe selection, as saved with the model (``selection_``).

    folds: the k of the k-fold cross-validation. chosen: the name of the recipe trained.
    candidates: one dict per candidate scored, in the order given: ``recipe`` (its name),
    ``scores`` (accuracy of each fold), ``mean``, ``std`` and ``seconds`` (its
    cross-validation time, extraction included). skipped: the names of the candidates left
    unscored because the selection's time budget was spent.
    """

    folds: int
    chosen: str
    candidates: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored in ``llmembed.json`` as ``selection`` (``skipped`` only
        when some were)."""
        out = {"folds": self.folds, "chosen": self.chosen, "candidates": self.candidates}
        return {**out, "skipped": list(self.skipped)} if self.skipped else out

    @classmethod
    def from_dict(cls, data: Any) -> Selection:
        """Rebuild from :meth:`to_dict`'s output.

        Raises: ConfigError naming what is wrong (a missing or mistyped field, a chosen recipe
        that is not among the candidates).
        """
        keys = {"folds", "chosen", "candidates"}
        if not isinstance(data, dict) or not keys <= set(data) <= keys | {"skipped"}:
            raise ConfigError(
                "expected an object with 'folds', 'chosen', 'candidates' (and 'skipped')"
            )
        skipped = data.get("skipped", [])
        if not isinstance(skipped, list) or not all(isinstance(s, str) for s in skipped):
            raise ConfigError(f"'skipped' must be a list of recipe names, not {skipped!r}")
        folds, chosen, cands = data["folds"], data["chosen"], data["candidates"]
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise ConfigError(f"'folds' must be an integer >= 2, not {folds!r}")
        keys = {"recipe", "scores", "mean", "std", "seconds"}
        if not isinstance(cands, list) or not all(
            isinstance(c, dict)
            and set(c) == keys
            and isinstance(c["recipe"], str)
            and isinstance(c["scores"], list)
            and all(isinstance(v, (int, float)) for v in c["scores"])
            and all(isinstance(c[k], (int, float)) for k in ("mean", "std", "seconds"))
            for c in cands
        ):
            raise ConfigError(
                "'candidates' must be a list of objects with 'recipe' (a name), 'scores' (a "
                "list of numbers), 'mean', 'std' and 'seconds' (numbers)"
            )
        if chosen not in [c["recipe"] for c in cands]:
            raise ConfigError(f"'chosen' ({chosen!r}) is not one of the candidates")
        return cls(folds, chosen, cands, skipped)

    def lines(self) -> list[str]:
        """One line per candidate: name, mean ± std of the fold accuracies, seconds, and a
        mark on the chosen one."""
        return [
            f"{c['recipe']}: {100 * c['mean']:.2f} ± {100 * c['std']:.2f} ({c['seconds']:.0f} s)"
            + ("  <- chosen" if c["recipe"] == self.chosen else "")
            for c in self.candidates
        ] + [f"{name}: skipped (the time budget was spent)" for name in self.skipped]


def cv_splits(
    y: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, held-out rows) of each fold: stratified k-fold, shuffled by ``seed``;
    with ``groups`` (ids, :func:`llmembed.splits.group_ids`), folds of whole groups.

    Raises: ConfigError when ``folds`` is not an integer >= 2 or the texts are fewer than it.
    """
    from sklearn.model_selection import StratifiedKFold

    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(
            f"cv must be an integer >= 2 (folds of the recipe selection), not {folds!r}"
        )
    if len(y) < folds:
        raise ConfigError(f"cv={folds} folds need at least {folds} training texts, got {len(y)}")
    if groups is not None:
        return group_kfold(y, folds, seed, groups)
    with warnings.catch_warnings():  # a class rarer than k: scikit-learn only warns
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(y, y))


def cross_validate(
    recipe: Recipe,
    features: Sequence[np.ndarray],
    texts: Sequence[str],
    y: np.ndarray,
    n_classes: int,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    n_jobs: int = 1,
    groups: np.ndarray | None = None,
) -> list[float]:
    """Accuracy of ``recipe`` on each held-out fold of ``splits``.

    Takes: the recipe (its head, train and lexical settings are used; its backbones gave
    ``features``, one array [n_texts, n_vectors, width] each), the training texts and their
    class indices 0..n_classes-1, the folds (:func:`cv_splits`), and the processes for the
    lexical channel's SVMs, and the group ids that the lexical channel's and the head's own
    splits keep whole (:mod:`llmembed.splits`). Returns: one accuracy per fold (the fold members'
    :attr:`~llmembed.ensemble.Member.score`, :func:`llmembed.ensemble.fit_folds`).
    """
    members = fit_folds(recipe, features, texts, y, n_classes, splits, n_jobs, groups=groups)
    return [m.score for m in members]


def record(recipe: Recipe, scores: list[float], seconds: float) -> dict[str, Any]:
    """A candidate's entry in :attr:`Selection.candidates`."""
    return {
        "recipe": recipe.name,
        "scores": [round(s, 6) for s in scores],
        "mean": round(float(np.mean(scores)), 6),
        "std": round(float(np.std(scores)), 6),
        "seconds": round(seconds, 1),
    }


def choose(folds: int, candidates: list[dict[str, Any]], skipped: Sequence[str] = ()) -> Selection:
    """The :class:`Selection` of the best mean (the earlier candidate on a tie)."""
    best = max(range(len(candidates)), key=lambda i: (candidates[i]["mean"], -i))
    return Selection(folds, candidates[best]["recipe"], candidates, list(skipped))
