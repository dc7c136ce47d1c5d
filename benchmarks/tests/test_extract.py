"""The extraction benchmark's pieces, on tiny random models (the real run uses the zoo)."""

from __future__ import annotations

import sys

import pytest
import torch
from typer.testing import CliRunner

from llmembed.backbones import Backbone, BackboneSpec
from llmembed_bench import extract as bench
from llmembed_bench.cli import app

TEXTS = [
    "good movie",
    "the plot was really boring and the acting was awful",
    "cat",
    "market price of oil and wheat",
] * 3


def test_matmul_peak_is_positive():
    assert bench.matmul_peak(torch.float32, n=64, seconds=0.05) > 0


def test_nonembedding_params_excludes_embeddings(tiny_llama):
    bb = Backbone(BackboneSpec(str(tiny_llama)), "cpu").load()
    total = sum(p.numel() for p in bb.model.parameters())
    emb = bb.model.get_input_embeddings().weight.numel()
    assert bench.nonembedding_params(bb.model) == total - emb


def test_peak_rss_sees_an_allocation():
    with bench.PeakRSS() as mem:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        x += 1
    assert mem.mb > 32


def test_run_model_ours_and_published(tiny_llama):
    spec = BackboneSpec(str(tiny_llama), layers="1,2", pooling="mean", max_length=32)
    ours, published = bench.run_model(spec, "sst2", TEXTS, ["ours", "published"], 0.0)
    assert ours.method == "ours" and published.method == "published"
    assert ours.n_texts == len(TEXTS) and ours.real_tokens > len(TEXTS)
    # ours stops after layer 2 of 3: fewer parameters run than the full model
    assert 0 < ours.params_run < published.params_run
    assert published.n_texts >= 1 and "padding to max_length 32" in published.settings
    peaks = {"float32": 100.0}
    row = ours.row(peaks)
    assert row["texts_per_s"] > 0 and row["tokens_per_s"] > 0 and row["mfu"] > 0
    table = bench.fmt_table([row, published.row(peaks)])
    assert "ours" in table and "published" in table
    ratio = bench.ratios([row, published.row(peaks)])
    assert ratio[0]["vs"] == "published" and ratio[0]["texts_per_s_ratio"] > 0


def test_unknown_method_is_an_error(tiny_llama):
    with pytest.raises(ValueError, match="unknown method"):
        bench.run_model(BackboneSpec(str(tiny_llama)), "sst2", TEXTS, ["nope"])


def test_st_skips_cleanly_without_the_package(tiny_bert, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    res = bench.run_st(BackboneSpec(str(tiny_bert)), str(tiny_bert), TEXTS, "sst2", 10, 10)
    assert "not installed" in res.skipped
    assert "skipped" in bench.fmt_table([res.row({})])


def test_mfu_is_against_the_peak_of_the_rows_dtype():
    res = bench.Result("m", "sst2", "ours", 10, 1000, 1.0, 10**6, dtype="float32")
    # 2 x 1e6 parameters x 1000 tokens / 1 s = 2 GFLOP/s
    assert res.row({"float32": 4.0, "bfloat16": 400.0})["mfu"] == pytest.approx(0.5)
    assert res.row({"bfloat16": 400.0})["mfu"] is None  # no fp32 peak: no MFU, no crash
    assert "-" in bench.fmt_table([res.row({})])


def test_st_bf16_is_skipped_without_native_bf16(tiny_bert, monkeypatch):
    monkeypatch.setattr(bench, "cpu_has_bf16", lambda: False)
    res = bench.run_st(BackboneSpec(str(tiny_bert)), str(tiny_bert), TEXTS, "sst2", 10, 10, True)
    assert "no native bf16" in res.skipped


def test_st_runs_when_installed(tiny_bert):
    pytest.importorskip("sentence_transformers")
    spec = BackboneSpec(str(tiny_bert), max_length=32)
    res = bench.run_st(spec, str(tiny_bert), TEXTS, "sst2", 10, 40)
    assert not res.skipped and res.n_texts == len(TEXTS) and res.seconds > 0
    assert res.dtype == "float32"


def test_cli_bench_extract_help():
    out = CliRunner().invoke(app, ["extract", "--help"])
    assert out.exit_code == 0 and "--quick" in out.output
    assert "--e2e-cache" in out.output and "--recipe" in out.output


def test_end_to_end_refuses_a_cache_that_is_not_empty(tmp_path):
    (tmp_path / "old").mkdir()
    with pytest.raises(SystemExit, match="not empty"):
        bench.end_to_end(100, cache_dir=tmp_path)
