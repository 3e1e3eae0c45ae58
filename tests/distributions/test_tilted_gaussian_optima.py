"""The Gaussian-optimal tilts against the conditional they must reproduce (closed forms)."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from pyro_contrast.distributions.tilted_gaussian_optima import (
    optimal_bilinear_weight,
    optimal_l2_tilt,
)
from tests.common import assert_close


def _joint(seed, dim_x, dim_y):
    generator = torch.Generator().manual_seed(seed)
    root = torch.randn(dim_x + dim_y, dim_x + dim_y, generator=generator, dtype=torch.float64)
    joint = root @ root.T + 0.5 * torch.eye(dim_x + dim_y, dtype=torch.float64)
    return joint[:dim_x, :dim_x], joint[:dim_x, dim_x:], joint[dim_x:, dim_x:]


@given(
    seed=st.integers(0, 2**16),
    dim_x=st.integers(1, 4),
    dim_y=st.integers(1, 4),
    temperature=st.floats(0.05, 20.0),
)
def test_bilinear_tilt_reproduces_the_conditional_mean(seed, dim_x, dim_y, temperature):
    cov_xx, cov_xy, cov_yy = _joint(seed, dim_x, dim_y)
    weight = optimal_bilinear_weight(cov_xx, cov_xy, cov_yy, temperature)
    # the tilt exp(x^T W y / T) of N(0, S_yy) has mean S_yy W^T x / T = E[y | x]
    regression = torch.linalg.solve(cov_xx, cov_xy).T  # S_yx S_xx^-1
    assert_close(cov_yy @ weight.T / temperature, regression, atol=1e-8, rtol=1e-8)


@given(
    seed=st.integers(0, 2**16),
    dim_x=st.integers(1, 4),
    dim_y=st.integers(1, 4),
    temperature=st.floats(0.05, 20.0),
)
def test_l2_tilt_reproduces_the_conditional_mean_and_covariance(seed, dim_x, dim_y, temperature):
    cov_xx, cov_xy, cov_yy = _joint(seed, dim_x, dim_y)
    g, h = optimal_l2_tilt(cov_xx, cov_xy, cov_yy, temperature)
    conditional = cov_yy - cov_xy.T @ torch.linalg.solve(cov_xx, cov_xy)
    # the tilt exp(-|Gx - Hy|^2 / (2T)) of N(0, S_yy): precision S_yy^-1 + H^T H / T and
    # mean Sigma H^T G x / T, which must be the true conditional's
    precision = torch.linalg.inv(cov_yy) + h.T @ h / temperature
    assert_close(torch.linalg.inv(precision), conditional, atol=1e-7, rtol=1e-7)
    regression = torch.linalg.solve(cov_xx, cov_xy).T
    assert_close(
        torch.linalg.solve(precision, h.T @ g) / temperature, regression, atol=1e-7, rtol=1e-7
    )
