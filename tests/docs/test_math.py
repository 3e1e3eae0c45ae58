"""Statements of the mathematics page (docs/math.rst) that no module test covers.

Each test checks one formula of the page against an independent computation: a second
derivation written out here, a quadrature on a grid, or a Monte Carlo estimate with a stated
error bound.
"""

import math

import pytest
import torch

import pyro_contrast as pc
from pyro_contrast.marginals.analytic import analytic_log_ratio
from tests.common import assert_close

# These tests normalize C over a handful of candidates on purpose (small, exact cases);
# elsewhere the SmallNormalizerWarning stays an error, so an unintended small normalizer shows.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pyro_contrast.marginals.bridge.SmallNormalizerWarning"
)


F64 = torch.float64


def _one_hot_bridge(f_ab, f_bc, h=None, target=None):
    """A bridge whose scores are given tables: f_AB (N, M) and f_BC (M, K), plus h(b_m).

    Dot critics on one-hot embeddings realise any table: query n is e_n, bank item m is
    column m of f_AB for the A-B critic and e_m (with h_m appended) for the B-C critic,
    candidate k is row k of f_BC^T (with a 1 appended, so h(b) adds to every candidate).
    """
    num_queries, num_bank = f_ab.shape
    bank_bc = torch.eye(num_bank, dtype=F64)
    candidates = f_bc.T
    if h is not None:
        bank_bc = torch.cat([bank_bc, h.unsqueeze(-1)], -1)
        candidates = torch.cat([candidates, torch.ones(len(candidates), 1, dtype=F64)], -1)
        if target is not None:
            target = torch.cat([target, torch.ones(len(target), 1, dtype=F64)], -1)
    critics = [pc.Critic.from_embeddings("dot"), pc.Critic.from_embeddings("dot")]
    bridge = pc.Bridge(critics, [pc.Bank(views=(f_ab.T.contiguous(), bank_bc))], target_bank=target)
    return bridge, torch.eye(num_queries, dtype=F64), candidates


def test_exact_is_invariant_to_a_term_in_the_bridge():
    # f_BC -> f_BC + h(b) changes every B-C score, and the exact marginal not at all;
    # LogSumExp, which skips the normalizer, moves (so the check can fail).
    g = torch.Generator().manual_seed(0)
    f_ab = 2 * torch.randn(3, 7, generator=g, dtype=F64)
    f_bc = 2 * torch.randn(7, 5, generator=g, dtype=F64)
    h = 3 * torch.randn(7, generator=g, dtype=F64)
    target = torch.randn(40, 7, generator=g, dtype=F64)  # a C bank for the normalizer
    for c_bank in (None, target):
        plain, a, c = _one_hot_bridge(f_ab, f_bc, target=c_bank)
        shifted, a_h, c_h = _one_hot_bridge(f_ab, f_bc, h=h, target=c_bank)
        with torch.no_grad():
            exact, exact_h = plain.log_ratio(a, c), shifted.log_ratio(a_h, c_h)
            lse, lse_h = plain.log_ratio(a, c, "lse"), shifted.log_ratio(a_h, c_h, "lse")
        assert_close(exact_h, exact, atol=1e-10, rtol=1e-10)
        assert (lse_h.softmax(-1) - lse.softmax(-1)).abs().max() > 1e-2


def test_lse_is_the_exact_marginal_reweighted_by_the_normalizer():
    # softmax_k LSE_k = sum_m pi_m p(c_k | b_m) with pi_m proportional to p(b_m | a) Z(b_m)
    g = torch.Generator().manual_seed(1)
    f_ab = 2 * torch.randn(4, 6, generator=g, dtype=F64)
    f_bc = 2 * torch.randn(6, 9, generator=g, dtype=F64)
    bridge, a, c = _one_hot_bridge(f_ab, f_bc)
    with torch.no_grad():
        lse = bridge.log_ratio(a, c, "lse")
    log_z = f_bc.logsumexp(-1) - math.log(f_bc.shape[1])  # the candidates normalize C
    weights = (f_ab.log_softmax(-1) + log_z).softmax(-1)
    expected = weights @ f_bc.softmax(-1)
    assert_close(lse.softmax(-1), expected, atol=1e-12, rtol=1e-10)


def test_l2_bridge_ranks_by_the_shrunk_query():
    # Gaussian bridge N(m, S) with squared-L2 critics a, b: as a function of the candidate v
    # the log ratio is -(v - u')^T Theta (v - u') / 2 up to a term in u alone.
    g = torch.Generator().manual_seed(2)
    dim = 3
    factor = torch.randn(dim, dim, generator=g, dtype=F64)
    cov = factor @ factor.T + 0.2 * torch.eye(dim, dtype=F64)
    loc = torch.randn(dim, generator=g, dtype=F64)
    marginal = torch.distributions.MultivariateNormal(loc, cov)
    critic_ab = pc.Critic.from_embeddings("neg_sq_l2", temperature=0.8)
    critic_bc = pc.Critic.from_embeddings("neg_sq_l2", temperature=1.6)
    a_ = 1 / critic_ab.temperature.detach().double().item()
    b_ = 1 / critic_bc.temperature.detach().double().item()
    u = torch.randn(4, dim, generator=g, dtype=F64)
    v = torch.randn(6, dim, generator=g, dtype=F64)
    with torch.no_grad():
        pmi = analytic_log_ratio(critic_ab, critic_bc, u, v, marginal)
    eye = torch.eye(dim, dtype=F64)
    shrunk = loc + (u - loc) @ torch.linalg.solve(eye + a_ * cov, a_ * cov).T
    theta = b_ * (eye + a_ * cov) @ torch.linalg.inv(eye + (a_ + b_) * cov)
    diff = v.unsqueeze(0) - shrunk.unsqueeze(1)  # (N, K, d)
    quadratic = -0.5 * torch.einsum("nki,ij,nkj->nk", diff, theta, diff)
    gap = pmi - quadratic
    assert_close(gap - gap[:, :1], torch.zeros_like(gap), atol=1e-10, rtol=0)
    # and the plain direct L2 ranking is not the same thing here
    direct = -(torch.cdist(u, v) ** 2)
    assert not torch.equal(direct.argsort(-1), pmi.argsort(-1))


