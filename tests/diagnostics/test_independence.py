import numpy as np
import pytest
import torch
from scipy import stats

from pyro_contrast.diagnostics import conditional_independence
from pyro_contrast.sim import LinearGaussianChain

# 400 data sets: the rejection rate of a level-0.05 test has standard error 0.011, so
# 0.05 +- 0.03 is a 2.75-sigma band.
NUM_DATASETS = 400


def _wilks_by_determinants(a, c, b):
    """Bartlett's statistic from residual covariance determinants (no QR, no SVD)."""
    n, p, q, r = a.shape[0], a.shape[1], c.shape[1], b.shape[1]
    design = np.hstack([np.ones((n, 1)), b])
    hat = design @ np.linalg.solve(design.T @ design, design.T)
    joint = np.hstack([a, c]) - hat @ np.hstack([a, c])
    cov = joint.T @ joint
    log_lambda = (
        np.linalg.slogdet(cov)[1]
        - np.linalg.slogdet(cov[:p, :p])[1]
        - np.linalg.slogdet(cov[p:, p:])[1]
    )
    return -(n - r - 1 - (p + q + 1) / 2) * log_lambda


@pytest.mark.parametrize("p,q,r", [(1, 1, 1), (3, 2, 4), (5, 5, 2)])
def test_statistic_matches_determinant_formula(p, q, r):
    n = 60
    b = torch.randn(n, r, dtype=torch.float64)
    a = b @ torch.randn(r, p, dtype=torch.float64) + torch.randn(n, p, dtype=torch.float64)
    c = b @ torch.randn(r, q, dtype=torch.float64) + torch.randn(n, q, dtype=torch.float64)
    result = conditional_independence(a, c, b)
    expected = _wilks_by_determinants(a.numpy(), c.numpy(), b.numpy())
    assert result.statistic == pytest.approx(expected, rel=1e-9)
    assert result.dof == p * q
    assert result.p_value == pytest.approx(stats.chi2.sf(expected, p * q), rel=1e-9)
    rho = result.details["canonical_correlations"]
    assert rho.shape == (min(p, q),)
    assert bool(((rho >= 0) & (rho <= 1)).all())


def test_invariant_to_invertible_maps_and_accepts_vectors():
    n = 80
    b = torch.randn(n, dtype=torch.float64)
    a = (b + torch.randn(n, dtype=torch.float64)).unsqueeze(-1)
    c = torch.randn(n, 2, dtype=torch.float64) + b.unsqueeze(-1)
    mix = torch.tensor([[2.0, 1.0], [0.5, -1.0]], dtype=torch.float64)
    reference = conditional_independence(a[:, 0], c, b)
    moved = conditional_independence(3 * a - 1, c @ mix + 4, 2 * b - 7)
    assert moved.statistic == pytest.approx(reference.statistic, rel=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_detects_direct_link(dtype):
    n = 300
    b = torch.randn(n, 2)
    a = b + torch.randn(n, 2)
    c = b + a[:, :1] + torch.randn(n, 2)  # C depends on A beyond B
    assert conditional_independence(a.to(dtype), c.to(dtype), b.to(dtype)).p_value < 1e-6


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.randn(10, 2), torch.randn(9, 2), torch.randn(10, 2)), "paired"),
        ((torch.randn(8, 3), torch.randn(8, 3), torch.randn(8, 2)), "n > p \\+ q \\+ r \\+ 2"),
        ((torch.ones(20, 1), torch.randn(20, 1), torch.randn(20, 1)), "constant"),
        ((torch.randn(20, 2), torch.randn(20, 1), torch.ones(20, 1)), "b has linearly"),
        ((torch.randn(20, 1).repeat(1, 2), torch.randn(20, 1), torch.randn(20, 1)), "dependent"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        conditional_independence(*args)


def _triplets(chain, num_datasets, n):
    a, b, c = chain.sample(num_datasets * n, dtype=torch.float64)
    return [(x.view(num_datasets, n, -1)) for x in (a, b, c)]


@pytest.mark.slow
def test_null_rejection_rate_on_linear_gaussian_chain():
    chain = LinearGaussianChain(dim_a=3, dim_b=2, dim_c=3, rho=0.0, seed=1)
    a, b, c = _triplets(chain, NUM_DATASETS, 200)
    rate = np.mean([conditional_independence(*x).rejects(0.05) for x in zip(a, c, b, strict=True)])
    assert abs(rate - 0.05) <= 0.03, rate


@pytest.mark.slow
def test_power_against_hidden_confounder():
    chain = LinearGaussianChain(dim_a=3, dim_b=2, dim_c=3, rho=0.5, seed=1)
    a, b, c = _triplets(chain, NUM_DATASETS, 200)
    rate = np.mean([conditional_independence(*x).rejects(0.05) for x in zip(a, c, b, strict=True)])
    assert rate >= 0.95, rate
