r"""Implicit reparameterization gradients of the von Mises–Fisher cosine :math:`W = \mu^\top x`.

Wood's rejection sampler draws :math:`W` exactly but is not differentiable in
:math:`\kappa`. Implicit reparameterization (Figurnov, Mohamed & Mnih, 2018) differentiates
the identity :math:`F(W; \kappa) = U` instead:

.. math::

    \frac{dW}{d\kappa} = -\frac{\partial_\kappa F(W; \kappa)}{p(W; \kappa)}, \qquad
    \partial_\kappa F(w; \kappa) = \int_{-1}^{w} (t - A_d(\kappa))\, p(t; \kappa)\, dt,

with :math:`p(t; \kappa) \propto e^{\kappa t} (1 - t^2)^{(d-3)/2}` (so
:math:`\partial_\kappa \log p = t - A_d`). The tail integral is taken on the side of
:math:`w` away from the mean :math:`A_d` (there :math:`t - A_d` keeps one sign, so nothing
cancels) in the angle :math:`t = \cos\theta`, where the integrand
:math:`e^{\kappa\cos\theta}\sin^{d-2}\theta` is smooth up to the poles, by Gauss–Legendre
quadrature over at most ``_WIDTH`` standard deviations of :math:`W` (the density is
log-concave for :math:`d \ge 3`, so the truncated tail is below :math:`e^{-30}` of it).
Everything is in float64.
"""

import functools

import numpy as np
import torch

from pyro_contrast.ops.bessel import bessel_ratio

_NUM_NODES = 96
_WIDTH = 30.0


@functools.cache
def _legendre(num_nodes):
    nodes, weights = np.polynomial.legendre.leggauss(num_nodes)
    return torch.from_numpy(nodes), torch.from_numpy(weights)


def _angle(one_minus_cos):
    """``arccos(1 - s)`` computed as ``2 asin(sqrt(s / 2))`` (exact near the pole)."""
    return 2 * torch.asin((0.5 * one_minus_cos.clamp(0, 2)).sqrt())


def cosine_derivative(dim, kappa, w, one_minus_w):
    r""":math:`dW/d\kappa` at samples ``w`` (float64 tensors of one shape)."""
    ratio = bessel_ratio(dim, kappa)
    safe = torch.where(kappa > 0, kappa, 1.0)
    over_kappa = torch.where(kappa > 0, ratio / safe, 1.0 / dim)
    # Var W = A'(k) = 1 - A^2 - (d - 1) A / k; rounding can leave a tiny negative number
    # at large k, where Var W ~ (d - 1) / (2 k^2) is the floor that matters.
    variance = 1 - ratio.square() - (dim - 1) * over_kappa
    floor = ((dim - 1) / (2 * safe.square())).clamp(max=1.0)
    spread = _WIDTH * torch.maximum(variance, 0.5 * floor).sqrt()
    theta_w = _angle(one_minus_w)
    upper = w > ratio
    # Upper tail t in [w, 1]: theta in [arccos(w + spread), theta_w]; lower tail t in
    # [w - spread, w]: theta in [theta_w, arccos(w - spread)].
    lo = torch.where(upper, _angle(one_minus_w - spread), theta_w)
    hi = torch.where(upper, theta_w, _angle(one_minus_w + spread))
    nodes, weights = _legendre(_NUM_NODES)
    nodes, weights = nodes.to(kappa.device), weights.to(kappa.device)
    half, mid = 0.5 * (hi - lo), 0.5 * (hi + lo)
    theta = mid.unsqueeze(-1) + half.unsqueeze(-1) * nodes
    versine = 2 * torch.sin(0.5 * theta).square()  # 1 - cos(theta)
    one_minus_ratio = (1 - ratio).unsqueeze(-1)
    sin_w = torch.sin(theta_w).unsqueeze(-1)
    log_integrand = kappa.unsqueeze(-1) * (one_minus_w.unsqueeze(-1) - versine)
    if dim != 2:
        log_integrand = log_integrand + (dim - 2) * (
            torch.log(torch.sin(theta).clamp(min=1e-300)) - torch.log(sin_w.clamp(min=1e-300))
        )
    integral = ((one_minus_ratio - versine) * log_integrand.exp() * weights).sum(-1) * half
    return torch.where(upper, 1.0, -1.0) * integral * sin_w.squeeze(-1)


class SampleCosine(torch.autograd.Function):
    """``(W, 1 - W)`` drawn by a sampler, with implicit gradients in ``kappa`` (float64)."""

    @staticmethod
    def forward(ctx, kappa, dim, sampler):
        w, one_minus_w = sampler(kappa.detach())
        ctx.dim = dim
        ctx.save_for_backward(kappa, w, one_minus_w)
        return w, one_minus_w

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_w, grad_one_minus_w):
        kappa, w, one_minus_w = ctx.saved_tensors
        derivative = cosine_derivative(ctx.dim, kappa, w, one_minus_w)
        return (grad_w - grad_one_minus_w) * derivative, None, None
