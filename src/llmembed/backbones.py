"""Frozen backbones: load any transformers model and extract pooled hidden states of several layers.

One forward pass per batch captures every requested layer through forward hooks on the model's
layer list, pools it at once (so no full hidden-state stack is kept) and stops the pass after the
deepest requested layer. Batches are length-sorted and sized by a token budget; output order is
input order.

Thread safety: any number of threads may share one :class:`Backbone` and get exactly the
results of sequential calls. The hooks are registered once, at load, and do nothing unless the
calling context has a capture of its own: each forward pass sets its per-call capture state in a
:class:`contextvars.ContextVar` (per thread, like transformers' own output capturing), so one
call's hooks never see, pool or stop another call's pass. Forward passes run concurrently (torch
releases the GIL in its kernels); loading, the fingerprint memo and tokenization are under locks.
A model folder's own code (``auto_map``) is never run: every transformers call passes
``trust_remote_code=False``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import files
from .config import Settings
from .errors import ConfigError, ExtractionOOMError, ModelLoadError
from .hardware import cpu_has_bf16
from .introspect import (
    ModelInfo,
    _model_not_found,
    check_reference,
    info_from_config,
    model_info,
)
from .pooling import check_pooling, pool

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "EXTRACTION_VERSION",
    "TEXT_FIELD",
    "Backbone",
    "BackboneSpec",
    "cpu_has_bf16",
    "parse_layers",
    "resolve_device",
    "resolve_dtype",
]

# Bump when a change alters the vectors extraction produces, so old cache entries are not reused.
EXTRACTION_VERSION = 1

TEXT_FIELD = "{text}"
"""Where the text goes in a backbone's ``template``; the default template is just this."""

DEFAULT_MAX_LENGTH = 512
"""BackboneSpec's default truncation; lowered to the position limit of a model with fewer."""

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "merges.txt",
    "vocab.json",
    "tokenizer.model",
    "config.json",
)


@dataclass
class BackboneSpec(Settings):
    """What to extract from one frozen model.

    model: zoo short name (``llmembed models list``), hub id, local folder or ``.gguf`` file.
    layers: hidden-state indices (0 = embeddings, -1 = last layer):
        "-1", "-5:", "10:20", "6,12,18", "all".
    pooling: one of ``llmembed.pooling.POOLINGS``, or several joined by commas
        ("mean_no_first,last"), all computed from the same forward pass; vectors are ordered
        layer-major (layer 1 poolings, layer 2 poolings, ...).
    padding: "longest" (dynamic, per batch) or "max_length" (the published code's fixed padding).
    max_length: truncation, in tokens. Above the model's position limit
        (``max_position_embeddings``) it is refused at load, except the default
        (:data:`DEFAULT_MAX_LENGTH`), which is lowered to the limit (a tiny model with 256
        positions works with the default spec); the fingerprint keeps the value written.
    template: how a text is put to the model, ``{text}`` marking where it goes (e.g.
        EmbeddingGemma's ``"task: classification | query: {text}"``, or a decoder prompt whose
        last token sums the text up, read with ``last`` pooling). Part of the fingerprint.
    token_budget: padded tokens per batch (batches of short texts hold more texts); None picks
        2048 on CPU (small batches stay in cache: measured faster) and 32768 on CUDA.

    Raises:
        ConfigError: an unknown pooling, a bad padding or dtype, or a non-positive size.
    """

    table = "backbone setting"
    quiet_defaults = ("template",)

    model: str
    layers: str = "-1"
    pooling: str = "mean"
    max_length: int = DEFAULT_MAX_LENGTH
    dtype: str = "auto"
    padding: str = "longest"
    template: str = TEXT_FIELD
    token_budget: int | None = None
    max_batch_size: int = 256

    def __post_init__(self) -> None:
        self.layers = str(self.layers)
        for method in self.poolings:
            check_pooling(method)
        if "pooler" in self.poolings and len(self.poolings) > 1:
            raise ConfigError("pooling 'pooler' cannot be combined with other poolings")
        if self.padding not in ("longest", "max_length"):
            raise ConfigError(f"padding must be 'longest' or 'max_length', not {self.padding!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(
                f"dtype must be auto, float32, bfloat16 or float16, not {self.dtype!r}"
            )
        if self.template.count(TEXT_FIELD) != 1:
            raise ConfigError(
                f"template must contain {TEXT_FIELD} exactly once (where the text goes), "
                f"not {self.template!r}"
            )
        if self.max_length < 1 or (self.token_budget or 1) < 1 or self.max_batch_size < 1:
            raise ConfigError("max_length, token_budget and max_batch_size must be positive")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneSpec:
        """Build from a recipe table; unknown keys are an error (typos must not pass silently).

        Raises:
            ConfigError: an unknown key, no ``model``, or a bad value.
        """
        if "model" not in data:
            raise ConfigError("A backbone needs a 'model' (zoo name, hub id, folder or .gguf)")
        return super().from_dict(data)

    @property
    def poolings(self) -> list[str]:
        """The pooling methods, in order (``pooling`` split at commas)."""
        return [p.strip() for p in self.pooling.split(",")]


