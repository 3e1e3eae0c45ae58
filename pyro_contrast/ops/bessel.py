r"""Stable log-Bessel functions for spheres of any dimension.

With :math:`\nu = d/2 - 1` this module evaluates, in float64 internally,

.. math::

    L_d(r) = \log {}_0F_1(; d/2; r^2/4) = \log\Gamma(\nu + 1) + \nu \log(2/r) + \log I_\nu(r),
    \qquad A_d(r) = \frac{I_{d/2}(r)}{I_{d/2-1}(r)} = \frac{d L_d}{d r},

for :math:`d \ge 2` and real :math:`r` (:math:`L_d` is even in :math:`r`). :math:`L_d` is the
log normalizer of the von Mises–Fisher distribution and of the uniform-sphere bridge
(:ref:`math-sphere-bridge`, :ref:`math-vmf`).

Scheme (:ref:`math-vmf`): for :math:`r \le 30` the power series of :math:`{}_0F_1` is summed
(all terms are positive and below :math:`e^{30}`, so nothing cancels or overflows) and its
logarithm taken by ``log1p``, so tiny values keep full relative precision. For
:math:`r > 30` the Debye uniform asymptotic expansion (DLMF 10.41.3, ten correction terms)
is rearranged so that the :math:`\nu \log \nu` parts of :math:`\log\Gamma` and of the
expansion cancel analytically; it is exact to float64 rounding for orders :math:`\ge 30`.
Smaller orders are reached from an order in :math:`[30, 31)` by the stable downward
recurrences

.. math::

    R_{\mu-1} = \frac{x}{2\mu + x R_\mu}, \qquad
    L^{(\mu - 1)} = L^{(\mu)} + \operatorname{log1p}\!\left(\frac{x R_\mu}{2\mu}\right),

where :math:`R_\mu = I_{\mu+1}/I_\mu`. Only positive quantities are added, so the result
keeps float64 relative precision (about 1e-15 against 40-digit mpmath for
:math:`d \in [2, 4096]`, :math:`r \in [0, 10^5]`). Why not start from torch's ``i0e``/``i1e``:
they cover integer orders only (odd :math:`d` needs half-integer orders), and the upward
recurrence for :math:`I_\nu` is unstable (:math:`I_\nu` is the minimal solution as
:math:`\nu` grows), whereas the downward one damps errors. :math:`A_d` is the analytic
derivative of the Debye form, so it needs no difference of two large logarithms.

**References**

1. NIST Digital Library of Mathematical Functions, §10.25 (series), §10.29 (recurrences),
   §10.41 (Debye expansion), §5.11 (Stirling series).
2. K. V. Mardia, P. E. Jupp (2000). *Directional Statistics*, §9.3.
"""

import math
from fractions import Fraction

import torch

from pyro_contrast._validation import ignore_jit_warnings

_SERIES_MAX_R = 30.0
_DEBYE_MIN_ORDER = 30.0
_NUM_SERIES_TERMS = 80  # at r = 30, d = 2 the terms after 60 are below 1e-20 of the sum
_NUM_DEBYE_TERMS = 10  # next term <= |U_11| / 30^11 ~ 2e-16
# Stirling series of log Gamma(n + 1) - (n + 1/2) log n + n - log(2 pi) / 2 (B_2k / (2k(2k-1)))
_STIRLING = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360)


def _debye_polynomials(num_terms):
    """Coefficients (ascending powers of p) of the Debye polynomials U_k and U_k'.

    Built exactly with fractions from DLMF 10.41.10:
    ``U_{k+1} = p^2 (1 - p^2) U_k' / 2 + (1/8) int_0^p (1 - 5 t^2) U_k(t) dt``.
    """
    polys = [[Fraction(1)]]
    for k in range(num_terms):
        u = polys[-1] + [Fraction(0)] * 3
        nxt = [Fraction(0)] * (3 * (k + 1) + 1)
        for m in range(len(nxt)):
            if 2 <= m <= len(u):
                nxt[m] += (m - 1) * u[m - 1] / 2  # p^2 U'/2: p^m from (m-1) u[m-1] p^(m-2)
            if 4 <= m <= len(u) + 2:
                nxt[m] -= (m - 3) * u[m - 3] / 2  # -p^4 U'/2
            if m >= 1:
                nxt[m] += (u[m - 1] - 5 * (u[m - 3] if m >= 3 else 0)) / (8 * m)
        polys.append(nxt)
    values = [tuple(float(c) for c in poly) for poly in polys]
    derivatives = [tuple(float(j * c) for j, c in enumerate(poly))[1:] or (0.0,) for poly in polys]
    return values, derivatives


