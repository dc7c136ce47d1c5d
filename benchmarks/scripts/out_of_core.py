"""Training from features on disk (``LLMEmbedClassifier(out_of_core=...)``) measured: memory
that stays flat as the training set grows, and the same model as training in memory.

    python benchmarks/scripts/out_of_core.py memory --n 100000,1000000
    python benchmarks/scripts/out_of_core.py fill --n 1000000
    python benchmarks/scripts/out_of_core.py predict --n 1000000
    python benchmarks/scripts/out_of_core.py equivalence --dataset sst2 --recipes cpu \
        --cache-dir ~/.cache/llmembed/embeddings/reproduce/sst2

``memory``: a small random BERT (4 layers, width 256) gives the backbone spec (its last 4
layers, so 4 x 256 floats = 4 KiB per text, as for a 768-wide encoder's 1-2 layers), and
``--n`` synthetic feature rows with a learnable binary label are stored in a fresh embedding
cache under its fingerprint, as ``llmembed cache import`` stores a Ray run's shards; the texts
are ``"doc <i>"``. Each fit (in memory, then streamed from disk) runs in its own process, from
the cache: linear head with one C (no grid), 100 L-BFGS iterations at most, no lexical
channel. The process's peak resident memory (``VmHWM``: ``ru_maxrss`` would report the
parent's size at fork) and wall time are recorded. With ``--workdir DIR`` the model and the
filled caches stay in ``DIR/llmembed-out-of-core`` and are reused by the next run.
``equivalence``: real data; each shipped recipe fits the dataset's training split in
memory and streamed (``--seeds``), from an embedding cache that already holds its features,
and is scored on the test split. ``fill``: how fast the cache stores ``--n`` such rows
(``EmbeddingCache.add``, what ``cache import`` runs). ``predict``: a model fitted on 100k of
those rows predicts all ``--n``; the peak memory of that call, in chunks and in one piece.
Results go to ``--output`` (default
benchmarks/results/out_of_core.json), one key per experiment.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from llmembed_bench.environment import run_meta

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "out_of_core.json"
SHAPE = (4, 256)  # the backbone's last 4 layers, width 256


def _spec(model: str) -> Any:
    from llmembed import BackboneSpec

    return BackboneSpec(model, layers="-4:", pooling="mean", dtype="float32", max_length=32)


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _synthetic_classifier(config: dict[str, Any], **params: Any) -> Any:
    """The classifier ``memory`` and ``predict`` fit on the synthetic rows: linear head, one C,
    100 L-BFGS iterations at most, no lexical channel."""
    from llmembed import LLMEmbedClassifier

    return LLMEmbedClassifier(
        backbones=[_spec(config["model"])],
        head={"fusion": "linear"},
        train={"C": 0.1, "max_iter": 100},
        lexical={"enabled": False},
        cache_dir=config["cache_dir"],
        verbose=False,
        threads=config["threads"],
        **params,
    )


def _child(config: dict[str, Any]) -> dict[str, Any]:
    """One run in this process, as ``memory`` / ``predict`` / ``equivalence`` ask: the fit
    (and predict), its scores and times, and the process's peak RSS."""
    from llmembed import LLMEmbedClassifier

    t0 = time.perf_counter()
    if config["kind"] == "memory":
        n = config["n"]
        texts = [f"doc {i}" for i in range(n)]
        labels = np.load(config["labels"])
        clf = _synthetic_classifier(config, out_of_core=config["out_of_core"])
        clf.fit(texts, labels)
        fit_s = time.perf_counter() - t0
        k = min(n, 20_000)  # training rows: that the model learned the rule, in both modes
        scores = {
            "fit_s": round(fit_s, 1),
            "train_accuracy": round(clf.score(texts[:k], labels[:k]), 4),
        }
    elif config["kind"] == "predict":
        import llmembed.classifier

        if config["chunk"]:
            llmembed.classifier.PREDICT_CHUNK = config["chunk"]
        texts = [f"doc {i}" for i in range(config["n"])]
        labels = np.load(config["labels"])
        clf = _synthetic_classifier(config)
        clf.fit(texts[:100_000], labels[:100_000])
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM: the predict's own peak
        t0 = time.perf_counter()
        accuracy = float(np.mean(clf.predict(texts) == labels))
        scores = {"predict_s": round(time.perf_counter() - t0, 1), "accuracy": round(accuracy, 4),
                  "chunk": llmembed.classifier.PREDICT_CHUNK}  # fmt: skip
    else:
        from llmembed.datasets import load_benchmark

        ds = load_benchmark(config["dataset"])
        clf = LLMEmbedClassifier(
            recipe=config["recipe"],
            train={"seed": config["seed"], **config.get("train", {})},
            cache_dir=config["cache_dir"],
            out_of_core=config["out_of_core"],
            verbose=False,
            threads=config["threads"],
        )
        clf.fit(ds.train_texts, ds.train_labels)
        fit_s = time.perf_counter() - t0
        scores = {
            "test_accuracy": round(100 * clf.score(ds.test_texts, ds.test_labels), 2),
            "fit_s": round(fit_s, 1),
        }
    return {
        **scores,
        "seconds": round(time.perf_counter() - t0, 1),
        "train_head_s": round(clf.timings_["train_head"], 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


def _run_child(config: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "_child", json.dumps(config)], capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(f"the fit failed ({config}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _backbone(work: Path) -> tuple[str, str, dict[str, Any]]:
    """The small random BERT of ``memory`` (made once in ``work``): its folder, fingerprint and
    description."""
    import torch
    from transformers import BertConfig, BertModel

    from llmembed import Backbone
    from llmembed.testing import make_tiny_bert

    model = str(work / "bert")
    if not (work / "bert" / "model.safetensors").exists():
        make_tiny_bert(work / "bert", layers=4)  # its tokenizer; a wider model:
        torch.manual_seed(0)
        vocab = BertConfig.from_pretrained(model).vocab_size
        config = BertConfig(vocab_size=vocab, hidden_size=256, num_hidden_layers=4,
                            num_attention_heads=4, intermediate_size=512)  # fmt: skip
        BertModel(config).save_pretrained(model)
    bb = Backbone(_spec(model), device="cpu")
    return model, bb.fingerprint(), bb.describe()


def _fill(
    cache_dir: Path, n: int, fingerprint: str, meta: dict[str, Any]
) -> tuple[np.ndarray, float]:
    """Store ``n`` synthetic rows for texts "doc <i>" in the cache; returns (labels, seconds)."""
    from llmembed import EmbeddingCache
    from llmembed.cache import text_key

    cache = EmbeddingCache(cache_dir)
    labels = np.empty(n, dtype=np.int64)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    step = 100_000
    for s in range(0, n, step):
        k = min(step, n - s)
        x = rng.normal(size=(k, *SHAPE)).astype(np.float32)
        labels[s : s + k] = (x[:, 0, 0] + x[:, 3, 1] + 0.5 * rng.normal(size=k)) > 0
        keys = [text_key(f"doc {i}") for i in range(s, s + k)]
        cache.add(fingerprint, keys, x, meta=meta)  # skips keys already there
    return labels, time.perf_counter() - t0


def fill(n: int, work: Path) -> dict[str, Any]:
    """How fast ``EmbeddingCache.add`` (what ``cache import`` runs) stores ``n`` rows."""
    _, fingerprint, meta = _backbone(work)
    cache_dir = work / f"fill-{n}"
    shutil.rmtree(cache_dir, ignore_errors=True)
    try:
        _, seconds = _fill(cache_dir, n, fingerprint, meta)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return {"rows": n, "row_bytes": 4 * int(np.prod(SHAPE)), "seconds": round(seconds, 1),
            "rows_per_s": round(n / seconds)}  # fmt: skip


def memory(ns: list[int], threads: int, work: Path) -> dict[str, Any]:
    model, fingerprint, meta = _backbone(work)
    runs: dict[str, Any] = {}
    for n in ns:
        cache_dir, labels_file = work / f"cache-{n}", work / f"labels-{n}.npy"
        row: dict[str, Any] = {"features_mb": round(n * 4 * int(np.prod(SHAPE)) / 2**20, 1)}
        if not labels_file.exists():  # written last: the cache is complete when it is there
            labels, seconds = _fill(cache_dir, n, fingerprint, meta)
            np.save(labels_file, labels)
            row["fill_s"] = round(seconds, 1)
            print(f"{n}: cache filled in {seconds:.0f} s", flush=True)
        for mode in (False, True):
            config = {"kind": "memory", "n": n, "model": model, "cache_dir": str(cache_dir),
                      "labels": str(labels_file), "out_of_core": mode,
                      "threads": threads}  # fmt: skip
            row["disk" if mode else "memory"] = result = _run_child(config)
            print(n, "disk" if mode else "memory", result, flush=True)
        runs[str(n)] = row
    small, big = runs[str(min(ns))], runs[str(max(ns))]
    return {
        "rows": runs,
        "shape": list(SHAPE),
        "threads": threads,
        "ratio_peak_rss_disk": round(big["disk"]["peak_rss_mb"] / small["disk"]["peak_rss_mb"], 3),
        "ratio_peak_rss_memory": round(
            big["memory"]["peak_rss_mb"] / small["memory"]["peak_rss_mb"], 3
        ),
    }


def predict(n: int, threads: int, work: Path) -> dict[str, Any]:
    """Peak memory of ``predict`` on ``n`` cached texts, in chunks (the default) and in one
    piece (the chunk set past ``n``: what predict did before it was chunked)."""
    model, fingerprint, meta = _backbone(work)
    cache_dir, labels_file = work / f"cache-{n}", work / f"labels-{n}.npy"
    if not labels_file.exists():
        labels, _ = _fill(cache_dir, n, fingerprint, meta)
        np.save(labels_file, labels)
    out: dict[str, Any] = {"rows": n}
    for name, chunk in (("chunked", None), ("one_piece", 10 * n)):
        config = {"kind": "predict", "n": n, "model": model, "cache_dir": str(cache_dir),
                  "labels": str(labels_file), "chunk": chunk, "threads": threads}  # fmt: skip
        out[name] = _run_child(config)
        print(name, out[name], flush=True)
    return out


def equivalence(
    dataset: str, recipes: list[str], seeds: list[int], cache_dir: str, threads: int,
    epochs: int | None,
) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {}
    for recipe in recipes:
        rows = []
        for seed in seeds:
            for mode in (False, True):
                config = {"kind": "equivalence", "dataset": dataset, "recipe": recipe,
                          "seed": seed, "cache_dir": cache_dir, "out_of_core": mode,
                          "threads": threads}  # fmt: skip
                if epochs is not None:
                    config["train"] = {"max_epochs": epochs, "patience": None}
                result = {"seed": seed, "mode": "disk" if mode else "memory", **_run_child(config)}
                print(recipe, result, flush=True)
                rows.append(result)
        out[recipe] = rows
    return {"dataset": dataset, "threads": threads, "max_epochs": epochs, "recipes": out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["memory", "equivalence", "fill", "predict", "_child"])
    p.add_argument("config", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--n", default="100000,1000000")
    p.add_argument("--dataset", default="sst2")
    p.add_argument("--recipes", default="cpu")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=None, help="MLP heads: fixed epochs")
    p.add_argument("--cache-dir", default=None, help="equivalence: a cache with the features")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=None, help="memory: scratch (not tmpfs)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUT)
    a = p.parse_args()
    if a.what == "_child":
        print(json.dumps(_child(json.loads(a.config))))
        return
    if a.what in ("memory", "fill", "predict"):
        work = a.workdir / "llmembed-out-of-core" if a.workdir else Path(tempfile.mkdtemp())
        work.mkdir(parents=True, exist_ok=True)
        ns = [int(x) for x in a.n.split(",")]
        try:
            if a.what == "memory":
                result = memory(ns, a.threads, work)
            elif a.what == "fill":
                result = fill(ns[-1], work)
            else:
                result = predict(ns[-1], a.threads, work)
        finally:
            if not a.workdir:
                shutil.rmtree(work, ignore_errors=True)
    else:
        result = equivalence(a.dataset, a.recipes.split(","), [int(s) for s in a.seeds.split(",")],
                             a.cache_dir, a.threads, a.epochs)  # fmt: skip
    result["_meta"] = run_meta(REPO)
    data = json.loads(a.output.read_text()) if a.output.exists() else {}
    data[a.what] = result
    a.output.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
