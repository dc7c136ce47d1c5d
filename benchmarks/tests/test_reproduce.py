"""`llmembed-bench reproduce`: records, resume, report, hyperparameters chosen on validation only.

Tiny random models and a synthetic dataset: offline and fast.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from llmembed import LLMEmbedClassifier, LLMEmbedError, load_recipe
from llmembed.backbones import Backbone, BackboneSpec
from llmembed.heads import HeadConfig
from llmembed.recipes import Recipe
from llmembed.training import TrainConfig, split_validation
from llmembed_bench import methods, peers, runner
from llmembed_bench.base import Method
from llmembed_bench.features import FeatureStore
from llmembed_bench.methods import build_methods, select_methods
from llmembed_bench.peers import SETFIT_BATCH, choose_on_validation, setfit_budget, tfidf_svm
from llmembed_bench.records import load_records, record_path
from llmembed_bench.report import aggregate, coverage_lines, write_report
from llmembed_bench.runner import run
from llmembed_bench.settings import DEFAULT_DATASETS, SVM_C, VAL_FRACTION
from llmembed_bench.tasks import Task

POS = ["good", "great", "fine", "nice", "love", "happy", "best", "fun"]
NEG = ["bad", "awful", "poor", "sad", "hate", "worst", "boring", "dull"]
FILL = ["the", "a", "movie", "film", "was", "is", "it", "this", "and", "very", "plot", "story"]


def toy_task(name: str = "toy", n_train: int = 60, n_test: int = 30, seed: int = 0) -> Task:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n_train + n_test):
        label = i % 2
        words = [rng.choice(FILL) for _ in range(rng.randint(2, 6))]
        words.insert(rng.randint(0, len(words)), rng.choice(POS if label else NEG))
        texts.append(" ".join(words) + f" {'it' * (1 + i % 3)}")
        labels.append(label)
    return Task(
        name, "official", texts, np.array(labels), ["negative", "positive"], n_train=n_train
    )


@pytest.fixture
def recipe(tiny_llama, tiny_bert) -> Recipe:
    return Recipe(
        "test",
        [
            BackboneSpec(str(tiny_llama), layers="1,2", pooling="mean", max_length=32),
            BackboneSpec(str(tiny_bert), layers="-1", pooling="mean", max_length=32),
        ],
        HeadConfig(proj_dim=8, hidden=[8], sigma=0.1, mean_of=0),
        TrainConfig(max_epochs=4, patience=2, batch_size=16),
    )


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny heads: one thread is faster and immune to a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_paper() -> Recipe:
    """The shipped `paper` recipe's settings, shrunk to tiny widths and few epochs."""
    paper = load_recipe("paper")
    head = HeadConfig.from_dict({**paper.head.to_dict(), "proj_dim": 8, "hidden": [8]})
    train = TrainConfig.from_dict({**paper.train.to_dict(), "max_epochs": 3})
    return Recipe("paper-small", paper.backbones, head, train)


def _run(tmp_path, recipe, methods, seeds=2, **kw):
    kw.setdefault(
        "options",
        {"published_max_length": {"toy": 16}, "rate_sample": 8, "published_subset": (40, 20)},
    )
    kw.setdefault("paper", small_paper())
    kw.setdefault("report", False)  # plots are slow; test_report_from_records makes them
    return run(
        datasets=["toy"],
        methods=methods,
        seeds=seeds,
        results_dir=tmp_path / "results",
        docs_dir=tmp_path / "docs",
        cache_dir=tmp_path / "cache",
        device="cpu",
        recipe=recipe,
        progress=False,
        task_loader=lambda name, *a, **k: toy_task(name),
        **kw,
    )


def test_records_written_skipped_and_forced(tmp_path, recipe):
    written = _run(tmp_path, recipe, ["llmembed", "tfidf-svm"])
    assert len(written) == 4
    path = record_path(tmp_path / "results", "toy", "llmembed", 1)
    rec = json.loads(path.read_text())
    for key in (
        "dataset",
        "protocol",
        "method",
        "seed",
        "metrics",
        "train_seconds",
        "infer_seconds_per_1000",
        "extract_seconds",
        "trainable_params",
        "frozen_params",
        "hyperparameters",
        "validation",
        "machine",
        "packages",
        "git",
    ):
        assert key in rec, key
    assert rec["seed"] == 1 and rec["metrics"]["n"] == 30
    assert {"accuracy", "macro_f1", "micro_f1", "positive_f1"} <= set(rec["metrics"])
    assert rec["trainable_params"] > 0 and rec["frozen_params"] > 0
    assert rec["machine"]["cores"] and rec["packages"]["torch"]
    assert rec["extract_seconds"] > 0 and rec["hyperparameters"]["train"]["seed"] == 1
    svm = json.loads(record_path(tmp_path / "results", "toy", "tfidf-svm", 0).read_text())
    assert svm["frozen_params"] == 0 and svm["hyperparameters"]["C"] in SVM_C

    mtime = path.stat().st_mtime_ns
    assert _run(tmp_path, recipe, ["llmembed", "tfidf-svm"]) == []  # all present: skipped
    assert path.stat().st_mtime_ns == mtime
    again = _run(tmp_path, recipe, ["llmembed"], seeds=1, force=True)
    assert [(r["method"], r["seed"]) for r in again] == [("llmembed", 0)]


