"""Methods: ours (through LLMEmbedClassifier), the published ladder and the ablations."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from llmembed.backbones import BackboneSpec
from llmembed.errors import LLMEmbedError
from llmembed.heads import HeadConfig
from llmembed.introspect import model_info
from llmembed.recipes import Recipe
from llmembed.training import TrainConfig, split_validation

from .base import Context, Method, timed_extraction, train_threads
from .features import layer_grid, num_hidden_states
from .peers import lr_embedding, setfit, standard_embedding_spec, tfidf_svm
from .probe import ridge_probe
from .settings import (
    FUSIONS,
    LR_PEER_MODELS,
    PAPER_MAX_LENGTH,
    PUBLISHED_MAX_LENGTH,
    PUBLISHED_SUBSET,
    SIGMAS,
    VAL_FRACTION,
)


def _is_decoder(model: str) -> bool:
    """A decoder LLM (the backbone the published code reads layer-wise with padded means)?"""
    return model_info(model).is_decoder


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

    from llmembed.training import predict_logits, train_head

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
    out = head_result(
        ctx,
        specs,
        pred=pred,
        n_full=n_full,
        n_test=len(te),
        train_seconds=train_seconds,
        infer_seconds=head_infer,
        trainable=res.head.n_parameters(),
        hyperparameters={
            "backbones": [s.to_dict() for s in specs],
            "head": head.to_dict(),
            "train": train.to_dict(),
            "best_epoch": res.best_epoch,
            "epochs_run": len(res.history),
            **(extra or {}),
        },
        val=res.val_metrics,
    )
    return {**out, "test_index": te if subset else None, "subset": info}


def head_result(
    ctx: Context,
    specs: Sequence[BackboneSpec],
    *,
    pred: np.ndarray,
    n_full: int,
    n_test: int,
    train_seconds: float,
    infer_seconds: float,
    trainable: int,
    hyperparameters: dict[str, Any],
    val: dict[str, Any] | None,
) -> dict[str, Any]:
    """The result of an LLMEmbed head method (ours, the ladder, the ablations): its costs (the
    exact specs' measured extraction rate x n_full texts, the timed training and inference),
    sizes, hyperparameters and what the validation split chose."""
    ext = timed_extraction(ctx, specs, n_full, n_test)
    head_per_1000 = infer_seconds / max(n_test, 1) * 1000
    val = val or {}
    return {
        "pred": pred,
        "train_seconds": train_seconds,
        "selection_seconds": 0.0,
        "head_infer_seconds_per_1000": head_per_1000,
        "infer_seconds_per_1000": ext["extract_seconds_per_1000"] + head_per_1000,
        **ext,
        "trainable_params": trainable,
        "frozen_params": sum(ctx.store.frozen_params(m) for m in {s.model for s in specs}),
        "hyperparameters": hyperparameters,
        "validation": {
            "n": val.get("n", 0),
            "accuracy": val.get("accuracy"),
            "macro_f1": val.get("macro_f1"),
            "chooses": "best epoch (early stopping)" if val else "nothing (fixed epochs)",
        },
    }


def ours(ctx: Context, tr: np.ndarray, te: np.ndarray, seed: int) -> dict[str, Any]:
    """The recipe as users run it: ``LLMEmbedClassifier.fit`` on the training texts and their
    class names, ``predict`` on the test texts, with the embedding cache of this task's group
    (so a rerun does no forward pass), its entries for the recipe's exact specs filled from the
    harness's superset extraction of the same settings. Only the seed differs from the
    recipe."""
    from llmembed import LLMEmbedClassifier

    task = ctx.task
    texts = ctx.task.texts
    recipe = ctx.ours_recipe
    for spec in recipe.backbones:  # layers sliced from the superset, not recomputed
        ctx.store.fill_exact(spec)
    clf = LLMEmbedClassifier(
        recipe=recipe,
        train={"seed": seed},
        cache_dir=ctx.store.root / task.group,
        device=ctx.store.device,
        verbose=ctx.store.progress,
    )
    with train_threads(ctx.options.get("train_threads")):
        clf.fit([texts[i] for i in tr], [task.classes[i] for i in task.y[tr]])
        t0 = time.perf_counter()
        names = clf.predict([texts[i] for i in te])
        predict_seconds = time.perf_counter() - t0
    index = {c: i for i, c in enumerate(task.classes)}
    specs = clf.recipe_.backbones
    return head_result(
        ctx,
        specs,
        pred=np.array([index[c] for c in names]),
        n_full=len(tr) + len(te),
        n_test=len(te),
        # what fit spends besides extraction: stacked regressions, lexical channel, head
        train_seconds=sum(clf.timings_.get(k, 0.0) for k in ("stack", "lexical", "train_head")),
        infer_seconds=predict_seconds,
        trainable=clf.head_.n_parameters(),
        hyperparameters={
            "api": "LLMEmbedClassifier.fit / predict",
            "recipe": clf.recipe_.name,
            "backbones": [s.to_dict() for s in specs],
            "head": clf.recipe_.head.to_dict(),
            "train": clf.recipe_.train.to_dict(),
            "best_epoch": clf.best_epoch_,
            "epochs_run": len(clf.history_),
            "timings": clf.timings_,
            "head_infer_note": "predict() through the API on cached test texts: cache reads + head",
        },
        val=clf.val_metrics_,
    )


def published_subset(
    ctx: Context, tr: np.ndarray, te: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The fixed stratified subset (seed 0) of a split on which the published configuration and
    its fixes are compared: fixed max_length padding is too slow on CPU for whole datasets."""
    from llmembed.datasets import stratified_sample

    n_tr, n_te = ctx.options.get("published_subset", PUBLISHED_SUBSET)
    y = ctx.task.y
    s_tr = tr[stratified_sample([str(v) for v in y[tr]], n_tr, 0)]
    s_te = te[stratified_sample([str(v) for v in y[te]], n_te, 1)]
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
    ("llmembed-subset", "= the fusion recipe (its layers and head) on the same subset"),
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
    y = ctx.task.y[tr]
    fit_idx, val_idx = split_validation(y, ctx.recipe.train.val_fraction or VAL_FRACTION, seed)
    rows = []
    for layer in ctx.store.layers_of(replace(spec, layers=_grid_spec(ctx, spec))):
        x = ctx.store.get(replace(spec, layers=str(layer)))[tr].reshape(len(tr), -1)
        acc = float((ridge_probe(x[fit_idx], y[fit_idx], x[val_idx]) == y[val_idx]).mean())
        rows.append({"layer": layer, "val_accuracy": acc})
    best = max(rows, key=lambda r: (r["val_accuracy"], r["layer"]))
    return best["layer"], rows


def _grid_spec(ctx: Context, spec: BackboneSpec) -> str:
    return ",".join(map(str, layer_grid(num_hidden_states(spec.model))))


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


def build_methods(recipe: Recipe) -> list[Method]:
    """Every method, in run order within its group, for this CPU recipe."""
    recipe_specs = lambda ctx: list(ctx.recipe.backbones)  # noqa: E731
    methods = [
        Method(
            "llmembed",
            "ours",
            "LLMEmbed, CPU default recipe (ours)",
            lambda ctx: list(ctx.ours_recipe.backbones),
            ours,
            uses=("ours",),
            config=lambda rec: {"api": "LLMEmbedClassifier"},
        ),
        Method(
            "tfidf-svm",
            "peer",
            "TF-IDF (word 1-2-grams) + linear SVM",
            lambda ctx: [],
            tfidf_svm,
            uses=(),
        ),
    ]
    for model in dict.fromkeys([*(b.model for b in recipe.backbones), *LR_PEER_MODELS]):
        needs, run = lr_embedding(model)
        methods.append(
            Method(
                f"lr-{_short(model)}",
                "peer",
                f"logistic regression on {model} sentence embedding",
                needs,
                run,
                uses=(),  # depends on the embedding only, not on the recipe's head
                config=lambda rec, model=model: {
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
            setfit,
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
