"""Report: docs/results.md from the records alone."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from llmembed.errors import LLMEmbedError
from llmembed.files import atomic_write_text
from llmembed.recipes import load_recipe

from .methods import PUBLISHED_LADDER, build_methods
from .peers import SETFIT_BATCH, SETFIT_ITERATIONS
from .plots import ablation_methods, order, plot_accuracy, plot_cost
from .records import load_records
from .settings import (
    ANCHOR_SOURCE,
    ANCHORS,
    DATASET_TITLES,
    DEFAULT_DATASETS,
    GROUP_ORDER,
    LR_C,
    PAPER_MAX_LENGTH,
    PUBLISHED_MAX_LENGTH,
    SEEDS,
    SETFIT_MAX_PAIRS,
    SVM_C,
    repo_root,
)
from .side_results import side_sections


def aggregate(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(dataset, method) -> means / stds over seeds of the reported figures. Only the records
    made with the newest settings of each (dataset, method) count (stale seeds are left out)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["method"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        newest = max(rs, key=lambda r: r.get("created", "")).get("config_hash")
        rs = sorted((r for r in rs if r.get("config_hash") == newest), key=lambda r: r["seed"])

        def stat(get, rs=rs):
            vals = [v for v in (get(r) for r in rs) if v is not None]
            if not vals:
                return None, None
            arr = np.asarray(vals, dtype=float)
            return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0

        agg = {
            "n_seeds": len(rs),
            "seeds": [r["seed"] for r in rs],
            "group": rs[-1]["group"],
            "label": rs[-1]["label"],
            "protocol": rs[-1]["protocol"],
            "quick": rs[-1].get("quick", False),
            "trainable_params": rs[-1].get("trainable_params"),
            "frozen_params": rs[-1].get("frozen_params"),
            "hyperparameters": [r.get("hyperparameters", {}) for r in rs],
            "validation": [r.get("validation", {}) for r in rs],
            "split": [r.get("split") for r in rs],
        }
        for name in ("accuracy", "macro_f1", "micro_f1", "positive_f1"):
            agg[name] = stat(lambda r, n=name: r["metrics"].get(n))
        for name in (
            "train_seconds",
            "selection_seconds",
            "infer_seconds_per_1000",
            "extract_seconds",
            "total_seconds",
        ):
            agg[name] = stat(lambda r, n=name: r.get(n))
        out[key] = agg
    return out


def _pct(ms: tuple[float | None, float | None], spread: bool = True) -> str:
    mean, std = ms
    if mean is None:
        return "–"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if spread else f"{100 * mean:.2f}"


def _acc(a: dict[str, Any]) -> str:
    """Accuracy cell: mean ± std, marked (n=k) when fewer than SEEDS seeds are in."""
    return _pct(a["accuracy"]) + (f" (n={a['n_seeds']})" if a["n_seeds"] < SEEDS else "")


def _secs(ms: tuple[float | None, float | None]) -> str:
    mean, _ = ms
    if mean is None:
        return "–"
    if mean >= 100:
        return f"{mean:,.0f}"
    return f"{mean:.1f}" if mean >= 1 else f"{mean:.2f}"


def _params(n: int | None) -> str:
    if n is None:
        return "–"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.0f}k"
    return str(n)


def _hp_summary(agg: dict[str, Any]) -> str:
    """Short description of the chosen hyperparameters over seeds (with validation scores)."""
    parts = []
    hps, vals = agg["hyperparameters"], agg["validation"]
    if hps and "C" in hps[0]:
        cs = [h.get("C") for h in hps]
        parts.append("C=" + "/".join(f"{c:g}" for c in cs))
    if hps and "layer" in hps[0]:
        parts.append("layer=" + "/".join(str(h.get("layer")) for h in hps))
    if hps and "best_epoch" in hps[0] and vals and vals[0].get("accuracy") is not None:
        parts.append("best epoch=" + "/".join(str(h.get("best_epoch")) for h in hps))
    elif hps and "epochs_run" in hps[0]:
        parts.append(f"epochs={hps[0].get('epochs_run')}")
    va = [v.get("accuracy") for v in vals if v.get("accuracy") is not None]
    if va:
        parts.append(f"val acc {100 * float(np.mean(va)):.2f}")
    return "; ".join(parts)


def write_report(results_dir: str | os.PathLike, docs_dir: str | os.PathLike) -> Path:
    """Regenerate `<docs_dir>/results.md` and `<docs_dir>/plots/*.png` from every record, with
    the side studies' sections from `<docs_dir>/../benchmarks/results/*.json` when there."""
    records = load_records(results_dir)
    docs = Path(docs_dir)
    name = "results.md"
    plots = docs / "plots"
    agg = aggregate(records)
    shown = Path(results_dir).resolve()
    with contextlib.suppress(LLMEmbedError, ValueError):  # the repository's path, not this disk's
        shown = shown.relative_to(repo_root())
    text = render_markdown(
        records, agg, plots_rel=plots.name, results_dir=shown,
        side=side_sections(docs.resolve().parent / "benchmarks" / "results"),
    )  # fmt: skip
    docs.mkdir(parents=True, exist_ok=True)
    if records:
        with contextlib.suppress(ImportError):
            plot_accuracy(agg, plots / "accuracy_by_method.png")
            plot_accuracy(
                agg,
                plots / "ablations.png",
                include=ablation_methods,
                title="Ours, the published configuration fixed step by step, and ablations",
            )
            plot_cost(agg, plots / "accuracy_vs_cost.png")
    out = docs / name
    atomic_write_text(out, text)  # two runs may regenerate the report at the same time
    return out


