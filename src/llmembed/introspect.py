"""Model introspection without loading weights: is it a decoder, how deep, how wide.

:func:`model_info` reads a model's configuration only (``config.json`` of a folder, the metadata
of a ``.gguf`` file, or the hub's config) and answers with a :class:`ModelInfo`.
:class:`~llmembed.backbones.Backbone` applies the same :func:`info_from_config` to the config of
the model it loads, so the two answers cannot disagree.

A model is a *decoder* (causal language model) when its config says ``is_decoder``, when one of
its architectures is a ``...ForCausalLM``, or when its ``model_type`` is not one of the known
bidirectional encoders (:data:`ENCODER_TYPES`); a config with ``use_bidirectional_attention``
(e.g. EmbeddingGemma) is an encoder whatever its type.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import files
from .errors import ModelLoadError

__all__ = [
    "ENCODER_TYPES",
    "ModelInfo",
    "check_reference",
    "config_is_decoder",
    "info_from_config",
    "looks_like_hub_id",
    "model_info",
]

ENCODER_TYPES: frozenset[str] = frozenset(
    {
        "albert",
        "bert",
        "big_bird",
        "camembert",
        "data2vec-text",
        "deberta",
        "deberta-v2",
        "distilbert",
        "electra",
        "ernie",
        "funnel",
        "longformer",
        "megatron-bert",
        "mobilebert",
        "modernbert",
        "mpnet",
        "nomic_bert",
        "roberta",
        "roformer",
        "squeezebert",
        "xlm-roberta",
        "xlm-roberta-xl",
    }
)
"""``model_type`` values of bidirectional (encoder-only) models."""


@dataclass(frozen=True)
class ModelInfo:
    """What a model's config says about its shape.

    model_type: the config's ``model_type`` (of the text model for multimodal configs).
    is_decoder: causal language model (see the module docstring for the rule).
    num_layers: transformer blocks.
    num_hidden_states: ``num_layers + 1`` (index 0 = the embeddings), the range of layer specs.
    hidden_size: width of the hidden states.
    max_positions: ``max_position_embeddings`` (longest input in tokens), None if unknown.
    """

    model_type: str
    is_decoder: bool
    num_layers: int
    num_hidden_states: int = field(init=False)
    hidden_size: int
    max_positions: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_hidden_states", self.num_layers + 1)


def _text_config(config: Any) -> Any:
    """The language model's part of a (possibly multimodal) transformers config."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def config_is_decoder(config: Any) -> bool:
    """True when a transformers config (or any object with the same attributes) is a decoder.

    The rule of the module docstring; ``config`` needs ``model_type`` and may have
    ``architectures``, ``is_decoder``, ``use_bidirectional_attention`` (on it or its text
    config).
    """
    text = _text_config(config)
    if getattr(text, "use_bidirectional_attention", False) is True:
        return False
    if getattr(text, "is_decoder", False) is True or getattr(config, "is_decoder", False) is True:
        return True
    architectures = [
        *(getattr(config, "architectures", None) or []),
        *(getattr(text, "architectures", None) or []),
    ]
    if any(str(a).endswith("ForCausalLM") for a in architectures):
        return True
    model_type = getattr(text, "model_type", None) or getattr(config, "model_type", "")
    return model_type not in ENCODER_TYPES


def info_from_config(config: Any) -> ModelInfo:
    """:class:`ModelInfo` of a loaded transformers config (``AutoConfig`` or ``model.config``).

    Raises:
        ModelLoadError: the config has no ``num_hidden_layers`` or ``hidden_size``.
    """
    text = _text_config(config)
    try:
        num_layers = int(text.num_hidden_layers)
        hidden_size = int(text.hidden_size)
    except (AttributeError, TypeError, ValueError) as e:
        raise ModelLoadError(
            f"{type(config).__name__} has no usable num_hidden_layers / hidden_size ({e}); "
            "multi-layer extraction supports decoder-only and encoder-only transformers models."
        ) from e
    max_positions = getattr(text, "max_position_embeddings", None)
    return ModelInfo(
        model_type=str(getattr(text, "model_type", None) or getattr(config, "model_type", "")),
        is_decoder=config_is_decoder(config),
        num_layers=num_layers,
        hidden_size=hidden_size,
        max_positions=int(max_positions) if isinstance(max_positions, int) else None,
    )


