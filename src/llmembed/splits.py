"""Row splits that keep groups whole: k folds and validation splits for grouped texts.

Texts that share a source (the phrases of one sentence, as in SST-2's training split; the
paragraphs of one document; the messages of one thread) share their words. A split that puts
some of them in the training rows and others in the held-out rows scores the held-out ones too
high: the lexical channel's out-of-fold scores look more reliable than they are, so the head
leans on them; the validation split picks too weak a regularization; cross-validation favours
the lexical recipes. ``LLMEmbedClassifier.fit(texts, labels, groups=...)`` hands the groups to
every split of training (the lexical channel's folds, the head's validation split and C folds,
the recipe selection's and the ensemble's folds), which then keep each group on one side.

:func:`phrase_groups` finds such groups where texts are phrases cut from longer texts, and
:func:`auto_groups` (what ``fit`` does when no groups are given) runs it when a sample of the
texts says they are.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import DataError

__all__ = ["auto_groups", "group_ids", "group_kfold", "group_validation", "phrase_groups"]

# Training rows from which out-of-fold scores (the stack's regressions', the lexical channel's
# SVMs) take fewer folds: there a fold fit that misses 1/k of the rows scores as well as the
# full fit, and the folds are the cost (docs/layer-choice.md, docs/performance.md).
LARGE_ROWS = 20_000
AUTO_MIN_TEXTS = 1000  # fewer training texts: auto_groups does not look
AUTO_SAMPLE = 200  # texts looked up by auto_groups
AUTO_MIN_SHARE = 0.10  # of them inside another text (or copied) for auto_groups to group
AUTO_MAX_CHARS = 200_000_000  # above this many characters auto_groups does not look


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

    Takes: class indices [n] (stratified: scikit-learn's ``StratifiedGroupKFold`` folds, shuffled
    by ``seed``, cut by :func:`_stratified_group_folds`) or a
    0/1 matrix [n, n_labels] (``GroupKFold`` over the group ids permuted by ``seed``), k, the
    seed and :func:`group_ids`' ids. Raises: DataError with fewer groups than k.
    """
    from sklearn.model_selection import GroupKFold

    n_groups = int(groups.max()) + 1 if len(groups) else 0
    if n_groups < k:
        raise DataError(f"groups: {n_groups} groups cannot fill {k} folds; give more groups")
    if np.ndim(y) == 2:
        permuted = np.random.default_rng(seed).permutation(n_groups)[groups]
        return list(GroupKFold(k).split(np.zeros(len(groups)), groups=permuted))
    classes = np.unique(np.asarray(y), return_inverse=True)[1].astype(np.int64)
    fold = _memo_folds(classes.tobytes(), np.asarray(groups, dtype=np.int64).tobytes(), k, seed)
    return [(np.flatnonzero(fold != i), np.flatnonzero(fold == i)) for i in range(k)]


@functools.lru_cache(maxsize=4)
def _memo_folds(classes: bytes, groups: bytes, k: int, seed: int) -> np.ndarray:
    """:func:`_stratified_group_folds` of the class indices and group ids given as int64
    bytes, kept for the next call with the same arguments: one fit cuts the same folds for
    every backbone's head (0.3-0.4 s each on SST-2)."""
    y, g = np.frombuffer(classes, dtype=np.int64), np.frombuffer(groups, dtype=np.int64)
    fold = _stratified_group_folds(y, k, seed, g)
    fold.flags.writeable = False
    return fold


