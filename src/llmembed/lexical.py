"""The lexical channel: TF-IDF word and character n-grams, scored by a linear SVM, as one more
input of the fusion head.

On topic data such as Reuters (R8 / R52) single words decide many labels, and a sparse linear
model over n-grams is hard to beat. The channel turns it into a dense feature the head fuses with
the frozen backbones' vectors: per text, the decision scores of a ``LinearSVC`` trained on the
hstacked TF-IDF matrices (word n-grams and ``char_wb`` n-grams), one score per class (one in
all for two classes; one binary SVM per label for multi-label targets), as an array
``[n_texts, 1, width]``.

The scores are the head's last input, after every backbone's (so ``mean_of`` indices keep their
meaning), and they always join the MLP's input raw as well (:func:`head_config` adds their index
to ``mean_of``): fused only through the co-occurrence products (or averaged among the projected
layer vectors by ``mean`` / ``max``), a handful of decisive scores are drowned by hundreds of
neural dimensions.

On the training texts the scores are **out of fold** (each text scored by an SVM that did not
see it): in-sample scores are near-perfect margins, and a head trained on them would learn to
trust the channel far more than it deserves on new texts. The final SVM, fitted on all training
texts, scores new ones.

A fitted channel is saved without pickle: :meth:`LexicalChannel.state` gives numeric arrays (the
idf vectors, the SVM's coefficients and intercepts; written as safetensors) and a JSON-able dict
(settings, vocabularies, class count); :meth:`LexicalChannel.from_state` rebuilds it.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .config import Settings, is_int
from .errors import ConfigError, DataError
from .heads import HeadConfig
from .splits import LARGE_ROWS, group_kfold

__all__ = ["ANALYZERS", "LexicalChannel", "LexicalConfig", "head_config", "output_width"]

ANALYZERS = ("word", "char")  # the vectorizers, in their column order in the TF-IDF matrix
_ANALYZER_KIND = {"word": "word", "char": "char_wb"}  # names in TfidfVectorizer's terms
# Training characters from which fit_transform(n_jobs > 1) fits its SVMs in worker processes:
# below, a fit takes less than the workers' start (SST-2's 3.7M characters: 1.5 s a fit).
PARALLEL_CHARS = 1_000_000


def _check_range(name: str, value: Any) -> list[int]:
    """An n-gram range setting: ``[]`` (analyzer off) or ``[lo, hi]`` with 1 <= lo <= hi."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(
            f"lexical {name} must be a list [min_n, max_n] (e.g. [1, 2]) or [] to turn that "
            f"analyzer off, not {value!r}"
        )
    if len(value) == 0:
        return []
    if len(value) != 2 or not all(is_int(v) for v in value) or not 1 <= value[0] <= value[1]:
        raise ConfigError(
            f"lexical {name} must be [min_n, max_n] with integers 1 <= min_n <= max_n (e.g. "
            f"[1, 2]), or [] to turn that analyzer off, not {list(value)!r}"
        )
    return [int(value[0]), int(value[1])]


