"""`llmembed demo` end to end on tiny models and a synthetic R8 folder in the real format."""

import inspect
import json

from rich.console import Console
from typer.testing import CliRunner

from llmembed import datasets, load_recipe
from llmembed.cli import app
from llmembed.cli import demo as demo_command
from llmembed.demo import DEMO_RECIPE, run_demo

from .test_classifier import tiny_recipe

TOPICS = {"earn": "profit rate bank stock", "trade": "trade ship oil price"}


def _write_r8(root, monkeypatch):
    folder = root / "r8"
    folder.mkdir(parents=True)
    for split, n in (("train", 16), ("test", 8)):
        rows = ["Category\tText", "d\tstring", "class\t", ""]
        for i in range(n):
            label = sorted(TOPICS)[i % 2]
            rows.append(f"{label}\t{TOPICS[label]} the day {i}")
        (folder / f"reuters-r8-{split}.tab").write_text("\n".join(rows) + "\n")
    monkeypatch.setitem(datasets.EXPECTED_COUNTS, "r8", (16, 8, 2))
    return root


def test_run_demo_reports_metrics_and_saves(tmp_path, monkeypatch, tiny_llama, tiny_bert):
    root = _write_r8(tmp_path / "data", monkeypatch)
    console = Console(record=True, width=120)
    result = run_demo(
        tiny_recipe(tiny_llama, tiny_bert),
        data_dir=root,
        out=tmp_path / "m",
        console=console,
        verbose=False,
    )
    assert result["n_train"] == 16 and result["n_test"] == 8
    assert result["metrics"]["accuracy"] >= 0.75
    assert "train embed:" in " ".join(result["timings_s"])
    assert (tmp_path / "m" / "llmembed.json").is_file()
    text = console.export_text()
    assert "test accuracy" in text and "model saved to" in text and "install_models" in text


def test_demo_cli_writes_metrics(tmp_path, monkeypatch, tiny_llama, tiny_bert):
    root = _write_r8(tmp_path / "data", monkeypatch)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(f"""
[[backbones]]
model = "{tiny_llama}"
layers = "1,-1"
dtype = "float32"
[head]
proj_dim = 16
hidden = [16]
[train]
lr = 0.01
max_epochs = 20
val_fraction = 0.25
""")
    r = CliRunner().invoke(
        app,
        [
            "demo",
            "--recipe",
            str(recipe),
            "--data-dir",
            str(root),
            "--out",
            str(tmp_path / "m"),
            "--metrics",
            str(tmp_path / "d.json"),
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "d.json").read_text())["dataset"] == "r8"


def test_demo_recipe_is_the_fast_one_everywhere():
    """The CLI's default (written out to keep torch out of its start) is the demo's recipe, and
    that recipe is the fast shipped one: MPNet on 128 tokens plus the lexical channel."""
    assert inspect.signature(demo_command).parameters["recipe"].default == DEMO_RECIPE
    recipe = load_recipe(DEMO_RECIPE)
    assert recipe.name == "cpu-fast" and recipe.lexical.enabled
    assert [(b.model, b.max_length) for b in recipe.backbones] == [("mpnet-base", 128)]
    assert recipe.head.fusion == "linear"
