"""LLMEmbedClassifier: the public estimator, a scikit-learn classifier on raw texts.

fit(texts, labels) extracts (cached) embeddings from the frozen backbones and trains the fusion
head, with the TF-IDF lexical channel as one more input when the recipe's ``[lexical]`` table
enables it (``ensemble=True``: one such model per cross-validation fold, their probabilities
averaged, :mod:`llmembed.ensemble`); predict / predict_proba / score work on raw texts.
save_pretrained(dir) (alias save) writes the head as safetensors, everything else as JSON with
every backbone pinned, and a model card (format: :mod:`llmembed.modelcard`);
from_pretrained(dir or hub repo id) (alias load) checks the pins and rebuilds it on any device.
It follows scikit-learn's estimator contract (get_params / set_params / clone, fitted attributes
set only by fit and load), so it works in GridSearchCV, cross_val_score and as the last step of a
Pipeline. Multi-label targets (one label set per text, or an indicator matrix) train one sigmoid
per label (:mod:`llmembed.multilabel`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sklearn.exceptions
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import accuracy_score

from . import modelcard
from .backbones import Backbone, BackboneSpec
from .cache import EmbeddingCache, FeatureFile
from .config import DEFAULT_RECIPE
from .ensemble import Member, fit_folds, fit_member
from .errors import ConfigError, DataError, LLMEmbedError
from .hardware import available_memory, torch_threads
from .heads import HeadConfig
from .io import validate_labels, validate_texts
from .lexical import LexicalChannel, LexicalConfig
from .metrics import calibration_metrics, classification_metrics, multilabel_metrics
from .modelcard import CONFIG_NAME, WEIGHTS_NAME  # noqa: F401  (their old home)
from .multilabel import MultiLabel, binarize, decide, is_label_sets, label_sets, read_target
from .recipes import Recipe, load_recipe
from .selection import choose, cv_splits, record
from .splits import auto_groups, group_ids
from .stacking import PREFIX as STACK_PREFIX
from .training import TrainConfig, TrainResult

if TYPE_CHECKING:
    from sklearn.utils import Tags

    from .selection import Selection

__all__ = ["LLMEmbedClassifier", "NotFittedError"]

NOT_FITTED_MESSAGE = "This classifier is not fitted yet: call fit() or load() first"
IN_MEMORY_SHARE = 4  # out_of_core="auto": in memory while features <= available / this
PREDICT_CHUNK = 65_536  # texts per extraction in predict_proba (memory stays bounded)


class NotFittedError(LLMEmbedError, sklearn.exceptions.NotFittedError):
    """Raised by predict, predict_proba, score, evaluate and save before fit() or load().

    Both an :class:`~llmembed.errors.LLMEmbedError` and scikit-learn's ``NotFittedError``, so
    ``except LLMEmbedError`` and scikit-learn's own checks both catch it.
    """


def _with_threads(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run an estimator method under ``torch_threads(self.threads)``."""

    @functools.wraps(method)
    def wrapper(self: LLMEmbedClassifier, *args: Any, **kwargs: Any) -> Any:
        with torch_threads(self.threads):
            return method(self, *args, **kwargs)

    return wrapper


