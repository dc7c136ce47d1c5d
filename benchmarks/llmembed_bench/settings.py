"""The benchmark protocol's fixed settings: datasets, grids, seeds, published anchors."""

from __future__ import annotations

import time
from pathlib import Path

from llmembed.errors import LLMEmbedError

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
# Zoo models with an LR peer besides the recipe's backbones: the strongest small encoder.
LR_PEER_MODELS = ("embeddinggemma-300m",)
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


PUBLISHED_SUBSET = (1000, 500)  # stratified train / test texts for the published ladder
DATASET_TITLES = {"sst2": "SST-2", "mr": "MR", "agnews": "AG News", "r8": "R8", "r52": "R52"}


def repo_root() -> Path:
    """The repository this harness lives in (it is installed editable from benchmarks/).

    Raises LLMEmbedError when the harness was installed elsewhere: then output folders must be
    given explicitly instead of defaulting to the repository's."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "pyproject.toml").is_file() or not (root / "results").is_dir():
        raise LLMEmbedError(
            f"{root} is not the llmembed repository (the harness is not installed editable from "
            "it): pass --results-dir and --docs-dir"
        )
    return root


def default_dirs(quick: bool) -> tuple[Path, Path]:
    """(results folder, docs folder) of the repository: results/ and docs/, or results/quick for
    both in a quick run (which must not overwrite the committed table)."""
    root = repo_root()
    if quick:
        return root / "results" / "quick", root / "results" / "quick"
    return root / "results", root / "docs"
