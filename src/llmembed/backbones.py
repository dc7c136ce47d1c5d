"""Frozen backbones: load any transformers model and extract pooled hidden states of several layers.

One forward pass per batch captures every requested layer through forward hooks on the model's
layer list, pools it at once (so no full hidden-state stack is kept) and stops the pass after the
deepest requested layer. Batches are length-sorted and sized by a token budget; output order is
input order. A text longer than ``max_length`` tokens is truncated or, with ``long_texts =
"chunk"``, embedded in overlapping windows whose vectors are pooled (:class:`BackboneSpec`).

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
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import files
from .config import Settings, is_int
from .errors import ConfigError, ExtractionOOMError, ModelLoadError
from .hardware import cpu_has_bf16, cpu_has_fp16, refresh_threads
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
    "compute_dtype",
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
    long_texts: a text longer than max_length tokens is "truncate"d (its first tokens kept) or
        "chunk"ed: embedded in overlapping windows of max_length tokens, each with the special
        tokens and the template, whose vectors are pooled. A text that fits is embedded the
        same either way (bit for bit). On news, whose lead says what a text is about, pooled windows
        alone classified worse than truncation; a recipe holding the model twice, truncating
        and chunking, did not (docs/results.md, "Long documents").
    chunk_stride: text tokens between the starts of consecutive windows (template and special
        tokens not counted); None = 3/4 of a window's text tokens (25% overlap). A stride
        longer than a window's text tokens would skip text: refused at load.
    chunk_pooling: how a text's window vectors are pooled: "mean" or "max" (elementwise).
    max_chunks: embed only the first k windows of a text; None = all of them.
    The chunk settings do nothing with "truncate" (and are left out of the fingerprint then).

    Raises:
        ConfigError: an unknown pooling, a bad padding, dtype, long_texts or chunk_pooling, or a
            non-positive size.
    """

    table = "backbone setting"
    quiet_defaults = ("template", "long_texts", "chunk_stride", "chunk_pooling", "max_chunks")

    model: str
    layers: str = "-1"
    pooling: str = "mean"
    max_length: int = DEFAULT_MAX_LENGTH
    dtype: str = "auto"
    padding: str = "longest"
    template: str = TEXT_FIELD
    token_budget: int | None = None
    max_batch_size: int = 256
    long_texts: str = "truncate"
    chunk_stride: int | None = None
    chunk_pooling: str = "mean"
    max_chunks: int | None = None

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
        if self.long_texts not in ("truncate", "chunk"):
            raise ConfigError(f"long_texts must be 'truncate' or 'chunk', not {self.long_texts!r}")
        if self.chunk_pooling not in ("mean", "max"):
            raise ConfigError(f"chunk_pooling must be 'mean' or 'max', not {self.chunk_pooling!r}")
        for name, unit in (("chunk_stride", "tokens"), ("max_chunks", "windows")):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                raise ConfigError(f"{name} must be a positive number of {unit}, not {value!r}")

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


def compute_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype a backbone whose weights are in ``dtype`` computes in on ``device``.

    ``dtype`` itself, except bf16 or fp16 on a CPU without native matmul for it (bf16: no
    avx512_bf16 / AMX; fp16: no avx512_fp16 / AMX-FP16; every ARM CPU), which computes in fp32.
    Why: there half-precision matmuls take an emulated path (on a 2-core AVX2 Zen 3: bf16
    linear layers 7.6x slower than fp32, all-mpnet-base-v2 on SST-2 sentences 6.0-6.8x), so a
    model saved with bf16 backbones on a GPU or a bf16 CPU would crawl on an older CPU. The
    weights keep their half-precision rounding (loaded in ``dtype``, then cast up, exactly), so
    the features are ``dtype``'s up to the rounding of the activations (MPNet: cosine 0.99995 or
    more to bf16 compute).
    """
    if device.type != "cpu" or dtype not in (torch.bfloat16, torch.float16):
        return dtype
    native = cpu_has_bf16() if dtype == torch.bfloat16 else cpu_has_fp16()
    return dtype if native else torch.float32


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


def _special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens ``tokenizer(text)`` puts before and after a text's own tokens, e.g.
    ([CLS], [SEP]) or ([<bos>], []).

    transformers 5's fast tokenizers have no ``build_inputs_with_special_tokens``: they are read
    off one text encoded with and without special tokens.

    Raises:
        ModelLoadError: the special tokens are not a fixed head and tail around the text's.
    """
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    raise ModelLoadError(
        f"Cannot tell where {type(tokenizer).__name__} puts its special tokens, so long texts "
        "cannot be cut into windows: use long_texts='truncate'."
    )