def test_ours_is_the_public_classifier(tmp_path, recipe):
    """The table's "ours" row is LLMEmbedClassifier.fit / predict as a user runs it: the same
    texts, class names and seed give the same test accuracy outside the harness."""
    (rec,) = _run(tmp_path, recipe, ["llmembed"], seeds=1)
    assert rec["hyperparameters"]["api"] == "LLMEmbedClassifier.fit / predict"
    task = toy_task()
    tr, te, _ = task.split(0)
    clf = LLMEmbedClassifier(
        recipe=recipe, train={"seed": 0}, cache_dir=tmp_path / "own-cache", verbose=False
    )
    clf.fit([task.texts[i] for i in tr], [task.classes[i] for i in task.y[tr]])
    accuracy = clf.score([task.texts[i] for i in te], [task.classes[i] for i in task.y[te]])
    assert rec["metrics"]["accuracy"] == pytest.approx(accuracy)
    assert rec["trainable_params"] == clf.head_.n_parameters()


def test_resume_after_interruption(tmp_path, recipe, monkeypatch):
    calls = {"n": 0}
    original = tfidf_svm

    def flaky(ctx, tr, te, seed):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(ctx, tr, te, seed)

    monkeypatch.setattr(methods, "tfidf_svm", flaky)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, recipe, ["tfidf-svm"], seeds=3)
    runs = tmp_path / "results" / "runs" / "toy" / "tfidf-svm"
    assert sorted(p.name for p in runs.glob("*.json")) == ["seed0.json"]
    assert not list(runs.glob(".*tmp"))  # no half-written record
    written = _run(tmp_path, recipe, ["tfidf-svm"], seeds=3)
    assert [r["seed"] for r in written] == [1, 2]


def test_report_from_records(tmp_path, recipe):
    _run(
        tmp_path,
        recipe,
        ["llmembed", "published-fix1-logits", "llmembed-published", "lr-*", "abl-fusion-mean"],
        seeds=1,
    )
    out = write_report(tmp_path / "results", tmp_path / "docs")
    text = out.read_text()
    assert "| LLMEmbed, CPU default recipe (ours) (`llmembed`) |" in text
    assert "`llmembed-published`" in text and "`abl-fusion-mean`" in text
    # 1 seed of 3: every accuracy cell says so, the ablation table's too
    abl_row = next(line for line in text.splitlines() if "(`abl-fusion-mean`) |" in line)
    assert "(n=1)" in abl_row
    assert "RoBERTa-large fine-tuned" in text and "CARP" in text
    assert "± " in text and "Ours is ahead of every peer run on" in text
    for png in ("accuracy_by_method.png", "accuracy_vs_cost.png"):
        data = (tmp_path / "docs" / "plots" / png).read_bytes()
        assert data[:4] == b"\x89PNG"
    pub = json.loads(record_path(tmp_path / "results", "toy", "llmembed-published", 0).read_text())
    hp = pub["hyperparameters"]
    assert hp["head"]["double_softmax"] and not hp["head"]["standardize"]
    assert hp["train"]["val_fraction"] == 0.0 and hp["train"]["patience"] is None
    assert hp["backbones"][0]["pooling"] == "mean_padded"
    assert hp["backbones"][0]["padding"] == "max_length"
    assert hp["epochs_run"] == hp["train"]["max_epochs"]
    assert pub["metrics"]["n"] == 20 and pub["subset"]["train"] == 40  # the stratified subset
    assert "What each fix is worth" in text and "`published-fix1-logits`" in text
    fix1 = json.loads(
        record_path(tmp_path / "results", "toy", "published-fix1-logits", 0).read_text()
    )
    assert not fix1["hyperparameters"]["head"]["double_softmax"]


