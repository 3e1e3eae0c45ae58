"""Simulators whose exact answers are known: the truth that the methods are tested against.

A simulator may import the layers below studies (marginals, distributions, critics, ops) and
Pyro; nothing but studies, diagnostics and the command line import it.
"""

from pyro_contrast.sim.didactic import DidacticChain
from pyro_contrast.sim.linear_gaussian import LinearGaussianChain
from pyro_contrast.sim.multimodal import MultimodalLatentModel

__all__ = ["DidacticChain", "LinearGaussianChain", "MultimodalLatentModel"]
