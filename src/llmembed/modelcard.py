"""The saved-model folder: its files, the format of ``llmembed.json``, validation, the model card.

A saved model is a folder (written by :meth:`LLMEmbedClassifier.save_pretrained`)::

    head.safetensors     the trained head: weights and standardization buffers (no pickle)
    llmembed.json        everything else: recipe, classes, shapes, backbone pins, versions, metrics
    README.md            a human-readable model card (recipe, classes, data, metrics, licenses)
    lexical.safetensors  only with the lexical channel (``recipe.lexical.enabled``): its arrays,
                         ``<analyzer>.idf`` per analyzer, ``svm.coef``, ``svm.intercept``
    lexical.json         only with the lexical channel: ``config`` (equal to ``recipe.lexical``),
                         ``n_classes`` and ``vocabularies`` (per analyzer: n-gram -> column)

    fold-<i>/            only for an ensemble of fold models (``ensemble`` below): member i's
                         head.safetensors (and lexical files), for i = 1 .. k-1; member 0's
                         are the files above

``llmembed.json`` is written last: a folder holding it is complete. The lexical files are kept
out of it because vocabularies run to hundreds of thousands of n-grams.

``llmembed.json`` (format 3) is a JSON object with these fields:

* ``format_version`` (int): 3 (format 2 had no ``ensemble``). A folder without it is format 1
  (no backbone pins).
* ``versions`` (object): ``llmembed``, ``torch``, ``transformers`` and ``python`` versions.
* ``recipe`` (object): the recipe the head was trained with, every backbone's ``dtype``
  pinned to the one extraction resolved to at save time (``auto`` differs between machines);
  its ``lexical`` table is there only when it differs from the default (channel off).
* ``classes`` (list): the labels in ``predict_proba`` column order (strings or numbers).
* ``shapes`` (list of ``[n_vectors, width]``): the head's input shape per backbone. With the
  lexical channel the head has one more input, last, of shape ``[1, width]`` (width: the number
  of classes, or 1 for two classes), which also joins ``recipe.head.mean_of`` (see
  :func:`llmembed.lexical.head_config`); both are derived, not stored.
* ``backbones`` (list of objects, one per recipe backbone): ``model``, ``reference`` (the
  resolved source: a folder, a ``.gguf`` file or a hub id), ``fingerprint`` (the content
  fingerprint the embedding cache uses), ``dtype``, ``layers`` (absolute hidden-state indices),
  ``hidden_size``, ``n_vectors`` and ``license`` (for zoo models, else null).
* ``n_train`` (int or null), ``best_epoch`` (int or null), ``val_metrics`` (summary only:
  ``n``, ``accuracy``, ``macro_f1``, ``micro_f1``, ``positive_f1`` for two classes; or null).
* ``temperature`` (positive number): the softmax temperature fitted by calibration; folders
  written before it existed have none and load with 1.0.
* ``multi_label`` (object, multi-label models only): ``thresholds`` (one per class, in (0, 1)),
  ``at_least_one`` (bool: a text always gets its most probable label) and ``form`` ("sets" or
  "indicator": how ``predict`` answers); see :mod:`llmembed.multilabel`. Absent: single-label.
* ``selection`` (object, only for a model whose recipe was chosen among several): ``folds``,
  ``chosen`` (the recipe trained) and ``candidates`` (per candidate: ``recipe``, ``scores`` of
  the folds, ``mean``, ``std``, ``seconds``), and ``skipped`` (names left unscored by the time
  budget) when there are any; see :class:`llmembed.selection.Selection`.
* ``ensemble`` (object, only for an ensemble of k >= 2 fold models, :mod:`llmembed.ensemble`):
  ``scores`` (each member's accuracy on its held-out fold) and ``temperatures`` (each member's
  softmax temperature), k numbers each; ``temperature`` is then 1.0 (the averaged
  probabilities are used as they are).

Every malformed folder is refused with one :class:`~llmembed.errors.ModelLoadError` line that
names the file and the field.
"""

from __future__ import annotations

import json
import platform
import re
import statistics
import types
import typing
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import is_int
from .errors import ConfigError, LLMEmbedError, ModelLoadError
from .files import atomic_path, atomic_write_text
from .heads import FusionHead, HeadConfig
from .lexical import LexicalChannel, LexicalConfig, head_config, output_width
from .multilabel import FORMS, MultiLabel
from .recipes import Recipe
from .selection import Selection
from .stacking import PREFIX as STACK_PREFIX
from .stacking import BackboneScores
from .training import TrainConfig

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .backbones import Backbone

__all__ = [
    "CARD_NAME",
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "LEXICAL_CONFIG_NAME",
    "LEXICAL_WEIGHTS_NAME",
    "WEIGHTS_NAME",
    "BackbonePin",
    "SavedModel",
    "check_backbones",
    "dumps",
    "load_head",
    "load_fold_models",
    "load_lexical",
    "package_versions",
    "read_saved_model",
    "render_card",
    "resolve_folder",
    "summary_metrics",
    "write_saved_model",
]

