import math
import resource

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDelta
from torch import nn

import pyro_contrast as pc
from pyro_contrast.distributions import (
    TiltedConditional,
    TiltedGaussian,
    UniformSphere,
    VonMisesFisher,
)
from tests.common import assert_close
from tests.distributions.harness import ALPHA, DistributionHarness, Example
from tests.distributions.test_vmf import _vmf_pit

NUM_ITEMS = 6
_COSINE = pc.Critic.from_embeddings("cosine", temperature=0.5)
_DOT = pc.Critic.from_embeddings("dot", temperature=0.8, bias=True)
_L2 = pc.Critic.from_embeddings("neg_sq_l2", temperature=0.7)


# ----- harness ----------------------------------------------------------------------------


def _bank_gof(d, num_samples):
    """Chi-square test of resampled bank items against the softmax probabilities.

    Items with expected count below 5 are pooled into the smallest bin above it (the
    chi-square approximation needs expected counts >= 5).
    """
    y = d.sample((num_samples,))
    items = d.items.reshape(d.items.shape[0], -1)
    flat = y.reshape(num_samples, -1, items.shape[-1])
    index = (flat.unsqueeze(-2) == items).all(-1).double().argmax(-1)
    probs = d.logits.detach().exp().reshape(-1, items.shape[0]).double()
    for b in range(probs.shape[0]):
        counts = torch.bincount(index[:, b].long(), minlength=items.shape[0]).double()
        expected = num_samples * probs[b]
        order = expected.argsort()
        pooled = (expected[order].cumsum(0) < 5).sum().item() + 1  # smallest bins, >= 5 in all
        bins_e = torch.cat(
            [expected[order[:pooled]].sum(0, keepdim=True), expected[order[pooled:]]]
        )
        bins_o = torch.cat([counts[order[:pooled]].sum(0, keepdim=True), counts[order[pooled:]]])
        stat = float(((bins_o - bins_e).square() / bins_e).sum())
        dof = bins_e.numel() - 1
        pvalue = scipy.stats.chi2.sf(stat, dof) if dof else 1.0
        assert pvalue > ALPHA / probs.shape[0], f"resampling rejected (p={pvalue:.2e})"


def _bank_params(batch_shape, dtype):
    return {
        "x": torch.randn(batch_shape + (3,), dtype=dtype),
        "items": torch.randn(NUM_ITEMS, 3, dtype=dtype),
        "log_weights": torch.randn(NUM_ITEMS, dtype=dtype),
    }


def _bank_factory(critic, weighted):
    def factory(x, items, log_weights):
        base = pc.Bank(items, log_weights=log_weights) if weighted else items
        return TiltedConditional(critic, x, base)

    return factory


def _sphere_params(batch_shape, dtype):
    loc0 = torch.randn(3, dtype=dtype)
    return {"x": torch.randn(batch_shape + (3,), dtype=dtype), "loc0": loc0 / loc0.norm()}


def _sphere_factory(critic, prior):
    def factory(x, loc0):
        if prior:
            base = VonMisesFisher(loc0 / loc0.norm(), torch.tensor(2.0, dtype=x.dtype))
        else:
            base = UniformSphere(3, dtype=x.dtype)
        return TiltedConditional(critic, x, base)

    return factory


def _gaussian_params(batch_shape, dtype):
    tril = torch.tensor([[1.0, 0.0], [0.4, 0.6]], dtype=dtype)
    return {
        "x": torch.randn(batch_shape + (2,), dtype=dtype),
        "loc": torch.randn(2, dtype=dtype),
        "tril": tril,
    }


def _gaussian_factory(critic):
    def factory(x, loc, tril):
        return TiltedConditional(critic, x, dist.MultivariateNormal(loc, scale_tril=tril.tril()))

    return factory


def _invalid():
    x = torch.randn(2, 3)
    return [
        lambda: TiltedConditional(_L2, x, UniformSphere(3)),
        lambda: TiltedConditional(
            _COSINE, x, dist.MultivariateNormal(torch.zeros(3), torch.eye(3))
        ),
        lambda: TiltedConditional(_COSINE, x, UniformSphere(4)),
        lambda: TiltedConditional(_COSINE, torch.full((2, 3), math.nan), torch.randn(4, 3)),
        lambda: TiltedConditional(_COSINE, x, torch.randn(4, 3).fill_(math.inf)),
        lambda: TiltedConditional(_COSINE, x, torch.randn(0, 3)),
        lambda: TiltedConditional(
            _COSINE, x, pc.Bank(torch.randn(4, 3), log_weights=-torch.full((4,), math.inf))
        ),
    ]


def _sphere_pit(d, x):
    return _vmf_pit(d.closed_form, x)


