import math

import pyro
import pyro.distributions as dist
import pytest
import scipy.stats
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import InitMessenger, init_to_value
from pyro.ops.stats import effective_sample_size

from pyro_contrast.distributions import SphereReparam, UniformSphere, VonMisesFisher
from pyro_contrast.distributions.sphere_reparam import LiftedSphere
from pyro_contrast.ops.bessel import bessel_ratio
from tests.common import assert_close


def _unit(v):
    return v / v.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("dim", [3, 8])
def test_lift_is_a_normalized_density_with_the_sphere_direction(dim):
    loc = _unit(torch.randn(dim, dtype=torch.float64))
    vmf = VonMisesFisher(loc, torch.tensor(3.0, dtype=torch.float64))
    lifted = LiftedSphere(vmf)
    # against N(0, I) proposals: E[q(u) / N(u)] = E_uniform[p(z) / p_uniform(z)] = 1
    u = torch.randn(200000, dim, dtype=torch.float64)
    ratio = (lifted.log_prob(u) - dist.Normal(0.0, 1.0).log_prob(u).sum(-1)).exp()
    assert abs(ratio.mean() - 1) < 4.5 * ratio.std() / math.sqrt(u.shape[0])
    # the uniform sphere lifts to N(0, I) exactly
    uniform = LiftedSphere(UniformSphere(dim, dtype=torch.float64))
    assert_close(uniform.log_prob(u[:10]), dist.Normal(0.0, 1.0).log_prob(u[:10]).sum(-1))
    # samples: direction ~ vMF (mean A_d(k) mu), radius ~ chi_d (KS test)
    draws = lifted.sample((20000,))
    radius = draws.norm(dim=-1)
    assert scipy.stats.kstest(radius.numpy(), scipy.stats.chi(dim).cdf).pvalue > 1e-3
    cosine = _unit(draws) @ loc
    assert abs(cosine.mean() - vmf.mean @ loc) < 4.5 * cosine.std() / math.sqrt(20000)


def _conjugate_model(loc0, kappa0, kappa1, observations):
    def model():
        z = pyro.sample("z", VonMisesFisher(loc0, kappa0))
        with pyro.plate("data", observations.shape[0]):
            pyro.sample("x", VonMisesFisher(z, kappa1), obs=observations)

    return model


def _posterior(loc0, kappa0, kappa1, observations):
    theta = kappa0 * loc0 + kappa1 * observations.sum(0)
    kappa = theta.norm()
    return theta / kappa, kappa


@pytest.mark.slow
@pytest.mark.parametrize("dim", [3])
def test_nuts_posterior_mean_of_a_conjugate_vmf_model(dim):
    # prior vMF(mu0, k0), likelihood vMF(x_i; z, k1): the posterior is vMF with
    # loc proportional to k0 mu0 + k1 sum_i x_i (the normalizer of vMF(x; z, k1) is free of z)
    generator = torch.Generator().manual_seed(dim)
    loc0 = _unit(torch.randn(dim, generator=generator, dtype=torch.float64))
    truth = _unit(torch.randn(dim, generator=generator, dtype=torch.float64))
    kappa0, kappa1 = 2.0, 4.0
    observations = VonMisesFisher(truth, kappa1).sample((3,))
    model = _conjugate_model(loc0, kappa0, kappa1, observations)
    reparam = poutine.reparam(model, config={"z": SphereReparam()})
    # 200 + 200 iterations (each ~7 gradient evaluations): ~20 s on one core
    mcmc = MCMC(NUTS(reparam), num_samples=200, warmup_steps=200, disable_progbar=True)
    mcmc.run()
    lifted = mcmc.get_samples()["z_lifted"]
    z = _unit(lifted)
    loc, kappa = _posterior(loc0, kappa0, kappa1, observations)
    expected = bessel_ratio(dim, kappa) * loc
    ess = effective_sample_size(z.unsqueeze(0))
    se = z.std(0) / ess.sqrt()
    z_score = float(scipy.stats.norm.isf(1e-3 / (2 * dim)))
    assert torch.all((z.mean(0) - expected).abs() < z_score * se), (z.mean(0), expected, se)


def test_uniform_prior_and_plates_and_autoguide():
    # z_j ~ UniformSphere(3) in a plate, x_j ~ vMF(z_j, 6): posterior vMF(x_j, 6)
    observations = _unit(torch.randn(2, 3))

    def model():
        with pyro.plate("items", 2):
            z = pyro.sample("z", UniformSphere(3))
            pyro.sample("x", VonMisesFisher(z, 6.0), obs=observations)

    reparam = poutine.reparam(model, config={"z": SphereReparam()})
    trace = poutine.trace(reparam).get_trace()
    assert trace.nodes["z_lifted"]["value"].shape == (2, 3)
    assert_close(trace.nodes["z"]["value"].norm(dim=-1), torch.ones(2), atol=1e-6)
    guide = AutoNormal(reparam)
    svi = SVI(reparam, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(300):
        svi.step()
    direction = _unit(guide.median()["z_lifted"])
    # a Gaussian guide on the lift: its median direction points at the posterior mode
    assert torch.all((direction * observations).sum(-1) > 0.95)


def test_given_value_and_observed_sites():
    def model():
        z = pyro.sample("z", VonMisesFisher(torch.tensor([0.0, 0.0, 1.0]), 5.0))
        pyro.sample("x", VonMisesFisher(z, 2.0), obs=torch.tensor([1.0, 0.0, 0.0]))

    # a latent with a given value (initialization) lifts to radius one; observed sites stay
    value = torch.tensor([0.0, 1.0, 0.0])
    reparam = poutine.reparam(model, config={"z": SphereReparam(), "x": SphereReparam()})
    initialized = InitMessenger(init_to_value(values={"z_lifted": value, "z": value}))(reparam)
    trace = poutine.trace(initialized).get_trace()
    assert torch.equal(trace.nodes["z"]["value"], value)
    assert not trace.nodes["z_lifted"]["is_observed"]
    assert trace.nodes["x"]["is_observed"] and "x_lifted" not in trace.nodes
    conditioned = poutine.reparam(
        poutine.condition(model, {"z": value}), config={"z": SphereReparam()}
    )
    assert "z_lifted" not in poutine.trace(conditioned).get_trace().nodes
    with pytest.raises(TypeError, match="VonMisesFisher, UniformSphere"):
        bad = poutine.reparam(
            lambda: pyro.sample("z", dist.Normal(0.0, 1.0)), config={"z": SphereReparam()}
        )
        poutine.trace(bad).get_trace()
