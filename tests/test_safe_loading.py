"""Safe backbone loading: a model folder's own code never runs, a reference that is not a model
is refused before any file is hashed, and max_length is checked against the position limit."""

from __future__ import annotations

import ast
import builtins
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import llmembed
from llmembed import files
from llmembed.backbones import DEFAULT_MAX_LENGTH, Backbone, BackboneSpec
from llmembed.errors import ConfigError, ModelLoadError
from llmembed.introspect import model_info

TEXTS = ["good movie", "the plot was really boring and the acting was awful", "cat"]


def _custom_code_folder(tiny_llama: Path, dest: Path, marker: Path, model_type: str) -> Path:
    """A copy of the tiny llama whose config asks for code in the folder that writes `marker`."""
    folder = shutil.copytree(tiny_llama, dest)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    tok_config["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config))
    (folder / "evil.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('the folder code ran')\n"
        "from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast\n"
        f"class EvilConfig(LlamaConfig):\n    model_type = {model_type!r}\n"
        "class EvilModel(LlamaModel):\n    config_class = EvilConfig\n"
        "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    return folder


@pytest.fixture
def say_yes(monkeypatch, tmp_path):
    """Answer "y" to every prompt (transformers asks with input()); dynamic modules go to tmp."""
    import transformers.dynamic_module_utils as dmu

    monkeypatch.setattr(builtins, "input", lambda *args: "y")
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n" * 20))
    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))


def test_auto_map_on_a_known_type_loads_the_built_in_class(tiny_llama, tmp_path, say_yes):
    marker = tmp_path / "marker.txt"
    folder = _custom_code_folder(tiny_llama, tmp_path / "llama-auto-map", marker, "llama")
    spec = {"layers": "1,-1", "dtype": "float32", "max_length": 256}
    bb = Backbone(BackboneSpec(str(folder), **spec), "cpu")
    got = bb.embed(TEXTS, progress=False)
    assert type(bb.model).__name__ == "LlamaModel"  # transformers' own class
    want = Backbone(BackboneSpec(str(tiny_llama), **spec), "cpu").embed(TEXTS, progress=False)
    np.testing.assert_array_equal(got, want)
    assert model_info(str(folder)).model_type == "llama"
    assert not marker.exists()


def test_auto_map_on_an_unknown_type_is_refused_never_run(tiny_llama, tmp_path, say_yes):
    marker = tmp_path / "marker.txt"
    folder = _custom_code_folder(tiny_llama, tmp_path / "custom", marker, "evil_llama")
    with pytest.raises(ModelLoadError, match="custom code") as info:
        Backbone(BackboneSpec(str(folder), max_length=256), "cpu").load()
    assert "\n" not in str(info.value)
    with pytest.raises(ModelLoadError, match="custom code"):
        model_info(str(folder))
    assert not marker.exists()


def test_cli_with_yes_on_stdin_never_runs_folder_code(tiny_llama, tmp_path):
    """The issue's case: `echo y | llmembed embed ...` on a folder with auto_map code."""
    marker = tmp_path / "marker.txt"
    folder = _custom_code_folder(tiny_llama, tmp_path / "custom", marker, "evil_llama")
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "hf-modules"),
        "LLMEMBED_CACHE": str(tmp_path / "cache"),
    }
    args = ["embed", str(texts), "--model", str(folder), "-o", str(tmp_path / "e.npy")]
    code = "import sys; from llmembed.cli import app; app(sys.argv[1:])"
    run = subprocess.run(
        [sys.executable, "-c", code, *args],
        input="y\n" * 20,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "custom code" in run.stdout + run.stderr
    assert not marker.exists()


def test_every_from_pretrained_call_refuses_remote_code():
    """AST scan: every transformers loading call in the package passes trust_remote_code=False."""
    src = Path(llmembed.__file__).parent
    calls = 0
    for name in ("backbones.py", "introspect.py", "zoo.py"):
        tree = ast.parse((src / name).read_text())
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("from_pretrained", "from_config")
            ):
                continue
            calls += 1
            flags = [k for k in node.keywords if k.arg == "trust_remote_code"]
            assert flags, f"{name}:{node.lineno}: no trust_remote_code"
            value = flags[0].value
            assert isinstance(value, ast.Constant) and value.value is False, f"{name}:{node.lineno}"
    assert calls >= 6


