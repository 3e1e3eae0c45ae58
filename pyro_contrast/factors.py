"""Temporary alias: ``contrastive_factor`` moved to ``pyro_contrast.distributions``.

Delete this module once ``pyro_contrast/__init__.py`` imports the new place.
"""

from pyro_contrast.distributions.contrastive_factor import contrastive_factor  # noqa: F401