_HUB_PART = r"[A-Za-z0-9_](?:[\w.\-]*[A-Za-z0-9_])?"
_HUB_ID = re.compile(rf"(?:{_HUB_PART}/)?{_HUB_PART}", re.ASCII)  # legacy ids have no owner


def looks_like_hub_id(reference: str) -> bool:
    """True when ``reference`` has the shape of a Hugging Face hub id: ``owner/name`` or a
    legacy ``name`` (``gpt2``, ``bert-base-uncased``, which the hub still redirects).

    Takes: a string (not checked against the file system here). Returns: True for one or two
    parts of letters, digits, ``_``, ``-`` and ``.`` joined by one ``/``, no part starting or
    ending with ``.`` or ``-``, without ``--`` or ``..``, at most 96 characters (the hub's
    rules); so never an absolute path, ``./x``, ``../x`` or a deeper path.
    """
    return (
        len(reference) <= 96
        and _HUB_ID.fullmatch(reference) is not None
        and "--" not in reference
        and ".." not in reference
    )


def check_reference(model: str, reference: str) -> str:
    """Refuse a backbone reference that cannot be a model, before any file is read or hashed.

    Takes: ``model``, what the user wrote (for the message), and ``reference``, what it
    resolved to (:func:`llmembed.zoo.resolve`: an installed zoo folder, a hub id, or the
    input unchanged). Only the file system's metadata is looked at (no file is opened).

    Returns: ``"folder"`` (a folder holding ``config.json``), ``"gguf"`` (an existing ``.gguf``
    file) or ``"hub"`` (not an existing path, shaped like a hub id: see
    :func:`looks_like_hub_id`).

    Raises:
        ModelLoadError: (one line) an existing folder without ``config.json`` (a parent folder,
            ``/``), an existing file that is not ``.gguf``, anything else that exists, a
            ``.gguf`` path that does not exist, or a string that is none of the above.
    """
    path = Path(reference)
    where = f"Could not load model {model!r}"
    if reference != model:
        where += f" ({reference!r})"
    if path.is_dir():
        if (path / "config.json").is_file():
            return "folder"
        raise ModelLoadError(
            f"{where}: it exists but is a folder without config.json, not a model folder (one "
            "holds config.json, the tokenizer and the weights); nothing in it was read."
        )
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "gguf"
        raise ModelLoadError(
            f"{where}: it exists but is a file that is not .gguf; give the model's folder (with "
            "config.json) or a .gguf file."
        )
    if path.exists():
        raise ModelLoadError(f"{where}: it exists but is neither a folder nor a .gguf file.")
    if reference.lower().endswith(".gguf"):
        raise ModelLoadError(f"{where}: no such .gguf file. See: llmembed models list")
    if looks_like_hub_id(reference):
        return "hub"
    from . import zoo

    raise ModelLoadError(
        f"{where}: not a model-zoo name ({', '.join(zoo.MODELS)}), an existing model folder "
        "(with config.json) or .gguf file, or a hub id (owner/name). "
        "See: llmembed models list"
    )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _model_not_found(model: str, reference: str, err: Exception) -> ModelLoadError:
    """The error (one line) for a model that transformers could not load, saying how to get it.

    ``model`` is what the user wrote, ``reference`` what it resolved to (zoo folder / hub id).
    """
    from . import zoo

    if "trust_remote_code" in str(err):
        how = (
            f"{reference!r} asks for custom code (auto_map in its config) and llmembed never runs "
            "a model's own code: use a model whose architecture transformers ships"
        )
    elif model in zoo.MODELS:
        how = (
            f"'{model}' is a model-zoo name that is not installed and its hub id {reference!r} "
            f"could not be fetched. Install it offline with: llmembed models install {model}"
        )
    elif Path(reference).exists():
        how = (
            f"{reference!r} exists but transformers cannot read it as a model "
            "(a folder needs config.json, tokenizer and weights; a file must be .gguf)"
        )
    else:
        how = (
            f"{model!r} is not a model-zoo name ({', '.join(zoo.MODELS)}), an existing folder "
            f"or .gguf file, or a reachable hub id. See: llmembed models list"
        )
    return ModelLoadError(
        _one_line(f"Could not load model {model!r}: {how}. ({type(err).__name__}: {err})")
    )