def parse_layers(spec: str, num_hidden_states: int) -> list[int]:
    """Resolve a layer spec to absolute hidden-state indices in [0, num_hidden_states).

    Parts separated by commas are ints or Python slices; order is kept, duplicates are an error.

    Raises:
        ConfigError: a malformed spec, an index out of range, no layer or a layer twice.
    """
    n = num_hidden_states
    text = str(spec).strip()
    if text == "all":
        return list(range(n))
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if ":" in part:
                bounds = [int(b) if b.strip() else None for b in part.split(":")]
                if len(bounds) > 3:
                    raise ValueError(part)
                out.extend(range(n)[slice(*bounds)])
            else:
                i = int(part)
                if not -n <= i < n:
                    raise ConfigError(
                        f"Layer {i} is out of range: this model has {n} hidden states "
                        f"(0 = embeddings .. {n - 1} = last layer, or -1 .. -{n})."
                    )
                out.append(i % n)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(
            f"Bad layer spec {spec!r}: use e.g. '-1', '-5:', '10:20', '6,12,18' or 'all'"
        ) from None
    if not out:
        raise ConfigError(f"Layer spec {spec!r} selects no layer of {n} hidden states")
    if len(set(out)) != len(out):
        raise ConfigError(f"Layer spec {spec!r} selects a layer twice")
    return out


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when present, else cpu; anything else as ``torch.device(device)``.

    Raises:
        ConfigError: cuda was asked for but is not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device={device!r} was asked for but CUDA is not available here "
            f"(torch {torch.__version__}); use device='cpu' or 'auto'."
        )
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> bf16 on bf16-capable CPUs and GPUs, fp16 on older GPUs, fp32 otherwise."""
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


def _local_identity(ref: str) -> str | None:
    """Content hash of a local model (weights, config, tokenizer), or None for a hub id.

    Takes a reference already accepted by :func:`llmembed.introspect.check_reference` (a model
    folder or a .gguf file: anything else must never get here, or a parent folder would have
    every weight file under it hashed).
    """
    path = Path(ref)
    if path.is_file():
        return files.sha256_file(path)
    if not path.is_dir():
        return None
    manifest = "".join(
        f"{f.relative_to(path)}:{files.sha256_file(f)}\n"
        for f in sorted(path.rglob("*"))
        if f.is_file() and (f.suffix in _WEIGHT_SUFFIXES or f.name in _TOKENIZER_FILES)
    )
    return files.sha256_bytes(manifest.encode())


def _resolve_reference(model: str) -> str:
    """Zoo short name -> installed folder or hub id; anything else unchanged."""
    from . import zoo

    return zoo.resolve(model)


def _find_layer_list(model: torch.nn.Module, num_layers: int) -> torch.nn.ModuleList:
    """The ModuleList holding the transformer blocks (Llama .layers, BERT .encoder.layer, ...)."""
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers:
            return module
    raise ModelLoadError(
        f"Cannot find the {num_layers} transformer blocks of {type(model).__name__}; "
        "multi-layer extraction supports decoder-only and encoder-only models."
    )


def _attention_is_causal(blocks: torch.nn.ModuleList) -> bool:
    """True when the blocks' attention is marked causal by transformers (``is_causal``)."""
    flags = [getattr(m, "is_causal", None) for m in blocks[0].modules()]
    flags = [f for f in flags if isinstance(f, bool)]
    return bool(flags) and all(flags)


class _StopForward(Exception):
    """Raised by a hook once the deepest requested layer is captured: the rest is not computed."""


