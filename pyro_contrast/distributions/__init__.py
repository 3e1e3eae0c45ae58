from pyro_contrast.distributions.bridged_conditional import BridgedConditional
from pyro_contrast.distributions.contrastive_conditional import ContrastiveConditional

__all__ = ["BridgedConditional", "ContrastiveConditional"]
