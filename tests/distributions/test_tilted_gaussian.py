"""TiltedGaussian: exact Gaussian conditionals of bilinear and L2 tilts (the mathematics page,
§7)."""

import math

import numpy as np
import pyro.distributions as dist
import pytest
import scipy.integrate
import scipy.stats
import torch

from pyro_contrast.distributions.tilted_gaussian import (
    TiltedGaussian,
    optimal_bilinear_weight,
    optimal_l2_tilt,
)
from tests.common import assert_close
from tests.distributions.harness import DistributionHarness, Example

DIM_X, DIM_Y, RANK = 2, 3, 2


def _covariance(factor):
    return factor @ factor.mT + 0.5 * torch.eye(factor.shape[-1], dtype=factor.dtype)


def _bilinear(x, weight, loc, cov_factor, temperature=0.7):
    # building S from a factor keeps finite differences inside the PD cone
    return TiltedGaussian.bilinear(x, weight, loc, _covariance(cov_factor), temperature)


def _l2(x, G, H, loc, cov_factor, temperature=0.7):
    return TiltedGaussian.l2(x, G, H, loc, _covariance(cov_factor), temperature)


def _bilinear_params(batch_shape, dtype):
    return {
        "x": torch.randn(batch_shape + (DIM_X,), dtype=dtype),
        "weight": 0.5 * torch.randn(DIM_X, DIM_Y, dtype=dtype),
        "loc": torch.randn(DIM_Y, dtype=dtype),
        "cov_factor": 0.5 * torch.randn(DIM_Y, DIM_Y, dtype=dtype),
    }


def _l2_params(batch_shape, dtype):
    return {
        "x": torch.randn(batch_shape + (DIM_X,), dtype=dtype),
        "G": torch.randn(RANK, DIM_X, dtype=dtype),
        "H": torch.randn(RANK, DIM_Y, dtype=dtype),
        "loc": torch.randn(batch_shape + (DIM_Y,), dtype=dtype),
        "cov_factor": 0.5 * torch.randn(DIM_Y, DIM_Y, dtype=dtype),
    }


def _scipy_log_prob(d, value):
    flat_loc = d.loc.reshape(-1, d.event_shape[0]).numpy()
    flat_cov = d.covariance_matrix.reshape(-1, *d.event_shape * 2).numpy()
    flat_value = value.reshape(value.shape[0], -1, d.event_shape[0]).numpy()
    columns = [
        scipy.stats.multivariate_normal(m, s).logpdf(flat_value[:, i])
        for i, (m, s) in enumerate(zip(flat_loc, flat_cov, strict=True))
    ]
    return np.stack(columns, -1).reshape(value.shape[:-1])


_INVALID = [
    lambda: TiltedGaussian.bilinear(torch.ones(2), torch.eye(2), torch.zeros(2), -torch.eye(2)),
    lambda: TiltedGaussian.bilinear(torch.ones(2), torch.eye(2), torch.zeros(2), torch.eye(2), 0.0),
    lambda: TiltedGaussian.bilinear(torch.ones(3), torch.eye(2), torch.zeros(2), torch.eye(2)),
    lambda: TiltedGaussian.bilinear(
        torch.tensor([1.0, math.nan]), torch.eye(2), torch.zeros(2), torch.eye(2)
    ),
    lambda: TiltedGaussian.l2(
        torch.ones(2), torch.eye(2), torch.ones(3, 2), torch.zeros(2), torch.eye(2)
    ),
    lambda: TiltedGaussian.l2(
        torch.ones(2),
        torch.eye(2),
        torch.eye(2),
        torch.zeros(2),
        torch.tensor([[1.0, 2.0], [0.0, 1.0]]),
    ),
    lambda: TiltedGaussian(torch.zeros(3, 2), torch.eye(2), log_normalizer=torch.zeros(4)),
]


class TestTiltedGaussianHarness(DistributionHarness):
    examples = [
        Example(
            "bilinear",
            factory=_bilinear,
            params=_bilinear_params,
            invalid=_INVALID,
            scipy_log_prob=_scipy_log_prob,
            scipy_rtol=1e-9,
        ),
        Example(
            "l2",
            factory=_l2,
            params=_l2_params,
            invalid=_INVALID,
            grad_params=("x", "H", "loc", "cov_factor"),
            scipy_log_prob=_scipy_log_prob,
            scipy_rtol=1e-9,
        ),
    ]