def test_hyperparameters_chosen_on_validation_only(tmp_path, recipe, monkeypatch):
    """Every grid search sees training indices only, and picks the best validation score."""
    seen = []
    original = choose_on_validation

    def spy(y, grid, fit_score, seed, fraction=VAL_FRACTION):
        def wrapped(value, fit_idx, val_idx):
            seen.append((len(y), fit_idx.copy(), val_idx.copy()))
            return fit_score(value, fit_idx, val_idx)

        best, rows, score = original(y, grid, wrapped, seed, fraction)
        assert score == max(r["val_accuracy"] for r in rows)
        assert best == next(r["value"] for r in rows if r["val_accuracy"] == score)
        return best, rows, score

    monkeypatch.setattr(peers, "choose_on_validation", spy)
    task = toy_task()
    test_texts = set(task.texts[task.n_train :])
    written = _run(tmp_path, recipe, ["tfidf-svm", "lr-*"], seeds=1)
    assert seen and written
    for n, fit_idx, val_idx in seen:
        assert n == task.n_train  # labels passed in are the training labels
        assert fit_idx.max() < n and val_idx.max() < n
        assert not set(fit_idx) & set(val_idx)
        assert len(val_idx) == round(0.1 * n)
    for rec in written:
        assert rec["validation"]["accuracy"] == max(
            r["val_accuracy"] for r in rec["hyperparameters"]["grid"]
        )
    assert test_texts  # the test split exists and was never handed to the search (indices < n)


def test_best_layer_probe_uses_validation_split(tmp_path, recipe, monkeypatch):
    calls = []
    original = split_validation

    def spy(y, fraction, seed):
        calls.append(len(y))
        return original(y, fraction, seed)

    monkeypatch.setattr(methods, "split_validation", spy)
    (rec,) = _run(tmp_path, recipe, ["abl-alone-tiny-llama-best"], seeds=1)
    assert calls == [60]  # the training split only
    assert rec["hyperparameters"]["layer"] in [
        r["layer"] for r in rec["hyperparameters"]["layer_probe"]
    ]
    assert rec["selection_seconds"] > 0


def test_feature_store_slices_one_superset(tmp_path, tiny_llama):
    task = toy_task(n_train=10, n_test=4)
    store = FeatureStore(task, tmp_path / "cache", device="cpu", progress=False)
    a = BackboneSpec(str(tiny_llama), layers="1", pooling="mean", max_length=32)
    b = BackboneSpec(str(tiny_llama), layers="-1", pooling="mean", max_length=32)
    store.plan([a, b])
    got = store.get(a)
    assert got.shape == (14, 1, 32)
    assert store.get(b).shape == (14, 1, 32)
    assert len(list((tmp_path / "cache" / "toy").iterdir())) == 1  # one extraction: the union
    direct = Backbone(a, device="cpu").embed(task.texts, progress=False)
    np.testing.assert_allclose(got, direct, rtol=1e-4, atol=1e-5)
    # A later run that needs fewer layers reuses the cached superset: no new extraction.
    again = FeatureStore(task, tmp_path / "cache", device="cpu", progress=False)
    again.plan([a])
    np.testing.assert_array_equal(again.get(a), got)
    assert len(list((tmp_path / "cache" / "toy").iterdir())) == 1


def test_feature_store_reuses_a_folder_keyed_by_its_written_layers(tmp_path, tiny_llama):
    """A cache folder written for layers "-1" (as LLMEmbedClassifier writes it) serves a store
    asking for the same hidden state by its index, and fill_exact writes a spec's own entries
    from a superset so the classifier's cache needs no forward pass."""
    from llmembed.cache import EmbeddingCache

    task = toy_task(n_train=10, n_test=4)
    last = BackboneSpec(str(tiny_llama), layers="-1", pooling="mean", max_length=32)
    EmbeddingCache(tmp_path / "cache" / "toy").embed(Backbone(last, device="cpu"), task.texts)
    store = FeatureStore(task, tmp_path / "cache", device="cpu", progress=False)
    by_index = BackboneSpec(str(tiny_llama), layers="3", pooling="mean", max_length=32)
    store.get(by_index)
    assert len(list((tmp_path / "cache" / "toy").iterdir())) == 1  # reused, not recomputed

    both = BackboneSpec(str(tiny_llama), layers="1,-1", pooling="mean", max_length=32)
    first = BackboneSpec(str(tiny_llama), layers="1", pooling="mean", max_length=32)
    store.plan([both, first])
    assert store.fill_exact(first) == len(task.texts)
    assert store.fill_exact(first) == 0  # already there
    cache = EmbeddingCache(tmp_path / "cache" / "toy")
    got = cache.embed(Backbone(first, device="cpu"), task.texts, progress=False)
    assert cache.last_misses == 0
    np.testing.assert_array_equal(got, store.get(both)[:, :1])


