import numpy as np
import pytest
import torch

from llmembed.backbones import Backbone, BackboneSpec, parse_layers, resolve_device, resolve_dtype
from llmembed.errors import ConfigError, ExtractionOOMError, LLMEmbedError, ModelLoadError
from llmembed.pooling import pool


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("-1", [30]),
        ("-5:", [26, 27, 28, 29, 30]),
        ("10:13", [10, 11, 12]),
        ("6,12,18", [6, 12, 18]),
        ("0", [0]),
        ("all", list(range(31))),
        ("1:10:4", [1, 5, 9]),
        ("-1,0", [30, 0]),
    ],
)
def test_parse_layers(spec, expected):
    assert parse_layers(spec, 31) == expected


@pytest.mark.parametrize("spec", ["31", "-32", "a:b", "", "3,3", "40:50"])
def test_parse_layers_errors(spec):
    with pytest.raises(ConfigError):
        parse_layers(spec, 31)


def _reference(model_dir, texts, layers, method):
    """Pooled hidden states straight from transformers, one text at a time, no padding."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for t in texts:
        enc = tok(t, return_tensors="pt")
        with torch.no_grad():
            hs = model(**enc, output_hidden_states=True).hidden_states
        out.append(torch.stack([pool(hs[i], enc["attention_mask"], method)[0] for i in layers]))
    return torch.stack(out).numpy()


TEXTS = [
    "good movie",
    "the plot was really boring and the acting was awful",
    "cat",
    "this film is not good",
    "market price of oil and wheat",
    "a very very very long long story about the day the dog and the cat went to the bank",
]


@pytest.mark.parametrize("method", ["mean", "mean_no_first", "last", "first"])
def test_decoder_layers_match_transformers(tiny_llama, method):
    bb = Backbone(
        BackboneSpec(str(tiny_llama), layers="all", pooling=method, dtype="float32"), device="cpu"
    )
    got = bb.embed(TEXTS, progress=False)
    assert got.shape == (len(TEXTS), 4, 32)
    want = _reference(tiny_llama, TEXTS, range(4), method)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_same_text_same_vector_whatever_the_batch(tiny_llama):
    spec = BackboneSpec(
        str(tiny_llama), layers="1,-1", pooling="mean", dtype="float32", token_budget=64
    )
    bb = Backbone(spec, device="cpu")
    alone = bb.embed(["good movie"], progress=False)[0]
    mixed = bb.embed(TEXTS * 3, progress=False)
    for row in (0, len(TEXTS), 2 * len(TEXTS)):
        np.testing.assert_allclose(mixed[row], alone, rtol=1e-4, atol=1e-6)


def test_threads_are_refreshed_between_batches(tiny_llama, monkeypatch):
    calls = []
    monkeypatch.setattr("llmembed.backbones.refresh_threads", lambda: calls.append(1))
    spec = BackboneSpec(str(tiny_llama), dtype="float32", max_batch_size=4)
    Backbone(spec, device="cpu").embed([f"text {i}" for i in range(10)], progress=False)
    assert len(calls) == 3  # before each batch: 4, 4 and 2 texts


def test_early_stop_gives_same_middle_layers(tiny_llama):
    """Stopping after the deepest requested layer changes nothing in the vectors."""
    shallow = Backbone(BackboneSpec(str(tiny_llama), layers="1,2", dtype="float32"), "cpu")
    full = Backbone(BackboneSpec(str(tiny_llama), layers="1,2,-1", dtype="float32"), "cpu")
    np.testing.assert_allclose(
        shallow.embed(TEXTS, progress=False), full.embed(TEXTS, progress=False)[:, :2], rtol=1e-5
    )


def test_encoder_pooler_and_cls(tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    bb = Backbone(BackboneSpec(str(tiny_bert), pooling="pooler", dtype="float32"), "cpu")
    got = bb.embed(TEXTS[:3], progress=False)
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModel.from_pretrained(tiny_bert).eval()
    with torch.no_grad():
        want = model(**tok(TEXTS[2], return_tensors="pt")).pooler_output[0].numpy()
    assert got.shape == (3, 1, 24)
    np.testing.assert_allclose(got[2, 0], want, rtol=1e-4, atol=1e-5)
    cls = Backbone(BackboneSpec(str(tiny_bert), layers="-2:", pooling="first"), "cpu")
    assert cls.embed(TEXTS[:2], progress=False).shape == (2, 2, 24)


def test_fixed_padding_mean_includes_padding(tiny_bert):
    """The published flaw: with max_length padding a plain mean depends on the padding."""
    fixed = Backbone(
        BackboneSpec(
            str(tiny_bert),
            pooling="mean_padded",
            padding="max_length",
            max_length=32,
            dtype="float32",
        ),
        "cpu",
    )
    masked = Backbone(BackboneSpec(str(tiny_bert), pooling="mean", dtype="float32"), "cpu")
    a = fixed.embed(["good movie"], progress=False)
    b = masked.embed(["good movie"], progress=False)
    assert not np.allclose(a, b, atol=1e-3)


def test_order_is_input_order(tiny_llama):
    bb = Backbone(BackboneSpec(str(tiny_llama), dtype="float32", token_budget=16), "cpu")
    fwd = bb.embed(TEXTS, progress=False)
    rev = bb.embed(TEXTS[::-1], progress=False)
    np.testing.assert_allclose(fwd, rev[::-1], rtol=1e-4, atol=1e-6)


def test_bf16_close_to_fp32(tiny_llama):
    a = Backbone(BackboneSpec(str(tiny_llama), dtype="float32"), "cpu").embed(TEXTS, False)
    b = Backbone(BackboneSpec(str(tiny_llama), dtype="bfloat16"), "cpu").embed(TEXTS, False)
    assert b.dtype == np.float32
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cos.min() > 0.99


def test_half_precision_computes_in_fp32_on_a_cpu_without_it(tiny_llama, monkeypatch):
    """A bf16 backbone on a CPU with no native bf16 matmul keeps bf16-rounded weights but
    runs them in fp32: the emulated bf16 path is hundreds of times slower there."""
    import llmembed.backbones as backbones

    cpu = torch.device("cpu")
    monkeypatch.setattr(backbones, "cpu_has_bf16", lambda: True)
    assert backbones.compute_dtype(torch.bfloat16, cpu) == torch.bfloat16
    native = Backbone(BackboneSpec(str(tiny_llama), dtype="bfloat16"), "cpu")
    monkeypatch.setattr(backbones, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(backbones, "cpu_has_fp16", lambda: False)
    assert backbones.compute_dtype(torch.bfloat16, cpu) == torch.float32
    assert backbones.compute_dtype(torch.float16, cpu) == torch.float32
    assert backbones.compute_dtype(torch.float32, cpu) == torch.float32
    assert backbones.compute_dtype(torch.bfloat16, torch.device("cuda")) == torch.bfloat16
    bb = Backbone(BackboneSpec(str(tiny_llama), dtype="bfloat16"), "cpu")
    with pytest.warns(UserWarning, match="no native bfloat16 matmul"):
        bb.load()
    assert bb.dtype == torch.bfloat16 and bb.compute_dtype == torch.float32
    assert bb.fingerprint() == native.fingerprint()  # the same weights and features
    weights = [p for p in bb.model.parameters()]
    assert all(p.dtype == torch.float32 for p in weights)
    assert all(torch.equal(p, p.bfloat16().float()) for p in weights)  # bf16-rounded
    a = native.embed(TEXTS, False)  # bf16 compute
    b = bb.embed(TEXTS, False)
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert cos.min() > 0.999


def test_fingerprint_depends_on_settings(tiny_llama):
    a = Backbone(BackboneSpec(str(tiny_llama), layers="-1"), "cpu")
    b = Backbone(BackboneSpec(str(tiny_llama), layers="-2"), "cpu")
    c = Backbone(BackboneSpec(str(tiny_llama), layers="-1", token_budget=7), "cpu")
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == c.fingerprint()  # batching does not change the vectors


def test_spellings_of_the_same_layers_share_a_fingerprint(tiny_llama):
    """The fingerprint keys the cache on the resolved hidden states (tiny_llama has 4), so
    "-1" and "3" are one folder; the legacy fingerprint (0.1.0's folders) told them apart."""
    names = {}
    for layers in ("-1", "3", "3:", "1,-1", "1,3"):
        bb = Backbone(BackboneSpec(str(tiny_llama), layers=layers), "cpu")
        names[layers] = bb.fingerprint(), bb.legacy_fingerprint()
    assert names["-1"][0] == names["3"][0] == names["3:"][0] != names["1,-1"][0]
    assert names["1,-1"][0] == names["1,3"][0]
    legacy = [old for _, old in names.values()]
    assert len(set(legacy)) == len(legacy) and not set(legacy) & {new for new, _ in names.values()}


def test_unknown_model_says_how_to_get_it(tmp_path):
    with pytest.raises(ModelLoadError, match="llmembed models"):
        Backbone(BackboneSpec(str(tmp_path / "no-such-model")), "cpu").load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="exists but is a folder without config.json"):
        Backbone(BackboneSpec(str(tmp_path / "empty")), "cpu").load()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="exists but transformers cannot read it"):
        Backbone(BackboneSpec(str(tmp_path / "broken")), "cpu").load()


