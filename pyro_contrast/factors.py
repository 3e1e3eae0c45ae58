r"""Critics as Pyro factors."""

import pyro

from pyro_contrast.critics import Critic


def contrastive_factor(name, critic, x, y, *, has_rsample=None):
    r"""Add a critic's score :math:`f(x, y)` to the model's log density as a ``pyro.factor``.

    A critic approximates the log density ratio :math:`\log p(y \mid x) - \log p(y)` up to a
    term in :math:`x` alone, so in a model where :math:`y` is observed and :math:`p(y)` does
    not depend on the latent variables, the factor stands in for the likelihood
    :math:`p(y \mid x)` (the missing terms are constant in the latents). The factor has the
    aligned-pairs shape ``x.shape[:-1]`` and so lives inside plates like any site. Gradients
    flow to ``x``, ``y`` and the critic's parameters, so SVI and NUTS work on latents upstream.

    References:

    1. Baptista, Stuart & Tran (2025), *A Mathematical Perspective on Contrastive Learning*.

    :param str name: the site name.
    :param Critic critic: the critic :math:`f`.
    :param Tensor x: inputs of the first modality (possibly latent).
    :param Tensor y: inputs of the second modality.
    :param bool has_rsample: passed to ``pyro.factor`` (whether the factor's inputs are
        reparametrized); required by Pyro in guides.
    :returns: the factor's value, shape ``x.shape[:-1]``.

    >>> import torch
    >>> from pyro_contrast.critics import Critic
    >>> critic = Critic.from_embeddings("dot")
    >>> def model(y):
    ...     x = pyro.sample("x", pyro.distributions.Normal(0., 1.).expand([3]).to_event(1))
    ...     contrastive_factor("match", critic, x, y)
    >>> trace = pyro.poutine.trace(model).get_trace(torch.ones(3))
    >>> trace.nodes["match"]["fn"].batch_shape
    torch.Size([])
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if not isinstance(critic, Critic):
        raise TypeError(f"critic must be a pyro_contrast.Critic, got {type(critic).__name__}")
    log_factor = critic(x, y)
    pyro.factor(name, log_factor, has_rsample=has_rsample)
    return log_factor