@dataclass
class LexicalConfig(Settings):
    """The lexical channel's settings (the recipe's optional ``[lexical]`` table).

    enabled: add the channel to the head's inputs (default off: neural features only).
    word_ngrams: ``[min_n, max_n]`` of the word analyzer; ``[]`` turns it off.
    char_ngrams: ``[min_n, max_n]`` of the ``char_wb`` analyzer (character n-grams inside word
        boundaries); ``[]`` turns it off.
    max_features: the most frequent n-grams kept, per analyzer.
    min_df: n-grams in fewer training texts are dropped.
    sublinear_tf: term frequency 1 + log(tf) instead of tf.
    C: the ``LinearSVC``'s inverse regularization strength.
    folds: folds of the out-of-fold scores of the training texts.
    large_folds: the folds instead (when fewer) from :data:`llmembed.splits.LARGE_ROWS`
        training texts on, as the stack's: SST-2 (67,349 texts, cpu-stack, 3 seeds) scored
        92.28 on test with 3 or 5, and 3 cut the channel's fit from ~10.7 to ~7.8 s.

    Raises:
        ConfigError: a value of the wrong type or out of range, or both analyzers off.
    """

    table = "lexical setting"
    quiet_defaults = ("large_folds",)

    enabled: bool = False
    word_ngrams: list[int] = field(default_factory=lambda: [1, 2])
    char_ngrams: list[int] = field(default_factory=lambda: [2, 5])
    max_features: int = 100000
    min_df: int = 2
    sublinear_tf: bool = True
    C: float = 0.5
    folds: int = 5
    large_folds: int = 3

    def __post_init__(self) -> None:
        for name in ("enabled", "sublinear_tf"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"lexical {name} must be true or false, not {getattr(self, name)!r}"
                )
        self.word_ngrams = _check_range("word_ngrams", self.word_ngrams)
        self.char_ngrams = _check_range("char_ngrams", self.char_ngrams)
        if not self.word_ngrams and not self.char_ngrams:
            raise ConfigError(
                "lexical word_ngrams and char_ngrams are both []: give at least one n-gram "
                "range (e.g. word_ngrams = [1, 2])"
            )
        if not is_int(self.max_features) or self.max_features < 1:
            raise ConfigError(
                f"lexical max_features must be a positive integer (n-grams kept per analyzer, "
                f"e.g. 100000), not {self.max_features!r}"
            )
        if not is_int(self.min_df) or self.min_df < 1:
            raise ConfigError(
                f"lexical min_df must be an integer >= 1 (the fewest training texts an n-gram "
                f"must appear in, e.g. 2), not {self.min_df!r}"
            )
        c = self.C
        if (
            isinstance(c, bool)
            or not isinstance(c, (int, float))
            or not (math.isfinite(c) and c > 0)
        ):
            raise ConfigError(f"lexical C must be a positive number (e.g. 0.5), not {c!r}")
        self.C = float(c)
        for name in ("folds", "large_folds"):
            value = getattr(self, name)
            if not is_int(value) or value < 2:
                raise ConfigError(f"lexical {name} must be an integer >= 2 (e.g. 5), not {value!r}")

    @property
    def analyzers(self) -> list[str]:
        """The analyzers turned on, of :data:`ANALYZERS`, in column order."""
        ranges = {"word": self.word_ngrams, "char": self.char_ngrams}
        return [a for a in ANALYZERS if ranges[a]]


def output_width(n_classes: int, multi_label: bool = False) -> int:
    """Width of the channel's output: one score per class, or one in all for two classes (one
    per label, however many, for multi-label targets).

    Takes: the number of classes (>= 2; labels >= 1 for multi-label). Returns: the width.
    """
    return 1 if n_classes == 2 and not multi_label else int(n_classes)


def head_config(head: HeadConfig, n_backbones: int, lexical: LexicalConfig) -> HeadConfig:
    """The head architecture actually built for a recipe: ``head``, plus, when the lexical
    channel is on, its input (index ``n_backbones``) in ``mean_of``, so its scores reach the MLP
    raw (standardized) besides the fusion. The linear head already takes every input raw.

    Takes: the recipe's head settings, its number of backbones and its lexical settings.
    Returns: ``head`` itself when nothing changes, else a copy (``head`` is not modified).
    """
    if not lexical.enabled or head.fusion == "linear" or n_backbones in head.mean_indices:
        return head
    return replace(head, mean_of=[*head.mean_indices, n_backbones])


def _start_workers(n_jobs: int) -> threading.Thread:
    """A started thread that brings up joblib's ``n_jobs`` worker processes (none for 1), so
    that they are ready when :meth:`LexicalChannel._fit_all` needs them: starting them and
    importing scikit-learn takes about 2 s, which would otherwise stall the fits. Join it before
    the fits."""

    def start() -> None:
        from joblib import Parallel, delayed
        from sklearn.svm import LinearSVC

        with contextlib.suppress(Exception):  # the fits themselves report a real failure
            Parallel(n_jobs=n_jobs, backend="loky")(delayed(LinearSVC)() for _ in range(n_jobs))

    thread = threading.Thread(target=start if n_jobs > 1 else lambda: None, daemon=True)
    thread.start()
    return thread


