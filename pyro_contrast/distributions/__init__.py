from pyro_contrast.distributions.bridged_conditional import BridgedConditional
from pyro_contrast.distributions.contrastive_conditional import ContrastiveConditional
from pyro_contrast.distributions.tilted_gaussian import (
    TiltedGaussian,
    optimal_bilinear_weight,
    optimal_l2_tilt,
)
from pyro_contrast.distributions.uniform_sphere import UniformSphere
from pyro_contrast.distributions.vmf import VonMisesFisher

__all__ = [
    "BridgedConditional",
    "ContrastiveConditional",
    "TiltedGaussian",
    "UniformSphere",
    "VonMisesFisher",
    "optimal_bilinear_weight",
    "optimal_l2_tilt",
]
