"""Extraction throughput: llmembed vs sentence-transformers vs the published fixed-padding code.

One process, the same texts for every method: SST-2 dev (short sentences) and a sample of R8
training documents (long ones). For each model of the CPU default recipe it reports texts/s, real
(non-pad) tokens/s, peak memory and model-FLOP utilization:

    MFU = 2 x non-embedding parameters run x real tokens / seconds / matmul peak

where "parameters run" counts the transformer blocks a method actually executes (ours stops after
the deepest requested layer; the baselines run the whole model), and the peak is a
2048x2048x2048 matmul in the dtype the method ran in (bf16 or fp32), timed at the start and at
the end of the same run (the higher of the two: the speed of a shared machine drifts).
Attention FLOPs are not counted (as usual for MFU), so MFU slightly understates the work done on
long inputs.

On a CPU without native bf16 matmul (no avx512_bf16 / AMX: e.g. AVX2-only Zen 3 or older
Intel) bf16 takes an emulated path (on a 2-core Zen 3: a 2048^3 torch.mm 58 s against 0.1 s in
fp32, linear layers 7.6x slower). There ours runs fp32 (dtype auto), the bf16 peak is not
timed and st-bf16 is skipped.

Methods:
  ours       llmembed.Backbone with the recipe's layers / pooling / max_length, default settings
             (dtype auto = bf16 on bf16 CPUs, token-budget batches, early stop).
  st         sentence_transformers.SentenceTransformer(folder).encode(texts) with its defaults
             (batch 32, length-sorted) in fp32 (model_kwargs={"dtype": torch.float32}: its
             default for the fp32 encoders; SmolLM2's checkpoint is bf16 and is cast up),
             max_seq_length set to the recipe's max_length. Skipped if the package is missing.
  st-bf16    the same with bf16 weights (model_kwargs={"dtype": torch.bfloat16}): the fair
             comparison with ours' bf16 on bf16 CPUs; skipped on CPUs without native bf16.
  published  the LLMEmbed paper's rep_extract.py on CPU: fixed padding to max_length, a fixed
             batch size (its per-dataset values), fp32, output_hidden_states=True, plain mean
             over every position of the requested layers. Its per-batch cost does not depend on
             the texts (every batch is batch x max_length tokens), so it is timed on whole
             batches from the start of the same texts until --published-seconds have passed.

    llmembed-bench extract            # full run (~8 min on 2 cores)
    llmembed-bench extract --quick    # smoke run (~1 min)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import random
import shlex
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmembed.backbones import Backbone, BackboneSpec
from llmembed.datasets import load_benchmark
from llmembed.hardware import cpu_has_bf16
from llmembed.recipes import load_recipe

from .environment import machine_info

MODELS = ("minilm-l6", "mpnet-base", "smollm2-135m", "embeddinggemma-300m")
METHODS = ("ours", "st", "st-bf16", "published")
# The published rep_extract.py settings (LLaMA-2 script): max_len and batch ("step") per dataset.
PUBLISHED = {"sst2": (128, 90), "r8": (1024, 10)}


# ------------------------------------------------------------------------------ measurement


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """Best GFLOP/s of an n x n x n matmul over ~`seconds` of repetitions."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        torch.mm(a, b)
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def matmul_peaks() -> dict[str, float]:
    """The matmul peak (GFLOP/s) of float32, and of bfloat16 on a CPU with native bf16."""
    peaks = {"float32": matmul_peak(torch.float32, seconds=1.0)}
    if cpu_has_bf16():
        peaks["bfloat16"] = matmul_peak(torch.bfloat16)
    return peaks