def _char_wb_tfidf(vec: Any, texts: Sequence[str], fit: bool) -> Any:
    """``vec.fit_transform(texts)`` (``fit``) or ``vec.transform(texts)`` for a ``char_wb``
    TfidfVectorizer, the same matrix and vocabulary, several times faster.

    ``char_wb`` n-grams never cross a word boundary, so a text's counts are the sum of its
    words' counts: each distinct word is analyzed once (by ``vec``'s own analyzer) and the
    counts come from one sparse product, texts x words @ words x n-grams, instead of a Python
    dictionary lookup per n-gram of every text (SST-2's 67,349 texts: 9.6M n-gram entries,
    19,000 distinct words). Fitting then prunes and weighs them as scikit-learn does: columns
    in sorted n-gram order, ``min_df``, then the ``max_features`` largest total counts.

    Takes: the vectorizer (fitted unless ``fit``), the texts. Returns: the CSR TF-IDF matrix.
    Raises: ValueError, as scikit-learn's, when fitting keeps no n-gram.
    """
    import scipy.sparse as sp

    analyze = vec.build_analyzer()
    words: dict[str, int] = {}
    token_words: list[int] = []
    ends = np.zeros(len(texts) + 1, dtype=np.int64)
    for i, text in enumerate(texts):
        token_words.extend([words.setdefault(w, len(words)) for w in text.split()])
        ends[i + 1] = len(token_words)
    vocab: dict[str, int] = {} if fit else vec.vocabulary_
    gram_cols: list[int] = []
    word_ends = np.zeros(len(words) + 1, dtype=np.int64)
    for j, word in enumerate(words):
        grams = analyze(word)
        if fit:
            gram_cols.extend([vocab.setdefault(g, len(vocab)) for g in grams])
        else:
            gram_cols.extend([c for c in map(vocab.get, grams) if c is not None])
        word_ends[j + 1] = len(gram_cols)
    if fit and not vocab:
        raise ValueError("empty vocabulary; perhaps the documents only contain stop words")
    text_words = sp.csr_matrix(
        (np.ones(len(token_words)), np.asarray(token_words, dtype=np.int64), ends),
        shape=(len(texts), len(words)),
    )
    word_grams = sp.csr_matrix(
        (np.ones(len(gram_cols)), np.asarray(gram_cols, dtype=np.int64), word_ends),
        shape=(len(words), len(vocab)),
    )
    counts = (text_words @ word_grams).tocsr()
    return _weigh(vec, counts, list(vocab) if fit else None)


def _word_tfidf(vec: Any, texts: Sequence[str], fit: bool) -> Any:
    """``vec.fit_transform(texts)`` (``fit``) or ``vec.transform(texts)`` for a ``word``
    TfidfVectorizer (no stop words), the same matrix and vocabulary, about 3x faster.

    Each text is tokenized once by ``vec``'s own preprocessor and tokenizer and its tokens
    become integer ids; an n-gram is then a code built from the (n-1)-gram's code and the next
    token's id, with numpy, and only the distinct n-grams are joined into strings (scikit-learn
    joins and looks up every n-gram of every text: SST-2's 67,349 texts, 1.1M entries, 2.9 s).
    Tokens hold no space, so the joined strings of distinct n-grams are distinct.

    Takes: the vectorizer (fitted unless ``fit``), the texts. Returns: the CSR TF-IDF matrix.
    Raises: ValueError, as scikit-learn's, when fitting keeps no n-gram.
    """
    import scipy.sparse as sp

    preprocess, tokenize = vec.build_preprocessor(), vec.build_tokenizer()
    lo, hi = vec.ngram_range
    words: dict[str, int] = {}
    token_ids: list[int] = []
    ends = np.zeros(len(texts) + 1, dtype=np.int64)
    for i, text in enumerate(texts):
        token_ids.extend([words.setdefault(t, len(words)) for t in tokenize(preprocess(text))])
        ends[i + 1] = len(token_ids)
    ids = np.asarray(token_ids, dtype=np.int64)
    doc = np.repeat(np.arange(len(texts)), np.diff(ends))
    names = list(words)
    vocab: dict[str, int] = {} if fit else vec.vocabulary_
    terms: list[str] = []
    rows, cols, firsts = [], [], []
    code = ids  # of the n-gram starting at each token (-1: it would run past its text)
    for n in range(1, hi + 1):
        if len(ids) < n:
            break
        if n == 1:
            at, key = np.arange(len(ids)), ids
        else:  # the (n-1)-gram at i followed by token i+n-1 of the same text
            at = np.flatnonzero(doc[n - 1 :] == doc[: len(ids) - n + 1])
            key = code[at] * len(words) + ids[at + n - 1]
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        code = np.full(len(ids) - n + 1, -1, dtype=np.int64)
        code[at] = inverse
        if n < lo:
            continue
        grams = [" ".join([names[t] for t in token_ids[p : p + n]]) for p in at[first].tolist()]
        if fit:
            col_of = np.arange(len(terms), len(terms) + len(grams))
            terms += grams
            firsts.append(np.stack([doc[at[first]], np.full(len(first), n), at[first]]))
        else:
            col_of = np.array([vocab.get(g, -1) for g in grams], dtype=np.int64)
        col = col_of[inverse]
        keep = col >= 0
        rows.append(doc[at[keep]])
        cols.append(col[keep])
    if fit and not terms:
        raise ValueError("empty vocabulary; perhaps the documents only contain stop words")
    width = len(terms) if fit else len(vocab)
    row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    if fit:  # columns in scikit-learn's order of first appearance (text, n, position): rows
        # then list their n-grams in its order, and sums over a row add up in its order
        order = np.lexsort(np.concatenate(firsts, axis=1)[::-1])
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        col, terms = rank[col], [terms[j] for j in order]
    counts = sp.csr_matrix(
        (np.ones(len(row)), (row, col)), shape=(len(texts), width), dtype=np.float64
    )
    return _weigh(vec, counts, terms if fit else None)


