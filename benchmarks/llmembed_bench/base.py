"""What every method shares: its context, its registry entry, its config hash."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmembed.backbones import BackboneSpec
from llmembed.files import sha256_bytes
from llmembed.recipes import Recipe

from .features import FeatureStore, spec_label
from .jsonio import json_default
from .settings import (
    FUSIONS,
    LR_C,
    PUBLISHED_MAX_LENGTH,
    PUBLISHED_SUBSET,
    SCHEMA,
    SETFIT_MAX_PAIRS,
    SIGMAS,
    SVM_C,
    VAL_FRACTION,
)
from .tasks import Task


@dataclass
class Context:
    """What a method needs to run on one task."""

    task: Task
    recipe: Recipe  # the fusion recipe the published ladder and the ablations start from
    paper: Recipe
    store: FeatureStore
    options: dict[str, Any] = field(default_factory=dict)
    ours: Recipe | None = None  # the recipe of "ours" (None: ``recipe``)

    @property
    def ours_recipe(self) -> Recipe:
        return self.ours or self.recipe

    @property
    def backbone_names(self) -> list[str]:
        return [b.model for b in self.recipe.backbones]


@dataclass
class Method:
    name: str
    group: str  # ours | published | ablation | peer
    label: str
    needs: Callable[[Context], list[BackboneSpec]]
    run: Callable[[Context, np.ndarray, np.ndarray, int], dict[str, Any]]
    requires: tuple[str, ...] = ()
    uses: tuple[str, ...] = ("recipe",)  # configs whose change makes a record stale
    config: Callable[[Recipe], dict[str, Any]] | None = None  # more of what it depends on


def method_config(
    method: Method, recipe: Recipe, paper: Recipe, options: dict, ours: Recipe | None = None
) -> dict:
    """Everything a method's result depends on besides data and seed (hashed into records).

    The fusion recipe counts without its name and description (they change no result); the
    recipe of ours (``ours``, default ``recipe``) counts whole."""
    cfg: dict[str, Any] = {"method": method.name, "schema": SCHEMA}
    if "recipe" in method.uses:
        content = recipe.to_dict()
        cfg["recipe"] = {k: v for k, v in content.items() if k not in ("name", "description")}
    if "ours" in method.uses:
        cfg["ours"] = (ours or recipe).to_dict()
    if "paper" in method.uses:
        cfg["paper"] = paper.to_dict()
        cfg["published_max_length"] = options.get("published_max_length", PUBLISHED_MAX_LENGTH)
        cfg["published_subset"] = list(options.get("published_subset", PUBLISHED_SUBSET))
    if method.name.startswith("abl-sigma") or method.name.startswith("abl-fusion"):
        cfg["grid"] = [SIGMAS, FUSIONS]
    if method.group == "peer":
        cfg["grids"] = [SVM_C, LR_C, VAL_FRACTION]
    if method.name.startswith("setfit"):
        cfg["setfit_max_pairs"] = options.get("setfit_max_pairs") or SETFIT_MAX_PAIRS
    if method.config is not None:
        cfg.update(method.config(recipe))
    return cfg


def config_hash(config: dict) -> str:
    """16 hex characters identifying a method's settings (records with another hash are stale)."""
    return sha256_bytes(json.dumps(config, sort_keys=True, default=json_default).encode())[:16]


def timed_extraction(ctx: Context, specs: Sequence[BackboneSpec], n_texts: int, n_test: int):
    rates = [ctx.store.rate(s) for s in specs]
    per_text = sum(r["seconds_per_text"] for r in rates)
    return {
        "extract_seconds": per_text * n_texts,
        "extract_seconds_per_1000": per_text * 1000,
        "extract_test_seconds": per_text * n_test,
        "extraction": {
            "specs": [spec_label(s) for s in specs],
            "rates": rates,
            "note": "estimated: seconds per text of each exact spec (cache off, second of two "
            "passes over a fixed sample) x texts",
            "superset_runs": dict(ctx.store.extract_log),
        },
    }


@contextlib.contextmanager
def train_threads(n: int | None):
    """Torch intra-op threads for training heads / SetFit (None: leave as is). On a busy
    2-core machine one thread avoids the oversubscription stalls of two."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