def _trim() -> None:
    """Give freed memory back to the OS so the next RSS baseline is honest."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 5 ms in a thread."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.base = self.peak = 0

    def __enter__(self) -> PeakRSS:
        _trim()
        self.base = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


def nonembedding_params(model: torch.nn.Module) -> int:
    embedding = sum(
        p.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.Embedding)
        for p in m.parameters(recurse=False)
    )
    return sum(p.numel() for p in model.parameters()) - embedding


def block_params(bb: Backbone) -> list[int]:
    return [sum(p.numel() for p in blk.parameters()) for blk in bb.blocks]


@dataclass
class Result:
    model: str
    dataset: str
    method: str
    n_texts: int = 0
    real_tokens: int = 0
    seconds: float = 0.0
    params_run: int = 0
    peak_mb: float = 0.0
    dtype: str = ""
    settings: str = ""
    skipped: str = ""

    def row(self, peaks: dict[str, float]) -> dict[str, Any]:
        """The result as a dict, with rates and MFU against ``peaks[dtype]`` (GFLOP/s by dtype
        name, e.g. ``{"float32": 190.0}``; no MFU for a dtype without a peak)."""
        d = dict(self.__dict__)
        if not self.skipped and self.seconds > 0:
            d["texts_per_s"] = self.n_texts / self.seconds
            d["tokens_per_s"] = self.real_tokens / self.seconds
            d["gflops"] = 2 * self.params_run * self.real_tokens / self.seconds / 1e9
            peak = peaks.get(self.dtype)
            d["mfu"] = d["gflops"] / peak if peak else None
        return d


# ------------------------------------------------------------------------------ the methods


def real_tokens(tokenizer: Any, texts: list[str], max_length: int) -> int:
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return sum(len(x) for x in ids)


def run_ours(spec: BackboneSpec, texts: list[str], ds: str) -> tuple[Result, Backbone]:
    res = Result(spec.model, ds, "ours")
    with PeakRSS() as mem:
        bb = Backbone(spec, device="cpu").load()
        bb.embed(texts[:16], progress=False)  # warm-up (one-time costs), not timed
        t = time.perf_counter()
        bb.embed(texts, progress=False)
        res.seconds = time.perf_counter() - t
    skipped = block_params(bb)[max(bb.layer_indices) :]
    last = bb.num_hidden_states - 1 in bb.layer_indices
    res.params_run = nonembedding_params(bb.model) - (0 if last else sum(skipped))
    res.n_texts, res.peak_mb = len(texts), mem.mb
    res.real_tokens = real_tokens(bb.tokenizer, texts, spec.max_length)
    res.dtype = str(bb.compute_dtype).replace("torch.", "")
    res.settings = (
        f"layers {bb.layer_indices}, {spec.pooling}, max_length {spec.max_length}, "
        f"token_budget {bb.token_budget}"
    )
    return res, bb


def run_st(
    spec: BackboneSpec,
    folder: str,
    texts: list[str],
    ds: str,
    n_params: int,
    n_tokens: int,
    bf16: bool = False,
) -> Result:
    """sentence-transformers ``encode`` with its defaults, in fp32, or with bf16 weights
    (``model_kwargs={"dtype": torch.bfloat16}``) when ``bf16``; a bf16 run is skipped on a CPU
    without native bf16 matmul, where it would take the emulated path."""
    res = Result(spec.model, ds, "st-bf16" if bf16 else "st")
    if bf16 and not cpu_has_bf16():
        res.skipped = "this CPU has no native bf16 matmul (avx512_bf16 / AMX); ours runs fp32"
        return res
    try:
        import sentence_transformers
        from sentence_transformers import SentenceTransformer
    except ImportError:
        res.skipped = "sentence-transformers is not installed (pip install -e 'benchmarks[peers]')"
        return res
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    with PeakRSS() as mem:
        dtype = torch.bfloat16 if bf16 else torch.float32
        st = SentenceTransformer(folder, device="cpu", model_kwargs={"dtype": dtype})
        st.max_seq_length = spec.max_length
        if st.tokenizer.pad_token is None:  # GGUF-derived tokenizers have none
            st.tokenizer.pad_token = st.tokenizer.eos_token
        st.encode(texts[:16], show_progress_bar=False)  # warm-up, not timed
        t = time.perf_counter()
        st.encode(texts, show_progress_bar=False)
        res.seconds = time.perf_counter() - t
    res.n_texts, res.peak_mb, res.params_run = len(texts), mem.mb, n_params
    res.real_tokens = n_tokens
    res.dtype = str(next(st.parameters()).dtype).replace("torch.", "")
    res.settings = (
        f"sentence-transformers {sentence_transformers.__version__}, encode() defaults "
        f"(batch 32), max_seq_length {spec.max_length}, full model"
    )
    return res


def run_published(
    spec: BackboneSpec,
    folder: str,
    texts: list[str],
    ds: str,
    n_params: int,
    layers: list[int],
    seconds: float,
) -> Result:
    from transformers import AutoModel, AutoTokenizer

    max_len, step = PUBLISHED[ds]
    max_len = min(max_len, spec.max_length)
    res = Result(spec.model, ds, "published")
    with PeakRSS() as mem:
        tok = AutoTokenizer.from_pretrained(folder)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "right"
        model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()

        def batch(part: list[str]) -> torch.Tensor:
            enc = tok(
                part,
                return_tensors="pt",
                max_length=max_len,
                padding="max_length",
                truncation=True,
            )
            with torch.no_grad():
                hs = model(**enc, output_hidden_states=True).hidden_states
                return torch.stack([torch.mean(hs[i], dim=1) for i in layers], dim=1)

        batch(texts[: min(step, 4)])  # warm-up, not timed
        done, t = 0, time.perf_counter()
        while done < len(texts) and (done == 0 or time.perf_counter() - t < seconds):
            part = texts[done : done + step]
            batch(part)
            done += len(part)
        res.seconds = time.perf_counter() - t
    res.n_texts, res.peak_mb, res.params_run = done, mem.mb, n_params
    res.real_tokens = real_tokens(tok, texts[:done], max_len)
    res.dtype = "float32"
    res.settings = (
        f"padding to max_length {max_len}, batch {step}, fp32, all hidden states; "
        f"timed on the first {done} texts"
    )
    return res


def run_model(
    spec: BackboneSpec,
    ds: str,
    texts: list[str],
    methods: list[str],
    published_seconds: float = 15.0,
) -> list[Result]:
    """Every method of `methods` on one model and one text sample, one after the other."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; known: {', '.join(METHODS)}")
    ours, bb = run_ours(spec, texts, ds)  # always run: it gives the parameter and token counts
    full, layers, folder = nonembedding_params(bb.model), list(bb.layer_indices), bb.reference
    del bb
    out = [ours] if "ours" in methods else []
    for method in ("st", "st-bf16"):
        if method in methods:
            bf16 = method == "st-bf16"
            out.append(run_st(spec, folder, texts, ds, full, ours.real_tokens, bf16))
    if "published" in methods:
        out.append(run_published(spec, folder, texts, ds, full, layers, published_seconds))
    _trim()
    return out


