r"""The conditional distribution a critic defines over a bank."""

import torch

from pyro_contrast._validation import as_float_tensor, check_finite
from pyro_contrast.critics import Critic
from pyro_contrast.distributions._index import IndexDistribution


class ContrastiveConditional(IndexDistribution):
    r"""Distribution over bank indices defined by a critic: the tilted conditional.

    A critic at the InfoNCE optimum tilts the product of marginals, so over a bank
    :math:`\{y_m\}_{m=1}^M \sim p(y)` with weights :math:`w_m` (Baptista, Stuart & Tran):

    .. math::

        p(m \mid x) = \frac{w_m \exp f(x, y_m)}{\sum_{m'} w_{m'} \exp f(x, y_{m'})}.

    The batch shape is the leading shape of the encoded ``x``; the event is one index. It
    supports ``enumerate_support`` and broadcasts ``log_prob`` over a leading enumeration
    dimension, so a bank index can be summed out exactly by ``TraceEnum_ELBO`` or recovered
    by ``infer_discrete``. The critic is a plain attribute (not a distribution parameter).

    References:

    1. Baptista, Stuart & Tran (2025), *A Mathematical Perspective on Contrastive Learning*.
    2. Che & Eysenbach (2025), *The "Law" of the Unconscious Contrastive Learner*.

    :param Critic critic: the critic :math:`f`.
    :param Tensor x: conditioning inputs, encoded by ``critic.encode_x`` to ``(..., d)``.
    :param Tensor bank: bank of ``M`` inputs of the second modality (``critic.encode_y``).
    :param Tensor log_weights: optional (M,) log weights of the bank items.
    :param Tensor logits: instead of a critic, the (unnormalized) log probabilities
        ``batch_shape + (M,)`` directly; Pyro's ``compute_marginals`` rebuilds enumerated
        sites this way.

    >>> critic = Critic.from_embeddings("cosine", temperature=0.1)
    >>> d = ContrastiveConditional(critic, torch.randn(4, 8), torch.randn(10, 8))
    >>> d.batch_shape, d.sample().shape
    (torch.Size([4]), torch.Size([4]))
    """

    def __init__(
        self, critic=None, x=None, bank=None, log_weights=None, *, logits=None, validate_args=None
    ):
        if logits is not None:
            if critic is not None or x is not None or bank is not None:
                raise ValueError("pass either logits= or (critic, x, bank), not both")
            self.critic = self.x = self.bank = self.log_weights = None
            super().__init__(logits, validate_args=validate_args)
            return
        if not isinstance(critic, Critic):
            raise TypeError(f"critic must be a pyro_contrast.Critic, got {type(critic).__name__}")
        bank = check_finite(as_float_tensor(bank, "bank"), "bank")
        if bank.dim() < 1 or bank.shape[0] == 0:
            raise ValueError(f"bank must be a non-empty batch of items, got {tuple(bank.shape)}")
        embedded_x = critic.encode_x(x)
        if embedded_x.dim() < 1:
            raise ValueError("x must be encoded to (..., d), got a scalar")
        batch_shape = embedded_x.shape[:-1]
        flat = critic.pairwise_embeddings(
            embedded_x.reshape(-1, embedded_x.shape[-1]), critic.encode_y(bank)
        )
        logits = flat.reshape(batch_shape + (bank.shape[0],))
        if log_weights is not None:
            log_weights = as_float_tensor(log_weights, "log_weights")
            if log_weights.shape != (bank.shape[0],):
                raise ValueError(
                    f"log_weights must have shape ({bank.shape[0]},), got "
                    f"{tuple(log_weights.shape)}"
                )
            if torch.isnan(log_weights).any():
                raise ValueError("log_weights contains NaN")
            logits = logits + log_weights.to(logits.dtype)
        self.critic = critic
        self.x = x
        self.bank = bank
        self.log_weights = log_weights
        super().__init__(logits, validate_args=validate_args)

    def _expand_extra(self, new, batch_shape):
        # Keep x consistent with the batch when it is already an embedding batch.
        if isinstance(self.x, torch.Tensor) and self.x.shape[:-1] == self.batch_shape:
            new.x = self.x.expand(batch_shape + self.x.shape[-1:])