FORMAT_VERSION = 3
CONFIG_NAME = "llmembed.json"
WEIGHTS_NAME = "head.safetensors"
CARD_NAME = "README.md"
LEXICAL_WEIGHTS_NAME = "lexical.safetensors"
LEXICAL_CONFIG_NAME = "lexical.json"
SUMMARY_KEYS = (
    "n",
    "accuracy",
    "macro_f1",
    "micro_f1",
    "positive_f1",
    "samples_f1",
    "subset_accuracy",
    "hamming_loss",
)
OPT_OUT = (
    "LLMEmbedClassifier.from_pretrained(path, check_backbones=False) (CLI: --no-check-backbones)"
)
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class BackbonePin:
    """What a saved model records about one backbone, to recognise it again at load."""

    model: str
    reference: str
    fingerprint: str
    dtype: str
    layers: list[int]
    hidden_size: int
    n_vectors: int
    license: str | None = None

    @classmethod
    def of(cls, backbone: Backbone, fingerprint: str) -> BackbonePin:
        """The pin of a loaded backbone whose (pinned-spec) fingerprint is ``fingerprint``.

        Takes: a :class:`~llmembed.backbones.Backbone` (loaded on demand) and its fingerprint.
        Returns: the pin. Raises: ModelLoadError / ConfigError when the backbone cannot load.
        """
        from . import zoo

        zoo_model = zoo.MODELS.get(backbone.spec.model)
        return cls(
            model=backbone.spec.model,
            reference=str(backbone.reference),
            fingerprint=fingerprint,
            dtype=str(backbone.dtype).replace("torch.", ""),
            layers=[int(i) for i in backbone.layer_indices],
            hidden_size=int(backbone.hidden_size),
            n_vectors=int(backbone.n_vectors),
            license=zoo_model.license if zoo_model is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The pin as the JSON object stored in ``llmembed.json``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class SavedModel:
    """The content of ``llmembed.json``, validated (see the module docstring for the fields)."""

    recipe: Recipe
    classes: list[Any]
    shapes: list[tuple[int, int]]
    backbones: list[BackbonePin] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    n_train: int | None = None
    best_epoch: int | None = None
    val_metrics: dict[str, Any] | None = None
    temperature: float = 1.0
    multi_label: MultiLabel | None = None
    selection: Selection | None = None
    ensemble: dict[str, list[float]] | None = None

    @property
    def head_shapes(self) -> list[tuple[int, int]]:
        """The head's input shapes: one per backbone (its scores' (1, n_classes) with
        ``head.stack``), then (1, width) for the lexical channel."""
        shapes = list(self.shapes)
        if self.recipe.head.stack:
            shapes = [(1, len(self.classes))] * len(shapes)
        if self.recipe.lexical.enabled:
            shapes.append((1, output_width(len(self.classes), self.multi_label is not None)))
        return shapes

    @property
    def head_config(self) -> HeadConfig:
        """The head architecture built: ``recipe.head``, with the lexical channel's input in
        ``mean_of`` when it is on (:func:`llmembed.lexical.head_config`)."""
        return head_config(self.recipe.head, len(self.recipe.backbones), self.recipe.lexical)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written as ``llmembed.json`` (always the current format)."""
        return {
            "format_version": FORMAT_VERSION,
            "versions": dict(self.versions),
            "recipe": self.recipe.to_dict(),
            "classes": list(self.classes),
            "shapes": [list(s) for s in self.shapes],
            "backbones": [p.to_dict() for p in self.backbones],
            "n_train": self.n_train,
            "best_epoch": self.best_epoch,
            "val_metrics": self.val_metrics,
            "temperature": self.temperature,
            **({"multi_label": self.multi_label.to_dict()} if self.multi_label else {}),
            **({"selection": self.selection.to_dict()} if self.selection else {}),
            **({"ensemble": self.ensemble} if self.ensemble else {}),
        }


def fold_folder(folder: str | Path, index: int) -> Path:
    """Where member ``index`` (>= 1) of an ensemble keeps its files in a saved-model folder."""
    return Path(folder) / f"fold-{index}"


# -- writing ------------------------------------------------------------------------------------
def package_versions() -> dict[str, str]:
    """Versions of llmembed, torch, transformers and Python, as recorded in a saved model."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    try:
        transformers_version = version("transformers")
    except PackageNotFoundError:  # pragma: no cover - transformers is a dependency
        transformers_version = "unknown"
    return {
        "llmembed": __version__,
        "torch": torch.__version__,
        "transformers": transformers_version,
        "python": platform.python_version(),
    }


def summary_metrics(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """The summary kept in ``llmembed.json``: n, accuracy, macro/micro-F1, positive-class F1
    (multi-label: n, micro/macro/samples-F1, subset accuracy, Hamming loss).

    Takes: metrics as :func:`llmembed.metrics.classification_metrics` returns them (or a summary,
    or None). Returns: a small dict without per-class report or confusion matrix, or None.
    """
    if not metrics:
        return None
    return {k: metrics[k] for k in SUMMARY_KEYS if k in metrics}


def _scalar_lines(items: list[Any], indent: str, width: int = 96) -> str:
    """A list of scalars as JSON, several items per line, lines at most ``width`` wide."""
    parts = [json.dumps(x, ensure_ascii=False) for x in items]
    one = "[" + ", ".join(parts) + "]"
    if len(indent) + len(one) <= width:
        return one
    inner = indent + "  "
    lines: list[str] = []
    line: list[str] = []
    size = len(inner)
    for p in parts:
        if line and size + len(p) + 2 > width:
            lines.append(", ".join(line))
            line, size = [], len(inner)
        line.append(p)
        size += len(p) + 2
    lines.append(", ".join(line))
    return "[\n" + ",\n".join(inner + ln for ln in lines) + "\n" + indent + "]"


def dumps(obj: Any, indent: str = "") -> str:
    """JSON that stays readable and small: objects indented, lists of numbers or strings packed.

    Takes: a JSON-able object. Returns: its JSON text (``json.loads`` gives the object back).
    A 1,000 x 1,000 confusion matrix is 1,000 lines, not a million.
    """
    inner = indent + "  "
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {dumps(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(obj, (list, tuple)):
        if all(not isinstance(x, (dict, list, tuple)) for x in obj):
            return _scalar_lines(list(obj), indent)
        return "[\n" + ",\n".join(inner + dumps(x, inner) for x in obj) + "\n" + indent + "]"
    return json.dumps(obj, ensure_ascii=False)


def write_saved_model(
    folder: str | Path,
    saved: SavedModel,
    state: dict[str, torch.Tensor],
    lexical: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None,
    folds: Sequence[tuple[dict[str, torch.Tensor], Any]] = (),
) -> Path:
    """Write a saved-model folder: head.safetensors, the lexical files, the fold models'
    folders, README.md, then llmembed.json (last: its presence marks a complete folder).

    Takes: the folder (created if needed), the :class:`SavedModel`, the head's state dict
    (CPU, contiguous tensors) and, when ``saved.recipe.lexical.enabled``, the lexical channel's
    :meth:`~llmembed.lexical.LexicalChannel.state` (arrays, JSON-able dict); lexical files
    left by an earlier model in the folder are removed when there is none. ``folds``: for an
    ensemble (``saved.ensemble``), the (head state, lexical state) of members 1 .. k-1, written
    to ``fold-<i>/`` the same way; fold folders of an earlier model are removed.
    Returns: the folder. Raises: OSError when it cannot be written; ValueError when ``lexical``
    is given without ``recipe.lexical.enabled`` or missing with it, or ``folds`` does not
    match ``saved.ensemble``.
    """
    import shutil

    if len(folds) != (len(saved.ensemble["scores"]) - 1 if saved.ensemble else 0):
        raise ValueError("write_saved_model: give members 1 .. k-1 of the ensemble as folds")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("fold-*"):
        if stale.is_dir() and re.fullmatch(r"fold-\d+", stale.name):
            shutil.rmtree(stale)
    _write_model_files(folder, saved, state, lexical)
    for i, (fold_state, fold_lexical) in enumerate(folds, start=1):
        _write_model_files(fold_folder(folder, i), saved, fold_state, fold_lexical)
    atomic_write_text(folder / CARD_NAME, render_card(saved))
    atomic_write_text(folder / CONFIG_NAME, dumps(saved.to_dict()) + "\n")
    return folder


def _write_model_files(
    folder: Path,
    saved: SavedModel,
    state: dict[str, torch.Tensor],
    lexical: tuple[dict[str, np.ndarray], dict[str, Any]] | None,
) -> None:
    """One member's head.safetensors and lexical files (removed when it has none)."""
    from safetensors.numpy import save_file as save_numpy
    from safetensors.torch import save_file

    if (lexical is not None) != saved.recipe.lexical.enabled:
        raise ValueError(
            "write_saved_model: give the lexical channel's state exactly when "
            "recipe.lexical.enabled is true"
        )
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "llmembed_format": "2"})
    if lexical is not None:
        arrays, meta = lexical
        with atomic_path(folder / LEXICAL_WEIGHTS_NAME) as tmp:
            save_numpy(arrays, str(tmp), metadata={"format": "np", "llmembed_format": "2"})
        atomic_write_text(folder / LEXICAL_CONFIG_NAME, dumps(meta) + "\n")
    else:
        for name in (LEXICAL_WEIGHTS_NAME, LEXICAL_CONFIG_NAME):
            (folder / name).unlink(missing_ok=True)


# -- the model card -----------------------------------------------------------------------------
def _md(value: Any, limit: int = 60) -> str:
    """A value as a Markdown code span (backticks, pipes and newlines neutralised)."""
    text = " ".join(str(value).split()).replace("`", "'").replace("|", "/")
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"`{text}`"


def _probability_line(saved: SavedModel) -> str:
    """The model card's line on what its probabilities mean."""
    ml = saved.multi_label
    if saved.ensemble:
        low, high = min(saved.ensemble["temperatures"]), max(saved.ensemble["temperatures"])
        return (
            f"- probability calibration: each fold model's softmax temperature ({low:.3f} .. "
            f"{high:.3f}, fitted on its held-out rows), then their probabilities averaged"
        )
    if ml is None:
        return f"- probability calibration: softmax temperature {saved.temperature:.3f}" + (
            " (fitted on held-out rows)" if saved.temperature != 1.0 else ""
        )
    low, high = min(ml.thresholds), max(ml.thresholds)
    return (
        f"- multi-label: one sigmoid per label; per-label decision thresholds {low:.2f} .. "
        f"{high:.2f} tuned on held-out rows"
        + ("; every text gets at least its most probable label" if ml.at_least_one else "")
    )


def _selection_lines(saved: SavedModel) -> list[str]:
    """The model card's lines on how the recipe was chosen (none for a single recipe)."""
    sel = saved.selection
    if sel is None:
        return []
    return [
        f"- recipe chosen among {len(sel.candidates)} by {sel.folds}-fold cross-validation "
        "on the training texts (accuracy, mean ± std over the folds):",
        *(f"  - {line}" for line in sel.lines()),
    ]


def _stack_lines(saved: SavedModel) -> list[str]:
    """The model card's line on late fusion (none without ``head.stack``)."""
    if not saved.recipe.head.stack:
        return []
    return [
        "- stacked: each backbone's vectors are scored by their own logistic regression "
        "(out of fold in training; stored under `stack.` in the head file), and the head "
        "fuses those scores",
    ]


def _ensemble_lines(saved: SavedModel) -> list[str]:
    """The model card's line on the fold models (none for a single model)."""
    if not saved.ensemble:
        return []
    scores = saved.ensemble["scores"]
    mean, std = sum(scores) / len(scores), statistics.pstdev(scores)
    return [
        f"- ensemble: {len(scores)} fold models, each trained on the texts outside one of "
        f"{len(scores)} stratified folds (files of model i >= 1 in `fold-<i>/`), probabilities "
        f"averaged; accuracy of each on its held-out fold: {100 * mean:.2f} ± {100 * std:.2f}",
    ]


def render_card(saved: SavedModel) -> str:
    """The model card (README.md) of a saved model: what it is, how it was made, how to load it.

    Takes: a :class:`SavedModel`. Returns: Markdown text with a Hugging Face front matter.
    """
    r = saved.recipe
    n = len(saved.classes)
    shown = ", ".join(_md(c) for c in saved.classes[:20])
    more = f", ... and {n - 20} more" if n > 20 else ""
    val = saved.val_metrics or {}
    if saved.n_train is None:
        data = "training data size not recorded"
    else:
        held = f", of which {val['n']:,} held out for validation" if "n" in val else ""
        data = f"{saved.n_train:,} training texts{held}"
    if val:
        figures = ", ".join(
            f"{k.replace('_', '-')} {val[k]:.4f}" for k in SUMMARY_KEYS[1:] if k in val
        )
        metrics = f"{figures} (best epoch {saved.best_epoch})"
    else:
        metrics = "none (trained without a validation split)"
    rows = []
    for i, (spec, shape) in enumerate(zip(r.backbones, saved.shapes)):
        pin = saved.backbones[i] if i < len(saved.backbones) else None
        if pin is None:
            rows.append(
                f"| {i} | {_md(spec.model)} | ? | {spec.dtype} | {_md(spec.layers)} | "
                f"{shape[1]} | ? | ? |"
            )
            continue
        rows.append(
            f"| {i} | {_md(pin.model)} | {_md(pin.reference, 80)} | {pin.dtype} | "
            f"{_md(','.join(map(str, pin.layers)))} ({spec.pooling}) | {pin.hidden_size} | "
            f"{pin.license or 'see the model source'} | `{pin.fingerprint[:12]}` |"
        )
    versions = ", ".join(f"{k} {v}" for k, v in saved.versions.items()) or "not recorded"
    head = r.head
    lex = r.lexical
    if lex.enabled:
        grams = " + ".join(
            f"{name} {rng[0]}-{rng[1]}-grams"
            for name, rng in (("word", lex.word_ngrams), ("char_wb", lex.char_ngrams))
            if rng
        )
        lexical_lines = [
            f"- lexical channel: TF-IDF {grams} (up to {lex.max_features:,} each, min_df "
            f"{lex.min_df}), LinearSVC C {lex.C} scores as the head's last input (out-of-fold "
            f"over {lex.folds} folds in training); stored in `{LEXICAL_WEIGHTS_NAME}` and "
            f"`{LEXICAL_CONFIG_NAME}`",
        ]
        lexical_intro = [
            "A lexical channel (TF-IDF n-grams scored by a linear SVM) is fused with them.",
        ]
    else:
        lexical_lines, lexical_intro = [], []
    return "\n".join(
        [
            "---",
            "library_name: llmembed",
            "pipeline_tag: text-classification",
            "tags: [llmembed, text-classification]",
            "---",
            "",
            f"# {r.name}: an llmembed text classifier",
            "",
            "Frozen language models give pooled hidden states of several layers; a small fusion",
            "head (LLMEmbed, Liu et al., ACL 2024) was trained on them. Only the head is stored",
            f"here (`{WEIGHTS_NAME}`); `{CONFIG_NAME}` holds the recipe, the classes and the",
            "backbone pins checked at load.",
            *lexical_intro,
            "",
            "## Classes",
            "",
            f"{n} classes: {shown}{more}.",
            "",
            "## Training",
            "",
            f"- recipe: {_md(r.name)} (fusion {head.fusion}, proj_dim {head.proj_dim}, "
            f"hidden {head.hidden}, sigma {head.sigma})",
            *_stack_lines(saved),
            f"- data: {data}",
            f"- validation: {metrics}",
            _probability_line(saved),
            *lexical_lines,
            *_selection_lines(saved),
            *_ensemble_lines(saved),
            "",
            "## Backbones",
            "",
            "| # | model | source | dtype | layers (pooling) | width | license | fingerprint |",
            "| ---: | --- | --- | --- | --- | ---: | --- | --- |",
            *rows,
            "",
            "The licenses of the backbones apply to their use; load fetches or finds them by",
            "their source and refuses a backbone whose fingerprint differs from the one above.",
            "",
            "## Versions",
            "",
            versions,
            "",
            "## Load it",
            "",
            "```python",
            "from llmembed import LLMEmbedClassifier",
            "",
            'clf = LLMEmbedClassifier.from_pretrained("path/to/this/folder")  # or a hub repo id',
            'clf.predict(["Some text to classify."])',
            "```",
            "",
            "or `llmembed predict path/to/this/folder texts.csv --text-col text`.",
            "",
        ]
    )


# -- reading and validating ---------------------------------------------------------------------
def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _bad(file: Path, where: str, what: str) -> ModelLoadError:
    return ModelLoadError(_one_line(f"{file}: field '{where}': {what}"))


def _short(value: Any) -> str:
    text = json.dumps(value)[:60] if not isinstance(value, str) else repr(value)[:60]
    return text


def _matches(value: Any, tp: Any) -> bool:
    """Whether a JSON value fits a settings field's annotation (int, float, str, list[int]...)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, t) for t in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return is_int(value)
    if tp is float:
        return is_int(value) or isinstance(value, float)
    if tp is str:
        return isinstance(value, str)
    return True  # an annotation this check does not know: left to the dataclass


def _type_name(tp: Any) -> str:
    """An annotation in words: int -> "an integer", str | None -> "a string or null"."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(t) for t in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return f"a list of {_type_name(item).split(' ', 1)[-1]}s"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    return "null" if tp is type(None) else names.get(tp, str(tp))


def _check_settings(file: Path, where: str, table: Any, kind: type) -> Any:
    """Build a settings dataclass from a JSON table, refusing wrong types field by field.

    Returns: the ``kind`` instance. Raises: ModelLoadError naming ``where.<key>`` (or ``where``).
    """
    if not isinstance(table, dict):
        raise _bad(file, where, f"expected an object, got {_short(table)}")
    hints = typing.get_type_hints(kind)
    for key, value in table.items():
        if key not in hints:
            continue  # unknown keys: from_dict names them
        ok = _matches(value, hints[key]) or (key == "layers" and is_int(value))
        if not ok:
            raise _bad(
                file, f"{where}.{key}", f"expected {_type_name(hints[key])}, got {_short(value)}"
            )
    try:
        return kind.from_dict(table)  # type: ignore[attr-defined]
    except (LLMEmbedError, TypeError, ValueError, KeyError, AttributeError) as e:
        raise _bad(file, where, str(e)) from None


def _recipe(file: Path, data: Any) -> Recipe:
    from .backbones import BackboneSpec

    if not isinstance(data, dict):
        raise _bad(file, "recipe", f"expected an object, got {_short(data)}")
    backbones = data.get("backbones")
    if not isinstance(backbones, list) or not backbones:
        raise _bad(file, "recipe.backbones", f"expected a non-empty list, got {_short(backbones)}")
    for i, b in enumerate(backbones):
        _check_settings(file, f"recipe.backbones[{i}]", b, BackboneSpec)
    _check_settings(file, "recipe.head", data.get("head", {}), HeadConfig)
    _check_settings(file, "recipe.train", data.get("train", {}), TrainConfig)
    _check_settings(file, "recipe.lexical", data.get("lexical", {}), LexicalConfig)
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise _bad(file, f"recipe.{key}", f"expected a string, got {_short(data[key])}")
    try:
        return Recipe.from_dict(data)
    except (LLMEmbedError, TypeError, ValueError, KeyError, AttributeError) as e:
        raise _bad(file, "recipe", str(e)) from None


def _temperature(file: Path, data: dict[str, Any]) -> float:
    """The softmax temperature; 1.0 in folders written before calibration existed."""
    value = data.get("temperature", 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _bad(file, "temperature", f"expected a positive number, got {_short(value)}")
    return float(value)


def _selection(file: Path, data: dict[str, Any], recipe: Recipe) -> Selection | None:
    """The recipe selection record, or None (a model trained from one recipe)."""
    if data.get("selection") is None:
        return None
    try:
        selection = Selection.from_dict(data["selection"])
    except ConfigError as e:
        raise _bad(file, "selection", str(e)) from None
    if selection.chosen != recipe.name:
        raise _bad(
            file, "selection.chosen", f"{selection.chosen!r} is not the recipe {recipe.name!r}"
        )
    return selection


def _ensemble(file: Path, data: dict[str, Any]) -> dict[str, list[float]] | None:
    """The ensemble record (scores and temperatures of k >= 2 members), or None."""
    value = data.get("ensemble")
    if value is None:
        return None
    numbers = (int, float)
    if not (
        isinstance(value, dict)
        and set(value) == {"scores", "temperatures"}
        and all(isinstance(value[k], list) for k in value)
        and len(value["scores"]) == len(value["temperatures"]) >= 2
        and all(isinstance(v, numbers) and 0 <= v <= 1 for v in value["scores"])
        and all(isinstance(v, numbers) and v > 0 for v in value["temperatures"])
        and not any(isinstance(v, bool) for k in value for v in value[k])
    ):
        raise _bad(
            file,
            "ensemble",
            "expected an object with 'scores' (accuracies in [0, 1]) and 'temperatures' "
            f"(positive numbers), k >= 2 of each; got {_short(value)}",
        )
    if data.get("multi_label") is not None:
        raise _bad(file, "ensemble", "a multi-label model cannot be an ensemble")
    return {k: [float(v) for v in value[k]] for k in ("scores", "temperatures")}


def _multi_label(file: Path, data: dict[str, Any], n_classes: int) -> MultiLabel | None:
    """The multi-label settings, or None (a single-label model)."""
    value = data.get("multi_label")
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"thresholds", "at_least_one", "form"}:
        raise _bad(
            file,
            "multi_label",
            f"expected an object with 'thresholds', 'at_least_one' and 'form', got {_short(value)}",
        )
    thresholds = value["thresholds"]
    if (
        not isinstance(thresholds, list)
        or len(thresholds) != n_classes
        or not all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t < 1
            for t in thresholds
        )
    ):
        raise _bad(
            file,
            "multi_label.thresholds",
            f"expected {n_classes} numbers in (0, 1), one per class, got {_short(thresholds)}",
        )
    if not isinstance(value["at_least_one"], bool):
        raise _bad(file, "multi_label.at_least_one", "expected true or false")
    if value["form"] not in FORMS:
        raise _bad(
            file, "multi_label.form", f"expected one of {list(FORMS)}, got {_short(value['form'])}"
        )
    return MultiLabel([float(t) for t in thresholds], value["at_least_one"], value["form"])


def _int_field(file: Path, data: dict[str, Any], key: str, minimum: int = 0) -> int | None:
    value = data.get(key)
    if value is not None and (not is_int(value) or value < minimum):
        raise _bad(file, key, f"expected an integer >= {minimum} or null, got {_short(value)}")
    return value


def _pins(file: Path, data: Any, n_backbones: int) -> list[BackbonePin]:
    if not isinstance(data, list) or len(data) != n_backbones:
        raise _bad(
            file,
            "backbones",
            f"expected a list of {n_backbones} backbone pins (one per recipe "
            f"backbone), got {_short(data)}",
        )
    kinds: dict[str, Any] = {
        "model": str, "reference": str, "fingerprint": str, "dtype": str,
        "layers": list[int], "hidden_size": int, "n_vectors": int, "license": str | None,
    }  # fmt: skip
    pins = []
    for i, pin in enumerate(data):
        where = f"backbones[{i}]"
        if not isinstance(pin, dict):
            raise _bad(file, where, f"expected an object, got {_short(pin)}")
        missing = [k for k in kinds if k not in pin and k != "license"]
        if missing:
            raise _bad(file, f"{where}.{missing[0]}", "missing")
        for key, kind in kinds.items():
            if key in pin and not _matches(pin[key], kind):
                raise _bad(
                    file, f"{where}.{key}", f"expected {_type_name(kind)}, got {_short(pin[key])}"
                )
        if pin["dtype"] not in _DTYPES:
            raise _bad(file, f"{where}.dtype", f"expected one of {_DTYPES}, got {pin['dtype']!r}")
        pins.append(BackbonePin(**{k: pin.get(k) for k in kinds}))
    return pins


def _classes(file: Path, data: Any) -> list[Any]:
    if not isinstance(data, list) or len(data) < 2:
        raise _bad(file, "classes", f"expected a list of at least 2 labels, got {_short(data)}")
    kinds = {
        "bool" if isinstance(c, bool) else "number" if isinstance(c, (int, float)) else
        "string" if isinstance(c, str) else "other"
        for c in data
    }  # fmt: skip
    if len(kinds) != 1 or "other" in kinds:
        raise _bad(file, "classes", "expected labels all strings, all numbers or all booleans")
    if len({json.dumps(c) for c in data}) != len(data):
        raise _bad(file, "classes", "a label appears twice")
    return data


def _shapes(file: Path, data: Any, n_backbones: int) -> list[tuple[int, int]]:
    ok = isinstance(data, list) and all(
        isinstance(s, list) and len(s) == 2 and all(is_int(x) and x > 0 for x in s) for s in data
    )
    if not ok:
        raise _bad(
            file,
            "shapes",
            f"expected a list of [n_vectors, width] pairs of positive integers, got {_short(data)}",
        )
    if len(data) != n_backbones:
        raise _bad(file, "shapes", f"{len(data)} shapes for the recipe's {n_backbones} backbones")
    return [(int(n), int(w)) for n, w in data]


def _check_version(file: Path, recorded: Any) -> None:
    """Warn when the folder was written by a newer llmembed than the one installed."""
    from packaging.version import InvalidVersion, Version

    if not isinstance(recorded, str):
        raise _bad(file, "versions.llmembed", f"expected a version string, got {_short(recorded)}")
    try:
        newer = Version(recorded) > Version(__version__)
    except InvalidVersion:
        raise _bad(file, "versions.llmembed", f"not a version: {recorded!r}") from None
    if newer:
        warnings.warn(
            f"{file} was written by llmembed {recorded}, newer than the installed {__version__}; "
            "upgrade llmembed if loading or predicting misbehaves.",
            UserWarning,
            stacklevel=4,
        )


def _read_object(file: Path, fields: str) -> dict[str, Any]:
    """The JSON object in ``file``; ModelLoadError (one line) when it cannot be read, is not
    JSON, or is not an object (``fields`` says which fields it should have)."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ModelLoadError(_one_line(f"{file}: cannot be read ({e})")) from None
    except json.JSONDecodeError as e:
        raise ModelLoadError(_one_line(f"{file}: not valid JSON ({e})")) from None
    if not isinstance(data, dict):
        raise ModelLoadError(
            f"{file}: expected a JSON object with the fields {fields}, got a {type(data).__name__}"
        )
    return data


def read_saved_model(folder: str | Path) -> SavedModel:
    """Read and validate ``llmembed.json`` of a saved-model folder (the head file is not read).

    Takes: the folder. Returns: the :class:`SavedModel`.
    Raises: ModelLoadError, one line naming the file and the field, for a missing or unreadable
    file (the lexical files too, when the recipe has the channel on), invalid JSON, a value of the
    wrong type, shapes that do not match the pins, or a format newer than this llmembed reads.
    Warns (UserWarning) when a newer llmembed wrote it, and when it is format 1 (no backbone
    pins to check).
    """
    folder = Path(folder)
    file = folder / CONFIG_NAME
    if not file.is_file():
        raise ModelLoadError(f"{folder} is not a saved llmembed model (no {CONFIG_NAME})")
    if not (folder / WEIGHTS_NAME).is_file():
        raise ModelLoadError(
            f"{folder / WEIGHTS_NAME}: missing; the folder holds {CONFIG_NAME} but not the head "
            "weights (an incomplete copy?)"
        )
    data = _read_object(file, "'recipe', 'classes', 'shapes', ...")
    fmt = data.get("format_version", 1)
    if not is_int(fmt) or fmt < 1:
        raise _bad(file, "format_version", f"expected a positive integer, got {_short(fmt)}")
    versions = data.get("versions", {"llmembed": data.get("llmembed_version", "0")})
    if not isinstance(versions, dict) or not all(isinstance(v, str) for v in versions.values()):
        raise _bad(
            file, "versions", f"expected an object of version strings, got {_short(versions)}"
        )
    if fmt > FORMAT_VERSION:
        raise _bad(
            file,
            "format_version",
            f"format {fmt} was written by llmembed "
            f"{versions.get('llmembed', '?')}; this llmembed {__version__} reads up to format "
            f"{FORMAT_VERSION}: upgrade llmembed",
        )
    _check_version(file, versions.get("llmembed", "0"))
    for key in ("recipe", "classes", "shapes"):
        if key not in data:
            raise _bad(file, key, "missing")
    recipe = _recipe(file, data["recipe"])
    if recipe.lexical.enabled:
        for name in (LEXICAL_WEIGHTS_NAME, LEXICAL_CONFIG_NAME):
            if not (folder / name).is_file():
                raise ModelLoadError(
                    f"{folder / name}: missing; {CONFIG_NAME} has the lexical channel on "
                    "(recipe.lexical.enabled) but the folder lacks its files (an incomplete copy?)"
                )
    n_backbones = len(recipe.backbones)
    classes = _classes(file, data["classes"])
    shapes = _shapes(file, data["shapes"], n_backbones)
    pins: list[BackbonePin] = []
    if fmt >= 2:
        if "backbones" not in data:
            raise _bad(file, "backbones", "missing")
        pins = _pins(file, data["backbones"], n_backbones)
        for i, (pin, shape) in enumerate(zip(pins, shapes)):
            if (pin.n_vectors, pin.hidden_size) != shape:
                raise _bad(
                    file,
                    f"shapes[{i}]",
                    f"{list(shape)} differs from backbones[{i}]'s "
                    f"[n_vectors, hidden_size] = {[pin.n_vectors, pin.hidden_size]}",
                )
    else:
        warnings.warn(
            f"{file} was saved without backbone pins (format 1): the backbones cannot be "
            "checked; save it again with save_pretrained() to pin them.",
            UserWarning,
            stacklevel=3,
        )
    val = data.get("val_metrics")
    if val is not None and not (
        isinstance(val, dict)
        and all(isinstance(v, (int, float)) for k, v in val.items() if k in SUMMARY_KEYS)
    ):
        raise _bad(file, "val_metrics", f"expected an object of numbers or null, got {_short(val)}")
    return SavedModel(
        recipe=recipe,
        classes=classes,
        shapes=shapes,
        backbones=pins,
        versions=dict(versions),
        format_version=fmt,
        n_train=_int_field(file, data, "n_train"),
        best_epoch=_int_field(file, data, "best_epoch"),
        val_metrics=summary_metrics(val),
        temperature=_temperature(file, data),
        multi_label=_multi_label(file, data, len(classes)),
        selection=_selection(file, data, recipe),
        ensemble=_ensemble(file, data),
    )


def load_head(folder: str | Path, saved: SavedModel) -> tuple[FusionHead, BackboneScores | None]:
    """Build the head of ``saved`` and load ``head.safetensors`` into it, checking every tensor.

    Takes: the folder and its :class:`SavedModel`. Returns: the head (CPU, eval mode) and, with
    ``head.stack``, the per-backbone regressions stored beside it under ``stack.`` (else None).
    Raises: ModelLoadError (one line, naming the file) for a missing or corrupt file, a missing
    or extra tensor, or a tensor whose shape differs from what the recipe, shapes and classes in
    ``llmembed.json`` give (another model's head). With the lexical channel on, the head has
    one more input of shape (1, width) (:attr:`SavedModel.head_shapes`), also in ``mean_of``
    (:attr:`SavedModel.head_config`).
    """
    from safetensors.torch import load_file

    file = Path(folder) / WEIGHTS_NAME
    config = Path(folder) / CONFIG_NAME
    try:
        head = FusionHead(saved.head_shapes, len(saved.classes), saved.head_config)
        stack = (
            BackboneScores(saved.shapes, len(saved.classes), saved.multi_label is not None)
            if saved.recipe.head.stack
            else None
        )
    except (LLMEmbedError, TypeError, ValueError, RuntimeError) as e:
        raise _bad(config, "recipe.head", f"cannot build the head ({e})") from None
    if not file.is_file():
        raise ModelLoadError(f"{file}: missing (the head weights)")
    try:
        state = load_file(str(file), device="cpu")
    except Exception as e:  # safetensors raises its own error type, or OSError
        raise ModelLoadError(_one_line(f"{file}: not a valid safetensors file ({e})")) from None
    expected = dict(head.state_dict())
    if stack is not None:
        expected.update({STACK_PREFIX + k: v for k, v in stack.state_dict().items()})
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        parts = ([f"missing tensor(s) {missing[:3]}"] if missing else []) + (
            [f"unexpected tensor(s) {extra[:3]}"] if extra else []
        )
        raise ModelLoadError(
            f"{file}: {'; '.join(parts)} for the head that {CONFIG_NAME} describes "
            "(another model's head?)"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ModelLoadError(
                f"{file}: tensor '{key}' has shape {list(state[key].shape)}, but the recipe, "
                f"shapes and {len(saved.classes)} classes in {CONFIG_NAME} give "
                f"{list(tensor.shape)} (another model's head?)"
            )
        if not state[key].is_floating_point():
            raise ModelLoadError(f"{file}: tensor '{key}' is {state[key].dtype}, not floating")
    head.load_state_dict({k: v for k, v in state.items() if not k.startswith(STACK_PREFIX)})
    if stack is not None:
        n = len(STACK_PREFIX)
        stack.load_state_dict({k[n:]: v for k, v in state.items() if k.startswith(STACK_PREFIX)})
        stack.eval()
    return head.eval(), stack


def load_fold_models(
    folder: str | Path, saved: SavedModel
) -> list[tuple[FusionHead, LexicalChannel | None, BackboneScores | None]]:
    """Members 1 .. k-1 of an ensemble, from ``fold-<i>/`` (none for a single model).

    Takes: the folder and its :class:`SavedModel`. Returns: (head, lexical channel or None,
    stack or None) per member, in order. Raises: ModelLoadError as :func:`load_head` and
    :func:`load_lexical` do, naming the member's file.
    """
    k = len(saved.ensemble["scores"]) if saved.ensemble else 0
    models = []
    for i in range(1, k):
        head, stack = load_head(fold_folder(folder, i), saved)
        models.append((head, load_lexical(fold_folder(folder, i), saved), stack))
    return models


def load_lexical(folder: str | Path, saved: SavedModel) -> LexicalChannel | None:
    """Rebuild the lexical channel of ``saved`` from lexical.safetensors and lexical.json.

    Takes: the folder and its :class:`SavedModel`. Returns: the channel, or None when the
    recipe has it off (the files, if any, are not read).
    Raises: ModelLoadError, one line naming the file, for a missing or corrupt file, invalid
    JSON, settings that differ from ``recipe.lexical`` in llmembed.json, a class count that
    differs from ``classes``, or arrays and vocabularies that do not fit each other.
    """
    from safetensors.numpy import load_file

    if not saved.recipe.lexical.enabled:
        return None
    folder = Path(folder)
    weights, meta_file = folder / LEXICAL_WEIGHTS_NAME, folder / LEXICAL_CONFIG_NAME
    for file in (weights, meta_file):
        if not file.is_file():
            raise ModelLoadError(f"{file}: missing (the lexical channel's files)")
    meta = _read_object(meta_file, "'config', 'n_classes' and 'vocabularies'")
    for key in ("config", "n_classes", "vocabularies"):
        if key not in meta:
            raise _bad(meta_file, key, "missing")
    config = _check_settings(meta_file, "config", meta["config"], LexicalConfig)
    if config != saved.recipe.lexical:
        raise _bad(
            meta_file,
            "config",
            f"differs from recipe.lexical in {CONFIG_NAME} (files of two different models?)",
        )
    if meta["n_classes"] != len(saved.classes):
        raise _bad(
            meta_file,
            "n_classes",
            f"{_short(meta['n_classes'])}, but {CONFIG_NAME} has {len(saved.classes)} classes "
            "(files of two different models?)",
        )
    try:
        arrays = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error type, or OSError
        raise ModelLoadError(_one_line(f"{weights}: not a valid safetensors file ({e})")) from None
    try:
        return LexicalChannel.from_state(arrays, meta)
    except (LLMEmbedError, TypeError, ValueError, KeyError, AttributeError) as e:
        raise ModelLoadError(
            _one_line(f"{weights} / {meta_file}: not a valid lexical channel ({e})")
        ) from None


def check_backbones(folder: str | Path, saved: SavedModel, backbones: list[Backbone]) -> None:
    """Refuse backbones that are not the ones the saved head was trained on.

    Takes: the folder, its :class:`SavedModel` and the backbones built from its recipe (a local
    model is not loaded for this: its fingerprint comes from its files and config; a hub model
    is, for its revision). Returns None;
    does nothing for a format-1 folder (no pins).
    Raises: ModelLoadError, one line saying what changed (source, dtype, layers, width, or the
    model's files) and how to opt out, or that a backbone cannot be loaded.
    """
    file = Path(folder) / CONFIG_NAME
    for i, (pin, bb) in enumerate(zip(saved.backbones, backbones)):
        name = bb.spec.model
        try:
            fingerprints = bb.fingerprint(), bb.legacy_fingerprint()  # saved by 0.1.0: legacy
        except LLMEmbedError as e:
            raise ModelLoadError(
                _one_line(f"{folder}: backbone {i} ({name}) cannot be loaded: {e}")
            ) from None
        if pin.fingerprint in fingerprints:
            continue
        changes = []
        if name != pin.model:
            changes.append(f"model {pin.model!r} -> {name!r}")
        if str(bb.reference) != pin.reference:
            changes.append(f"source {pin.reference} -> {bb.reference}")
        dtype = str(bb.dtype).replace("torch.", "")
        if dtype != pin.dtype:
            changes.append(f"dtype {pin.dtype} -> {dtype}")
        if list(bb.layer_indices) != pin.layers:
            changes.append(f"layers {pin.layers} -> {list(bb.layer_indices)}")
        if bb.hidden_size != pin.hidden_size:
            changes.append(f"width {pin.hidden_size} -> {bb.hidden_size}")
        if not changes:
            changes.append("its files (weights, config or tokenizer) or hub revision changed")
        raise ModelLoadError(
            _one_line(
                f"{file}: backbone {i} ({name}) is not the one this head was trained on: "
                f"{'; '.join(changes)} (fingerprint {pin.fingerprint} -> {fingerprints[0]}). "
                f"Restore that backbone, or load anyway with {OPT_OUT}; predictions may then "
                "be wrong."
            )
        )


def _wants_lexical(folder: Path) -> bool:
    """Whether the folder's llmembed.json has the lexical channel on (False when unreadable:
    read_saved_model reports that)."""
    try:
        data = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        return data["recipe"]["lexical"]["enabled"] is True
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return False


def resolve_folder(path: str | Path, revision: str | None = None) -> Path:
    """A saved model's local folder: ``path`` itself, or a hub repo id downloaded to the cache.

    Takes: a folder, or a Hugging Face hub repo id (``owner/name``) when no such folder exists,
    and an optional hub revision. Returns: the local folder. From the hub, only the saved-model
    files are fetched: llmembed.json, head.safetensors and README.md, then the lexical files
    when that llmembed.json has the channel on (from the same snapshot commit).
    Raises: ModelLoadError for a path that is neither, or a download that fails (offline, no
    such repo, ...).
    """
    p = Path(path)
    if p.is_dir():
        return p
    if p.exists():
        raise ModelLoadError(f"{p} is a file, not a saved llmembed model folder")
    text = str(path)
    if not _REPO_ID.fullmatch(text):
        raise ModelLoadError(
            f"{p}: no such folder (a saved model is a folder holding {CONFIG_NAME} and "
            f"{WEIGHTS_NAME}, or a hub repo id 'owner/name')"
        )
    import huggingface_hub

    try:
        local = Path(
            huggingface_hub.snapshot_download(
                repo_id=text,
                revision=revision,
                allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME],
            )
        )
        if _wants_lexical(local):
            # the snapshot folder is named by its commit: fetch the rest of that same commit
            commit = local.name if re.fullmatch(r"[0-9a-f]{40}", local.name) else revision
            local = Path(
                huggingface_hub.snapshot_download(
                    repo_id=text,
                    revision=commit,
                    allow_patterns=[LEXICAL_WEIGHTS_NAME, LEXICAL_CONFIG_NAME],
                )
            )
    except Exception as e:  # offline mode, no such repo, HTTP errors: one line, not a traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelLoadError(
            _one_line(
                f"{text}: no such folder, and downloading it from the Hugging Face hub failed "
                f"({type(e).__name__}: {first})"
            )
        ) from None
    return local