def _bilinear_tilt(x, weight, y, temperature):
    return ((x @ weight) * y).sum(-1) / temperature


def _l2_tilt(x, G, H, y, temperature):
    return -0.5 * ((x @ G.mT) - (y @ H.mT)).pow(2).sum(-1) / temperature


def _random_case(kind, batch_shape, dim_y=DIM_Y):
    loc = torch.randn(dim_y, dtype=torch.float64)
    cov = _covariance(0.7 * torch.randn(dim_y, dim_y, dtype=torch.float64))
    x = torch.randn(batch_shape + (DIM_X,), dtype=torch.float64)
    if kind == "bilinear":
        weight = torch.randn(DIM_X, dim_y, dtype=torch.float64)
        d = TiltedGaussian.bilinear(x, weight, loc, cov, 1.3)
        return d, loc, cov, lambda y: _bilinear_tilt(x, weight, y, 1.3)
    G = torch.randn(RANK, DIM_X, dtype=torch.float64)
    H = torch.randn(RANK, dim_y, dtype=torch.float64)
    d = TiltedGaussian.l2(x, G, H, loc, cov, 0.6)
    return d, loc, cov, lambda y: _l2_tilt(x, G, H, y, 0.6)


@pytest.mark.parametrize("batch_shape", [(), (4,), (3, 2)])
@pytest.mark.parametrize("kind", ["bilinear", "l2"])
def test_log_prob_is_tilted_prior(kind, batch_shape):
    # log p(y|x) = log p(y) + t(x, y) - log Z(x) is a quadratic identity in y: checking it at
    # more points than a quadratic in 3 variables has coefficients pins mean, cov and log Z.
    d, loc, cov, tilt = _random_case(kind, batch_shape)
    y = 2 * torch.randn((12,) + batch_shape + (DIM_Y,), dtype=torch.float64)
    prior = dist.MultivariateNormal(loc, cov)
    expected = prior.log_prob(y) + tilt(y) - d.log_normalizer
    assert d.log_normalizer.shape == batch_shape
    assert_close(d.log_prob(y), expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("kind", ["bilinear", "l2"])
@pytest.mark.parametrize("dim_y", [1, 2])
def test_normalizer_matches_quadrature(kind, dim_y):
    d, loc, cov, tilt = _random_case(kind, (), dim_y)
    prior = dist.MultivariateNormal(loc, cov)
    shift = float(d.log_normalizer)  # integrate the density ratio, of size ~1

    def log_integrand(y):
        return prior.log_prob(y) + tilt(y) - shift

    if dim_y == 1:
        centre, sd = float(d.mean), float(d.stddev)
        value = scipy.integrate.quad(
            lambda y: math.exp(float(log_integrand(torch.tensor([y], dtype=torch.float64)))),
            centre - 12 * sd,
            centre + 12 * sd,
            epsabs=0,
            epsrel=1e-11,
        )[0]
    else:
        # Trapezoid rule after an affine change of variables y = mean + L xi: valid for any
        # L; with the right one the integrand is a standard normal, where the rule with
        # step 0.1 is exact to ~exp(-2 pi^2 / 0.01) (spectral accuracy).
        step = 0.1
        axis = torch.arange(-10, 10 + step / 2, step, dtype=torch.float64)
        xi = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
        tril = d.scale_tril
        y = d.mean + xi @ tril.T
        value = float(log_integrand(y).exp().sum() * step**2 * tril.diagonal().prod())
    assert abs(math.log(value)) < 1e-8
    # and the normalized density matches log_prob pointwise
    y = d.sample((5,))
    assert_close(d.log_prob(y), log_integrand(y), atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", ["bilinear", "l2"])
def test_normalizer_matches_monte_carlo(kind):
    d, loc, cov, tilt = _random_case(kind, (4,))
    num = 200_000
    weights = tilt(dist.MultivariateNormal(loc, cov).sample((num, 4))).exp()
    estimate = weights.mean(0)
    # delta method: sd(log mean) = sd(w) / (mean(w) sqrt(n)); 4.5 sigma over 4 entries
    se = weights.std(0) / (estimate * math.sqrt(num))
    assert torch.all((estimate.log() - d.log_normalizer).abs() < 4.5 * se)


def _joint_gaussian(dim_x, dim_y, rank_xy=None):
    factor = torch.randn(dim_x + dim_y, dim_x + dim_y, dtype=torch.float64)
    joint = factor @ factor.T / (dim_x + dim_y) + 0.3 * torch.eye(
        dim_x + dim_y, dtype=torch.float64
    )
    if rank_xy == 0:  # y independent of x
        joint[:dim_x, dim_x:] = 0
        joint[dim_x:, :dim_x] = 0
    return joint[:dim_x, :dim_x], joint[:dim_x, dim_x:], joint[dim_x:, dim_x:]


def _conditional(cov_xx, cov_xy, cov_yy, x):
    mean = x @ torch.linalg.solve(cov_xx, cov_xy)
    cov = cov_yy - cov_xy.T @ torch.linalg.solve(cov_xx, cov_xy)
    return mean, cov


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_optimal_bilinear_weight_gives_conditional_mean(temperature):
    cov_xx, cov_xy, cov_yy = _joint_gaussian(4, 3)
    x = torch.randn(6, 4, dtype=torch.float64)
    weight = optimal_bilinear_weight(cov_xx, cov_xy, cov_yy, temperature)
    d = TiltedGaussian.bilinear(x, weight, torch.zeros(3, dtype=torch.float64), cov_yy, temperature)
    mean, cov = _conditional(cov_xx, cov_xy, cov_yy, x)
    assert_close(d.mean, mean, atol=1e-10, rtol=1e-10)
    # the covariance stays the marginal one, strictly larger than the conditional one
    assert_close(d.covariance_matrix, cov_yy.expand(6, 3, 3), atol=1e-12, rtol=1e-12)
    gap = torch.linalg.eigvalsh(d.covariance_matrix[0] - cov)
    assert gap.min() > -1e-12 and gap.max() > 1e-3


def test_optimal_bilinear_weight_from_samples():
    # E[y|x] regression from data: least squares on samples recovers Sigma_yx Sigma_xx^-1,
    # and the tilt built from sample covariances agrees to the sampling error.
    cov_xx, cov_xy, cov_yy = _joint_gaussian(3, 2)
    joint = torch.cat([torch.cat([cov_xx, cov_xy], 1), torch.cat([cov_xy.T, cov_yy], 1)], 0)
    data = dist.MultivariateNormal(torch.zeros(5, dtype=torch.float64), joint).sample((50_000,))
    sample_cov = data.T @ data / data.shape[0]
    weight = optimal_bilinear_weight(sample_cov[:3, :3], sample_cov[:3, 3:], sample_cov[3:, 3:])
    x = data[:20, :3]
    d = TiltedGaussian.bilinear(x, weight, torch.zeros(2, dtype=torch.float64), sample_cov[3:, 3:])
    # coefficients have relative error ~ 1/sqrt(50000) = 0.0045; 0.05 absolute is > 5 sigma
    assert_close(d.mean, _conditional(cov_xx, cov_xy, cov_yy, x)[0], atol=0.05, rtol=0)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("rank_xy", [None, 0])
def test_optimal_l2_tilt_gives_conditional_mean_and_covariance(temperature, rank_xy):
    cov_xx, cov_xy, cov_yy = _joint_gaussian(4, 3, rank_xy)
    if rank_xy is None:  # make one direction of y independent of x: a zero row in H
        cov_xy[:, 0] = 0
        cov_yy[0, 1:] = cov_yy[1:, 0] = 0
    x = torch.randn(6, 4, dtype=torch.float64)
    G, H = optimal_l2_tilt(cov_xx, cov_xy, cov_yy, temperature)
    assert G.shape == (3, 4) and H.shape == (3, 3)
    d = TiltedGaussian.l2(x, G, H, torch.zeros(3, dtype=torch.float64), cov_yy, temperature)
    mean, cov = _conditional(cov_xx, cov_xy, cov_yy, x)
    assert_close(d.mean, mean, atol=1e-9, rtol=1e-9)
    assert_close(d.covariance_matrix, cov.expand(6, 3, 3), atol=1e-9, rtol=1e-9)


def test_bilinear_tilt_never_matches_conditional_covariance():
    cov_xx, cov_xy, cov_yy = _joint_gaussian(3, 3)
    x = torch.randn(5, 3, dtype=torch.float64)
    mean, cov = _conditional(cov_xx, cov_xy, cov_yy, x)
    for _ in range(20):
        weight = 3 * torch.randn(3, 3, dtype=torch.float64)
        d = TiltedGaussian.bilinear(x, weight, torch.randn(3, dtype=torch.float64), cov_yy)
        # whatever W and m: the covariance is Sigma_yy, and KL(true || tilted) > 0
        assert_close(d.covariance_matrix[0], cov_yy, atol=1e-12, rtol=1e-12)
        truth = dist.MultivariateNormal(mean, cov)
        kl = torch.distributions.kl_divergence(truth, d)
        best = torch.distributions.kl_divergence(truth, dist.MultivariateNormal(mean, cov_yy))
        assert torch.all(kl >= best - 1e-10) and torch.all(best > 1e-3)


def test_rsample_gradients_reach_the_tilt():
    x = torch.randn(4, 2, requires_grad=True)
    weight = torch.randn(2, 3, requires_grad=True)
    d = TiltedGaussian.bilinear(x, weight, torch.zeros(3), torch.eye(3))
    assert d.has_rsample
    d.rsample((5,)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.isfinite(weight.grad).all()


def test_low_precision_inputs_are_computed_in_float32():
    d = TiltedGaussian.l2(
        torch.ones(2, dtype=torch.float16),
        torch.eye(2),
        torch.eye(2),
        torch.zeros(2, dtype=torch.bfloat16),
        torch.eye(2),
    )
    assert d.loc.dtype == torch.float32 and d.log_normalizer.dtype == torch.float32


@pytest.mark.parametrize(
    "build, match",
    [
        (
            lambda: TiltedGaussian.bilinear(
                torch.ones(2), torch.eye(2), torch.zeros(2), torch.eye(2), -1.0
            ),
            "temperature",
        ),
        (
            lambda: TiltedGaussian.bilinear(
                torch.ones(2), torch.eye(2), torch.zeros(3), torch.eye(3)
            ),
            "weight",
        ),
        (
            lambda: TiltedGaussian.bilinear(
                torch.ones(2), torch.eye(2), torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]])
            ),
            "symmetric",
        ),
        (
            lambda: TiltedGaussian.bilinear(
                torch.ones(2), torch.eye(2), torch.zeros(2), torch.ones(2)
            ),
            "covariance_matrix",
        ),
        (
            lambda: TiltedGaussian.l2(
                torch.ones(2), torch.eye(3, 2), torch.eye(2), torch.zeros(2), torch.eye(2)
            ),
            "rows",
        ),
        (
            lambda: TiltedGaussian.l2(
                torch.ones(2),
                torch.eye(2),
                torch.eye(2),
                torch.tensor([0.0, math.inf]),
                torch.eye(2),
            ),
            "loc",
        ),
        (lambda: optimal_bilinear_weight(torch.eye(2), torch.ones(3, 2), torch.eye(2)), "shapes"),
        (lambda: optimal_l2_tilt(torch.eye(1), torch.ones(1, 1), torch.eye(1)), "conditional"),
        (
            lambda: TiltedGaussian(torch.zeros(2), torch.eye(2), log_normalizer=torch.zeros(3)),
            "log_normalizer",
        ),
    ],
)
def test_bad_input_raises(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_types_raise():
    with pytest.raises(TypeError, match="x"):
        TiltedGaussian.bilinear([1.0, 2.0], torch.eye(2), torch.zeros(2), torch.eye(2))
    with pytest.raises(TypeError, match="temperature"):
        TiltedGaussian.bilinear(torch.ones(2), torch.eye(2), torch.zeros(2), torch.eye(2), "hot")
