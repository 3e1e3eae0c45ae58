import math

import numpy as np
import pytest
import torch
from scipy import stats

from pyro_contrast.diagnostics import gaussianity, isotropy

# 400 data sets: the rejection rate of a level-0.05 test has standard error 0.011, so
# 0.05 +- 0.03 is a 2.75-sigma band.
NUM_DATASETS = 400


def _affine(x, seed=0):
    """An arbitrary non-degenerate affine map: Mardia's statistics must not notice it."""
    g = torch.Generator().manual_seed(seed)
    d = x.shape[-1]
    matrix = torch.randn(d, d, generator=g, dtype=x.dtype) + 2 * torch.eye(d, dtype=x.dtype)
    return x @ matrix + torch.randn(d, generator=g, dtype=x.dtype)


def _mardia_by_loops(x):
    n, d = x.shape
    centered = x - x.mean(0)
    inverse = np.linalg.inv(centered.T @ centered / n)
    g = np.array([[ci @ inverse @ cj for cj in centered] for ci in centered])
    return (g**3).sum() / n**2, np.mean(np.diag(g) ** 2)


@pytest.mark.parametrize("n,d", [(12, 3), (30, 1), (40, 6)])
def test_statistics_match_direct_formulas(n, d):
    x = torch.randn(n, d, dtype=torch.float64)
    b1, b2 = _mardia_by_loops(x.numpy())
    result = gaussianity(x)
    k = (d + 1) * (n + 1) * (n + 3) / (n * ((n + 1) * (d + 1) - 6))
    skew = result.tests["skewness"]
    assert skew.statistic == pytest.approx(n * k * b1 / 6, rel=1e-9)
    assert skew.dof == d * (d + 1) * (d + 2) / 6
    assert skew.p_value == pytest.approx(stats.chi2.sf(n * k * b1 / 6, skew.dof), rel=1e-9)
    mean = d * (d + 2) * (n - 1) / (n + 1)
    var = 8 * d * (d + 2) * (n - 3) * (n - d - 1) * (n - d + 1)
    var /= (n + 1) ** 2 * (n + 3) * (n + 5)
    kurt = result.tests["kurtosis"]
    assert kurt.statistic == pytest.approx((b2 - mean) / math.sqrt(var), rel=1e-9)
    assert kurt.p_value == pytest.approx(2 * stats.norm.sf(abs(kurt.statistic)), rel=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_affine_invariance(dtype):
    x = torch.randn(80, 4, dtype=torch.float64)
    reference = gaussianity(x)
    moved = gaussianity(_affine(x).to(dtype))
    tol = 1e-3 if dtype == torch.float32 else 1e-8
    for name in ("skewness", "kurtosis"):
        assert moved.tests[name].statistic == pytest.approx(
            reference.tests[name].statistic, rel=tol, abs=tol
        )


def test_monte_carlo_p_values():
    x = torch.randn(50, 3, dtype=torch.float64)
    result = gaussianity(x, num_simulations=999, generator=1)
    assert any("Monte Carlo" in note for note in result.notes)
    for name in ("skewness", "kurtosis"):
        p = result.tests[name].p_value
        # the Monte Carlo p-value has binomial error <= sqrt(0.25 / 999) = 0.016: 5 sigma
        assert abs(p - gaussianity(x).tests[name].p_value) < 0.15
        assert p * 1000 == pytest.approx(round(p * 1000))  # (1 + count) / (1 + 999)
    again = gaussianity(x, num_simulations=999, generator=1)
    assert again.p_value == result.p_value


@pytest.mark.parametrize(
    "x,match",
    [
        (torch.randn(5, 4), "more samples than dimensions"),
        (torch.randn(2, 1), "at least 3 rows"),
        (torch.cat([torch.randn(20, 2), torch.ones(20, 1)], 1), "singular"),
        (torch.full((20, 2), float("inf")), "inf"),
    ],
)
def test_bad_input(x, match):
    with pytest.raises(ValueError, match=match):
        gaussianity(x)


def test_bad_options():
    with pytest.raises(ValueError, match="num_simulations"):
        gaussianity(torch.randn(20, 2), num_simulations=0)
    with pytest.raises(TypeError, match="generator"):
        gaussianity(torch.randn(20, 2), num_simulations=5, generator="seed")


@pytest.mark.slow
def test_null_rejection_rate():
    x = _affine(torch.randn(NUM_DATASETS, 200, 5, dtype=torch.float64))
    results = [gaussianity(xi) for xi in x]
    for key in ("skewness", "kurtosis"):
        rate = np.mean([r.tests[key].rejects(0.05) for r in results])
        assert abs(rate - 0.05) <= 0.03, (key, rate)
    rate = np.mean([r.rejects(0.05) for r in results])
    assert abs(rate - 0.05) <= 0.03, rate


@pytest.mark.slow
def test_monte_carlo_null_rejection_rate():
    # 200 data sets: standard error 0.015, so the band is 0.05 +- 0.045 (3 sigma)
    x = torch.randn(200, 40, 6, dtype=torch.float64)
    rate = np.mean(
        [gaussianity(xi, num_simulations=99, generator=i).rejects() for i, xi in enumerate(x)]
    )
    assert abs(rate - 0.05) <= 0.045, rate


@pytest.mark.slow
def test_power_against_mixture_of_two_gaussians():
    # 90% N(0, I) and 10% N(5 e1, I) in 4 dimensions: a skewed, bimodal cloud
    x = torch.randn(NUM_DATASETS, 200, 4, dtype=torch.float64)
    x[..., 0] += 5.0 * (torch.rand(NUM_DATASETS, 200) < 0.1)
    rate = np.mean([gaussianity(xi).rejects(0.05) for xi in x])
    assert rate >= 0.95, rate


@pytest.mark.slow
def test_power_against_scale_mixture_in_high_dimension():
    # half N(0, I), half N(0, 4 I) in 64 dimensions: heavy tails, zero skewness
    x = torch.randn(NUM_DATASETS, 200, 64, dtype=torch.float64)
    x *= 1 + (torch.rand(NUM_DATASETS, 200, 1) < 0.5)
    rate = np.mean([gaussianity(xi).rejects(0.05) for xi in x])
    assert rate >= 0.95, rate


@pytest.mark.parametrize("n,d", [(30, 4), (10, 50)])
def test_isotropy_matches_direct_formula(n, d):
    x = torch.randn(n, d, dtype=torch.float64) @ torch.diag(torch.linspace(1, 2, d).double())
    s = np.cov(x.numpy(), rowvar=False)
    m = n - 1
    a1 = np.trace(s) / d
    a2 = m**2 / ((m - 1) * (m + 2)) * (np.trace(s @ s) - np.trace(s) ** 2 / m) / d
    statistic = m / 2 * (a2 / a1**2 - 1)
    result = isotropy(x)
    assert result.statistic == pytest.approx(statistic, rel=1e-9)
    assert result.p_value == pytest.approx(stats.norm.sf(statistic), rel=1e-9)
    assert result.details["sphericity_ratio"] == pytest.approx(a2 / a1**2, rel=1e-9)


def test_isotropy_invariances():
    x = torch.randn(50, 6, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    moved = 3.0 * x @ rotation + 7.0
    assert isotropy(moved).statistic == pytest.approx(isotropy(x).statistic, rel=1e-9)


def test_isotropy_bad_input():
    with pytest.raises(ValueError, match="zero variance"):
        isotropy(torch.ones(10, 3))
    with pytest.raises(ValueError, match="at least 3 rows"):
        isotropy(torch.randn(2, 3))


@pytest.mark.slow
@pytest.mark.parametrize("n,d", [(200, 64), (200, 5), (50, 200)])
def test_isotropy_null_rejection_rate(n, d):
    x = 2.0 * torch.randn(NUM_DATASETS, n, d, dtype=torch.float64) + 1.0
    rate = np.mean([isotropy(xi).rejects(0.05) for xi in x])
    assert abs(rate - 0.05) <= 0.03, rate


@pytest.mark.slow
def test_isotropy_power():
    scale = torch.linspace(0.7, 1.4, 16, dtype=torch.float64)
    x = torch.randn(NUM_DATASETS, 200, 16, dtype=torch.float64) * scale
    rate = np.mean([isotropy(xi).rejects(0.05) for xi in x])
    assert rate >= 0.95, rate
