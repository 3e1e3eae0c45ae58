"""pyro-contrast: contrastive critics as Pyro factors and distributions."""

__version__ = "0.1.0"
