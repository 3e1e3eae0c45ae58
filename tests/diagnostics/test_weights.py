import math

import pytest
import torch

from pyro_contrast.diagnostics import effective_sample_size
from tests.common import assert_close


@pytest.mark.parametrize("shape,dim", [((5,), -1), ((3, 7), -1), ((3, 7), 0), ((2, 3, 4), 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_direct_formula(shape, dim, dtype):
    log_weights = torch.randn(shape, dtype=torch.float64)
    w = log_weights.exp()
    expected = w.sum(dim).pow(2) / w.pow(2).sum(dim)
    ess, fraction = effective_sample_size(log_weights.to(dtype), dim=dim)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert ess.dtype == dtype
    assert_close(ess, expected, rtol=tol, atol=0)
    assert_close(fraction, expected / shape[dim], rtol=tol, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_stable_for_scores_spanning_hundreds_of_nats(dtype):
    log_weights = torch.tensor([[500.0, 499.0, -300.0, 498.0]]).to(dtype)
    w = torch.tensor([1.0, math.exp(-1), 0.0, math.exp(-2)], dtype=torch.float64)
    expected = w.sum() ** 2 / (w**2).sum()
    ess = effective_sample_size(log_weights).ess
    assert ess.dtype == (torch.float32 if dtype == torch.float16 else dtype)
    assert_close(ess, expected.reshape(1), rtol=1e-5, atol=0)


def test_limits():
    assert_close(effective_sample_size(torch.full((2, 9), -40.0)).ess, torch.full((2,), 9.0))
    one_hot = torch.tensor([0.0, -float("inf"), -float("inf")])
    ess, fraction = effective_sample_size(one_hot)
    assert_close(ess, torch.tensor(1.0))
    assert_close(fraction, torch.tensor(1 / 3))


@pytest.mark.parametrize(
    "log_weights,match",
    [
        (torch.tensor([[0.0, float("nan")]]), "NaN"),
        (torch.tensor([float("inf"), 0.0]), "\\+inf"),
        (torch.full((2, 3), -float("inf")), "all -inf"),
        (torch.zeros(3, 0), "empty"),
        (torch.tensor(1.0), "at least one dimension"),
    ],
)
def test_bad_input(log_weights, match):
    with pytest.raises(ValueError, match=match):
        effective_sample_size(log_weights)


def test_bad_dim():
    with pytest.raises(ValueError, match="dim=2"):
        effective_sample_size(torch.zeros(3, 4), dim=2)
