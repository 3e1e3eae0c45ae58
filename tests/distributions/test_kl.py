"""Registered KL divergences against Monte Carlo estimates and exact identities."""

import math

import pytest
import torch
from torch.distributions import kl_divergence

import pyro_contrast as pc
from pyro_contrast.distributions import (
    BridgedConditional,
    ContrastiveConditional,
    UniformSphere,
    VonMisesFisher,
)
from tests.common import assert_close


def _vmf(dim, kappa, seed, dtype=torch.float64, batch_shape=()):
    generator = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch_shape + (dim,), generator=generator, dtype=dtype)
    return VonMisesFisher(loc / loc.norm(dim=-1, keepdim=True), torch.tensor(kappa, dtype=dtype))


def _monte_carlo(p, q, num_samples=20000):
    x = p.sample((num_samples,))
    ratio = p.log_prob(x) - q.log_prob(x)
    return ratio.mean(0), ratio.std(0) / math.sqrt(num_samples)


@pytest.mark.parametrize("dim,k1,k2", [(3, 2.0, 5.0), (16, 20.0, 1.0), (512, 100.0, 300.0)])
def test_vmf_vmf_against_monte_carlo(dim, k1, k2):
    p, q = _vmf(dim, k1, 0, batch_shape=(2,)), _vmf(dim, k2, 1, batch_shape=(2,))
    estimate, se = _monte_carlo(p, q)
    kl = kl_divergence(p, q)
    assert kl.shape == (2,)
    assert torch.all((kl - estimate).abs() < 4.5 * se + 1e-12), (kl, estimate, se)


@pytest.mark.parametrize("dim,kappa", [(3, 0.5), (16, 20.0), (512, 1e4)])
def test_vmf_uniform_pairs(dim, kappa):
    p = _vmf(dim, kappa, 0)
    uniform = UniformSphere(dim, dtype=torch.float64)
    # KL(vMF || uniform) = log|S| - H(vMF); KL(uniform || vMF) = E_unif[-log q] - log|S|
    assert_close(kl_divergence(p, uniform), uniform.entropy() - p.entropy(), rtol=1e-10)
    estimate, se = _monte_carlo(uniform, p)
    assert abs(kl_divergence(uniform, p) - estimate) < 4.5 * se + 1e-12
    assert_close(kl_divergence(uniform, uniform), torch.zeros(()))
    assert_close(kl_divergence(p, p), torch.zeros(()), atol=1e-9)


def test_large_concentration_in_float32():
    p64, q64 = _vmf(64, 1e4, 0), _vmf(64, 1.2e4, 0)
    p32, q32 = _vmf(64, 1e4, 0, torch.float32), _vmf(64, 1.2e4, 0, torch.float32)
    expected = kl_divergence(p64, q64)
    actual = kl_divergence(p32, q32)
    assert actual.dtype == torch.float32
    # float32 locs are unit to ~1e-7, an error of ~1e-7 k2 = 1e-3 in the KL (not 1e-7 k1 A)
    assert_close(actual, expected, rtol=1e-4, atol=2e-3)


def test_mismatched_dimensions_raise():
    with pytest.raises(ValueError, match="dimensions"):
        kl_divergence(_vmf(3, 1.0, 0), UniformSphere(4, dtype=torch.float64))


def test_index_distributions_use_the_categorical_kl():
    critic = pc.Critic.from_embeddings("cosine", temperature=0.3)
    x, bank = torch.randn(4, 3), torch.randn(7, 3)
    p = ContrastiveConditional(critic, x, bank)
    q = BridgedConditional(logits=torch.randn(4, 7))
    values = p.enumerate_support()
    expected = (p.log_prob(values).exp() * (p.log_prob(values) - q.log_prob(values))).sum(0)
    assert_close(kl_divergence(p, q), expected, atol=1e-6)
    assert_close(kl_divergence(q, q), torch.zeros(4), atol=1e-6)
