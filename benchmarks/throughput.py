"""Extraction throughput benchmark: llmembed vs sentence-transformers vs the published code.

The logic lives in ``llmembed.bench`` (so ``llmembed bench extract`` runs it too); see its
docstring for what is measured and how.

    python benchmarks/throughput.py [--quick] [-o benchmarks/results/throughput.json]
"""

from __future__ import annotations

from llmembed.bench import main

if __name__ == "__main__":
    main()