def _settings(value: Any, what: str) -> dict[str, Any]:
    """A head / train / lexical parameter as a plain dict of settings (``head__<setting>``)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, (HeadConfig, TrainConfig, LexicalConfig)):
        return value.to_dict()
    raise ValueError(
        f"cannot set {what}__<setting>: {what} is {value!r}, not a dict, a config or None"
    )


class LLMEmbedClassifier(ClassifierMixin, BaseEstimator):
    """Text classifier on frozen multi-layer LLM + encoder embeddings (LLMEmbed, ACL 2024).

    A scikit-learn classifier whose input ``X`` is a sequence of raw texts (list, tuple, numpy
    array or pandas Series of ``str``) and whose labels ``y`` are all strings, all numbers or all
    booleans; predictions come back of the same kind. Only the small fusion head is trained.
    Multi-label: ``y`` holds one label set per text (a list / tuple / set of labels, empty for
    none) or is a 0/1 indicator matrix; ``predict`` then answers in the same form.

    Parameters
    ----------
    recipe : str, path, Recipe or list of them, default="cpu-stack"
        A shipped recipe name (:data:`llmembed.config.DEFAULT_RECIPE` "cpu-stack", "cpu",
        "cpu-fast", "paper", ...: :func:`llmembed.available_recipes`), a path to a ``.toml``
        recipe, or a ``Recipe``.
        Several (a list), or "auto" (:data:`llmembed.selection.AUTO_RECIPES`: "cpu", the same
        without its lexical channel, with a second encoder, and that pair stacked): ``fit``
        scores each by ``cv``-fold cross-validation on the training texts and trains the best
        (:mod:`llmembed.selection`; single-label targets, features in memory).
    backbones : list of BackboneSpec, dict or str, optional
        Replace the recipe's backbones (a str is a model name with default settings).
    head : HeadConfig or dict, optional
        A HeadConfig replaces the recipe's head; a dict overrides some of its settings, e.g.
        ``{"fusion": "mean"}``. ``set_params(head__fusion="mean")`` changes one setting.
    train : TrainConfig or dict, optional
        Like ``head``, for the training settings (``{"max_epochs": 50}``, ``train__lr=1e-3``).
    lexical : LexicalConfig or dict, optional
        Like ``head``, for the lexical channel (TF-IDF word / char n-grams scored by a linear
        SVM, fused with the neural features): ``{"enabled": True}`` turns it on,
        ``lexical__C=1.0`` changes one setting. Default: the recipe's ``[lexical]`` (off).
    cache_dir : str or path, optional
        Embedding cache folder (default: ``LLMEMBED_CACHE`` or ``~/.cache/llmembed/embeddings``).
    use_cache : bool or "read-only", default=True
        Read and write the embedding cache; False extracts every time; "read-only" reads
        cached embeddings and computes the others without writing anything (a server's
        request path).
    device : str, default="auto"
        Where the frozen backbones run: "auto" (CUDA when present), "cpu", "cuda", "cuda:1".
    verbose : bool, default=True
        Progress bars for extraction and training.
    threads : int, optional
        torch threads for fit / predict / embed (the previous count is restored after). None:
        ``LLMEMBED_THREADS`` if set, else the usable cores minus those other processes keep
        busy (:func:`llmembed.hardware.default_threads`).
    multi_label : bool or "auto", default="auto"
        "auto": multi-label when ``y`` holds label sets or is an indicator matrix. True: also
        one label per text is read as one-element label sets (a model that may answer with
        none or several); False: refuse label sets.
    out_of_core : bool or "auto", default="auto"
        Stream the training features from disk instead of holding them in memory, for
        training sets whose embeddings do not fit: ``fit`` writes them to a temporary file
        in the cache folder (deleted after), and the head reads them back in blocks.
        "auto": when one backbone's features would take more than a quarter of the memory
        available (:func:`llmembed.hardware.available_memory`, divided among the backbones:
        training in memory peaks near 3x the features, with the copies it standardizes);
        True: always; False: never. Needs ``use_cache=True`` ("auto" stays in memory
        otherwise). Streamed training shuffles by blocks: the same model up to SGD noise (the
        linear head up to rounding).
    cv : int, default=5
        Folds of the cross-validation that chooses among several recipes, and of the
        ensemble (``ensemble=True``); unused otherwise.
    select_budget : float, optional
        Seconds the recipe selection may take: candidates are scored in order while it lasts
        (checked between candidates; the first is always scored), the rest are skipped and
        listed in ``selection_.skipped``. None: no limit.
    ensemble : bool, default=False
        Train ``cv`` fold models instead of one: each on the training texts outside one
        stratified fold, scored on that fold; ``predict_proba`` averages their probabilities
        (:mod:`llmembed.ensemble`). Costs ``cv`` times the head and lexical-channel training
        (not the extraction); with several recipes, the chosen one's cross-validation models
        are kept, so it costs nothing more. Single-label targets, features in memory.

    Parameters are stored as given and checked by ``fit``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The sorted training labels (multi-label indicator matrices: the column labels);
        ``predict_proba`` columns follow this order.
    multi_label_ : bool
        Whether the model is multi-label: ``predict_proba`` then gives one independent
        probability per label (sigmoid) and ``predict`` a label set per text.
    thresholds_ : ndarray of shape (n_classes,) or None
        Multi-label: the per-label decision thresholds, tuned on the held-out rows (F1 per
        label where it has enough held-out positives, else the best global threshold); None
        for a single-label model.
    recipe_ : Recipe
        The recipe the model was trained with (parameters applied).
    selection_ : Selection or None
        With several recipes: every candidate's fold accuracies and the one chosen
        (:class:`llmembed.selection.Selection`, saved with the model); None with one recipe.
    fold_scores_ : ndarray of shape (cv,) or None
        ``ensemble=True``: each fold model's accuracy on its held-out fold (saved with the
        model); None for a single model.
    n_groups_ : int or None
        How many groups of texts the training splits kept whole (fit's ``groups``, or the
        phrase groups ``groups="auto"`` found); None: plain splits (and after ``load``).
    head_ : FusionHead
        The trained head (a torch module, on CPU, in eval mode); of an ensemble, the first
        fold model's (``history_``, ``best_epoch_``, ``val_metrics_`` likewise).
    history_ : list of dict
        Per-epoch training loss and validation metrics (empty after ``load``).
    best_epoch_ : int
        The epoch whose weights were kept (early stopping on the validation split).
    val_metrics_ : dict or None
        Validation metrics of the best epoch (None without a validation split).
    temperature_ : float
        Softmax temperature fitted on the held-out logits (``train.calibrate``; 1.0 without
        held-out rows): ``predict_proba`` is ``softmax(logits / temperature_)``, so its
        probabilities are calibrated and its argmax (the predictions) unchanged. Always 1.0
        for a multi-label model (its thresholds are tuned instead), and for an ensemble (each
        fold model's own temperature applies before the average).
    timings_ : dict of str to float
        Seconds per stage of ``fit`` ("groups" when ``groups="auto"`` looked for phrases,
        "embed:<model>", "lexical" when the channel is on,
        "train_head", "select" with several recipes; an ensemble's "lexical" and "train_head"
        sum its fold models, which with several recipes are trained inside "select"); later
        ``predict`` / ``evaluate`` calls update the "embed:<model>" and "lexical" entries with
        their own extraction / scoring time.
    backbones_ : list of Backbone
        The frozen backbones of ``recipe_`` (read-only; built on first use, never pickled).
    lexical_ : LexicalChannel or None
        The fitted lexical channel (read-only); None when the recipe's lexical channel is off.
        Its scores are the head's last input, and join the MLP's input raw too (``head_.config``
        has their index in ``mean_of``; ``recipe_.head`` is left as given).

    Raises
    ------
    LLMEmbedError
        ``fit``: invalid texts (not strings, empty or blank), invalid labels (missing, mixed
        kinds, a length that differs from the texts, a single class), or an invalid recipe or
        parameter. ``predict`` / ``predict_proba`` / ``score`` / ``evaluate`` / ``embed``:
        invalid texts; ``score`` / ``evaluate`` also invalid labels. ``from_pretrained`` /
        ``load``: a folder that is not a valid saved model (one ``ModelLoadError`` line naming
        the file and field), or a backbone whose fingerprint changed since it was saved.
    NotFittedError
        ``predict``, ``predict_proba``, ``score``, ``evaluate`` and ``save`` before ``fit`` or
        ``load`` (an ``LLMEmbedError`` and scikit-learn's ``NotFittedError``).

    Examples
    --------
    >>> clf = LLMEmbedClassifier(recipe="cpu", train={"max_epochs": 50})  # doctest: +SKIP
    >>> clf.fit(train_texts, train_labels).predict(["Oil prices rose."])  # doctest: +SKIP
    """

    def __init__(
        self,
        recipe: str | os.PathLike | Recipe | Sequence[str | os.PathLike | Recipe] = DEFAULT_RECIPE,
        backbones: Sequence[BackboneSpec | dict | str] | None = None,
        head: HeadConfig | dict | None = None,
        train: TrainConfig | dict | None = None,
        lexical: LexicalConfig | dict | None = None,
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool | str = True,
        device: str = "auto",
        verbose: bool = True,
        threads: int | None = None,
        multi_label: bool | str = "auto",
        out_of_core: bool | str = "auto",
        cv: int = 5,
        ensemble: bool = False,
        select_budget: float | None = None,
    ) -> None:
        self.recipe = recipe
        self.backbones = backbones
        self.head = head
        self.train = train
        self.lexical = lexical
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self.device = device
        self.verbose = verbose
        self.threads = threads
        self.multi_label = multi_label
        self.out_of_core = out_of_core
        self.cv = cv
        self.ensemble = ensemble
        self.select_budget = select_budget

    # -- scikit-learn protocol -----------------------------------------------------------------
    def __sklearn_tags__(self) -> Tags:
        """scikit-learn (>= 1.6) tags: a classifier whose X is a sequence of strings."""
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # X is a sequence of texts, not a numeric matrix
        tags.input_tags.string = True
        tags.target_tags.required = True
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = True
        return tags

    def _more_tags(self) -> dict[str, Any]:
        """The same tags for scikit-learn < 1.6."""
        return {"X_types": ["string"], "requires_y": True}

    def __sklearn_is_fitted__(self) -> bool:
        """True after fit() or load() (what sklearn's check_is_fitted asks)."""
        return "head_" in self.__dict__

    def set_params(self, **params: Any) -> LLMEmbedClassifier:
        """Set parameters (as ``__init__`` names them); returns self.

        Besides whole values (``head={"fusion": "mean"}``), ``head__<setting>=value``,
        ``train__<setting>=value`` and ``lexical__<setting>=value`` change one setting of
        ``head`` / ``train`` / ``lexical`` (the others kept), so
        ``GridSearchCV(param_grid={"head__fusion": ["cooc", "mean"]})`` works.
        """
        plain: dict[str, Any] = {}
        for key, value in params.items():
            outer, sep, inner = key.partition("__")
            if sep and outer in ("head", "train", "lexical") and inner and "__" not in inner:
                current = plain[outer] if outer in plain else getattr(self, outer)
                plain[outer] = {**_settings(current, outer), inner: value}
            else:
                plain[key] = value
        return super().set_params(**plain)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle state: everything but the frozen backbones (rebuilt from recipe_ on use)."""
        state = dict(super().__getstate__())
        state.pop("_backbone_pool", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled classifier; its backbones load again on first use."""
        super().__setstate__(state)
        if self.__sklearn_is_fitted__():
            self._backbone_pool = {}

    # -- configuration -------------------------------------------------------------------------
    def _resolved_recipe(self) -> Recipe:
        """The recipe with the parameters applied (the first candidate of several); sets no
        attribute."""
        return self._candidates()[0]

    def _candidates(self) -> list[Recipe]:
        """Every recipe of ``recipe`` (one, a list, or "auto"), parameters applied.

        Raises: ConfigError for a value that is not a recipe or a list of them, an empty list,
        or two candidates of one name (the selection record names them).
        """
        given = self.recipe
        if isinstance(given, str) and given == "auto":
            from .selection import AUTO_RECIPES

            given = list(AUTO_RECIPES)
        if isinstance(given, (str, os.PathLike, Recipe)):
            given = [given]
        if not isinstance(given, Sequence) or not given:
            raise ConfigError(
                "recipe must be a recipe name, a .toml path, a Recipe, a non-empty list of "
                f'them or "auto", not {self.recipe!r}'
            )
        recipes = [self._apply(r) for r in given]
        names = [r.name for r in recipes]
        if len(set(names)) < len(names):
            raise ConfigError(f"recipe: the candidates' names must differ, got {names}")
        return recipes

    def _apply(self, recipe: str | os.PathLike | Recipe) -> Recipe:
        """One recipe with the parameters (backbones, head, train, lexical) applied."""
        if isinstance(recipe, (str, os.PathLike)):
            recipe = load_recipe(recipe)
        elif not isinstance(recipe, Recipe):
            raise ConfigError(
                f"recipe must be a recipe name, a .toml path or a Recipe, not {recipe!r}"
            )
        specs = recipe.backbones
        if self.backbones is not None:
            if isinstance(self.backbones, (str, bytes, dict)) or not isinstance(
                self.backbones, Sequence
            ):
                raise ConfigError(
                    f"backbones must be a list of BackboneSpec, dicts or model names, not "
                    f"{self.backbones!r}"
                )
            specs = []
            for b in self.backbones:
                if isinstance(b, BackboneSpec):
                    specs.append(b)
                elif isinstance(b, str):
                    specs.append(BackboneSpec(model=b))
                elif isinstance(b, dict):
                    specs.append(BackboneSpec.from_dict(b))
                else:
                    raise ConfigError(
                        f"backbones: {b!r} is not a BackboneSpec, a dict or a model name"
                    )
            if not specs:
                raise ConfigError("backbones: the list is empty; give at least one backbone")
        head = self._config(self.head, "head", HeadConfig, recipe.head)
        train = self._config(self.train, "train", TrainConfig, recipe.train)
        lexical = self._config(self.lexical, "lexical", LexicalConfig, recipe.lexical)
        return Recipe(recipe.name, list(specs), head, train, recipe.description, lexical)

    @staticmethod
    def _config(value: Any, what: str, kind: type, base: Any) -> Any:
        if isinstance(value, kind):
            return value
        if value is None or isinstance(value, dict):
            return kind.from_dict({**base.to_dict(), **(value or {})})
        raise ConfigError(
            f"{what} must be a {kind.__name__}, a dict of settings or None, not {value!r}"
        )

    def _backbones_for(self, specs: Sequence[BackboneSpec]) -> list[Backbone]:
        """Backbone objects for specs, kept in a private pool (models load once)."""
        pool = self.__dict__.setdefault("_backbone_pool", {})
        out = []
        for spec in specs:
            key = (json.dumps(spec.to_dict(), sort_keys=True), str(self.device))
            bb = pool.get(key)
            if bb is None:  # setdefault: two threads racing here still share one Backbone
                bb = pool.setdefault(key, Backbone(spec, device=self.device))
            out.append(bb)
        return out

    @property
    def backbones_(self) -> list[Backbone]:
        """The frozen backbones of the fitted recipe_ (read-only)."""
        self._check_fitted()
        return self._backbones_for(self.recipe_.backbones)

    @property
    def lexical_(self) -> LexicalChannel | None:
        """The fitted lexical channel (None when the recipe's channel is off); of an ensemble,
        the first fold model's; read-only.

        Read from the fitted models (like ``backbones_``), so it is set only by fit and load.
        Raises NotFittedError before fit/load.
        """
        self._check_fitted()
        return self._members[0].lexical

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(NOT_FITTED_MESSAGE)

    # -- features ------------------------------------------------------------------------------
    def _extract(
        self,
        texts: list[str],
        backbones: list[Backbone],
        timings: dict[str, float] | None,
        spill: tuple[Path, int] | None = None,
    ) -> list[np.ndarray | FeatureFile]:
        """Each backbone's features of the texts, from the cache when it is on; with ``spill``
        (folder, bytes), a backbone's features larger than that go to a FeatureFile there."""
        if self.use_cache not in (True, False, "read-only"):
            raise ConfigError(
                f'use_cache must be True, False or "read-only", not {self.use_cache!r}'
            )
        read_only = self.use_cache == "read-only"
        cache = EmbeddingCache(self.cache_dir, read_only=read_only) if self.use_cache else None
        out = []
        for bb in backbones:
            t0 = time.perf_counter()
            if cache is not None:
                folder, over = spill if spill is not None else (None, 0)
                out.append(
                    cache.embed(bb, texts, progress=self.verbose, spill_dir=folder, spill_over=over)
                )
                if self.verbose and isinstance(out[-1], FeatureFile):
                    print(
                        f"llmembed: {bb.spec.model}'s features ({out[-1].nbytes / 2**30:.1f} GiB) "
                        f"are streamed from {out[-1].path} (out_of_core={self.out_of_core!r})",
                        file=sys.stderr,
                    )
            else:
                out.append(bb.embed(texts, progress=self.verbose))
            if timings is not None:
                timings[f"embed:{bb.spec.model}"] = time.perf_counter() - t0
        return out

    @_with_threads
    def embed(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per-backbone embeddings, each [n_texts, n_vectors, width] (from the cache if there).

        Neural features only: the lexical channel's scores (``lexical_.transform(texts)``, the
        head's last input when the channel is on) are not among them. Uses the fitted
        ``recipe_`` once fitted (and records extraction time in ``timings_``), the recipe given
        by the parameters before; it never makes the classifier look fitted.
        Raises LLMEmbedError for invalid texts or an invalid recipe.
        """
        texts = validate_texts(texts, where="texts")
        if self.__sklearn_is_fitted__():
            return self._extract(texts, self.backbones_, self.timings_)
        recipe = self._resolved_recipe()
        return self._extract(texts, self._backbones_for(recipe.backbones), None)

    # -- estimator API -------------------------------------------------------------------------
    @_with_threads
    def fit(
        self,
        X: Sequence[str],
        y: Any,
        classes: Sequence[Any] | None = None,
        embeddings: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        groups: Sequence[Any] | str | None = "auto",
    ) -> LLMEmbedClassifier:
        """Extract embeddings for the texts X and train the head on labels y; returns self.

        y: one label per text, all strings, all numbers or all booleans (a list, array or
        pandas Series); or, multi-label, one label set per text or a 0/1 indicator matrix
        [n_texts, n_labels] (see ``multi_label``). classes: the labels of an indicator matrix's
        columns (default 0 .. n_labels-1), or the complete label list of label sets.
        embeddings: folders written by ``llmembed embed --engine ray``
        (:func:`llmembed.distributed.embed_files`), one per backbone, stored in the embedding
        cache first (:func:`~llmembed.distributed.import_embeddings`, one shard at a time), so
        the texts they hold are not extracted again; needs ``use_cache=True``. Features that
        do not fit in memory are streamed (``out_of_core``).
        groups: one group label per text (a source document, a sentence whose phrases are all
        in the training set, ...): every split of training keeps a group on one side (the
        lexical channel's folds, the head's validation split, the recipe selection's and the
        ensemble's folds), so held-out scores are not inflated by near-copies
        (:mod:`llmembed.splits`; :func:`~llmembed.splits.phrase_groups` finds them for phrase
        datasets such as SST-2). "auto" (the default): :func:`~llmembed.splits.auto_groups`
        builds phrase groups when a sample of the texts sits inside other training texts
        (SST-2's phrases), else plain splits; None: plain splits. Not saved: prediction does
        not use them.
        Raises LLMEmbedError for invalid texts, labels, groups, recipe, parameters or
        embeddings folders.
        """
        if y is None:  # before the texts, so the message is about the missing labels
            validate_labels(y, 0, where="labels")
        texts = validate_texts(X, where="texts")
        labels, target, multi = self._target(y, len(texts), classes)
        timings: dict[str, float] = {}
        gids = self._groups(groups, texts, timings)
        candidates = self._candidates()
        self._check_ensemble(multi)
        if len(candidates) > 1:
            self._check_selection(multi)
        if embeddings is not None:
            self._import_embeddings(embeddings)
        recipe, known, selection, members = candidates[0], None, None, None
        if len(candidates) > 1:
            recipe, known, selection, members = self._select(
                candidates, texts, target, len(labels), timings, gids
            )
        backbones = self._backbones_for(recipe.backbones)
        n_jobs = torch.get_num_threads()  # lexical SVM processes: as many as torch_threads allows
        with self._spill(len(backbones)) if known is None else contextlib.nullcontext() as spill:
            if known is None:
                features = self._extract(texts, backbones, timings, spill)
            else:  # the chosen candidate's, extracted for the selection
                features = list(known)
            try:
                if not self.ensemble:
                    members = [
                        fit_member(
                            recipe,
                            features,
                            texts,
                            target,
                            len(labels),
                            n_jobs=n_jobs,
                            progress=self.verbose,
                            timings=timings,
                            groups=gids,
                        )
                    ]
                elif members is None:
                    splits = cv_splits(target, self.cv, recipe.train.seed, gids)
                    members = fit_folds(
                        recipe,
                        features,
                        texts,
                        target,
                        len(labels),
                        splits,
                        n_jobs=n_jobs,
                        timings=timings,
                        report=self.verbose,
                        groups=gids,
                    )
            finally:  # before the spill folder goes (an open file can block that elsewhere)
                for f in features:
                    if isinstance(f, FeatureFile):
                        f.close()
        result = members[0].result
        self._n_train = len(texts)  # for the model card (private: not a fitted attribute)
        self._members = members
        if multi is not None:
            multi.thresholds = [float(t) for t in result.thresholds]
        self._set_target(labels, multi)
        self.recipe_ = recipe
        self.selection_ = selection
        self.fold_scores_ = np.array([m.score for m in members]) if self.ensemble else None
        self.n_groups_ = None if gids is None else int(gids.max()) + 1
        self.head_ = result.head
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.val_metrics_ = result.val_metrics
        self.temperature_ = result.temperature if len(members) == 1 else 1.0
        self.timings_ = timings
        return self

    def _groups(
        self, groups: Sequence[Any] | str | None, texts: list[str], timings: dict[str, float]
    ) -> np.ndarray | None:
        """fit's ``groups`` as :func:`~llmembed.splits.group_ids`' ids, or None; "auto" runs
        :func:`~llmembed.splits.auto_groups`, records its seconds in ``timings["groups"]`` and
        says what it found."""
        if isinstance(groups, str):
            if groups != "auto":
                raise DataError(
                    f'groups must be "auto", None or one group label per text, not {groups!r}'
                )
            t0 = time.perf_counter()
            gids = auto_groups(texts)
            timings["groups"] = time.perf_counter() - t0
            if gids is not None and self.verbose:
                print(
                    f"llmembed: the {len(texts):,} training texts form {gids.max() + 1:,} groups "
                    "of phrases and the text that contains them: every split keeps each group "
                    "whole (fit(..., groups=None) for plain splits)",
                    file=sys.stderr,
                )
            return gids
        return None if groups is None else group_ids(groups, len(texts))

    def _check_ensemble(self, multi: MultiLabel | None) -> None:
        """Refuse an ``ensemble`` that is not a bool, or one with a multi-label target or
        ``out_of_core=True`` (ConfigError)."""
        if not isinstance(self.ensemble, bool):
            raise ConfigError(f"ensemble must be True or False, not {self.ensemble!r}")
        if self.ensemble and multi is not None:
            raise ConfigError(
                "ensemble=True takes single-label targets: set ensemble=False for a "
                "multi-label model"
            )
        if self.ensemble and self.out_of_core is True:
            raise ConfigError(
                "ensemble=True holds the features in memory: set ensemble=False to stream them "
                "(out_of_core=True)"
            )

    def _select(
        self,
        candidates: list[Recipe],
        texts: list[str],
        target: np.ndarray,
        n_classes: int,
        timings: dict[str, float],
        groups: np.ndarray | None,
    ) -> tuple[Recipe, list[np.ndarray], Selection, list[Member] | None]:
        """(the candidate of the best ``cv``-fold accuracy, its features, the
        :class:`~llmembed.selection.Selection`, and with ``ensemble=True`` its fold models when
        they are the ensemble's: same seed, so same folds; else None); each distinct backbone
        is extracted once.

        Raises: ConfigError for a bad ``cv``.
        """
        start = time.perf_counter()
        splits = cv_splits(target, self.cv, candidates[0].train.seed, groups)
        extracted: dict[int, np.ndarray] = {}  # by Backbone (the pool shares equal specs)
        rows, features, kept, skipped = [], [], None, []
        for recipe in candidates:
            t0 = time.perf_counter()
            if rows and self.select_budget is not None and t0 - start > self.select_budget:
                skipped.append(recipe.name)
                features.append(None)
                if self.verbose:
                    print(
                        f"llmembed: recipe {recipe.name} skipped: the selection's time budget "
                        f"({self.select_budget:g} s) is spent",
                        file=sys.stderr,
                    )
                continue
            backbones = self._backbones_for(recipe.backbones)
            missing = list({id(bb): bb for bb in backbones if id(bb) not in extracted}.values())
            for bb, f in zip(missing, self._extract(texts, missing, timings)):
                extracted[id(bb)] = f  # in memory: _extract without a spill folder
            features.append([extracted[id(bb)] for bb in backbones])
            members = fit_folds(
                recipe,
                features[-1],
                texts,
                target,
                n_classes,
                splits,
                torch.get_num_threads(),
                groups=groups,
            )
            rows.append(record(recipe, [m.score for m in members], time.perf_counter() - t0))
            if self.ensemble and choose(self.cv, rows).chosen == recipe.name:
                kept = members  # the leader's only: lexical vocabularies are large
            if self.verbose:
                print(
                    f"llmembed: recipe {recipe.name}: {self.cv}-fold CV accuracy "
                    f"{100 * rows[-1]['mean']:.2f} ± {100 * rows[-1]['std']:.2f}",
                    file=sys.stderr,
                )
        selection = choose(self.cv, rows, skipped)
        if self.verbose:
            print(f"llmembed: chose recipe {selection.chosen}", file=sys.stderr)
        timings["select"] = time.perf_counter() - start
        best = [r.name for r in candidates].index(selection.chosen)
        if candidates[best].train.seed != candidates[0].train.seed:
            kept = None  # its ensemble folds are cut by its own seed
        return candidates[best], features[best], selection, kept

    def _check_selection(self, multi: MultiLabel | None) -> None:
        """Refuse a recipe selection with a multi-label target, ``out_of_core=True`` or a
        ``select_budget`` that is not a number >= 0 (ConfigError)."""
        budget = self.select_budget
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= 0
        ):
            raise ConfigError(
                f"select_budget must be a number of seconds >= 0 or None, not {budget!r}"
            )
        if multi is not None:
            raise ConfigError(
                'recipe selection (several recipes or "auto") takes single-label targets: give '
                "one recipe for a multi-label model"
            )
        if self.out_of_core is True:
            raise ConfigError(
                'recipe selection (several recipes or "auto") holds the features in memory: '
                "give one recipe to stream them (out_of_core=True)"
            )

    @contextlib.contextmanager
    def _spill(self, n_backbones: int) -> Iterator[tuple[Path, int] | None]:
        """Where ``fit`` may write features too large for memory, per ``out_of_core``: (a
        folder in the cache, the size past which one backbone's features go there), or None
        to keep them in memory. The folder is deleted on exit.

        Raises: ConfigError for an invalid ``out_of_core``, or True without the cache.
        """
        if self.out_of_core not in (True, False, "auto"):
            raise ConfigError(
                f'out_of_core must be True, False or "auto", not {self.out_of_core!r}'
            )
        if self.out_of_core is True and self.use_cache is not True:
            raise ConfigError(
                "out_of_core=True streams the features through the embedding cache: set "
                "use_cache=True"
            )
        if self.out_of_core is False or self.use_cache is not True or self.ensemble:
            yield None
            return
        over = 0
        if self.out_of_core == "auto":
            available = available_memory()
            if available is None:
                yield None
                return
            over = available // (IN_MEMORY_SHARE * n_backbones)
        with EmbeddingCache(self.cache_dir).spill_folder() as folder:
            yield folder, over

    def _import_embeddings(self, folders: str | os.PathLike | Sequence[Any]) -> None:
        """Store ``fit(embeddings=...)``'s run folders in the embedding cache.

        Raises: ConfigError without the cache; DataError for a folder that is not an
        embeddings run folder.
        """
        from .distributed import import_embeddings

        if self.use_cache is not True:
            raise ConfigError(
                "fit(embeddings=...) stores the folders in the embedding cache: set use_cache=True"
            )
        if isinstance(folders, (str, os.PathLike)):
            folders = [folders]
        for folder in folders:
            import_embeddings(folder, cache_dir=self.cache_dir)

    def _target(
        self, y: Any, n_texts: int, classes: Sequence[Any] | None
    ) -> tuple[np.ndarray, np.ndarray, MultiLabel | None]:
        """(labels, training target, multi-label settings or None): the sorted labels and
        class indices [n] (single-label), or the labels and a 0/1 matrix [n, n_labels] with
        :class:`MultiLabel` settings still lacking their thresholds."""
        if self.multi_label not in (True, False, "auto"):
            raise ConfigError(
                f'multi_label must be True, False or "auto", not {self.multi_label!r}'
            )
        sets = is_label_sets(y)
        if sets and self.multi_label is False:
            raise DataError(
                "labels: one label set per text (or an indicator matrix), but multi_label=False; "
                'give one label per text or set multi_label=True (or "auto")'
            )
        if sets or self.multi_label is True:
            if not sets:  # one label per text, read as one-element sets
                y = [[label] for label in validate_labels(y, n_texts, where="labels").tolist()]
            # the warning points at the user's fit call: _target < fit < _with_threads < user
            labels, matrix, form, at_least_one = read_target(y, n_texts, classes, stacklevel=5)
            return labels, matrix, MultiLabel([], at_least_one, form)
        if classes is not None:
            raise ConfigError("classes= is for multi-label targets (an indicator matrix's labels)")
        y_arr = validate_labels(y, n_texts, where="labels")
        labels, y_idx = np.unique(y_arr, return_inverse=True)
        if len(labels) < 2:
            raise DataError(
                f"Training data has a single class ({labels[0]!r}): a classifier needs "
                "at least two."
            )
        return labels, y_idx, None

    def _set_target(self, classes: np.ndarray, multi: MultiLabel | None) -> None:
        """Set classes_ and the multi-label attributes (fit and load)."""
        self._multi = multi
        self.classes_ = classes
        self.multi_label_ = multi is not None
        self.thresholds_ = None if multi is None else np.asarray(multi.thresholds)

    @_with_threads
    def predict_proba(self, X: Sequence[str]) -> np.ndarray:
        """Class probabilities [n, n_classes], columns in ``classes_`` order (rows sum to 1;
        multi-label: one independent probability per label).

        More than :data:`PREDICT_CHUNK` texts are scored that many at a time, so memory holds
        one chunk's features, not those of every text.
        Raises NotFittedError before fit/load, LLMEmbedError for invalid texts.
        """
        self._check_fitted()
        texts = validate_texts(X, where="texts")
        timings: dict[str, float] = {}
        parts = [
            self._proba(texts[s : s + PREDICT_CHUNK], timings)
            for s in range(0, max(len(texts), 1), PREDICT_CHUNK)
        ]
        self.timings_.update(timings)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _proba(self, texts: list[str], timings: dict[str, float]) -> np.ndarray:
        """predict_proba of some texts; adds their extraction / lexical seconds to timings."""
        spent: dict[str, float] = {}
        arrays = self._extract(texts, self.backbones_, spent)
        proba = 0.0
        for member in self._members:  # one, or the fold models of an ensemble
            logits = member.logits(arrays, texts, spent)
            if self.multi_label_:
                proba = proba + torch.sigmoid(logits)
            else:
                proba = proba + torch.softmax(logits / member.result.temperature, dim=1)
        for key, seconds in spent.items():
            timings[key] = timings.get(key, 0.0) + seconds
        return (proba / len(self._members)).numpy()

    def predict(self, X: Sequence[str]) -> Any:
        """Predicted labels, of the same kind as the training labels (str, int, ...).

        Multi-label: a list with one tuple of labels per text (``classes_`` order; labels given
        as sets), or a 0/1 int matrix [n, n_labels] (labels given as an indicator matrix).
        Raises NotFittedError before fit/load, LLMEmbedError for invalid texts.
        """
        return self.predict_from_proba(self.predict_proba(X))

    def predict_from_proba(self, proba: np.ndarray, as_sets: bool = False) -> Any:
        """What :meth:`predict` answers, from :meth:`predict_proba`'s output: the most probable
        class per row, or (multi-label) the labels at or above their thresholds.

        For callers that want both probabilities and labels without extracting twice.
        ``as_sets``: multi-label answers are label tuples even for a model trained on an
        indicator matrix (no effect on single-label models).
        Raises NotFittedError before fit/load.
        """
        self._check_fitted()
        multi = self.__dict__.get("_multi")
        if multi is None:
            return self.classes_[np.asarray(proba).argmax(1)]
        decisions = decide(proba, multi)
        if multi.form == "indicator" and not as_sets:
            return decisions.astype(np.int64)
        return label_sets(decisions, self.classes_)

    def score(
        self, X: Sequence[str], y: Sequence[Any], sample_weight: Sequence[float] | None = None
    ) -> float:
        """Accuracy of predict(X) against y (weighted by sample_weight when given).

        Raises NotFittedError before fit/load, LLMEmbedError for invalid texts or labels.
        """
        self._check_fitted()
        texts = validate_texts(X, where="texts")
        if self.multi_label_:  # subset accuracy, as scikit-learn scores multi-label
            truth = binarize(y, self.classes_, len(texts))
            pred = decide(self.predict_proba(texts), self._multi)
            return float(accuracy_score(truth, pred, sample_weight=sample_weight))
        y_true = validate_labels(y, len(texts), where="labels")
        return float(accuracy_score(y_true, self.predict(texts), sample_weight=sample_weight))

    def evaluate(self, X: Sequence[str], y: Any) -> dict[str, Any]:
        """accuracy, macro/micro-F1, positive-class F1 (binary), per-class report, confusion,
        and the expected calibration error with the fitted temperature (``ece``) and without
        (``ece_uncalibrated``, temperature 1), with the ``temperature``.

        Multi-label (label sets or an indicator matrix): micro / macro / samples F1, subset
        accuracy, Hamming loss, label cardinality and a per-label report
        (:func:`llmembed.metrics.multilabel_metrics`).
        Raises NotFittedError before fit/load, LLMEmbedError for invalid texts or labels.
        """
        self._check_fitted()
        texts = validate_texts(X, where="texts")
        if self.multi_label_:
            truth = binarize(y, self.classes_, len(texts))
            pred = decide(self.predict_proba(texts), self._multi)
            return multilabel_metrics(truth, pred, labels=self.classes_)
        y_true = validate_labels(y, len(texts), where="labels")
        proba = self.predict_proba(texts)
        out = classification_metrics(
            list(y_true), self.classes_[proba.argmax(1)], labels=self.classes_
        )
        calibration = calibration_metrics(list(y_true), proba, self.temperature_, self.classes_)
        return {**out, **calibration}

    # -- persistence ---------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the fitted model to a folder: head.safetensors, llmembed.json, README.md.

        No pickle: the head is safetensors, everything else JSON (format in
        :mod:`llmembed.modelcard`) plus a human-readable model card; a lexical channel adds
        lexical.safetensors (idf vectors, SVM weights) and lexical.json (vocabularies). Every
        backbone is pinned: its content fingerprint (the embedding cache's), resolved source,
        dtype, absolute layers and width; a ``dtype = "auto"`` is written as the dtype it
        resolved to here, so another machine extracts the same way. Loads the backbones if they
        are not loaded.

        Takes: the folder (created if needed). Returns: the folder as a Path.
        Raises: NotFittedError before fit/load; ModelLoadError / ConfigError when a backbone
        cannot be loaded to be pinned; OSError when the folder cannot be written.
        """
        self._check_fitted()
        specs, pins = [], []
        for bb in self.backbones_:
            spec, fingerprint = _pinned_spec(bb)
            specs.append(spec)
            pins.append(modelcard.BackbonePin.of(bb, fingerprint))
        saved = modelcard.SavedModel(
            recipe=dataclasses.replace(self.recipe_, backbones=specs),
            classes=[c.item() if hasattr(c, "item") else c for c in self.classes_],
            shapes=self._backbone_shapes(len(specs)),
            backbones=pins,
            versions=modelcard.package_versions(),
            n_train=self.__dict__.get("_n_train"),
            best_epoch=self.best_epoch_,
            val_metrics=modelcard.summary_metrics(self.val_metrics_),
            temperature=self.temperature_,
            multi_label=self.__dict__.get("_multi"),
            selection=self.__dict__.get("selection_"),
            ensemble=self._ensemble_record(),
        )
        state, lexical = _member_state(self._members[0])
        folds = [_member_state(m) for m in self._members[1:]]
        return modelcard.write_saved_model(path, saved, state, lexical=lexical, folds=folds)

    save = save_pretrained  # the short name, kept

    def _backbone_shapes(self, n_backbones: int) -> list[tuple[int, int]]:
        """The backbones' feature shapes (the head's inputs derive from them)."""
        stack = self._members[0].stack
        return stack.shapes if stack is not None else list(self.head_.shapes[:n_backbones])

    def _ensemble_record(self) -> dict[str, list[float]] | None:
        """The fold models' scores and temperatures as saved (None for a single model)."""
        if len(self._members) < 2:
            return None
        return {
            "scores": [round(float(m.score), 6) for m in self._members],
            "temperatures": [float(m.result.temperature) for m in self._members],
        }

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        device: str = "auto",
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool | str = True,
        verbose: bool = True,
        check_backbones: bool = True,
        revision: str | None = None,
        threads: int | None = None,
    ) -> LLMEmbedClassifier:
        """Load a model written by save_pretrained(); works on CPU whatever device trained it.

        Takes: ``path``, a saved-model folder, or a Hugging Face hub repo id (``owner/name``)
        when no such folder exists (downloaded with ``huggingface_hub.snapshot_download`` at
        ``revision``); the estimator parameters ``device``, ``cache_dir``, ``use_cache``,
        ``verbose`` and ``threads``; ``check_backbones``: load every backbone now and refuse
        one whose fingerprint differs from the one recorded at save time (swapped weights, edited
        layers, a zoo name resolving elsewhere, another dtype). False skips the check (and
        loads the backbones lazily, at first use).
        Returns: the fitted classifier.
        Raises: ModelLoadError, one line naming the file and field, for a folder that is not a
        valid saved model, or a backbone that changed or cannot be loaded. Warns when a newer
        llmembed wrote the folder, or when it has no backbone pins (format 1).
        """
        folder = modelcard.resolve_folder(path, revision)
        saved = modelcard.read_saved_model(folder)
        head, stack = modelcard.load_head(folder, saved)
        channel = modelcard.load_lexical(folder, saved)
        ensemble = saved.ensemble  # None: one model, with the top-level temperature
        members = [
            Member(TrainResult(h, temperature=t), lex, score, stack=st)
            for (h, lex, st), t, score in zip(
                [(head, channel, stack), *modelcard.load_fold_models(folder, saved)],
                ensemble["temperatures"] if ensemble else [saved.temperature],
                ensemble["scores"] if ensemble else [None],
            )
        ]
        clf = cls(
            recipe=saved.recipe,
            cache_dir=cache_dir,
            use_cache=use_cache,
            device=device,
            verbose=verbose,
            threads=threads,
            ensemble=ensemble is not None,
            cv=len(ensemble["scores"]) if ensemble else 5,
        )
        clf._backbone_pool = {}
        clf._n_train = saved.n_train
        clf._members = members
        clf._set_target(np.asarray(saved.classes), saved.multi_label)
        clf.recipe_ = saved.recipe
        clf.selection_ = saved.selection
        clf.fold_scores_ = np.array(ensemble["scores"]) if ensemble else None
        clf.n_groups_ = None
        clf.head_ = head
        clf.history_ = []
        clf.best_epoch_ = saved.best_epoch
        clf.val_metrics_ = saved.val_metrics
        clf.temperature_ = saved.temperature
        clf.timings_ = {}
        if check_backbones:
            modelcard.check_backbones(folder, saved, clf.backbones_)
        return clf

    load = from_pretrained  # the short name, kept


def _member_state(
    member: Member,
) -> tuple[dict[str, torch.Tensor], tuple[dict[str, np.ndarray], dict[str, Any]] | None]:
    """A member's head state dict (CPU, contiguous; with the stack's regressions under
    ``stack.``) and lexical channel state, as saved."""
    head = member.result.head
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    if member.stack is not None:
        for k, v in member.stack.state_dict().items():
            state[STACK_PREFIX + k] = v.detach().cpu().contiguous()
    return state, member.lexical.state() if member.lexical is not None else None


def _pinned_spec(backbone: Backbone) -> tuple[BackboneSpec, str]:
    """The backbone's spec with its resolved dtype written in, and that spec's fingerprint.

    ``dtype = "auto"`` resolves per machine (bf16 on bf16 CPUs, fp32 elsewhere); a saved model
    records what it resolved to. The fingerprint of the pinned spec is computed on a shallow copy
    that shares the loaded model, so pinning never loads a model twice.
    """
    dtype = str(backbone.dtype).replace("torch.", "")
    if backbone.spec.dtype == dtype:
        return backbone.spec, backbone.fingerprint()
    spec = dataclasses.replace(backbone.spec, dtype=dtype)
    backbone.load()
    twin = copy.copy(backbone)
    twin.spec = spec
    twin._fingerprint = None  # the fingerprints are memoized per Backbone: recompute
    return spec, twin.fingerprint()
