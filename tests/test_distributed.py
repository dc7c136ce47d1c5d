"""Ray Data embedding and prediction (llmembed.distributed) on a local Ray runtime with tiny
random models: identical to the local path, resumable by shard, refusing a mixed folder."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from llmembed import Backbone, BackboneSpec, EmbeddingCache, LLMEmbedClassifier  # noqa: E402
from llmembed.cli import app  # noqa: E402
from llmembed.distributed import (  # noqa: E402
    embed_files,
    import_embeddings,
    predict_files,
    read_shards,
)
from llmembed.errors import ConfigError, DataError  # noqa: E402
from llmembed.hardware import torch_threads  # noqa: E402
from llmembed.testing import WORDS, tiny_recipe  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield
    ray.shutdown()


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 14)))) + f" {i}" for i in range(n)]


def _csv(path, texts):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        w.writerows([t] for t in texts)
    return path


@pytest.fixture
def inputs(tmp_path):
    a, b = _texts(23, 0), _texts(10, 1)
    return [_csv(tmp_path / "a.csv", a), _csv(tmp_path / "b.csv", b)], a + b


def _spec(tiny_bert) -> BackboneSpec:
    return BackboneSpec(str(tiny_bert), layers="-1", pooling="mean", dtype="float32")


def test_ray_embeddings_equal_local_ones_in_input_order(tmp_path, inputs, tiny_bert):
    files, texts = inputs
    out = tmp_path / "emb"
    summary = embed_files(files, _spec(tiny_bert), out, shard_rows=8, workers=2, progress=False)
    assert (summary.shards, summary.computed, summary.rows) == (3 + 2, 5, len(texts))
    cols, meta = read_shards(out)
    local = Backbone(_spec(tiny_bert), device="cpu")
    expected = local.embed(texts, progress=False)
    assert meta["fingerprint"] == local.fingerprint()
    assert cols["embedding"].shape == expected.shape == (len(texts), 1, local.hidden_size)
    assert np.abs(cols["embedding"] - expected).max() <= 1e-5
    # the same batches give the same bits: shard by shard, as the actors ran them (1 thread each)
    with torch_threads(1):
        first_shard = local.embed(texts[:8], progress=False)
    assert np.array_equal(cols["embedding"][:8], first_shard)
    assert list(cols["row_id"][:3]) == [0, 1, 2] and cols["row_id"][23] == 1 << 40


def test_resume_recomputes_only_missing_shards(tmp_path, inputs, tiny_bert):
    files, _ = inputs
    out = tmp_path / "emb"
    embed_files(files, _spec(tiny_bert), out, shard_rows=8, progress=False)
    before, _ = read_shards(out)
    shards = sorted(out.glob("part-*.parquet"))
    shards[1].unlink()  # as if the run had been killed before that shard was renamed into place
    (out / f".{shards[1].name}.tmp").write_bytes(b"half a parquet file")
    again = embed_files(files, _spec(tiny_bert), out, shard_rows=8, progress=False)
    assert (again.shards, again.computed) == (5, 1)
    after, _ = read_shards(out)
    assert np.array_equal(before["embedding"], after["embedding"])
    nothing = embed_files(files, _spec(tiny_bert), out, shard_rows=8, progress=False)
    assert nothing.computed == 0 and nothing.rows == 0


def test_a_folder_of_another_run_is_refused(tmp_path, inputs, tiny_bert):
    files, _ = inputs
    out = tmp_path / "emb"
    embed_files(files, _spec(tiny_bert), out, shard_rows=8, progress=False)
    with pytest.raises(ConfigError, match="another run"):
        embed_files(files, _spec(tiny_bert), out, shard_rows=16, progress=False)
    with pytest.raises(DataError, match="no such file"):
        embed_files([tmp_path / "missing-*.csv"], _spec(tiny_bert), tmp_path / "x")


def test_ray_predictions_equal_local_ones(tmp_path, inputs, tiny_llama, tiny_bert, toy_texts):
    files, texts = inputs
    clf = LLMEmbedClassifier(recipe=tiny_recipe(tiny_llama, tiny_bert), verbose=False)
    clf.fit(*toy_texts).save(tmp_path / "model")
    out = tmp_path / "pred"
    predict_files(tmp_path / "model", files, out, shard_rows=16, workers=2, progress=False)
    cols, meta = read_shards(out)
    assert meta["classes"] == list(clf.classes_)
    assert list(cols["label"]) == list(clf.predict(texts))
    np.testing.assert_allclose(cols["probabilities"], clf.predict_proba(texts), atol=1e-5)


def test_cli_predict_engine_ray(tmp_path, inputs, tiny_llama, tiny_bert, toy_texts):
    files, texts = inputs
    clf = LLMEmbedClassifier(recipe=tiny_recipe(tiny_llama, tiny_bert), verbose=False)
    clf.fit(*toy_texts).save(tmp_path / "model")
    args = ["predict", str(tmp_path / "model"), *map(str, files), "--engine", "ray", "--quiet"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "give an --output folder" in r.output
    r = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "preds")])
    assert r.exit_code == 0, r.output
    assert list(read_shards(tmp_path / "preds")[0]["label"]) == list(clf.predict(texts))


def test_imported_shards_are_cache_hits(tmp_path, inputs, tiny_bert):
    files, texts = inputs
    out = tmp_path / "emb"
    embed_files(files, _spec(tiny_bert), out, shard_rows=8, progress=False)
    assert import_embeddings(out, tmp_path / "cache") == len(texts)
    cache = EmbeddingCache(tmp_path / "cache")
    emb = cache.embed(Backbone(_spec(tiny_bert), device="cpu"), texts, progress=False)
    assert cache.last_misses == 0
    assert np.array_equal(emb, read_shards(out)[0]["embedding"])


def test_cli_engine_ray(tmp_path, inputs, tiny_bert):
    files, texts = inputs
    runner = CliRunner()
    args = ["embed", *map(str, files), "--model", str(tiny_bert), "--dtype", "float32"]
    r = runner.invoke(app, [*args, "--engine", "ray", "-o", str(tmp_path / "out"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "2 shards computed (33 rows), 0 already there" in " ".join(r.output.split())
    assert json.loads((tmp_path / "out" / "_llmembed.json").read_text())["shard_rows"] == 10_000
    assert len(read_shards(tmp_path / "out")[0]["row_id"]) == len(texts)
    r = runner.invoke(app, [*args, "-o", str(tmp_path / "x.npy")])
    assert r.exit_code == 2 and "use --engine ray for many" in r.output


def test_fit_and_train_from_shards_extract_nothing(tmp_path, inputs, tiny_bert, monkeypatch):
    files, texts = inputs
    out = tmp_path / "emb"
    embed_files(files, _spec(tiny_bert), out, shard_rows=8, progress=False)
    labels = ["odd" if "1" in t else "even" for t in texts]

    def no_extraction(*args, **kwargs):
        raise AssertionError("a text was extracted although its shard holds it")

    monkeypatch.setattr(Backbone, "embed", no_extraction)
    clf = LLMEmbedClassifier(
        backbones=[_spec(tiny_bert)], head={"fusion": "linear"}, out_of_core=True, verbose=False
    )
    clf.fit(texts, labels, embeddings=out)
    assert set(clf.predict(texts)) <= {"odd", "even"}

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        f'name = "tiny"\n[[backbones]]\nmodel = "{tiny_bert}"\nlayers = "-1"\n'
        'pooling = "mean"\ndtype = "float32"\n[head]\nfusion = "linear"\n'
    )
    data = tmp_path / "train.csv"
    with open(data, "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *zip(texts, labels)])
    cache = tmp_path / "fresh-cache"
    args = ["train", str(data), "--recipe", str(recipe), "--embeddings", str(out)]
    args += ["--out-of-core", "--cache-dir", str(cache), "-o", str(tmp_path / "m"), "--quiet"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m" / "head.safetensors").is_file()