class _Capture:
    """Per-call capture state of one forward pass: the mask, the poolings, what was pooled.

    mask: [b, t] attention mask of the batch (1 = real token).
    methods: pooling names, in order.
    stop_at: hidden-state index after which the pass is stopped (None: run to the end).
    """

    __slots__ = ("captured", "mask", "methods", "stop_at")

    def __init__(self, mask: torch.Tensor, methods: list[str], stop_at: int | None) -> None:
        self.mask = mask
        self.methods = methods
        self.stop_at = stop_at
        self.captured: dict[int, torch.Tensor] = {}

    def grab(self, index: int, hidden: Any) -> None:
        """Pool hidden state ``index`` (a tensor or a tuple whose first item is one).

        Raises:
            _StopForward: ``index`` is ``stop_at`` (the deepest layer this call needs).
        """
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        hidden = hidden.float()  # once per layer, whatever the number of poolings
        self.captured[index] = torch.stack([pool(hidden, self.mask, m) for m in self.methods])
        if index == self.stop_at:
            raise _StopForward


# The capture of the forward pass running in this context (thread), None outside `_forward`.
# A ContextVar is per thread, so hooks shared by every thread act only for their own caller.
_ACTIVE: ContextVar[_Capture | None] = ContextVar("llmembed_active_capture", default=None)

# transformers' logging verbosity is process-wide: loads that change and restore it take turns.
_LOAD_LOCK = threading.Lock()


class _LayerHook:
    """A forward (pre-)hook registered once at load; pools for the current context's call only.

    index: the hidden-state index this hook sees (0 = input of block 0, a pre-hook with kwargs;
        i >= 1 = output of block i - 1, a forward hook). A plain class, so a loaded model stays
    picklable.
    """

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, _module: torch.nn.Module, args: tuple, extra: Any) -> None:
        capture = _ACTIVE.get()
        if capture is None:  # a forward pass of someone else's (or a direct model call)
            return None
        if self.index:  # forward hook: `extra` is the block's output
            capture.grab(self.index, extra)
        else:  # pre-hook of block 0: `extra` is its kwargs
            capture.grab(0, args[0] if args else extra["hidden_states"])
        return None


