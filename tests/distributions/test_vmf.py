import functools
import math

import mpmath
import numpy as np
import pyro.distributions as dist
import pytest
import scipy.integrate
import scipy.stats
import torch

from pyro_contrast.distributions.uniform_sphere import UniformSphere
from pyro_contrast.distributions.vmf import VonMisesFisher
from pyro_contrast.ops.bessel import bessel_ratio
from tests.common import assert_close
from tests.distributions.harness import DistributionHarness, Example

# ----- harness -------------------------------------------------------------------------


def _vmf(loc, concentration):
    # normalizing inside the factory lets finite differences move loc off the sphere
    return VonMisesFisher(loc / loc.norm(dim=-1, keepdim=True), concentration)


def _params(dim, low, high):
    def params(batch_shape, dtype):
        log_kappa = torch.empty(batch_shape, dtype=torch.float64).uniform_(low, high)
        return {
            "loc": torch.randn(batch_shape + (dim,), dtype=dtype),
            "concentration": (10**log_kappa).to(dtype),
        }

    return params


def _cosine_cdf(dim, kappa, t):
    """CDF of ``W = mu . x`` under vMF: density proportional to exp(k w) (1 - w^2)^((d-3)/2)."""
    if dim == 3:  # closed form: W has density proportional to exp(k w) on [-1, 1]
        return np.expm1(kappa * (t + 1)) / np.expm1(2 * kappa)
    grid = np.linspace(-1.0, 1.0, 20001)
    with np.errstate(divide="ignore"):  # the density vanishes at w = +-1 for d > 3
        log_density = kappa * grid + 0.5 * (dim - 3) * np.log1p(-(grid**2))
    density = np.exp(log_density - log_density.max())
    cdf = scipy.integrate.cumulative_simpson(density, x=grid, initial=0.0)
    return np.interp(t, grid, cdf / cdf[-1])


def _vmf_pit(d, x):
    t = (x * d.loc).sum(-1).double()
    kappa = d.concentration.double().expand(d.batch_shape).reshape(-1).numpy()
    flat = t.reshape(t.shape[0], -1).numpy()
    u = np.stack([_cosine_cdf(d.dim, k, flat[:, i]) for i, k in enumerate(kappa)], -1)
    return torch.from_numpy(u).reshape(t.shape)


def _scipy_log_prob(d, x):
    loc = d.loc.reshape(-1, d.dim).numpy()
    kappa = d.concentration.expand(d.batch_shape).reshape(-1).numpy()
    values = x.reshape(-1, loc.shape[0], d.dim).numpy()
    columns = [
        scipy.stats.vonmises_fisher(loc[i], kappa[i]).logpdf(values[:, i])
        for i in range(loc.shape[0])
    ]
    return np.stack(columns, -1).reshape(x.shape[:-1])


def _invalid(dim):
    loc = torch.zeros(dim)
    loc[0] = 1.0
    return [
        lambda: VonMisesFisher(2 * loc, 1.0),
        lambda: VonMisesFisher(loc, -1.0),
        lambda: VonMisesFisher(loc, float("nan")),
        lambda: VonMisesFisher(loc, float("inf")),
        lambda: VonMisesFisher(torch.full((dim,), float("nan")), 1.0),
        lambda: VonMisesFisher(torch.ones(1), 1.0),
    ]


class TestVonMisesFisherHarness(DistributionHarness):
    examples = [
        Example(
            f"vmf-d{dim}-{name}",
            factory=_vmf,
            params=_params(dim, low, high),
            invalid=_invalid(dim),
            pit=_vmf_pit,
            scipy_log_prob=_scipy_log_prob,
            scipy_rtol=1e-8,
        )
        for dim, name, low, high in [
            (3, "moderate", -1.0, 1.3),  # kappa in [0.1, 20]: the series branch
            (16, "moderate", -1.0, 1.3),
            (3, "large", 1.6, 2.5),  # kappa in [40, 316]: the Debye branch
        ]
    ]


