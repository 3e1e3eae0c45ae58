from pyro_contrast.sim.linear_gaussian import LinearGaussianChain
from pyro_contrast.sim.multimodal import MultimodalLatentModel

__all__ = ["LinearGaussianChain", "MultimodalLatentModel"]