# -- references: refused before any file is hashed -------------------------------------------


class _Hashed(Exception):
    pass


@pytest.fixture
def no_hashing(monkeypatch):
    """Make llmembed.files.sha256_file fail: any hashing shows up as _Hashed."""

    def refuse(*args, **kwargs):
        raise _Hashed(args)

    monkeypatch.setattr(files, "sha256_file", refuse)


def test_a_folder_without_config_is_refused_before_hashing(tiny_llama, tmp_path, no_hashing):
    (tmp_path / "model.safetensors").write_bytes(os.urandom(1 << 20))
    (tmp_path / "sub").mkdir()
    shutil.copy(tiny_llama / "model.safetensors", tmp_path / "sub" / "model.safetensors")
    for action in ("fingerprint", "load"):
        bb = Backbone(BackboneSpec(str(tmp_path)), "cpu")
        with pytest.raises(ModelLoadError, match="folder without config.json") as info:
            getattr(bb, action)()
        assert "\n" not in str(info.value)
    with pytest.raises(ModelLoadError, match="folder without config.json"):
        model_info(str(tmp_path))
    with pytest.raises(ModelLoadError, match="folder without config.json"):
        Backbone(BackboneSpec("/"), "cpu").fingerprint()
    # the patch is live: a real model folder does get hashed
    with pytest.raises(_Hashed):
        Backbone(BackboneSpec(str(tiny_llama)), "cpu").fingerprint()


def test_a_file_that_is_not_gguf_is_refused_before_hashing(tiny_llama, no_hashing):
    for name in ("model.safetensors", "config.json"):
        with pytest.raises(ModelLoadError, match="not .gguf"):
            Backbone(BackboneSpec(str(tiny_llama / name)), "cpu").fingerprint()


@pytest.mark.parametrize(
    "reference",
    ["./no-such-folder", "../no/such", "/no/such/model", "a/b/c", "no-owner", "x.gguf", "~/m"],
)
def test_other_references_are_refused(reference, no_hashing):
    with pytest.raises(ModelLoadError, match="llmembed models list") as info:
        Backbone(BackboneSpec(reference), "cpu").fingerprint()
    assert "\n" not in str(info.value)


def test_a_hub_id_passes_the_check_and_fails_offline_as_before():
    bb = Backbone(BackboneSpec("someone/not-on-this-offline-machine"), "cpu")
    assert bb.check_reference() == "hub"
    with pytest.raises(ModelLoadError, match="reachable hub id"):
        bb.load()


# -- max_length against the position limit ---------------------------------------------------


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_bert"])
def test_max_length_above_the_position_limit_is_refused(model, request):
    folder = str(request.getfixturevalue(model))
    with pytest.raises(ConfigError, match="position limit of 256") as info:
        Backbone(BackboneSpec(folder, max_length=1000), "cpu").load()
    assert "\n" not in str(info.value)
    bb = Backbone(BackboneSpec(folder, max_length=1000), "cpu")
    with pytest.raises(ConfigError, match="max_length <= 256"):
        bb.embed(TEXTS, progress=False)
    ok = Backbone(BackboneSpec(folder, max_length=256, dtype="float32"), "cpu")
    assert ok.embed(TEXTS, progress=False).shape[0] == len(TEXTS)
    assert ok.max_length == 256


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_bert"])
def test_the_default_max_length_is_lowered_to_the_limit(model, request):
    """The default 512 is not a choice: on a 256-position model it becomes 256, and a text
    longer than the window is truncated instead of crashing inside the model."""
    folder = str(request.getfixturevalue(model))
    bb = Backbone(BackboneSpec(folder, dtype="float32", padding="max_length"), "cpu").load()
    assert bb.spec.max_length == DEFAULT_MAX_LENGTH and bb.max_length == 256
    long_text = " ".join(["good movie"] * 400)
    assert len(bb.tokenize([long_text])[0]) == 256
    assert bb.embed([long_text, "cat"], progress=False).shape[0] == 2
