"""Features: one superset extraction per backbone group, sliced per method."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from llmembed.backbones import TEXT_FIELD, Backbone, BackboneSpec, parse_layers
from llmembed.cache import EmbeddingCache, text_key
from llmembed.introspect import model_info

from .jsonio import write_json
from .settings import log
from .tasks import Task


def num_hidden_states(model: str) -> int:
    """Hidden states of `model` (embeddings + one per block), read from its config."""
    return model_info(model).num_hidden_states


_SPEC_KEYS = ("model", "pooling", "max_length", "padding", "dtype", "template")


def _group_key(spec: BackboneSpec) -> tuple:
    return tuple(getattr(spec, k) for k in _SPEC_KEYS)


def spec_label(spec: BackboneSpec) -> str:
    pad = "" if spec.padding == "longest" else f", pad {spec.padding}"
    prompt = "" if spec.template == TEXT_FIELD else f", template {spec.template!r}"
    return f"{spec.model}[{spec.layers}; {spec.pooling}; {spec.max_length}{pad}{prompt}]"


def layer_grid(n_states: int) -> list[int]:
    """About ten evenly spaced hidden states, always including the last one."""
    step = max(1, math.ceil((n_states - 1) / 10))
    return sorted(set(range(0, n_states, step)) | {n_states - 1})


class FeatureStore:
    """Features of one task's texts for any backbone spec.

    ``plan`` registers every spec that some method may ask for; specs that differ only in their
    layers share one superset extraction (the union of their layers), cached on disk under
    ``root`` and kept in memory while this store lives. ``get`` slices a superset.
    Extraction throughput of an exact spec is measured on a fixed sample (``rate``).
    """

    def __init__(
        self,
        task: Task,
        root: str | os.PathLike,
        device: str = "auto",
        progress: bool = True,
        rate_sample: int = 200,
        rates_path: str | os.PathLike | None = None,
    ) -> None:
        self.task = task
        self.root = Path(root)
        self.device = device
        self.progress = progress
        self.rate_sample = rate_sample
        self.rates_path = Path(rates_path) if rates_path else None
        self._supersets: dict[tuple, list[int]] = {}
        self._specs: dict[tuple, BackboneSpec] = {}
        self._arrays: dict[tuple, np.ndarray] = {}
        self._partial: dict[tuple, np.ndarray] = {}
        self._reuse: dict[tuple, list[int]] = {}
        self._written: dict[tuple, str] = {}  # (key, layers) -> layer string of a cached folder
        self.extract_log: dict[str, dict[str, Any]] = {}
        self._rates: dict[str, dict[str, Any]] = {}
        self._params: dict[str, int] = {}
        if self.rates_path is not None and self.rates_path.is_file():
            with contextlib.suppress(ValueError, OSError):
                data = json.loads(self.rates_path.read_text())
                self._rates = data.get("rates", {})
                self._params = data.get("frozen_params", {})

    def layers_of(self, spec: BackboneSpec) -> list[int]:
        if spec.pooling == "pooler":
            return [num_hidden_states(spec.model) - 1]
        return parse_layers(spec.layers, num_hidden_states(spec.model))

    def plan(self, specs: Iterable[BackboneSpec]) -> None:
        for spec in specs:
            key = _group_key(spec)
            layers = set(self.layers_of(spec))
            before = set(self._supersets.get(key, []))
            self._supersets[key] = sorted(before | layers)
            self._specs.setdefault(key, spec)
            if not layers <= before:
                self._arrays.pop(key, None)  # the superset grew: extract it again when asked

    def superset_layers(self, key: tuple) -> list[int]:
        """Layers extracted for group `key`: the union of what the methods need, or a larger
        layer set already in the cache (so a changed recipe or method list does not redo an
        extraction whose layers still cover it)."""
        want = tuple(self._supersets[key])
        if (key, want) not in self._reuse:
            self._reuse[(key, want)] = self._cached_superset(key, set(want)) or list(want)
        return self._reuse[(key, want)]

    def _cached_superset(self, key: tuple, want: set[int]) -> list[int] | None:
        folder = self.root / self.task.group
        base = self._specs[key]
        best, best_chunks = None, 0

        def names(w: str) -> tuple[str, str]:
            bb = Backbone(replace(base, layers=w), device=self.device)
            return bb.fingerprint(), bb.legacy_fingerprint()

        for meta_path in sorted(folder.glob("*/meta.json")):
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue
            spec = {"template": TEXT_FIELD, **meta.get("spec", {})}  # entries from before templates
            layers = meta.get("layers") or []
            same = all(spec.get(k) == getattr(base, k) for k in _SPEC_KEYS)
            if not same or not want <= set(layers):
                continue
            chunks = len(list(meta_path.parent.glob("chunk-*.safetensors")))
            if chunks <= best_chunks:
                continue
            # The folder must be exactly this spec (same weights, dtype, version). Its name is
            # the fingerprint of any spelling of its layers, or (llmembed 0.1.0's folders) the
            # legacy fingerprint of the spelling its writer used ("-1" or "12").
            written = {str(spec.get("layers")), ",".join(map(str, layers))}
            folder_name = meta_path.parent.name
            try:
                match = next((w for w in sorted(written) if folder_name in names(w)), None)
            except Exception:  # noqa: BLE001 - an unusable entry is simply not reused
                continue
            if match is None:
                continue
            best, best_chunks = list(layers), chunks
            self._written[(key, tuple(best))] = match
        return best

    def superset_spec(self, key: tuple) -> BackboneSpec:
        layers = self.superset_layers(key)
        written = self._written.get((key, tuple(layers)), ",".join(map(str, layers)))
        return replace(self._specs[key], layers=written)

    def get(self, spec: BackboneSpec, rows: np.ndarray | None = None) -> np.ndarray:
        """[n_texts, n_vectors, width] for `spec` (layer-major, as Backbone.embed).

        rows: only these texts (in this order). When the superset of every text is not in
        memory already, only these texts are extracted (the expensive published padding is run
        on subsets this way)."""
        key = _group_key(spec)
        if key not in self._supersets or not set(self.layers_of(spec)) <= set(self._supersets[key]):
            self.plan([spec])
        if rows is not None and key not in self._arrays:
            rows = np.asarray(rows)
            pkey = (key, tuple(self.superset_layers(key)), rows.tobytes())
            if pkey not in self._partial:
                self._partial[pkey] = self._extract(key, [self.task.texts[i] for i in rows])
            arr = self._partial[pkey]
        else:
            if key not in self._arrays:
                self._arrays[key] = self._extract(key, self.task.texts)
            arr = self._arrays[key] if rows is None else self._arrays[key][np.asarray(rows)]
        sup_layers = self.superset_layers(key)
        n_pool = len(spec.poolings)
        cols = [
            sup_layers.index(layer) * n_pool + p
            for layer in self.layers_of(spec)
            for p in range(n_pool)
        ]
        return arr if cols == list(range(arr.shape[1])) else arr[:, cols]

    def _extract(self, key: tuple, texts: list[str]) -> np.ndarray:
        sup = self.superset_spec(key)
        cache = EmbeddingCache(self.root / self.task.group)
        bb = Backbone(sup, device=self.device)
        t0 = time.perf_counter()
        arr = cache.embed(bb, texts, progress=self.progress)
        seconds = time.perf_counter() - t0
        self.extract_log[spec_label(sup)] = {
            "seconds": round(seconds, 2),
            "texts": len(texts),
            "computed_texts": cache.last_misses,
            "cached_texts": cache.last_hits,
        }
        if cache.last_misses:
            log(f"extracted {spec_label(sup)} for {cache.last_misses} texts in {seconds:.0f}s")
        self._params.setdefault(sup.model, bb.n_parameters())
        return arr

    def fill_exact(self, spec: BackboneSpec) -> int:
        """Write `spec`'s own cache entries for every text of the task from its superset
        extraction (layers sliced), so that ``LLMEmbedClassifier`` with exactly this spec
        finds them and runs no forward pass. Returns the rows written (0 when all were there).
        """
        bb = Backbone(spec, device=self.device)
        cache = EmbeddingCache(self.root / self.task.group)
        keys = [text_key(t) for t in self.task.texts]
        fingerprint = cache.fingerprint_of(bb)  # from the files: the model is not loaded
        if cache.cached(fingerprint, keys) == len(set(keys)):  # no superset needed
            return 0
        # describe() loads the model: only for a folder that has no meta.json yet
        written = (cache.root / fingerprint / "meta.json").is_file()
        meta = None if written else bb.describe()
        return cache.add(fingerprint, keys, self.get(spec), meta=meta)

    def release(self) -> None:
        self._arrays.clear()
        self._partial.clear()

    # -- costs ---------------------------------------------------------------------------------
    def frozen_params(self, model: str) -> int:
        if model not in self._params:
            bb = Backbone(BackboneSpec(model), device="cpu")
            self._params[model] = bb.n_parameters()
            self._save_rates()
        return self._params[model]

    def rate(self, spec: BackboneSpec) -> dict[str, Any]:
        """Seconds per text of extracting exactly `spec` (cache off), on a fixed sample."""
        key = json.dumps(
            {k: v for k, v in spec.to_dict().items() if k not in ("max_batch_size",)},
            sort_keys=True,
        )
        if key not in self._rates:
            rng = np.random.default_rng(0)
            n = min(self.rate_sample, len(self.task.texts))
            if spec.padding == "max_length":  # every text costs the same: a small sample will do
                n = min(n, 64)
            sample = [self.task.texts[i] for i in rng.choice(len(self.task.texts), n, False)]
            bb = Backbone(spec, device=self.device)
            bb.load()
            self._params.setdefault(spec.model, bb.n_parameters())
            # Two passes, the second timed: the first pays one-off kernel set-up for each new
            # batch shape, which a long extraction amortizes.
            bb.embed(sample, progress=False)
            t0 = time.perf_counter()
            bb.embed(sample, progress=False)
            dt = time.perf_counter() - t0
            self._rates[key] = {
                "spec": spec_label(spec),
                "seconds_per_text": dt / n,
                "sample": n,
                "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
                "measured": _dt.datetime.now().isoformat(timespec="seconds"),
            }
            log(f"rate {spec_label(spec)}: {n / dt:.1f} texts/s on {n} sample texts")
            self._save_rates()
        return self._rates[key]

    def _save_rates(self) -> None:
        if self.rates_path is None:
            return
        self.rates_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.rates_path, {"rates": self._rates, "frozen_params": self._params})
