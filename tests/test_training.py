import numpy as np
import pytest
import torch

from llmembed import training
from llmembed.errors import LLMEmbedError
from llmembed.heads import HeadConfig
from llmembed.metrics import accuracy_macro_f1, classification_metrics
from llmembed.training import TrainConfig, split_validation, train_head


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = rng.normal(size=(3, 2, 8))
    a = centers[y] + 0.5 * rng.normal(size=(n, 2, 8))
    b = rng.normal(size=(n, 1, 4)) + y[:, None, None] * 0.5
    return [a.astype(np.float32), b.astype(np.float32)], y


HEAD = HeadConfig(proj_dim=8, hidden=[16], sigma=0.5)


def test_training_learns_and_is_deterministic():
    feats, y = _data()
    cfg = TrainConfig(lr=1e-2, batch_size=32, max_epochs=30, patience=10, seed=3)
    r1 = train_head(feats, y, 3, HEAD, cfg, progress=False)
    r2 = train_head(feats, y, 3, HEAD, cfg, progress=False)
    assert r1.val_metrics["accuracy"] > 0.9
    for (k, v1), v2 in zip(r1.head.state_dict().items(), r2.head.state_dict().values()):
        assert np.array_equal(v1.numpy(), v2.numpy()), k
    assert r1.history == r2.history


def test_early_stopping_restores_best_epoch():
    feats, y = _data()
    cfg = TrainConfig(lr=5e-2, batch_size=16, max_epochs=200, patience=3, seed=0)
    r = train_head(feats, y, 3, HEAD, cfg, progress=False)
    assert len(r.history) < 200
    assert len(r.history) - r.best_epoch == 3
    best = max(h["val_accuracy"] for h in r.history)
    assert r.val_metrics["accuracy"] == pytest.approx(best)


def test_fixed_epochs_without_validation():
    feats, y = _data(60)
    cfg = TrainConfig(lr=1e-3, max_epochs=4, patience=None, val_fraction=0.0)
    r = train_head(feats, y, 3, HEAD, cfg, progress=False)
    assert len(r.history) == 4 and r.best_epoch == 4 and r.val_metrics is None


def test_validation_split_is_stratified():
    y = np.array([0] * 90 + [1] * 10)
    tr, va = split_validation(y, 0.1, seed=0)
    assert len(va) == 10 and set(np.bincount(y[va])) == {9, 1}
    assert not set(tr) & set(va)


def test_class_weights_run():
    feats, y = _data(80)
    r = train_head(
        feats, y, 3, HEAD, TrainConfig(max_epochs=2, class_weight="balanced"), progress=False
    )
    assert len(r.history) == 2


def test_bad_train_config():
    with pytest.raises(LLMEmbedError):
        TrainConfig(monitor="f2")
    with pytest.raises(LLMEmbedError):
        TrainConfig(val_fraction=1.0)


def test_metrics_binary_and_multiclass():
    m = classification_metrics(["a", "b", "b", "a"], ["a", "b", "a", "a"], labels=["a", "b"])
    assert m["accuracy"] == 0.75
    assert m["positive_label"] == "b" and m["positive_f1"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[2, 0], [1, 1]]
    m3 = classification_metrics([0, 1, 2, 2], [0, 1, 2, 1])
    assert "positive_f1" not in m3
    assert m3["micro_f1"] == pytest.approx(0.75)
    assert set(m3["per_class"]) == {"0", "1", "2"}


