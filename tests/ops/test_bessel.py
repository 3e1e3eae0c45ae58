import functools
import math

import mpmath
import numpy as np
import pytest
import scipy.special
import torch

from pyro_contrast.ops.bessel import bessel_ratio, log_hyp0f1_sphere, log_iv
from tests.common import assert_close

DIMS = [2, 3, 4, 64, 512, 4096]
RADII = [0.0, 1e-3, 0.1, 1.0, 10.0, 29.9, 30.1, 100.0, 1e3, 1e4, 1e5]


@functools.cache
def _mpmath_reference(dim, r):
    """``(L_d(r), A_d(r))`` with 40-digit Bessel functions."""
    if r == 0:
        return 0.0, 0.0
    with mpmath.workdps(40):
        nu, x = mpmath.mpf(dim) / 2 - 1, mpmath.mpf(r)
        i_nu = mpmath.besseli(nu, x, maxterms=10**6)
        i_next = mpmath.besseli(nu + 1, x, maxterms=10**6)
        value = mpmath.loggamma(nu + 1) + nu * mpmath.log(2 / x) + mpmath.log(i_nu)
        return value, i_next / i_nu


def _relative_error(actual, expected):
    with mpmath.workdps(40):
        return float(abs(mpmath.mpf(actual) - expected) / abs(expected))


@pytest.mark.slow
@pytest.mark.parametrize("dim", DIMS)
def test_matches_mpmath(dim):
    r = torch.tensor(RADII, dtype=torch.float64)
    value = log_hyp0f1_sphere(dim, r)
    scaled = log_hyp0f1_sphere(dim, r, scaled=True)
    ratio = bessel_ratio(dim, r)
    assert value[0] == 0 and ratio[0] == 0 and scaled[0] == 0
    for i, radius in enumerate(RADII[1:], start=1):
        expected_value, expected_ratio = _mpmath_reference(dim, radius)
        assert _relative_error(float(value[i]), expected_value) <= 1e-12, radius
        assert _relative_error(float(ratio[i]), expected_ratio) <= 1e-12, radius
        assert _relative_error(float(scaled[i]), expected_value - radius) <= 1e-12, radius