# ----- accuracy -------------------------------------------------------------------------

DIMS = [3, 64, 512, 4096]
KAPPAS = [0.0, 1e-3, 1.0, 10.0, 1e4, 1e5]


@functools.cache
def _log_normalizer_mpmath(dim, kappa):
    """``log C_d(k) = -log|S^{d-1}| - L_d(k)`` with 40-digit Bessel functions."""
    with mpmath.workdps(40):
        nu = mpmath.mpf(dim) / 2 - 1
        log_area = mpmath.log(2) + (mpmath.mpf(dim) / 2) * mpmath.log(mpmath.pi)
        log_area -= mpmath.loggamma(mpmath.mpf(dim) / 2)
        if kappa == 0:
            return -log_area
        k = mpmath.mpf(kappa)
        bessel = mpmath.besseli(nu, k, maxterms=10**6)
        return -log_area - (mpmath.loggamma(nu + 1) + nu * mpmath.log(2 / k) + mpmath.log(bessel))


def _test_points(dim):
    """The mode, the antipode, an orthogonal point and a random point; loc is e_1 rotated."""
    generator = torch.Generator().manual_seed(dim)
    loc = torch.randn(dim, generator=generator, dtype=torch.float64)
    loc = loc / loc.norm()
    other = torch.randn(dim, generator=generator, dtype=torch.float64)
    orthogonal = other - (other @ loc) * loc
    x = torch.stack([loc, -loc, orthogonal / orthogonal.norm(), other / other.norm()])
    return loc, x


@pytest.mark.parametrize("kappa", KAPPAS)
@pytest.mark.parametrize("dim", DIMS)
def test_log_prob_matches_mpmath(dim, kappa):
    loc, x = _test_points(dim)
    actual = VonMisesFisher(loc, torch.tensor(kappa, dtype=torch.float64)).log_prob(x)
    assert torch.isfinite(actual).all()
    with mpmath.workdps(40):
        cosine = [
            mpmath.fsum(
                mpmath.mpf(a) * mpmath.mpf(b) for a, b in zip(loc.tolist(), xi, strict=True)
            )
            for xi in x.tolist()
        ]
        expected = [
            float(mpmath.mpf(kappa) * c + _log_normalizer_mpmath(dim, kappa)) for c in cosine
        ]
    # float64 rounding of mu.x (|error| <= d eps) is amplified by kappa; the log normalizer
    # itself is accurate to ~1e-15 relative
    atol = 4 * dim * 2.2e-16 * kappa
    assert_close(actual, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=atol)


@pytest.mark.parametrize("kappa", [1e-3, 1.0, 10.0, 100.0, 1e4])
@pytest.mark.parametrize("dim", [3, 64, 512])
def test_log_prob_matches_scipy_where_finite(dim, kappa):
    loc, x = _test_points(dim)
    actual = VonMisesFisher(loc, torch.tensor(kappa, dtype=torch.float64)).log_prob(x)
    with np.errstate(divide="ignore", over="ignore"):
        expected = scipy.stats.vonmises_fisher(loc.numpy(), kappa).logpdf(x.numpy())
    assert torch.isfinite(actual).all()
    finite = np.isfinite(expected)
    # scipy 1.17 returns inf at d = 512, kappa <= 10 (log of an underflowed ive)
    assert finite.all() or (dim == 512 and kappa <= 10)
    if finite.any():
        assert_close(actual[finite], torch.from_numpy(expected[finite]), rtol=1e-8, atol=0)


