import math

import pytest
import torch

from llmembed.errors import LLMEmbedError
from llmembed.heads import FusionHead, HeadConfig, cooccurrence


def test_cooccurrence_matches_hand_computation():
    # Three 2-d vectors: P[i][j] = <x_i, x_j>, then 2*sigmoid(sigma*P) - 1.
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])
    sigma = 0.5
    dots = [[1, 0, 1], [0, 4, 2], [1, 2, 2]]
    expected = [2 / (1 + math.exp(-sigma * d)) - 1 for row in dots for d in row]
    torch.testing.assert_close(cooccurrence(x, sigma)[0], torch.tensor(expected))


def test_head_fused_width_and_logits():
    # backbone 0: 3 vectors of width 8; backbone 1: 1 vector of width 4 (already proj_dim).
    cfg = HeadConfig(
        proj_dim=4, project_same_width=False, hidden=[16], mean_of=0, standardize=False
    )
    head = FusionHead([(3, 8), (1, 4)], n_classes=5, config=cfg)
    feats = [torch.randn(6, 3, 8), torch.randn(6, 1, 4)]
    assert head.fuse(feats).shape == (6, 4 * 4 + 8)
    assert head(feats).shape == (6, 5)
    both = FusionHead([(3, 8), (1, 4)], 5, HeadConfig(proj_dim=4, hidden=[16], mean_of=[0, 1]))
    assert both.fuse(feats).shape == (6, 4 * 4 + 8 + 4)
    # The unprojected vector enters the co-occurrence matrix raw.
    assert isinstance(head.projections[1][0], torch.nn.Identity)


def test_head_cooc_uses_projected_vectors_exactly():
    cfg = HeadConfig(
        proj_dim=2,
        project_same_width=False,
        hidden=[],
        mean_of=None,
        sigma=1.0,
        standardize=False,
        dropout=0.0,
    )
    head = FusionHead([(3, 2)], n_classes=2, config=cfg).eval()
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])
    torch.testing.assert_close(head.fuse([x]), cooccurrence(x, 1.0))


@pytest.mark.parametrize("fusion,width", [("mean", 4), ("max", 4), ("concat", 16)])
def test_simple_fusions(fusion, width):
    cfg = HeadConfig(fusion=fusion, proj_dim=4, hidden=[8], mean_of=None)
    head = FusionHead([(2, 6), (2, 5)], n_classes=3, config=cfg)
    assert head.fuse([torch.randn(2, 2, 6), torch.randn(2, 2, 5)]).shape == (2, width)


def test_standardization_buffers_are_used():
    cfg = HeadConfig(proj_dim=2, hidden=[], mean_of=0, fusion="mean", dropout=0.0)
    head = FusionHead([(1, 2)], n_classes=2, config=cfg).eval()
    x = torch.tensor([[[1.0, 10.0]], [[3.0, 30.0]]])
    head.set_standardization([x])
    fused = head.fuse([x])
    # The raw-mean part is the z-scored input: mean 0 per dimension.
    torch.testing.assert_close(fused[:, 2:].mean(0), torch.zeros(2))


def test_balance_gives_every_linear_input_the_same_total_variance():
    wide, narrow = torch.randn(200, 2, 24) * 5 + 1, torch.randn(200, 1, 3) * 0.1
    head = FusionHead([(2, 24), (1, 3)], 3, HeadConfig(fusion="linear", balance=True))
    head.set_standardization([wide, narrow])
    fused = head.fuse([wide, narrow])
    variance = fused.var(0)
    # 48 dimensions of variance 1 against 3 dimensions scaled by sqrt(48 / 3): 48 each.
    torch.testing.assert_close(variance[:48].sum(), torch.tensor(48.0))
    torch.testing.assert_close(variance[48:].sum(), torch.tensor(48.0))
    plain = FusionHead([(2, 24), (1, 3)], 3, HeadConfig(fusion="linear"))
    plain.set_standardization([wide, narrow])
    torch.testing.assert_close(plain.fuse([wide, narrow]).var(0)[48:].sum(), torch.tensor(3.0))
    # Only the linear fusion is balanced: the MLP heads standardize as before.
    mlp = FusionHead([(1, 3)], 3, HeadConfig(fusion="mean", proj_dim=3, hidden=[], balance=True))
    mlp.set_standardization([narrow])
    torch.testing.assert_close(mlp.std_0, narrow.std(0))
    with pytest.raises(LLMEmbedError, match="balance must be true or false"):
        HeadConfig(balance="yes")


def test_double_softmax_loss_differs():
    logits = torch.tensor([[4.0, -4.0]])
    target = torch.tensor([0])
    plain = FusionHead([(1, 2)], 2, HeadConfig(proj_dim=2, hidden=[]))
    double = FusionHead([(1, 2)], 2, HeadConfig(proj_dim=2, hidden=[], double_softmax=True))
    assert plain.loss(logits, target) < 0.01
    # softmax of a softmax can never get the loss near zero: the published flaw.
    assert double.loss(logits, target) > 0.3


def test_bad_head_configs():
    with pytest.raises(LLMEmbedError):
        HeadConfig(fusion="attention")
    with pytest.raises(LLMEmbedError, match="mean_of"):
        FusionHead([(1, 2)], 2, HeadConfig(mean_of=3))
    with pytest.raises(LLMEmbedError, match="Unknown head setting"):
        HeadConfig.from_dict({"sigmaa": 1})
