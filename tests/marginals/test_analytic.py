"""Closed-form bridges (the mathematics page, §3, §5) against quadrature, Monte Carlo and the bank
marginal."""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
import torch
from pyro.distributions import MultivariateNormal

import pyro_contrast as pc
from pyro_contrast.distributions.uniform_sphere import UniformSphere
from pyro_contrast.distributions.vmf import VonMisesFisher
from pyro_contrast.marginals.analytic import analytic_log_ratio, resolve_marginal
from tests.common import assert_close

# These tests normalize C over a handful of candidates on purpose (small, exact cases);
# elsewhere the SmallNormalizerWarning stays an error, so an unintended small normalizer shows.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pyro_contrast.marginals.bridge.SmallNormalizerWarning"
)


F64 = torch.float64


def _critic(similarity, temperature, bias=None, dim=None, weight=None):
    critic = pc.Critic.from_embeddings(
        similarity, temperature, bias=bias is not None, dim_x=dim, dim_y=dim
    )
    with torch.no_grad():
        if bias is not None:
            critic.bias.fill_(bias)
        if weight is not None:
            critic.weight.copy_(weight)
    return critic


def _temperature(critic):
    # the critic stores log T in float32: use its value, not the literal it was built from
    return critic.temperature.detach().double().item()


def _log_sphere_mgf(dim, r):
    """log E exp(r w.z), z uniform on S^{d-1}, by quadrature over t = w.z ~ (1-t^2)^((d-3)/2)."""
    power = (dim - 3) / 2
    value = scipy.integrate.quad(
        lambda t: math.exp(r * (t - 1)) * (1 - t * t) ** power,
        -1,
        1,
        epsabs=0,
        epsrel=1e-13,
        limit=200,
    )[0]
    return r + math.log(value) - scipy.special.betaln(0.5, (dim - 1) / 2)


