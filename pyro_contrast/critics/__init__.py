"""Critics: learned log density ratios :math:`f(x, y)` between two modalities.

This layer holds :class:`Critic` (encoders, a similarity, a temperature and a bias). It knows
nothing of Pyro: it may import ``torch`` and :mod:`pyro_contrast.ops` only (plus the private
``pyro_contrast._validation``). A new similarity goes into :mod:`pyro_contrast.critics.critic`.
"""

from pyro_contrast.critics.critic import SIMILARITIES, Critic

__all__ = ["SIMILARITIES", "Critic"]
