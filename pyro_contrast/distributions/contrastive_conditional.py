r"""The conditional distribution a critic defines over the items of a bank."""

import torch

from pyro_contrast.critics import Critic
from pyro_contrast.distributions._bank import (
    bank_scores,
    check_bank,
    encode,
    resolve_bank,
    validating,
)
from pyro_contrast.distributions._index import IndexDistribution


class ContrastiveConditional(IndexDistribution):
    r"""Distribution over bank indices defined by a critic: the tilted conditional.

    A critic at the InfoNCE optimum tilts the product of marginals, so over a bank
    :math:`\{y_m\}_{m=1}^M \sim p(y)` with weights :math:`w_m` (Baptista, Stuart & Tran):

    .. math::

        p(m \mid x) = \frac{w_m \exp f(x, y_m)}{\sum_{m'} w_{m'} \exp f(x, y_{m'})}.

    It is a :class:`~pyro.distributions.Categorical` (``enumerate_support``, ``mode``,
    ``entropy``, the registered KL divergence, ``TraceEnum_ELBO``, ``infer_discrete``), so a
    bank index can be summed out exactly or recovered from a posterior; ``mean`` and
    ``variance`` are those of the index. The batch shape is the leading shape of the encoded
    ``x``; the critic is a plain attribute (not a distribution parameter). Any term of
    :math:`f` in :math:`x` alone cancels. The item itself (not its index) as a random variable
    is :class:`~pyro_contrast.distributions.TiltedConditional`.

    :meth:`from_logits` builds one from logits directly; the keyword ``logits=`` of the
    constructor does the same and exists because Pyro's ``compute_marginals`` and
    ``infer_discrete`` rebuild an enumerated site as ``type(fn)(logits=...)``.

    References:

    1. Baptista, Stuart & Tran (2025), *A Mathematical Perspective on Contrastive Learning*.
    2. Che & Eysenbach (2025), *The "Law" of the Unconscious Contrastive Learner*.

    :param Critic critic: the critic :math:`f`.
    :param Tensor x: conditioning inputs, encoded by ``critic.encoder_x`` to ``(..., d)``.
    :param bank: the ``M`` items of the second modality (encoded by ``critic.encoder_y``): a
        tensor, or a single-view :class:`~pyro_contrast.Bank` (its ``log_weights`` are used).
    :param Tensor log_weights: optional (M,) unnormalized log weights of a tensor bank.
    :param Tensor logits: instead of a critic, log probabilities ``batch_shape + (M,)``.

    >>> critic = Critic.from_embeddings("cosine", temperature=0.1)
    >>> d = ContrastiveConditional(critic, torch.randn(4, 8), torch.randn(10, 8))
    >>> d.batch_shape, d.sample().shape, d.enumerate_support().shape
    (torch.Size([4]), torch.Size([4]), torch.Size([10, 4]))
    """

    _context_attributes = ("critic", "x", "bank", "log_weights")

    def __init__(
        self, critic=None, x=None, bank=None, log_weights=None, *, logits=None, validate_args=None
    ):
        if logits is not None:
            if any(arg is not None for arg in (critic, x, bank, log_weights)):
                raise ValueError("pass either logits= or (critic, x, bank), not both")
            self.critic = self.x = self.bank = self.log_weights = None
            self._init_logits(logits, validate_args)
            return
        self.critic, self.x, self.bank = critic, x, bank
        logits, self.log_weights = self.critic_logits(
            critic, x, bank, log_weights, validate_args=validate_args
        )
        self._init_logits(logits, validate_args)

    @staticmethod
    def critic_logits(critic, x, bank, log_weights=None, *, validate_args=None):
        r"""The unnormalized logits :math:`f(x, y_m) + \log w_m`, shape ``batch_shape + (M,)``.

        :returns: ``(logits, log_weights)`` with the log weights actually used (``None`` if
            uniform).
        """
        if not isinstance(critic, Critic):
            raise TypeError(f"critic must be a pyro_contrast.Critic, got {type(critic).__name__}")
        items, bank_weights = resolve_bank(bank)
        if log_weights is not None and bank_weights is not None:
            raise ValueError("the bank carries log_weights already; do not pass log_weights")
        if log_weights is None:
            log_weights = bank_weights
        if log_weights is not None and not isinstance(log_weights, torch.Tensor):
            raise TypeError(f"log_weights must be a tensor, got {type(log_weights).__name__}")
        validate = validating(validate_args)
        if validate:
            check_bank(items, log_weights)
        embedded_x = encode(critic, "x", x, validate)
        if embedded_x.dim() < 1:
            raise ValueError("x must be encoded to (..., d), got a scalar")
        embedded_bank = encode(critic, "y", items, validate)
        return bank_scores(critic, embedded_x, embedded_bank, log_weights), log_weights

    @classmethod
    def infer_shapes(cls, critic=None, x=None, bank=None, log_weights=None, logits=None):
        """Batch and event shapes from the shapes of ``x`` (encoders keep leading dims)."""
        if logits is not None:
            return torch.Size(logits[:-1]), torch.Size()
        if x is None:
            raise NotImplementedError("ContrastiveConditional.infer_shapes needs x or logits")
        return torch.Size(x[:-1]), torch.Size()

    def _expand_context(self, new, batch_shape):
        # Keep x consistent with the batch when it is an embedding batch of the batch shape.
        if isinstance(self.x, torch.Tensor) and self.x.shape[:-1] == self.batch_shape:
            new.x = self.x.expand(batch_shape + self.x.shape[-1:])