@pytest.mark.parametrize("dim", [3, 8, 64])
def test_uniform_sphere_matches_quadrature(dim):
    a = 3 * torch.randn(3, dim, dtype=F64)  # unnormalized: the cosine critic normalizes
    c = torch.randn(4, dim, dtype=F64)
    c[0] = -a[0]  # antipodal: ||k1 u + k2 v|| = k1 - k2
    critic_ab, critic_bc = _critic("cosine", 0.1, bias=0.3), _critic("cosine", 0.25, -2.0)
    k1, k2 = 1 / _temperature(critic_ab), 1 / _temperature(critic_bc)
    pmi = analytic_log_ratio(critic_ab, critic_bc, a, c, UniformSphere(dim))
    cosine = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(c, dim=-1).T
    r = (k1**2 + k2**2 + 2 * k1 * k2 * cosine).clamp(min=0).sqrt()
    expected = torch.tensor([[_log_sphere_mgf(dim, float(x)) for x in row] for row in r])
    expected = expected - _log_sphere_mgf(dim, k1) - _log_sphere_mgf(dim, k2)
    assert pmi.dtype == F64
    assert_close(pmi, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("dim", [3, 8, 64])
def test_uniform_sphere_ranks_like_cosine(dim):
    a, c = torch.randn(5, dim, dtype=F64), torch.randn(40, dim, dtype=F64)
    pmi = analytic_log_ratio(
        _critic("cosine", 0.07), _critic("cosine", 0.2), a, c, UniformSphere(dim)
    )
    cosine = _critic("cosine", 1.0).pairwise_embeddings(a, c)
    for row_pmi, row_cos in zip(pmi, cosine, strict=True):
        assert scipy.stats.kendalltau(row_pmi, row_cos).statistic == 1.0


def test_uniform_sphere_consistency():
    # E_{v uniform}[exp PMI(a, v)] = 1; Gauss-Jacobi nodes integrate (1-t^2)^((d-3)/2) exactly
    dim = 8
    critic_ab, critic_bc = _critic("cosine", 1 / 6), _critic("cosine", 1 / 3)
    nodes, weights = scipy.special.roots_jacobi(80, (dim - 3) / 2, (dim - 3) / 2)
    u = torch.nn.functional.normalize(torch.randn(1, dim, dtype=F64), dim=-1)
    ortho = torch.randn(dim, dtype=F64)
    ortho = torch.nn.functional.normalize(ortho - (ortho @ u[0]) * u[0], dim=0)
    t = torch.tensor(nodes, dtype=F64).unsqueeze(-1)
    v = t * u + (1 - t * t).sqrt() * ortho
    pmi = analytic_log_ratio(critic_ab, critic_bc, u, v, UniformSphere(dim))
    total = (pmi[0].exp() * torch.tensor(weights, dtype=F64)).sum()
    total = total / math.exp(scipy.special.betaln(0.5, (dim - 1) / 2))
    assert abs(float(total) - 1) < 1e-10


def test_von_mises_fisher_marginal_matches_monte_carlo():
    dim = 3
    critic_ab, critic_bc = _critic("cosine", 0.5), _critic("cosine", 1 / 1.5)
    k1, k2 = 1 / _temperature(critic_ab), 1 / _temperature(critic_bc)
    mu = torch.nn.functional.normalize(torch.tensor([1.0, -0.5, 0.3], dtype=F64), dim=0)
    marginal = VonMisesFisher(mu, torch.tensor(3.0, dtype=F64))
    a, c = torch.randn(2, dim, dtype=F64), torch.randn(3, dim, dtype=F64)
    pmi = analytic_log_ratio(critic_ab, critic_bc, a, c, marginal)
    z = marginal.sample((200_000,))
    u = torch.nn.functional.normalize(a, dim=-1)
    v = torch.nn.functional.normalize(c, dim=-1)
    joint = (k1 * (u @ z.T)).unsqueeze(-1) + k2 * (z @ v.T)  # (N, M, K)
    _assert_ratio_estimate(pmi + _log_sphere_mgf(dim, k2), joint, k1 * (u @ z.T))
    # a concentrated B marginal breaks the monotone link to the cosine (the mathematics page, §3
    # needs uniform)
    many = torch.randn(200, dim, dtype=F64)
    pmi = analytic_log_ratio(_critic("cosine", 0.2), _critic("cosine", 0.2), a, many, marginal)
    cosine = u @ torch.nn.functional.normalize(many, dim=-1).T
    assert scipy.stats.kendalltau(pmi[0], cosine[0]).statistic < 0.99


def _assert_ratio_estimate(expected, log_joint, log_query):
    """``expected`` (N, K) vs log mean_m exp(log_joint[n, m, k]) - log mean_m exp(log_query).

    Delta method: the log of a ratio of sample means X/Y has standard error
    sd(X/E X - Y/E Y) / sqrt(M); 4.5 sigma with Bonferroni over a few dozen entries.
    """
    num = log_query.shape[1]
    shift_j, shift_q = log_joint.amax(1, keepdim=True), log_query.amax(1, keepdim=True)
    x, y = (log_joint - shift_j).exp(), (log_query - shift_q).exp().unsqueeze(-1)
    mean_x, mean_y = x.mean(1, keepdim=True), y.mean(1, keepdim=True)
    estimate = (mean_x.log() + shift_j - mean_y.log() - shift_q.unsqueeze(-1)).squeeze(1)
    se = (x / mean_x - y / mean_y).std(1) / math.sqrt(num)
    assert torch.all((estimate - expected).abs() < 4.5 * se + 1e-9), (estimate - expected) / se


def _gaussian(dim, scale=0.6, shift=0.0):
    factor = scale * torch.randn(dim, dim, dtype=F64)
    cov = factor @ factor.T + 0.3 * torch.eye(dim, dtype=F64)
    return MultivariateNormal(shift + 0.5 * torch.randn(dim, dtype=F64), cov)


def _log_normalizer_c(critic, z, target):
    """Textbook log E_{v ~ N(m_c, S_c)} exp f_BC(z, v) (Gaussian MGF or convolution), (M,)."""
    m_c, s_c = target.loc, target.covariance_matrix
    temperature, bias = _temperature(critic), critic.bias.detach().double().item()
    if critic.similarity == "neg_sq_l2":
        conv = MultivariateNormal(m_c, s_c + temperature * torch.eye(len(m_c), dtype=F64))
        return conv.log_prob(z) + 0.5 * len(m_c) * math.log(2 * math.pi * temperature) + bias
    g = (z if critic.weight is None else z @ critic.weight.to(F64)) / temperature
    return g @ m_c + 0.5 * ((g @ s_c) * g).sum(-1) + bias


SIMILARITY_PAIRS = [
    ("dot", "dot"),
    ("neg_sq_l2", "neg_sq_l2"),
    ("dot", "neg_sq_l2"),
    ("bilinear", "bilinear"),
]


@pytest.mark.parametrize("with_target", [False, True])
@pytest.mark.parametrize("similarities", SIMILARITY_PAIRS, ids="-".join)
def test_gaussian_matches_monte_carlo(similarities, with_target):
    dim = 3
    marginal, target = _gaussian(dim), _gaussian(dim, shift=0.3)
    weights = [
        0.5 * torch.randn(dim, dim, dtype=F64) if s == "bilinear" else None for s in similarities
    ]
    critic_ab = _critic(similarities[0], 1.7, 0.7, dim, weights[0])
    critic_bc = _critic(similarities[1], 2.3, -1.1, dim, weights[1])
    a, c = marginal.sample((3,)), target.sample((4,))
    pmi = analytic_log_ratio(
        critic_ab, critic_bc, a, c, marginal, target=target if with_target else None
    )
    z = marginal.sample((200_000,))
    f_ab = critic_ab.pairwise_embeddings(a, z).double()
    f_bc = critic_bc.pairwise_embeddings(z, c).double()
    # without a target the constant C normalizer is left out: only the bias b_BC remains in it
    log_zc = (
        _log_normalizer_c(critic_bc, z, target)
        if with_target
        else critic_bc.bias.detach().double().item()
    )
    log_joint = f_ab.unsqueeze(-1) + (f_bc - torch.as_tensor(log_zc).reshape(-1, 1))
    _assert_ratio_estimate(pmi, log_joint, f_ab)


def test_gaussian_matches_math_closed_forms():
    # the mathematics page, §5, written independently with explicit inverses (well conditioned here)
    dim = 4
    marginal = _gaussian(dim)
    m, s = marginal.loc, marginal.covariance_matrix
    u, v = torch.randn(3, dim, dtype=F64), torch.randn(5, dim, dtype=F64)
    dot = analytic_log_ratio(_critic("dot", 0.8), _critic("dot", 1.3), u, v, marginal)
    t1, t2 = _temperature(_critic("dot", 0.8)), _temperature(_critic("dot", 1.3))
    alpha, beta = u / t1, v / t2
    expected = alpha @ s @ beta.T + beta @ m + 0.5 * ((beta @ s) * beta).sum(-1)
    assert_close(dot, expected, atol=1e-10, rtol=1e-10)

    l2 = analytic_log_ratio(_critic("neg_sq_l2", t1), _critic("neg_sq_l2", t2), u, v, marginal)
    a_, b_ = 1 / t1, 1 / t2
    eye = torch.eye(dim, dtype=F64)
    q = torch.linalg.inv(eye + (a_ + b_) * s)
    k = a_ * b_ * s @ q
    diff = u.unsqueeze(1) - v
    joint = (
        -0.5 * ((diff @ k) * diff).sum(-1)
        - 0.5 * a_ * (((u - m) @ q) * (u - m)).sum(-1, keepdim=True)
        - 0.5 * b_ * (((v - m) @ q) * (v - m)).sum(-1)
        - 0.5 * torch.logdet(eye + (a_ + b_) * s)
    )
    query = -0.5 * a_ * (((u - m) @ torch.linalg.inv(eye + a_ * s)) * (u - m)).sum(
        -1
    ) - 0.5 * torch.logdet(eye + a_ * s)
    assert_close(l2, joint - query.unsqueeze(-1), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("similarities", SIMILARITY_PAIRS[:3], ids="-".join)
def test_gaussian_target_consistency(similarities):
    # E_{v ~ target}[exp PMI(a, v)] = 1, by Gauss-Hermite in d = 1 (exp PMI * density is
    # Gaussian in v, so 60 nodes are exact to rounding)
    marginal = MultivariateNormal(torch.tensor([0.4], dtype=F64), torch.tensor([[0.8]], dtype=F64))
    target = MultivariateNormal(torch.tensor([-0.3], dtype=F64), torch.tensor([[0.5]], dtype=F64))
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    v = (target.loc + target.stddev * torch.tensor(nodes, dtype=F64)).unsqueeze(-1)
    a = torch.tensor([[-1.5], [0.2], [2.0]], dtype=F64)
    pmi = analytic_log_ratio(
        _critic(similarities[0], 0.9, 1.0),
        _critic(similarities[1], 0.6),
        a,
        v,
        marginal,
        target=target,
    )
    total = pmi.exp() @ torch.tensor(weights, dtype=F64) / math.sqrt(2 * math.pi)
    assert_close(total, torch.ones(3, dtype=F64), atol=1e-10, rtol=0)


def test_bias_and_temperature_handling():
    dim = 3
    marginal, target = _gaussian(dim), _gaussian(dim)
    a, c = torch.randn(4, dim, dtype=F64), torch.randn(5, dim, dtype=F64)
    plain = analytic_log_ratio(
        _critic("dot", 0.5), _critic("dot", 2.0), a, c, marginal, target=target
    )
    biased = analytic_log_ratio(
        _critic("dot", 0.5, 3.0), _critic("dot", 2.0, -7.0), a, c, marginal, target=target
    )
    assert_close(biased, plain, atol=1e-12, rtol=0)
    # a dot critic at temperature T equals one at temperature 1 on embeddings u / T
    unit = analytic_log_ratio(
        _critic("dot", 1.0),
        _critic("dot", 1.0),
        a / 0.5,
        c / 2.0,
        marginal,
        target=MultivariateNormal(target.loc / 2.0, target.covariance_matrix / 4),
    )
    assert_close(unit, plain, atol=1e-10, rtol=1e-10)
    # learnable temperatures get gradients through the closed form
    critic = pc.Critic.from_embeddings("dot", 0.5, learn_temperature=True)
    analytic_log_ratio(critic, _critic("dot", 2.0), a, c, marginal).sum().backward()
    assert torch.isfinite(critic.log_temperature.grad) and critic.log_temperature.grad != 0


def test_output_dtype_follows_embeddings():
    marginal = _gaussian(2)
    critic = _critic("dot", 1.0)
    out = analytic_log_ratio(critic, critic, torch.randn(2, 2), torch.randn(3, 2), marginal)
    assert out.dtype == torch.float32
    out = analytic_log_ratio(
        critic,
        critic,
        torch.randn(2, 2, dtype=torch.float16),
        torch.randn(3, 2, dtype=torch.bfloat16),
        marginal,
    )
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def _rms_slope(sizes, errors_for):
    rms = [errors_for(size).pow(2).mean().sqrt().item() for size in sizes]
    return np.polyfit(np.log(sizes), np.log(rms), 1)[0], rms


@pytest.mark.slow
def test_exact_bank_estimator_converges_on_the_circle():
    # d = 2, uniform B: 64 equally spaced C points make the C normalizer exact (trapezoid rule
    # on a periodic analytic function), so the error is the B bank's alone, O(1/sqrt(M)).
    angles = torch.arange(64, dtype=F64) * 2 * math.pi / 64
    design = torch.stack([angles.cos(), angles.sin()], -1)
    critic_ab, critic_bc = _critic("cosine", 0.5), _critic("cosine", 0.4)
    a, c = torch.randn(8, 2, dtype=F64), torch.randn(8, 2, dtype=F64)
    truth = analytic_log_ratio(critic_ab, critic_bc, a, c, UniformSphere(2, dtype=F64))

    def errors(size):
        return torch.stack(
            [
                pc.Bridge(
                    [critic_ab, critic_bc],
                    [pc.Bank(torch.randn(size, 2, dtype=F64))],
                    target_bank=design,
                ).log_ratio(a, c, method="exact")
                - truth
                for _ in range(12)
            ]
        )

    # The log-log slope of the RMS error is -1/2; over a 64-fold range of M with 12 banks
    # per size its sampling spread is about 0.04 (checked over seeds), so +-0.15 is > 3 sigma.
    slope, rms = _rms_slope([64, 256, 1024, 4096], errors)
    assert abs(slope + 0.5) < 0.15, (slope, rms)
    assert rms[-1] < 0.05


@pytest.mark.slow
def test_exact_bank_estimator_converges_to_gaussian_target_form():
    # The bank marginal with a C normalizer over J = M / 2 draws from the target converges to
    # the closed form with that Gaussian target; both banks contribute O(1/M) variance.
    marginal = MultivariateNormal(torch.tensor([0.3], dtype=F64), torch.tensor([[0.64]], dtype=F64))
    target = MultivariateNormal(torch.tensor([-0.2], dtype=F64), torch.tensor([[0.49]], dtype=F64))
    critic_ab, critic_bc = _critic("dot", 1.0, 0.5), _critic("neg_sq_l2", 0.7, 2.0)
    # bounded queries keep the bank weights exp(f_AB) light-tailed (the CLT regime)
    a = torch.linspace(-1.0, 1.5, 6, dtype=F64).unsqueeze(-1)
    c = target.sample((6,))
    truth = analytic_log_ratio(critic_ab, critic_bc, a, c, marginal, target=target)

    def errors(size):
        return torch.stack(
            [
                pc.Bridge(
                    [critic_ab, critic_bc],
                    [pc.Bank(marginal.sample((size,)))],
                    target_bank=target.sample((size // 2,)),
                ).log_ratio(a, c)
                - truth
                for _ in range(12)
            ]
        )

    # slope spread over seeds is about 0.05 here: +-0.15 is 3 sigma
    slope, rms = _rms_slope([32, 128, 512, 2048], errors)
    assert abs(slope + 0.5) < 0.15, (slope, rms)
    assert rms[-1] < 0.06


def test_bridge_analytic_method_uses_resolved_marginal():
    bank = torch.randn(300, 3, dtype=F64)
    a, c = torch.randn(2, 3, dtype=F64), torch.randn(4, 3, dtype=F64)
    for similarity, marginal in [("dot", "gaussian"), ("cosine", "sphere")]:
        critics = [_critic(similarity, 0.5), _critic(similarity, 0.8)]
        bridge = pc.Bridge(critics, [pc.Bank(bank)], marginal=marginal)
        expected = analytic_log_ratio(*critics, a, c, resolve_marginal(marginal, bank))
        assert_close(bridge.log_ratio(a, c, method="analytic"), expected, atol=1e-12, rtol=0)


def test_resolve_marginal():
    bank = torch.randn(500, 4, dtype=F64) * torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=F64) + 1.0
    fitted = resolve_marginal("gaussian", bank, ridge=0.0)
    assert_close(fitted.loc, bank.mean(0), atol=1e-12, rtol=0)
    assert_close(
        fitted.covariance_matrix, torch.tensor(np.cov(bank.numpy().T)), atol=1e-12, rtol=1e-12
    )
    # a bank smaller than its dimension still gives a positive definite fit
    small = resolve_marginal("gaussian", bank[:3])
    assert torch.linalg.eigvalsh(small.covariance_matrix).min() > 0
    sphere = resolve_marginal("sphere", bank, critics=(_critic("cosine", 1.0),) * 2)
    assert isinstance(sphere, UniformSphere) and sphere.event_shape == (4,)
    assert resolve_marginal(fitted, bank) is fitted


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda b: resolve_marginal("uniform", b), ValueError, "one of"),
        (lambda b: resolve_marginal("gaussian"), ValueError, "bank_embeddings"),
        (lambda b: resolve_marginal("gaussian", b[:1]), ValueError, "at least 2"),
        (lambda b: resolve_marginal("gaussian", torch.ones(5, 4)), ValueError, "zero variance"),
        (lambda b: resolve_marginal("gaussian", b * math.nan), ValueError, "NaN"),
        (lambda b: resolve_marginal(UniformSphere(3), b), ValueError, "dimension"),
        (lambda b: resolve_marginal(UniformSphere(4, (2,)), b), ValueError, "batch shape"),
        (
            lambda b: resolve_marginal(torch.distributions.Normal(0.0, 1.0), b),
            TypeError,
            "MultivariateNormal",
        ),
        (lambda b: resolve_marginal("gaussian", b, ridge=-1.0), ValueError, "ridge"),
        (
            lambda b: resolve_marginal("sphere", b, critics=(_critic("dot", 1.0),) * 2),
            ValueError,
            "critic_ab has similarity 'dot'",
        ),
        (
            lambda b: resolve_marginal("gaussian", b, critics=(_critic("cosine", 1.0),) * 2),
            ValueError,
            "marginal='sphere'",
        ),
    ],
)
def test_resolve_marginal_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.randn(10, 4))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda g, s: analytic_log_ratio(
                _critic("dot", 1.0), _critic("dot", 1.0), torch.ones(2, 3), torch.ones(2, 3), g
            ),
            ValueError,
            "dimension",
        ),
        (
            lambda g, s: analytic_log_ratio(
                _critic("dot", 1.0),
                _critic("dot", 1.0),
                torch.ones(2, 2),
                torch.ones(2, 2),
                g,
                target=_gaussian(3),
            ),
            ValueError,
            "target",
        ),
        (
            lambda g, s: analytic_log_ratio(
                _critic("dot", 1.0),
                _critic("dot", 1.0),
                torch.ones(2, 2),
                torch.ones(2, 2),
                g,
                target=s,
            ),
            ValueError,
            "MultivariateNormal",
        ),
        (
            lambda g, s: analytic_log_ratio(
                _critic("cosine", 1.0),
                _critic("cosine", 1.0),
                torch.ones(2, 2),
                torch.ones(2, 2),
                s,
                target=g,
            ),
            ValueError,
            "UniformSphere",
        ),
        (
            lambda g, s: analytic_log_ratio(
                _critic("cosine", 1.0), _critic("dot", 1.0), torch.ones(2, 2), torch.ones(2, 2), s
            ),
            ValueError,
            "critic_bc",
        ),
        (
            lambda g, s: analytic_log_ratio(
                _critic("dot", 1.0), _critic("dot", 1.0), torch.ones(0, 2), torch.ones(2, 2), g
            ),
            ValueError,
            "empty",
        ),
        (
            lambda g, s: analytic_log_ratio(
                _critic("dot", 1.0),
                _critic("dot", 1.0),
                torch.ones(2, 2),
                torch.ones(2, 2),
                "gaussian",
            ),
            TypeError,
            "resolve_marginal",
        ),
        (
            lambda g, s: analytic_log_ratio(
                lambda x, y: x, _critic("dot", 1.0), torch.ones(2, 2), torch.ones(2, 2), g
            ),
            TypeError,
            "critic_ab",
        ),
    ],
)
def test_analytic_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(_gaussian(2), UniformSphere(2))


def test_bank_marginals_fit_the_target_for_any_multivariate_normal():
    from pyro_contrast.marginals.analytic import bank_marginals

    g = torch.Generator().manual_seed(3)
    z, targets = torch.randn(400, 3, generator=g), torch.randn(300, 3, generator=g)
    critics = tuple(pc.Critic.from_embeddings("dot") for _ in "ab")
    torch_mvn = torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3))
    marginal, target = bank_marginals(critics, z, z, torch_mvn, targets)
    assert marginal is torch_mvn
    torch.testing.assert_close(target.loc, targets.double().mean(0))
    assert bank_marginals(critics, z, z, torch_mvn)[1] is None
    with pytest.raises(ValueError, match="identically"):
        bank_marginals(critics, z, z + 1.0, "gaussian")