def test_accuracy_macro_f1_is_classification_metrics():
    """The cheap per-epoch / per-C scores are the full report's, exactly (absent classes and
    classes never predicted included)."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        k = int(rng.integers(2, 8))
        y, pred = rng.integers(0, k, 200), rng.integers(0, k - 1, 200)
        m = classification_metrics(y, pred, labels=range(k))
        assert accuracy_macro_f1(y, pred, k) == (m["accuracy"], m["macro_f1"])
    assert accuracy_macro_f1(np.zeros(0), np.zeros(0), 3) == (0.0, 0.0)


def test_linear_head_is_scikit_learns_logistic_regression():
    """One C, no grid: the L-BFGS fit reaches scikit-learn's optimum on the same standardized
    features (logits equal up to a per-row constant)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from llmembed.training import predict_logits

    feats, y = _data(n=300)
    cfg = TrainConfig(C=0.1, val_fraction=0.1, seed=1)
    res = train_head(feats, y, 3, HeadConfig(fusion="linear"), cfg, progress=False)
    tr, _ = split_validation(y, 0.1, 1)
    flat = np.concatenate([f.reshape(len(y), -1) for f in feats], axis=1)
    scaler = StandardScaler().fit(flat[tr])  # the head standardizes with the training part
    sk = LogisticRegression(C=0.1, max_iter=5000, tol=1e-10).fit(scaler.transform(flat), y)
    ours = predict_logits(res.head, [__import__("torch").as_tensor(f) for f in feats]).numpy()
    theirs = sk.decision_function(scaler.transform(flat))
    center = lambda a: a - a.mean(1, keepdims=True)  # noqa: E731
    assert np.abs(center(ours) - center(theirs)).max() < 1e-2
    assert res.best_epoch == 0 and res.history == [{"C": 0.1, "refit_rows": 300}]


def test_linear_head_chooses_C_on_validation():
    feats, y = _data(n=300)
    res = train_head(feats, y, 3, HeadConfig(fusion="linear"), TrainConfig(), progress=False)
    scores = [r for r in res.history if "val_accuracy" in r]
    assert [r["C"] for r in scores] == sorted(TrainConfig().C_grid)
    chosen = res.history[-1]["C"]
    assert max(r["val_accuracy"] for r in scores) == next(
        r["val_accuracy"] for r in scores if r["C"] == chosen
    )
    assert res.val_metrics["accuracy"] > 0.9
    assert res.head.n_parameters() == (16 + 4) * 3 + 3  # one Linear on every vector


def test_linear_head_grid_needs_a_validation_split():
    feats, y = _data(n=60)
    with pytest.raises(LLMEmbedError, match="val_fraction is 0"):
        train_head(feats, y, 3, HeadConfig(fusion="linear"), TrainConfig(val_fraction=0))
    res = train_head(
        feats, y, 3, HeadConfig(fusion="linear"), TrainConfig(C=1.0, val_fraction=0), progress=False
    )
    assert res.history[-1] == {"C": 1.0, "refit_rows": 60}


@pytest.mark.parametrize("bad", [0, -1.0, [], [0.1, 0], "x"])
def test_bad_C(bad):
    with pytest.raises(LLMEmbedError, match="C must be"):
        TrainConfig(C=bad)


def test_linear_head_chooses_C_by_cross_validation():
    feats, y = _data(n=120)
    cfg = TrainConfig(C=[0.01, 1.0], C_folds=3, val_fraction=0.0)
    res = train_head(feats, y, 3, HeadConfig(fusion="linear"), cfg, progress=False)
    assert [r["C"] for r in res.history[:2]] == [0.01, 1.0]
    assert res.val_metrics["n"] == len(y)  # every row scored once, out of fold
    assert res.history[-1]["refit_rows"] == len(y)
    with pytest.raises(LLMEmbedError, match="C_folds"):
        TrainConfig(C_folds=1)


