"""`llmembed reproduce`: the paper's benchmark table on this machine, with peers and ablations.

One JSON record per (dataset, method, seed) is written atomically to
``<results>/runs/<dataset>/<method>/seed<k>.json`` as soon as it is done; a rerun skips the records
that exist (``force=True`` redoes them), so a long run can be interrupted and continued by anyone.
``docs/results.md`` and the plots are then regenerated from every record found
(:func:`write_report`, ``llmembed reproduce --report-only``).

Methods (``--methods``; group names ``ours``, ``published``, ``ablations``, ``peers``, ``all``):

* ``llmembed``: the CPU default recipe, read at run time with ``load_recipe("cpu")``.
* ``llmembed-published``: LLMEmbed as published on the same backbones: the decoder's last 5
  layers, token mean over a fixed max_length padding, the ``paper`` recipe's head and training
  settings with the double softmax, no standardization, fixed epochs, no validation split.
* ablations: each backbone alone (last layer; best layer picked by a ridge probe on the
  validation split), mean / max / concat fusion instead of co-occurrence, leave one backbone out,
  sigma sensitivity. Everything else as in the CPU recipe.
* peers: TF-IDF (word 1-2-grams) + linear SVM; logistic regression on each backbone's standard
  sentence embedding (MTEB-style); SetFit (all-MiniLM-L6-v2 body from the zoo) with a capped
  number of contrastive pairs.

Hyperparameters are always chosen on a validation split carved from the training split
(:func:`llmembed.training.split_validation`, the split the LLMEmbed heads early-stop on), never
on test. Features come from one :class:`~llmembed.cache.EmbeddingCache` per dataset group under
``cache_dir``; every backbone is extracted once per dataset with the union of the layers that any
method needs, and each method slices what it uses, so re-running the table does no forward pass.
Extraction cost is reported for each method's *exact* backbone specs, measured on a fixed sample
of texts (cache off) and scaled to the dataset.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .backbones import Backbone, BackboneSpec, parse_layers
from .cache import EmbeddingCache, default_cache_dir
from .errors import LLMEmbedError
from .heads import HeadConfig
from .metrics import classification_metrics
from .recipes import Recipe, load_recipe
from .training import TrainConfig, split_validation

SCHEMA = 1

# Cheapest first: R52 right after R8 (their texts overlap, so its features are mostly cached);
# SST-2 last among the official splits (67k training sentences).
DEFAULT_DATASETS = ("mr", "agnews", "r8", "r52", "sst2")

# Published anchors (accuracy, %), quoted with their source; not run here.
ANCHOR_SOURCE = (
    "ShannonAI/GPT-CLS-CARP README (Sun et al., 2023, *Text Classification via Large Language "
    "Models*), results table: supervised RoBERTa-Large, and CARP few-shot (FT-Retriever, k=16) "
    "with GPT-3 text-davinci-003"
)
ANCHORS: dict[str, dict[str, float]] = {
    "RoBERTa-large fine-tuned (published)": {
        "sst2": 95.99,
        "agnews": 95.55,
        "r8": 97.76,
        "r52": 96.42,
        "mr": 91.16,
    },
    "CARP few-shot, GPT-3 (published)": {
        "sst2": 96.80,
        "agnews": 95.99,
        "r8": 98.29,
        "r52": 96.82,
        "mr": 91.90,
    },
}

# "As published": fixed max_length padding of the decoder. The paper uses SST-2 128, AG News 256,
# R8/R52 1024 (MR: longer than any sentence). On 2 CPU cores 1024-token padding of ~9k Reuters
# documents is out of reach, so R8/R52 are capped at 512 (2.7% / 3.4% of documents are longer).
PUBLISHED_MAX_LENGTH = {"sst2": 128, "mr": 128, "agnews": 256, "r8": 512, "r52": 512}
PAPER_MAX_LENGTH = {"sst2": 128, "mr": "3000/1500", "agnews": 256, "r8": 1024, "r52": 1024}

SIGMAS = (0.01, 0.1, 1.0, 10.0)
FUSIONS = ("mean", "max", "concat")
SVM_C = (0.1, 1.0, 10.0)
LR_C = (0.01, 0.1, 1.0, 10.0)
SEEDS = 3  # seeds per (dataset, method): every figure is a mean over at least this many
VAL_FRACTION = 0.1  # validation split for the peers' hyperparameter choice (stratified)
# SetFit contrastive pairs: 1,000 keeps one SetFit run at a few minutes on 2 CPU cores.
SETFIT_MAX_PAIRS = 1000

QUICK = {
    "dataset": "sst2",
    "n_train": 1000,
    "n_test": 500,
    "methods": ("llmembed", "tfidf-svm", "lr-minilm-l6", "lr-mpnet-base"),
}

GROUP_ORDER = ("ours", "published", "peer", "ablation")


def log(msg: str) -> None:
    print(f"[reproduce {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# Environment description (stored in every record)
# --------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gb = round(int(line.split()[1]) / 1024**2, 1)
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError, AttributeError):
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        pass
    return info


def package_versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in (
        "llmembed",
        "torch",
        "transformers",
        "tokenizers",
        "scikit-learn",
        "numpy",
        "safetensors",
        "setfit",
        "sentence-transformers",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_info(path: str | os.PathLike | None = None) -> dict[str, Any]:
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(dirty)}


# --------------------------------------------------------------------------------------------
# Tasks: a dataset as (all texts, labels, train/test indices per seed)
# --------------------------------------------------------------------------------------------


@dataclass
class Task:
    """A benchmark's texts and labels with its evaluation protocol.

    ``texts`` holds every text once (train then test for the official protocol, the labelled
    pool for a CV fallback); :meth:`split` gives the train / test indices of one seed.
    """

    name: str
    protocol: str
    texts: list[str]
    y: np.ndarray
    classes: list[str]
    folds: list[tuple[np.ndarray, np.ndarray]] | None = None
    n_train: int = 0
    note: str = ""
    quick: bool = False

    @property
    def group(self) -> str:
        """Cache group: R8 and R52 share their documents, so they share one cache folder."""
        return "reuters" if self.name in ("r8", "r52") else self.name

    def split(self, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
        if self.folds is None:
            n = len(self.texts)
            tr, te = np.arange(self.n_train), np.arange(self.n_train, n)
            return tr, te, f"official train {len(tr)} / test {len(te)}"
        k = seed % len(self.folds)
        tr, te = self.folds[k]
        return tr, te, f"fold {k} of {len(self.folds)}: train {len(tr)} / test {len(te)}"


def load_task(
    name: str,
    data_dir: str | os.PathLike | None = None,
    quick: bool = False,
    n_train: int | None = None,
    n_test: int | None = None,
) -> Task:
    """Load a benchmark (optionally a stratified subset) as a Task."""
    from .datasets import load_benchmark

    ds = load_benchmark(name, data_dir)
    if quick or n_train is not None or n_test is not None:
        if ds.is_cv:
            pool = (n_train or 0) + (n_test or 0) or None
            ds = ds.subsample(None, pool, seed=0)
        else:
            ds = ds.subsample(n_train, n_test, seed=0)
    classes = list(ds.label_names)
    index = {c: i for i, c in enumerate(classes)}
    if not ds.is_cv:
        texts = list(ds.train_texts) + list(ds.test_texts)
        labels = list(ds.train_labels) + list(ds.test_labels)
        return Task(
            name,
            ds.protocol,
            texts,
            np.array([index[v] for v in labels]),
            classes,
            n_train=len(ds.train_texts),
            note=ds.note,
            quick=quick,
        )
    texts = list(ds.train_texts) + list(ds.test_texts)
    labels = list(ds.train_labels) + list(ds.test_labels)
    positions: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        positions.setdefault(t, []).append(i)
    folds = []
    for _tr_t, _tr_l, te_t, _te_l in ds.splits(n_folds=5, seed=0):
        # Map the fold's test texts back to pool indices (duplicates taken in pool order).
        queues = {t: list(p) for t, p in positions.items()}
        te = np.array(sorted(queues[t].pop(0) for t in te_t))
        tr = np.setdiff1d(np.arange(len(texts)), te)
        folds.append((tr, te))
    return Task(
        name,
        ds.protocol,
        texts,
        np.array([index[v] for v in labels]),
        classes,
        folds=folds,
        note=ds.note,
        quick=quick,
    )


# --------------------------------------------------------------------------------------------
# Features: one superset extraction per backbone group, sliced per method
# --------------------------------------------------------------------------------------------


def _num_hidden_states(model: str) -> int:
    from . import zoo

    if model in zoo.MODELS and zoo.is_installed(model):
        return zoo.MODELS[model].num_layers + 1
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(zoo.resolve(model))
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    return int(config.num_hidden_layers) + 1


_SPEC_KEYS = ("model", "pooling", "max_length", "padding", "dtype")


def _group_key(spec: BackboneSpec) -> tuple:
    return tuple(getattr(spec, k) for k in _SPEC_KEYS)


def spec_label(spec: BackboneSpec) -> str:
    pad = "" if spec.padding == "longest" else f", pad {spec.padding}"
    return f"{spec.model}[{spec.layers}; {spec.pooling}; {spec.max_length}{pad}]"


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
            return [_num_hidden_states(spec.model) - 1]
        return parse_layers(spec.layers, _num_hidden_states(spec.model))

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
        for meta_path in sorted(folder.glob("*/meta.json")):
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue
            spec = meta.get("spec", {})
            layers = meta.get("layers") or []
            same = all(spec.get(k) == getattr(base, k) for k in _SPEC_KEYS)
            if not same or not want <= set(layers):
                continue
            chunks = len(list(meta_path.parent.glob("chunk-*.safetensors")))
            if chunks <= best_chunks:
                continue
            candidate = replace(base, layers=",".join(map(str, layers)))
            try:  # the folder must be exactly this spec (same weights, dtype, version)
                if Backbone(candidate, device=self.device).fingerprint() != meta_path.parent.name:
                    continue
            except Exception:  # noqa: BLE001 - an unusable entry is simply not reused
                continue
            best, best_chunks = list(layers), chunks
        return best

    def superset_spec(self, key: tuple) -> BackboneSpec:
        return replace(self._specs[key], layers=",".join(map(str, self.superset_layers(key))))

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
        self._params.setdefault(sup.model, _count_params(bb))
        return arr

    def release(self) -> None:
        self._arrays.clear()
        self._partial.clear()

    # -- costs ---------------------------------------------------------------------------------
    def frozen_params(self, model: str) -> int:
        if model not in self._params:
            bb = Backbone(BackboneSpec(model), device="cpu")
            self._params[model] = _count_params(bb)
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
            self._params.setdefault(spec.model, _count_params(bb))
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
        _atomic_write_json(self.rates_path, {"rates": self._rates, "frozen_params": self._params})


def _count_params(bb: Backbone) -> int:
    bb.load()
    return int(sum(p.numel() for p in bb._model.parameters()))


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What a method needs to run on one task."""

    task: Task
    recipe: Recipe
    paper: Recipe
    store: FeatureStore
    options: dict[str, Any] = field(default_factory=dict)

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


