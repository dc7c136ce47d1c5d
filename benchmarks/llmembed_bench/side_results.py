"""Sections of docs/results.md from the side studies' JSON files in benchmarks/results/.

The main table comes from per-run records; studies that do not fit that layout (multi-label
on Reuters-21578, chunking vs truncation) write one JSON file each with their script, and these
functions turn them into Markdown. A missing file gives no section.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["side_sections"]

ML_KEYS = ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss")


def _value(v: Any) -> tuple[float, float | None]:
    return (v["mean"], v["std"]) if isinstance(v, dict) else (v, None)


def _cell(v: Any, pct: bool = True) -> str:
    mean, std = _value(v)
    scale = 100 if pct else 1
    text = f"{scale * mean:.2f}" if pct else f"{mean:.4f}"
    return text + (f" ± {scale * std:.2f}" if pct and std is not None else "")


def multilabel_lines(data: dict[str, Any]) -> list[str]:
    """The multi-label section (benchmarks/scripts/multilabel.py's JSON)."""
    info, methods = data["data"], data["methods"]
    lines = [
        "## Multi-label: Reuters-21578 ModApte, 90 categories",
        "",
        f"{info['train']:,} training / {info['test']:,} test documents, {info['categories']} "
        f"categories, {info['label_cardinality_train']} labels per training document "
        f"({100 * info['multi_label_share_train']:.1f}% have several). Micro / macro / samples "
        "F1 and subset accuracy in %, Hamming loss as a fraction; ours: mean ± std over 3 "
        "seeds, the peers are deterministic. Every choice (C, thresholds) on a validation split "
        "of training.",
        "",
        "| method | micro-F1 | macro-F1 | samples-F1 | subset acc. | Hamming loss |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, m in methods.items():
        cells = [_cell(m[k]) for k in ML_KEYS[:4]] + [_cell(m["hamming_loss"], pct=False)]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        '`ours:<backbone>` is `LLMEmbedClassifier(recipe="cpu", backbones=[<backbone>])` fitted '
        "on the label sets (the `cpu` recipe's linear head and lexical channel, one sigmoid per "
        "label, per-label thresholds); *thresholds 0.5* reads the same models at 0.5; *no "
        "lexical* turns the lexical channel off (seed 0). `lr:<backbone>`: one-vs-rest logistic "
        "regression on the backbone's standard sentence embedding; `tfidf-svm`: TF-IDF word "
        "1-2-grams + one-vs-rest linear SVM. The data is read from the 22 original SGML files "
        "of the Reuters-21578 distribution (UCI KDD archive; no package registry has them) by "
        "`llmembed_bench.multilabel_data`; 7,770 training documents where NLTK's copy has "
        "7,769. Re-run: `python benchmarks/scripts/multilabel.py "
        "--reuters-dir DIR`.",
        "",
    ]
    return lines


def chunking_lines(data: dict[str, Any]) -> list[str]:
    """The long-document section (benchmarks/scripts/chunking.py's JSON)."""
    lines = [
        "## Long documents: chunk and pool vs truncation",
        "",
        f"`{data['model']}` (last layer, mean pooling) under the `cpu` recipe's linear head, "
        '`long_texts` "truncate" or "chunk" (windows of max_length tokens, 25% overlap, mean '
        "or max over windows) at equal max_length; accuracy (ModApte: micro-F1) and macro-F1 "
        "in %, mean ± std over 3 seeds. *neural only*: the lexical channel off, so only the "
        "embedding differs; *with lexical*: the recipe as shipped (seed 0). "
        "*truncate+chunk-mean*: the model twice in the recipe, one backbone truncating and one "
        "chunking, fused by the head (the lead and the whole text).",
        "",
        "On these news texts, whose lead says what a document is about, pooled windows alone "
        "(chunk-mean, chunk-max) do worse than truncation, mostly by more than the seed spread "
        "(not R52 at 256: -0.14); the model twice (truncate+chunk-mean) is never worse by more "
        "than the spread and helps where documents are long (ModApte, R52 at 128 tokens). With "
        "the lexical channel, which reads every document whole, chunking adds nothing: R8 and "
        "R52 within 0.2 points either way, ModApte -1.1 (chunk-mean) and -0.5 (both), one "
        "seed.",
        "",
        "| data | max_length | mode | windows / text | long texts | acc. / micro-F1, neural "
        "| macro-F1, neural | acc. / micro-F1, with lexical |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, row in data["results"].items():
        name, length, mode = key.split(" ")
        neural = row["neural only"]
        first = "micro_f1" if "micro_f1" in neural else "accuracy"
        lex = row.get("with lexical")
        # truncation embeds one window per text: the share of long texts shows on chunk rows
        long = "-" if mode == "truncate" else f"{100 * row['long_share']:.1f}%"
        lexical = f"{100 * lex[first]['mean']:.2f}" if lex else "-"  # one seed: no spread
        lines.append(
            f"| {name} | {length} | {mode} | {row['windows_per_text']:.2f} | {long} | "
            f"{_cell(neural[first])} | {_cell(neural['macro_f1'])} | "
            f"{lexical} |"
        )
    lines += ["", "Extraction of all the texts once per setting (2 threads, idle machine):", ""]
    lines += ["| setting | texts | tokens | seconds |", "| --- | ---: | ---: | ---: |"]
    for key, e in data["extraction"].items():
        lines.append(f"| {key} | {e['texts']:,} | {e['tokens']:,} | {e['seconds']:.0f} |")
    lines += ["", "Re-run: `python benchmarks/scripts/chunking.py --reuters-dir DIR`.", ""]
    return lines


def side_sections(folder: Path) -> list[str]:
    """Markdown lines of every side study whose JSON file is in ``folder``."""
    lines: list[str] = []
    for name, render in (("multilabel.json", multilabel_lines), ("chunking.json", chunking_lines)):
        path = folder / name
        if path.is_file():
            lines += render(json.loads(path.read_text()))
    return lines
