from pyro_contrast.sim.linear_gaussian import LinearGaussianChain

__all__ = ["LinearGaussianChain"]