def _package_versions(records: list[dict]) -> dict[str, list[str]]:
    """Every package any record names, with the versions the records ran (sorted), in the
    order the records first name them: records made on different days may differ."""
    seen: dict[str, set[str]] = {}
    for r in records:
        for k, v in (r.get("packages") or {}).items():
            if v:
                seen.setdefault(k, set()).add(str(v))
    return {k: sorted(v) for k, v in seen.items()}


def _datasets_in(records) -> list[str]:
    present = {r["dataset"] for r in records}
    return [d for d in DEFAULT_DATASETS if d in present] + sorted(present - set(DEFAULT_DATASETS))


def coverage_lines(agg: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """What is still missing for the full table (SEEDS seeds of every method on every dataset)."""
    try:
        methods = build_methods(load_recipe("cpu-fusion"))
    except Exception:  # noqa: BLE001 - the report must not fail on this
        return []
    titles = {
        "ours": "ours",
        "peer": "peers",
        "published": "published ladder",
        "ablation": "ablations",
    }
    missing = []
    for d in DEFAULT_DATASETS:
        done = {m.name: agg[(d, m.name)]["n_seeds"] if (d, m.name) in agg else 0 for m in methods}
        todo = [m for m in methods if done[m.name] < SEEDS]
        if not todo:
            continue
        parts = []
        for group in GROUP_ORDER:
            ms = [m for m in todo if m.group == group]
            if not ms:
                continue
            total = sum(m.group == group for m in methods)
            names = ", ".join(
                f"`{m.name}`" + (f" ({done[m.name]}/{SEEDS})" if (d, m.name) in agg else "")
                for m in ms
            )
            parts.append(
                f"{titles[group]}: all {total}" if len(ms) == total and total > 3 else names
            )
        line = f"- {DATASET_TITLES.get(d, d)}: " + "; ".join(parts)
        ours_train = agg.get((d, "llmembed"), {}).get("train_seconds", (None, None))[0]
        n_heads = sum(SEEDS - done[m.name] for m in todo if m.group == "ablation")
        if n_heads and ours_train:  # every ablation trains one head per seed, as ours does
            line += (
                f" (the ablations train {n_heads} heads; ours took {ours_train:.0f} s per head"
                f" here, so about {n_heads * ours_train / 3600:.1f} h)"
            )
        missing.append(line)
    lines = ["## Coverage", ""]
    if not missing:
        lines += [f"Every method has {SEEDS} seeds on every dataset.", ""]
        return lines
    lines.append(
        f"Still missing (or fewer than {SEEDS} seeds; records made with other settings do not "
        "count). Continue with "
        "`LLMEMBED_DATA=/path/to/datasets llmembed-bench reproduce --threads 1`: "
        "it skips what is done."
    )
    lines.append("")
    lines += missing
    lines.append("")
    return lines


def render_markdown(
    records: list[dict[str, Any]],
    agg: dict[tuple[str, str], dict[str, Any]],
    plots_rel: str = "plots",
    results_dir: str | os.PathLike = "results",
    side: list[str] | None = None,
) -> str:
    lines = ["# Benchmark results", ""]
    lines.append(
        "Generated by `llmembed-bench reproduce` (benchmarks/llmembed_bench) from the JSON records "
        "in "
        f"`{results_dir}/runs/` (one per dataset x method x seed); do not edit by hand: rerun "
        "`llmembed-bench reproduce --report-only`."
    )
    lines.append("")
    if not records:
        lines.append("No records yet.")
        return "\n".join(lines) + "\n"
    datasets = _datasets_in(records)
    groups = {m: a["group"] for (_, m), a in agg.items()}
    labels = {m: a["label"] for (_, m), a in agg.items()}
    last = max(records, key=lambda r: r.get("created", ""))
    mach = last.get("machine", {})
    commits = sorted({(r.get("git") or {}).get("commit") or "?" for r in records})
    threads = {str((r.get("machine") or {}).get("torch_threads")) for r in records}
    lines += [
        f"Machine: {mach.get('cpu')}, {mach.get('cores')} cores, {mach.get('ram_gb')} GB RAM, "
        f"no GPU"
        + (f" ({mach['cuda']})" if mach.get("cuda") else "")
        + ". Packages: "
        + ", ".join(f"{k} {' / '.join(v)}" for k, v in _package_versions(records).items())
        + f". Torch threads: {', '.join(sorted(threads))}"
        + f". Git commit(s): {', '.join(c[:10] for c in commits)}. "
        f"{len(records)} records, last {last.get('created')}.",
        "",
    ]
    if any(r.get("quick") for r in records):
        lines += [
            "**Quick run: stratified subsets, not comparable with the published figures.**",
            "",
        ]

    # ---- main table
    lines += ["## Accuracy (%), mean ± standard deviation over seeds", ""]
    head_methods = [
        m
        for m in order(groups, groups)
        if groups[m] in ("ours", "peer") or m == "llmembed-published"
    ]
    lines.append("| method | " + " | ".join(DATASET_TITLES.get(d, d) for d in datasets) + " |")
    lines.append("| --- | " + " | ".join("---:" for _ in datasets) + " |")
    for m in head_methods:
        cells = []
        for d in datasets:
            a = agg.get((d, m))
            if a is None:
                cells.append("–")
                continue
            cell = _acc(a)
            top = max(
                (agg[(d, x)]["accuracy"][0] for x in head_methods if (d, x) in agg), default=None
            )
            if top is not None and math.isclose(a["accuracy"][0], top):
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append(f"| {labels[m]} (`{m}`) | " + " | ".join(cells) + " |")
    for anchor, values in ANCHORS.items():
        lines.append(
            f"| *{anchor}* | "
            + " | ".join(f"*{values[d]:.2f}*" if d in values else "–" for d in datasets)
            + " |"
        )
    lines.append("")
    lines.append(
        f"Published anchors (italics) are quoted, not run here: {ANCHOR_SOURCE}. They fine-tune "
        "a 355M-parameter model on a GPU or prompt a 175B-parameter model; the rows above "
        "train only a small head (or, for SetFit, a 22M-parameter encoder) on CPU. "
        "`llmembed-published` is measured on a stratified subset (see *What each fix is worth*)."
    )
    lines.append("")

    # ---- verdict
    lines += ["## Ours against the best peer", ""]
    wins, present = 0, 0
    for d in datasets:
        ours = agg.get((d, "llmembed"))
        peers = [
            (agg[(d, m)]["accuracy"][0], m)
            for m in head_methods
            if groups[m] == "peer" and (d, m) in agg
        ]
        if ours is None or not peers:
            continue
        present += 1
        best, who = max(peers)
        diff = 100 * (ours["accuracy"][0] - best)
        wins += diff > 0
        spread = 100 * max(ours["accuracy"][1] or 0.0, agg[(d, who)]["accuracy"][1] or 0.0)
        noise = "; within the seed spread" if abs(diff) <= spread else ""
        lines.append(
            f"- {DATASET_TITLES.get(d, d)}: ours {100 * ours['accuracy'][0]:.2f} vs best peer "
            f"`{who}` {100 * best:.2f} ({diff:+.2f} points{noise}; peers run: "
            f"{', '.join(m for _, m in sorted(peers, reverse=True))})"
        )
    lines.append("")
    lines.append(f"Ours is ahead of every peer run on {wins} of {present} datasets with results.")
    lines.append("")

    # ---- the published ladder
    ladder = [name for name, _ in PUBLISHED_LADDER if any((d, name) in agg for d in datasets)]
    if ladder:
        lines += ["## What each fix is worth (published configuration, fixed one at a time)", ""]
        sizes = []
        for d in datasets:
            a = agg.get((d, "llmembed-published"))
            hp = (a or {}).get("hyperparameters") or [{}]
            sub = next(
                (
                    r.get("subset")
                    for r in records
                    if r["dataset"] == d and r["method"] == "llmembed-published"
                ),
                None,
            )
            if sub:
                sizes.append(
                    f"{DATASET_TITLES.get(d, d)} {sub['train']} / {sub['test']} "
                    f"(padding {hp[0].get('published_max_length')})"
                )
        lines.append(
            "Fixed max_length padding is too slow on this CPU for whole datasets, so the "
            "published configuration and each fix are compared on a stratified subset of every "
            "split (train / test texts: " + "; ".join(sizes) + "), the same subset for every "
            "step and seed. Each row adds one fix to the row above; in parentheses the change "
            "from the row above, in accuracy points. Extraction cost in the per-dataset tables "
            "is estimated for the whole split."
        )
        lines.append("")
        lines.append("| step | " + " | ".join(DATASET_TITLES.get(d, d) for d in datasets) + " |")
        lines.append("| --- | " + " | ".join("---:" for _ in datasets) + " |")
        prev: dict[str, float] = {}
        for name, label in PUBLISHED_LADDER:
            if name not in ladder:
                continue
            cells = []
            for d in datasets:
                a = agg.get((d, name))
                if a is None:
                    cells.append("–")
                    continue
                delta = f" ({100 * (a['accuracy'][0] - prev[d]):+.2f})" if d in prev else ""
                prev[d] = a["accuracy"][0]
                cells.append(_acc(a) + delta)
            lines.append(f"| {label} (`{name}`) | " + " | ".join(cells) + " |")
        lines.append("")

    # ---- per dataset
    lines += ["## Per dataset", ""]
    lines.append(
        "Costs are seconds on this machine. *extract* = frozen-backbone extraction of train + "
        "test for the method's exact backbone settings (throughput measured with the cache off "
        "on a fixed sample, times the number of texts); *select* = hyperparameter search on the "
        "validation split; *train* = fitting the final classifier / head; *infer / 1k* = "
        "end-to-end seconds per 1,000 test texts (extraction + head); *total* = extract + select "
        "+ train + inference on the test split. Trainable / frozen = parameter counts."
    )
    lines.append("")
    for d in datasets:
        rows = [m for m in order(groups, groups) if (d, m) in agg]
        if not rows:
            continue
        a0 = agg[(d, rows[0])]
        lines += [f"### {DATASET_TITLES.get(d, d)} ({a0['protocol']})", ""]
        split = a0["split"][0] if a0["split"] else ""
        lines.append(f"Split of seed 0: {split}.")
        lines.append("")
        binary = any(agg[(d, m)]["positive_f1"][0] is not None for m in rows)
        hdr = "| method | seeds | accuracy | macro-F1 |" + (" positive-F1 |" if binary else "")
        hdr += " extract s | select s | train s | infer s / 1k | total s | trainable | frozen |"
        hdr += " chosen on validation |"
        lines.append(hdr)
        lines.append("|" + " --- |" * (hdr.count("|") - 1))
        for m in rows:
            a = agg[(d, m)]
            cells = [
                f"`{m}`",
                str(a["n_seeds"]),
                _pct(a["accuracy"]),
                _pct(a["macro_f1"]),
            ]
            if binary:
                cells.append(_pct(a["positive_f1"]))
            cells += [
                _secs(a["extract_seconds"]),
                _secs(a["selection_seconds"]),
                _secs(a["train_seconds"]),
                _secs(a["infer_seconds_per_1000"]),
                _secs(a["total_seconds"]),
                _params(a["trainable_params"]),
                _params(a["frozen_params"]),
                _hp_summary(a),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    # ---- ablations
    abl = [m for m in order(groups, groups) if groups[m] == "ablation"]
    if abl:
        lines += ["## Ablations (accuracy %, mean ± std over seeds)", ""]
        lines.append(
            "Every ablation changes one thing in the CPU recipe (ours); the best layer of a "
            "backbone alone is picked by a ridge probe on the validation split."
        )
        lines.append("")
        lines.append("| variant | " + " | ".join(DATASET_TITLES.get(d, d) for d in datasets) + " |")
        lines.append("| --- | " + " | ".join("---:" for _ in datasets) + " |")
        for m in ["llmembed", *abl]:
            if not any((d, m) in agg for d in datasets):
                continue
            cells = []
            for d in datasets:
                a = agg.get((d, m))
                if a is None:
                    cells.append("–")
                    continue
                ours = agg.get((d, "llmembed"))
                delta = ""
                if ours is not None and m != "llmembed":
                    delta = f" ({100 * (a['accuracy'][0] - ours['accuracy'][0]):+.2f})"
                cells.append(_acc(a) + delta)
            lines.append(f"| {labels[m]} (`{m}`) | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("In parentheses: difference from ours, in accuracy points.")
        lines.append("")

    # ---- coverage
    lines += coverage_lines(agg)

    lines += side or []  # the side studies (multi-label, chunking), from their JSON files

    # ---- notes
    lines += ["## Protocol notes", ""]
    lines += [
        "- Hyperparameters are chosen on a stratified validation split carved from the training "
        "split (10%, the split LLMEmbed heads early-stop on), never on test. Peers: TF-IDF + "
        f"LinearSVC C in {list(SVM_C)}; logistic regression C in {list(LR_C)} (StandardScaler "
        "first); SetFit head C in the same grid. The final peer models are refitted on the "
        "whole training split with the chosen value.",
        "- Ours is `LLMEmbedClassifier()` with the product default recipe `cpu-stack`: "
        "EmbeddingGemma-300M (with its classification prompt) and all-mpnet-base-v2 each "
        "scored by their own logistic regression, out of fold, and the TF-IDF lexical "
        "channel's scores beside them, under a logistic-regression head whose C is chosen on "
        "the validation split (records before 2026-12-03: `cpu`, EmbeddingGemma-300M + the "
        "lexical channel). The published ladder and the ablations "
        "start from the default before `cpu`, the fusion recipe `cpu-fusion` (SmolLM2-135M + "
        "MiniLM + MPNet, co-occurrence head; its epoch chosen by early stopping on the "
        "validation split); their records were made before the rename, with the same settings.",
        "- *As published* (on a stratified subset, see above): the decoder's last 5 layers, token "
        "mean over fixed max_length padding (pads included), the `paper` recipe's head (sigma, "
        "widths) with the double softmax, no standardization, its fixed number of epochs and "
        "batch size, no validation split. "
        "Padding caps used here: "
        + ", ".join(f"{DATASET_TITLES[d]} {v}" for d, v in PUBLISHED_MAX_LENGTH.items())
        + " (paper: "
        + ", ".join(f"{DATASET_TITLES[d]} {v}" for d, v in PAPER_MAX_LENGTH.items())
        + "; R8/R52 1024-token padding is out of reach on 2 CPU cores, 2.7% / 3.4% of their "
        "documents exceed 512 SmolLM2 tokens). Encoders keep the recipe's settings.",
        "- Logistic regression on a backbone's standard sentence embedding (MTEB-style "
        "classification): sentence-transformers models use their own pooling, max_seq_length and "
        "normalization; the decoder has no standard sentence embedding, so its last layer with "
        "the recipe's token pooling stands in.",
        "- SetFit: `setfit` package, all-MiniLM-L6-v2 body from the model zoo, its usual settings "
        f"(batch {SETFIT_BATCH}, 1 epoch, {SETFIT_ITERATIONS} pair-generation iterations, "
        "logistic-regression head); the "
        f"contrastive phase runs on a stratified subset sized to at most {SETFIT_MAX_PAIRS:,} "
        "pairs so that it finishes on CPU (at least 2 texts per class; where that makes more "
        "pairs, as on R52, setfit's `max_steps` stops training at the cap), the head is fitted "
        "on the whole training split.",
        "- AG News: `agnews/train.csv` is missing, so the labelled fallback protocol "
        "`agnews-test-5fold-cv` is used: stratified 5-fold cross-validation on the official "
        "7,600-text test split; seed k trains on the other folds and tests on fold k (folds "
        "fixed with seed 0), so its spread includes fold-to-fold variation. Not comparable with "
        "the published AG News figures (120k training texts).",
        "- Extraction is cached (one cache per dataset group under the harness cache dir; R8 and "
        "R52 share one); each backbone is extracted once with the union of the layers the methods "
        "need and sliced. Timings were taken on a shared 2-core machine (the 1-minute load "
        "average is in every record): treat them as indicative.",
        "- Layer probes (accuracy by depth, SmolLM2-135M): [SST-2](probe/smollm2-135m-sst2.png), "
        "[R8](probe/smollm2-135m-r8.png).",
        "",
    ]
    lines += [
        "## Plots",
        "",
        f"![accuracy by method]({plots_rel}/accuracy_by_method.png)",
        "",
        f"![accuracy against cost]({plots_rel}/accuracy_vs_cost.png)",
        "",
        f"![ablations]({plots_rel}/ablations.png)",
        "",
    ]
    return "\n".join(lines) + "\n"
