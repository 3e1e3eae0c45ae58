"""pyro-contrast: contrastive critics as Pyro factors and distributions."""

from pyro_contrast import diagnostics, distributions, linear, losses, ops, sim
from pyro_contrast.arviz import to_inference_data
from pyro_contrast.bank import Bank
from pyro_contrast.bridge import Bridge
from pyro_contrast.checkpoint import load_critic, save_critic
from pyro_contrast.compare import compare
from pyro_contrast.critics import Critic
from pyro_contrast.diagnostics import diagnose
from pyro_contrast.distributions import BridgedConditional, ContrastiveConditional
from pyro_contrast.factors import contrastive_factor
from pyro_contrast.identifiability import identifiability_r2
from pyro_contrast.study import ComparisonResult, Study
from pyro_contrast.train import fit

__version__ = "0.1.0"
__all__ = [
    "Bank",
    "Bridge",
    "BridgedConditional",
    "ComparisonResult",
    "ContrastiveConditional",
    "Critic",
    "Study",
    "compare",
    "contrastive_factor",
    "diagnose",
    "diagnostics",
    "distributions",
    "fit",
    "identifiability_r2",
    "linear",
    "load_critic",
    "losses",
    "ops",
    "plots",
    "save_critic",
    "sim",
    "to_inference_data",
]


def __getattr__(name):
    # Plots import matplotlib, which most users of the library never need: load on first use.
    if name == "plots":
        import importlib

        return importlib.import_module("pyro_contrast.plots")
    raise AttributeError(f"module 'pyro_contrast' has no attribute {name!r}")
