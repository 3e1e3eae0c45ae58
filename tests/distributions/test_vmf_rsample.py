"""Reparameterized von Mises–Fisher samples: gradients of E[h(x)] against closed-form moments.

E[x] = A_d(k) mu and E[(b.x)^2] = (A/k) |b|^2 + (1 - d A / k) (mu.b)^2 (Mardia & Jupp §9.3).
Their derivatives are taken by central finite differences of these closed forms in float64;
the Monte Carlo estimates are per-sample gradients averaged over N draws, compared within
4.5 standard errors (Bonferroni over the coordinates compared).
"""

import math

import mpmath
import pytest
import scipy.stats
import torch

from pyro_contrast.distributions._vmf_implicit import cosine_derivative
from pyro_contrast.distributions.vmf import VonMisesFisher
from pyro_contrast.ops.bessel import bessel_ratio
from tests.common import assert_close

CASES = [(3, 2.0, 20000), (16, 10.0, 10000), (512, 100.0, 2000), (512, 5.0, 2000)]


def _closed_form(dim, lam, kappa, a, b):
    """E[a.x] and E[(b.x)^2] for loc = lam / |lam| (float64, differentiable by FD)."""
    mu = lam / lam.norm(dim=-1, keepdim=True)
    ratio = bessel_ratio(dim, kappa)
    first = ratio * (mu @ a)
    second = (ratio / kappa) * (b @ b) + (1 - dim * ratio / kappa) * (mu @ b).square()
    return torch.stack([first, second], -1)


def _finite_differences(dim, lam, kappa, a, b, step=1e-5):
    """Derivatives of both moments in kappa (2,) and in lam (2, d), central differences."""
    up = _closed_form(dim, lam, kappa + step, a, b)
    down = _closed_form(dim, lam, kappa - step, a, b)
    d_kappa = (up - down) / (2 * step)
    shifts = step * torch.eye(dim, dtype=torch.float64)
    up = _closed_form(dim, lam + shifts, kappa, a, b)  # (d, 2)
    down = _closed_form(dim, lam - shifts, kappa, a, b)
    return d_kappa, ((up - down) / (2 * step)).T


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim,kappa,num_samples", CASES)
def test_gradients_of_moments_match_finite_differences(dim, kappa, num_samples, dtype):
    generator = torch.Generator().manual_seed(dim)
    lam64 = torch.randn(dim, generator=generator, dtype=torch.float64)
    a = torch.randn(dim, generator=generator, dtype=torch.float64)
    b = torch.randn(dim, generator=generator, dtype=torch.float64)
    # one copy of the parameters per draw gives per-draw gradients (their spread is the SE)
    lam = lam64.to(dtype).expand(num_samples, dim).clone().requires_grad_()
    kappas = torch.full((num_samples,), kappa, dtype=dtype, requires_grad=True)
    x = VonMisesFisher(lam / lam.norm(dim=-1, keepdim=True), kappas).rsample()
    assert x.dtype == dtype and torch.all(VonMisesFisher.support.check(x))
    h = torch.stack([x @ a.to(dtype), (x @ b.to(dtype)).square()], -1)  # (N, 2)
    per_kappa, per_lam = [], []
    for j in range(2):
        g_lam, g_kappa = torch.autograd.grad(h[:, j].sum(), [lam, kappas], retain_graph=True)
        per_kappa.append(g_kappa.double())
        per_lam.append(g_lam.double())
    per_kappa, per_lam = torch.stack(per_kappa, -1), torch.stack(per_lam, 1)  # (N,2), (N,2,d)
    d_kappa, d_lam = _finite_differences(dim, lam64, torch.tensor(kappa, dtype=torch.float64), a, b)
    z = float(scipy.stats.norm.isf(1e-3 / (2 * 2 * (dim + 1))))
    # float32 rounding of x (|x| = 1) and of the gradients: a floor of 1e-5 relative
    floor = 1e-5 if dtype == torch.float32 else 1e-10
    for estimate, truth in ((per_kappa, d_kappa), (per_lam, d_lam)):
        mean = estimate.mean(0)
        se = estimate.std(0) / math.sqrt(num_samples)
        error = (mean - truth).abs()
        assert torch.all(error <= z * se + floor * (1 + truth.abs())), float(
            (error / (se + 1e-300)).max()
        )


def test_rsample_has_the_vmf_distribution():
    # the cosine W = mu.x of rsample follows the same law as sample's (two-sample KS test)
    loc = torch.nn.functional.normalize(torch.randn(16, dtype=torch.float64), dim=0)
    d = VonMisesFisher(loc, torch.tensor(7.0, dtype=torch.float64))
    w_r = (d.rsample((4000,)) @ loc).numpy()
    w_s = (d.sample((4000,)) @ loc).numpy()
    assert scipy.stats.ks_2samp(w_r, w_s).pvalue > 1e-3
    assert d.has_rsample


@pytest.mark.parametrize(
    "dim,kappa,w",
    [(3, 5.0, -0.875), (3, 5.0, 0.9375), (64, 30.0, 0.25), (64, 30.0, 0.5), (512, 1e4, 0.97)],
)
def test_implicit_derivative_against_mpmath(dim, kappa, w):
    # dW/dk = -int_{-1}^{w} (t - A) p(t) dt / p(w), with p(t) ~ e^{kt} (1 - t^2)^((d-3)/2)
    k = torch.tensor([kappa], dtype=torch.float64)
    ratio = float(bessel_ratio(dim, k))
    with mpmath.workdps(30):
        m = mpmath.mpf(dim - 3) / 2

        def integrand(t):
            return (t - ratio) * mpmath.exp(kappa * (t - w)) * ((1 - t * t) / (1 - w * w)) ** m

        expected = -mpmath.quad(integrand, [-1, max(-1, w - 0.05), w])
    actual = cosine_derivative(
        dim, k, torch.tensor([w], dtype=torch.float64), torch.tensor([1 - w], dtype=torch.float64)
    )
    assert_close(actual, torch.tensor([float(expected)], dtype=torch.float64), rtol=1e-9, atol=0)