def method_config(method: Method, recipe: Recipe, paper: Recipe, options: dict) -> dict:
    """Everything a method's result depends on besides data and seed (hashed into records)."""
    cfg: dict[str, Any] = {"method": method.name, "schema": SCHEMA}
    if "recipe" in method.uses:
        cfg["recipe"] = recipe.to_dict()
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
    import hashlib

    blob = json.dumps(config, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


_ENCODER_TYPES = {
    "bert",
    "roberta",
    "xlm-roberta",
    "mpnet",
    "distilbert",
    "deberta",
    "deberta-v2",
    "electra",
    "albert",
    "modernbert",
    "nomic_bert",
}


def _is_decoder(model: str) -> bool:
    """A decoder LLM (the backbone the published code reads layer-wise with padded means)?"""
    from . import zoo

    if model in zoo.MODELS:
        return zoo.MODELS[model].kind == "decoder"
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(zoo.resolve(model))
    except (OSError, ValueError):
        return False
    return config.model_type not in _ENCODER_TYPES


def _short(model: str) -> str:
    return model.split("/")[-1].lower()


def published_specs(ctx: Context) -> list[BackboneSpec]:
    """The recipe's backbones with every decoder read as published: last 5 layers, token mean
    over a fixed max_length padding. Encoders keep the recipe's settings."""
    cap = ctx.options.get("published_max_length", PUBLISHED_MAX_LENGTH).get(ctx.task.name, 512)
    out = []
    for spec in ctx.recipe.backbones:
        if _is_decoder(spec.model):
            out.append(
                replace(
                    spec, layers="-5:", pooling="mean_padded", padding="max_length", max_length=cap
                )
            )
        else:
            out.append(spec)
    return out


def published_configs(ctx: Context) -> tuple[HeadConfig, TrainConfig]:
    head = HeadConfig.from_dict(
        {**ctx.paper.head.to_dict(), "double_softmax": True, "standardize": False}
    )
    train = TrainConfig.from_dict(
        {**ctx.paper.train.to_dict(), "val_fraction": 0.0, "patience": None}
    )
    return head, train


def _remap_mean_of(head: HeadConfig, keep: list[int]) -> Any:
    """mean_of for a head over backbones `keep` (indices into the recipe's list)."""
    kept = [keep.index(i) for i in head.mean_indices if i in keep]
    if not kept:
        kept = list(range(len(keep)))
    return kept[0] if len(kept) == 1 else kept


def _timed_extraction(ctx: Context, specs: Sequence[BackboneSpec], n_texts: int, n_test: int):
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


def run_llmembed(
    ctx: Context,
    tr: np.ndarray,
    te: np.ndarray,
    seed: int,
    specs: Sequence[BackboneSpec],
    head: HeadConfig,
    train: TrainConfig,
    extra: dict[str, Any] | None = None,
    subset: bool = False,
) -> dict[str, Any]:
    """Train an LLMEmbed head on cached features of `specs` and evaluate it on test.

    subset: train / test on the published-comparison subset of (tr, te) (extracting only
    those texts when their features are not all cached)."""
    import torch

    from .training import predict_logits, train_head

    task = ctx.task
    n_full = len(tr) + len(te)
    info = None
    if subset:
        tr, te, info = published_subset(ctx, tr, te)
        rows = np.concatenate([tr, te])
        feats = [ctx.store.get(s, rows=rows) for s in specs]
        train_x = [np.ascontiguousarray(f[: len(tr)]) for f in feats]
        test_x = [torch.as_tensor(np.ascontiguousarray(f[len(tr) :])) for f in feats]
    else:
        feats = [ctx.store.get(s) for s in specs]
        train_x = [np.ascontiguousarray(f[tr]) for f in feats]
        test_x = [torch.as_tensor(np.ascontiguousarray(f[te])) for f in feats]
    del feats
    train = replace(train, seed=seed)
    with train_threads(ctx.options.get("train_threads")):
        t0 = time.perf_counter()
        res = train_head(
            train_x,
            task.y[tr],
            len(task.classes),
            head,
            train,
            device="cpu",
            progress=False,
        )
        train_seconds = time.perf_counter() - t0
        del train_x
        t0 = time.perf_counter()
        pred = predict_logits(res.head, test_x).argmax(1).numpy()
        head_infer = time.perf_counter() - t0
    # Extraction cost of the whole split (on a subset too: what the method costs at full size).
    ext = _timed_extraction(ctx, specs, n_full, len(te))
    head_per_1000 = head_infer / max(len(te), 1) * 1000
    val = res.val_metrics or {}
    return {
        "pred": pred,
        "test_index": te if subset else None,
        "subset": info,
        "train_seconds": train_seconds,
        "selection_seconds": 0.0,
        "head_infer_seconds_per_1000": head_per_1000,
        "infer_seconds_per_1000": ext["extract_seconds_per_1000"] + head_per_1000,
        **ext,
        "trainable_params": res.head.n_parameters(),
        "frozen_params": sum(ctx.store.frozen_params(m) for m in {s.model for s in specs}),
        "hyperparameters": {
            "backbones": [s.to_dict() for s in specs],
            "head": head.to_dict(),
            "train": train.to_dict(),
            "best_epoch": res.best_epoch,
            "epochs_run": len(res.history),
            **(extra or {}),
        },
        "validation": {
            "n": val.get("n", 0),
            "accuracy": val.get("accuracy"),
            "macro_f1": val.get("macro_f1"),
            "chooses": "best epoch (early stopping)" if val else "nothing (fixed epochs)",
        },
    }


def _ours(ctx: Context, tr, te, seed):
    r = ctx.recipe
    return run_llmembed(ctx, tr, te, seed, r.backbones, r.head, r.train, {"recipe": r.name})


PUBLISHED_SUBSET = (1000, 500)  # stratified train / test texts for the published ladder


def published_subset(
    ctx: Context, tr: np.ndarray, te: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The fixed stratified subset (seed 0) of a split on which the published configuration and
    its fixes are compared: fixed max_length padding is too slow on CPU for whole datasets."""
    from .datasets import _stratified_indices

    n_tr, n_te = ctx.options.get("published_subset", PUBLISHED_SUBSET)
    y = ctx.task.y
    s_tr = tr[_stratified_indices([str(v) for v in y[tr]], n_tr, 0)]
    s_te = te[_stratified_indices([str(v) for v in y[te]], n_te, 1)]
    info = {
        "train": len(s_tr),
        "test": len(s_te),
        "of_train": len(tr),
        "of_test": len(te),
        "sampling": "stratified, seed 0, same for every seed",
    }
    return s_tr, s_te, info


def _published_step(step: int):
    """The published configuration with the first `step` fixes applied, on the subset:
    1 loss on logits (no double softmax), 2 standardized inputs, 3 validation split + early
    stopping (the shipped `paper` recipe's training settings), 4 masked token mean with dynamic
    padding (the recipe's pooling of the same last 5 layers). Step 5 is ours on the subset."""

    def needs(ctx):
        if step < 4:
            return published_specs(ctx)
        if step == 4:
            return [
                replace(b, layers="-5:") if _is_decoder(b.model) else b
                for b in ctx.recipe.backbones
            ]
        return list(ctx.recipe.backbones)

    def run(ctx, tr, te, seed):
        if step == 5:
            r = ctx.recipe
            return run_llmembed(
                ctx, tr, te, seed, r.backbones, r.head, r.train, {"recipe": r.name}, subset=True
            )
        head, train = published_configs(ctx)
        if step >= 1:
            head = replace(head, double_softmax=False)
        if step >= 2:
            head = replace(head, standardize=True)
        if step >= 3:
            train = ctx.paper.train
        cap = ctx.options.get("published_max_length", PUBLISHED_MAX_LENGTH).get(ctx.task.name, 512)
        extra = {
            "published_max_length": cap,
            "paper_max_length": PAPER_MAX_LENGTH.get(ctx.task.name),
            "fixes": PUBLISHED_FIXES[:step],
        }
        return run_llmembed(ctx, tr, te, seed, needs(ctx), head, train, extra, subset=True)

    return needs, run


PUBLISHED_FIXES = [
    "loss on logits",
    "standardized inputs",
    "validation split + early stopping",
    "masked mean, dynamic padding",
]
PUBLISHED_LADDER = [
    ("llmembed-published", "LLMEmbed as published (subset)"),
    ("published-fix1-logits", "+ loss on logits (no double softmax)"),
    ("published-fix2-standardize", "+ standardized inputs"),
    ("published-fix3-early-stop", "+ validation split and early stopping"),
    ("published-fix4-masked-mean", "+ masked token mean, dynamic padding"),
    ("llmembed-subset", "= ours (recipe layers and head) on the same subset"),
]


def _alone_last(i: int):
    def needs(ctx):
        return [replace(ctx.recipe.backbones[i], layers="-1")]

    def run(ctx, tr, te, seed):
        head = replace(ctx.recipe.head, mean_of=0)
        return run_llmembed(ctx, tr, te, seed, needs(ctx), head, ctx.recipe.train)

    return needs, run


def _probe_best_layer(
    ctx: Context, spec: BackboneSpec, tr: np.ndarray, seed: int
) -> tuple[int, list[dict[str, Any]]]:
    """Pick the layer whose ridge probe scores best on the validation split of `tr`."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = ctx.task.y[tr]
    fit_idx, val_idx = split_validation(y, ctx.recipe.train.val_fraction or VAL_FRACTION, seed)
    rows = []
    for layer in ctx.store.layers_of(replace(spec, layers=_grid_spec(ctx, spec))):
        x = ctx.store.get(replace(spec, layers=str(layer)))[tr].reshape(len(tr), -1)
        clf = make_pipeline(StandardScaler(), RidgeClassifier(alpha=10.0))
        clf.fit(x[fit_idx], y[fit_idx])
        acc = float((clf.predict(x[val_idx]) == y[val_idx]).mean())
        rows.append({"layer": layer, "val_accuracy": acc})
    best = max(rows, key=lambda r: (r["val_accuracy"], r["layer"]))
    return best["layer"], rows


def _grid_spec(ctx: Context, spec: BackboneSpec) -> str:
    return ",".join(map(str, layer_grid(_num_hidden_states(spec.model))))


def _alone_best(i: int):
    def needs(ctx):
        spec = ctx.recipe.backbones[i]
        return [replace(spec, layers=_grid_spec(ctx, spec))]

    def run(ctx, tr, te, seed):
        spec = ctx.recipe.backbones[i]
        t0 = time.perf_counter()
        layer, rows = _probe_best_layer(ctx, spec, tr, seed)
        probe_seconds = time.perf_counter() - t0
        head = replace(ctx.recipe.head, mean_of=0)
        out = run_llmembed(
            ctx,
            tr,
            te,
            seed,
            [replace(spec, layers=str(layer))],
            head,
            ctx.recipe.train,
            {"layer": layer, "layer_probe": rows},
        )
        out["selection_seconds"] = probe_seconds
        out["validation"]["chooses"] = "layer (ridge probe on validation) and best epoch"
        out["validation"]["layer_probe_accuracy"] = max(r["val_accuracy"] for r in rows)
        return out

    return needs, run


def _head_variant(**changes: Any):
    """The recipe with some head settings changed (fusion, sigma ablations)."""

    def run(ctx, tr, te, seed):
        head = replace(ctx.recipe.head, **changes)
        return run_llmembed(ctx, tr, te, seed, ctx.recipe.backbones, head, ctx.recipe.train)

    return run


def _drop(i: int):
    def needs(ctx):
        return [b for j, b in enumerate(ctx.recipe.backbones) if j != i]

    def run(ctx, tr, te, seed):
        keep = [j for j in range(len(ctx.recipe.backbones)) if j != i]
        head = replace(ctx.recipe.head, mean_of=_remap_mean_of(ctx.recipe.head, keep))
        return run_llmembed(ctx, tr, te, seed, needs(ctx), head, ctx.recipe.train)

    return needs, run


# -- peers ------------------------------------------------------------------------------------


def choose_on_validation(
    y: np.ndarray,
    grid: Sequence[Any],
    fit_score: Callable[[Any, np.ndarray, np.ndarray], float],
    seed: int,
    fraction: float = VAL_FRACTION,
) -> tuple[Any, list[dict[str, Any]], float]:
    """Score every grid value on a stratified validation split carved from the training labels
    `y` (``fit_score(value, fit_idx, val_idx)`` indexes into the TRAINING set only) and return
    (best value, rows, best score). Ties go to the earlier grid value."""
    fit_idx, val_idx = split_validation(y, fraction, seed)
    rows, best, best_score = [], grid[0], -np.inf
    for value in grid:
        score = float(fit_score(value, fit_idx, val_idx))
        rows.append({"value": value, "val_accuracy": score})
        if score > best_score:
            best, best_score = value, score
    return best, rows, best_score


def _choose_and_fit(
    make: Callable[[Any], Any], x: np.ndarray, y: np.ndarray, grid: Sequence[Any], seed: int
) -> tuple[Any, Any, list[dict[str, Any]], float, float, float]:
    """Choose `make(value)`'s hyperparameter on a validation split of the training features
    (x, y), then refit on all of them: (model, value, rows, val score, selection s, fit s)."""

    def fit_score(c, fit_idx, val_idx):
        model = make(c).fit(x[fit_idx], y[fit_idx])
        return (model.predict(x[val_idx]) == y[val_idx]).mean()

    t0 = time.perf_counter()
    with _quiet_warnings():
        c, rows, val_acc = choose_on_validation(y, grid, fit_score, seed)
    selection = time.perf_counter() - t0
    t0 = time.perf_counter()
    with _quiet_warnings():
        model = make(c).fit(x, y)
    return model, c, rows, val_acc, selection, time.perf_counter() - t0


def _tfidf_svm(ctx: Context, tr, te, seed):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    texts = np.asarray(ctx.task.texts, dtype=object)

    def make(c):
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
        return make_pipeline(vec, LinearSVC(C=c, random_state=seed))

    model, c, rows, val_acc, selection, train_seconds = _choose_and_fit(
        make, texts[tr], ctx.task.y[tr], SVM_C, seed
    )
    vec, svm = model[0], model[-1]
    t0 = time.perf_counter()
    pred = model.predict(texts[te])
    infer = (time.perf_counter() - t0) / max(len(te), 1) * 1000
    return {
        "pred": pred,
        "train_seconds": train_seconds,
        "selection_seconds": selection,
        "head_infer_seconds_per_1000": infer,
        "infer_seconds_per_1000": infer,
        "extract_seconds": 0.0,
        "extract_test_seconds": 0.0,
        "trainable_params": int(svm.coef_.size + svm.intercept_.size),
        "frozen_params": 0,
        "hyperparameters": {
            "vectorizer": "TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)",
            "C": c,
            "grid": rows,
            "n_features": len(vec.vocabulary_),
        },
        "validation": {"accuracy": val_acc, "chooses": "C", "n": int(round(len(tr) * 0.1))},
    }


def standard_embedding_spec(model: str, recipe: Recipe) -> tuple[BackboneSpec, bool]:
    """(spec, l2-normalize) of a backbone's standard sentence embedding: for a
    sentence-transformers folder its own pooling / max_seq_length / Normalize; for a decoder
    (no standard one) the recipe's token pooling of the last layer."""
    from . import zoo

    base = next((b for b in recipe.backbones if b.model == model), BackboneSpec(model))
    folder = Path(zoo.resolve(model))
    if (folder / "modules.json").is_file():
        modules = json.loads((folder / "modules.json").read_text())
        normalize = any("Normalize" in m.get("type", "") for m in modules)
        max_len = base.max_length
        with contextlib.suppress(OSError, ValueError, KeyError):
            max_len = int(
                json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
            )
        pooling = "mean"
        for m in modules:
            if "Pooling" in m.get("type", ""):
                with contextlib.suppress(OSError, ValueError):
                    cfg = json.loads((folder / m["path"] / "config.json").read_text())
                    if cfg.get("pooling_mode_cls_token"):
                        pooling = "first"
        return replace(base, layers="-1", pooling=pooling, max_length=max_len), normalize
    return replace(base, layers="-1"), False


def _lr_embedding(model: str):
    def needs(ctx):
        return [standard_embedding_spec(model, ctx.recipe)[0]]

    def run(ctx, tr, te, seed):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        spec, normalize = standard_embedding_spec(model, ctx.recipe)
        x = ctx.store.get(spec)[:, 0]
        if normalize:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        xtr, ytr = x[tr], ctx.task.y[tr]

        def make(c):
            return make_pipeline(
                StandardScaler(), LogisticRegression(C=c, max_iter=1000, random_state=seed)
            )

        clf, c, rows, val_acc, selection, train_seconds = _choose_and_fit(
            make, xtr, ytr, LR_C, seed
        )
        t0 = time.perf_counter()
        pred = clf.predict(x[te])
        head_per_1000 = (time.perf_counter() - t0) / max(len(te), 1) * 1000
        ext = _timed_extraction(ctx, [spec], len(tr) + len(te), len(te))
        lr = clf[-1]
        return {
            "pred": pred,
            "train_seconds": train_seconds,
            "selection_seconds": selection,
            "head_infer_seconds_per_1000": head_per_1000,
            "infer_seconds_per_1000": ext["extract_seconds_per_1000"] + head_per_1000,
            **ext,
            "trainable_params": int(lr.coef_.size + lr.intercept_.size),
            "frozen_params": ctx.store.frozen_params(model),
            "hyperparameters": {
                "embedding": spec.to_dict(),
                "l2_normalize": normalize,
                "classifier": "StandardScaler + LogisticRegression(max_iter=1000)",
                "C": c,
                "grid": rows,
            },
            "validation": {"accuracy": val_acc, "chooses": "C", "n": int(round(len(tr) * 0.1))},
        }

    return needs, run


@contextlib.contextmanager
def _quiet_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


SETFIT_BODY = "minilm-l6"
SETFIT_ITERATIONS = 20  # setfit's usual pair-generation iterations
SETFIT_BATCH = 16


def setfit_budget(n_classes: int, max_pairs: int) -> tuple[int, int]:
    """(texts in SetFit's contrastive subset, setfit `max_steps` or -1 for no cap).

    The subset makes 2 * SETFIT_ITERATIONS pairs per text and holds at least 2 texts per
    class; when that floor alone exceeds `max_pairs`, training stops after `max_pairs` pairs."""
    n_sub = max(2 * n_classes, max_pairs // (2 * SETFIT_ITERATIONS))
    fits = 2 * SETFIT_ITERATIONS * n_sub <= max_pairs
    return n_sub, -1 if fits else max_pairs // SETFIT_BATCH


def _setfit(ctx: Context, tr, te, seed):
    """SetFit on its usual settings (batch SETFIT_BATCH, 1 epoch, SETFIT_ITERATIONS iterations of
    pair generation, logistic-regression head) with the contrastive phase on a stratified subset
    sized so that it makes at most `setfit_max_pairs` pairs; the head is fitted on the whole
    training split (its C chosen on the validation split). With many classes the subset's floor
    of 2 texts per class makes more pairs than the cap: setfit's own `max_steps` then stops at
    the cap."""
    import torch
    from datasets import Dataset as HFDataset
    from sentence_transformers import SentenceTransformer
    from setfit import SetFitModel, Trainer, TrainingArguments
    from sklearn.linear_model import LogisticRegression

    from . import zoo
    from .datasets import _stratified_indices

    max_pairs = int(ctx.options.get("setfit_max_pairs") or SETFIT_MAX_PAIRS)
    iterations, batch_size = SETFIT_ITERATIONS, SETFIT_BATCH
    texts, y = ctx.task.texts, ctx.task.y
    xtr, ytr = [texts[i] for i in tr], y[tr]
    n_sub, max_steps = setfit_budget(len(ctx.task.classes), max_pairs)
    sub = _stratified_indices([str(v) for v in ytr], n_sub, seed)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    body = SentenceTransformer(zoo.resolve(SETFIT_BODY), device="cpu")
    model = SetFitModel(model_body=body, model_head=LogisticRegression())
    args = TrainingArguments(
        batch_size=batch_size,
        num_epochs=1,
        num_iterations=iterations,
        max_steps=max_steps,
        seed=seed,
        show_progress_bar=False,
    )
    train_ds = HFDataset.from_dict(
        {"text": [xtr[i] for i in sub], "label": [int(ytr[i]) for i in sub]}
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_ds)
    with (
        train_threads(ctx.options.get("train_threads")),
        _quiet_warnings(),
        contextlib.redirect_stdout(sys.stderr),
    ):
        trainer.train_embeddings(
            x_train=list(train_ds["text"]), y_train=list(train_ds["label"]), args=args
        )
    contrastive_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb_tr = model.model_body.encode(xtr, batch_size=64, show_progress_bar=False)
    encode_seconds = time.perf_counter() - t0

    head, c, rows, val_acc, selection, head_seconds = _choose_and_fit(
        lambda c: LogisticRegression(C=c, max_iter=1000), emb_tr, ytr, LR_C, seed
    )
    t0 = time.perf_counter()
    emb_te = model.model_body.encode([texts[i] for i in te], batch_size=64, show_progress_bar=False)
    pred = head.predict(emb_te)
    infer = (time.perf_counter() - t0) / max(len(te), 1) * 1000
    n_pairs = 2 * iterations * len(sub) if max_steps < 0 else max_steps * batch_size
    return {
        "pred": pred,
        "train_seconds": contrastive_seconds + encode_seconds + head_seconds,
        "selection_seconds": selection,
        "head_infer_seconds_per_1000": infer,
        "infer_seconds_per_1000": infer,
        "extract_seconds": 0.0,
        "extract_test_seconds": 0.0,
        "trainable_params": int(
            sum(p.numel() for p in model.model_body.parameters()) + head.coef_.size
        ),
        "frozen_params": 0,
        "hyperparameters": {
            "body": f"{SETFIT_BODY} ({zoo.MODELS[SETFIT_BODY].hub_id})",
            "batch_size": batch_size,
            "num_epochs": 1,
            "num_iterations": iterations,
            "max_steps": max_steps,
            "contrastive_texts": len(sub),
            "contrastive_pairs": n_pairs,
            "max_pairs": max_pairs,
            "head": "LogisticRegression on the whole training split",
            "C": c,
            "grid": rows,
            "seconds": {
                "contrastive": round(contrastive_seconds, 2),
                "encode_train": round(encode_seconds, 2),
                "head": round(head_seconds, 2),
            },
        },
        "validation": {"accuracy": val_acc, "chooses": "head C", "n": int(round(len(tr) * 0.1))},
    }


def build_methods(recipe: Recipe) -> list[Method]:
    """Every method, in run order within its group, for this CPU recipe."""
    recipe_specs = lambda ctx: list(ctx.recipe.backbones)  # noqa: E731
    methods = [
        Method(
            "llmembed",
            "ours",
            "LLMEmbed, CPU default recipe (ours)",
            recipe_specs,
            _ours,
        ),
        Method(
            "tfidf-svm",
            "peer",
            "TF-IDF (word 1-2-grams) + linear SVM",
            lambda ctx: [],
            _tfidf_svm,
            uses=(),
        ),
    ]
    for spec in recipe.backbones:
        needs, run = _lr_embedding(spec.model)
        methods.append(
            Method(
                f"lr-{_short(spec.model)}",
                "peer",
                f"logistic regression on {spec.model} sentence embedding",
                needs,
                run,
                uses=(),  # depends on the embedding only, not on the recipe's head
                config=lambda rec, model=spec.model: {
                    "embedding": standard_embedding_spec(model, rec)[0].to_dict()
                },
            )
        )
    methods.append(
        Method(
            "setfit-minilm",
            "peer",
            "SetFit (all-MiniLM-L6-v2 body, capped contrastive pairs)",
            lambda ctx: [],
            _setfit,
            requires=("setfit", "sentence_transformers", "datasets"),
            uses=(),
        )
    )
    for step, (name, label) in enumerate(PUBLISHED_LADDER):
        needs, run = _published_step(step)
        methods.append(Method(name, "published", label, needs, run, uses=("recipe", "paper")))
    for i, spec in enumerate(recipe.backbones):
        needs, run = _alone_last(i)
        methods.append(
            Method(
                f"abl-alone-{_short(spec.model)}-last",
                "ablation",
                f"{spec.model} alone, last layer",
                needs,
                run,
            )
        )
        needs, run = _alone_best(i)
        methods.append(
            Method(
                f"abl-alone-{_short(spec.model)}-best",
                "ablation",
                f"{spec.model} alone, best layer (ridge probe on validation)",
                needs,
                run,
            )
        )
    for fusion in FUSIONS:
        methods.append(
            Method(
                f"abl-fusion-{fusion}",
                "ablation",
                f"{fusion} fusion instead of co-occurrence",
                recipe_specs,
                _head_variant(fusion=fusion),
            )
        )
    if len(recipe.backbones) > 1:
        for i, spec in enumerate(recipe.backbones):
            needs, run = _drop(i)
            methods.append(
                Method(
                    f"abl-drop-{_short(spec.model)}",
                    "ablation",
                    f"without {spec.model}",
                    needs,
                    run,
                )
            )
    for sigma in SIGMAS:
        if not math.isclose(sigma, recipe.head.sigma):
            methods.append(
                Method(
                    f"abl-sigma-{sigma:g}",
                    "ablation",
                    f"sigma = {sigma:g} (recipe: {recipe.head.sigma:g})",
                    recipe_specs,
                    _head_variant(sigma=sigma),
                )
            )
    return methods


def select_methods(methods: list[Method], wanted: Sequence[str] | None) -> list[Method]:
    """Filter by names, group names (ours, published, peers, ablations, all) or glob-ish
    prefixes ending in '*'."""
    if not wanted:
        return methods
    groups = {"ours": "ours", "published": "published", "peers": "peer", "ablations": "ablation"}
    out, known = [], {m.name for m in methods}
    for w in wanted:
        for part in str(w).split(","):
            part = part.strip()
            if not part:
                continue
            if part == "all":
                picked = methods
            elif part in groups:
                picked = [m for m in methods if m.group == groups[part]]
            elif part.endswith("*"):
                picked = [m for m in methods if m.name.startswith(part[:-1])]
            elif part in known:
                picked = [m for m in methods if m.name == part]
            else:
                raise LLMEmbedError(
                    f"Unknown method {part!r}; known: {', '.join(m.name for m in methods)} "
                    "or a group (ours, published, peers, ablations, all)"
                )
            out.extend(m for m in picked if m not in out)
    return [m for m in methods if m in out]


def missing_requirements(method: Method) -> list[str]:
    import importlib.util

    return [r for r in method.requires if importlib.util.find_spec(r) is None]


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


def _atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default))
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _stale(path: Path, want_hash: str) -> bool:
    """True when the record is missing, unreadable, or made with other settings (its config
    hash differs: e.g. the CPU recipe changed since)."""
    if not path.is_file():
        return True
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return True
    if rec.get("config_hash") != want_hash:
        log(f"stale record (settings changed since): {path}")
        return True
    return False


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


def record_path(results_dir: str | os.PathLike, dataset: str, method: str, seed: int) -> Path:
    return Path(results_dir) / "runs" / dataset / method / f"seed{seed}.json"


def load_records(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    out = []
    for p in sorted((Path(results_dir) / "runs").glob("*/*/seed*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            log(f"skipping unreadable record {p}")
            continue
        if rec.get("schema") == SCHEMA:
            out.append(rec)
    return out


def make_record(
    task: Task,
    method: Method,
    seed: int,
    split_desc: str,
    result: dict[str, Any],
    y_true: np.ndarray,
    env: dict[str, Any],
    wall: float,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    pred = np.asarray(result.pop("pred"))
    m = classification_metrics(y_true, pred, labels=range(len(task.classes)))
    metrics = {k: m[k] for k in ("n", "accuracy", "macro_f1", "micro_f1") if k in m}
    if "positive_f1" in m:
        metrics["positive_f1"] = m["positive_f1"]
        metrics["positive_label"] = task.classes[1]
    n_test = int(m["n"])
    head_test = result.get("head_infer_seconds_per_1000", 0.0) * n_test / 1000
    total = (
        result.get("extract_seconds", 0.0)
        + result.get("selection_seconds", 0.0)
        + result.get("train_seconds", 0.0)
        + head_test
    )
    return {
        "schema": SCHEMA,
        "dataset": task.name,
        "protocol": task.protocol,
        "split": split_desc,
        "quick": task.quick,
        "note": task.note,
        "method": method.name,
        "group": method.group,
        "label": method.label,
        "seed": seed,
        "metrics": metrics,
        **result,
        "total_seconds": total,
        "wall_seconds": wall,
        "config_hash": config_hash(config or {}),
        "config": config or {},
        "machine": env["machine"] | {"load_avg_1m": machine_info().get("load_avg_1m")},
        "packages": env["packages"],
        "git": env["git"],
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------


def run(
    datasets: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    seeds: int = SEEDS,
    quick: bool = False,
    force: bool = False,
    results_dir: str | os.PathLike | None = None,
    docs_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    device: str = "auto",
    recipe: str | os.PathLike | Recipe = "cpu",
    n_train: int | None = None,
    n_test: int | None = None,
    progress: bool = True,
    report: bool = True,
    paper: str | os.PathLike | Recipe = "paper",
    options: dict[str, Any] | None = None,
    task_loader: Callable[..., Task] | None = None,
) -> list[dict[str, Any]]:
    """Run every (dataset, method, seed) not yet recorded, then regenerate the report.

    Order: all datasets for ours + published + peers (SetFit excluded), then the ablations, then
    SetFit; within a phase datasets in the order given. Returns the records written now.
    """
    options = dict(options or {})
    if options.get("threads"):
        import torch

        torch.set_num_threads(int(options["threads"]))
    quick_methods = quick and not methods
    if quick:
        datasets = datasets or [QUICK["dataset"]]
        methods = methods or list(QUICK["methods"])
        n_train = n_train or QUICK["n_train"]
        n_test = n_test or QUICK["n_test"]
        seeds = seeds or 1
        options.setdefault("rate_sample", 64)
    datasets = list(datasets or DEFAULT_DATASETS)
    results_dir = Path(results_dir or ("results/quick" if quick else "results"))
    docs_dir = Path(docs_dir) if docs_dir else (results_dir if quick else Path("docs"))
    cache_root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "reproduce"
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    paper = paper if isinstance(paper, Recipe) else load_recipe(paper)
    all_methods = build_methods(rec)
    if quick_methods:  # the quick set, minus what this recipe does not have
        methods = [m for m in methods if m in {x.name for x in all_methods}]
    chosen = select_methods(all_methods, methods)
    for m in chosen:
        missing = missing_requirements(m)
        if missing:
            log(
                f"skipping {m.name}: package(s) {', '.join(missing)} not installed "
                "(pip install 'llmembed[reproduce]')"
            )
    chosen = [m for m in chosen if not missing_requirements(m)]
    # ours + light peers everywhere first, then SetFit, the published ladder, the ablations.
    phases = [
        [m for m in chosen if m.group in ("ours", "peer") and not m.requires],
        [m for m in chosen if m.group in ("ours", "peer") and m.requires],
        [m for m in chosen if m.group == "published"],
        [m for m in chosen if m.group == "ablation"],
    ]
    env = {"machine": machine_info(), "packages": package_versions(), "git": git_info()}
    loader = task_loader or load_task
    written: list[dict[str, Any]] = []
    for phase in phases:
        if not phase:
            continue
        for name in datasets:
            todo = [
                (m, s)
                for m in phase
                for s in range(seeds)
                if force
                or _stale(
                    record_path(results_dir, name, m.name, s),
                    config_hash(method_config(m, rec, paper, options)),
                )
            ]
            if not todo:
                continue
            task = loader(name, data_dir, quick=quick, n_train=n_train, n_test=n_test)
            store = FeatureStore(
                task,
                cache_root,
                device=device,
                progress=progress,
                rate_sample=int(options.get("rate_sample", 200)),
                rates_path=results_dir / "runs" / name / "_extraction_rates.json",
            )
            ctx = Context(task, rec, paper, store, options)
            # Plan every method's specs (not only the selected ones): cached supersets then
            # do not depend on which methods a given run asks for. A quick run plans only its
            # own (cheaper: no full-depth pass for layers it does not use).
            for m in chosen if quick else all_methods:
                store.plan(m.needs(ctx))
            for m, seed in todo:
                tr, te, split_desc = task.split(seed)
                log(f"{name} / {m.name} / seed {seed} ({split_desc})")
                t0 = time.perf_counter()
                result = m.run(ctx, tr, te, seed)
                used = result.pop("test_index", None)
                record = make_record(
                    task,
                    m,
                    seed,
                    split_desc,
                    result,
                    task.y[te if used is None else used],
                    env,
                    time.perf_counter() - t0,
                    config=method_config(m, rec, paper, options),
                )
                _atomic_write_json(record_path(results_dir, name, m.name, seed), record)
                written.append(record)
                met = record["metrics"]
                log(
                    f"  accuracy {met['accuracy']:.4f}  macro-F1 {met['macro_f1']:.4f}  "
                    f"train {record['train_seconds']:.1f}s  "
                    f"total cost {record['total_seconds']:.0f}s"
                )
            store.release()
            if report:
                write_report(results_dir, docs_dir)
    if report:
        write_report(results_dir, docs_dir)
    return written


# --------------------------------------------------------------------------------------------
# Report: docs/results.md and plots, from the records alone
# --------------------------------------------------------------------------------------------

DATASET_TITLES = {"sst2": "SST-2", "mr": "MR", "agnews": "AG News", "r8": "R8", "r52": "R52"}


def aggregate(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(dataset, method) -> means / stds over seeds of the reported figures. Only the records
    made with the newest settings of each (dataset, method) count (stale seeds are left out)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["method"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        newest = max(rs, key=lambda r: r.get("created", "")).get("config_hash")
        rs = sorted((r for r in rs if r.get("config_hash") == newest), key=lambda r: r["seed"])

        def stat(get, rs=rs):
            vals = [v for v in (get(r) for r in rs) if v is not None]
            if not vals:
                return None, None
            arr = np.asarray(vals, dtype=float)
            return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0

        agg = {
            "n_seeds": len(rs),
            "seeds": [r["seed"] for r in rs],
            "group": rs[-1]["group"],
            "label": rs[-1]["label"],
            "protocol": rs[-1]["protocol"],
            "quick": rs[-1].get("quick", False),
            "trainable_params": rs[-1].get("trainable_params"),
            "frozen_params": rs[-1].get("frozen_params"),
            "hyperparameters": [r.get("hyperparameters", {}) for r in rs],
            "validation": [r.get("validation", {}) for r in rs],
            "split": [r.get("split") for r in rs],
        }
        for name in ("accuracy", "macro_f1", "micro_f1", "positive_f1"):
            agg[name] = stat(lambda r, n=name: r["metrics"].get(n))
        for name in (
            "train_seconds",
            "selection_seconds",
            "infer_seconds_per_1000",
            "extract_seconds",
            "total_seconds",
        ):
            agg[name] = stat(lambda r, n=name: r.get(n))
        out[key] = agg
    return out


def _pct(ms: tuple[float | None, float | None], spread: bool = True) -> str:
    mean, std = ms
    if mean is None:
        return "–"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if spread else f"{100 * mean:.2f}"


def _acc(a: dict[str, Any]) -> str:
    """Accuracy cell: mean ± std, marked (n=k) when fewer than SEEDS seeds are in."""
    return _pct(a["accuracy"]) + (f" (n={a['n_seeds']})" if a["n_seeds"] < SEEDS else "")


def _secs(ms: tuple[float | None, float | None]) -> str:
    mean, _ = ms
    if mean is None:
        return "–"
    if mean >= 100:
        return f"{mean:,.0f}"
    return f"{mean:.1f}" if mean >= 1 else f"{mean:.2f}"


def _params(n: int | None) -> str:
    if n is None:
        return "–"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.0f}k"
    return str(n)


def _hp_summary(agg: dict[str, Any]) -> str:
    """Short description of the chosen hyperparameters over seeds (with validation scores)."""
    parts = []
    hps, vals = agg["hyperparameters"], agg["validation"]
    if hps and "C" in hps[0]:
        cs = [h.get("C") for h in hps]
        parts.append("C=" + "/".join(f"{c:g}" for c in cs))
    if hps and "layer" in hps[0]:
        parts.append("layer=" + "/".join(str(h.get("layer")) for h in hps))
    if hps and "best_epoch" in hps[0] and vals and vals[0].get("accuracy") is not None:
        parts.append("best epoch=" + "/".join(str(h.get("best_epoch")) for h in hps))
    elif hps and "epochs_run" in hps[0]:
        parts.append(f"epochs={hps[0].get('epochs_run')}")
    va = [v.get("accuracy") for v in vals if v.get("accuracy") is not None]
    if va:
        parts.append(f"val acc {100 * float(np.mean(va)):.2f}")
    return "; ".join(parts)


def _order(agg_keys: Iterable[str], groups: dict[str, str]) -> list[str]:
    """Methods in report order: ours, the published ladder, peers, ablations."""
    ladder = [name for name, _ in PUBLISHED_LADDER]
    names = list(dict.fromkeys(agg_keys))

    def key(n: str):
        group = GROUP_ORDER.index(groups.get(n, "ablation"))
        return (group, ladder.index(n) if n in ladder else len(ladder), n)

    return sorted(names, key=key)


def write_report(results_dir: str | os.PathLike, docs_dir: str | os.PathLike = "docs") -> Path:
    """Regenerate `<docs_dir>/results.md` and `<docs_dir>/plots/*.png` from every record."""
    records = load_records(results_dir)
    docs = Path(docs_dir)
    name = "results.md"
    plots = docs / "plots"
    agg = aggregate(records)
    text = render_markdown(records, agg, plots_rel=plots.name, results_dir=results_dir)
    docs.mkdir(parents=True, exist_ok=True)
    if records:
        with contextlib.suppress(ImportError):
            plot_accuracy(agg, plots / "accuracy_by_method.png")
            plot_accuracy(
                agg,
                plots / "ablations.png",
                include=_ablation_methods,
                title="Ours, the published configuration fixed step by step, and ablations",
            )
            plot_cost(agg, plots / "accuracy_vs_cost.png")
    out = docs / name
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, out)  # atomic: two runs may regenerate the report at the same time
    return out


def _datasets_in(records) -> list[str]:
    present = {r["dataset"] for r in records}
    return [d for d in DEFAULT_DATASETS if d in present] + sorted(present - set(DEFAULT_DATASETS))


def _coverage_lines(agg: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """What is still missing for the full table (SEEDS seeds of every method on every dataset)."""
    try:
        methods = build_methods(load_recipe("cpu"))
    except Exception:  # noqa: BLE001 - the report must not fail on this
        return []
    titles = {
        "ours": "ours",
        "peer": "peers",
        "published": "published ladder",
        "ablation": "ablations",
    }
    missing = []
    for d in DEFAULT_DATASETS:
        done = {m.name: agg[(d, m.name)]["n_seeds"] if (d, m.name) in agg else 0 for m in methods}
        todo = [m for m in methods if done[m.name] < SEEDS]
        if not todo:
            continue
        parts = []
        for group in GROUP_ORDER:
            ms = [m for m in todo if m.group == group]
            if not ms:
                continue
            total = sum(m.group == group for m in methods)
            names = ", ".join(
                f"`{m.name}`" + (f" ({done[m.name]}/{SEEDS})" if (d, m.name) in agg else "")
                for m in ms
            )
            parts.append(
                f"{titles[group]}: all {total}" if len(ms) == total and total > 3 else names
            )
        line = f"- {DATASET_TITLES.get(d, d)}: " + "; ".join(parts)
        ours_train = agg.get((d, "llmembed"), {}).get("train_seconds", (None, None))[0]
        n_heads = sum(SEEDS - done[m.name] for m in todo if m.group == "ablation")
        if n_heads and ours_train:  # every ablation trains one head per seed, as ours does
            line += (
                f" (the ablations train {n_heads} heads; ours took {ours_train:.0f} s per head"
                f" here, so about {n_heads * ours_train / 3600:.1f} h)"
            )
        missing.append(line)
    lines = ["## Coverage", ""]
    if not missing:
        lines += [f"Every method has {SEEDS} seeds on every dataset.", ""]
        return lines
    lines.append(
        f"Still missing (or fewer than {SEEDS} seeds; records made with other settings do not "
        "count). Continue with `LLMEMBED_DATA=/path/to/datasets llmembed reproduce --threads 1`: "
        "it skips what is done."
    )
    lines.append("")
    lines += missing
    lines.append("")
    return lines


def render_markdown(
    records: list[dict[str, Any]],
    agg: dict[tuple[str, str], dict[str, Any]],
    plots_rel: str = "plots",
    results_dir: str | os.PathLike = "results",
) -> str:
    lines = ["# Benchmark results", ""]
    lines.append(
        "Generated by `llmembed reproduce` (src/llmembed/reproduce.py) from the JSON records in "
        f"`{results_dir}/runs/` (one per dataset x method x seed); do not edit by hand: rerun "
        "`llmembed reproduce --report-only`."
    )
    lines.append("")
    if not records:
        lines.append("No records yet.")
        return "\n".join(lines) + "\n"
    datasets = _datasets_in(records)
    groups = {m: a["group"] for (_, m), a in agg.items()}
    labels = {m: a["label"] for (_, m), a in agg.items()}
    last = max(records, key=lambda r: r.get("created", ""))
    mach = last.get("machine", {})
    commits = sorted({(r.get("git") or {}).get("commit") or "?" for r in records})
    threads = {str((r.get("machine") or {}).get("torch_threads")) for r in records}
    lines += [
        f"Machine: {mach.get('cpu')}, {mach.get('cores')} cores, {mach.get('ram_gb')} GB RAM, "
        f"no GPU"
        + (f" ({mach['cuda']})" if mach.get("cuda") else "")
        + ". Packages: "
        + ", ".join(f"{k} {v}" for k, v in (last.get("packages") or {}).items() if v)
        + f". Torch threads: {', '.join(sorted(threads))}"
        + f". Git commit(s): {', '.join(c[:10] for c in commits)}. "
        f"{len(records)} records, last {last.get('created')}.",
        "",
    ]
    if any(r.get("quick") for r in records):
        lines += [
            "**Quick run: stratified subsets, not comparable with the published figures.**",
            "",
        ]

    # ---- main table
    lines += ["## Accuracy (%), mean ± standard deviation over seeds", ""]
    head_methods = [
        m
        for m in _order(groups, groups)
        if groups[m] in ("ours", "peer") or m == "llmembed-published"
    ]
    lines.append("| method | " + " | ".join(DATASET_TITLES.get(d, d) for d in datasets) + " |")
    lines.append("| --- | " + " | ".join("---:" for _ in datasets) + " |")
    for m in head_methods:
        cells = []
        for d in datasets:
            a = agg.get((d, m))
            if a is None:
                cells.append("–")
                continue
            cell = _acc(a)
            top = max(
                (agg[(d, x)]["accuracy"][0] for x in head_methods if (d, x) in agg), default=None
            )
            if top is not None and math.isclose(a["accuracy"][0], top):
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append(f"| {labels[m]} (`{m}`) | " + " | ".join(cells) + " |")
    for anchor, values in ANCHORS.items():
        lines.append(
            f"| *{anchor}* | "
            + " | ".join(f"*{values[d]:.2f}*" if d in values else "–" for d in datasets)
            + " |"
        )
    lines.append("")
    lines.append(
        f"Published anchors (italics) are quoted, not run here: {ANCHOR_SOURCE}. They fine-tune "
        "a 355M-parameter model on a GPU or prompt a 175B-parameter model; the rows above "
        "train only a small head (or, for SetFit, a 22M-parameter encoder) on CPU. "
        "`llmembed-published` is measured on a stratified subset (see *What each fix is worth*)."
    )
    lines.append("")

    # ---- verdict
    lines += ["## Ours against the best peer", ""]
    wins, present = 0, 0
    for d in datasets:
        ours = agg.get((d, "llmembed"))
        peers = [
            (agg[(d, m)]["accuracy"][0], m)
            for m in head_methods
            if groups[m] == "peer" and (d, m) in agg
        ]
        if ours is None or not peers:
            continue
        present += 1
        best, who = max(peers)
        diff = 100 * (ours["accuracy"][0] - best)
        wins += diff > 0
        spread = 100 * max(ours["accuracy"][1] or 0.0, agg[(d, who)]["accuracy"][1] or 0.0)
        noise = "; within the seed spread" if abs(diff) <= spread else ""
        lines.append(
            f"- {DATASET_TITLES.get(d, d)}: ours {100 * ours['accuracy'][0]:.2f} vs best peer "
            f"`{who}` {100 * best:.2f} ({diff:+.2f} points{noise}; peers run: "
            f"{', '.join(m for _, m in sorted(peers, reverse=True))})"
        )
    lines.append("")
    lines.append(f"Ours is ahead of every peer run on {wins} of {present} datasets with results.")
    lines.append("")

    # ---- the published ladder
    ladder = [name for name, _ in PUBLISHED_LADDER if any((d, name) in agg for d in datasets)]
    if ladder:
        lines += ["## What each fix is worth (published configuration, fixed one at a time)", ""]
        sizes = []
        for d in datasets:
            a = agg.get((d, "llmembed-published"))
            hp = (a or {}).get("hyperparameters") or [{}]
            sub = next(
                (
                    r.get("subset")
                    for r in records
                    if r["dataset"] == d and r["method"] == "llmembed-published"
                ),
                None,
            )
            if sub:
                sizes.append(
                    f"{DATASET_TITLES.get(d, d)} {sub['train']} / {sub['test']} "
                    f"(padding {hp[0].get('published_max_length')})"
                )
        lines.append(
            "Fixed max_length padding is too slow on this CPU for whole datasets, so the "
            "published configuration and each fix are compared on a stratified subset of every "
            "split (train / test texts: " + "; ".join(sizes) + "), the same subset for every "
            "step and seed. Each row adds one fix to the row above; in parentheses the change "
            "from the row above, in accuracy points. Extraction cost in the per-dataset tables "
            "is estimated for the whole split."
        )
        lines.append("")
        lines.append("| step | " + " | ".join(DATASET_TITLES.get(d, d) for d in datasets) + " |")
        lines.append("| --- | " + " | ".join("---:" for _ in datasets) + " |")
        prev: dict[str, float] = {}
        for name, label in PUBLISHED_LADDER:
            if name not in ladder:
                continue
            cells = []
            for d in datasets:
                a = agg.get((d, name))
                if a is None:
                    cells.append("–")
                    continue
                delta = f" ({100 * (a['accuracy'][0] - prev[d]):+.2f})" if d in prev else ""
                prev[d] = a["accuracy"][0]
                cells.append(_acc(a) + delta)
            lines.append(f"| {label} (`{name}`) | " + " | ".join(cells) + " |")
        lines.append("")

    # ---- per dataset
    lines += ["## Per dataset", ""]
    lines.append(
        "Costs are seconds on this machine. *extract* = frozen-backbone extraction of train + "
        "test for the method's exact backbone settings (throughput measured with the cache off "
        "on a fixed sample, times the number of texts); *select* = hyperparameter search on the "
        "validation split; *train* = fitting the final classifier / head; *infer / 1k* = "
        "end-to-end seconds per 1,000 test texts (extraction + head); *total* = extract + select "
        "+ train + inference on the test split. Trainable / frozen = parameter counts."
    )
    lines.append("")
    for d in datasets:
        rows = [m for m in _order(groups, groups) if (d, m) in agg]
        if not rows:
            continue
        a0 = agg[(d, rows[0])]
        lines += [f"### {DATASET_TITLES.get(d, d)} ({a0['protocol']})", ""]
        split = a0["split"][0] if a0["split"] else ""
        lines.append(f"Split of seed 0: {split}.")
        lines.append("")
        binary = any(agg[(d, m)]["positive_f1"][0] is not None for m in rows)
        hdr = "| method | seeds | accuracy | macro-F1 |" + (" positive-F1 |" if binary else "")
        hdr += " extract s | select s | train s | infer s / 1k | total s | trainable | frozen |"
        hdr += " chosen on validation |"
        lines.append(hdr)
        lines.append("|" + " --- |" * (hdr.count("|") - 1))
        for m in rows:
            a = agg[(d, m)]
            cells = [
                f"`{m}`",
                str(a["n_seeds"]),
                _pct(a["accuracy"]),
                _pct(a["macro_f1"]),
            ]
            if binary:
                cells.append(_pct(a["positive_f1"]))
            cells += [
                _secs(a["extract_seconds"]),
                _secs(a["selection_seconds"]),
                _secs(a["train_seconds"]),
                _secs(a["infer_seconds_per_1000"]),
                _secs(a["total_seconds"]),
                _params(a["trainable_params"]),
                _params(a["frozen_params"]),
                _hp_summary(a),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    # ---- ablations
    abl = [m for m in _order(groups, groups) if groups[m] == "ablation"]
    if abl:
        lines += ["## Ablations (accuracy %, mean ± std over seeds)", ""]
        lines.append(
            "Every ablation changes one thing in the CPU recipe (ours); the best layer of a "
            "backbone alone is picked by a ridge probe on the validation split."
        )
        lines.append("")
        lines.append("| variant | " + " | ".join(DATASET_TITLES.get(d, d) for d in datasets) + " |")
        lines.append("| --- | " + " | ".join("---:" for _ in datasets) + " |")
        for m in ["llmembed", *abl]:
            if not any((d, m) in agg for d in datasets):
                continue
            cells = []
            for d in datasets:
                a = agg.get((d, m))
                if a is None:
                    cells.append("–")
                    continue
                ours = agg.get((d, "llmembed"))
                delta = ""
                if ours is not None and m != "llmembed":
                    delta = f" ({100 * (a['accuracy'][0] - ours['accuracy'][0]):+.2f})"
                cells.append(_acc(a) + delta)
            lines.append(f"| {labels[m]} (`{m}`) | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("In parentheses: difference from ours, in accuracy points.")
        lines.append("")

    # ---- coverage
    lines += _coverage_lines(agg)

    # ---- notes
    lines += ["## Protocol notes", ""]
    lines += [
        "- Hyperparameters are chosen on a stratified validation split carved from the training "
        "split (10%, the split LLMEmbed heads early-stop on), never on test. Peers: TF-IDF + "
        f"LinearSVC C in {list(SVM_C)}; logistic regression C in {list(LR_C)} (StandardScaler "
        "first); SetFit head C in the same grid. The final peer models are refitted on the "
        "whole training split with the chosen value.",
        "- LLMEmbed heads (ours, ablations) use the CPU recipe's head and training settings, read "
        'at run time from `load_recipe("cpu")`; the chosen epoch comes from early stopping on '
        "the validation split.",
        "- *As published* (on a stratified subset, see above): the decoder's last 5 layers, token "
        "mean over fixed max_length padding (pads included), the `paper` recipe's head (sigma, "
        "widths) with the double softmax, no standardization, its fixed number of epochs and "
        "batch size, no validation split. "
        "Padding caps used here: "
        + ", ".join(f"{DATASET_TITLES[d]} {v}" for d, v in PUBLISHED_MAX_LENGTH.items())
        + " (paper: "
        + ", ".join(f"{DATASET_TITLES[d]} {v}" for d, v in PAPER_MAX_LENGTH.items())
        + "; R8/R52 1024-token padding is out of reach on 2 CPU cores, 2.7% / 3.4% of their "
        "documents exceed 512 SmolLM2 tokens). Encoders keep the recipe's settings.",
        "- Logistic regression on a backbone's standard sentence embedding (MTEB-style "
        "classification): sentence-transformers models use their own pooling, max_seq_length and "
        "normalization; the decoder has no standard sentence embedding, so its last layer with "
        "the recipe's token pooling stands in.",
        "- SetFit: `setfit` package, all-MiniLM-L6-v2 body from the model zoo, its usual settings "
        f"(batch {SETFIT_BATCH}, 1 epoch, {SETFIT_ITERATIONS} pair-generation iterations, "
        "logistic-regression head); the "
        f"contrastive phase runs on a stratified subset sized to at most {SETFIT_MAX_PAIRS:,} "
        "pairs so that it finishes on CPU (at least 2 texts per class; where that makes more "
        "pairs, as on R52, setfit's `max_steps` stops training at the cap), the head is fitted "
        "on the whole training split.",
        "- AG News: `agnews/train.csv` is missing, so the labelled fallback protocol "
        "`agnews-test-5fold-cv` is used: stratified 5-fold cross-validation on the official "
        "7,600-text test split; seed k trains on the other folds and tests on fold k (folds "
        "fixed with seed 0), so its spread includes fold-to-fold variation. Not comparable with "
        "the published AG News figures (120k training texts).",
        "- Extraction is cached (one cache per dataset group under the harness cache dir; R8 and "
        "R52 share one); each backbone is extracted once with the union of the layers the methods "
        "need and sliced. Timings were taken on a shared 2-core machine (the 1-minute load "
        "average is in every record): treat them as indicative.",
        "- Layer probes (accuracy by depth, SmolLM2-135M): [SST-2](probe/smollm2-135m-sst2.png), "
        "[R8](probe/smollm2-135m-r8.png).",
        "",
    ]
    lines += [
        "## Plots",
        "",
        f"![accuracy by method]({plots_rel}/accuracy_by_method.png)",
        "",
        f"![accuracy against cost]({plots_rel}/accuracy_vs_cost.png)",
        "",
        f"![ablations]({plots_rel}/ablations.png)",
        "",
    ]
    return "\n".join(lines) + "\n"


_GROUP_COLORS = {
    "ours": "tab:red",
    "published": "tab:orange",
    "peer": "tab:blue",
    "ablation": "tab:gray",
}


def _main_methods(m: str, group: str) -> bool:
    return group in ("ours", "peer") or m == "llmembed-published"


def _ablation_methods(m: str, group: str) -> bool:
    return group in ("ours", "ablation", "published")


def plot_accuracy(
    agg: dict[tuple[str, str], dict[str, Any]],
    path: str | os.PathLike,
    include: Callable[[str, str], bool] = _main_methods,
    title: str = "Test accuracy by method (mean ± std over seeds)",
) -> Path:
    """One horizontal bar panel per dataset: accuracy by method, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    datasets = [d for d in DEFAULT_DATASETS if any(k[0] == d for k in agg)]
    datasets += sorted({k[0] for k in agg} - set(datasets))
    groups = {m: a["group"] for (_, m), a in agg.items()}
    methods = [m for m in _order(groups, groups) if include(m, groups[m])]
    n = len(datasets)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    height = max(2.6, 0.3 * len(methods) + 1.0)
    fig, axes = plt.subplots(
        rows, cols, figsize=(5.6 * cols, height * rows + 0.8), squeeze=False, layout="constrained"
    )
    for ax, d in zip(axes.flat, datasets):
        ms = [m for m in methods if (d, m) in agg][::-1]
        if not ms:
            ax.axis("off")
            continue
        means = [100 * agg[(d, m)]["accuracy"][0] for m in ms]
        stds = [100 * (agg[(d, m)]["accuracy"][1] or 0) for m in ms]
        colors = [_GROUP_COLORS.get(groups[m], "tab:gray") for m in ms]
        ax.barh(range(len(ms)), means, xerr=stds, color=colors, capsize=2, height=0.7)
        ax.set_yticks(range(len(ms)))
        ax.set_yticklabels(ms, fontsize=7)
        lo = min(m - s for m, s in zip(means, stds))
        hi = max(m + s for m, s in zip(means, stds))
        for values in ANCHORS.values():
            if d in values:
                ax.axvline(values[d], color="black", linestyle=":", linewidth=0.8)
                hi = max(hi, values[d])
        left = max(0.0, lo - 4)
        ax.set_xlim(left, min(100.0, hi + 1.5))
        for y, mean in enumerate(means):
            ax.text(
                left + 0.15,
                y,
                f"{mean:.2f}",
                va="center",
                ha="left",
                fontsize=6.5,
                color="white",
                fontweight="bold",
            )
        ax.set_title(DATASET_TITLES.get(d, d), fontsize=10)
        ax.set_xlabel("test accuracy (%)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    present = {groups[m] for m in methods}
    handles = [Patch(color=c, label=g) for g, c in _GROUP_COLORS.items() if g in present]
    handles.append(Line2D([], [], color="black", linestyle=":", label="published anchors"))
    legend = fig.legend(
        handles=handles,
        loc="outside upper center",
        ncol=len(handles),
        fontsize=8,
        frameon=False,
        title=title,
    )
    legend.get_title().set_fontsize(11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)
    return path


def plot_cost(agg: dict[tuple[str, str], dict[str, Any]], path: str | os.PathLike) -> Path:
    """Accuracy against total cost (extract + select + train + test inference), log x.
    Ours, the published configuration and the peers are labelled; the published ladder and the
    ablations are the small unlabelled dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in DEFAULT_DATASETS if any(k[0] == d for k in agg)]
    datasets += sorted({k[0] for k in agg} - set(datasets))
    n = len(datasets)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
    for ax, d in zip(axes.flat, datasets):
        for (dd, m), a in agg.items():
            if dd != d or a["total_seconds"][0] is None:
                continue
            x = max(a["total_seconds"][0], 0.1)
            y = 100 * a["accuracy"][0]
            g = a["group"]
            main = _main_methods(m, g)
            ax.errorbar(
                x,
                y,
                yerr=100 * (a["accuracy"][1] or 0),
                fmt="o" if main else ".",
                color=_GROUP_COLORS.get(g, "tab:gray"),
                markersize=6 if main else 4,
                capsize=2,
                alpha=1.0 if main else 0.45,
            )
            if main:
                ax.annotate(m, (x, y), fontsize=6.5, xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_title(DATASET_TITLES.get(d, d), fontsize=10)
        ax.set_xlabel("total cost on this CPU (s, log scale)", fontsize=8)
        ax.set_ylabel("test accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", linestyle="", color=c, label=g) for g, c in _GROUP_COLORS.items()
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# Command line (`llmembed reproduce`; benchmarks/reproduce.py runs that command)
# --------------------------------------------------------------------------------------------


def _split_list(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [p.strip() for v in values for p in re.split(r"[,\s]+", v) if p.strip()]
    return out or None


def reproduce_command(
    datasets=None,
    methods=None,
    seeds=None,
    quick=False,
    force=False,
    report_only=False,
    list_methods=False,
    results_dir=None,
    docs_dir=None,
    cache_dir=None,
    data_dir=None,
    device="auto",
    recipe="cpu",
    n_train=None,
    n_test=None,
    progress=True,
    train_threads=None,
    setfit_max_pairs=None,
    threads=None,
) -> int:
    """`llmembed reproduce` (src/llmembed/cli.py parses its options)."""
    if list_methods:
        rec = load_recipe(recipe)
        for m in build_methods(rec):
            missing = missing_requirements(m)
            extra = f"  [needs {', '.join(missing)}]" if missing else ""
            print(f"{m.name:32s} {m.group:10s} {m.label}{extra}")
        return 0
    results = Path(results_dir or ("results/quick" if quick else "results"))
    docs = Path(docs_dir) if docs_dir else (results if quick else Path("docs"))
    if report_only:
        out = write_report(results, docs)
        log(f"wrote {out}")
        return 0
    t0 = time.perf_counter()
    run(
        datasets=datasets,
        methods=methods,
        seeds=seeds if seeds is not None else (1 if quick else SEEDS),
        quick=quick,
        force=force,
        results_dir=results,
        docs_dir=docs,
        cache_dir=cache_dir,
        data_dir=data_dir,
        device=device,
        recipe=recipe,
        n_train=n_train,
        n_test=n_test,
        progress=progress,
        options={
            "train_threads": train_threads,
            "setfit_max_pairs": setfit_max_pairs,
            "threads": threads,
        },
    )
    log(f"done in {time.perf_counter() - t0:.0f}s; report: {docs / 'results.md'}")
    return 0
