"""pyro-contrast: contrastive critics as Pyro factors and distributions.

The folders are the layers, each importing only those below it: :mod:`~pyro_contrast.ops`
→ :mod:`~pyro_contrast.critics` → :mod:`~pyro_contrast.distributions` →
:mod:`~pyro_contrast.marginals` → :mod:`~pyro_contrast.training` and :mod:`~pyro_contrast.sim`
→ :mod:`~pyro_contrast.studies` → :mod:`~pyro_contrast.diagnostics` → :mod:`~pyro_contrast.cli`.
"""

from pyro_contrast import _compat, diagnostics, distributions, ops, sim
from pyro_contrast._files import FolderExistsError
from pyro_contrast.critics import Critic
from pyro_contrast.diagnostics import diagnose
from pyro_contrast.distributions import (
    BridgedConditional,
    ContrastiveConditional,
    SphereReparam,
    TiltedConditional,
    UniformSphere,
    VonMisesFisher,
    contrastive_factor,
)
from pyro_contrast.marginals.bank import Bank
from pyro_contrast.marginals.bridge import Bridge, SmallNormalizerWarning
from pyro_contrast.studies.arviz import to_inference_data
from pyro_contrast.studies.compare import compare
from pyro_contrast.studies.identifiability import identifiability_r2
from pyro_contrast.studies.result import ComparisonResult
from pyro_contrast.studies.study import Study
from pyro_contrast.training import linear, losses
from pyro_contrast.training.checkpoint import load_critic, save_critic
from pyro_contrast.training.fit import fit

_compat.install()

__version__ = "0.2.0"
__all__ = [
    "Bank",
    "Bridge",
    "BridgedConditional",
    "ComparisonResult",
    "ContrastiveConditional",
    "Critic",
    "FolderExistsError",
    "SmallNormalizerWarning",
    "SphereReparam",
    "Study",
    "TiltedConditional",
    "UniformSphere",
    "VonMisesFisher",
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

        return importlib.import_module("pyro_contrast.studies.plots")
    raise AttributeError(f"module 'pyro_contrast' has no attribute {name!r}")
