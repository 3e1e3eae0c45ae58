r"""Closed forms of a critic's tilted conditional :math:`p(y \mid x) \propto p(y) e^{f(x, y)}`.

- Sphere base (uniform or von Mises–Fisher :math:`(\mu_0, \kappa_0)`) and a critic linear in a
  unit vector :math:`y` (cosine, dot or bilinear similarity): :math:`f = \eta(x)^\top y / T +
  \beta`, so the conditional is von Mises–Fisher with natural parameter
  :math:`\theta = \kappa_0 \mu_0 + \eta / T` and :math:`\log Z(x) = L_d(\lVert\theta\rVert) -
  L_d(\kappa_0) + \beta`.
- Gaussian base and a dot/bilinear or squared-L2 critic: the conditional is Gaussian
  (:class:`~pyro_contrast.distributions.TiltedGaussian`).

The base is the law of the critic's *y embedding*, so these need an identity ``encoder_y``.
"""

import torch
from pyro.distributions import MultivariateNormal

from pyro_contrast.distributions._jit import ignore_jit_warnings
from pyro_contrast.distributions.tilted_gaussian import TiltedGaussian
from pyro_contrast.distributions.uniform_sphere import UniformSphere
from pyro_contrast.distributions.vmf import VonMisesFisher
from pyro_contrast.ops.bessel import log_hyp0f1_sphere

SPHERE_SIMILARITIES = ("cosine", "dot", "bilinear")
GAUSSIAN_SIMILARITIES = ("dot", "bilinear", "neg_sq_l2")


def is_closed_form_base(base):
    return isinstance(base, (UniformSphere, VonMisesFisher, MultivariateNormal))


def tilt(critic, embedded_x, base, validate_args):
    """The conditional distribution and :math:`\\log Z(x)` for a closed-form ``base``."""
    if not isinstance(critic.encoder_y, torch.nn.Identity):
        raise ValueError(
            "a closed-form base is the law of the y embedding, so the critic needs an identity "
            "encoder_y; for other critics pass a bank of y samples as the base"
        )
    if base.batch_shape != ():
        raise ValueError(f"base must have batch shape (), got {tuple(base.batch_shape)}")
    dim = base.event_shape[-1]
    similarity = critic.similarity
    embedded = embedded_x if critic.weight is None else critic.weight
    with ignore_jit_warnings():
        if embedded.shape[-1] != dim:
            raise ValueError(
                f"the critic scores y embeddings of dimension {embedded.shape[-1]}, the base "
                f"has {dim}"
            )
    if isinstance(base, MultivariateNormal):
        conditional = _gaussian(critic, embedded_x, base, similarity, validate_args)
        log_normalizer = conditional.log_normalizer
    else:
        conditional, log_normalizer = _sphere(critic, embedded_x, base, similarity, validate_args)
    if critic.bias is not None:
        log_normalizer = log_normalizer + critic.bias.to(log_normalizer.dtype)
    return conditional, log_normalizer


def _sphere(critic, u, base, similarity, validate_args):
    if similarity not in SPHERE_SIMILARITIES:
        raise ValueError(
            f"a sphere base has a closed form for similarities {SPHERE_SIMILARITIES}, the critic "
            f"has {similarity!r}; pass a bank instead"
        )
    dim = base.event_shape[-1]
    if similarity == "cosine":
        u = u / u.norm(dim=-1, keepdim=True).clamp(min=torch.finfo(u.dtype).tiny ** 0.5)
    elif similarity == "bilinear":
        u = u @ critic.weight.to(u.dtype)
    theta = u / critic.temperature.to(u.dtype)
    if isinstance(base, VonMisesFisher):
        prior = base.concentration.to(theta.dtype)
        theta = theta + prior.unsqueeze(-1) * base.loc.to(theta.dtype)
        log_prior = log_hyp0f1_sphere(dim, prior)
    else:
        log_prior = 0.0
    kappa = torch.linalg.vector_norm(theta, dim=-1)
    # At theta = 0 the conditional is uniform: any unit loc will do (e_1).
    e1 = torch.zeros_like(theta)
    e1[..., 0] = 1.0
    positive = (kappa > 0).unsqueeze(-1)
    loc = torch.where(positive, theta / torch.where(positive, kappa.unsqueeze(-1), 1.0), e1)
    conditional = VonMisesFisher(loc, kappa, validate_args=validate_args)
    # log Z = L_d(k) - L_d(k0); the conditional reuses [L_d(k) - k] for its log_prob
    conditional.scaled_log_normalizer = log_hyp0f1_sphere(dim, kappa, scaled=True)
    return conditional, conditional.scaled_log_normalizer + kappa - log_prior


def _gaussian(critic, u, base, similarity, validate_args):
    if similarity not in GAUSSIAN_SIMILARITIES:
        raise ValueError(
            f"a Gaussian base has a closed form for similarities {GAUSSIAN_SIMILARITIES}, the "
            f"critic has {similarity!r}; pass a bank instead"
        )
    loc, covariance = base.loc, base.covariance_matrix
    temperature = critic.temperature
    if similarity == "neg_sq_l2":
        eye = torch.eye(loc.shape[-1], dtype=loc.dtype, device=loc.device)
        return TiltedGaussian.l2(
            u, eye, eye, loc, covariance, temperature, validate_args=validate_args
        )
    weight = critic.weight
    if weight is None:
        weight = torch.eye(loc.shape[-1], dtype=loc.dtype, device=loc.device)
    return TiltedGaussian.bilinear(
        u, weight, loc, covariance, temperature, validate_args=validate_args
    )