def test_cuda_absent_is_clear():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")


def test_dtype_auto():
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) in (torch.float32, torch.bfloat16)


def test_bad_spec_values():
    with pytest.raises(ConfigError):
        BackboneSpec("x", padding="right")
    with pytest.raises(ConfigError, match="Unknown pooling"):
        BackboneSpec("x", pooling="average")
    with pytest.raises(ConfigError, match="Unknown backbone setting"):
        BackboneSpec.from_dict({"model": "x", "layer": "-1"})


def test_several_poolings_in_one_pass(tiny_llama):
    both = Backbone(
        BackboneSpec(str(tiny_llama), layers="1,-1", pooling="mean_no_first,last", dtype="float32"),
        "cpu",
    )
    got = both.embed(TEXTS, progress=False)
    assert got.shape == (len(TEXTS), 4, 32) and both.n_vectors == 4
    for j, method in enumerate(["mean_no_first", "last"]):
        alone = Backbone(
            BackboneSpec(str(tiny_llama), layers="1,-1", pooling=method, dtype="float32"), "cpu"
        ).embed(TEXTS, progress=False)
        np.testing.assert_allclose(got[:, [j, 2 + j]], alone, rtol=1e-5)  # layer-major order
    with pytest.raises(LLMEmbedError, match="pooler"):
        BackboneSpec("x", pooling="pooler,mean")