def test_bayes_optimal_recall_is_the_expected_top_posterior():
    # One true candidate among K - 1 draws from p(c): softmax_k PMI is the posterior that
    # candidate k is the true one, so P(argmax is true) = E[max_k softmax_k PMI].
    chain = pc.sim.LinearGaussianChain(seed=0)  # dims 8 / 4 / 8, noise 0.5
    num_groups, k = 2000, 10
    a, _, c = chain.sample(num_groups * k, dtype=F64)
    a, c = a.reshape(num_groups, k, -1), c.reshape(num_groups, k, -1)
    pmi = torch.stack([chain.log_ratio(a[i], c[i]) for i in range(num_groups)]).reshape(-1, k)
    positives = torch.arange(k).repeat(num_groups)
    hits = (pmi.argmax(-1) == positives).double()
    expected = pmi.softmax(-1).amax(-1)
    # paired difference of two unbiased estimates of the same number: 4.5 standard errors
    difference = hits - expected
    assert abs(difference.mean()) < 4.5 * difference.std() / math.sqrt(len(difference))
    assert abs(expected.mean() - 0.667) < 0.02  # the page's value for this chain, K = 10
    # ranking by log p(c | a) instead of the PMI is worse
    log_conditional = pmi + torch.stack(
        [_log_marginal_c(chain, c[i]) for i in range(num_groups)]
    ).reshape(-1, k)
    worse = (log_conditional.argmax(-1) == positives).double().mean()
    assert worse < hits.mean() - 0.05


def _log_marginal_c(chain, c):
    """log p(c) of the chain, (K,) -> broadcast over the group's queries."""
    density = torch.distributions.MultivariateNormal(chain.loc_c, chain.cov_cc)
    return density.log_prob(c).expand(len(c), len(c))


def test_symmetric_clip_expands_to_the_trace_at_high_temperature():
    # L = log n - ((n - 1) / n) tr(G1 S G2^T) / T + O(1 / T^2), S the unbiased cross-covariance
    g = torch.Generator().manual_seed(3)
    n = 12
    x, y = torch.randn(n, 5, generator=g, dtype=F64), torch.randn(n, 4, generator=g, dtype=F64)
    g1, g2 = torch.randn(3, 5, generator=g, dtype=F64), torch.randn(3, 4, generator=g, dtype=F64)
    off_diagonal = x.sum(0).outer(y.sum(0)) - x.T @ y
    s = x.T @ y / n - off_diagonal / (n * (n - 1))
    trace = torch.trace(g1 @ s @ g2.T)
    residuals = []
    for temperature in (100.0, 1000.0):
        loss = pc.losses.symmetric_infonce((x @ g1.T) @ (y @ g2.T).T / temperature)
        first_order = math.log(n) - (n - 1) / n * trace / temperature
        residuals.append(abs(float(loss - first_order)))
    # second order: ten times the temperature, a hundredth of the residual
    assert residuals[0] > 0
    assert 0.005 < residuals[1] / residuals[0] < 0.02


def test_bank_normalized_factor_gives_the_true_posterior():
    # x ~ N(0, 1), y = x + eps / 2, y observed at 1.5: the posterior is N(1.2, 0.2). The
    # neg_sq_l2 critic with linear encoders that InfoNCE reaches is PMI - x^2 / 2; as a raw
    # factor it gives N(1.0, 1/6); normalized over a bank of y it gives the truth.
    encoder_x, encoder_y = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    h = math.sqrt(3.2)  # f = -(g x - h y)^2 / 2 = -1.6 y^2 + 4 x y - 2.5 x^2
    with torch.no_grad():
        encoder_x.weight.fill_(4 / h)
        encoder_y.weight.fill_(h)
    critic = pc.Critic(encoder_x, encoder_y, "neg_sq_l2", temperature=1.0).double()
    grid = torch.linspace(-3, 5, 801, dtype=F64).unsqueeze(-1)
    y_obs = torch.tensor([[1.5]], dtype=F64)
    gen = torch.Generator().manual_seed(4)
    bank = math.sqrt(1.25) * torch.randn(20_000, 1, generator=gen, dtype=F64)  # y ~ p(y)
    log_prior = -0.5 * grid.squeeze(-1) ** 2
    with torch.no_grad():
        raw = critic.pairwise(grid, y_obs).squeeze(-1)
        normalized = raw - (critic.pairwise(grid, bank).logsumexp(-1) - math.log(len(bank)))

    def moments(log_density):
        weights = log_density.softmax(0)
        mean = (weights * grid.squeeze(-1)).sum()
        return float(mean), float((weights * (grid.squeeze(-1) - mean) ** 2).sum())

    raw_mean, raw_var = moments(log_prior + raw)
    assert abs(raw_mean - 1.0) < 1e-6 and abs(raw_var - 1 / 6) < 1e-6
    mean, var = moments(log_prior + normalized)
    # Monte Carlo error of a 20,000-item bank: a few thousandths
    assert abs(mean - 1.2) < 0.02 and abs(var - 0.2) < 0.01
