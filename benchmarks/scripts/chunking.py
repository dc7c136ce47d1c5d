"""Long documents: chunk-and-pool vs truncation at equal max_length, through the public API.

    python benchmarks/scripts/chunking.py [--reuters-dir DIR]

On R8 and R52 (official splits; their long tail is the long-document case of the five
benchmarks) and, with ``--reuters-dir``, Reuters-21578 ModApte (multi-label, the original
untruncated documents): ``LLMEmbedClassifier(recipe="cpu", backbones=[all-MiniLM-L6-v2, last
layer, mean pooling])`` at max_length 128 and 256, with ``long_texts`` "truncate" or "chunk"
(mean over windows, 25% overlap; max too at the shorter length; and both truncation and
chunk-mean, the model twice in the recipe, fused by the head), neural features only
(``lexical`` off, so that only the embedding changes) over 3 seeds; at 256 also with the
recipe's lexical channel (seed 0: it costs minutes per fit on these sets). Reports
accuracy and macro-F1 (ModApte: micro / macro F1), windows per text, and the extraction
seconds and tokens of all the texts once per setting (2 threads, nothing else running; use an
empty --cache-dir so that every setting is computed). Every choice (C, thresholds) is made on
the training split.
Writes benchmarks/results/chunking.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from llmembed import Backbone, BackboneSpec, EmbeddingCache, LLMEmbedClassifier, load_recipe
from llmembed.datasets import load_benchmark
from llmembed_bench.environment import run_meta
from llmembed_bench.jsonio import seed_summary, write_json
from llmembed_bench.multilabel_data import load_reuters_modapte

REPO = Path(__file__).resolve().parents[2]
CHUNK = {"long_texts": "chunk"}
MODES = {  # one settings dict per backbone of the recipe
    "truncate": [{}],
    "chunk-mean": [CHUNK],
    "chunk-max": [{**CHUNK, "chunk_pooling": "max"}],
    # both: the same model twice in the recipe, the head fusing the lead and the whole text
    "truncate+chunk-mean": [{}, CHUNK],
}


def _stats(rows: list[dict]) -> dict:
    return seed_summary(rows, [k for k in rows[0] if k != "seed"]) | {"seeds": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reuters-dir", default=None)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--lengths", default="128,256")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--modes", default="truncate,chunk-mean,chunk-max,truncate+chunk-mean")
    p.add_argument("--output", type=Path, default=REPO / "benchmarks/results/chunking.json")
    p.add_argument("--add", action="store_true", help="keep --output's results, add these")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    sets = {}
    for name in ("r8", "r52"):
        ds = load_benchmark(name)
        sets[name] = (ds.train_texts, ds.train_labels, ds.test_texts, ds.test_labels)
    if a.reuters_dir:
        d = load_reuters_modapte(a.reuters_dir)
        sets["modapte"] = (d.train_texts, d.train_labels, d.test_texts, d.test_labels)
    recipe = load_recipe("cpu")
    cache = EmbeddingCache(a.cache_dir)
    out: dict = {"model": a.model, "extraction": {}, "results": {}}
    if a.add and a.output.is_file():
        out = json.loads(a.output.read_text())
    every = list(dict.fromkeys(t for tr_x, _, te_x, _ in sets.values() for t in tr_x + te_x))
    lengths = [int(x) for x in a.lengths.split(",")]
    for length in lengths:
        for mode in a.modes.split(","):
            if mode == "chunk-max" and length != min(lengths):
                continue  # max pooling at the shortest length only (the costliest study)
            specs = [
                BackboneSpec(a.model, layers="-1", pooling="mean", max_length=length, **extra)
                for extra in MODES[mode]
            ]
            if len(specs) == 1:  # combinations reuse their parts' cached embeddings
                bb = Backbone(specs[0])
                t0 = time.perf_counter()
                cache.embed(bb, every, progress=False)  # timed once; the fits read the cache
                out["extraction"][f"{length} {mode}"] = {
                    "texts": len(every),
                    "computed": cache.last_misses,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "tokens": int(sum(bb.token_counts(every))),
                }
                print(length, mode, out["extraction"][f"{length} {mode}"], flush=True)
            for name, (tr_x, tr_y, te_x, te_y) in sets.items():
                windows = Backbone(specs[-1]).count_windows(tr_x + te_x)
                row: dict = {
                    "windows_per_text": round(float(windows.mean()), 3),
                    "long_share": round(float((windows > 1).mean()), 3),
                }
                lexical = [False, True] if length == max(lengths) else [False]
                for lex in lexical:
                    runs = []
                    for seed in seeds[:1] if lex else seeds:  # the lexical channel: 1 seed
                        clf = LLMEmbedClassifier(
                            recipe=recipe,
                            backbones=specs,
                            lexical={"enabled": lex},
                            train={"seed": seed},
                            cache_dir=a.cache_dir,
                            verbose=False,
                        ).fit(tr_x, tr_y)
                        m = clf.evaluate(te_x, te_y)
                        first = "micro_f1" if name == "modapte" else "accuracy"
                        runs.append({first: m[first], "macro_f1": m["macro_f1"]})
                    row["with lexical" if lex else "neural only"] = _stats(runs)
                key = f"{name} {length} {mode}"
                out["results"][key] = row
                print(key, row, flush=True)
    out["_meta"] = run_meta(REPO, threads="library default (2 on this idle machine)")
    write_json(a.output, out)
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