def test_causal_decoder_runs_without_attention_mask(tiny_llama, tiny_bert):
    """Right padding + causal attention: the mask only matters for pooling."""
    llama = Backbone(BackboneSpec(str(tiny_llama)), "cpu").load()
    bert = Backbone(BackboneSpec(str(tiny_bert)), "cpu").load()
    assert llama._causal and llama.is_decoder
    assert not bert._causal and not bert.is_decoder


def test_backbone_and_model_info_agree(tiny_llama, tiny_bert):
    from llmembed.introspect import model_info

    for folder, hidden_states in ((tiny_llama, 4), (tiny_bert, 3)):
        bb = Backbone(BackboneSpec(str(folder), layers="all"), "cpu").load()
        info = model_info(str(folder))
        assert bb.info == info
        assert bb.is_decoder == info.is_decoder
        assert bb.num_hidden_states == info.num_hidden_states == hidden_states
        assert bb.layer_indices == list(range(hidden_states))
        assert bb.hidden_size == info.hidden_size


def test_fingerprint_formula_is_unchanged(tiny_llama):
    """The fingerprint keys the on-disk cache: recompute it by hand from its documented parts."""
    import hashlib
    import json

    bb = Backbone(BackboneSpec(str(tiny_llama), layers="1,-1", pooling="mean", dtype="float32"))
    names = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
    tokenizer_files = {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "merges.txt",
        "vocab.json",
        "tokenizer.model",
        "config.json",
    }
    manifest = hashlib.sha256()
    for f in sorted(tiny_llama.rglob("*")):
        if f.is_file() and (f.suffix in names or f.name in tokenizer_files):
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            manifest.update(f"{f.relative_to(tiny_llama)}:{digest}\n".encode())
    payload = {
        "model": manifest.hexdigest(),
        "spec": {
            "layers": "1,-1",
            "pooling": "mean",
            "max_length": 512,
            "dtype": "float32",
            "padding": "longest",
        },
        "layers": [1, 3],
        "dtype": "torch.float32",
        "version": 1,
    }
    legacy = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]
    assert bb.legacy_fingerprint() == legacy  # llmembed 0.1.0's: the layer spec as written too
    del payload["spec"]["layers"]
    want = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]
    assert bb.fingerprint() == want


