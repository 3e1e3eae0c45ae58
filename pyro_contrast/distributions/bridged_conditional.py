r"""The distribution over candidates of an unpaired modality, with the bridge marginalized."""

from pyro_contrast.distributions._index import IndexDistribution


class BridgedConditional(IndexDistribution):
    r"""Distribution over candidate indices :math:`k` of modality C given a query from A,
    with the bridge modality integrated out.

    Its logits are a bridge's scores of the candidates,
    :math:`p(c_k \mid a) = \mathrm{softmax}_k\, s_k(a)`. With the exact scores of the tilted
    chain over the bridge's bank(s),

    .. math::

        p(c_k \mid a) = \sum_m p(b_m \mid a)\, p(c_k \mid b_m),

    computed by :meth:`pyro_contrast.Bridge.conditional` as one log-space matrix product per
    hop, a Pyro model that scores all :math:`N \times K` pairs never forms the
    :math:`N \times K \times M` tensor that enumerating the bank index would, and it equals
    ``TraceEnum_ELBO``'s enumeration of the same model to float tolerance. The approximate
    scores (``"lse"``, ``"direct"``, ``"analytic"``) give the corresponding approximate
    conditionals. Gradients flow through the logits to the queries and critics, so the
    distribution works under SVI and NUTS.

    It is a :class:`~pyro.distributions.Categorical` (``enumerate_support``, ``mode``,
    ``entropy``, KL divergence); ``mean`` and ``variance`` are those of the index. It takes
    logits, not a bridge: the bridge (a higher layer) computes them.

    References:

    1. Che & Eysenbach (2025), *The "Law" of the Unconscious Contrastive Learner:
       Probabilistic Alignment of Unpaired Modalities*.

    :param logits: log probabilities up to a constant, ``batch_shape + (K,)``, or a
        zero-argument callable returning them (called once, at construction).

    >>> import torch, pyro_contrast as pc
    >>> ab, bc = pc.Critic.from_embeddings(), pc.Critic.from_embeddings()
    >>> bridge = pc.Bridge([ab, bc], [pc.Bank(torch.randn(32, 4))], target_bank=torch.randn(256, 4))
    >>> a, candidates = torch.randn(3, 4), torch.randn(6, 4)
    >>> d = BridgedConditional(logits=bridge.log_ratio(a, candidates))
    >>> d.batch_shape, d.enumerate_support().shape
    (torch.Size([3]), torch.Size([6, 3]))
    """

    def __init__(self, logits, *, validate_args=None):
        if callable(logits):
            logits = logits()
        self._init_logits(logits, validate_args)