_U, _DU = _debye_polynomials(_NUM_DEBYE_TERMS)


def _horner(coefficients, x):
    out = torch.full_like(x, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        out = out * x + c
    return out


def _debye_sums(polys, p, inv_nu):
    """``sum_k polys[k](p) / nu^k`` by Horner in p (and in 1 / nu when nu varies)."""
    if inv_nu.dim() == 0:  # one order for all: fold 1 / nu into the coefficients
        inv = float(inv_nu)
        width = max(len(poly) for poly in polys)
        combined = [0.0] * width
        for k, poly in enumerate(polys):
            for j, c in enumerate(poly):
                combined[j] += c * inv**k
        return _horner(combined, p)
    out = _horner(polys[-1], p)
    for poly in reversed(polys[:-1]):
        out = out * inv_nu + _horner(poly, p)
    return out


def _debye(nu, x):
    """``(L, L - x, A)`` at order ``nu >= 30`` by the Debye expansion; float64 tensors."""
    s = torch.hypot(nu, x)
    p = nu / s
    s_minus_nu = x * x / (s + nu)  # not s - nu: that cancels when x << nu
    series = _debye_sums(_U, p, 1 / nu)
    d_series = _debye_sums(_DU, p, 1 / nu)
    stirling = sum(c * nu ** (-1 - 2 * i) for i, c in enumerate(_STIRLING))
    common = (
        -nu * torch.log1p(s_minus_nu / (2 * nu))
        - 0.25 * torch.log1p((x / nu) ** 2)
        + stirling
        + torch.log(series)
    )
    # s - nu - x = -nu (s - nu + x) / (s + x): L - x without cancellation for large x
    scaled = common - nu * (s_minus_nu + x) / (s + x)
    # A = dL/dx, differentiating each term of L
    ratio = x / (nu + s) - x / (2 * s * s) - (nu * x / s**3) * d_series / series
    return common + s_minus_nu, scaled, ratio


def _large_argument(nu, x):
    """``(L, L - x, A)`` for ``x > 30``: Debye at an order >= 30, then downward recurrence.

    The increments ``log1p(x R / (2 mu))`` are accumulated as products of ``1 + x R / (2 mu)``
    (each factor lies in ``[1, 1 + x / 2]``) with one logarithm per block of four steps,
    which is exact to rounding and four times cheaper.
    """
    top = torch.where(nu >= _DEBYE_MIN_ORDER, nu, nu + torch.ceil(_DEBYE_MIN_ORDER - nu))
    steps = torch.round(top - nu).long()
    value, scaled, ratio = _debye(top, x)
    num_steps = int(steps.max())
    product = torch.ones_like(x)
    for i in range(num_steps):
        mu = top - i
        factor = 1 + x * ratio / (2 * mu)
        new_ratio = x / (2 * mu * factor)  # = x / (2 mu + x R)
        if steps.dim():  # orders differ: only some elements still step down
            active = i < steps
            factor = torch.where(active, factor, 1.0)
            new_ratio = torch.where(active, new_ratio, ratio)
        product, ratio = product * factor, new_ratio
        if i % 4 == 3 or i == num_steps - 1:
            increment = torch.log(product)
            value, scaled = value + increment, scaled + increment
            product = torch.ones_like(x)
    return value, scaled, ratio


def _small_argument(nu, r):
    """``(L, A)`` for ``r <= 30`` from the power series of 0F1 (all terms positive).

    With ``b = nu + 1``, ``z = r^2 / 4`` and ``t_k = z^k / ((b)_k k!)`` (at most ``e^30``, so
    linear space is safe): ``L = log1p(sum_{k>=1} t_k)``, which keeps full relative precision
    for tiny ``r``, and ``A = r / (2b) * 0F1(; b + 1; z) / 0F1(; b; z)`` with the terms of
    ``0F1(; b + 1; z)`` equal to ``t_k b / (b + k)``.
    """
    b = nu + 1
    z = r * r / 4
    term = torch.ones_like(r)
    tail = torch.zeros_like(r)
    tail_next = torch.zeros_like(r)
    scalar = b.dim() == 0
    b_value = float(b) if scalar else b
    for k in range(1, _NUM_SERIES_TERMS + 1):
        if scalar:  # in place, with scalar coefficients
            term.mul_(z).mul_(1 / ((b_value + (k - 1)) * k))
            tail.add_(term)
            tail_next.add_(term, alpha=b_value / (b_value + k))
        else:
            term = term * z / ((b + (k - 1)) * k)
            tail = tail + term
            tail_next = tail_next + term * b / (b + k)
        # once terms decrease (z < (b + k) (k + 1)) and are below rounding, the tail is too
        # (a traced graph sums every term: it must not depend on the example's values)
        if (
            k % 8 == 0
            and not torch.jit.is_tracing()
            and bool(((term <= 1e-17 * tail) & (z < (b + k) * (k + 1))).all())
        ):
            break
    return torch.log1p(tail), r / (2 * b) * (1 + tail_next) / (1 + tail)


def _evaluate(nu, signed_r):
    """Float64 ``(L, L - r, A)`` for broadcastable ``nu >= 0`` and real ``r``.

    ``L`` is even in ``r`` (a function of ``r^2``), so ``A = dL/dr`` is odd.
    """
    shape = torch.broadcast_shapes(nu.shape, signed_r.shape)
    signed_r = signed_r.expand(shape)
    r = signed_r.abs()
    if torch.jit.is_tracing():
        with ignore_jit_warnings():
            return _evaluate_traced(nu, signed_r, r, shape)
    if nu.numel() and bool((nu == nu.reshape(-1)[0]).all()):
        nu = nu.reshape(-1)[0]  # one order: the branches below then work with scalars
    else:
        nu = nu.expand(shape)
    value = torch.empty_like(r)
    scaled = torch.empty_like(r)
    ratio = torch.empty_like(r)
    small = r <= _SERIES_MAX_R
    infinite = torch.isinf(r)
    large = ~small & ~infinite
    if small.any():
        v, a = _small_argument(nu if nu.dim() == 0 else nu[small], r[small])
        value[small], scaled[small], ratio[small] = v, v - r[small], a
    if large.any():
        nu_large = nu if nu.dim() == 0 else nu[large]
        value[large], scaled[large], ratio[large] = _large_argument(nu_large, r[large])
    value[infinite], scaled[infinite], ratio[infinite] = math.inf, -math.inf, 1.0
    negative = signed_r < 0
    if negative.any():
        scaled = torch.where(negative, value - signed_r, scaled)
        ratio = torch.where(negative, -ratio, ratio)
    return value, scaled, ratio


def _evaluate_traced(nu, signed_r, r, shape):
    """:func:`_evaluate` without branches on the values of ``r``, for ``torch.jit.trace``.

    Both regimes are evaluated on every element (each on arguments clamped into its own
    range, so neither overflows) and selected elementwise: a traced model stays exact when
    a concentration crosses from one regime into the other. The order ``nu`` (a dimension)
    is static, so branching on it is fine.
    """
    if nu.numel() and bool((nu == nu.reshape(-1)[0]).all()):
        nu = nu.reshape(-1)[0]
    else:
        nu = nu.expand(shape)
    small = r <= _SERIES_MAX_R
    r_small = torch.where(small, r, torch.zeros_like(r))
    r_large = torch.where(small, torch.full_like(r, 2 * _SERIES_MAX_R), r)
    v_small, a_small = _small_argument(nu, r_small)
    v_large, s_large, a_large = _large_argument(nu, r_large)
    value = torch.where(small, v_small, v_large)
    scaled = torch.where(small, v_small - r, s_large)
    ratio = torch.where(small, a_small, a_large)
    negative = signed_r < 0
    scaled = torch.where(negative, value - signed_r, scaled)
    ratio = torch.where(negative, -ratio, ratio)
    return value, scaled, ratio


def _as_inputs(dim, r, name):
    if not torch.is_tensor(r):
        r = torch.as_tensor(r, dtype=torch.get_default_dtype())
    elif not r.is_floating_point():
        r = r.to(torch.get_default_dtype())
    with ignore_jit_warnings():  # checks of the traced example; the dimension is static
        if not torch.jit.is_tracing() and torch.isnan(r).any():
            raise ValueError(f"{name} contains NaN")
        dim = torch.as_tensor(dim, dtype=torch.float64, device=r.device)
        if torch.isnan(dim).any() or (dim < 2).any():
            raise ValueError(f"dim must be >= 2, got {dim.tolist()}")
    return dim / 2 - 1, r


class _BesselRatio(torch.autograd.Function):
    @staticmethod
    def forward(ctx, nu, r):
        ratio = _evaluate(nu, r.double())[2]
        ctx.save_for_backward(nu, r, ratio)
        return ratio.to(r.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        nu, r, ratio = ctx.saved_tensors
        # A' = 1 - A^2 - (d - 1) A / r, with A / r -> 1 / d at r = 0
        over_r = torch.where(r != 0, ratio / r.double(), 1 / (2 * nu + 2))
        derivative = 1 - ratio * ratio - (2 * nu + 1) * over_r
        return None, (grad * derivative).to(r.dtype)


class _LogHyp0F1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, nu, r, scaled):
        value, value_scaled, ratio = _evaluate(nu, r.double())
        ctx.save_for_backward(nu, r, ratio)
        ctx.scaled = scaled
        return (value_scaled if scaled else value).to(r.dtype)

    @staticmethod
    def backward(ctx, grad):
        nu, r, ratio = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: keep A differentiable
            ratio = _BesselRatio.apply(nu, r)
        derivative = ratio - 1 if ctx.scaled else ratio
        return None, (grad * derivative).to(r.dtype), None


def log_hyp0f1_sphere(dim, r, *, scaled=False):
    r"""Log normalizer :math:`L_d(r) = \log {}_0F_1(; d/2; r^2/4)` of the sphere :math:`S^{d-1}`.

    Equals :math:`\log E_z[\exp(r\, u \cdot z)]` for :math:`z` uniform on :math:`S^{d-1}` and
    any unit :math:`u`. Differentiable in ``r`` (:math:`dL_d/dr = A_d(r)`, twice
    differentiable); computed in float64 and returned in the dtype of ``r``.

    :param dim: dimension :math:`d \ge 2` (int or tensor broadcastable with ``r``).
    :param Tensor r: real argument (``L_d`` is even in ``r``; ``inf`` gives ``inf``).
    :param bool scaled: return :math:`L_d(r) - r`, which keeps full precision in float32
        for large ``r``.
    :returns: tensor of the broadcast shape of ``dim`` and ``r``.

    >>> round(float(log_hyp0f1_sphere(3, torch.tensor(2.0))), 5)  # log(sinh(2) / 2)
    0.59522
    """
    nu, r = _as_inputs(dim, r, "r")
    return _LogHyp0F1.apply(nu, r, scaled)


def bessel_ratio(dim, kappa):
    r"""Bessel ratio :math:`A_d(\kappa) = I_{d/2}(\kappa) / I_{d/2-1}(\kappa)`.

    The mean resultant length of a von Mises–Fisher distribution with concentration
    :math:`\kappa` on :math:`S^{d-1}`; increasing from 0 to 1, differentiable with
    :math:`A_d' = 1 - A_d^2 - (d - 1) A_d / \kappa`.

    :param dim: dimension :math:`d \ge 2` (int or tensor broadcastable with ``kappa``).
    :param Tensor kappa: concentration (real; ``A_d`` is odd).
    :returns: tensor in the dtype of ``kappa``.

    >>> round(float(bessel_ratio(3, torch.tensor(2.0))), 6)  # coth(2) - 1/2
    0.537315
    """
    nu, kappa = _as_inputs(dim, kappa, "kappa")
    return _BesselRatio.apply(nu, kappa)


def log_iv(nu, x):
    r"""Logarithm of the modified Bessel function :math:`\log I_\nu(x)` for :math:`\nu \ge 0`.

    Computed as :math:`L_{2\nu+2}(x) - \log\Gamma(\nu + 1) + \nu \log(x / 2)`; finite where
    ``scipy.special.iv`` under- or overflows. Differentiable in ``x``.

    :param nu: order :math:`\nu \ge 0` (float or tensor).
    :param Tensor x: non-negative argument.
    :returns: tensor in the dtype of ``x``.

    >>> round(float(log_iv(0.5, torch.tensor(1.0))), 6)  # log(sqrt(2 / pi) sinh(1))
    -0.064352
    """
    nu = torch.as_tensor(nu, dtype=torch.float64)
    if torch.isnan(nu).any() or (nu < 0).any():
        raise ValueError(f"nu must be >= 0, got {nu.tolist()}")
    if (torch.as_tensor(x) < 0).any():
        raise ValueError("x must be non-negative")
    value = log_hyp0f1_sphere(2 * nu + 2, x)
    nu = nu.to(value.dtype)
    return value - torch.lgamma(nu + 1) + torch.xlogy(nu, value.new_tensor(0.5) * x)
