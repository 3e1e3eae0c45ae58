r"""Critics as Pyro factors: the normalized likelihood of a bank, or the raw score."""

import pyro
import torch

from pyro_contrast.critics import Critic
from pyro_contrast.distributions._tilt_closed_forms import is_closed_form_base
from pyro_contrast.distributions.tilted_conditional import TiltedConditional


def contrastive_factor(name, critic, x, y, bank=None, *, has_rsample=None):
    r"""Add a critic's log likelihood ratio for :math:`y` given :math:`x` as a ``pyro.factor``.

    A critic trained with InfoNCE (softmax over :math:`y`) is identified only up to a term in
    :math:`x`: :math:`f(x, y) = \mathrm{PMI}(x, y) + g(x)` with :math:`g` free, and critic
    families can force one (``neg_sq_l2`` with linear encoders on a Gaussian pair gives
    :math:`g(x) = -x^2/2`). When :math:`x` is **latent**, :math:`g(x)` is not a constant:
    the raw factor :math:`e^{f(x, y)}` multiplies the posterior by :math:`e^{g(x)}`.

    **With a bank** :math:`\{y_m\} \sim p(y)` (weights :math:`w_m`) the factor is the
    normalized log density ratio of the critic's conditional
    (:class:`~pyro_contrast.distributions.TiltedConditional`),

    .. math::

        \log \frac{p(y \mid x)}{p(y)} \approx f(x, y) - \log \sum_m \tilde w_m\, e^{f(x, y_m)},
        \qquad \tilde w_m = w_m / \textstyle\sum_{m'} w_{m'},

    in which :math:`g(x)` cancels exactly; it is a valid likelihood for any latent on either
    side (up to :math:`\log p(y)`, constant when :math:`y` is observed). Example: with
    :math:`x \sim \mathcal N(0, 1)`, :math:`y = x + \varepsilon/2` observed at 1.5, the
    posterior is :math:`\mathcal N(1.2, 0.2)`; a critic equal to :math:`\mathrm{PMI} -
    x^2/2` gives :math:`\mathcal N(1.0, 0.167)` through the raw factor and
    :math:`\mathcal N(1.2, 0.2)` through the normalized one.

    **Without a bank** the factor is the raw score :math:`f(x, y)`. It is a valid likelihood
    only when :math:`g` cannot depend on the latent variables: the latents sit on the side
    the loss normalized over (here :math:`y`, for a softmax over :math:`y`; then
    :math:`g(x)` is constant because :math:`x` is observed), or the loss pins :math:`g`
    (symmetric InfoNCE at its optimum, or a sigmoid loss, which learns
    :math:`\mathrm{PMI}` plus a constant). It is *not* valid for a latent :math:`x` with a
    critic trained by a one-sided softmax over :math:`y`.

    The factor has the broadcast aligned-pairs shape of ``x.shape[:-1]`` and ``y``'s batch,
    so it lives inside plates like any site; gradients flow to ``x``, ``y`` and the critic.

    References:

    1. Baptista, Stuart & Tran (2025), *A Mathematical Perspective on Contrastive Learning*.
    2. Oord, Li & Vinyals (2018), *Representation Learning with Contrastive Predictive Coding*.

    :param str name: the site name.
    :param Critic critic: the critic :math:`f`.
    :param Tensor x: inputs of the first modality (possibly latent).
    :param Tensor y: inputs of the second modality, one item per row of ``x`` (broadcast).
    :param bank: samples of :math:`y` from its marginal (a tensor of items or a single-view
        :class:`~pyro_contrast.Bank`, whose ``log_weights`` are used), or a closed-form
        marginal accepted by :class:`~pyro_contrast.distributions.TiltedConditional`;
        ``None`` for the raw score.
    :param bool has_rsample: passed to ``pyro.factor`` (whether the factor's inputs are
        reparametrized); required by Pyro in guides.
    :returns: the factor's value.

    >>> import torch
    >>> critic = Critic.from_embeddings("dot")
    >>> def model(y, bank):
    ...     x = pyro.sample("x", pyro.distributions.Normal(0., 1.).expand([3]).to_event(1))
    ...     contrastive_factor("match", critic, x, y, bank)
    >>> trace = pyro.poutine.trace(model).get_trace(torch.ones(3), torch.randn(50, 3))
    >>> trace.nodes["match"]["fn"].batch_shape
    torch.Size([])
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if not isinstance(critic, Critic):
        raise TypeError(f"critic must be a pyro_contrast.Critic, got {type(critic).__name__}")
    if bank is None:
        log_factor = critic(x, y)
    elif not (
        isinstance(bank, torch.Tensor)
        or callable(getattr(bank, "materialize", None))
        or is_closed_form_base(bank)
    ):
        raise TypeError(
            f"bank must be a tensor of items or a pyro_contrast.Bank, got {type(bank).__name__}"
        )
    else:
        log_factor = TiltedConditional(critic, x, bank).log_density_ratio(y)
    pyro.factor(name, log_factor, has_rsample=has_rsample)
    return log_factor