_CATEGORIES = (
    ("matmul (linear layers)", ("aten::mm", "aten::addmm", "aten::_addmm_activation")),
    (
        "attention",
        (
            "aten::_scaled_dot_product_flash_attention_for_cpu",
            "aten::_scaled_dot_product_attention_math",
            "aten::bmm",
            "aten::baddbmm",
            "aten::_softmax",
            "aten::softmax",
        ),
    ),
    (
        "norms, activations, rotary, residuals",
        (
            "aten::mul",
            "aten::add",
            "aten::add_",
            "aten::silu",
            "aten::gelu",
            "aten::pow",
            "aten::mean",
            "aten::rsqrt",
            "aten::neg",
            "aten::cat",
            "aten::native_layer_norm",
            "aten::tanh",
            "aten::div",
            "aten::sub",
            "aten::where",
            "aten::embedding",
            "aten::index_select",
            "aten::sin",
            "aten::cos",
        ),
    ),
    ("dtype casts and copies", ("aten::copy_", "aten::_to_copy", "aten::clone")),
    ("pooling", ("aten::einsum", "aten::sum", "aten::div_", "aten::stack", "aten::index")),
)


def profile_ours(spec: BackboneSpec, texts: list[str]) -> dict[str, float]:
    """Where the time of one `Backbone.embed` goes, in seconds per category.

    Self time of each torch op on the calling thread (so multi-threaded kernels count once);
    what no op accounts for is tokenization, padding and Python between the ops.
    """
    from torch.profiler import ProfilerActivity, profile

    bb = Backbone(spec, device="cpu").load()
    bb.embed(texts[:16], progress=False)
    t_tok = time.perf_counter()
    bb.tokenize(list(texts))
    tokenize = time.perf_counter() - t_tok
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        bb.embed(texts, progress=False)
        wall = time.perf_counter() - t
    out = dict.fromkeys([name for name, _ in _CATEGORIES], 0.0)
    out["other ops"] = 0.0
    for ev in prof.key_averages():
        sec = ev.self_cpu_time_total / 1e6
        for name, ops in _CATEGORIES:
            if ev.key in ops:
                out[name] += sec
                break
        else:
            out["other ops"] += sec
    out["tokenization (measured alone)"] = tokenize
    out["python, padding, hooks (rest)"] = max(0.0, wall - sum(out.values()))
    out["wall (profiled run)"] = wall
    return out