def test_cv_task_splits_by_seed():
    t = toy_task(n_train=0, n_test=50)
    idx = np.arange(50)
    t.folds = [(np.setdiff1d(idx, idx[k::5]), idx[k::5]) for k in range(5)]
    tests = [set(t.split(s)[1]) for s in range(5)]
    assert set().union(*tests) == set(range(50))
    assert all(not (tests[i] & tests[j]) for i in range(5) for j in range(i))
    tr, te, desc = t.split(1)
    assert not set(tr) & set(te) and desc.startswith("fold 1 of 5")


def test_setfit_budget_caps_pairs():
    # few classes: the subset is sized to the cap (25 texts x 40 pairs = 1,000), no step cap
    assert setfit_budget(2, 1000) == (25, -1)
    assert setfit_budget(8, 1000) == (25, -1)
    # R52: 2 texts per class make 4,160 pairs, so training stops after 62 batches of 16
    n_sub, max_steps = setfit_budget(52, 1000)
    assert n_sub == 104 and max_steps == 62 and max_steps * SETFIT_BATCH <= 1000


def test_missing_package_skips_method(tmp_path, recipe, monkeypatch, capsys):
    original = build_methods

    def with_fake(rec):
        return [
            *original(rec),
            Method("needs-pkg", "peer", "x", lambda c: [], None, ("no_such_pkg_xyz",)),
        ]

    monkeypatch.setattr(runner, "build_methods", with_fake)
    assert _run(tmp_path, recipe, ["needs-pkg"], seeds=1) == []
    assert "skipping needs-pkg: package(s) no_such_pkg_xyz not installed" in capsys.readouterr().out


def test_select_methods_groups_and_errors(recipe):
    methods = build_methods(recipe)
    names = [m.name for m in select_methods(methods, ["ours", "peers"])]
    assert names[0] == "llmembed" and "tfidf-svm" in names and "setfit-minilm" in names
    assert all(not n.startswith("abl-") for n in names)
    with pytest.raises(LLMEmbedError, match="Unknown method"):
        select_methods(methods, ["nope"])


def test_recipe_change_makes_records_stale(tmp_path, recipe):
    _run(tmp_path, recipe, ["llmembed", "tfidf-svm"], seeds=1)
    changed = Recipe(
        recipe.name, recipe.backbones, HeadConfig(proj_dim=8, hidden=[8], sigma=1.0), recipe.train
    )
    again = _run(tmp_path, changed, ["llmembed", "tfidf-svm"], seeds=1)
    assert [r["method"] for r in again] == ["llmembed"]  # TF-IDF does not use the recipe
    agg = aggregate(load_records(tmp_path / "results"))
    assert agg[("toy", "llmembed")]["hyperparameters"][0]["head"]["sigma"] == 1.0


def test_coverage_lists_missing_methods_with_cost_hint():
    methods = build_methods(load_recipe("cpu-fusion"))
    stats = {"n_seeds": 3, "train_seconds": (120.0, 5.0)}
    agg = {(d, m.name): dict(stats) for d in DEFAULT_DATASETS for m in methods}
    for m in methods:
        if m.group == "ablation":
            del agg[("sst2", m.name)]
    agg[("r8", "setfit-minilm")]["n_seeds"] = 1
    text = "\n".join(coverage_lines(agg))
    n_abl = sum(m.group == "ablation" for m in methods)
    assert f"- SST-2: ablations: all {n_abl}" in text
    # every missing ablation trains one head per seed at ours' measured cost
    assert f"train {3 * n_abl} heads; ours took 120 s per head" in text
    assert f"about {3 * n_abl * 120 / 3600:.1f} h" in text
    assert "- R8: `setfit-minilm` (1/3)" in text and "MR" not in text
    agg[("r52", "abl-sigma-1")] = {"n_seeds": 1, "train_seconds": (60.0, 0.0)}  # 2 seeds to go
    del agg[("r52", "llmembed")]  # no head time measured: no estimate
    agg[("mr", "abl-sigma-10")]["n_seeds"] = 2
    text = "\n".join(coverage_lines(agg))
    assert "- MR: `abl-sigma-10` (2/3) (the ablations train 1 heads; ours took 120 s" in text
    assert "- R52: `llmembed`; `abl-sigma-1` (1/3)\n" in text + "\n"
    agg[("r52", "llmembed")] = dict(stats)
    agg[("r52", "abl-sigma-1")]["n_seeds"] = 3
    agg[("mr", "abl-sigma-10")]["n_seeds"] = 3
    agg[("r8", "setfit-minilm")]["n_seeds"] = 3
    agg.update({("sst2", m.name): dict(stats) for m in methods})
    assert "Every method has 3 seeds" in "\n".join(coverage_lines(agg))