@pytest.mark.parametrize("kappa", [0.0, 1.0, 10.0, 1e4, 1e5])
@pytest.mark.parametrize("dim", [3, 64, 4096])
def test_log_prob_float32(dim, kappa):
    loc, x = _test_points(dim)
    loc32, x32 = loc.float(), x.float()
    loc32 = loc32 / loc32.norm()
    x32 = x32 / x32.norm(dim=-1, keepdim=True)
    actual = VonMisesFisher(loc32, torch.tensor(kappa)).log_prob(x32)
    assert actual.dtype == torch.float32 and torch.isfinite(actual).all()
    expected = VonMisesFisher(
        loc32.double(), torch.tensor(kappa, dtype=torch.float64), validate_args=False
    ).log_prob(x32.double())
    # the float32 dot product of unit vectors is off by a few eps (times kappa); the
    # normalizer is computed in float64 and rounded once
    eps = torch.finfo(torch.float32).eps
    assert_close(actual, expected, rtol=4 * eps, atol=8 * eps * (kappa + 1))


@pytest.mark.parametrize("kappa", [1e-4, 0.3, 2.0, 29.0, 31.0, 500.0, 1e5])
def test_d3_closed_form(kappa):
    loc = torch.tensor([0.6, 0.0, 0.8], dtype=torch.float64)
    x = UniformSphere(3, dtype=torch.float64).sample((50,))
    k = torch.tensor(kappa, dtype=torch.float64)
    d = VonMisesFisher(loc, k)
    # p(x) = k / (2 pi (1 - exp(-2k))) exp(k (mu.x - 1))
    expected = torch.log(k / (2 * math.pi * -torch.expm1(-2 * k))) + k * (x @ loc - 1)
    assert_close(d.log_prob(x), expected, rtol=1e-12, atol=1e-12)
    if kappa < 500:  # Pyro's VonMises3D overflows (sinh) beyond
        assert_close(d.log_prob(x), dist.VonMises3D(k * loc).log_prob(x), rtol=1e-9, atol=1e-9)
    mean_length = 1 / torch.tanh(k) - 1 / k  # A_3(k) = coth k - 1/k
    assert_close(d.mean, mean_length * loc, rtol=1e-10, atol=1e-12)
    entropy = torch.log(2 * math.pi * -torch.expm1(-2 * k) / k) + k * (1 - mean_length)
    assert_close(d.entropy(), entropy, rtol=1e-10, atol=1e-12)


# ----- sampler ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("dim,kappa", [(512, 10.0), (512, 100.0), (512, 1e4), (4096, 100.0)])
def test_sample_mean_high_dimension(dim, kappa):
    loc = torch.nn.functional.normalize(torch.randn(dim, dtype=torch.float64), dim=0)
    d = VonMisesFisher(loc, torch.tensor(kappa, dtype=torch.float64))
    num_samples = 4000
    x = d.sample((num_samples,))
    assert torch.all(d.support.check(x))
    ratio = bessel_ratio(dim, torch.tensor(kappa, dtype=torch.float64))
    # W = mu.x has mean A_d(k) and variance A_d'(k) = 1 - A^2 - (d - 1) A / k; by the CLT the
    # sample mean is within 4.5 standard errors with probability 1 - 7e-6
    variance = 1 - ratio**2 - (dim - 1) * ratio / kappa
    w = x @ loc
    assert abs(w.mean() - ratio) <= 4.5 * (variance / num_samples).sqrt()
    assert abs(w.var() / variance - 1) <= 4.5 * math.sqrt(2 / num_samples) + 0.1 / math.sqrt(
        num_samples
    )
    # the tangent part is isotropic: its mean vanishes, each coordinate within 4.5 se
    # (Bonferroni over d coordinates gives z = 5.0 for d = 4096)
    tangent = x - w.unsqueeze(-1) * loc
    se = (d.variance / num_samples).sqrt()
    z = scipy.stats.norm.isf(1e-3 / (2 * dim))
    assert torch.all((tangent.mean(0)).abs() <= z * se + 1e-12)