def _load_config(reference: str) -> Any:
    """The transformers config of a checked reference; a model's own code is never run."""
    from transformers import AutoConfig

    path = Path(reference)
    if reference.endswith(".gguf") and path.is_file():
        return AutoConfig.from_pretrained(
            str(path.parent), gguf_file=path.name, trust_remote_code=False
        )
    return AutoConfig.from_pretrained(reference, trust_remote_code=False)


def model_info_memo_path() -> Path:
    """The JSON file where :func:`model_info` remembers local models' answers across processes
    (``model-info.json`` beside :func:`llmembed.files.disk_memo_path`)."""
    return files.disk_memo_path().with_name("model-info.json")


def _memo_key(reference: str) -> str | None:
    """The memo key of a local model folder's :class:`ModelInfo`: its ``config.json`` bytes and
    the llmembed and transformers versions (which decide how they are read); None for anything
    else (a ``.gguf`` file, a hub id)."""
    config = Path(reference) / "config.json"
    if not config.is_file():
        return None
    from importlib.metadata import version

    from . import __version__

    try:
        data = config.read_bytes()
    except OSError:
        return None
    stamp = f"llmembed {__version__} transformers {version('transformers')}\n".encode()
    return files.sha256_bytes(stamp + data)


def model_info(model: str) -> ModelInfo:
    """Shape of ``model`` read from its configuration only (no weights are loaded).

    ``model`` is anything a backbone spec accepts: a zoo short name (its installed folder, else
    its hub id), a local folder with ``config.json``, a ``.gguf`` file (its metadata, as
    transformers reads it) or a hub id (fetched by ``transformers.AutoConfig``, online or from
    the local hub cache). A zoo model that is neither installed nor reachable on the hub is
    described from the zoo's registry (``max_positions`` None). A local folder's answer is
    remembered (:func:`model_info_memo_path`, keyed by :func:`_memo_key`): importing
    transformers to read a config took about 2 s of every warm fit, which loads no model.

    Raises:
        ModelLoadError: ``model`` is not a model reference (:func:`check_reference`), the model
            cannot be found, or its config cannot be read (custom code included: it is never
            run) or lacks the layer count / width.
    """
    from . import zoo

    reference = zoo.resolve(model)
    check_reference(model, reference)
    key = _memo_key(reference)
    known = files.read_json_memo(model_info_memo_path()).get(key) if key else None
    if isinstance(known, dict):
        try:
            return ModelInfo(**known)
        except TypeError:  # written by another version of ModelInfo: read the config again
            pass
    try:
        config = _load_config(reference)
    except (OSError, ValueError) as e:
        entry = zoo.MODELS.get(model)
        if entry is not None and reference == entry.hub_id:
            return ModelInfo(
                model_type=entry.model_type,
                is_decoder=entry.kind == "decoder",
                num_layers=entry.num_layers,
                hidden_size=entry.hidden_size,
            )
        raise _model_not_found(model, reference, e) from e
    info = info_from_config(config)
    if key:
        fields_ = asdict(info)
        del fields_["num_hidden_states"]  # derived, not an argument
        files.remember_json(model_info_memo_path(), key, fields_)
    return info
