"""Expected calibration error before / after temperature scaling on the five benchmarks, with
the default recipe (one seed), through the public API.

    python benchmarks/scripts/calibration.py --cache-root ~/.cache/llmembed/embeddings/reproduce

For each dataset: fit ``LLMEmbedClassifier(recipe="cpu")`` on the train split, evaluate on the
test split, report accuracy, ``ece`` (calibrated: the temperature fitted on the held-out rows of
training) and ``ece_uncalibrated`` (temperature 1, the same model). AG News has only its test
split here: a stratified 80 / 20 split of it stands in (one fold of the harness's 5-fold
fallback). ``--cache-root/<group>`` is the embedding cache of each dataset group (the
harness's layout), so warm caches make this a few minutes. Writes
benchmarks/results/calibration.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from sklearn.model_selection import train_test_split

from llmembed import LLMEmbedClassifier
from llmembed.datasets import load_benchmark
from llmembed_bench.tasks import cache_group

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", default="sst2,mr,agnews,r8,r52")
    p.add_argument("--cache-root", type=Path, default=None)
    p.add_argument("--output", type=Path, default=REPO / "benchmarks/results/calibration.json")
    a = p.parse_args()
    out = {}
    for name in a.datasets.split(","):
        ds = load_benchmark(name)
        if ds.train_texts:
            train, test = (ds.train_texts, ds.train_labels), (ds.test_texts, ds.test_labels)
        else:
            tr_x, te_x, tr_y, te_y = train_test_split(
                ds.test_texts, ds.test_labels, test_size=0.2, random_state=0,
                stratify=ds.test_labels,
            )  # fmt: skip
            train, test = (tr_x, tr_y), (te_x, te_y)
        cache = a.cache_root / cache_group(name) if a.cache_root else None
        t0 = time.perf_counter()
        clf = LLMEmbedClassifier(recipe="cpu", cache_dir=cache, verbose=False).fit(*train)
        m = clf.evaluate(*test)
        out[name] = {
            "n_train": len(train[0]),
            "n_test": len(test[0]),
            "accuracy": round(m["accuracy"], 4),
            "ece_uncalibrated": round(m["ece_uncalibrated"], 4),
            "ece": round(m["ece"], 4),
            "temperature": round(m["temperature"], 3),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(name, out[name], flush=True)
    out["_meta"] = {"measured": time.strftime("%Y-%m-%d %H:%M"), "recipe": "cpu", "seed": 0,
                    "loadavg": os.getloadavg()[0]}  # fmt: skip
    a.output.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
