"""Tiny random models for tests and offline examples: no download, a few KB, built in a second.

``make_tiny_llama(folder)`` saves a 3-layer Llama decoder (width 32) and
``make_tiny_bert(folder)`` a 2-layer BERT encoder (width 24, with pooler), each with a word-level
tokenizer over :data:`WORDS`. Their weights are random (seeded): they exercise the whole pipeline
(loading, layer extraction, caching, training, saving) but classify nothing meaningfully.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .recipes import Recipe

__all__ = ["WORDS", "make_tiny_bert", "make_tiny_llama", "tiny_recipe"]

WORDS = [
    "good",
    "great",
    "fine",
    "nice",
    "love",
    "happy",
    "best",
    "fun",
    "bad",
    "awful",
    "poor",
    "sad",
    "hate",
    "worst",
    "boring",
    "dull",
    "the",
    "a",
    "movie",
    "film",
    "was",
    "is",
    "it",
    "this",
    "and",
    "very",
    "not",
    "really",
    "plot",
    "acting",
    "story",
    "day",
    "cat",
    "dog",
    "market",
    "stock",
    "oil",
    "wheat",
    "price",
    "bank",
    "rate",
    "trade",
    "ship",
]


def make_tiny_llama(folder: Path, layers: int = 3) -> Path:
    """A 3-layer LlamaModel (width 32) with a word-level tokenizer that adds <s> and has no pad."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def make_tiny_bert(folder: Path, layers: int = 2) -> Path:
    """A 2-layer BertModel (width 24, with pooler) and a WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=24,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=256,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def tiny_recipe(
    llama: str | Path,
    bert: str | Path,
    head: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    llama_dtype: str = "float32",
    max_length: int | None = None,
) -> Recipe:
    """A two-backbone recipe over the tiny models (``llama`` layers 1, 2 and last with
    mean_no_first, ``bert`` last layer with its first token) that trains in a second; ``head``
    and ``train`` settings override the small defaults below."""
    from .backbones import BackboneSpec
    from .heads import HeadConfig
    from .recipes import Recipe
    from .training import TrainConfig

    extra = {} if max_length is None else {"max_length": max_length}
    head_cfg = {"proj_dim": 16, "hidden": [32], "sigma": 0.5, "dropout": 0.1, **(head or {})}
    train_cfg = {
        "lr": 1e-2,
        "batch_size": 8,
        "max_epochs": 40,
        "patience": 10,
        "val_fraction": 0.2,
        **(train or {}),
    }
    return Recipe(
        name="tiny",
        backbones=[
            BackboneSpec(
                str(llama), layers="1,2,-1", pooling="mean_no_first", dtype=llama_dtype, **extra
            ),
            BackboneSpec(str(bert), layers="-1", pooling="first", dtype="float32", **extra),
        ],
        head=HeadConfig.from_dict(head_cfg),
        train=TrainConfig.from_dict(train_cfg),
    )
