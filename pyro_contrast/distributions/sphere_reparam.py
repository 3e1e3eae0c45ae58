r"""A reparameterizer that lets NUTS, HMC and autoguides handle latents on the sphere."""

import math

import pyro
import torch
from pyro.distributions import Delta, TorchDistribution, constraints
from pyro.infer.reparam.reparam import Reparam

from pyro_contrast.distributions.tilted_conditional import TiltedConditional
from pyro_contrast.distributions.uniform_sphere import UniformSphere
from pyro_contrast.distributions.vmf import VonMisesFisher

_SPHERE_DISTRIBUTIONS = (UniformSphere, VonMisesFisher)


class SphereReparam(Reparam):
    r"""Reparameterize a :class:`~pyro_contrast.distributions.VonMisesFisher` or
    :class:`~pyro_contrast.distributions.UniformSphere` latent through :math:`\mathbb R^d`
    (also a :class:`~pyro_contrast.distributions.TiltedConditional` whose closed form is
    von Mises–Fisher).

    Samplers and autoguides work in unconstrained Euclidean space, where the sphere has no
    interior. This strategy samples instead an auxiliary :math:`u \in \mathbb R^d` (site
    ``"{name}_lifted"``) whose direction has the sphere distribution and whose radius is
    independent :math:`\chi_d` (the radius of a standard Gaussian vector):

    .. math::

        q(u) = \mathcal N(u; 0, I_d)\, |S^{d-1}|\, p\!\left(\frac{u}{\lVert u\rVert}\right),
        \qquad z = \frac{u}{\lVert u\rVert} \sim p,

    and records :math:`z` at the original site as a deterministic value. For the uniform
    sphere :math:`q` is the standard Gaussian (as in Pyro's ``ProjectedNormalReparam``); the
    radius never enters the model, so the marginal of :math:`z` is exact. Observed sites are
    left unchanged.

    References:

    1. M. E. Muller (1959). A note on a method for generating points uniformly on
       n-dimensional spheres. *Communications of the ACM* 2(4), 19–20.

    >>> import pyro, torch
    >>> from pyro import poutine
    >>> def model():
    ...     return pyro.sample("z", VonMisesFisher(torch.tensor([0.0, 0.0, 1.0]), 5.0))
    >>> reparam_model = poutine.reparam(model, config={"z": SphereReparam()})
    >>> trace = poutine.trace(reparam_model).get_trace()
    >>> trace.nodes["z_lifted"]["value"].shape, round(float(trace.nodes["z"]["value"].norm()), 5)
    (torch.Size([3]), 1.0)
    """

    def apply(self, msg):
        name, fn, value = msg["name"], msg["fn"], msg["value"]
        if msg["is_observed"]:
            return {"fn": fn, "value": value, "is_observed": True}
        fn, event_dim = self._unwrap(fn)
        if isinstance(fn, TiltedConditional) and isinstance(fn.closed_form, VonMisesFisher):
            fn = fn.closed_form
        if not isinstance(fn, _SPHERE_DISTRIBUTIONS):
            raise TypeError(
                f"SphereReparam expects VonMisesFisher, UniformSphere or a TiltedConditional "
                f"on the sphere at site {name!r}, got {type(fn).__name__}"
            )
        # A given value (initialization, conditioning) lifts to radius one.
        lifted = pyro.sample(
            f"{name}_lifted",
            self._wrap(LiftedSphere(fn), event_dim),
            obs=value,
            infer={"is_observed": False},
        )
        if value is None:
            value = lifted / torch.linalg.vector_norm(lifted, dim=-1, keepdim=True)
        new_fn = Delta(value, event_dim=event_dim).mask(False)
        return {"fn": new_fn, "value": value, "is_observed": True}


class LiftedSphere(TorchDistribution):
    r"""The lift :math:`q(u) = \mathcal N(u; 0, I)\, |S^{d-1}|\, p(u / \lVert u \rVert)` of a
    sphere distribution :math:`p` to :math:`\mathbb R^d` (direction :math:`\sim p`, radius
    :math:`\sim \chi_d`, independent).

    :param sphere: a :class:`~pyro_contrast.distributions.VonMisesFisher` or
        :class:`~pyro_contrast.distributions.UniformSphere`.
    """

    arg_constraints = {}
    support = constraints.real_vector

    def __init__(self, sphere, *, validate_args=None):
        self.sphere = sphere
        super().__init__(sphere.batch_shape, sphere.event_shape, validate_args=validate_args)

    @property
    def has_rsample(self):
        return self.sphere.has_rsample

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(LiftedSphere, _instance)
        new.sphere = self.sphere.expand(batch_shape)
        super(LiftedSphere, new).__init__(
            new.sphere.batch_shape, self.event_shape, validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    def _radius(self, shape, like):
        dim = self.event_shape[0]
        chi2 = torch.distributions.Chi2(
            torch.full(shape, float(dim), dtype=like.dtype, device=like.device)
        )
        return chi2.sample().sqrt().unsqueeze(-1)

    def sample(self, sample_shape=()):
        direction = self.sphere.sample(sample_shape)
        return direction * self._radius(direction.shape[:-1], direction)

    def rsample(self, sample_shape=()):
        direction = self.sphere.rsample(sample_shape)
        return direction * self._radius(direction.shape[:-1], direction)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        dim = self.event_shape[0]
        radius = torch.linalg.vector_norm(value, dim=-1)
        # log N(u; 0, I) + log |S^{d-1}| depends on u through its radius only
        log_gauss = -0.5 * radius.square() - 0.5 * dim * math.log(2 * math.pi)
        log_area = math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)
        direction = value / radius.unsqueeze(-1)
        return log_gauss + log_area + self.sphere.log_prob(direction)
