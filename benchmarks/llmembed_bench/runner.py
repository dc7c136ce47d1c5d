"""The runner: every (dataset, method, seed) not yet recorded, then the report."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llmembed.cache import default_cache_dir
from llmembed.recipes import Recipe, load_recipe

from .base import Context, config_hash, method_config
from .environment import git_info, machine_info, package_versions
from .features import FeatureStore
from .jsonio import write_json
from .methods import build_methods, missing_requirements, select_methods
from .records import make_record, record_path, stale
from .report import write_report
from .settings import DEFAULT_DATASETS, QUICK, SEEDS, default_dirs, log
from .tasks import Task, load_task


def run(
    datasets: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    seeds: int = SEEDS,
    quick: bool = False,
    force: bool = False,
    results_dir: str | os.PathLike | None = None,
    docs_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    device: str = "auto",
    recipe: str | os.PathLike | Recipe = "cpu-fusion",
    ours: str | os.PathLike | Recipe | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    progress: bool = True,
    report: bool = True,
    paper: str | os.PathLike | Recipe = "paper",
    options: dict[str, Any] | None = None,
    task_loader: Callable[..., Task] | None = None,
) -> list[dict[str, Any]]:
    """Run every (dataset, method, seed) not yet recorded, then regenerate the report.

    Order: all datasets for ours + published + peers (SetFit excluded), then the ablations, then
    SetFit; within a phase datasets in the order given. ``recipe`` is the fusion recipe the
    published ladder and the ablations start from, ``ours`` the recipe of ours (None: the same).
    Returns the records written now.
    """
    options = dict(options or {})
    if options.get("threads"):
        import torch

        torch.set_num_threads(int(options["threads"]))
    quick_methods = quick and not methods
    if quick:
        datasets = datasets or [QUICK["dataset"]]
        methods = methods or list(QUICK["methods"])
        n_train = n_train or QUICK["n_train"]
        n_test = n_test or QUICK["n_test"]
        seeds = seeds or 1
        options.setdefault("rate_sample", 64)
    datasets = list(datasets or DEFAULT_DATASETS)
    if results_dir is None or docs_dir is None:
        default_results, default_docs = default_dirs(quick)
        results_dir, docs_dir = results_dir or default_results, docs_dir or default_docs
    results_dir, docs_dir = Path(results_dir), Path(docs_dir)
    cache_root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "reproduce"
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    ours_rec = ours if isinstance(ours, Recipe) or ours is None else load_recipe(ours)
    paper = paper if isinstance(paper, Recipe) else load_recipe(paper)
    all_methods = build_methods(rec)
    if quick_methods:  # the quick set, minus what this recipe does not have
        methods = [m for m in methods if m in {x.name for x in all_methods}]
    chosen = select_methods(all_methods, methods)
    for m in chosen:
        missing = missing_requirements(m)
        if missing:
            log(
                f"skipping {m.name}: package(s) {', '.join(missing)} not installed "
                "(pip install -e 'benchmarks[peers]')"
            )
    chosen = [m for m in chosen if not missing_requirements(m)]
    # ours + light peers everywhere first, then SetFit, the published ladder, the ablations.
    phases = [
        [m for m in chosen if m.group in ("ours", "peer") and not m.requires],
        [m for m in chosen if m.group in ("ours", "peer") and m.requires],
        [m for m in chosen if m.group == "published"],
        [m for m in chosen if m.group == "ablation"],
    ]
    env = {"machine": machine_info(), "packages": package_versions(), "git": git_info()}
    loader = task_loader or load_task
    written: list[dict[str, Any]] = []
    for phase in phases:
        if not phase:
            continue
        for name in datasets:
            todo = [
                (m, s)
                for m in phase
                for s in range(seeds)
                if force
                or stale(
                    record_path(results_dir, name, m.name, s),
                    config_hash(method_config(m, rec, paper, options, ours_rec)),
                )
            ]
            if not todo:
                continue
            task = loader(name, data_dir, quick=quick, n_train=n_train, n_test=n_test)
            store = FeatureStore(
                task,
                cache_root,
                device=device,
                progress=progress,
                rate_sample=int(options.get("rate_sample", 200)),
                rates_path=results_dir / "runs" / name / "_extraction_rates.json",
            )
            ctx = Context(task, rec, paper, store, options, ours_rec)
            # Plan every method's specs (not only the selected ones): cached supersets then
            # do not depend on which methods a given run asks for. A quick run plans only its
            # own (cheaper: no full-depth pass for layers it does not use).
            for m in chosen if quick else all_methods:
                store.plan(m.needs(ctx))
            for m, seed in todo:
                tr, te, split_desc = task.split(seed)
                log(f"{name} / {m.name} / seed {seed} ({split_desc})")
                t0 = time.perf_counter()
                result = m.run(ctx, tr, te, seed)
                used = result.pop("test_index", None)
                record = make_record(
                    task,
                    m,
                    seed,
                    split_desc,
                    result,
                    task.y[te if used is None else used],
                    env,
                    time.perf_counter() - t0,
                    config=method_config(m, rec, paper, options, ours_rec),
                )
                write_json(record_path(results_dir, name, m.name, seed), record)
                written.append(record)
                met = record["metrics"]
                log(
                    f"  accuracy {met['accuracy']:.4f}  macro-F1 {met['macro_f1']:.4f}  "
                    f"train {record['train_seconds']:.1f}s  "
                    f"total cost {record['total_seconds']:.0f}s"
                )
            store.release()
            if report:
                write_report(results_dir, docs_dir)
    if report:
        write_report(results_dir, docs_dir)
    return written
