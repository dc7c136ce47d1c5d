"""docs/results.md's side-study sections, rendered from their JSON files."""

from __future__ import annotations

import json

from llmembed_bench.side_results import side_sections

MULTILABEL = {
    "data": {"train": 7770, "test": 3019, "categories": 90, "label_cardinality_train": 1.2336,
             "multi_label_share_train": 0.1534},
    "methods": {
        "tfidf-svm": {"micro_f1": 0.8538, "macro_f1": 0.3781, "samples_f1": 0.8514,
                      "subset_accuracy": 0.7976, "hamming_loss": 0.0037},
        "ours:minilm-l6": {k: {"mean": v, "std": 0.002} for k, v in (
            ("micro_f1", 0.881), ("macro_f1", 0.553), ("samples_f1", 0.914),
            ("subset_accuracy", 0.825), ("hamming_loss", 0.0033))},
    },
}  # fmt: skip
CHUNKING = {
    "model": "minilm-l6",
    "extraction": {"128 truncate": {"texts": 10, "tokens": 1000, "seconds": 3.0}},
    "results": {
        "r8 128 truncate": {"windows_per_text": 1.0, "long_share": 0.0,
                            "neural only": {"accuracy": {"mean": 0.9653, "std": 0.0011},
                                            "macro_f1": {"mean": 0.9153, "std": 0.0023}}},
        "r8 128 chunk-mean": {"windows_per_text": 1.57, "long_share": 0.265,
                              "neural only": {"accuracy": {"mean": 0.97, "std": 0.001},
                                              "macro_f1": {"mean": 0.92, "std": 0.002}},
                              "with lexical": {"accuracy": {"mean": 0.975, "std": 0.0}}},
    },
}  # fmt: skip


def test_sections_render_each_json_file_present(tmp_path):
    assert side_sections(tmp_path) == []
    (tmp_path / "multilabel.json").write_text(json.dumps(MULTILABEL))
    (tmp_path / "chunking.json").write_text(json.dumps(CHUNKING))
    text = "\n".join(side_sections(tmp_path))
    assert "| `tfidf-svm` | 85.38 | 37.81 | 85.14 | 79.76 | 0.0037 |" in text
    assert "| `ours:minilm-l6` | 88.10 ± 0.20 | 55.30 ± 0.20 |" in text
    assert "| r8 | 128 | truncate | 1.00 | - | 96.53 ± 0.11 | 91.53 ± 0.23 | - |" in text
    assert "| r8 | 128 | chunk-mean | 1.57 | 26.5% | 97.00 ± 0.10 | 92.00 ± 0.20 | 97.50 |" in text
    assert "| 128 truncate | 10 | 1,000 | 3 |" in text


def test_seed_summary_is_mean_and_population_std():
    from llmembed_bench.jsonio import seed_summary

    rows = [{"seed": 0, "acc": 0.9, "f1": 0.81234}, {"seed": 1, "acc": 0.8, "f1": 0.71234}]
    assert seed_summary(rows, ["acc", "f1"]) == {
        "acc": {"mean": 0.85, "std": 0.05},
        "f1": {"mean": 0.7623, "std": 0.05},
    }
    assert seed_summary(rows, ["f1"], digits=None)["f1"]["mean"] == (0.81234 + 0.71234) / 2