def _weigh(vec: Any, counts: Any, terms: list[str] | None) -> Any:
    """The TF-IDF matrix of a count matrix [texts, n-grams] as ``vec`` would make it.

    Fitting (``terms``: column -> n-gram, the columns in any order) takes scikit-learn's steps
    in its order (CountVectorizer._sort_features, then _limit_features: ``min_df``, then the
    ``max_features`` largest total counts) and sets ``vec.vocabulary_`` and ``vec.idf_``;
    without ``terms`` the columns are ``vec``'s vocabulary and its idf weighs them.
    Raises: ValueError, as scikit-learn's, when fitting keeps no n-gram.
    """
    from sklearn.feature_extraction.text import TfidfTransformer

    counts.sort_indices()
    tfidf = TfidfTransformer(
        norm=vec.norm, use_idf=vec.use_idf, smooth_idf=vec.smooth_idf, sublinear_tf=vec.sublinear_tf
    )
    if terms is not None:
        order = sorted(range(len(terms)), key=terms.__getitem__)
        new_col = np.empty(len(terms), dtype=counts.indices.dtype)
        new_col[order] = np.arange(len(terms))
        counts.indices = new_col.take(counts.indices)
        keep = np.bincount(counts.indices, minlength=len(terms)) >= vec.min_df
        if vec.max_features is not None and keep.sum() > vec.max_features:
            totals = np.asarray(counts.sum(axis=0)).ravel()
            top = np.flatnonzero(keep)[(-totals[keep]).argsort()[: vec.max_features]]
            keep = np.zeros_like(keep)
            keep[top] = True
        if not keep.any():
            raise ValueError("After pruning, no terms remain. Try a lower min_df.")
        kept = np.flatnonzero(keep)
        counts = counts[:, kept]
        vec.vocabulary_ = {terms[order[c]]: i for i, c in enumerate(kept)}
        tfidf.fit(counts)
        vec.idf_ = tfidf.idf_
    else:
        tfidf.idf_ = vec.idf_
    return tfidf.transform(counts)


