"""`llmembed demo`: the main job end to end on real models and real data, offline.

Installs the recipe's zoo models if missing, trains on a benchmark's train split (validation
carved from it), evaluates on its test split, saves the model, classifies a few example texts,
and reports the time of every stage.
"""

from __future__ import annotations

import os
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from . import zoo
from .classifier import LLMEmbedClassifier
from .datasets import load_benchmark
from .recipes import Recipe, load_recipe

EXAMPLES = {
    "r8": [
        "Oil prices rose sharply after OPEC agreed to cut crude output by one million barrels a "
        "day.",
        "The company said first quarter net profit rose to 12.5 mln dlrs, or 1.10 dlrs a share.",
        "The central bank cut its discount rate by half a point to stimulate lending.",
        "XYZ Corp agreed to acquire ABC Inc for 300 mln dlrs in cash and stock.",
        "Wheat export tenders from Egypt lifted grain futures in Chicago.",
    ],
}


# The demo's recipe: fast on a first run (R8 in about 7 minutes on a 2-core CPU, empty embedding
# cache) and, on news like R8, more accurate than the `cpu` recipe (docs/layer-choice.md).
DEMO_RECIPE = "cpu-fast"


def run_demo(
    recipe: str | os.PathLike | Recipe = DEMO_RECIPE,
    dataset: str = "r8",
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike = "runs/demo-r8",
    n_train: int | None = None,
    n_test: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str = "auto",
    console: Console | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run the demo and return its figures (metrics, stage timings, model folder)."""
    console = console or Console()
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    console.print(f"[bold]recipe[/] {recipe.name}: {recipe.description}")
    timings: dict[str, float] = {}

    missing = [
        b.model for b in recipe.backbones if b.model in zoo.MODELS and not zoo.is_installed(b.model)
    ]
    t0 = time.perf_counter()
    if missing:
        console.print(f"[bold]installing models[/] {', '.join(missing)} (once)")
        zoo.install(missing, progress=verbose)
    timings["install_models"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ds = load_benchmark(dataset, data_dir)
    if n_train is not None or n_test is not None:
        ds = ds.subsample(n_train, n_test, seed=0)
    timings["load_data"] = time.perf_counter() - t0
    console.print(
        f"[bold]{dataset}[/]: {len(ds.train_texts)} train / {len(ds.test_texts)} test, "
        f"{len(ds.label_names)} classes ({ds.source})"
    )

    clf = LLMEmbedClassifier(recipe=recipe, cache_dir=cache_dir, device=device, verbose=verbose)
    t0 = time.perf_counter()
    clf.fit(ds.train_texts, ds.train_labels)
    fit_s = time.perf_counter() - t0
    for key, value in clf.timings_.items():
        timings[f"train {key}"] = value

    t0 = time.perf_counter()
    clf.timings_ = {}
    metrics = clf.evaluate(ds.test_texts, ds.test_labels)
    for key, value in clf.timings_.items():
        timings[f"test {key}"] = value
    timings["evaluate (total)"] = time.perf_counter() - t0
    timings["fit (total)"] = fit_s

    path = clf.save(out)
    examples = EXAMPLES.get(dataset, ds.test_texts[:5])
    probs = clf.predict_proba(examples)

    table = Table(title="stage timings (s)")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for k, v in timings.items():
        table.add_row(k, f"{v:.1f}")
    console.print(table)
    console.print(
        f"[bold green]{dataset} test accuracy {metrics['accuracy']:.4f}  "
        f"macro-F1 {metrics['macro_f1']:.4f}[/]  (n={metrics['n']}"
        + (")" if recipe.head.fusion == "linear" else f", best epoch {clf.best_epoch_})")
    )
    console.print(f"model saved to [bold]{path}[/] (load with LLMEmbedClassifier.load)")
    for text, p in zip(examples, probs):
        console.print(f"  [cyan]{clf.classes_[p.argmax()]}[/] ({p.max():.2f})  {text[:80]}")
    return {
        "dataset": dataset,
        "recipe": recipe.name,
        "metrics": metrics,
        "timings_s": timings,
        "model_dir": str(path),
        "n_train": len(ds.train_texts),
        "n_test": len(ds.test_texts),
        "best_epoch": clf.best_epoch_,
    }
