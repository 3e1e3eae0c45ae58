"""pyro-contrast: contrastive critics as Pyro factors and distributions."""

from pyro_contrast import distributions, ops, sim
from pyro_contrast.bank import Bank
from pyro_contrast.bridge import Bridge
from pyro_contrast.critics import Critic
from pyro_contrast.distributions import BridgedConditional, ContrastiveConditional
from pyro_contrast.factors import contrastive_factor

__version__ = "0.1.0"
__all__ = [
    "Bank",
    "Bridge",
    "BridgedConditional",
    "ContrastiveConditional",
    "Critic",
    "contrastive_factor",
    "distributions",
    "ops",
    "sim",
]
