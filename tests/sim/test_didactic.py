"""DidacticChain: Che & Eysenbach's didactic Gaussian data and its exact log density ratios."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from pyro_contrast.ops import logmatmul
from pyro_contrast.sim.didactic import DidacticChain
from tests.common import assert_close

VARIANTS = [
    {},
    {"corr_noise": 1.5},
    {"corr_noise": 1.5, "corr_noise_shape": "scalar"},
    {"bypass": 0.4},
    {"bypass": 1.0},
    {"bypass": 0.3, "corr_noise": 0.7, "corr_noise_shape": "scalar"},
]


def _small(**kwargs):
    return DidacticChain(dim_a=4, dim_b=3, dim_c=4, seed=2, **kwargs)


def _scipy_pmi(chain, x, y, x_slice, y_slice):
    """log p(x, y) - log p(x) - log p(y) from the joint covariance, by scipy, (N, K)."""
    joint = chain.joint()
    loc, cov = joint.loc.numpy(), joint.covariance_matrix.numpy()
    index = np.r_[x_slice, y_slice]
    pair = multivariate_normal(loc[index], cov[np.ix_(index, index)])
    px = multivariate_normal(loc[x_slice], cov[np.ix_(x_slice, x_slice)])
    py = multivariate_normal(loc[y_slice], cov[np.ix_(y_slice, y_slice)])
    x, y = x.double().numpy(), y.double().numpy()
    grid = np.concatenate([np.repeat(x[:, None], len(y), 1), np.repeat(y[None], len(x), 0)], -1)
    return pair.logpdf(grid) - px.logpdf(x)[:, None] - py.logpdf(y)[None]


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_ratios_equal_the_joint_density(kwargs):
    chain = _small(**kwargs)
    a, b, c = chain.sample(5, dtype=torch.float64)
    da, db = chain.dim_a, chain.dim_b
    sa, sb, sc = np.arange(da), np.arange(da, da + db), np.arange(da + db, da + db + chain.dim_c)
    assert_close(chain.log_ratio(a, c), _scipy_pmi(chain, a, c, sa, sc), atol=1e-9, rtol=1e-9)
    assert_close(chain.log_ratio_ab(a, b), _scipy_pmi(chain, a, b, sa, sb), atol=1e-9, rtol=1e-9)
    assert_close(chain.log_ratio_bc(b, c), _scipy_pmi(chain, b, c, sb, sc), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_samples_follow_the_joint(kwargs):
    chain = _small(**kwargs)
    a, b, c = chain.sample(100_000, dtype=torch.float64)
    x = torch.cat([a, b, c], -1)
    joint = chain.joint()
    scale = joint.covariance_matrix.diagonal().sqrt()
    # Standardized moments: mean error ~ 1/sqrt(n) = 0.003, covariance error ~ 0.005.
    assert_close((x.mean(0) - joint.loc) / scale, torch.zeros_like(scale), atol=0.02)
    corr_sample = torch.cov(x.T) / scale[:, None] / scale[None]
    corr = joint.covariance_matrix / scale[:, None] / scale[None]
    assert_close(corr_sample, corr, atol=0.03)


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_exp_pmi_has_mean_one_under_the_product_of_marginals(kwargs):
    # E_{a ~ p(a), c ~ p(c)}[exp PMI(a, c)] = 1, and the same for every ratio the chain gives.
    # Small dimensions keep exp PMI light-tailed (PMI spread 0.06-1.2 nats here), so the
    # Monte Carlo error is small next to any error in a normalizing constant.
    chain = DidacticChain(dim_a=2, dim_b=2, dim_c=2, noise_a=1.5, noise_c=1.5, seed=1, **kwargs)
    a, b, c = chain.sample(400, dtype=torch.float64)
    _, b2, c2 = chain.sample(400, dtype=torch.float64)  # independent of a: product of marginals
    for name, ratio in (
        ("a-c", chain.log_ratio(a, c2)),
        ("a-b", chain.log_ratio_ab(a, b2)),
        ("b-c", chain.log_ratio_bc(b, c2)),
        ("bridged", chain.log_ratio_bridged(a, c2)),
    ):
        values = ratio.exp().flatten()
        # 160,000 pairs of 400 x 400 draws: the rows and columns share draws, so use a
        # conservative standard error from the 400 independent row means.
        se = ratio.exp().mean(1).std() / math.sqrt(ratio.shape[0])
        assert abs(values.mean() - 1) < 5 * se + 1e-4, (name, values.mean(), se)


def test_bridged_ratio_is_exact_under_conditional_independence_only():
    a, _, c = _small().sample(6, dtype=torch.float64)
    plain = _small()
    assert_close(plain.log_ratio_bridged(a, c), plain.log_ratio(a, c), atol=1e-10, rtol=1e-10)
    for kwargs in ({"corr_noise": 1.5}, {"bypass": 0.4}):
        broken = _small(**kwargs)
        assert (broken.log_ratio_bridged(a, c) - broken.log_ratio(a, c)).abs().max() > 0.01


def test_bridged_ratio_is_the_large_bank_limit_of_lemma_1():
    # log mean_m exp(PMI_ab(a, b_m) + PMI_bc(b_m, c)) over b_m ~ p(b) converges to the closed
    # form, with and without conditional independence.
    for kwargs in ({}, {"corr_noise": 1.0}, {"bypass": 0.5}):
        chain = DidacticChain(dim_a=3, dim_b=2, dim_c=3, noise_a=2.5, noise_c=2.5, seed=4, **kwargs)
        a, _, c = chain.sample(4, dtype=torch.float64)
        _, bank, _ = chain.sample(200_000, dtype=torch.float64)
        left, right = chain.log_ratio_ab(a, bank), chain.log_ratio_bc(bank, c)
        estimate = logmatmul(left, right) - math.log(bank.shape[0])
        assert_close(estimate, chain.log_ratio_bridged(a, c), atol=0.01)


def test_full_bypass_makes_b_uninformative():
    chain = _small(bypass=1.0)
    a, b, c = chain.sample(5, dtype=torch.float64)
    zeros = torch.zeros(5, 5, dtype=torch.float64)
    assert_close(chain.log_ratio_ab(a, b), zeros, atol=1e-10)
    assert_close(chain.log_ratio_bc(b, c), zeros, atol=1e-10)
    assert_close(chain.log_ratio_bridged(a, c), zeros, atol=1e-10)
    assert chain.log_ratio(a, c).std() > 0.1  # A and C stay dependent through U


def test_paper_defaults_and_variants_share_one_problem():
    base, other = DidacticChain(), DidacticChain(corr_noise=4.0, bypass=0.5)
    assert (base.dim_a, base.dim_b, base.dim_c, base.noise_a) == (32, 16, 32, 2.0)
    assert torch.equal(base.mix_a, other.mix_a) and torch.equal(base.cov_b, other.cov_b)
    assert_close(base.cov_b, base.root_b.T @ base.root_b)
    assert (base.mix_a.abs() <= 1).all() and (base.loc_b.abs() <= 1).all()
    first = DidacticChain(seed=3).sample(4)
    assert all(
        torch.equal(x, y) for x, y in zip(first, DidacticChain(seed=3).sample(4), strict=True)
    )
    assert not torch.equal(first[0], DidacticChain(seed=4).sample(4)[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 3), (7, 2)])
def test_shapes_and_dtypes(dtype, shape):
    n, k = shape
    chain = _small()
    a, b, c = chain.sample(max(n, k), dtype=dtype)
    assert a.dtype == dtype and b.shape == (max(n, k), 3)
    assert chain.log_ratio(a[:n], c[:k]).shape == (n, k)
    assert chain.log_ratio_ab(a[:n], b[:k]).shape == (n, k)
    assert chain.log_ratio_bc(b[:n], c[:k]).shape == (n, k)
    assert chain.log_ratio_bridged(a[:n], c[:k]).dtype == torch.float64
    # float32 inputs give the float64 answer of the rounded inputs
    assert_close(chain.log_ratio(a[:n], c[:k]), chain.log_ratio(a[:n].double(), c[:k].double()))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dim_a": 0}, "dim_a"),
        ({"dim_b": 2.5}, "dim_b"),
        ({"noise_c": 0.0}, "noise_c"),
        ({"noise_a": float("nan")}, "noise_a"),
        ({"corr_noise": -1.0}, "corr_noise"),
        ({"corr_noise_shape": "matrix"}, "corr_noise_shape"),
        ({"corr_noise": 1.0, "dim_c": 3}, "dim_a == dim_c"),
        ({"bypass": 1.5}, "bypass"),
        ({"bypass": True}, "bypass"),
    ],
)
def test_bad_parameters_raise(kwargs, match):
    options = {"dim_a": 4, "dim_b": 3, "dim_c": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        DidacticChain(**options)


def test_bad_inputs_raise():
    chain = _small()
    a, b, c = chain.sample(3)
    with pytest.raises(ValueError, match="num_samples"):
        chain.sample(0)
    with pytest.raises(ValueError, match="c must have shape"):
        chain.log_ratio(a, c[:, :2])
    with pytest.raises(ValueError, match="b must have shape"):
        chain.log_ratio_ab(a, b[0])
    with pytest.raises(ValueError, match="a contains NaN"):
        chain.log_ratio_bridged(a * float("nan"), c)
    with pytest.raises(TypeError, match="a must be"):
        chain.log_ratio([[0.0] * 4], c)
