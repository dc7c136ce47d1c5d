"""Saved-model folders: backbone pins checked at load, the model card, and every malformed
folder refused with one ModelLoadError line (through the API and the CLI)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import llmembed.zoo
from llmembed import LLMEmbedClassifier, ModelLoadError, Recipe
from llmembed.backbones import Backbone, BackboneSpec
from llmembed.cli import app
from llmembed.ensemble import Member
from llmembed.heads import FusionHead, HeadConfig
from llmembed.metrics import classification_metrics
from llmembed.modelcard import (
    CARD_NAME,
    CONFIG_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    BackbonePin,
    SavedModel,
    dumps,
    render_card,
)
from llmembed.testing import tiny_recipe
from llmembed.training import TrainResult

runner = CliRunner()
POS = ["good movie", "great film", "love this story", "best acting", "fun plot", "nice day"]
NEG = ["bad movie", "awful film", "hate this story", "worst acting", "dull plot", "sad day"]
TEXTS, LABELS = POS + NEG, ["pos"] * len(POS) + ["neg"] * len(NEG)


def recipe_for(llama: Path | str, bert: Path | str, llama_dtype: str = "float32") -> Recipe:
    """A tiny two-backbone recipe that trains in a second."""
    return tiny_recipe(
        llama,
        bert,
        train={"max_epochs": 4, "patience": None, "val_fraction": 0.25},
        llama_dtype=llama_dtype,
        max_length=64,
    )


def fit_save(folder: Path, recipe: Recipe, cache: Path) -> LLMEmbedClassifier:
    clf = LLMEmbedClassifier(recipe=recipe, cache_dir=cache, verbose=False)
    clf.fit(TEXTS, LABELS).save_pretrained(folder)
    return clf


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_llama, tiny_bert) -> Path:
    """One tiny saved model, shared (tests copy it before breaking it)."""
    root = tmp_path_factory.mktemp("saved")
    fit_save(root / "model", recipe_for(tiny_llama, tiny_bert), root / "cache")
    return root / "model"


@pytest.fixture
def model(saved, tmp_path) -> Path:
    """A private copy of the saved model, free to be broken."""
    return Path(shutil.copytree(saved, tmp_path / "model"))


def edit_json(folder: Path, change) -> None:
    data = json.loads((folder / CONFIG_NAME).read_text())
    change(data)
    (folder / CONFIG_NAME).write_text(json.dumps(data))


def load(folder: Path, **kw) -> LLMEmbedClassifier:
    return LLMEmbedClassifier.load(folder, device="cpu", verbose=False, **kw)


def perturb_weights(folder: Path) -> None:
    """Same shapes, other values: what swapping in another same-shape model looks like."""
    file = folder / "model.safetensors"
    state = load_file(str(file))
    save_file({k: v + 0.05 * torch.randn_like(v) for k, v in state.items()}, str(file))


# -- the folder and its format --------------------------------------------------------------------
def test_folder_format(saved, tiny_llama, tiny_bert):
    assert sorted(p.name for p in saved.iterdir()) == [CARD_NAME, WEIGHTS_NAME, CONFIG_NAME]
    data = json.loads((saved / CONFIG_NAME).read_text())
    assert data["format_version"] == FORMAT_VERSION
    assert set(data["versions"]) == {"llmembed", "torch", "transformers", "python"}
    assert data["classes"] == ["neg", "pos"] and data["shapes"] == [[3, 32], [1, 24]]
    assert data["n_train"] == len(TEXTS)
    assert set(data["val_metrics"]) <= {"n", "accuracy", "macro_f1", "micro_f1", "positive_f1"}
    llama, bert = data["backbones"]
    assert llama["layers"] == [1, 2, 3] and llama["hidden_size"] == 32 and llama["n_vectors"] == 3
    assert bert["layers"] == [2] and bert["hidden_size"] == 24 and bert["dtype"] == "float32"
    assert llama["reference"] == str(tiny_llama) and llama["license"] is None
    spec = BackboneSpec.from_dict(data["recipe"]["backbones"][0])
    assert llama["fingerprint"] == Backbone(spec, device="cpu").fingerprint()
    card = (saved / CARD_NAME).read_text()
    for text in ("# tiny", "`neg`, `pos`", "12 training texts", "from_pretrained", "float32"):
        assert text in card


def test_round_trip_and_aliases(saved):
    assert LLMEmbedClassifier.save is LLMEmbedClassifier.save_pretrained
    assert LLMEmbedClassifier.load.__func__ is LLMEmbedClassifier.from_pretrained.__func__
    loaded = LLMEmbedClassifier.from_pretrained(saved, device="cpu", verbose=False)
    again = load(loaded.save_pretrained(saved.parent / "again"))
    np.testing.assert_array_equal(loaded.predict_proba(TEXTS), again.predict_proba(TEXTS))
    assert (
        json.loads((saved.parent / "again" / CONFIG_NAME).read_text())["backbones"]
        == (json.loads((saved / CONFIG_NAME).read_text())["backbones"])
    )


def test_thousand_classes_stay_small(tmp_path, tiny_bert):
    """A 1,000-class model: no confusion matrix or per-class report in llmembed.json."""
    n = 1000
    spec = BackboneSpec(str(tiny_bert), layers="-1", max_length=64, dtype="float32")
    recipe = Recipe("big", [spec], head=HeadConfig(proj_dim=8, hidden=[8]))
    clf = LLMEmbedClassifier(recipe=recipe, verbose=False)
    clf.classes_ = np.array([f"class-{i:04d}" for i in range(n)])
    clf.recipe_ = recipe
    clf.head_ = FusionHead([(1, 24)], n, recipe.head).eval()
    clf._members = [Member(TrainResult(clf.head_))]
    clf.history_, clf.best_epoch_, clf.timings_, clf.temperature_ = [], 1, {}, 1.0
    rng = np.random.default_rng(0)
    clf.val_metrics_ = classification_metrics(rng.integers(0, n, 5000), rng.integers(0, n, 5000))
    clf.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / CONFIG_NAME).stat().st_size < 200_000
    data = json.loads((tmp_path / "m" / CONFIG_NAME).read_text())
    assert "confusion_matrix" not in data["val_metrics"] and len(data["classes"]) == n
    card = (tmp_path / "m" / CARD_NAME).read_text()
    assert "1000 classes" in card and "and 980 more" in card
    assert list(load(tmp_path / "m", check_backbones=False).classes_) == list(clf.classes_)


def test_dumps_is_json_and_packs_lists():
    obj = {"a": [1, 2, 3], "m": [[1, 2], [3, 4]], "s": ["x" * 30] * 10, "e": {}, "n": None}
    text = dumps(obj)
    assert json.loads(text) == obj
    assert "[1, 2, 3]" in text and max(len(line) for line in text.splitlines()) <= 96


def test_card_names_zoo_licenses():
    pin = BackbonePin("minilm-l6", "/x/minilm", "ab" * 16, "float32", [6], 384, 1, "Apache-2.0")
    recipe = Recipe("cpu", [BackboneSpec("minilm-l6")])
    card = render_card(SavedModel(recipe, ["a", "b"], [(1, 384)], [pin], {"llmembed": "0.1.0"}))
    assert "Apache-2.0" in card and "`minilm-l6`" in card and "llmembed 0.1.0" in card
    assert "size not recorded" in card


# -- pinned backbones -------------------------------------------------------------------------
def test_swapped_weights_are_refused(tmp_path, tiny_llama, tiny_bert):
    llama = Path(shutil.copytree(tiny_llama, tmp_path / "llama"))
    clf = fit_save(tmp_path / "m", recipe_for(llama, tiny_bert), tmp_path / "cache")
    perturb_weights(llama)
    with pytest.raises(ModelLoadError) as err:
        load(tmp_path / "m")
    message = str(err.value)
    assert "backbone 0" in message and "files (weights, config or tokenizer)" in message
    assert "check_backbones=False" in message and "\n" not in message
    unchecked = load(tmp_path / "m", check_backbones=False)  # the explicit opt-out
    assert unchecked.predict_proba(TEXTS).shape == (len(TEXTS), 2)
    assert not np.allclose(unchecked.predict_proba(TEXTS), clf.predict_proba(TEXTS))


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("layers", "0,1,2", "layers [1, 2, 3] -> [0, 1, 2]"),  # same count, same width
        ("dtype", "bfloat16", "dtype float32 -> bfloat16"),
    ],
)
def test_edited_backbone_spec_is_refused(model, key, value, expected):
    edit_json(model, lambda d: d["recipe"]["backbones"][0].update({key: value}))
    with pytest.raises(ModelLoadError, match=re.escape(expected)):
        load(model)


def test_a_pin_of_the_legacy_fingerprint_loads(model):
    """A model saved by llmembed 0.1.0 pinned its backbones' legacy fingerprint: it still loads;
    a pin that is neither fingerprint is still refused."""
    data = json.loads((model / CONFIG_NAME).read_text())
    backbone = Backbone(BackboneSpec.from_dict(data["recipe"]["backbones"][0]), device="cpu")
    assert data["backbones"][0]["fingerprint"] == backbone.fingerprint()
    edit_json(model, lambda d: d["backbones"][0].update(fingerprint=backbone.legacy_fingerprint()))
    assert load(model).predict(TEXTS[:2]).shape == (2,)
    edit_json(model, lambda d: d["backbones"][0].update(fingerprint="0" * 32))
    with pytest.raises(ModelLoadError, match=f"fingerprint 0{{32}} -> {backbone.fingerprint()}"):
        load(model)


def test_zoo_name_resolving_elsewhere(tmp_path, tiny_llama, tiny_bert, monkeypatch):
    other = Path(shutil.copytree(tiny_llama, tmp_path / "other"))
    perturb_weights(other)
    where = {"tiny-zoo": str(tiny_llama)}
    monkeypatch.setattr(llmembed.zoo, "resolve", lambda name: where.get(name, name))
    fit_save(tmp_path / "m", recipe_for("tiny-zoo", tiny_bert), tmp_path / "cache")
    assert load(tmp_path / "m").predict(TEXTS[:2]).shape == (2,)  # same resolution: loads
    where["tiny-zoo"] = str(other)
    with pytest.raises(ModelLoadError, match=f"source {tiny_llama} -> {other}"):
        load(tmp_path / "m")


def test_same_zoo_model_in_another_folder_loads(tmp_path, tiny_llama, tiny_bert, monkeypatch):
    """Another machine installs the same zoo model elsewhere: same files, so it loads."""
    elsewhere = Path(shutil.copytree(tiny_llama, tmp_path / "other-machine" / "tiny-zoo"))
    where = {"tiny-zoo": str(tiny_llama)}
    monkeypatch.setattr(llmembed.zoo, "resolve", lambda name: where.get(name, name))
    clf = fit_save(tmp_path / "m", recipe_for("tiny-zoo", tiny_bert), tmp_path / "cache")
    where["tiny-zoo"] = str(elsewhere)
    loaded = load(tmp_path / "m")
    assert str(loaded.backbones_[0].reference) == str(elsewhere)
    np.testing.assert_allclose(loaded.predict_proba(TEXTS), clf.predict_proba(TEXTS), atol=1e-6)


def test_auto_dtype_is_pinned(tmp_path, tiny_llama, tiny_bert, monkeypatch):
    """A model saved where auto meant one dtype loads where auto means another."""
    import llmembed.backbones

    clf = fit_save(tmp_path / "m", recipe_for(tiny_llama, tiny_bert, "auto"), tmp_path / "cache")
    resolved = str(clf.backbones_[0].dtype).replace("torch.", "")
    data = json.loads((tmp_path / "m" / CONFIG_NAME).read_text())
    assert data["recipe"]["backbones"][0]["dtype"] == resolved == data["backbones"][0]["dtype"]
    assert clf.recipe_.backbones[0].dtype == "auto"  # the fitted estimator is left as it was
    here = llmembed.backbones.cpu_has_bf16()
    monkeypatch.setattr(llmembed.backbones, "cpu_has_bf16", lambda: not here)
    loaded = load(tmp_path / "m")  # the fingerprint check passes: same dtype as at save
    assert str(loaded.backbones_[0].dtype) == f"torch.{resolved}"
    np.testing.assert_allclose(
        loaded.predict_proba(TEXTS), clf.predict_proba(TEXTS), rtol=1e-4, atol=1e-5
    )


def test_a_bf16_model_loads_and_predicts_on_a_cpu_without_bf16(
    tmp_path, tiny_llama, tiny_bert, monkeypatch
):
    """Saved where bf16 is native (a GPU, a bf16 CPU), served on an older CPU: the pin holds,
    the weights run in fp32 there, and the predictions are the same up to rounding."""
    import llmembed.backbones

    monkeypatch.setattr(llmembed.backbones, "cpu_has_bf16", lambda: True)
    recipe = recipe_for(tiny_llama, tiny_bert, "bfloat16")
    clf = fit_save(tmp_path / "m", recipe, tmp_path / "cache")
    monkeypatch.setattr(llmembed.backbones, "cpu_has_bf16", lambda: False)
    loaded = load(tmp_path / "m", use_cache=False)
    with pytest.warns(UserWarning, match="no native bfloat16 matmul"):
        proba = loaded.predict_proba(TEXTS)  # the backbone loads at first use
    assert loaded.backbones_[0].compute_dtype == torch.float32
    np.testing.assert_allclose(proba, clf.predict_proba(TEXTS), rtol=0.05, atol=0.02)


def test_newer_llmembed_warns_and_format_1_loads(model):
    edit_json(model, lambda d: d["versions"].update(llmembed="99.0"))
    with pytest.warns(UserWarning, match="newer than the installed"):
        load(model)

    def to_format_1(data):
        for key in ("format_version", "versions", "backbones", "n_train"):
            del data[key]
        data["llmembed_version"] = "0.1.0"

    edit_json(model, to_format_1)
    with pytest.warns(UserWarning, match="without backbone pins"):
        clf = load(model)
    assert clf.predict(TEXTS[:3]).shape == (3,)


def test_from_pretrained_hub_repo_offline(saved, monkeypatch, tmp_path):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, revision=None, allow_patterns=None, **kw):
        calls.append((repo_id, revision, sorted(allow_patterns)))
        return str(saved)

    monkeypatch.chdir(tmp_path)  # no folder "someone/tiny-model" here
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    clf = LLMEmbedClassifier.from_pretrained("someone/tiny-model", revision="v1", verbose=False)
    assert list(clf.classes_) == ["neg", "pos"]
    assert calls == [("someone/tiny-model", "v1", [CARD_NAME, WEIGHTS_NAME, CONFIG_NAME])]

    def failing(**kw):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nmore lines")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    with pytest.raises(ModelLoadError, match="hub failed") as err:
        LLMEmbedClassifier.from_pretrained("someone/tiny-model")
    assert "\n" not in str(err.value)
    with pytest.raises(ModelLoadError, match="no such folder"):
        LLMEmbedClassifier.from_pretrained(tmp_path / "a" / "b" / "c")


# -- malformed folders: one line naming the file and the field, API and CLI ----------------------
def _write_text(name: str, text: bytes | str):
    def apply(folder: Path) -> None:
        path = folder / name
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)

    return apply


def _json(change):
    return lambda folder: edit_json(folder, change)


def _tensors(change):
    def apply(folder: Path) -> None:
        state = load_file(str(folder / WEIGHTS_NAME))
        save_file(change(dict(state)), str(folder / WEIGHTS_NAME))

    return apply


def _other_head(folder: Path) -> None:
    head = FusionHead([(2, 32), (1, 24)], 2, HeadConfig(proj_dim=16, hidden=[32]))
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / WEIGHTS_NAME))


def _drop_one(state):
    state.pop(sorted(state)[0])
    return state


MALFORMED = {
    "missing head": (lambda f: (f / WEIGHTS_NAME).unlink(), WEIGHTS_NAME, "missing"),
    "invalid json": (_write_text(CONFIG_NAME, '{"recipe": '), CONFIG_NAME, "not valid JSON"),
    "empty json": (_write_text(CONFIG_NAME, ""), CONFIG_NAME, "not valid JSON"),
    "not utf-8": (_write_text(CONFIG_NAME, b"\xff\xfe{"), CONFIG_NAME, "cannot be read"),
    "json list": (_write_text(CONFIG_NAME, "[1, 2]"), CONFIG_NAME, "JSON object"),
    "no recipe": (_json(lambda d: d.pop("recipe")), CONFIG_NAME, "'recipe': missing"),
    "recipe a list": (_json(lambda d: d.update(recipe=[])), CONFIG_NAME, "'recipe'"),
    "backbone a string": (
        _json(lambda d: d["recipe"].update(backbones=["x"])),
        CONFIG_NAME,
        "'recipe.backbones[0]'",
    ),
    "unknown head setting": (
        _json(lambda d: d["recipe"]["head"].update(fusoin="mean")),
        CONFIG_NAME,
        "'recipe.head': Unknown head setting(s) ['fusoin']",
    ),
    "string shape": (
        _json(lambda d: d["shapes"][0].__setitem__(1, "32")),
        CONFIG_NAME,
        "'shapes'",
    ),
    "string proj_dim": (
        _json(lambda d: d["recipe"]["head"].update(proj_dim="16")),
        CONFIG_NAME,
        "'recipe.head.proj_dim'",
    ),
    "string lr": (_json(lambda d: d["recipe"]["train"].update(lr="x")), CONFIG_NAME, "train.lr"),
    "classes not a list": (_json(lambda d: d.update(classes="ab")), CONFIG_NAME, "'classes'"),
    "mixed classes": (_json(lambda d: d.update(classes=["a", 1])), CONFIG_NAME, "'classes'"),
    "shape vs pin": (
        _json(lambda d: d["shapes"].__setitem__(0, [3, 33])),
        CONFIG_NAME,
        "'shapes[0]'",
    ),
    "pins missing": (_json(lambda d: d.pop("backbones")), CONFIG_NAME, "'backbones': missing"),
    "pin string width": (
        _json(lambda d: d["backbones"][0].update(hidden_size="32")),
        CONFIG_NAME,
        "'backbones[0].hidden_size'",
    ),
    "newer format": (
        _json(lambda d: d.update(format_version=99)),
        CONFIG_NAME,
        "'format_version'",
    ),
    "head shapes wrong for recipe": (
        _json(lambda d: d["recipe"]["head"].update(proj_dim=8)),
        WEIGHTS_NAME,
        "has shape",
    ),
    "classes of another model": (
        _json(lambda d: d.update(classes=["a", "b", "c"])),
        WEIGHTS_NAME,
        "3 classes",
    ),
    "another model's head": (_other_head, WEIGHTS_NAME, "another model's head"),
    "garbage safetensors": (
        _write_text(WEIGHTS_NAME, b"\x13garbage" * 40),
        WEIGHTS_NAME,
        "not a valid safetensors",
    ),
    "extra tensor": (
        _tensors(lambda s: {**s, "extra": torch.zeros(2)}),
        WEIGHTS_NAME,
        "unexpected tensor(s) ['extra']",
    ),
    "missing tensor": (_tensors(_drop_one), WEIGHTS_NAME, "missing tensor"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_folder_api(model, case):
    mutate, file, field = MALFORMED[case]
    mutate(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ModelLoadError) as err:
            load(model)
    message = str(err.value)
    assert "\n" not in message and file in message and field in message, message


@pytest.fixture
def data_csv(tmp_path) -> Path:
    path = tmp_path / "data.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["text"], *([t] for t in TEXTS)])
    return path


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_folder_cli(model, data_csv, case):
    mutate, file, field = MALFORMED[case]
    mutate(model)
    r = runner.invoke(app, ["predict", str(model), str(data_csv), "-q", "--device", "cpu"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [line for line in r.output.splitlines() if "error:" in line]
    assert len(lines) == 1 and file in lines[0] and field in lines[0], r.output


def test_cli_no_check_backbones(model, data_csv):
    edit_json(model, lambda d: d["recipe"]["backbones"][0].update(layers="0,1,2"))
    args = ["predict", str(model), str(data_csv), "-q", "--device", "cpu"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "--no-check-backbones" in r.output, r.output
    r = runner.invoke(app, [*args, "--no-check-backbones"])
    assert r.exit_code == 0, r.output
    assert len(r.stdout.strip().splitlines()) == len(TEXTS) + 1