@pytest.mark.parametrize("rows", [7, 8, 21])
def test_affine_gradient_in_parts_equals_autograds(rows, monkeypatch):
    """The linear head's product x @ w.T + b with its gradient summed over parts of GRAD_ROWS
    rows (7: too few for two parts; 8: two parts; 21: five and a remainder): the same gradients
    as autograd's own (up to float32 rounding), the same every run."""
    monkeypatch.setattr(training, "GRAD_ROWS", 4)
    gen = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 40, generator=gen)
    g = torch.randn(rows, 3, generator=gen)
    w = torch.randn(3, 40, generator=gen, requires_grad=True)
    b = torch.randn(3, generator=gen, requires_grad=True)

    def grads(product) -> tuple[torch.Tensor, torch.Tensor]:
        w.grad = b.grad = None
        (product() * g).sum().backward()
        return w.grad.clone(), b.grad.clone()

    parts = grads(lambda: training._Affine.apply(x, w, b))
    plain = grads(lambda: x @ w.T + b)
    torch.testing.assert_close(parts[0], plain[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(parts[1], plain[1])
    again = grads(lambda: training._Affine.apply(x, w, b))
    assert torch.equal(parts[0], again[0]) and torch.equal(parts[1], again[1])
    torch.testing.assert_close(training._Affine.apply(x, w, b), x @ w.T + b)


def test_preconditioned_lbfgs_minimizes_as_well_in_fewer_evaluations():
    """On a design whose eigenvalues spread over four orders of magnitude (as standardized
    embeddings' do), L-BFGS in the eigenbasis of X^T X / n minimizes the same objective
    (W = (V * q) U^T is only a change of coordinates) as well or better, for a weak and a
    strong regularization, and with the weak one in less than half the evaluations."""
    gen = torch.Generator().manual_seed(0)
    n, d = 2000, 60
    rotation = torch.linalg.qr(torch.randn(d, d, generator=gen))[0]
    x = (torch.randn(n, d, generator=gen) * torch.logspace(-2, 0, d)) @ rotation  # 1e-4 .. 1
    y = (x @ torch.randn(d, generator=gen) > 0).long()
    design = training._Fused(x)
    head = training.FusionHead([(1, d)], 2, HeadConfig(fusion="linear"))
    term = design.data_term(None, y, training._Objective(head, y.numpy(), None, "accuracy"))
    basis = training._eigenbasis(design)
    start = torch.zeros(2, d), torch.zeros(2)
    for c in (0.01, 100.0):
        runs = {}
        for kind, given in (("plain", None), ("preconditioned", basis)):
            calls = []
            w, b = training._lbfgs(
                lambda w, b: calls.append(1) or term(w, b),  # noqa: B023
                n,
                start,
                c,
                TrainConfig(max_iter=500, tol=1e-5),
                given,
            )
            loss = torch.nn.functional.cross_entropy(x @ w.T + b, y)
            runs[kind] = float(loss + 0.5 / (c * n) * w.square().sum()), len(calls)
        assert runs["preconditioned"][0] <= runs["plain"][0] * (1 + 1e-5), (c, runs)  # as low
        if c == 100.0:  # weak regularization: the design's own conditioning rules
            assert 2 * runs["preconditioned"][1] < runs["plain"][1], runs


def test_default_tolerance_stops_near_the_optimum_in_fewer_evaluations():
    """The default ``tol`` (1e-4, on the preconditioned gradient) leaves the objective within
    1e-5 (relative) of a fit run to 1e-8, on an ill-conditioned design (eigenvalues over four
    orders of magnitude) and for a weak and a strong regularization, with fewer evaluations
    than 1e-5 takes."""
    gen = torch.Generator().manual_seed(1)
    n, d = 3000, 80
    rotation = torch.linalg.qr(torch.randn(d, d, generator=gen))[0]
    x = (torch.randn(n, d, generator=gen) * torch.logspace(-2, 0, d)) @ rotation
    y = (x @ torch.randn(d, 3, generator=gen) + torch.randn(n, 3, generator=gen)).argmax(1)
    design = training._Fused(x)
    head = training.FusionHead([(1, d)], 3, HeadConfig(fusion="linear"))
    term = design.data_term(None, y, training._Objective(head, y.numpy(), None, "accuracy"))
    basis = training._eigenbasis(design)
    start = torch.zeros(3, d), torch.zeros(3)
    assert TrainConfig().tol == 1e-4
    for c in (0.01, 100.0):
        runs = {}
        for tol in (1e-8, 1e-5, TrainConfig().tol):
            calls = []
            config = TrainConfig(max_iter=2000, tol=tol)
            w, b = training._lbfgs(
                lambda w, b: calls.append(1) or term(w, b),  # noqa: B023
                n,
                start,
                c,
                config,
                basis,
            )
            loss = torch.nn.functional.cross_entropy(x @ w.T + b, y)
            runs[tol] = float(loss + 0.5 / (c * n) * w.square().sum()), len(calls)
        best = runs[1e-8][0]
        assert runs[1e-4][0] - best <= 1e-5 * best, (c, runs)
        assert runs[1e-4][1] < runs[1e-5][1], (c, runs)