@dataclass(frozen=True)
class _WindowPlan:
    """How a text longer than max_length is cut (long_texts = "chunk").

    Each window is ``before`` + ``size`` (or fewer, in the last window) of the text's own
    tokens + ``after``: max_length tokens at most. before: the tokenizer's leading special
    tokens, then the template's head; after: the template's tail, then the trailing special
    tokens. Windows start ``stride`` text tokens apart; ``max_windows`` keeps the first k.
    glue: the whitespace that ends the template's head, tokenized with the text rather than
    with the head, as in the whole templated text (BPE and SentencePiece tokenizers read
    "query: good" as ":", "▁good"; the head alone would end in a "▁" of its own).
    """

    glue: str
    before: list[int]
    after: list[int]
    size: int
    stride: int
    max_windows: int | None

    @classmethod
    def plan(cls, tokenizer: Any, spec: BackboneSpec, max_length: int) -> _WindowPlan:
        """The windows of ``max_length`` tokens for this tokenizer and spec.

        Raises:
            ConfigError: the special and template tokens leave no room for text, or
                ``chunk_stride`` is more than a window's text tokens (text would be skipped).
            ModelLoadError: as :func:`_special_tokens`.
        """
        first, last = _special_tokens(tokenizer)
        head_text, tail_text = spec.template.split(TEXT_FIELD)
        glue = head_text[len(head_text.rstrip()) :]
        head, tail = (
            tokenizer(part, add_special_tokens=False)["input_ids"]
            for part in (head_text.rstrip(), tail_text)
        )
        frame = len(first) + len(head) + len(tail) + len(last)
        size = max_length - frame
        if size < 1:
            raise ConfigError(
                f"{spec.model}: max_length={max_length} leaves no room for text in a window "
                f"({frame} special and template tokens): raise max_length or shorten the template."
            )
        stride = spec.chunk_stride or max(1, size * 3 // 4)
        if stride > size:
            raise ConfigError(
                f"{spec.model}: chunk_stride={stride} is more than the {size} text tokens of a "
                f"window (max_length {max_length} less {frame} special and template tokens), so "
                f"text would be skipped: use chunk_stride <= {size}."
            )
        return cls(glue, first + head, tail + last, size, stride, spec.max_chunks)

    def cut(self, body: list[int]) -> list[list[int]]:
        """The windows (token ids) of a text whose own tokens (``glue`` + text) are ``body``:
        starting at 0, stride, 2 * stride, ..., the last one the first to reach the end."""
        count = 1 + max(0, -(-(len(body) - self.size) // self.stride))  # ceil division
        if self.max_windows is not None:
            count = min(count, self.max_windows)
        starts = range(0, count * self.stride, self.stride)
        return [self.before + body[s : s + self.size] + self.after for s in starts]


class _WindowPool:
    """Pools each text's window vectors as batches bring them, for :meth:`Backbone.iter_embed`:
    one running vector per text whose windows are not all done.

    counts: windows per text; method: "mean" or "max".
    """

    def __init__(self, counts: list[int], method: str) -> None:
        self.counts = counts
        self.left = list(counts)
        self.mean = method == "mean"
        self.combine = np.add if self.mean else np.maximum  # the mean divides at the end
        self.running: dict[int, np.ndarray] = {}

    def add(self, owners: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Take one batch (row i: vectors of a window of text ``owners[i]``).

        Returns: (the texts this batch finished, their pooled vectors), or None. A text of one
        window gets its vectors unchanged.
        """
        done, out = [], []
        for text, row in zip(owners.tolist(), vectors):
            if self.counts[text] > 1:
                self.left[text] -= 1
                acc = self.running.pop(text, None)
                # A copy of the first window's: a view would keep the batch's array alive.
                row = row.copy() if acc is None else self.combine(acc, row, out=acc)
                if self.left[text]:
                    self.running[text] = row
                    continue
                if self.mean:
                    row /= np.float32(self.counts[text])
            done.append(text)
            out.append(row)
        return (np.asarray(done), np.stack(out)) if done else None


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
        self.dtype = resolve_dtype(spec.dtype, self.device)  # of the weights, and pinned
        self.compute_dtype = compute_dtype(self.dtype, self.device)
        self.reference = _resolve_reference(spec.model)
        self.token_budget = spec.token_budget or (32768 if self.device.type == "cuda" else 2048)
        # Truncation in tokens: spec.max_length, or the model's limit for the default (at load).
        self.max_length = spec.max_length
        self._model: Any = None
        self._tokenizer: Any = None
        self._layers: list[int] = []
        self._causal = False
        self._window_plan: _WindowPlan | None = None  # how long texts are cut ("chunk")
        self.info: ModelInfo | None = None
        self._fingerprint: tuple[str, str] | None = None  # current, legacy
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
                its transformer blocks cannot be found, or (long_texts = "chunk") where its
                tokenizer puts special tokens cannot be told.
            ConfigError: pooling "pooler" on a model without a pooler, a bad layer spec,
                ``max_length`` above the model's position limit, or (long_texts = "chunk") a
                window with no room for text or a ``chunk_stride`` longer than a window's text.
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
        if self.compute_dtype != self.dtype:
            model = model.to(self.compute_dtype)
            name = str(self.dtype).replace("torch.", "")
            warnings.warn(
                f"{self.spec.model}: this CPU has no native {name} matmul, so the {name} "
                f"weights run in float32 (the same features up to rounding; emulated {name} "
                "is several times slower)",
                UserWarning,
                stacklevel=3,
            )
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
        chunked = self.spec.long_texts == "chunk"
        window_plan = _WindowPlan.plan(tokenizer, self.spec, max_length) if chunked else None
        self._register_hooks(blocks, layers, info.num_hidden_states - 1)
        self.num_hidden_states = info.num_hidden_states
        self.hidden_size = info.hidden_size
        self._layers = layers
        self.max_length = max_length
        self._block_list = blocks
        self._window_plan = window_plan
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
        model is loaded for its resolved commit. The layers count as resolved indices, so two
        spellings of the same hidden states ("-1" and "24" of a 25-hidden-state model) share
        one fingerprint. Computed once (under the load lock, so threads asking at once hash the
        files once).

        Raises:
            ModelLoadError: as :meth:`load`; a reference that is not a model is refused before
                any file is hashed.
            ConfigError: as :meth:`load`.
        """
        return self._fingerprints()[0]

    def legacy_fingerprint(self) -> str:
        """The fingerprint of llmembed 0.1.0, which also hashed the layer spec as written (so
        "-1" and "24" had two). Cache folders and saved models from then carry it: the cache
        still reads such a folder, and a saved model's pin still matches.

        Raises: as :meth:`fingerprint`.
        """
        return self._fingerprints()[1]

    def _fingerprints(self) -> tuple[str, str]:
        if self._fingerprint is not None:
            return self._fingerprint
        with self._lock:
            if self._fingerprint is None:
                self._fingerprint = self._compute_fingerprints()
        return self._fingerprint

    def _compute_fingerprints(self) -> tuple[str, str]:
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
        if self.spec.long_texts == "truncate":  # the chunk settings change nothing then
            for name in ("chunk_stride", "chunk_pooling", "max_chunks"):
                spec.pop(name, None)
        payload = {
            "model": identity,
            "spec": spec,
            "layers": self._resolved_layers(),
            "dtype": str(self.dtype),
            "version": EXTRACTION_VERSION,
        }
        legacy = files.sha256_bytes(json.dumps(payload, sort_keys=True).encode())[:32]
        spec.pop("layers", None)  # "layers" below holds them, resolved
        current = files.sha256_bytes(json.dumps(payload, sort_keys=True).encode())[:32]
        return current, legacy

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
        texts each batch finished (with chunking, a text is finished by its last window).

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

        Batches are over :meth:`windows`; with chunking a text is yielded, its windows' vectors
        pooled (``chunk_pooling``), with the batch that holds its last window (a batch that
        finishes no text yields nothing), and only unfinished texts' pooled vectors are kept.

        Sorting and batching span all of `texts`, so a caller that stores results in pieces
        (the embedding cache) should pass everything at once rather than in slices: slices of
        1,024 SST-2 sentences in file order waste ~18% of the tokens on padding, all at once ~0.4%.

        Raises:
            ExtractionOOMError: out of memory on a batch (lower token_budget / max_length).
            ModelLoadError / ConfigError: as :meth:`load`.
        """
        self.load()
        if not len(texts):
            return
        windows = self.windows(texts)
        counts = [len(w) for w in windows]
        seqs = [ids for text_windows in windows for ids in text_windows]
        owners = np.repeat(np.arange(len(windows)), counts)
        pool = _WindowPool(counts, self.spec.chunk_pooling)
        for batch in self.plan_batches([len(ids) for ids in seqs]):
            refresh_threads()  # the machine's load may have changed since the last batch
            vectors = self._forward(*self._pad([seqs[i] for i in batch])).cpu().numpy()
            finished = pool.add(owners[batch], vectors)
            if finished is not None:
                yield finished

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text put in the spec's template, truncated to its max_length
        (special tokens added).

        Thread-safe (one tokenization at a time per Backbone).
        """
        return self._encode(self._templated(texts), truncation=True, max_length=self.max_length)

    def windows(self, texts: Sequence[str]) -> list[list[list[int]]]:
        """The sequences :meth:`iter_embed` runs: per text, the token ids of its windows.

        A text that fits in max_length tokens (template and special tokens included), or any
        text with long_texts = "truncate", has one window: its :meth:`tokenize` ids. With
        "chunk", a longer text's text tokens (tokenized alone, like the template's head and
        tail) are cut into windows of max_length tokens at most, each holding the special
        tokens and the template; windows start chunk_stride text tokens apart and the last ends
        at the end of the text (or at the max_chunks-th window).

        Takes: texts. Returns: per text, a list of windows (lists of token ids).

        Raises:
            ModelLoadError / ConfigError: as :meth:`load`.
        """
        self.load()
        texts = list(texts)
        if self._window_plan is None:
            return [[ids] for ids in self.tokenize(texts)]
        # Without truncation: the ids of a text that fits are exactly what tokenize gives.
        whole = self._encode(self._templated(texts))
        out = [[ids] for ids in whole]
        long = [i for i, ids in enumerate(whole) if len(ids) > self.max_length]
        if long:
            glue = self._window_plan.glue
            bodies = self._encode([glue + texts[i] for i in long], add_special_tokens=False)
            for i, body in zip(long, bodies):
                out[i] = self._window_plan.cut(body)
        return out

    def count_windows(self, texts: Sequence[str]) -> np.ndarray:
        """How many windows each text is embedded in (1 with long_texts = "truncate"; more for
        a text longer than max_length with "chunk"). Tokenizes only.

        Takes: texts. Returns: int64 array [len(texts)].

        Raises:
            ModelLoadError / ConfigError: as :meth:`load`.
        """
        return np.array([len(w) for w in self.windows(texts)], dtype=np.int64)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text costs to embed: the lengths of its windows summed (with
        long_texts = "truncate", its truncated length). Tokenizes only.

        Takes: texts. Returns: one count per text.

        Raises:
            ModelLoadError / ConfigError: as :meth:`load`.
        """
        return [sum(map(len, w)) for w in self.windows(texts)]

    def _templated(self, texts: list[str]) -> list[str]:
        """Each text put in the spec's template."""
        if self.spec.template == TEXT_FIELD:
            return texts
        head, tail = self.spec.template.split(TEXT_FIELD)
        return [head + t + tail for t in texts]

    def _encode(
        self, texts: list[str], add_special_tokens: bool = True, **truncation: Any
    ) -> list[list[int]]:
        """Token ids of ``texts`` (no truncation unless asked), one tokenization at a time."""
        tokenizer = self.load()._tokenizer
        with self._tokenize_lock:
            # verbose=False: no "longer than the maximum" warning for a text to be chunked.
            return tokenizer(
                texts, add_special_tokens=add_special_tokens, verbose=False, **truncation
            )["input_ids"]

    def plan_batches(self, lengths: Sequence[int]) -> list[np.ndarray]:
        """The batches :meth:`embed` runs for sequences of these token lengths (texts as
        :meth:`tokenize` gives them or, with chunking, :meth:`windows`): index arrays, longest
        first, each batch's padded size within the token budget. Public so that callers can
        estimate padding and cost without running the model (e.g. the benchmark harness)."""
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
