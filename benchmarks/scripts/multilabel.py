"""Multi-label on real data: Reuters-21578 ModApte (90 categories), ours vs the standard peers.

    python benchmarks/scripts/multilabel.py --reuters-dir DIR [--backbones minilm-l6,mpnet-base]

DIR holds the 22 original ``reut2-*.sgm`` files (no package registry has them; see
``llmembed_bench.multilabel_data``). Methods, all trained on the 7,770 training documents and
scored on the 3,019 test documents; every choice on a 10% validation split of training:

- ``tfidf-svm``: TF-IDF word 1-2-grams (sublinear tf) + one-vs-rest ``LinearSVC``, C from
  (0.1, 1, 10) by validation micro-F1, a label when its score is > 0 (the classic baseline).
- ``lr:<backbone>``: one-vs-rest logistic regression (StandardScaler, C from (0.01 .. 10) by
  validation micro-F1, threshold 0.5) on the backbone's standard sentence embedding
  (its sentence-transformers pooling and normalization).
- ``ours:<backbone>``: ``LLMEmbedClassifier(recipe="cpu", backbones=[that embedding])`` on
  the label sets: the ``cpu`` recipe's linear head and lexical channel, one sigmoid per label,
  per-label thresholds tuned on its validation split; 3 seeds (the seed draws that split).
  Also reported from the same models: thresholds fixed at 0.5 (what tuning adds), and without
  the lexical channel (seed 0).

Writes benchmarks/results/multilabel.json; docs/results.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from llmembed import Backbone, EmbeddingCache, LLMEmbedClassifier, load_recipe
from llmembed.metrics import multilabel_metrics
from llmembed_bench.environment import run_meta
from llmembed_bench.jsonio import seed_summary, write_json
from llmembed_bench.multilabel_data import load_reuters_modapte
from llmembed_bench.peers import apply_post, standard_embedding_spec
from llmembed_bench.settings import LR_C, SVM_C, VAL_FRACTION

REPO = Path(__file__).resolve().parents[2]
KEYS = ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss")


def _summary(m: dict) -> dict:
    return {k: round(m[k], 4) for k in KEYS} | {
        "predicted_cardinality": round(m["predicted_cardinality"], 3)
    }


def _val_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(n)
    n_val = int(round(VAL_FRACTION * n))
    return np.sort(idx[n_val:]), np.sort(idx[:n_val])


def _ovr(make, x_tr, y_tr, x_te, grid, decide) -> tuple[np.ndarray, dict]:
    """One-vs-rest ``make(c)`` with c chosen on a validation split by micro-F1, refitted."""
    from sklearn.metrics import f1_score
    from sklearn.multiclass import OneVsRestClassifier

    fit, val = _val_split(len(y_tr), 0)
    scores = {}
    for c in grid:
        model = OneVsRestClassifier(make(c)).fit(x_tr[fit], y_tr[fit])
        scores[c] = float(f1_score(y_tr[val], decide(model, x_tr[val]), average="micro"))
    best = max(grid, key=lambda c: scores[c])
    t0 = time.perf_counter()
    model = OneVsRestClassifier(make(best)).fit(x_tr, y_tr)
    return decide(model, x_te), {
        "C": best,
        "val_micro_f1": scores,
        "fit_seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--reuters-dir", default=None, help="folder of reut2-*.sgm (or LLMEMBED_REUTERS21578)"
    )
    p.add_argument("--backbones", default="minilm-l6")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--output", type=Path, default=REPO / "benchmarks/results/multilabel.json")
    p.add_argument("--add", action="store_true", help="keep --output's methods, skip tfidf-svm")
    a = p.parse_args()
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MultiLabelBinarizer, StandardScaler
    from sklearn.svm import LinearSVC

    data = load_reuters_modapte(a.reuters_dir)
    mlb = MultiLabelBinarizer(classes=data.categories).fit(data.train_labels)
    y_tr, y_te = mlb.transform(data.train_labels), mlb.transform(data.test_labels)
    out: dict = {"data": data.info, "methods": {}}
    if a.add and a.output.is_file():  # add backbones to an earlier run's table
        out["methods"] = json.loads(a.output.read_text())["methods"]

    def report(name: str, pred: np.ndarray, extra: dict) -> None:
        out["methods"][name] = {
            **_summary(multilabel_metrics(y_te, pred, data.categories)),
            **extra,
        }
        print(name, out["methods"][name], flush=True)

    if not a.add:
        t0 = time.perf_counter()
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        x_tr, x_te = vec.fit_transform(data.train_texts), vec.transform(data.test_texts)
        pred, info = _ovr(
            lambda c: LinearSVC(C=c), x_tr, y_tr, x_te, SVM_C,
            lambda m, x: (m.decision_function(x) > 0).astype(int),
        )  # fmt: skip
        report("tfidf-svm", pred, {**info, "seconds": round(time.perf_counter() - t0, 1)})

    recipe = load_recipe("cpu")
    cache = EmbeddingCache(a.cache_dir)
    for model in a.backbones.split(","):
        spec, post = standard_embedding_spec(model, recipe)
        t0 = time.perf_counter()
        emb = cache.embed(Backbone(spec), data.train_texts + data.test_texts)[:, 0]
        extract = round(time.perf_counter() - t0, 1)
        x = apply_post(emb, post)
        xtr, xte = x[: len(y_tr)], x[len(y_tr) :]
        pred, info = _ovr(
            lambda c: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000)),
            xtr, y_tr, xte, LR_C, lambda m, x: (m.predict_proba(x) >= 0.5).astype(int),
        )  # fmt: skip
        report(f"lr:{model}", pred, {**info, "extract_seconds": extract, "spec": spec.to_dict()})
        runs, fixed = [], []
        for seed in [int(s) for s in a.seeds.split(",")]:
            t0 = time.perf_counter()
            clf = LLMEmbedClassifier(
                recipe=recipe, backbones=[spec], train={"seed": seed}, cache_dir=a.cache_dir,
                verbose=False,
            )  # fmt: skip
            clf.fit(data.train_texts, data.train_labels)
            proba = clf.predict_proba(data.test_texts)
            tuned = mlb.transform(clf.predict_from_proba(proba))
            runs.append(_summary(multilabel_metrics(y_te, tuned, data.categories)))
            runs[-1]["seconds"] = round(time.perf_counter() - t0, 1)
            fixed.append(
                _summary(multilabel_metrics(y_te, (proba >= 0.5).astype(int), data.categories))
            )
            print(f"ours:{model} seed {seed}", runs[-1], "thresholds 0.5:", fixed[-1], flush=True)
        for name, rows in ((f"ours:{model}", runs), (f"ours:{model} thresholds 0.5", fixed)):
            out["methods"][name] = seed_summary(rows, KEYS) | {"seeds": rows}
        clf = LLMEmbedClassifier(
            recipe=recipe, backbones=[spec], lexical={"enabled": False}, cache_dir=a.cache_dir,
            verbose=False,
        ).fit(data.train_texts, data.train_labels)  # fmt: skip
        report(f"ours:{model} no lexical", mlb.transform(clf.predict(data.test_texts)), {})
    out["_meta"] = run_meta(REPO)
    write_json(a.output, out)
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
