import pytest
import torch

from llmembed.errors import LLMEmbedError
from llmembed.pooling import check_pooling, pool


def _batch():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    return hidden, mask


def test_masked_mean_ignores_padding():
    hidden, mask = _batch()
    out = pool(hidden, mask, "mean")
    torch.testing.assert_close(out[0], hidden[0, :3].mean(0))
    torch.testing.assert_close(out[1], hidden[1, :2].mean(0))
    # Changing padded positions changes nothing.
    hidden2 = hidden.clone()
    hidden2[0, 3] = 1e6
    hidden2[1, 2:] = -1e6
    torch.testing.assert_close(pool(hidden2, mask, "mean"), out)


def test_mean_no_first_last_first_and_padded():
    hidden, mask = _batch()
    torch.testing.assert_close(pool(hidden, mask, "mean_no_first")[0], hidden[0, 1:3].mean(0))
    torch.testing.assert_close(pool(hidden, mask, "mean_no_first")[1], hidden[1, 1])
    torch.testing.assert_close(pool(hidden, mask, "last")[1], hidden[1, 1])
    torch.testing.assert_close(pool(hidden, mask, "first"), hidden[:, 0])
    torch.testing.assert_close(pool(hidden, mask, "mean_padded"), hidden.mean(1))


def test_mean_no_first_keeps_single_token():
    hidden = torch.ones(1, 2, 3)
    mask = torch.tensor([[1, 0]])
    torch.testing.assert_close(pool(hidden, mask, "mean_no_first"), torch.ones(1, 3))


def test_pooling_in_float32_from_bf16():
    hidden, mask = _batch()
    assert pool(hidden.bfloat16(), mask, "mean").dtype == torch.float32


def test_unknown_pooling():
    with pytest.raises(LLMEmbedError, match="Known poolings"):
        check_pooling("avg")
