"""llmembed.introspect: decoder or encoder, depth and width, from the config only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from llmembed import zoo
from llmembed.errors import ModelLoadError
from llmembed.introspect import (
    ModelInfo,
    check_reference,
    config_is_decoder,
    looks_like_hub_id,
    model_info,
)


def test_tiny_llama_is_a_decoder(tiny_llama: Path) -> None:
    info = model_info(str(tiny_llama))
    assert info == ModelInfo("llama", True, 3, 32, max_positions=256)
    assert info.num_hidden_states == 4


def test_tiny_bert_is_an_encoder(tiny_bert: Path) -> None:
    info = model_info(str(tiny_bert))
    assert (info.model_type, info.is_decoder, info.num_layers) == ("bert", False, 2)
    assert (info.num_hidden_states, info.hidden_size, info.max_positions) == (3, 24, 256)


def test_weights_are_not_needed(tiny_bert: Path, tmp_path: Path) -> None:
    folder = tmp_path / "config-only"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_bert / "config.json").read_text())
    assert model_info(str(folder)).num_layers == 2


def test_a_folder_answer_is_remembered_until_its_config_changes(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second process (here: a second call) reads a local folder's shape from the memo
    without loading its config; a changed config.json, or a damaged memo, is read afresh."""
    from llmembed import introspect

    folder = tmp_path / "model"
    folder.mkdir()
    config = json.loads((tiny_bert / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config))
    loads = []
    real = introspect._load_config
    monkeypatch.setattr(introspect, "_load_config", lambda ref: loads.append(ref) or real(ref))
    first = model_info(str(folder))
    assert model_info(str(folder)) == first and len(loads) == 1
    assert introspect.model_info_memo_path().is_file()
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    assert model_info(str(folder)).num_layers == 3 and len(loads) == 2
    introspect.model_info_memo_path().write_text("{not json")
    assert model_info(str(folder)).num_layers == 3 and len(loads) == 3


def test_gguf_file(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    from tests.test_zoo import _write_tiny_llama_gguf

    path = tmp_path / "tiny.gguf"
    _write_tiny_llama_gguf(path, hidden=16, layers=2)
    info = model_info(str(path))
    assert (info.model_type, info.is_decoder, info.num_layers, info.hidden_size) == (
        "llama",
        True,
        2,
        16,
    )


def test_zoo_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_bert: Path) -> None:
    monkeypatch.setenv("LLMEMBED_MODELS", str(tmp_path))
    # not installed and the hub is offline (conftest): the registry answers
    for name, entry in zoo.MODELS.items():
        info = model_info(name)
        assert info.is_decoder == (entry.kind == "decoder")
        assert (info.num_layers, info.hidden_size) == (entry.num_layers, entry.hidden_size)
        assert info.model_type == entry.model_type and info.max_positions is None
    # installed: the folder's config answers
    folder = tmp_path / "minilm-l6"
    folder.mkdir()
    config = json.loads((tiny_bert / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config))
    data = (folder / "config.json").read_bytes()
    marker = {
        "name": "minilm-l6",
        "files": {"config.json": {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}},
    }
    (folder / zoo.MARKER_NAME).write_text(json.dumps(marker))
    assert model_info("minilm-l6").num_layers == 2


def test_unknown_model_is_a_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="llmembed models list"):
        model_info(str(tmp_path / "nothing-here"))
    with pytest.raises(ModelLoadError, match="not a model-zoo name"):
        model_info("someone/not-on-this-offline-machine")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="exists but is a folder without config.json"):
        model_info(str(tmp_path / "empty"))


@pytest.mark.parametrize(
    "reference,ok",
    [
        ("sentence-transformers/all-MiniLM-L6-v2", True),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", True),
        ("owner/name.v2", True),
        ("gpt2", True),  # a legacy id without owner, still redirected by the hub
        ("/abs/path", False),
        ("./rel/x", False),
        ("../x", False),
        ("a/b/c", False),
        ("a//b", False),
        ("owner/-name", False),
        ("owner/na--me", False),
        ("owner/na..me", False),
        ("o/" + "x" * 95, False),
        ("~/models", False),
        ("owner/näme", False),
    ],
)
def test_hub_id_shape(reference: str, ok: bool) -> None:
    assert looks_like_hub_id(reference) is ok


def test_check_reference_kinds(tiny_llama: Path, tmp_path: Path) -> None:
    assert check_reference("m", str(tiny_llama)) == "folder"
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert check_reference("m", str(tmp_path / "m.gguf")) == "gguf"
    assert check_reference("m", "owner/name") == "hub"
    for bad, why in [
        (str(tmp_path), "folder without config.json"),
        ("/", "folder without config.json"),
        (str(tiny_llama / "config.json"), "not .gguf"),
        (str(tmp_path / "none.gguf"), "no such .gguf file"),
        (str(tmp_path / "none"), "not a model-zoo name"),
    ]:
        with pytest.raises(ModelLoadError, match=why):
            check_reference("m", bad)


@pytest.mark.parametrize(
    "config,want",
    [
        (SimpleNamespace(model_type="llama", architectures=["LlamaModel"]), True),
        (SimpleNamespace(model_type="qwen2"), True),  # unknown types are decoders
        (SimpleNamespace(model_type="bert", architectures=["BertModel"]), False),
        (SimpleNamespace(model_type="mpnet", architectures=["MPNetForMaskedLM"]), False),
        (
            SimpleNamespace(model_type="bert", architectures=["BertLMHeadModel"], is_decoder=True),
            True,
        ),
        (SimpleNamespace(model_type="roberta", architectures=["RobertaForCausalLM"]), True),
        (SimpleNamespace(model_type="gemma3_text", use_bidirectional_attention=True), False),
    ],
)
def test_decoder_rule(config: SimpleNamespace, want: bool) -> None:
    assert config_is_decoder(config) is want


def test_zoo_registry_follows_the_rule() -> None:
    for entry in zoo.MODELS.values():
        config = SimpleNamespace(model_type=entry.model_type, architectures=[entry.architecture])
        if entry.model_type == "gemma3_text" and entry.kind == "encoder":
            config.use_bidirectional_attention = True  # EmbeddingGemma: what makes it one
        assert config_is_decoder(config) == (entry.kind == "decoder"), entry.name
