"""Private helpers shared by the distributions that score a critic against a bank.

Data checks (finite inputs, weight shapes) run only under validation, following Pyro: with
validation off there is no Python branch on tensor values, so the code traces under
``torch.jit`` (``JitTrace_ELBO``) without warnings.
"""

import math

import torch
from torch.distributions import Distribution

from pyro_contrast._validation import as_float_tensor, check_finite
from pyro_contrast.distributions._jit import ignore_jit_warnings

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def validating(validate_args):
    """Whether data checks run: the explicit flag, else Pyro's/torch's global default."""
    return Distribution._validate_args if validate_args is None else bool(validate_args)


def encode(critic, side, value, validate):
    """Embed ``value`` with the critic's ``encoder_x`` or ``encoder_y`` (float32 or better).

    Under validation this is ``critic.encode_x``/``encode_y`` (type and finiteness checks);
    without, the encoder is called directly.
    """
    if validate:
        return critic.encode_x(value) if side == "x" else critic.encode_y(value)
    if not isinstance(value, torch.Tensor):
        value = as_float_tensor(value, side)
    elif not value.is_floating_point() or value.dtype in _LOW_PRECISION:
        value = value.float()
    out = (critic.encoder_x if side == "x" else critic.encoder_y)(value)
    return out.float() if out.dtype in _LOW_PRECISION else out


def encode_batch(critic, side, value, event_dim, validate):
    """Encode ``value`` whose trailing ``event_dim`` dims are one item; returns ``(..., d)``."""
    if value.dim() < event_dim:
        raise ValueError(f"{side} must have at least {event_dim} dims, got {tuple(value.shape)}")
    leading = value.shape[: value.dim() - event_dim]
    flat = value.reshape((-1,) + value.shape[value.dim() - event_dim :])
    embedded = encode(critic, side, flat, validate)
    return embedded.reshape(leading + embedded.shape[-1:])


def resolve_bank(bank, name="bank"):
    """Items and log weights of a bank: a tensor of items, or a ``Bank``-like object.

    A ``Bank``-like object is anything with ``materialize()`` (a tuple of view tensors) and a
    ``log_weights`` attribute, such as :class:`pyro_contrast.Bank` (duck-typed here: banks live
    in a higher layer). It must hold a single view.

    :returns: ``(items, log_weights)``; ``log_weights`` is ``None`` for uniform weights.
    """
    if isinstance(bank, torch.Tensor):
        items, log_weights = bank, None
    elif callable(getattr(bank, "materialize", None)):
        views = bank.materialize()
        if len(views) != 1:
            raise ValueError(
                f"{name} has {len(views)} views; a conditional of one critic needs the view that "
                f"critic sees: pass Bank(bank.view(i), log_weights=bank.log_weights)"
            )
        items, log_weights = views[0], getattr(bank, "log_weights", None)
    else:
        raise TypeError(
            f"{name} must be a tensor of items or a pyro_contrast.Bank, got {type(bank).__name__}"
        )
    items = as_float_tensor(items, name)
    with ignore_jit_warnings():
        if items.dim() < 1 or items.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty batch of items, got {tuple(items.shape)}")
    return items, log_weights


def check_bank(items, log_weights, name="bank"):
    """Data checks of a bank (run under validation only)."""
    check_finite(items, name)
    if log_weights is None:
        return
    if log_weights.shape != items.shape[:1]:
        raise ValueError(
            f"log_weights must have shape ({items.shape[0]},), got {tuple(log_weights.shape)}"
        )
    if torch.isnan(log_weights).any() or (log_weights == math.inf).any():
        raise ValueError("log_weights contains NaN or +inf")
    if (log_weights == -math.inf).all():
        raise ValueError("log_weights gives every bank item zero weight")


def bank_scores(critic, embedded_x, embedded_bank, log_weights=None):
    """``f(x, y_m) + log w_m`` for every query and bank item: shape ``batch_shape + (M,)``.

    Scored by the critic's blocked GEMM (memory O(N M), never O(N M d)).
    """
    batch_shape = embedded_x.shape[:-1]
    flat = embedded_x.reshape(-1, embedded_x.shape[-1])
    scores = critic.pairwise_embeddings(flat, embedded_bank)
    scores = scores.reshape(batch_shape + embedded_bank.shape[:1])
    if log_weights is not None:
        scores = scores + log_weights.to(scores.dtype)
    return scores


def log_total_weight(log_weights, num_items, dtype):
    """``log sum_m w_m``: a Python float ``log M`` for uniform weights, else a tensor."""
    if log_weights is None:
        with ignore_jit_warnings():
            return math.log(int(num_items))
    return log_weights.to(dtype).logsumexp(-1)
