"""Simulators whose exact answers are known: the truth that the methods are tested against.

A simulator may import the layers below studies (marginals, distributions, critics, ops) and
Pyro; nothing but studies, diagnostics and the command line import it.
"""

from pyro_contrast.sim.content_style import ContentStyleModel
from pyro_contrast.sim.data_assimilation import LinearGaussianObservations, Lorenz96
from pyro_contrast.sim.didactic import DidacticChain
from pyro_contrast.sim.linear_gaussian import LinearGaussianChain
from pyro_contrast.sim.low_rank_pairs import LowRankPairs
from pyro_contrast.sim.multimodal import MultimodalLatentModel

__all__ = [
    "ContentStyleModel",
    "DidacticChain",
    "LinearGaussianChain",
    "LinearGaussianObservations",
    "Lorenz96",
    "LowRankPairs",
    "MultimodalLatentModel",
]