def end_to_end(
    n_train: int | None, recipe: str = "cpu", seed: int = 0, cache_dir: Path | None = None
) -> dict[str, Any]:
    """SST-2 train (+ dev as test) with a recipe: fit + evaluate, cold cache then warm cache.

    n_train: stratified subset of the 67,349 training sentences (None = all). Timings per stage
    come from the classifier; the cold run starts from an empty cache: a temporary one, or
    `cache_dir`, which must be empty or missing and is kept (its embeddings can be reused).
    """
    import contextlib
    import tempfile

    from llmembed.classifier import LLMEmbedClassifier

    if cache_dir is not None and cache_dir.exists() and any(cache_dir.iterdir()):
        raise SystemExit(f"--e2e-cache {cache_dir} is not empty: the cold run needs an empty one")
    data = load_benchmark("sst2")
    if n_train:
        data = data.subsample(n_train, None, seed=seed)
    out: dict[str, Any] = {"recipe": recipe, "n_train": len(data.train_texts)}
    out["n_test"] = len(data.test_texts)
    folder = (
        contextlib.nullcontext(str(cache_dir))
        if cache_dir is not None
        else tempfile.TemporaryDirectory(prefix="llmembed-bench-")
    )
    with folder as cache:
        for run in ("cold", "warm"):
            t = time.perf_counter()
            clf = LLMEmbedClassifier(recipe, cache_dir=cache, verbose=False)
            clf.fit(data.train_texts, data.train_labels)
            fit_timings = dict(clf.timings_)
            t_eval = time.perf_counter()
            metrics = clf.evaluate(data.test_texts, data.test_labels)
            total = time.perf_counter() - t
            out[run] = {
                "seconds": total,
                "fit": {k: round(v, 2) for k, v in fit_timings.items()},
                "evaluate_seconds": time.perf_counter() - t_eval,
                "best_epoch": clf.best_epoch_,
                "accuracy": metrics["accuracy"],
            }
            print(f"end-to-end {run}: {total:.1f} s {out[run]}", flush=True)
    return out


# ------------------------------------------------------------------------------ driver


def machine() -> dict[str, Any]:
    return {
        **machine_info(),
        "torch": torch.__version__,
        "load_average_at_start": os.getloadavg(),
    }