def _stratified_group_folds(y: np.ndarray, k: int, seed: int, groups: np.ndarray) -> np.ndarray:
    """The fold of each row [n]: scikit-learn's ``StratifiedGroupKFold(k, shuffle=True,
    random_state=seed)`` (1.9), the same folds, with its per-fold candidate loop done as one
    numpy reduction. Why: scikit-learn's Python loops took 3.3 s to cut SST-2's validation split
    (67,349 rows, 6,885 groups, 10 folds), a tenth of a warm fit; this takes 0.25-0.3 s.
    Each group, in order of falling spread of its class counts (shuffled first, ties kept in
    that order), goes to the fold that leaves the per-class shares of the folds most even (mean
    over classes of the std over folds), the least filled one among near-ties (``np.isclose``).
    Raises: DataError when every class has fewer rows than k.
    """
    _, y_inv, y_cnt = np.unique(y, return_inverse=True, return_counts=True)
    if np.all(k > y_cnt):
        raise DataError(f"{k} folds need a class with at least {k} texts; use fewer folds")
    _, groups_inv, groups_cnt = np.unique(groups, return_inverse=True, return_counts=True)
    per_group = np.zeros((len(groups_cnt), len(y_cnt)))
    np.add.at(per_group, (groups_inv, y_inv), 1)
    perm = np.arange(len(groups_cnt))
    np.random.RandomState(seed).shuffle(perm)
    per_group = per_group[perm]
    inv_perm = np.empty_like(perm)
    inv_perm[perm] = np.arange(perm.size)
    groups_inv = inv_perm[groups_inv]
    order = np.argsort(-np.std(per_group, axis=1), kind="stable")
    per_fold = np.zeros((k, len(y_cnt)))
    trial = np.empty((k, k, len(y_cnt)))
    eye = np.eye(k, dtype=bool)
    fold_of_group = np.empty(len(groups_cnt), dtype=np.int64)
    for g in order.tolist():
        counts = per_group[g]
        trial[:] = per_fold  # trial[i]: the folds with group g added to fold i
        trial[eye] += counts
        evals = np.std(trial / y_cnt, axis=1).mean(axis=1).tolist()
        filled = per_fold.sum(axis=1).tolist()
        best, best_eval, best_filled = 0, evals[0], filled[0]
        for i in range(1, k):
            e = evals[i]
            tie = abs(e - best_eval) <= 1e-8 + 1e-5 * abs(best_eval)
            if e < best_eval or (tie and filled[i] < best_filled):
                best, best_eval, best_filled = i, e, filled[i]
        per_fold[best] += counts
        fold_of_group[g] = best
    return fold_of_group[groups_inv]


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
    6,885 groups, 1-1.5 s). Word n-gram lookups keep it near linear: a text is only compared
    with the longer texts that hold its rarest word trigram (bigram or word when shorter),
    found by sorting every text's n-gram codes at once.
    Returns: group ids [n] (:func:`group_ids`' form).
    """
    texts = [t.strip() for t in texts]
    n = len(texts)
    words = [t.split() for t in texts]
    n_words = np.fromiter(map(len, words), np.int64, n)
    chars = np.fromiter(map(len, texts), np.int64, n)
    vocab: dict[str, int] = {}
    flat = np.fromiter(
        (vocab.setdefault(w, len(vocab)) for ws in words for w in ws), np.int64, int(n_words.sum())
    )
    owner = np.repeat(np.arange(n), n_words)  # the text of each word
    offset = np.arange(len(flat)) - np.repeat(np.cumsum(n_words) - n_words, n_words)
    order_of = np.minimum(n_words, 3)  # the n-gram order a text is looked up by
    container = np.full(n, -1)
    for k in (1, 2, 3):
        at = np.flatnonzero(offset <= n_words[owner] - k)  # where a k-gram starts
        code = flat[at]
        with np.errstate(over="ignore"):  # past int64 codes wrap: a collision only adds candidates
            for j in range(1, k):
                code = code * (len(vocab) + 1) + flat[at + j]
        own = owner[at]
        by_code = np.lexsort((own, code))
        holders = own[by_code]  # the texts holding each k-gram, grouped by k-gram
        grams, start, count = np.unique(code[by_code], return_index=True, return_counts=True)
        gram = np.searchsorted(grams, code)
        mine = order_of[own] == k
        if not mine.any():
            continue
        g, o = gram[mine], own[mine]
        rarest = np.lexsort((count[g], o))  # per text, its k-grams from the rarest
        o = o[rarest]
        firsts = np.flatnonzero(np.r_[True, o[1:] != o[:-1]])
        for i, u in zip(o[firsts].tolist(), g[rarest][firsts].tolist()):
            candidates = holders[start[u] : start[u] + count[u]]
            best = -1
            for c in candidates[chars[candidates] > chars[i]].tolist():
                if (best < 0 or chars[c] > chars[best]) and texts[i] in texts[c]:
                    best = c
            container[i] = best
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, t in enumerate(texts):  # equal texts are one group
        parent[root(i)] = root(first.setdefault(t, i))
    for i, c in enumerate(container.tolist()):
        if c >= 0:
            parent[root(i)] = root(c)
    roots = [root(i) for i in range(n)]
    codes: dict[int, int] = {}
    return np.array([codes.setdefault(r, len(codes)) for r in roots], dtype=np.int64)


def auto_groups(texts: Sequence[str], seed: int = 0) -> np.ndarray | None:
    """:func:`phrase_groups` of the texts when they look cut from one another, else None.

    Why: a training set of phrases (SST-2's: 99.8% of its texts sit inside another one) leaks
    across every random split; grouping it by hand is easy to forget. Whether it is such a set
    is read from a seeded sample of :data:`AUTO_SAMPLE` texts, each looked up in all the texts
    joined (C-speed substring counts: about 0.3 s for SST-2's 67,349 or R52's 6,532): when at
    least :data:`AUTO_MIN_SHARE` of them occur more than once (inside a longer text, or as a
    copy), the groups are built. Reuters R8 / R52 (2.3-2.5% joined, mostly copies), MR (0.3%)
    and AG News (0%) stay ungrouped. Sets of fewer than :data:`AUTO_MIN_TEXTS` texts are not
    looked at (whole groups would leave a validation split of a few units: give ``groups=``
    there), nor texts of more than :data:`AUTO_MAX_CHARS` characters in all.
    Returns: :func:`phrase_groups`' ids, or None (plain splits).
    """
    stripped = [t.strip() for t in texts]
    if len(stripped) < AUTO_MIN_TEXTS or sum(map(len, stripped)) > AUTO_MAX_CHARS:
        return None
    joined = "\x00".join(stripped)
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(stripped), min(AUTO_SAMPLE, len(stripped)), replace=False)
    found = [joined.count(stripped[i]) > 1 for i in sample if stripped[i]]
    if not found or np.mean(found) < AUTO_MIN_SHARE:
        return None
    groups = phrase_groups(texts)
    return groups if groups.max() >= 1 else None
