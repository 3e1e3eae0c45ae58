r"""Closed-form KL divergences of the sphere distributions, registered with torch.

With :math:`L_d` the log normalizer (:func:`~pyro_contrast.ops.log_hyp0f1_sphere`) and
:math:`A_d = L_d'` the mean resultant length (Mardia & Jupp §9.3):

.. math::

    \mathrm{KL}(\mathrm{vMF}(\mu_1, \kappa_1) \,\|\, \mathrm{vMF}(\mu_2, \kappa_2))
        = A_d(\kappa_1)(\kappa_1 - \kappa_2\, \mu_1^\top \mu_2) - L_d(\kappa_1) + L_d(\kappa_2),

    \mathrm{KL}(\mathrm{vMF}(\mu, \kappa) \,\|\, \mathrm{Uniform}) = \kappa A_d(\kappa)
        - L_d(\kappa), \qquad
    \mathrm{KL}(\mathrm{Uniform} \,\|\, \mathrm{vMF}(\mu, \kappa)) = L_d(\kappa).

:math:`\kappa A_d(\kappa) - L_d(\kappa)` is evaluated as
:math:`\kappa (A_d - 1) - [L_d(\kappa) - \kappa]` in float64 (terms of size
:math:`\kappa` cancel to a KL of order one) and returned in the distributions' dtype.
The index distributions are :class:`~pyro.distributions.Categorical` subclasses and use
torch's categorical KL.
"""

import torch
from torch.distributions import register_kl

from pyro_contrast.distributions.uniform_sphere import UniformSphere
from pyro_contrast.distributions.vmf import VonMisesFisher
from pyro_contrast.ops.bessel import bessel_ratio, log_hyp0f1_sphere


def _check_dims(p, q):
    if p.event_shape != q.event_shape:
        raise ValueError(
            f"KL between spheres of different dimensions: {tuple(p.event_shape)} "
            f"and {tuple(q.event_shape)}"
        )


@register_kl(VonMisesFisher, VonMisesFisher)
def _kl_vmf_vmf(p, q):
    _check_dims(p, q)
    dim = p.event_shape[0]
    dtype = torch.promote_types(p.loc.dtype, q.loc.dtype)
    k1, k2 = p.concentration.double(), q.concentration.double()
    ratio = bessel_ratio(dim, k1)
    cosine = (p.loc.double() * q.loc.double()).sum(-1)
    # k1 A1 - L(k1) + L(k2) - k2 A1 cos, with L(k) = [L(k) - k] + k written scaled
    scaled_1 = log_hyp0f1_sphere(dim, k1, scaled=True)
    scaled_2 = log_hyp0f1_sphere(dim, k2, scaled=True)
    kl = k1 * (ratio - 1) - scaled_1 + scaled_2 + k2 * (1 - ratio * cosine)
    return kl.clamp(min=0).to(dtype)


@register_kl(VonMisesFisher, UniformSphere)
def _kl_vmf_uniform(p, q):
    _check_dims(p, q)
    dim = p.event_shape[0]
    kappa = p.concentration.double()
    kl = kappa * (bessel_ratio(dim, kappa) - 1) - log_hyp0f1_sphere(dim, kappa, scaled=True)
    kl = kl.clamp(min=0).to(p.concentration.dtype)
    return kl.expand(torch.broadcast_shapes(p.batch_shape, q.batch_shape))


@register_kl(UniformSphere, VonMisesFisher)
def _kl_uniform_vmf(p, q):
    _check_dims(p, q)
    kl = log_hyp0f1_sphere(p.event_shape[0], q.concentration)
    return kl.expand(torch.broadcast_shapes(p.batch_shape, q.batch_shape)).to(p.dtype)


@register_kl(UniformSphere, UniformSphere)
def _kl_uniform_uniform(p, q):
    _check_dims(p, q)
    return torch.zeros(torch.broadcast_shapes(p.batch_shape, q.batch_shape), dtype=p.dtype)