class Backbone:
    """A frozen model plus what to extract from it. Loaded lazily on first use.

    spec: a :class:`BackboneSpec`, a recipe table (dict) or a model name.
    device: "auto" (cuda when present), "cpu", "cuda", "cuda:1", ...

    Thread-safe: threads sharing one Backbone get exactly the results of sequential calls
    (see the module docstring); the model is loaded once whichever thread comes first.

    Raises:
        ConfigError: a bad spec, or a device that is not available.
    """

    def __init__(self, spec: BackboneSpec | dict | str, device: str = "auto") -> None:
        if isinstance(spec, str):
            spec = BackboneSpec(model=spec)
        elif isinstance(spec, dict):
            spec = BackboneSpec.from_dict(spec)
        self.spec = spec
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(spec.dtype, self.device)
        self.reference = _resolve_reference(spec.model)
        self.token_budget = spec.token_budget or (32768 if self.device.type == "cuda" else 2048)
        # Truncation in tokens: spec.max_length, or the model's limit for the default (at load).
        self.max_length = spec.max_length
        self._model: Any = None
        self._tokenizer: Any = None
        self._layers: list[int] = []
        self._causal = False
        self.info: ModelInfo | None = None
        self._fingerprint: str | None = None
        self._init_locks()

    def _init_locks(self) -> None:
        # Re-entrant: fingerprint() holds it and calls load().
        self._lock = threading.RLock()
        # Fast tokenizers raise "Already borrowed" when one thread changes their truncation
        # settings while another encodes; tokenizing is cheap next to the forward pass.
        self._tokenize_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle state: everything but the locks (new ones are made on unpickling)."""
        state = dict(self.__dict__)
        state.pop("_lock", None)
        state.pop("_tokenize_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled Backbone, with fresh locks."""
        self.__dict__.update(state)
        self._init_locks()

    # -- loading -------------------------------------------------------------------------------
    def check_reference(self) -> str:
        """Refuse a model reference that is not a zoo name, a model folder (with config.json), a
        .gguf file or a hub id (``owner/name``), before any file is read or hashed.

        Returns: "folder", "gguf" or "hub" (see :func:`llmembed.introspect.check_reference`).

        Raises:
            ModelLoadError: a one-line error naming the reference and what it is instead.
        """
        return check_reference(self.spec.model, self.reference)

    def load(self) -> Backbone:
        """Load tokenizer and model (frozen, eval mode). Idempotent and thread-safe (several
        threads calling it at once load the model once); returns self.

        Raises:
            ModelLoadError: the reference is not a model (:meth:`check_reference`), the model
                cannot be found or loaded (a model that needs its own code, ``auto_map``,
                included: that code is never run), its tokenizer has no pad / eos / unk token,
                or its transformer blocks cannot be found.
            ConfigError: pooling "pooler" on a model without a pooler, a bad layer spec, or
                ``max_length`` above the model's position limit.
        """
        if self._model is not None:  # published last by _load: everything else is set
            return self
        with self._lock:
            if self._model is None:
                self._load()
        return self

    def _load(self) -> None:
        """Load and publish the model; the caller holds ``self._lock``."""
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        kind = self.check_reference()
        ref, kwargs = self.reference, {}
        if kind == "gguf":
            kwargs["gguf_file"] = Path(ref).name
            ref = str(Path(ref).parent)
        with _LOAD_LOCK:
            verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()  # a per-tensor bar for a model loading in a second
            try:
                tokenizer = AutoTokenizer.from_pretrained(ref, trust_remote_code=False, **kwargs)
                model = AutoModel.from_pretrained(
                    ref, dtype=self.dtype, trust_remote_code=False, **kwargs
                )
            except (OSError, ValueError) as e:
                raise _model_not_found(self.spec.model, self.reference, e) from e
            finally:
                hf_logging.set_verbosity(verbosity)
                if bars:
                    hf_logging.enable_progress_bar()
        if kwargs.get("gguf_file"):
            model = model.to(self.dtype)  # GGUF dequantizes to fp32 whatever dtype says
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
            if tokenizer.pad_token is None:
                raise ModelLoadError(f"{self.spec.model}: tokenizer has no pad, eos or unk token")
        tokenizer.padding_side = "right"  # causal models: pads after the text never affect it
        model.eval().requires_grad_(False).to(self.device)
        info = info_from_config(model.config)  # the same answer as introspect.model_info
        limit = info.max_positions
        max_length = self.spec.max_length
        if limit is not None and max_length > limit and max_length == DEFAULT_MAX_LENGTH:
            max_length = limit  # the default, not a choice: the model's whole window
        elif limit is not None and max_length > limit:
            raise ConfigError(
                f"{self.spec.model}: max_length={self.spec.max_length} is above the model's "
                f"position limit of {limit} tokens (max_position_embeddings); use max_length "
                f"<= {limit}."
            )
        if self.spec.pooling == "pooler":
            if not hasattr(model, "pooler") or model.pooler is None:
                raise ConfigError(f"{self.spec.model} has no pooler: choose another pooling")
            layers = [info.num_hidden_states - 1]
        else:
            layers = parse_layers(self.spec.layers, info.num_hidden_states)
        blocks = _find_layer_list(model, info.num_layers)
        self._register_hooks(blocks, layers, info.num_hidden_states - 1)
        self.num_hidden_states = info.num_hidden_states
        self.hidden_size = info.hidden_size
        self._layers = layers
        self.max_length = max_length
        self._block_list = blocks
        # The attention mask may be left out only for a decoder whose attention transformers
        # marks causal; a decoder without the marks keeps the mask (slower, same vectors).
        self._causal = info.is_decoder and _attention_is_causal(blocks)
        self.info = info
        self._tokenizer = tokenizer
        self._model = model  # last: a thread that sees _model sees everything above

    def _register_hooks(self, blocks: torch.nn.ModuleList, layers: list[int], last: int) -> None:
        """Register, once, the hooks that capture hidden states ``layers`` (all but ``last``,
        which `_forward` reads from the model's output). They act only inside `_forward`."""
        if 0 in layers and self.spec.poolings != ["pooler"]:
            blocks[0].register_forward_pre_hook(_LayerHook(0), with_kwargs=True)
        for i in sorted(set(layers) - {0, last}):
            blocks[i - 1].register_forward_hook(_LayerHook(i))

    @property
    def layer_indices(self) -> list[int]:
        """Absolute hidden-state indices extracted (after load)."""
        return list(self.load()._layers)

    @property
    def n_vectors(self) -> int:
        """Vectors per text: layers x poolings."""
        return len(self.layer_indices) * len(self.spec.poolings)

    @property
    def tokenizer(self) -> Any:
        """The loaded tokenizer (right padding)."""
        return self.load()._tokenizer

    @property
    def model(self) -> torch.nn.Module:
        """The loaded, frozen transformers model (eval mode, on `device`)."""
        return self.load()._model

    @property
    def blocks(self) -> torch.nn.ModuleList:
        """The model's transformer blocks, in depth order (hidden state i+1 is block i's output)."""
        return self.load()._block_list

    def n_parameters(self) -> int:
        """Parameters of the frozen model, embeddings included."""
        return int(sum(p.numel() for p in self.model.parameters()))

    @property
    def is_decoder(self) -> bool:
        """True for a decoder (causal LM), by :func:`llmembed.introspect.config_is_decoder`."""
        self.load()
        return bool(self.info is not None and self.info.is_decoder)

    def fingerprint(self) -> str:
        """Identity of what `embed` returns: model content (or hub revision) + settings.

        32 hex characters; it keys the on-disk embedding cache. A local model (folder or
        ``.gguf``) is identified by its files' hashes and its layer indices come from its config,
        so nothing is loaded: a run whose texts are all cached never loads the model. A hub
        model is loaded for its resolved commit. Computed once (under the load lock, so threads
        asking at once hash the files once).

        Raises:
            ModelLoadError: as :meth:`load`; a reference that is not a model is refused before
                any file is hashed.
            ConfigError: as :meth:`load`.
        """
        if self._fingerprint is not None:
            return self._fingerprint
        with self._lock:
            if self._fingerprint is None:
                self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        self.check_reference()  # before any hashing: a parent folder must not be walked
        identity = _local_identity(self.reference)
        if identity is None:  # hub model: its resolved commit, known after loading
            self.load()
            commit = getattr(self._model.config, "_commit_hash", None) or "unknown-revision"
            identity = f"{self.reference}@{commit}"
        spec = self.spec.to_dict()
        spec.pop("token_budget")
        spec.pop("max_batch_size")
        spec.pop("model")
        payload = {
            "model": identity,
            "spec": spec,
            "layers": self._resolved_layers(),
            "dtype": str(self.dtype),
            "version": EXTRACTION_VERSION,
        }
        blob = json.dumps(payload, sort_keys=True).encode()
        return files.sha256_bytes(blob)[:32]

    def _resolved_layers(self) -> list[int]:
        """Absolute hidden-state indices: the loaded model's, else resolved from the config
        alone (the same :func:`~llmembed.introspect.info_from_config` rule as :meth:`load`)."""
        if self._model is not None:
            return list(self._layers)
        info = model_info(self.reference)
        if self.spec.pooling == "pooler":
            return [info.num_hidden_states - 1]
        return parse_layers(self.spec.layers, info.num_hidden_states)

    def describe(self) -> dict[str, Any]:
        """JSON-able description, stored beside cache entries and saved models."""
        self.load()
        return {
            "spec": self.spec.to_dict(),
            "reference": self.reference,
            "layers": self._layers,
            "dtype": str(self.dtype).replace("torch.", ""),
            "hidden_size": self.hidden_size,
        }

    # -- extraction ----------------------------------------------------------------------------
    def embed(
        self,
        texts: Sequence[str],
        progress: bool = True,
        on_batch: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Pooled hidden states, float32 [len(texts), n_vectors, hidden_size], in input order.

        n_vectors = layers x poolings, layer-major. ``on_batch`` is called with the number of
        texts of each batch done.

        Raises:
            ExtractionOOMError: out of memory on a batch (lower token_budget / max_length).
            ModelLoadError / ConfigError: as :meth:`load`.
        """
        self.load()
        out = np.zeros((len(texts), self.n_vectors, self.hidden_size), dtype=np.float32)
        bar = tqdm(
            total=len(texts),
            desc=f"embed {self.spec.model}",
            unit="text",
            disable=not progress or not len(texts),
            leave=False,
        )
        try:
            for idx, vectors in self.iter_embed(texts):
                out[idx] = vectors
                bar.update(len(idx))
                if on_batch is not None:
                    on_batch(len(idx))
        finally:
            bar.close()
        return out

    def iter_embed(self, texts: Sequence[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batch by batch, in processing order (longest first): (indices into `texts`,
        float32 vectors [len(indices), n_vectors, hidden_size]).

        Sorting and batching span all of `texts`, so a caller that stores results in pieces
        (the embedding cache) should pass everything at once rather than in slices: slices of
        1,024 SST-2 sentences in file order waste ~18% of the tokens on padding, all at once ~0.4%.

        Raises:
            ExtractionOOMError: out of memory on a batch (lower token_budget / max_length).
        """
        self.load()
        if not len(texts):
            return
        for idx, ids, mask in self._prepared(texts):
            yield idx, self._forward(ids, mask).cpu().numpy()

    def _prepared(self, texts: Sequence[str]) -> Iterator[tuple[np.ndarray, Any, Any]]:
        """(indices, ids, mask) batches: tokenized, length-sorted, budgeted and padded."""
        enc = self.tokenize(list(texts))
        for idx in self.plan_batches([len(ids) for ids in enc]):
            ids, mask = self._pad([enc[i] for i in idx])
            yield idx, ids, mask

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text put in the spec's template, truncated to its max_length
        (special tokens added).

        Thread-safe (one tokenization at a time per Backbone).
        """
        tokenizer = self.load()._tokenizer
        template = self.spec.template
        if template != TEXT_FIELD:
            head, tail = template.split(TEXT_FIELD)
            texts = [head + t + tail for t in texts]
        with self._tokenize_lock:
            return tokenizer(
                texts, truncation=True, max_length=self.max_length, add_special_tokens=True
            )["input_ids"]

    def plan_batches(self, lengths: Sequence[int]) -> list[np.ndarray]:
        """The batches :meth:`embed` runs for texts of these token lengths (in tokens, after
        truncation, as :meth:`tokenize` gives them): index arrays, longest texts first, each
        batch's padded size within the token budget. Public so that callers can estimate
        padding and cost without running the model (e.g. the benchmark harness)."""
        self.load()
        lengths = list(lengths)
        order = np.argsort(-np.asarray(lengths), kind="stable")
        fixed = self.spec.padding == "max_length"
        batches, start = [], 0
        while start < len(order):
            width = self.max_length if fixed else lengths[order[start]]
            size = max(1, min(self.spec.max_batch_size, self.token_budget // max(width, 1)))
            batches.append(order[start : start + size])
            start += size
        return batches

    def _pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = self.max_length if self.spec.padding == "max_length" else max(map(len, seqs))
        ids = torch.full((len(seqs), width), self._tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        return ids, mask

    def _oom_error(self, what: str, ids: torch.Tensor) -> ExtractionOOMError:
        return ExtractionOOMError(
            f"Out of {what} on a batch of {ids.shape[0]} x {ids.shape[1]} tokens: lower "
            f"token_budget (now {self.token_budget}) or max_length (now {self.max_length}), "
            f"or use smaller batches (max_batch_size, now {self.spec.max_batch_size}). "
            "Cached work is kept."
        )

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One batch -> [b, n_layers * n_poolings, hidden] pooled in float32.

        Safe to run in several threads at once: the hooks registered at load pool into this
        call's own :class:`_Capture`, set for this context (thread) only.
        """
        if self.device.type == "cuda":  # pinned host memory: asynchronous copies
            ids = ids.pin_memory().to(self.device, non_blocking=True)
            mask = mask.pin_memory().to(self.device, non_blocking=True)
        else:
            ids, mask = ids.to(self.device), mask.to(self.device)
        last = self.num_hidden_states - 1
        wanted = set(self._layers)
        methods = self.spec.poolings
        needs_output = methods == ["pooler"] or last in wanted
        capture = _Capture(mask, methods, None if needs_output else max(self._layers))
        captured = capture.captured
        # Causal model, right padding: a real token never attends to the pads after it, so the
        # mask is needed only for pooling. Without it attention takes the plain causal path
        # (FlashAttention on GPU; no 4D mask built). Pads' own states do change, so poolings
        # that read them (mean_padded) keep the mask.
        model_mask = None if self._causal and "mean_padded" not in methods else mask
        token = _ACTIVE.set(capture)
        try:
            with torch.inference_mode():
                output = self._model(input_ids=ids, attention_mask=model_mask, use_cache=False)
            if methods == ["pooler"]:
                captured[last] = output.pooler_output.float()[None]
            elif last in wanted:
                # HF's hidden_states[-1] is the final-norm output: use last_hidden_state.
                capture.grab(last, output.last_hidden_state)
        except _StopForward:
            pass
        except torch.cuda.OutOfMemoryError as e:
            raise self._oom_error("GPU memory", ids) from e
        except MemoryError as e:
            raise self._oom_error("memory", ids) from e
        except RuntimeError as e:
            text = str(e).lower()
            if "out of memory" not in text and "not enough memory" not in text:
                raise
            raise self._oom_error("memory", ids) from e
        finally:
            _ACTIVE.reset(token)
        return torch.cat([captured[i] for i in self._layers]).transpose(0, 1)