@pytest.mark.parametrize(
    "error",
    [
        MemoryError(),
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate"),
    ],
)
def test_out_of_memory_is_an_extraction_oom_error(tiny_llama, monkeypatch, error):
    bb = Backbone(BackboneSpec(str(tiny_llama), layers="-1", dtype="float32"), "cpu").load()

    def explode(*args, **kwargs):
        raise error

    monkeypatch.setattr(bb, "_model", explode)
    with pytest.raises(ExtractionOOMError, match="lower token_budget") as info:
        bb.embed(TEXTS, progress=False)
    assert isinstance(info.value, LLMEmbedError) and "max_batch_size" in str(info.value)
    # other runtime errors are not disguised as memory problems
    monkeypatch.setattr(bb, "_model", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bug")))
    with pytest.raises(RuntimeError, match="bug"):
        bb.embed(TEXTS, progress=False)


def test_cpu_has_bf16_still_importable_from_backbones():
    from llmembed import hardware
    from llmembed.backbones import cpu_has_bf16

    assert cpu_has_bf16 is hardware.cpu_has_bf16


def test_iter_embed_yields_every_text_once_matching_embed(tiny_llama):
    bb = Backbone(BackboneSpec(str(tiny_llama), layers="1,2", dtype="float32", token_budget=16))
    texts = TEXTS * 2
    full = bb.embed(texts, progress=False)
    seen = []
    for idx, vectors in bb.iter_embed(texts):
        assert vectors.shape == (len(idx), 2, 32) and vectors.dtype == np.float32
        np.testing.assert_allclose(vectors, full[idx], rtol=1e-5, atol=1e-7)
        seen.extend(idx.tolist())
    assert sorted(seen) == list(range(len(texts)))
    assert list(bb.iter_embed([])) == []


def test_template_wraps_the_text_and_keys_the_fingerprint(tiny_llama):
    plain = Backbone(BackboneSpec(str(tiny_llama), dtype="float32"), device="cpu")
    spec = BackboneSpec(str(tiny_llama), dtype="float32", template="this movie: {text} !")
    prompted = Backbone(spec, device="cpu")
    texts = ["good acting", "a {text} brace {0} stays"]
    wrapped = [f"this movie: {t} !" for t in texts]
    assert prompted.tokenize(texts) == plain.tokenize(wrapped)
    np.testing.assert_array_equal(
        prompted.embed(texts, progress=False), plain.embed(wrapped, progress=False)
    )
    assert prompted.fingerprint() != plain.fingerprint()
    default = BackboneSpec(str(tiny_llama), dtype="float32", template="{text}")
    assert Backbone(default, device="cpu").fingerprint() == plain.fingerprint()


@pytest.mark.parametrize("template", ["no placeholder", "{text} and {text}", "{ text }"])
def test_bad_template(template):
    with pytest.raises(ConfigError, match="template must contain"):
        BackboneSpec("m", template=template)
