"""Row splits that keep groups whole: k folds and validation splits for grouped texts.

Texts that share a source (the phrases of one sentence, as in SST-2's training split; the
paragraphs of one document; the messages of one thread) share their words. A split that puts
some of them in the training rows and others in the held-out rows scores the held-out ones too
high: the lexical channel's out-of-fold scores look more reliable than they are, so the head
leans on them; the validation split picks too weak a regularization; cross-validation favours
the lexical recipes. ``LLMEmbedClassifier.fit(texts, labels, groups=...)`` hands the groups to
every split of training (the lexical channel's folds, the head's validation split and C folds,
the recipe selection's and the ensemble's folds), which then keep each group on one side.

:func:`phrase_groups` finds such groups where texts are phrases cut from longer texts.
"""

from __future__ import annotations

import collections
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import DataError

__all__ = ["group_ids", "group_kfold", "group_validation", "phrase_groups"]


def group_ids(groups: Sequence[Any], n: int) -> np.ndarray:
    """The groups as integer ids 0..n_groups-1 [n], in order of first appearance.

    Takes: one hashable group label per text (ints, strings, ...) and the number of texts.
    Raises: DataError when the length differs from ``n``, a label is missing (None, NaN) or
    unhashable, or there is a single group.
    """
    values = list(groups)
    if len(values) != n:
        raise DataError(f"groups: {len(values)} group labels for {n} texts; give one per text")
    codes: dict[Any, int] = {}
    out = np.empty(n, dtype=np.int64)
    for i, g in enumerate(values):
        if g is None or (isinstance(g, float) and g != g):
            raise DataError(f"groups: item {i} is missing; give every text a group label")
        try:
            out[i] = codes.setdefault(g, len(codes))
        except TypeError:
            raise DataError(f"groups: item {i} ({g!r}) is not hashable") from None
    if len(codes) < 2:
        raise DataError("groups: every text is in one group; splits need at least two groups")
    return out


def group_kfold(
    y: np.ndarray, k: int, seed: int, groups: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, held-out rows) of k folds, each group held out in exactly one fold.

    Takes: class indices [n] (stratified: ``StratifiedGroupKFold``, shuffled by ``seed``) or a
    0/1 matrix [n, n_labels] (``GroupKFold`` over the group ids permuted by ``seed``), k, the
    seed and :func:`group_ids`' ids. Raises: DataError with fewer groups than k.
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    n_groups = int(groups.max()) + 1 if len(groups) else 0
    if n_groups < k:
        raise DataError(f"groups: {n_groups} groups cannot fill {k} folds; give more groups")
    rows = np.zeros(len(groups))
    with warnings.catch_warnings():  # a class rarer than k: scikit-learn only warns
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        if np.ndim(y) == 2:
            permuted = np.random.default_rng(seed).permutation(n_groups)[groups]
            return list(GroupKFold(k).split(rows, groups=permuted))
        splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
        return list(splitter.split(rows, y, groups))


def group_validation(
    y: np.ndarray, fraction: float, seed: int, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows), about ``fraction`` of the rows held out in whole
    groups: the first fold of :func:`group_kfold` with ``round(1 / fraction)`` folds."""
    k = max(2, round(1 / fraction))
    tr, va = group_kfold(y, min(k, int(groups.max()) + 1), seed, groups)[0]
    return np.sort(tr), np.sort(va)


def phrase_groups(texts: Sequence[str]) -> np.ndarray:
    """Groups of texts cut from one longer text: each text joins the longest other text that
    contains it (whitespace-trimmed substring) and every text equal to it, transitively; a text
    in no other is its own group.

    For phrase-level training sets such as SST-2's (67,349 phrases of about 6,900 sentences:
    6,885 groups, 3.5 s). Word n-gram lookups keep it near linear: a text is only compared with
    the texts that share its rarest word trigram (bigram or word when shorter).
    Returns: group ids [n] (:func:`group_ids`' form).
    """
    texts = [t.strip() for t in texts]
    words = [t.split() for t in texts]
    index: dict[int, collections.defaultdict[str, list[int]]] = {
        k: collections.defaultdict(list) for k in (1, 2, 3)
    }
    for i, w in enumerate(words):
        for k in (1, 2, 3):
            for j in range(len(w) - k + 1):
                index[k][" ".join(w[j : j + k])].append(i)
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, t in enumerate(texts):  # equal texts are one group
        parent[root(i)] = root(first.setdefault(t, i))

    for i, w in enumerate(words):
        if not w:
            continue
        k = min(3, len(w))
        grams = {" ".join(w[j : j + k]) for j in range(len(w) - k + 1)}
        rarest = min(grams, key=lambda g: len(index[k][g]))
        best = None
        for c in index[k][rarest]:
            longer = len(texts[c]) > len(texts[i]) and texts[i] in texts[c]
            if longer and (best is None or len(texts[c]) > len(texts[best])):
                best = c
        if best is not None:
            parent[root(i)] = root(best)
    roots = [root(i) for i in range(len(texts))]
    codes: dict[int, int] = {}
    return np.array([codes.setdefault(r, len(codes)) for r in roots], dtype=np.int64)