def load_texts(n_sst2: int | None, n_r8: int, seed: int = 0) -> dict[str, list[str]]:
    sst2 = load_benchmark("sst2").test_texts
    r8 = load_benchmark("r8").train_texts
    rng = random.Random(seed)
    return {
        "sst2": sst2[:n_sst2] if n_sst2 else list(sst2),
        "r8": rng.sample(list(r8), n_r8),
    }


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def fmt_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'model':<13} {'data':<5} {'method':<10} {'dtype':<9} {'texts':>6} {'texts/s':>8} "
        f"{'tok/s':>8} {'MFU':>6} {'peak MB':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["skipped"]:
            skip = f"skipped: {r['skipped']}"
            lines.append(f"{r['model']:<13} {r['dataset']:<5} {r['method']:<10} {skip}")
            continue
        lines.append(
            f"{r['model']:<13} {r['dataset']:<5} {r['method']:<10} {r['dtype']:<9} "
            f"{r['n_texts']:>6} {r['texts_per_s']:>8.1f} {r['tokens_per_s']:>8.0f} "
            f"{_percent(r['mfu']):>6} {r['peak_mb']:>8.0f}"
        )
    return "\n".join(lines)


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["model"], r["dataset"], r["method"]): r for r in rows if not r["skipped"]}
    out = []
    for (model, ds, method), r in by.items():
        if method != "ours":
            continue
        for other in ("st", "st-bf16", "published"):
            o = by.get((model, ds, other))
            if o:
                out.append(
                    {
                        "model": model,
                        "dataset": ds,
                        "vs": other,
                        "texts_per_s_ratio": r["texts_per_s"] / o["texts_per_s"],
                    }
                )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small samples: a smoke run (~1 min)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--datasets", default="sst2,r8")
    p.add_argument("--n-sst2", type=int, default=0, help="SST-2 dev sentences (0 = all 872)")
    p.add_argument("--n-r8", type=int, default=300, help="R8 training documents sampled")
    p.add_argument("--published-seconds", type=float, default=15.0)
    p.add_argument("--recipe", default="cpu-fusion", help="recipe giving layers/pooling/max_length")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--profile", action="store_true", help="also profile ours (torch.profiler)")
    p.add_argument(
        "--e2e",
        type=int,
        default=-1,
        help="also time SST-2 fit+evaluate with the recipe, cold then warm cache, on N "
        "stratified training sentences (0 = all 67,349); -1 = skip",
    )
    p.add_argument(
        "--e2e-cache",
        type=Path,
        default=None,
        help="embedding cache for --e2e (empty or missing; kept afterwards; default: temporary)",
    )
    p.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/throughput.json"))
    raw = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(raw)
    if args.quick:
        args.n_sst2, args.n_r8, args.published_seconds = args.n_sst2 or 200, 60, 3.0
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

    recipe = {s.model: s for s in load_recipe(args.recipe).backbones}
    texts = load_texts(args.n_sst2 or None, args.n_r8)
    info = machine()
    t_start = time.perf_counter()
    peaks = matmul_peaks()
    print(
        ", ".join(f"{k} matmul peak {v:.0f} GFLOP/s" for k, v in peaks.items())
        + ("" if cpu_has_bf16() else " (no native bf16 on this CPU: ours runs float32)")
        + f" ({info['torch_threads']} threads, "
        f"load average {info['load_average_at_start'][0]:.2f})",
        flush=True,
    )

    results: list[Result] = []
    methods = args.methods.split(",")
    for model in [m for m in args.models.split(",") if m]:
        spec = recipe.get(model) or BackboneSpec(model)
        spec = BackboneSpec(model, spec.layers, spec.pooling, spec.max_length)
        for ds in args.datasets.split(","):
            for r in run_model(spec, ds, texts[ds], methods, args.published_seconds):
                results.append(r)  # MFU printed against the start's peak; saved against both
                print(fmt_table([r.row(peaks)]).splitlines()[-1], flush=True)
    profiles = {}
    if args.profile:
        for model in [m for m in args.models.split(",") if m]:
            spec = recipe.get(model) or BackboneSpec(model)
            spec = BackboneSpec(model, spec.layers, spec.pooling, spec.max_length)
            for ds in args.datasets.split(","):
                prof = profile_ours(spec, texts[ds])
                profiles[f"{model}/{ds}"] = prof
                print(
                    f"profile {model}/{ds}: "
                    + ", ".join(
                        f"{k} {100 * v / prof['wall (profiled run)']:.0f}%"
                        for k, v in prof.items()
                        if not k.startswith("wall")
                    ),
                    flush=True,
                )
    e2e = (
        end_to_end(args.e2e or None, args.recipe, cache_dir=args.e2e_cache)
        if args.e2e >= 0
        else None
    )
    peaks_end = matmul_peaks()
    best = {k: max(v, peaks_end.get(k, 0.0)) for k, v in peaks.items()}
    rows = [r.row(best) for r in results]
    result = {
        "profiles": profiles,
        "end_to_end": e2e,
        "command": shlex.join(["llmembed-bench", "extract", *raw]),
        "machine": info,
        "bf16_matmul_peak_gflops": best.get("bfloat16"),
        "fp32_matmul_peak_gflops": best["float32"],
        "matmul_peaks_gflops": {"start": peaks, "end": peaks_end},
        "wall_seconds": time.perf_counter() - t_start,
        "results": rows,
        "ratios": ratios(rows),
    }
    print()
    print(fmt_table(rows))
    for r in result["ratios"]:
        print(
            f"{r['model']:<13} {r['dataset']:<5} ours / {r['vs']:<10} "
            f"{r['texts_per_s_ratio']:6.1f}x texts/s"
        )
    print(
        "matmul peak (GFLOP/s) at the start / end: "
        + ", ".join(f"{k} {v:.0f} / {peaks_end[k]:.0f}" for k, v in peaks.items())
    )
    print(f"wall {result['wall_seconds']:.0f} s")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
