"""The benchmark table: ours, LLMEmbed as published, ablations and peers on the five datasets.

Runs `llmembed reproduce` (logic in src/llmembed/reproduce.py; options in src/llmembed/cli.py).
Resumable: one JSON record per (dataset, method, seed) under results/runs/; a rerun skips the
records that exist.

    python benchmarks/reproduce.py --quick                      # one dataset subset, < 5 min
    python benchmarks/reproduce.py                              # the full table (hours on CPU)
    python benchmarks/reproduce.py --datasets r8 --methods ours,peers --seeds 3
    python benchmarks/reproduce.py --report-only                # docs/results.md + plots
"""

import sys

from llmembed.cli import app

if __name__ == "__main__":
    app(["reproduce", *sys.argv[1:]])
