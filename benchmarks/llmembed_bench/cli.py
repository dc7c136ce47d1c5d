"""`llmembed-bench`: the research harness's command line (reproduce, extract, probe).

Every output folder is an option whose default lies in this repository (results/, docs/,
benchmarks/results/), never the caller's working directory.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llmembed import LLMEmbedError, load_recipe
from llmembed.config import DEFAULT_RECIPE

from .settings import SEEDS, default_dirs, log, repo_root

app = typer.Typer(
    help="The llmembed research harness: benchmark table, extraction speed, layer probes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

CacheDir = Annotated[
    Path | None,
    typer.Option(help="Embedding cache root (default: <llmembed cache>/reproduce)."),
]
DataDir = Annotated[
    Path | None, typer.Option(help="Benchmark data folder (default: LLMEMBED_DATA).")
]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def _run(fn) -> None:
    """Our errors as a one-line message and exit code 2, as the product's CLI does."""
    try:
        fn()
    except LLMEmbedError as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from None


def _split_list(value: str | None) -> list[str] | None:
    out = [p for p in re.split(r"[,\s]+", value or "") if p]
    return out or None


@app.command()
def reproduce(
    datasets: Annotated[
        str | None, typer.Option(help="Comma-separated: mr,agnews,r8,r52,sst2 (default: all).")
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(help="Comma-separated names or groups: ours, published, peers, ablations."),
    ] = None,
    seeds: Annotated[int | None, typer.Option(help="Seeds 0..N-1 (default 3; quick 1).")] = None,
    quick: Annotated[
        bool, typer.Option(help="One dataset on a stratified subset (< 5 minutes).")
    ] = False,
    force: Annotated[bool, typer.Option(help="Redo records that already exist.")] = False,
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Only regenerate results.md and plots.")
    ] = False,
    list_methods: Annotated[bool, typer.Option("--list", help="List the methods.")] = False,
    results_dir: Annotated[
        Path | None,
        typer.Option(
            help="Records folder (default: the repository's results/; quick: results/quick)."
        ),
    ] = None,
    docs_dir: Annotated[
        Path | None,
        typer.Option(help="Where results.md and plots/ go (default: the repository's docs/)."),
    ] = None,
    data_dir: DataDir = None,
    recipe: Annotated[
        str, typer.Option(help="Fusion recipe of the published ladder and the ablations.")
    ] = "cpu-fusion",
    ours: Annotated[str, typer.Option(help="Recipe of 'ours' (default: the product's).")] = (
        DEFAULT_RECIPE
    ),
    n_train: Annotated[int | None, typer.Option(help="Stratified train subset size.")] = None,
    n_test: Annotated[int | None, typer.Option(help="Stratified test subset size.")] = None,
    train_threads: Annotated[
        int | None, typer.Option(help="Torch threads while training heads (default: as is).")
    ] = None,
    setfit_max_pairs: Annotated[
        int | None, typer.Option(help="SetFit contrastive pair cap (default 1,000).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="Torch threads for everything (default: as is).")
    ] = None,
    cache_dir: CacheDir = None,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """The paper's table on this machine: ours, as published, ablations and peers (resumable)."""
    from .methods import build_methods, missing_requirements
    from .report import write_report
    from .runner import run

    def go() -> None:
        if list_methods:
            for m in build_methods(load_recipe(recipe)):
                missing = missing_requirements(m)
                extra = f"  [needs {', '.join(missing)}]" if missing else ""
                print(f"{m.name:32s} {m.group:10s} {m.label}{extra}")
            return
        results, docs = results_dir, docs_dir
        if results is None or docs is None:
            default_results, default_docs = default_dirs(quick)
            results, docs = results or default_results, docs or default_docs
        if report_only:
            log(f"wrote {write_report(results, docs)}")
            return
        t0 = time.perf_counter()
        run(
            datasets=_split_list(datasets),
            methods=_split_list(methods),
            seeds=seeds if seeds is not None else (1 if quick else SEEDS),
            quick=quick,
            force=force,
            results_dir=results,
            docs_dir=docs,
            cache_dir=cache_dir,
            data_dir=data_dir,
            device=device,
            recipe=recipe,
            ours=ours,
            n_train=n_train,
            n_test=n_test,
            progress=not quiet,
            options={
                "train_threads": train_threads,
                "setfit_max_pairs": setfit_max_pairs,
                "threads": threads,
            },
        )
        log(f"done in {time.perf_counter() - t0:.0f}s; report: {docs / 'results.md'}")

    _run(go)


@app.command()
def extract(
    quick: Annotated[bool, typer.Option(help="Small samples: a smoke run (~1 min).")] = False,
    models: Annotated[
        str, typer.Option(help="Comma-separated zoo models.")
    ] = "minilm-l6,mpnet-base,smollm2-135m",
    methods: Annotated[
        str, typer.Option(help="ours, st, st-bf16, published.")
    ] = "ours,st,st-bf16,published",
    n_r8: Annotated[int, typer.Option(help="R8 documents sampled.")] = 300,
    profile: Annotated[bool, typer.Option(help="Also profile ours (where the time goes).")] = False,
    e2e: Annotated[
        int,
        typer.Option(
            help="Also time SST-2 fit + evaluate, cold then warm cache, on N training sentences "
            "(0 = all 67,349; -1 = skip)."
        ),
    ] = -1,
    recipe: Annotated[
        str, typer.Option(help="Recipe giving layers / pooling / max_length, and --e2e's recipe.")
    ] = "cpu-fusion",
    e2e_cache: Annotated[
        Path | None,
        typer.Option(help="Embedding cache for --e2e (empty or missing; kept afterwards)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="JSON results (default: benchmarks/results/throughput.json)."
        ),
    ] = None,
) -> None:
    """texts/s, tokens/s, peak memory and MFU: ours vs sentence-transformers vs published."""
    from .extract import main

    def go() -> None:
        out = output or repo_root() / "benchmarks" / "results" / "throughput.json"
        argv = ["--models", models, "--methods", methods, "--n-r8", str(n_r8), "-o", str(out)]
        argv += ["--e2e", str(e2e), "--recipe", recipe]
        argv += ["--e2e-cache", str(e2e_cache)] * (e2e_cache is not None)
        argv += ["--profile"] * profile + ["--quick"] * quick
        main(argv)

    _run(go)


@app.command()
def probe(
    model: Annotated[str, typer.Argument(help="Zoo name, hub id, folder or .gguf file.")],
    dataset: Annotated[str, typer.Option(help="Benchmark: sst2, mr, agnews, r8, r52.")],
    data_dir: DataDir = None,
    n: Annotated[int, typer.Option(help="Train texts used (stratified subset).")] = 4000,
    max_length: Annotated[int, typer.Option(help="Truncation length in tokens.")] = 256,
    template: Annotated[
        str, typer.Option(help="Prompt template, {text} where the text goes.")
    ] = "{text}",
    folds: Annotated[int, typer.Option(help="Cross-validation folds on the train subset.")] = 5,
    poolings: Annotated[str, typer.Option(help="Comma-separated poolings to compare.")] = (
        "mean,mean_no_first,last"
    ),
    plot: Annotated[Path | None, typer.Option(help="Write the accuracy-by-depth PNG here.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the rows as JSON here.")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Embedding cache (default: LLMEMBED_CACHE or the user's).")
    ] = None,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Linear probe on every layer and pooling of MODEL (k-fold cross-validation on train)."""
    from llmembed.datasets import load_benchmark

    from .probe import plot_probe, probe_layers

    def go() -> None:
        ds = load_benchmark(dataset, data_dir)
        if ds.is_cv:  # no train split: probe on a subset of the labelled pool
            sub = ds.subsample(None, n)
            texts, labels = sub.test_texts, sub.test_labels
        else:
            sub = ds.subsample(n, None)
            texts, labels = sub.train_texts, sub.train_labels
        res = probe_layers(
            model,
            texts,
            labels,
            dataset=dataset,
            poolings=poolings.split(","),
            max_length=max_length,
            template=template,
            folds=folds,
            cache_dir=cache_dir,
            device=device,
            progress=not quiet,
        )
        table = Table(title=f"{model} on {dataset}: best layer per pooling")
        for col in ("pooling", "best layer", "accuracy", "macro-F1"):
            table.add_column(col)
        for p in dict.fromkeys(r["pooling"] for r in res.rows):
            b = res.best(p)
            table.add_row(p, str(b["layer"]), f"{b['accuracy']:.4f}", f"{b['macro_f1']:.4f}")
        Console().print(table)
        if plot:
            console.print(f"wrote {plot_probe([res], plot)}")
        if output:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(res.to_dict(), indent=2))
            console.print(f"wrote {output}")

    _run(go)


if __name__ == "__main__":
    app()