class TestTiltedConditionalHarness(DistributionHarness):
    examples = [
        Example(
            "tilted-bank-cosine",
            factory=_bank_factory(_COSINE, False),
            params=_bank_params,
            invalid=_invalid(),
            gof=_bank_gof,
        ),
        Example(
            "tilted-bank-weighted-dot",
            factory=_bank_factory(_DOT, True),
            params=_bank_params,
            invalid=(),
            gof=_bank_gof,
        ),
        Example(
            "tilted-uniform-sphere-cosine",
            factory=_sphere_factory(_COSINE, False),
            params=_sphere_params,
            invalid=(),
            pit=_sphere_pit,
            grad_params=["x"],
        ),
        Example(
            "tilted-vmf-dot",
            factory=_sphere_factory(_DOT, True),
            params=_sphere_params,
            invalid=(),
            pit=_sphere_pit,
        ),
        Example(
            "tilted-gaussian-l2",
            factory=_gaussian_factory(_L2),
            params=_gaussian_params,
            invalid=(),
        ),
        Example(
            "tilted-gaussian-dot",
            factory=_gaussian_factory(_DOT),
            params=_gaussian_params,
            invalid=(),
        ),
    ]


# ----- invariance, closed forms, batching -------------------------------------------------


class _Features(nn.Module):
    """Encoder ``x -> [x, g(x)]`` (or ``y -> [y, 1]``): ``f = <x, y> + g(x)`` as a dot critic."""

    def __init__(self, g=None):
        super().__init__()
        self.g = g

    def forward(self, v):
        extra = torch.ones_like(v[..., :1]) if self.g is None else self.g(v)
        return torch.cat([v, extra], -1)


def _critic_with(g):
    return pc.Critic(_Features(g), _Features(None), "dot", temperature=1.0)


@settings(max_examples=15, deadline=None)
@given(
    a=st.floats(-5, 5),
    b=st.floats(-3, 3),
    c=st.floats(-2, 2),
    weighted=st.booleans(),
)
def test_invariant_to_x_only_terms(a, b, c, weighted):
    torch.manual_seed(0)
    x = torch.randn(4, 2, dtype=torch.float64)
    items = torch.randn(50, 2, dtype=torch.float64)
    base = pc.Bank(items, log_weights=torch.randn(50, dtype=torch.float64)) if weighted else items
    y = torch.randn(3, 1, 2, dtype=torch.float64)

    def g(v):
        return (a * torch.sin(b * v[..., :1]) + c * v[..., :1].square() - a * v[..., 1:]) * 10

    plain = TiltedConditional(_critic_with(lambda v: torch.zeros_like(v[..., :1])), x, base)
    shifted = TiltedConditional(_critic_with(g), x, base)
    assert_close(shifted.log_prob(y), plain.log_prob(y), atol=1e-9, rtol=1e-9)
    assert_close(shifted.logits, plain.logits, atol=1e-9, rtol=1e-9)
    assert_close(shifted.log_normalizer - plain.log_normalizer, g(x).squeeze(-1), atol=1e-9)


def test_bank_normalization_relative_to_the_base():
    # sum_m w~_m exp(log_prob(y_m)) = 1: the density relative to the empirical base
    critic = _DOT
    items, log_w = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, dtype=torch.float64)
    d = TiltedConditional(
        critic, torch.randn(5, 3, dtype=torch.float64), pc.Bank(items, log_weights=log_w)
    )
    lp = d.log_prob(items.unsqueeze(1))  # (20, 5)
    assert_close((lp + log_w.log_softmax(0).unsqueeze(-1)).logsumexp(0), torch.zeros(5), atol=1e-12)
    assert_close(d.logits.T, lp + log_w.log_softmax(0).unsqueeze(-1), atol=1e-12)
    assert torch.equal(d.mode, items[d.logits.argmax(-1)])


@pytest.mark.parametrize("critic,prior", [(_COSINE, False), (_DOT, True)])
def test_sphere_closed_form_matches_a_large_bank(critic, prior):
    torch.manual_seed(1)
    loc0 = torch.nn.functional.normalize(torch.randn(4, dtype=torch.float64), dim=0)
    base = VonMisesFisher(loc0, 2.0) if prior else UniformSphere(4, dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64)
    closed = TiltedConditional(critic, x, base)
    assert isinstance(closed.closed_form, VonMisesFisher)
    num_items = 200000
    bank = base.sample((num_items,))
    empirical = TiltedConditional(critic, x, bank)
    # log mean exp f over M iid draws: standard error sd(e^f) / (sqrt(M) E e^f)
    scores = critic.pairwise(x, bank)
    se = (scores.exp().std(-1) / scores.exp().mean(-1)) / math.sqrt(num_items)
    assert torch.all((empirical.log_normalizer - closed.log_normalizer).abs() < 4.5 * se)
    y = base.sample((5, 1))
    assert_close(closed.log_density_ratio(y), closed.log_prob(y) - base.log_prob(y), atol=1e-10)


