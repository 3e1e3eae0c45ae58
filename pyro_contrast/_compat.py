"""Old import paths of version 0.1 (``pyro_contrast.bridge``, ``pyro_contrast.train``, ...).

Version 0.2 moved the modules into folders named for the layers. For one release the old
paths still import, as the same module objects, with a ``DeprecationWarning`` naming the new
path; ``pc.*`` names are unchanged and warn nothing.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "pyro_contrast.arviz": "pyro_contrast.studies.arviz",
    "pyro_contrast.bank": "pyro_contrast.marginals.bank",
    "pyro_contrast.bayes": "pyro_contrast.training.bayes",
    "pyro_contrast.bridge": "pyro_contrast.marginals.bridge",
    "pyro_contrast.checkpoint": "pyro_contrast.training.checkpoint",
    "pyro_contrast.commands": "pyro_contrast.cli",
    "pyro_contrast.commands.demo": "pyro_contrast.cli.demo",
    "pyro_contrast.commands.study": "pyro_contrast.cli.study",
    "pyro_contrast.compare": "pyro_contrast.studies.compare",
    "pyro_contrast.factors": "pyro_contrast.distributions.contrastive_factor",
    "pyro_contrast.identifiability": "pyro_contrast.studies.identifiability",
    "pyro_contrast.io": "pyro_contrast.studies.io",
    "pyro_contrast.metrics": "pyro_contrast.studies.metrics",
    "pyro_contrast.plots": "pyro_contrast.studies.plots",
    "pyro_contrast.study": "pyro_contrast.studies.study",
    "pyro_contrast.train": "pyro_contrast.training.fit",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new} in pyro-contrast 0.2; the old path will be removed in 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(new)

    def exec_module(self, module):
        # The module is the new one, already executed; importlib files it under the old name.
        pass


def install():
    """Register the finder once (idempotent)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
