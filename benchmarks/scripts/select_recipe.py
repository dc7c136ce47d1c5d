"""Choose the CPU default recipe by k-fold cross-validation on the training split only.

Every candidate (backbone set with layers and prompt template, head, lexical channel on or off)
is scored by stratified k-fold cross-validation on the training split of seed 0: each fold
trains the candidate's head (and, when on, its lexical channel, out-of-fold inside the fold) on
the other folds and is scored on its own. Test texts are never read. Features come from the
reproduce cache (`llmembed-bench reproduce` or a first run extracts them).

    LLMEMBED_DATA=../shared/datasets python benchmarks/scripts/select_recipe.py \
        --datasets mr,r8,r52,agnews,sst2 -o docs/head_search/select_recipe.json

Prints a table (CV accuracy mean ± std over folds) and the candidate with the best mean over
datasets.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from llmembed.backbones import BackboneSpec
from llmembed.cache import default_cache_dir
from llmembed.heads import HeadConfig
from llmembed.lexical import LexicalConfig
from llmembed.recipes import Recipe, load_recipe
from llmembed.selection import cross_validate, cv_splits
from llmembed.training import TrainConfig
from llmembed_bench.features import FeatureStore
from llmembed_bench.tasks import load_task

EG_TEMPLATE = "task: classification | query: {text}"


def eg(layers: str) -> BackboneSpec:
    """EmbeddingGemma-300M with its classification prompt, mean pooling, 512 tokens."""
    return BackboneSpec(
        "embeddinggemma-300m", layers=layers, pooling="mean", max_length=512, template=EG_TEMPLATE
    )


def candidates() -> dict[str, tuple[list[BackboneSpec], HeadConfig, TrainConfig, bool]]:
    """name -> (backbones, head, train settings, lexical on)."""
    cpu = load_recipe("cpu-fusion")  # the previous default
    linear = HeadConfig(fusion="linear")
    lin_train = TrainConfig()
    mlp = cpu.head
    minilm, mpnet = cpu.backbones[1], cpu.backbones[2]
    return {
        "mpnet, linear": ([mpnet], linear, lin_train, False),
        "mpnet + lexical, linear": ([mpnet], linear, lin_train, True),
        "minilm + lexical, linear": ([minilm], linear, lin_train, True),
        "minilm + mpnet + lexical, linear": ([minilm, mpnet], linear, lin_train, True),
        "eg L24 + mpnet + lexical, linear": ([eg("24"), mpnet], linear, lin_train, True),
        "eg L24, linear": ([eg("24")], linear, lin_train, False),
        "eg L20, linear": ([eg("20")], linear, lin_train, False),
        "eg L20 + lexical, linear": ([eg("20")], linear, lin_train, True),
        "eg L24 + lexical, linear": ([eg("24")], linear, lin_train, True),
        "eg L24 + lexical, linear, balanced": (
            [eg("24")],
            HeadConfig(fusion="linear", balance=True),
            lin_train,
            True,
        ),
        "eg L24 + lexical, linear, C by 3 folds": (
            [eg("24")],
            linear,
            TrainConfig(C_folds=3),
            True,
        ),
        "eg L20 + mpnet + lexical, linear": ([eg("20"), mpnet], linear, lin_train, True),
        "eg L24 + lexical, mlp": (
            [eg("24")],
            HeadConfig.from_dict({**mlp.to_dict(), "mean_of": [0]}),
            cpu.train,
            True,
        ),
        "cpu-fusion (smollm2 + minilm + mpnet, mlp)": (cpu.backbones, mlp, cpu.train, False),
    }


def cv_score(
    specs: list[BackboneSpec],
    feats: list[np.ndarray],
    texts: list[str],
    y: np.ndarray,
    n_classes: int,
    head: HeadConfig,
    train: TrainConfig,
    lexical: bool,
    folds: int,
) -> list[float]:
    """Accuracy of each of `folds` stratified folds (seed 0), by the product's own
    cross-validation (what recipe="auto" runs)."""
    recipe = Recipe("candidate", specs, head, train, lexical=LexicalConfig(enabled=lexical))
    return cross_validate(recipe, feats, texts, y, n_classes, cv_splits(y, folds, 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="mr,r8,r52,agnews,sst2")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--only", default=None, help="';'-separated candidate names")
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args()
    root = default_cache_dir() / "reproduce"
    rows = []
    for name in args.datasets.split(","):
        task = load_task(name, args.data_dir)
        store = FeatureStore(task, root, progress=False)
        tr, _test, _ = task.split(0)  # test rows are never touched below
        texts = [task.texts[i] for i in tr]
        y = np.asarray(task.y)[tr]
        for cand, (specs, head, train, lexical) in candidates().items():
            if args.only and cand not in args.only.split(";"):
                continue
            feats = [store.get(s)[tr] for s in specs]
            t0 = time.perf_counter()
            scores = cv_score(
                specs, feats, texts, y, len(task.classes), head, train, lexical, args.folds
            )
            row = {
                "dataset": name,
                "candidate": cand,
                "cv_accuracy": float(np.mean(scores)),
                "cv_std": float(np.std(scores)),
                "folds": scores,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            rows.append(row)
            print(
                f"{name:7s} {cand:45s} cv {100 * row['cv_accuracy']:.2f} ± "
                f"{100 * row['cv_std']:.2f}  ({row['seconds']:.0f} s)",
                flush=True,
            )
        store.release()
    means: dict[str, list[float]] = {}
    for r in rows:
        means.setdefault(r["candidate"], []).append(r["cv_accuracy"])
    n = len(args.datasets.split(","))
    full = {c: float(np.mean(v)) for c, v in means.items() if len(v) == n}
    if full:
        best = max(full, key=full.get)
        print(f"best mean CV accuracy over {n} datasets: {best} ({100 * full[best]:.2f})")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({"rows": rows, "mean": full}, indent=2) + "\n")


if __name__ == "__main__":
    main()