class LexicalChannel:
    """TF-IDF n-grams + LinearSVC scores, as a feature array ``[n_texts, 1, width]``.

    Built unfitted from a :class:`LexicalConfig`; :meth:`fit_transform` fits it, or
    :meth:`from_state` rebuilds a fitted one. ``transform`` is read-only (thread-safe).
    """

    def __init__(self, config: LexicalConfig | None = None) -> None:
        self.config = config or LexicalConfig()
        self.vectorizers: dict[str, Any] = {}
        self.coef: np.ndarray | None = None  # [width, n_features] float32
        self.intercept: np.ndarray | None = None  # [width] float32
        self.n_classes: int | None = None
        self.multi_label = False

    # -- building blocks -----------------------------------------------------------------------
    def _vectorizer(self, analyzer: str) -> Any:
        """An unfitted TfidfVectorizer for one analyzer, with this channel's settings."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        cfg = self.config
        ngrams = cfg.word_ngrams if analyzer == "word" else cfg.char_ngrams
        return TfidfVectorizer(
            analyzer=_ANALYZER_KIND[analyzer],
            ngram_range=(ngrams[0], ngrams[1]),
            lowercase=True,
            max_features=cfg.max_features,
            min_df=cfg.min_df,
            sublinear_tf=cfg.sublinear_tf,
            dtype=np.float64,
        )

    def _matrix(self, texts: Sequence[str]) -> Any:
        """The hstacked sparse TF-IDF matrix [n, n_features] of texts (fitted vectorizers)."""
        import scipy.sparse as sp

        return sp.hstack(
            [self._tfidf(a, texts, fit=False) for a in self.config.analyzers], format="csr"
        )

    def _tfidf(self, analyzer: str, texts: Sequence[str], fit: bool) -> Any:
        """One analyzer's TF-IDF matrix of texts: its vectorizer's ``fit_transform`` (``fit``)
        or ``transform``, by :func:`_char_wb_tfidf` for the ``char_wb`` analyzer."""
        vec = self.vectorizers[analyzer]
        fast = _char_wb_tfidf if _ANALYZER_KIND[analyzer] == "char_wb" else _word_tfidf
        return fast(vec, texts, fit)

    def _svm(self, seed: int) -> Any:
        from sklearn.svm import LinearSVC

        return LinearSVC(C=self.config.C, dual="auto", random_state=seed)

    @staticmethod
    def _scores(x: Any, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
        """Decision scores [n, width] of a linear model: x @ coef.T + intercept, float32."""
        return np.asarray(x @ coef.T, dtype=np.float32) + intercept

    def _unfitted(self, y_rows: np.ndarray, seed: int) -> tuple[Any, np.ndarray | None]:
        """(the unfitted scikit-learn estimator for these rows' labels, its target), or (None,
        None) when there is nothing to fit (one class only; multi-label: no label both present
        and absent). Multi-label: one binary SVM per label column that varies, as a
        ``OneVsRestClassifier`` when there are several."""
        if not self.multi_label:
            return (self._svm(seed), y_rows) if len(np.unique(y_rows)) > 1 else (None, None)
        varying = np.flatnonzero(y_rows.min(axis=0) != y_rows.max(axis=0))
        if len(varying) == 0:
            return None, None
        if len(varying) == 1:
            return self._svm(seed), y_rows[:, varying[0]]
        from sklearn.multiclass import OneVsRestClassifier

        return OneVsRestClassifier(self._svm(seed)), y_rows[:, varying]

    def _weights(self, y_rows: np.ndarray, fitted: Any, n_features: int) -> tuple[Any, Any]:
        """(coef [width, n_features], intercept [width]) in the global class columns, from the
        estimator :meth:`_unfitted` gave for these rows' labels, fitted (None: nothing fitted).

        A class missing from the rows scores -1 (the SVM's "not this class" margin) whatever the
        text; rows of one class only score it +1 and the others -1 (multi-label: a label all
        rows have scores +1, one none has -1).
        """
        width = y_rows.shape[1] if self.multi_label else output_width(self.n_classes or 2)
        coef = np.zeros((width, n_features), dtype=np.float32)
        intercept = np.full(width, -1.0, dtype=np.float32)
        if self.multi_label:
            varying = y_rows.min(axis=0) != y_rows.max(axis=0)
            intercept[~varying & (y_rows[0] == 1)] = 1.0
            svms = getattr(fitted, "estimators_", [fitted] if fitted is not None else [])
            for j, svm in zip(np.flatnonzero(varying), svms):
                coef[j], intercept[j] = svm.coef_[0], svm.intercept_[0]
            return coef, intercept
        present = np.unique(y_rows)
        if fitted is None:  # every text looks like the one class seen
            if width == 1:
                intercept[0] = 1.0 if present[0] == 1 else -1.0
            else:
                intercept[present[0]] = 1.0
        elif width == 1 or len(present) == width:
            coef, intercept = fitted.coef_.astype(np.float32), fitted.intercept_.astype(np.float32)
        elif len(present) == 2:  # one row: positive for present[1], negative for present[0]
            coef[present[1]], intercept[present[1]] = fitted.coef_[0], fitted.intercept_[0]
            coef[present[0]], intercept[present[0]] = -fitted.coef_[0], -fitted.intercept_[0]
        else:
            coef[present], intercept[present] = fitted.coef_, fitted.intercept_
        return coef, intercept

    def _fit_all(
        self, x: Any, y: np.ndarray, fits: list[np.ndarray], seed: int, n_jobs: int
    ) -> list[tuple[Any, Any]]:
        """(coef, intercept) of :meth:`_weights` for each set of training rows in ``fits``.

        With ``n_jobs`` > 1 the fits run in that many worker processes (joblib's loky):
        liblinear draws from one process-wide random state, so fits run in threads side by side
        give different results from run to run, while each process seeds its own at every fit
        (the same result as one after another, exactly).
        """
        jobs = [(rows, *self._unfitted(y[rows], seed)) for rows in fits]
        todo = [(rows, est, target) for rows, est, target in jobs if est is not None]
        if n_jobs > 1 and len(todo) > 1:
            from joblib import Parallel, delayed

            done = iter(
                Parallel(n_jobs=min(n_jobs, len(todo)), backend="loky")(  # never threads
                    delayed(est.fit)(x[rows], target) for rows, est, target in todo
                )
            )
        else:
            done = iter(est.fit(x[rows], target) for rows, est, target in todo)
        return [
            self._weights(y[rows], None if est is None else next(done), x.shape[1])
            for rows, est, _ in jobs
        ]

    # -- fitting and scoring -------------------------------------------------------------------
    def fit_transform(
        self,
        texts: Sequence[str],
        y_idx: np.ndarray,
        n_classes: int,
        seed: int = 0,
        n_jobs: int = 1,
        groups: np.ndarray | None = None,
    ) -> np.ndarray:
        """Fit on the training texts; returns their out-of-fold scores, float32 [n, 1, width].

        Takes: the training texts, their labels as integers 0..n_classes-1 (or, multi-label, a
        0/1 matrix [n, n_classes]: plain k-fold splits then), the number of classes (>= 2), and
        the seed of the fold split and the SVM (same seed, same output), and the processes
        that fit the SVMs side by side (used from :data:`PARALLEL_CHARS` training characters
        on; the output does not depend on it).
        The vectorizers are fitted on all the texts; ``folds`` folds (``large_folds`` from
        :data:`~llmembed.splits.LARGE_ROWS` texts on), stratified
        (``StratifiedKFold``, which spreads a class rarer than ``folds`` over as many folds
        as it has texts), or plain shuffled ``KFold`` when every class is rarer than ``folds``
        (never more folds than texts). With ``groups`` (ids [n],
        :func:`llmembed.splits.group_ids`), folds of whole groups instead
        (:func:`llmembed.splits.group_kfold`), so a text's score never comes from an SVM that
        saw a text of its group. The final SVM is then fitted on all the texts.
        Raises: DataError when the settings leave no n-gram (too few texts for ``min_df``).
        """
        import scipy.sparse as sp
        from sklearn.model_selection import KFold, StratifiedKFold

        texts = list(texts)
        multi = np.ndim(y_idx) == 2
        y = np.asarray(y_idx, dtype=np.int64)
        if multi and (
            len(y) != len(texts) or y.shape[1] != n_classes or not np.isin(y, (0, 1)).all()
        ):
            raise ConfigError(
                f"lexical channel: expected a 0/1 matrix of {len(texts)} rows and {n_classes} "
                f"columns, got shape {list(y.shape)}"
            )
        if not multi and (
            n_classes < 2
            or len(y) != len(texts)
            or (len(y) and not 0 <= y.min() <= y.max() < n_classes)
        ):
            raise ConfigError(
                f"lexical channel: expected one label in 0..{n_classes - 1} per text and at "
                f"least 2 classes, got {len(y)} labels for {len(texts)} texts"
            )
        self.n_classes = int(n_classes)
        self.multi_label = multi
        self.vectorizers, blocks = {}, []
        n_jobs = n_jobs if sum(map(len, texts)) >= PARALLEL_CHARS else 1
        workers = _start_workers(n_jobs)  # they start while the texts are vectorized
        for analyzer in self.config.analyzers:
            self.vectorizers[analyzer] = self._vectorizer(analyzer)
            try:
                blocks.append(self._tfidf(analyzer, texts, fit=True))  # fitted and applied once
            except ValueError as e:  # "After pruning, no terms remain", "empty vocabulary", ...
                raise DataError(
                    " ".join(
                        f"lexical channel: the {analyzer} analyzer keeps no n-gram of the "
                        f"{len(texts)} training texts ({e}); lower [lexical] min_df (now "
                        f"{self.config.min_df}) or turn that analyzer off with "
                        f"{analyzer}_ngrams = []".split()
                    )
                ) from None
        x = sp.hstack(blocks, format="csr")
        folds = self.config.folds
        if len(texts) >= LARGE_ROWS:
            folds = min(folds, self.config.large_folds)
        folds = min(folds, len(texts))
        oof = np.zeros((len(texts), output_width(n_classes, multi)), dtype=np.float32)
        if groups is not None:
            splits = group_kfold(y, min(folds, int(groups.max()) + 1), seed, groups)
        else:
            # rare classes (R52's) only make scikit-learn warn
            if not multi and np.bincount(y, minlength=n_classes).max() >= folds:
                splitter: Any = StratifiedKFold(folds, shuffle=True, random_state=seed)
            else:
                splitter = KFold(folds, shuffle=True, random_state=seed)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "The least populated class", UserWarning)
                splits = list(splitter.split(np.zeros(len(y)), None if multi else y))
        workers.join()
        *folds, (coef, intercept) = self._fit_all(
            x, y, [train for train, _ in splits] + [np.arange(len(y))], seed, n_jobs
        )
        for (_, test), weights in zip(splits, folds):
            oof[test] = self._scores(x[test], *weights)
        self.coef = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept = np.ascontiguousarray(intercept, dtype=np.float32)
        return oof[:, None, :]

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """Scores of the final SVM, float32 [n, 1, width].

        Raises: ConfigError when the channel is not fitted (neither fit_transform nor
        from_state).
        """
        if self.coef is None or self.intercept is None:
            raise ConfigError("lexical channel: not fitted; call fit_transform() first")
        return self._scores(self._matrix(list(texts)), self.coef, self.intercept)[:, None, :]

    @property
    def shape(self) -> tuple[int, int]:
        """The head's input shape for this channel: (1, width). Raises ConfigError unfitted."""
        if self.n_classes is None:
            raise ConfigError("lexical channel: not fitted; call fit_transform() first")
        return (1, output_width(self.n_classes, self.multi_label))

    # -- saving without pickle -----------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The fitted channel as (arrays, JSON-able dict), for :meth:`from_state`.

        Returns: arrays ``<analyzer>.idf`` (float64, per analyzer), ``svm.coef`` (float32
        [width, n_features]) and ``svm.intercept`` (float32 [width]); and ``config`` (the
        settings), ``n_classes`` and ``vocabularies`` (per analyzer: n-gram -> column), and
        ``multi_label: true`` for a multi-label channel (absent otherwise).
        Raises: ConfigError when the channel is not fitted.
        """
        if self.coef is None or self.intercept is None or self.n_classes is None:
            raise ConfigError("lexical channel: not fitted; nothing to save")
        arrays = {
            f"{a}.idf": np.ascontiguousarray(self.vectorizers[a].idf_, dtype=np.float64)
            for a in self.config.analyzers
        }
        arrays["svm.coef"] = self.coef
        arrays["svm.intercept"] = self.intercept
        vocabularies = {
            a: {str(term): int(i) for term, i in sorted(self.vectorizers[a].vocabulary_.items())}
            for a in self.config.analyzers
        }
        meta = {
            "config": self.config.to_dict(),
            "n_classes": self.n_classes,
            "vocabularies": vocabularies,
        }
        if self.multi_label:
            meta["multi_label"] = True
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> LexicalChannel:
        """Rebuild a fitted channel from :meth:`state`'s output (its transform is identical).

        Takes: the arrays and the JSON-able dict. Returns: the channel.
        Raises: ConfigError naming what is wrong: bad settings, a missing or extra array or
        vocabulary, a vocabulary that is not a term -> column map over 0..size-1, or an array
        whose shape, dtype or values (non-finite) do not fit the vocabularies and class count.
        """
        fields = {"config", "n_classes", "vocabularies"}
        if not isinstance(meta, dict) or set(meta) - {"multi_label"} != fields:
            raise ConfigError(
                "lexical state: expected an object with the fields 'config', 'n_classes' and "
                "'vocabularies' (and 'multi_label')"
            )
        multi = meta.get("multi_label", False)
        if not isinstance(multi, bool):
            raise ConfigError(f"lexical state: multi_label must be true or false, not {multi!r}")
        if not isinstance(meta["config"], dict):
            raise ConfigError("lexical state: 'config' is not an object")
        config = LexicalConfig.from_dict(meta["config"])
        n_classes = meta["n_classes"]
        if not is_int(n_classes) or n_classes < (1 if multi else 2):
            raise ConfigError(
                f"lexical state: n_classes must be an integer >= {1 if multi else 2}, not "
                f"{n_classes!r}"
            )
        vocabularies = meta["vocabularies"]
        analyzers = config.analyzers
        if not isinstance(vocabularies, dict) or sorted(vocabularies) != sorted(analyzers):
            raise ConfigError(
                f"lexical state: expected vocabularies for the analyzers {analyzers}, got "
                f"{sorted(vocabularies) if isinstance(vocabularies, dict) else vocabularies!r}"
            )
        expected = {*(f"{a}.idf" for a in analyzers), "svm.coef", "svm.intercept"}
        if not isinstance(arrays, dict) or set(arrays) != expected:
            got = sorted(arrays) if isinstance(arrays, dict) else arrays
            raise ConfigError(f"lexical state: expected the arrays {sorted(expected)}, got {got}")
        for name, array in arrays.items():
            if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
                raise ConfigError(f"lexical state: array '{name}' is not a floating-point array")
            if not np.isfinite(array).all():
                raise ConfigError(f"lexical state: array '{name}' holds non-finite values")
        channel = cls(config)
        channel.n_classes = n_classes
        channel.multi_label = multi
        total = 0
        for a in analyzers:
            vocab = vocabularies[a]
            if not isinstance(vocab, dict) or not all(
                isinstance(t, str) and is_int(i) for t, i in vocab.items()
            ):
                raise ConfigError(f"lexical state: vocabulary '{a}' is not an n-gram -> column map")
            if sorted(vocab.values()) != list(range(len(vocab))) or not vocab:
                raise ConfigError(
                    f"lexical state: vocabulary '{a}' columns are not 0..{len(vocab) - 1}, "
                    "each once"
                )
            idf = arrays[f"{a}.idf"]
            if idf.shape != (len(vocab),):
                raise ConfigError(
                    f"lexical state: array '{a}.idf' has shape {list(idf.shape)}, but vocabulary "
                    f"'{a}' has {len(vocab)} n-grams"
                )
            vec = channel._vectorizer(a)
            vec.vocabulary_ = dict(vocab)
            vec.idf_ = np.asarray(idf, dtype=np.float64)  # the setter builds the TfidfTransformer
            channel.vectorizers[a] = vec
            total += len(vocab)
        width = output_width(n_classes, multi)
        coef, intercept = arrays["svm.coef"], arrays["svm.intercept"]
        if coef.shape != (width, total) or intercept.shape != (width,):
            raise ConfigError(
                f"lexical state: svm.coef / svm.intercept have shapes {list(coef.shape)} / "
                f"{list(intercept.shape)}, but {n_classes} classes and {total} n-grams give "
                f"{[width, total]} / {[width]}"
            )
        channel.coef = np.ascontiguousarray(coef, dtype=np.float32)
        channel.intercept = np.ascontiguousarray(intercept, dtype=np.float32)
        return channel
