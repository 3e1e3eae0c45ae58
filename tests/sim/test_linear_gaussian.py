import pyro
import pytest
import torch
from torch.distributions import MultivariateNormal

import pyro_contrast as pc
from tests.common import assert_close


def _joint(chain):
    """Joint covariance of (a, c) built from scratch from the sampling equations."""
    n = 200_000
    a, _, c = chain.sample(n, dtype=torch.float64)
    x = torch.cat([a, c], -1)
    return x.mean(0), torch.cov(x.T), a, c


@pytest.mark.parametrize("rho", [0.0, 0.7])
def test_closed_form_matches_empirical_joint_and_direct_conditioning(rho):
    chain = pc.sim.LinearGaussianChain(dim_a=3, dim_b=2, dim_c=2, rho=rho, seed=3)
    mean, cov, _, _ = _joint(chain)
    da = chain.dim_a
    # Moments: sampling agrees with the closed-form covariances (MC error ~ 1/sqrt(n)).
    assert_close(mean[:da], chain.loc_a, atol=0.02)
    assert_close(cov[:da, :da], chain.cov_aa, atol=0.03)
    assert_close(cov[da:, :da], chain.cov_ca, atol=0.03)
    # PMI from the joint density: log p(a, c) - log p(a) - log p(c), an independent formula.
    joint_cov = torch.cat(
        [torch.cat([chain.cov_aa, chain.cov_ca.T], 1), torch.cat([chain.cov_ca, chain.cov_cc], 1)]
    )
    a, _, c = chain.sample(4, dtype=torch.float64)
    pmi = chain.log_ratio(a, c)
    joint = MultivariateNormal(torch.cat([chain.loc_a, chain.loc_c]), joint_cov)
    pa, pc_ = (
        MultivariateNormal(chain.loc_a, chain.cov_aa),
        MultivariateNormal(chain.loc_c, chain.cov_cc),
    )
    pairs = torch.cat([a[:, None].expand(4, 4, da), c[None].expand(4, 4, chain.dim_c)], -1)
    expected = joint.log_prob(pairs) - pa.log_prob(a)[:, None] - pc_.log_prob(c)[None]
    assert_close(pmi, expected, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_importance_identities_hold_within_monte_carlo_error(rho):
    # E_{c ~ p(c)}[exp PMI(a, c)] = 1 for every a, and E_{(a,c) ~ p(a,c)}[exp(-PMI)] = 1.
    chain = pc.sim.LinearGaussianChain(
        dim_a=2, dim_b=2, dim_c=2, noise_a=1.0, noise_c=1.0, rho=rho, seed=1
    )
    a, _, c = chain.sample(20_000, dtype=torch.float64)
    ratios = chain.log_ratio(a[:5], c).exp()  # c independent of a[:5]'s own partners: p(c)
    mean, se = ratios.mean(1), ratios.std(1) / ratios.shape[1] ** 0.5
    assert ((mean - 1).abs() < 5 * se).all(), (mean, se)
    a2, _, c2 = chain.sample(4000, dtype=torch.float64)
    inv = (-chain.log_ratio(a2, c2).diagonal()).exp()
    assert abs(inv.mean() - 1) < 5 * inv.std() / inv.shape[0] ** 0.5


def test_ab_and_bc_ratios_and_pyro_model():
    chain = pc.sim.LinearGaussianChain(dim_a=3, dim_b=2, dim_c=4, seed=0)
    a, b, c = chain.sample(6)
    assert chain.log_ratio_ab(a, b).shape == (6, 6)
    assert chain.log_ratio_bc(b, c).shape == (6, 6)
    # The true partner is on average more likely than the others.
    pmi = chain.log_ratio_ab(a, b)
    assert pmi.diagonal().mean() > pmi.mean()
    trace = pyro.poutine.trace(chain.model).get_trace(10)
    assert trace.nodes["a"]["value"].shape == (10, 3)
    assert trace.nodes["c"]["value"].shape == (10, 4)


def test_seeded_and_validated():
    first = pc.sim.LinearGaussianChain(seed=5).sample(3)
    second = pc.sim.LinearGaussianChain(seed=5).sample(3)
    for x, y in zip(first, second, strict=True):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="dim_a must be a positive integer"):
        pc.sim.LinearGaussianChain(dim_a=0)
    with pytest.raises(ValueError, match="rho must be a non-negative"):
        pc.sim.LinearGaussianChain(rho=-1)
    with pytest.raises(ValueError, match="noise_c must be a positive"):
        pc.sim.LinearGaussianChain(noise_c=0)
    chain = pc.sim.LinearGaussianChain(dim_a=2, dim_c=3)
    with pytest.raises(ValueError, match="c must have shape \\(N, 3\\)"):
        chain.log_ratio(torch.zeros(1, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="num_samples"):
        chain.sample(0)