def test_gaussian_l2_closed_form_is_the_true_conditional():
    # x ~ N(0, 1), y = x + eps / 2: p(y | x) = N(x, 1/4) from the critic PMI(x, y) - x^2 / 2,
    # written with an identity y encoder: -3.2/2 (1.25 x - y)^2
    encoder = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        encoder.weight.fill_(1.25)
    critic = pc.Critic(encoder, None, "neg_sq_l2", temperature=1 / 3.2)
    base = dist.MultivariateNormal(
        torch.zeros(1, dtype=torch.float64), 1.25 * torch.eye(1, dtype=torch.float64)
    )
    x = torch.linspace(-2, 2, 5, dtype=torch.float64).unsqueeze(-1)
    d = TiltedConditional(critic, x, base)
    assert isinstance(d.closed_form, TiltedGaussian)
    y = torch.randn(7, 5, 1, dtype=torch.float64)
    truth = dist.Normal(x, 0.5).log_prob(y).squeeze(-1)
    assert_close(d.log_prob(y), truth, atol=1e-12)
    # Gauss-Hermite bank of N(0, 1.25) with log weights: the same ratio to rounding
    nodes, weights = np.polynomial.hermite.hermgauss(80)
    bank = pc.Bank(
        torch.from_numpy(math.sqrt(2.5) * nodes).unsqueeze(-1),
        log_weights=torch.from_numpy(np.log(weights)),
    )
    assert_close(TiltedConditional(critic, x, bank).log_prob(y), d.log_density_ratio(y), atol=1e-10)


@pytest.mark.parametrize("batch_shape", [(), (4,), (3, 2)])
def test_batched_over_x_and_samples(batch_shape):
    x = torch.randn(batch_shape + (3,))
    for base in (torch.randn(10, 3), UniformSphere(3)):
        d = TiltedConditional(_COSINE, x, base)
        assert d.batch_shape == batch_shape and d.event_shape == (3,)
        assert d.sample((2,)).shape == (2,) + batch_shape + (3,)
        assert d.log_prob(d.sample((5,))).shape == (5,) + batch_shape
        for sub in np.ndindex(*batch_shape):
            single = TiltedConditional(_COSINE, x[sub], base)
            assert_close(single.log_normalizer, d.log_normalizer[sub], atol=1e-6)
    assert TiltedConditional.infer_shapes(x=x.shape, base=(10, 3)) == (batch_shape, (3,))
    assert TiltedConditional.infer_shapes(x=x.shape, base=UniformSphere(3)) == (batch_shape, (3,))


def test_bank_memory_is_not_n_by_m_by_d():
    # an N x M x d intermediate would be 200 x 2000 x 1024 float32 = 1.6 GB
    x, items = torch.randn(200, 1024, requires_grad=True), torch.randn(2000, 1024)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    d = TiltedConditional(_L2, x, items)
    d.log_prob(torch.randn(200, 1024)).sum().backward()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 400


def test_svi_on_a_latent_upstream_of_x():
    # x ~ N(0, 1), y = x + eps / 2 observed at 1.5: posterior N(1.2, 0.2). The critic carries
    # g(x) = -x^2 / 2 (neg_sq_l2, linear encoders); a Gauss-Hermite bank makes Z(x) exact.
    encoder_x = nn.Linear(1, 1, bias=False).double()
    encoder_y = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        encoder_x.weight.fill_(math.sqrt(5.0))
        encoder_y.weight.fill_(math.sqrt(3.2))
    critic = pc.Critic(encoder_x, encoder_y, "neg_sq_l2")
    nodes, weights = np.polynomial.hermite.hermgauss(60)
    bank = pc.Bank(
        torch.from_numpy(math.sqrt(2.5) * nodes).unsqueeze(-1),
        log_weights=torch.from_numpy(np.log(weights)),
    )
    y = torch.tensor([1.5], dtype=torch.float64)

    def model():
        x = pyro.sample("x", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        pyro.sample("y", TiltedConditional(critic, x.reshape(1), bank), obs=y)

    # the ELBO of a point guide is -log p(x0, y) + const: its gradient is the exact score
    x0 = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    loss = Trace_ELBO().differentiable_loss(pyro.condition(model, {"x": x0}), lambda: None)
    (grad,) = torch.autograd.grad(loss, x0)
    assert_close(grad, (x0 - 1.2) / 0.2, atol=1e-9)
    # SVI with a point guide finds the posterior mode 1.2 (the raw factor's would be 1.0)
    guide = AutoDelta(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
    for _ in range(300):
        svi.step()
    assert abs(guide.median()["x"].item() - 1.2) < 1e-3


def test_mode_of_every_base():
    x = torch.randn(4, 3, dtype=torch.float64)
    sphere = TiltedConditional(_COSINE, x, UniformSphere(3, dtype=torch.float64))
    assert torch.equal(sphere.mode, sphere.closed_form.loc)
    gaussian = TiltedConditional(
        _L2, x, dist.MultivariateNormal(torch.zeros(3, dtype=torch.float64), torch.eye(3).double())
    )
    assert_close(gaussian.mode, gaussian.closed_form.loc)
    items = torch.randn(9, 3, dtype=torch.float64)
    bank = TiltedConditional(_COSINE, x, items)
    assert torch.equal(bank.mode, items[bank.logits.argmax(-1)])
    with pytest.raises(NotImplementedError):
        bank.entropy()
    with pytest.raises(NotImplementedError):
        bank.rsample()
