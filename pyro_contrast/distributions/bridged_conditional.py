r"""The distribution over candidates of an unpaired modality, with the bridge marginalized."""

import torch

from pyro_contrast.distributions._index import IndexDistribution

_METHODS = ("exact", "lse", "direct", "analytic")


class BridgedConditional(IndexDistribution):
    r"""Distribution over candidate indices :math:`k` of modality C given a query from A,
    with the bridge modality integrated out.

    For ``method="exact"`` (the default) the log probability is the exact marginal of the
    tilted chain over the bridge's bank(s):

    .. math::

        p(c_k \mid a) = \sum_m p(b_m \mid a)\, p(c_k \mid b_m),

    computed as one log-space matrix product per hop, so a Pyro model that scores all
    :math:`N \times K` pairs never forms the :math:`N \times K \times M` tensor that
    enumerating the bank index would. It equals Pyro's ``TraceEnum_ELBO`` enumeration of
    the same model to float tolerance. The other methods (``"lse"``, ``"direct"``,
    ``"analytic"``) give the corresponding approximate conditionals, normalized over the
    candidates. Gradients flow to the queries and to the critics' parameters, so the
    distribution can be used under SVI or NUTS.

    References:

    1. Che & Eysenbach (2025), *The "Law" of the Unconscious Contrastive Learner:
       Probabilistic Alignment of Unpaired Modalities*.

    :param bridge: a :class:`~pyro_contrast.Bridge`.
    :param a: queries of shape ``batch_shape + (d,)`` (a tuple of such tensors for a
        fusion bridge).
    :param Tensor candidates: the K candidates of the last modality.
    :param str method: ``"exact"``, ``"lse"``, ``"direct"`` or ``"analytic"``.
    :param Tensor logits: instead of a bridge, log probabilities ``batch_shape + (K,)``
        directly (how Pyro's ``compute_marginals`` rebuilds enumerated sites).

    >>> import torch, pyro_contrast as pc
    >>> ab, bc = pc.Critic.from_embeddings(), pc.Critic.from_embeddings()
    >>> bridge = pc.Bridge([ab, bc], [pc.Bank(torch.randn(32, 4))])
    >>> d = bridge.conditional(torch.randn(3, 4), torch.randn(6, 4))
    >>> d.batch_shape, d.enumerate_support().shape
    (torch.Size([3]), torch.Size([6, 3]))
    """

    def __init__(
        self,
        bridge=None,
        a=None,
        candidates=None,
        method="exact",
        *,
        logits=None,
        validate_args=None,
    ):
        if logits is not None:
            if bridge is not None or a is not None or candidates is not None:
                raise ValueError("pass either logits= or (bridge, a, candidates), not both")
            self.bridge = self.a = self.candidates = None
            self.method = method
            super().__init__(logits, validate_args=validate_args)
            return
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        if not hasattr(bridge, "log_ratio"):
            raise TypeError(f"bridge must be a pyro_contrast.Bridge, got {type(bridge).__name__}")
        self.bridge = bridge
        self.a = a
        self.candidates = candidates
        self.method = method
        # Queries with several leading dims (nested plates) are scored as one flat batch.
        fused = isinstance(a, (tuple, list))
        first = a[0] if fused else a
        if not isinstance(first, torch.Tensor) or first.dim() < 1:
            raise ValueError("a must be a tensor (or tuple of tensors) of shape (..., d)")
        batch_shape = first.shape[:-1]
        if fused:
            flat = tuple(x.reshape(-1, x.shape[-1]) for x in a)
        else:
            flat = a.reshape(-1, a.shape[-1])
        logits = bridge.log_ratio(flat, candidates, method=method)
        super().__init__(
            logits.reshape(batch_shape + logits.shape[-1:]), validate_args=validate_args
        )
