"""The CLI end to end on a small CSV with tiny random models."""

import csv
import json

import pytest
from typer.testing import CliRunner

from llmembed.cli import app

runner = CliRunner()


@pytest.fixture
def recipe_file(tmp_path, tiny_llama, tiny_bert):
    path = tmp_path / "tiny.toml"
    path.write_text(f"""
name = "tiny"
[[backbones]]
model = "{tiny_llama}"
layers = "1,-1"
pooling = "mean_no_first"
dtype = "float32"
[[backbones]]
model = "{tiny_bert}"
pooling = "first"
dtype = "float32"
[head]
proj_dim = 16
hidden = [32]
dropout = 0.1
[train]
lr = 0.01
batch_size = 8
max_epochs = 30
patience = 8
val_fraction = 0.2
""")
    return path


@pytest.fixture
def csv_file(tmp_path, toy_texts):
    texts, labels = toy_texts
    path = tmp_path / "data.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        w.writerows(zip(texts, labels))
    return path


def test_train_evaluate_predict(tmp_path, recipe_file, csv_file):
    model = tmp_path / "model"
    cols = ["--text-col", "review", "--label-col", "sentiment"]
    r = runner.invoke(
        app,
        [
            "train",
            str(csv_file),
            "--recipe",
            str(recipe_file),
            "--out",
            str(model),
            "--test",
            str(csv_file),
            "-q",
            *cols,
        ],
    )
    assert r.exit_code == 0, r.output
    report = json.loads((model / "metrics.json").read_text())
    assert report["test"]["accuracy"] >= 0.8 and report["n_train"] == 40

    assert "confusion_matrix" not in report["validation"]  # class indices: summary only
    assert "confusion_matrix" in report["test"]
    assert (model / "README.md").is_file() and (model / "llmembed.json").is_file()

    r = runner.invoke(
        app, ["evaluate", str(model), str(csv_file), "-o", str(tmp_path / "m.json"), "-q", *cols]
    )
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] == report["test"]["accuracy"]
    r = runner.invoke(
        app, ["evaluate", str(model), str(csv_file), "--no-check-backbones", "-q", *cols]
    )
    assert r.exit_code == 0 and json.loads(r.stdout)["n"] == 40, r.output

    out = tmp_path / "pred.csv"
    r = runner.invoke(
        app,
        [
            "predict",
            str(model),
            str(csv_file),
            "--text-col",
            "review",
            "-o",
            str(out),
            "--proba",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and set(rows[0]) == {"text", "prediction", "p_neg", "p_pos"}


def test_embed_and_cache_commands(tmp_path, tiny_bert, csv_file):
    out = tmp_path / "emb.npy"
    r = runner.invoke(
        app,
        [
            "embed",
            str(csv_file),
            "--model",
            str(tiny_bert),
            "--layers",
            "-2:",
            "--text-col",
            "review",
            "-o",
            str(out),
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    import numpy as np

    assert np.load(out).shape == (40, 2, 24)
    r = runner.invoke(app, ["cache", "info"])
    assert r.exit_code == 0 and "1 entries" in r.output and "40" in r.output  # unique texts
    r = runner.invoke(app, ["cache", "compact"])
    assert r.exit_code == 0 and "removed 0 chunk files (1 -> 1)" in r.output, r.output
    r = runner.invoke(app, ["cache", "clear", "--yes"])
    assert r.exit_code == 0 and "removed 1" in r.output


def test_clear_errors(tmp_path, recipe_file, csv_file):
    r = runner.invoke(
        app, ["train", str(csv_file), "--recipe", str(recipe_file), "--text-col", "nope", "-q"]
    )
    assert r.exit_code == 2
    assert "nope" in r.output and "Traceback" not in r.output
    r = runner.invoke(
        app,
        [
            "embed",
            str(csv_file),
            "--model",
            str(tmp_path / "missing"),
            "--text-col",
            "review",
            "-o",
            str(tmp_path / "e.npy"),
        ],
    )
    assert r.exit_code == 2 and "llmembed models" in r.output
    r = runner.invoke(app, ["train", "--dataset", "imdb"])
    assert r.exit_code == 2 and "sst2" in r.output


def test_help_lists_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("embed", "train", "evaluate", "predict", "cache", "models"):
        assert cmd in r.output
    for cmd in ("evaluate", "predict"):
        assert "--no-check-backbones" in runner.invoke(app, [cmd, "--help"]).output


def test_error_messages_keep_square_brackets():
    """A one-line error naming an extra (`llmembed[ray]`) is printed as is, not as markup."""
    import typer

    from llmembed.cli import _run
    from llmembed.errors import LLMEmbedError

    one = typer.Typer()

    def fail():
        raise LLMEmbedError("pip install 'llmembed[ray]' (or 'ray[data]')")

    @one.command()
    def go() -> None:
        _run(fail)

    r = runner.invoke(one, [])
    assert r.exit_code == 2 and "'llmembed[ray]' (or 'ray[data]')" in r.output
