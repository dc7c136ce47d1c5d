"""Peers: TF-IDF + linear SVM, logistic regression on sentence embeddings, SetFit."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from llmembed.backbones import BackboneSpec
from llmembed.recipes import Recipe
from llmembed.training import split_validation

from .base import Context, timed_extraction, train_threads
from .settings import LR_C, SETFIT_MAX_PAIRS, SVM_C, VAL_FRACTION


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


def choose_and_fit(
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


def tfidf_svm(ctx: Context, tr, te, seed):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    texts = np.asarray(ctx.task.texts, dtype=object)

    def make(c):
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
        return make_pipeline(vec, LinearSVC(C=c, random_state=seed))

    model, c, rows, val_acc, selection, train_seconds = choose_and_fit(
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


# sentence-transformers caps inputs at max_seq_length (EmbeddingGemma: 2048); the harness reads
# at most this many tokens on CPU, so the LR peer shares the cached extraction of the recipe.
MAX_PEER_TOKENS = 512


def standard_embedding_spec(model: str, recipe: Recipe) -> tuple[BackboneSpec, list[str]]:
    """(spec, post-processing) of a backbone's standard sentence embedding: for a
    sentence-transformers folder its own pooling, max_seq_length (at most
    :data:`MAX_PEER_TOKENS`), classification prompt (``config_sentence_transformers.json``) and
    the modules after pooling (``Dense`` folders and ``Normalize``, applied by
    :func:`apply_post`); for a decoder (no standard one) the recipe's token pooling of the last
    layer and nothing after it."""
    from llmembed import zoo

    base = next((b for b in recipe.backbones if b.model == model), BackboneSpec(model))
    folder = Path(zoo.resolve(model))
    if not (folder / "modules.json").is_file():
        return replace(base, layers="-1"), []
    modules = json.loads((folder / "modules.json").read_text())
    max_len = base.max_length
    with contextlib.suppress(OSError, ValueError, KeyError):
        max_len = int(
            json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
        )
    template = base.template
    with contextlib.suppress(OSError, ValueError, KeyError):
        prompts = json.loads((folder / "config_sentence_transformers.json").read_text())["prompts"]
        template = prompts["Classification"] + "{text}"
    pooling, post = "mean", []
    for m in modules:
        kind = m.get("type", "")
        if "Pooling" in kind:
            with contextlib.suppress(OSError, ValueError):
                cfg = json.loads((folder / m["path"] / "config.json").read_text())
                if cfg.get("pooling_mode_cls_token"):
                    pooling = "first"
        elif "Dense" in kind:
            post.append(str(folder / m["path"]))
        elif "Normalize" in kind:
            post.append("normalize")
    spec = replace(
        base,
        layers="-1",
        pooling=pooling,
        max_length=min(max_len, MAX_PEER_TOKENS),
        template=template,
    )
    return spec, post


def apply_post(x: np.ndarray, post: list[str]) -> np.ndarray:
    """The sentence-transformers modules after pooling, in order: a ``Dense`` folder (its
    weights: ``linear.weight`` / ``linear.bias``; identity activation, as EmbeddingGemma's) or
    ``"normalize"`` (unit L2 norm).

    Raises:
        ValueError: a Dense module with an activation other than the identity.
    """
    from safetensors.numpy import load_file

    for step in post:
        if step == "normalize":
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            continue
        cfg = json.loads((Path(step) / "config.json").read_text())
        if not cfg.get("activation_function", "").endswith("Identity"):
            raise ValueError(f"{step}: activation {cfg.get('activation_function')} not supported")
        weights = load_file(str(Path(step) / "model.safetensors"))
        x = x @ weights["linear.weight"].astype(np.float32).T
        if "linear.bias" in weights:
            x = x + weights["linear.bias"]
    return x


def lr_embedding(model: str):
    def needs(ctx):
        return [standard_embedding_spec(model, ctx.recipe)[0]]

    def run(ctx, tr, te, seed):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        spec, post = standard_embedding_spec(model, ctx.recipe)
        x = apply_post(ctx.store.get(spec)[:, 0], post)
        xtr, ytr = x[tr], ctx.task.y[tr]

        def make(c):
            return make_pipeline(
                StandardScaler(), LogisticRegression(C=c, max_iter=1000, random_state=seed)
            )

        clf, c, rows, val_acc, selection, train_seconds = choose_and_fit(make, xtr, ytr, LR_C, seed)
        t0 = time.perf_counter()
        pred = clf.predict(x[te])
        head_per_1000 = (time.perf_counter() - t0) / max(len(te), 1) * 1000
        ext = timed_extraction(ctx, [spec], len(tr) + len(te), len(te))
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
                "after_pooling": [Path(p).name for p in post],
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


def setfit(ctx: Context, tr, te, seed):
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

    from llmembed import zoo
    from llmembed.datasets import stratified_sample

    max_pairs = int(ctx.options.get("setfit_max_pairs") or SETFIT_MAX_PAIRS)
    iterations, batch_size = SETFIT_ITERATIONS, SETFIT_BATCH
    texts, y = ctx.task.texts, ctx.task.y
    xtr, ytr = [texts[i] for i in tr], y[tr]
    n_sub, max_steps = setfit_budget(len(ctx.task.classes), max_pairs)
    sub = stratified_sample([str(v) for v in ytr], n_sub, seed)
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

    head, c, rows, val_acc, selection, head_seconds = choose_and_fit(
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
