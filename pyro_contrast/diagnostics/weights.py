r"""How many bank items carry a query's posterior? (effective sample size of bank weights)"""

from typing import NamedTuple

import torch

from pyro_contrast._validation import as_float_tensor


class EffectiveSampleSize(NamedTuple):
    """Kish's effective sample size of each row of weights, and its share of the bank.

    :param Tensor ess: effective number of items, in ``[1, M]``.
    :param Tensor fraction: ``ess / M``, the fraction of the bank in use.

    >>> ess, fraction = effective_sample_size(torch.tensor([0.0, 0.0, -float("inf"), 0.0]))
    >>> ess.item(), fraction.item()
    (3.0, 0.75)
    """

    ess: torch.Tensor
    fraction: torch.Tensor


def effective_sample_size(log_weights, dim=-1):
    r"""Effective sample size of (unnormalized) log weights along ``dim``, computed in log space.

    For a query's bank posterior :math:`p(b_m \mid a) \propto w_m` (e.g. ``log_weights`` =
    critic scores plus the bank's log weights), Kish's effective sample size

    .. math::

        \mathrm{ESS} = \frac{(\sum_m w_m)^2}{\sum_m w_m^2}
        = \exp\left(2 \operatorname{LSE}_m \log w_m - \operatorname{LSE}_m 2 \log w_m\right)

    says how many bank items the exact marginal effectively averages over: near 1 the bank
    is too small or the critic too sharp for the bank to represent :math:`p(b \mid a)`, and
    the exact answer rests on a handful of items. It is invariant to a shift of the log
    weights, so scores spanning hundreds of nats are fine. Items with weight zero
    (``-inf``) count in ``M`` but contribute nothing.

    References:

    1. Kish (1965), *Survey Sampling*, Wiley.
    2. Owen (2013), *Monte Carlo theory, methods and examples*, §9.3.

    :param Tensor log_weights: log weights, e.g. ``(N, M)`` for N queries over M items.
    :param int dim: the item dimension.
    :returns: :class:`EffectiveSampleSize` ``(ess, fraction)``, each of the input's shape
        without ``dim``.

    >>> effective_sample_size(torch.zeros(2, 8)).ess
    tensor([8., 8.])
    """
    log_weights = as_float_tensor(log_weights, "log_weights").detach()
    if log_weights.dim() == 0:
        raise ValueError("log_weights must have at least one dimension (the bank items)")
    if not -log_weights.dim() <= dim < log_weights.dim():
        raise ValueError(
            f"dim={dim} is out of range for log_weights of shape {tuple(log_weights.shape)}"
        )
    num_items = log_weights.shape[dim]
    if num_items == 0:
        raise ValueError("log_weights is empty along dim (no bank items)")
    if torch.isnan(log_weights).any() or (log_weights == float("inf")).any():
        raise ValueError("log_weights contains NaN or +inf")
    if (log_weights == float("-inf")).all(dim).any():
        raise ValueError("log_weights has a row whose weights are all zero (all -inf)")
    # shifting by the row maximum keeps both log sums near log M, so their difference does
    # not cancel two numbers of the size of the scores (hundreds of nats) in float32
    log_weights = log_weights - log_weights.amax(dim, keepdim=True)
    total = torch.logsumexp(log_weights, dim)
    squares = torch.logsumexp(2 * log_weights, dim)
    # the ratio lies in [1, M]; rounding can step outside by an ulp
    ess = (2 * total - squares).exp().clamp(1.0, float(num_items))
    return EffectiveSampleSize(ess, ess / num_items)
