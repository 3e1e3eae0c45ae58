"""The Pyro layer: critics as distributions and factors, one distribution per module.

Index distributions over a bank or candidate set (:class:`ContrastiveConditional`,
:class:`BridgedConditional`, both Pyro ``Categorical`` subclasses), :class:`TiltedConditional`
(a critic's conditional of ``y`` given ``x``), the sphere distributions
(:class:`VonMisesFisher`, :class:`UniformSphere`) and :class:`SphereReparam`,
:class:`TiltedGaussian`, and :func:`contrastive_factor`. This layer may import critics and
ops only: a distribution takes logits or a callable, never a ``Bridge``.
"""

from pyro_contrast.distributions import kl  # noqa: F401  (registers the KL divergences)
from pyro_contrast.distributions.bridged_conditional import BridgedConditional
from pyro_contrast.distributions.contrastive_conditional import ContrastiveConditional
from pyro_contrast.distributions.contrastive_factor import contrastive_factor
from pyro_contrast.distributions.sphere_reparam import SphereReparam
from pyro_contrast.distributions.tilted_conditional import TiltedConditional
from pyro_contrast.distributions.tilted_gaussian import TiltedGaussian
from pyro_contrast.distributions.tilted_gaussian_optima import (
    optimal_bilinear_weight,
    optimal_l2_tilt,
)
from pyro_contrast.distributions.uniform_sphere import UniformSphere
from pyro_contrast.distributions.vmf import VonMisesFisher

__all__ = [
    "BridgedConditional",
    "ContrastiveConditional",
    "SphereReparam",
    "TiltedConditional",
    "TiltedGaussian",
    "UniformSphere",
    "VonMisesFisher",
    "contrastive_factor",
    "optimal_bilinear_weight",
    "optimal_l2_tilt",
]
