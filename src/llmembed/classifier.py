"""LLMEmbedClassifier: the public, scikit-learn-style estimator.

fit(texts, labels) extracts (cached) embeddings from the frozen backbones and trains the fusion
head; predict / predict_proba / score work on raw texts. save(dir) writes the head as safetensors
and everything else as JSON; load(dir) rebuilds it on any device.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .backbones import Backbone, BackboneSpec
from .cache import EmbeddingCache
from .errors import LLMEmbedError
from .heads import FusionHead, HeadConfig
from .io import validate_texts
from .metrics import classification_metrics
from .recipes import Recipe, load_recipe
from .training import TrainConfig, predict_logits, train_head

CONFIG_NAME = "llmembed.json"
WEIGHTS_NAME = "head.safetensors"


class LLMEmbedClassifier:
    """Text classifier on frozen multi-layer LLM + encoder embeddings (LLMEmbed, ACL 2024).

    recipe: a shipped recipe name ("cpu", "paper"), a TOML path, or a Recipe.
    backbones / head / train: override the recipe's parts (lists of BackboneSpec / dicts / model
        names, HeadConfig or dict, TrainConfig or dict).
    cache_dir: embedding cache folder (default LLMEMBED_CACHE or the user cache); use_cache=False
        disables it.
    """

    def __init__(
        self,
        recipe: str | os.PathLike | Recipe = "cpu",
        backbones: Sequence[BackboneSpec | dict | str] | None = None,
        head: HeadConfig | dict | None = None,
        train: TrainConfig | dict | None = None,
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
        device: str = "auto",
        verbose: bool = True,
    ) -> None:
        self.recipe = recipe
        self.backbones = backbones
        self.head = head
        self.train = train
        self.cache_dir = cache_dir
        self.use_cache = use_cache
        self.device = device
        self.verbose = verbose

    # -- configuration -------------------------------------------------------------------------
    def _resolved_recipe(self) -> Recipe:
        recipe = self.recipe if isinstance(self.recipe, Recipe) else load_recipe(self.recipe)
        specs = recipe.backbones
        if self.backbones is not None:
            specs = [
                b
                if isinstance(b, BackboneSpec)
                else BackboneSpec(model=b)
                if isinstance(b, str)
                else BackboneSpec.from_dict(b)
                for b in self.backbones
            ]
        head = (
            self.head
            if isinstance(self.head, HeadConfig)
            else HeadConfig.from_dict({**recipe.head.to_dict(), **(self.head or {})})
        )
        train = (
            self.train
            if isinstance(self.train, TrainConfig)
            else TrainConfig.from_dict({**recipe.train.to_dict(), **(self.train or {})})
        )
        return Recipe(recipe.name, list(specs), head, train, recipe.description)

    def _backbones(self) -> list[Backbone]:
        if getattr(self, "backbones_", None) is None:
            self.backbones_ = [Backbone(s, device=self.device) for s in self.recipe_.backbones]
        return self.backbones_

    # -- features ------------------------------------------------------------------------------
    def transform(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per-backbone embeddings [n, n_layers, width] (from the cache when present)."""
        if getattr(self, "recipe_", None) is None:
            self.recipe_ = self._resolved_recipe()
        texts = validate_texts(texts)
        timings = self.__dict__.setdefault("timings_", {})
        cache = EmbeddingCache(self.cache_dir) if self.use_cache else None
        out = []
        for bb in self._backbones():
            t0 = time.perf_counter()
            if cache is not None:
                out.append(cache.embed(bb, texts, progress=self.verbose))
            else:
                out.append(bb.embed(texts, progress=self.verbose))
            timings[f"embed:{bb.spec.model}"] = time.perf_counter() - t0
        return out

    # -- estimator API -------------------------------------------------------------------------
    def fit(self, X: Sequence[str], y: Sequence[Any]) -> LLMEmbedClassifier:
        """Extract embeddings for X and train the head on labels y (strings or ints)."""
        y_arr = np.asarray(list(y))
        if len(y_arr) != len(X):
            raise LLMEmbedError(f"{len(X)} texts but {len(y_arr)} labels")
        if y_arr.dtype == object:
            bad = [
                i
                for i, v in enumerate(y_arr)
                if v is None or (isinstance(v, float) and np.isnan(v))
            ]
            if bad:
                raise LLMEmbedError(f"Label at index {bad[0]} is missing")
        self.classes_, y_idx = np.unique(y_arr, return_inverse=True)
        if len(self.classes_) < 2:
            raise LLMEmbedError(
                f"Training data has a single class ({self.classes_[0]!r}): a classifier needs "
                "at least two."
            )
        self.recipe_ = self._resolved_recipe()
        self.backbones_ = None
        self.timings_ = {}
        features = self.transform(X)
        t0 = time.perf_counter()
        result = train_head(
            features,
            y_idx,
            len(self.classes_),
            self.recipe_.head,
            self.recipe_.train,
            device="cpu",
            progress=self.verbose,
        )
        self.timings_["train_head"] = time.perf_counter() - t0
        self.head_ = result.head
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.val_metrics_ = result.val_metrics
        return self

    def _check_fitted(self) -> None:
        if getattr(self, "head_", None) is None:
            raise LLMEmbedError("This classifier is not fitted yet: call fit() or load() first")

    def predict_proba(self, X: Sequence[str]) -> np.ndarray:
        """Class probabilities [n, n_classes], columns in classes_ order."""
        self._check_fitted()
        feats = [torch.as_tensor(f) for f in self.transform(X)]
        return torch.softmax(predict_logits(self.head_, feats), dim=1).numpy()

    def predict(self, X: Sequence[str]) -> np.ndarray:
        """Predicted labels, of the same kind as the training labels."""
        return self.classes_[self.predict_proba(X).argmax(1)]

    def score(self, X: Sequence[str], y: Sequence[Any]) -> float:
        """Accuracy, as scikit-learn classifiers define score."""
        return float(np.mean(self.predict(X) == np.asarray(list(y))))

    def evaluate(self, X: Sequence[str], y: Sequence[Any]) -> dict[str, Any]:
        """accuracy, macro/micro-F1, positive-class F1 (binary), per-class report, confusion."""
        return classification_metrics(list(y), self.predict(X), labels=self.classes_)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted model to a folder: head.safetensors + llmembed.json (no pickle)."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.head_.state_dict().items()}
        save_file(state, str(path / WEIGHTS_NAME))
        config = {
            "llmembed_version": __version__,
            "recipe": self.recipe_.to_dict(),
            "classes": [c.item() if hasattr(c, "item") else c for c in self.classes_],
            "shapes": self.head_.shapes,
            "best_epoch": self.best_epoch_,
            "val_metrics": self.val_metrics_,
        }
        (path / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        device: str = "auto",
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
        verbose: bool = True,
    ) -> LLMEmbedClassifier:
        """Load a folder written by save(); works on CPU whatever device trained it."""
        path = Path(path)
        if not (path / CONFIG_NAME).is_file():
            raise LLMEmbedError(f"{path} is not a saved llmembed model (no {CONFIG_NAME})")
        config = json.loads((path / CONFIG_NAME).read_text())
        recipe = Recipe.from_dict(config["recipe"])
        clf = cls(
            recipe=recipe, cache_dir=cache_dir, use_cache=use_cache, device=device, verbose=verbose
        )
        clf.recipe_ = recipe
        clf.backbones_ = None
        clf.classes_ = np.asarray(config["classes"])
        head = FusionHead([tuple(s) for s in config["shapes"]], len(clf.classes_), recipe.head)
        head.load_state_dict(load_file(str(path / WEIGHTS_NAME), device="cpu"))
        clf.head_ = head.eval()
        clf.best_epoch_ = config.get("best_epoch")
        clf.val_metrics_ = config.get("val_metrics")
        clf.history_ = []
        clf.timings_ = {}
        return clf