def test_closed_forms_dense():
    # d = 3: 0F1(; 3/2; r^2/4) = sinh(r)/r and A_3 = coth r - 1/r (40-digit mpmath, cheap);
    # d = 2 and 4: torch's exponentially scaled i0e, i1e (Cephes) give independent references
    r = torch.cat(
        [
            torch.logspace(-4, 5, 400, dtype=torch.float64),
            torch.linspace(29, 31, 201, dtype=torch.float64),
        ]
    )
    with mpmath.workdps(40):
        x = [mpmath.mpf(v) for v in r.tolist()]
        log_sinh_over_r = [float(mpmath.log(mpmath.sinh(v) / v)) for v in x]
        coth_minus_inverse = [float(mpmath.coth(v) - 1 / v) for v in x]
    assert_close(
        log_hyp0f1_sphere(3, r),
        torch.tensor(log_sinh_over_r, dtype=torch.float64),
        rtol=1e-13,
        atol=0,
    )
    assert_close(
        bessel_ratio(3, r),
        torch.tensor(coth_minus_inverse, dtype=torch.float64),
        rtol=1e-13,
        atol=0,
    )
    i0e, i1e = torch.special.i0e(r), torch.special.i1e(r)
    assert_close(log_hyp0f1_sphere(2, r), torch.log(i0e) + r, rtol=1e-13, atol=1e-15)
    assert_close(bessel_ratio(2, r), i1e / i0e, rtol=1e-13, atol=0)
    assert_close(log_hyp0f1_sphere(4, r), torch.log(2 * i1e / r) + r, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dim", [2, 5, 64, 4096])
def test_derivatives_finite_differences(dim):
    r = torch.tensor([0.0, 0.3, -2.0, 15.0, 29.5, 30.5, 70.0, 2e3], dtype=torch.float64)
    r.requires_grad_()
    assert torch.autograd.gradcheck(lambda r: log_hyp0f1_sphere(dim, r), (r,))
    assert torch.autograd.gradcheck(lambda r: log_hyp0f1_sphere(dim, r, scaled=True), (r,))
    assert torch.autograd.gradcheck(lambda r: bessel_ratio(dim, r), (r,))
    assert torch.autograd.gradgradcheck(lambda r: log_hyp0f1_sphere(dim, r), (r,))


def test_derivative_is_ratio_mpmath():
    # dL/dr = A_d(r), checked by a 40-digit numerical derivative of the mpmath reference
    for dim, radius in [(3, 0.7), (64, 12.0), (512, 45.0), (7, 300.0)]:
        r = torch.tensor(radius, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(log_hyp0f1_sphere(dim, r), r)
        with mpmath.workdps(40):
            nu = mpmath.mpf(dim) / 2 - 1
            expected = mpmath.diff(
                lambda x, nu=nu: nu * mpmath.log(2 / x) + mpmath.log(mpmath.besseli(nu, x)),
                radius,
            )
        assert _relative_error(float(grad), expected) <= 1e-12


@pytest.mark.parametrize("dim", [2, 3, 64, 4096])
def test_monotone_and_continuous(dim):
    r = torch.cat(
        [
            torch.linspace(0, 60, 6001, dtype=torch.float64),
            torch.logspace(1.8, 5, 500, dtype=torch.float64),
        ]
    ).unique()
    value, ratio = log_hyp0f1_sphere(dim, r), bessel_ratio(dim, r)
    assert torch.all(value.diff() > 0) and torch.all(ratio.diff() > 0)
    assert torch.all((ratio >= 0) & (ratio < 1))
    # across the switch at r = 30 the jump equals the slope times the step (no seam)
    r = torch.tensor([30.0, math.nextafter(30.0, 31.0)], dtype=torch.float64)
    jump = log_hyp0f1_sphere(dim, r).diff()
    assert_close(jump, bessel_ratio(dim, r[:1]) * r.diff(), rtol=1e-2, atol=1e-14)
    # A_d decreases in d at fixed r
    dims = torch.arange(2, 200, dtype=torch.float64)
    assert torch.all(bessel_ratio(dims, torch.tensor(25.0, dtype=torch.float64)).diff() < 0)


@pytest.mark.parametrize("dim", [3, 512, 4096])
def test_float32(dim):
    r32 = torch.tensor([0.0, 1e-3, 1.0, 29.9, 30.1, 1e3, 1e5])
    for scaled in (False, True):
        actual = log_hyp0f1_sphere(dim, r32, scaled=scaled)
        expected = log_hyp0f1_sphere(dim, r32.double(), scaled=scaled)
        assert actual.dtype == torch.float32
        # computed in float64 and rounded once: half an ulp of float32
        assert_close(actual, expected, rtol=6e-8, atol=1e-30)
    assert_close(bessel_ratio(dim, r32), bessel_ratio(dim, r32.double()), rtol=6e-8, atol=1e-30)
    (grad,) = torch.autograd.grad(log_hyp0f1_sphere(dim, r32.requires_grad_()).sum(), r32)
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all()


def test_broadcasting_dim_tensor_and_symmetry():
    dims = torch.tensor([[2], [3], [513]])
    r = torch.tensor([0.5, 31.0, -4.0], dtype=torch.float64)
    value = log_hyp0f1_sphere(dims, r)
    assert value.shape == (3, 3)
    for i, dim in enumerate([2, 3, 513]):
        assert_close(value[i], log_hyp0f1_sphere(dim, r), rtol=1e-15, atol=0)
    assert_close(log_hyp0f1_sphere(5, -r), log_hyp0f1_sphere(5, r), rtol=0, atol=0)
    assert_close(bessel_ratio(5, -r), -bessel_ratio(5, r), rtol=0, atol=0)
    inf = torch.tensor([math.inf], dtype=torch.float64)
    assert log_hyp0f1_sphere(3, inf).item() == math.inf and bessel_ratio(3, inf).item() == 1
    assert log_hyp0f1_sphere(3, torch.zeros(0)).shape == (0,)


def test_log_iv_matches_scipy():
    nu = torch.tensor([0.0, 0.25, 0.5, 1.7, 29.5, 30.3, 100.9], dtype=torch.float64)[:, None]
    x = torch.tensor([1e-3, 1.0, 29.0, 31.0, 500.0, 1e5], dtype=torch.float64)
    with np.errstate(divide="ignore"):  # ive underflows to 0 for large orders at small x
        expected = np.log(scipy.special.ive(nu.numpy(), x.numpy())) + x.numpy()
    finite = np.isfinite(expected)
    assert finite.sum() >= 38
    actual = log_iv(nu, x)
    assert torch.isfinite(actual).all()
    assert_close(actual[finite], torch.from_numpy(expected[finite]), rtol=1e-12, atol=1e-13)


def test_bad_inputs():
    with pytest.raises(ValueError, match="dim"):
        log_hyp0f1_sphere(1, torch.tensor(1.0))
    with pytest.raises(ValueError, match="NaN"):
        bessel_ratio(3, torch.tensor(math.nan))
    with pytest.raises(ValueError, match="nu"):
        log_iv(-1.0, torch.tensor(1.0))
    with pytest.raises(ValueError, match="x"):
        log_iv(1.0, torch.tensor(-1.0))
