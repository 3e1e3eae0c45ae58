"""Four ways to integrate out the bridge B of an A - B - C chain agree (the tutorial's claim).

The problem: cosine critics kappa <u, z> on both edges (kappa = 1 / T = 4), uniform B and C
representations on the sphere S^2. Then z_b | a ~ vMF(u, kappa), c | z_b ~ vMF(z_b, kappa), and
(closed form) log p(c | a) - log p(c) = L_3(kappa |u + v|) - 2 L_3(kappa); the posterior of
z_b given (a, c) is vMF(w / |w|, |w|) with w = kappa (u + v).

(i)   Pyro enumerates the bank index (TraceEnum_ELBO) with the normalized C factor;
(ii)  the collapsed Bridge ("exact", C normalizer from a target bank) and Bridge.explain;
(iii) the closed form (Bridge(..., marginal="sphere").log_ratio(method="analytic"));
(iv)  NUTS over a continuous z_b on the sphere (SphereReparam) with vMF conditionals.
"""

import math

import pyro
import pytest
import scipy.stats
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, TraceEnum_ELBO, config_enumerate
from pyro.ops.stats import effective_sample_size

import pyro_contrast as pc
from pyro_contrast.distributions import (
    ContrastiveConditional,
    SphereReparam,
    TiltedConditional,
    UniformSphere,
    contrastive_factor,
)
from pyro_contrast.ops.bessel import bessel_ratio, log_hyp0f1_sphere
from tests.common import assert_close

DIM, TEMPERATURE = 3, 0.25
KAPPA = 1 / TEMPERATURE
_SPHERE = UniformSphere(DIM, dtype=torch.float64)


def _problem(seed=0):
    generator = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.normalize(torch.randn(2, DIM, generator=generator).double(), dim=-1)
    c = torch.nn.functional.normalize(torch.randn(4, DIM, generator=generator).double(), dim=-1)
    ab = pc.Critic.from_embeddings("cosine", temperature=TEMPERATURE).double()
    bc = pc.Critic.from_embeddings("cosine", temperature=TEMPERATURE).double()
    return a, c, ab, bc


def _closed_form_log_ratio(a, c):
    r = KAPPA * (2 + 2 * a @ c.T).clamp(min=0).sqrt()
    return log_hyp0f1_sphere(DIM, r) - 2 * log_hyp0f1_sphere(DIM, torch.tensor(KAPPA).double())


def _enumerated_model(ab, bc, bank_b, bank_c):
    @config_enumerate
    def model(a, c):
        b = pyro.sample("b", ContrastiveConditional(ab, a, bank_b))
        contrastive_factor("c", bc, bank_b[b], c, bank_c)

    return model


def test_enumeration_equals_the_collapsed_bridge_and_both_match_the_closed_form():
    a, c, ab, bc = _problem()
    closed = _closed_form_log_ratio(a, c)
    analytic = pc.Bridge([ab, bc], [pc.Bank(_SPHERE.sample((8,)))], marginal="sphere")
    assert_close(analytic.log_ratio(a, c, method="analytic"), closed, atol=1e-10)
    # (ii) over 10 independent pairs of banks: mean and standard error of the estimator
    replicates = []
    for _ in range(10):
        bank_b, bank_c = _SPHERE.sample((2000,)), _SPHERE.sample((2000,))
        bridge = pc.Bridge([ab, bc], [pc.Bank(bank_b)], target_bank=bank_c)
        replicates.append(bridge.log_ratio(a, c, method="exact"))
    replicates = torch.stack(replicates)
    se = replicates.std(0) / math.sqrt(replicates.shape[0])
    # Student t with 9 degrees of freedom, two-sided 1e-3 over the 8 pairs
    t = scipy.stats.t.isf(1e-3 / (2 * closed.numel()), replicates.shape[0] - 1)
    assert torch.all((replicates.mean(0) - closed).abs() < t * se)
    # (i) Pyro's enumeration of the bank index, pair by pair, on the last pair of banks
    collapsed = pc.Bridge([ab, bc], [pc.Bank(bank_b)], target_bank=bank_c)
    model = _enumerated_model(ab, bc, bank_b, bank_c)
    elbo = TraceEnum_ELBO(max_plate_nesting=0)
    enumerated = torch.tensor(
        [[-elbo.loss(model, lambda a, c: None, a_n, c_k) for c_k in c] for a_n in a],
        dtype=torch.float64,
    )
    assert_close(enumerated, collapsed.log_ratio(a, c, method="exact"), atol=1e-10)


def _bridge_posterior(seed=0, num_items=2000):
    a, c, ab, bc = _problem(seed)
    u, v = a[0], c[0]
    w = KAPPA * (u + v)
    closed = bessel_ratio(DIM, w.norm()) * w / w.norm()
    bank_b, bank_c = _SPHERE.sample((num_items,)), _SPHERE.sample((num_items,))
    weights = pc.Bridge([ab, bc], [pc.Bank(bank_b)], target_bank=bank_c).explain(u[None], v[None])
    model = _enumerated_model(ab, bc, bank_b, bank_c)
    marginal = TraceEnum_ELBO(max_plate_nesting=0).compute_marginals(
        model, lambda a, c: None, u, v
    )["b"]
    return u, v, ab, bc, closed, weights[0], marginal.probs, bank_b


def test_posterior_of_the_bridge_by_enumeration_explain_and_closed_form():
    u, v, ab, bc, closed, explained, enumerated, bank_b = _bridge_posterior()
    assert_close(enumerated, explained, atol=1e-12)
    mean = explained @ bank_b
    # self-normalized importance sampling: se_j^2 = sum_m p_m^2 (b_mj - mean_j)^2
    se = (explained.unsqueeze(-1).square() * (bank_b - mean).square()).sum(0).sqrt()
    assert torch.all((mean - closed).abs() < 4.5 * se), (mean, closed, se)


@pytest.mark.slow
def test_nuts_over_a_continuous_bridge_matches_the_closed_form():
    u, v, ab, bc, closed, *_ = _bridge_posterior()

    def model(a, c):
        z = pyro.sample("z_b", TiltedConditional(ab, a, _SPHERE))  # vMF(u, kappa)
        pyro.sample("c", TiltedConditional(bc, z, _SPHERE), obs=c)  # vMF(z_b, kappa)

    reparam = poutine.reparam(model, config={"z_b": SphereReparam()})
    # 200 + 200 iterations: ~30 s on one shared core (each evaluation: two vMF normalizers)
    mcmc = MCMC(NUTS(reparam), num_samples=200, warmup_steps=200, disable_progbar=True)
    mcmc.run(u, v)
    z = torch.nn.functional.normalize(mcmc.get_samples()["z_b_lifted"], dim=-1)
    se = z.std(0) / effective_sample_size(z.unsqueeze(0)).sqrt()
    z_score = scipy.stats.norm.isf(1e-3 / (2 * DIM))
    assert torch.all((z.mean(0) - closed).abs() < z_score * se), (z.mean(0), closed, se)