def test_acceptance_rate(monkeypatch):
    proposals = []
    original = torch.distributions.Beta.sample

    def counting(self, sample_shape=()):
        out = original(self, sample_shape)
        proposals.append(out.numel())
        return out

    monkeypatch.setattr(torch.distributions.Beta, "sample", counting)
    num_samples = 5000
    for dim, kappa in [(3, 1.0), (16, 5.0), (512, 100.0), (4096, 1e4)]:
        proposals.clear()
        VonMisesFisher(torch.eye(dim)[0], torch.tensor(kappa)).sample((num_samples,))
        rate = num_samples / sum(proposals)
        # the mathematics page, §4: the acceptance rate is >= 0.68; with >= 5000 proposals the
        # estimate's
        # standard error is below sqrt(0.7 * 0.3 / 5000) = 0.0065, so 4 se = 0.026
        assert rate >= 0.68 - 0.026, (dim, kappa, rate)


def test_samples_at_loc_near_e1_and_minus_e1():
    for sign in (1.0, -1.0):
        loc = torch.tensor([sign, 1e-9, 0.0, 0.0], dtype=torch.float64)
        loc = loc / loc.norm()
        x = VonMisesFisher(loc, torch.tensor(1e4, dtype=torch.float64)).sample((1000,))
        assert torch.all(x @ loc > 0.99)


# ----- gradients, moments, uniform limit ------------------------------------------------


@pytest.mark.parametrize(
    "dim,kappa", [(512, 0.5), (512, 29.9), (512, 30.1), (64, 1e3), (4096, 1e4)]
)
def test_gradients_finite_differences(dim, kappa):
    loc = torch.randn(dim, dtype=torch.float64, requires_grad=True)
    k = torch.tensor(kappa, dtype=torch.float64, requires_grad=True)
    x = VonMisesFisher(torch.nn.functional.normalize(loc.detach(), dim=0), k.detach()).sample((3,))

    def log_prob(loc, k):
        return VonMisesFisher(loc / loc.norm(), k).log_prob(x)

    # fast mode checks random projections of the Jacobian: d finite differences are too slow
    assert torch.autograd.gradcheck(
        log_prob, (loc, k), eps=1e-6, atol=1e-5, rtol=1e-5, fast_mode=dim > 64
    )
    unit = loc.detach() / loc.detach().norm()
    assert torch.autograd.gradcheck(lambda k: VonMisesFisher(unit, k).entropy(), (k,))


@pytest.mark.parametrize("dim", [2, 3, 16, 512])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_uniform_limit(dim, dtype):
    loc = torch.zeros(dim, dtype=dtype)
    loc[-1] = 1.0
    vmf = VonMisesFisher(loc, torch.tensor(0.0, dtype=dtype))
    uniform = UniformSphere(dim, dtype=dtype)
    x = uniform.sample((10,))
    assert_close(vmf.log_prob(x), uniform.log_prob(x), rtol=1e-6)
    assert_close(vmf.entropy(), uniform.entropy(), rtol=1e-6)
    assert_close(vmf.mean, uniform.mean)
    assert_close(vmf.variance, uniform.variance, rtol=1e-6)


def test_off_sphere_value_raises():
    d = VonMisesFisher(torch.tensor([1.0, 0.0, 0.0]), 2.0)
    with pytest.raises(ValueError):
        d.log_prob(torch.tensor([1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        VonMisesFisher(torch.tensor(1.0), 2.0)
    with pytest.raises(TypeError, match="loc"):
        VonMisesFisher([1.0, 0.0], 2.0)


def test_mode_and_infer_shapes():
    loc = torch.nn.functional.normalize(torch.randn(2, 1, 5, dtype=torch.float64), dim=-1)
    d = VonMisesFisher(loc, torch.tensor([1.0, 3.0, 9.0], dtype=torch.float64))
    assert torch.equal(d.mode, d.loc) and d.mode.shape == (2, 3, 5)
    assert torch.all(d.log_prob(d.mode) >= d.log_prob(d.sample((100,))).amax(0))
    assert VonMisesFisher.infer_shapes(loc=(2, 1, 5), concentration=(3,)) == ((2, 3), (5,))
    uniform = UniformSphere(4, (2,))
    assert uniform.mode.shape == (2, 4) and torch.isnan(uniform.mode).all()
    assert UniformSphere.infer_shapes(dim=4, batch_shape=(2,)) == ((2,), (4,))
