"""Shared machinery of the categorical distributions over the indices 0..M-1 of a bank."""

import torch
from pyro.distributions import Categorical
from pyro.distributions.util import broadcast_shape

from pyro_contrast.distributions._jit import ignore_jit_warnings


class IndexDistribution(Categorical):
    r"""A :class:`~pyro.distributions.Categorical` over the indices of a bank or candidate set.

    Everything Pyro knows about a categorical (``log_prob`` broadcasting over an enumeration
    dimension, ``enumerate_support``, ``mode``, ``entropy``, the registered KL divergence,
    ``TraceEnum_ELBO`` and ``infer_discrete``) applies unchanged. On top of it, ``mean`` and
    ``variance`` are the moments of the index (a categorical's are undefined), and subclasses
    keep their conditioning inputs (critics, queries) as plain attributes, carried by
    :meth:`expand`.

    Subclasses compute logits and call :meth:`_init_logits`; :meth:`from_logits` builds an
    instance from logits directly (what Pyro's ``compute_marginals`` needs).
    """

    #: names of the plain (non-parameter) attributes a subclass stores, reset by from_logits
    _context_attributes = ()

    def _init_logits(self, logits, validate_args):
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"logits must be a tensor, got {type(logits).__name__}")
        with ignore_jit_warnings():
            if logits.dim() < 1 or logits.shape[-1] == 0:
                raise ValueError(
                    f"need at least one index, got logits of shape {tuple(logits.shape)}"
                )
        Categorical.__init__(self, logits=logits, validate_args=validate_args)

    @classmethod
    def from_logits(cls, logits, *, validate_args=None):
        """An instance with the given (unnormalized) log probabilities ``batch_shape + (M,)``.

        :param Tensor logits: log probabilities up to a constant per batch element.
        """
        new = cls.__new__(cls)
        for name in cls._context_attributes:
            setattr(new, name, None)
        new._init_logits(logits, validate_args)
        return new

    @property
    def num_items(self):
        """The number :math:`M` of indices."""
        return self._num_events

    @property
    def mean(self):
        index = torch.arange(self._num_events, dtype=self.probs.dtype, device=self.probs.device)
        return (self.probs * index).sum(-1)

    @property
    def variance(self):
        index = torch.arange(self._num_events, dtype=self.probs.dtype, device=self.probs.device)
        centred = index - self.mean.unsqueeze(-1)
        return (self.probs * centred.pow(2)).sum(-1)

    @classmethod
    def infer_shapes(cls, logits=None, **arg_shapes):
        if logits is None:
            raise NotImplementedError(f"{cls.__name__}.infer_shapes needs the shape of logits")
        return torch.Size(logits[:-1]), torch.Size()

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        for name in self._context_attributes:
            setattr(new, name, getattr(self, name, None))
        self._expand_context(new, batch_shape)
        # Categorical.expand copies the logits and re-runs the base initializer
        return super().expand(batch_shape, _instance=new)

    def _expand_context(self, new, batch_shape):
        """Hook for subclasses whose plain attributes carry the batch shape."""


def batch_shape_of(*shapes):
    """Broadcast batch shapes (a thin wrapper naming Pyro's strict broadcasting rule)."""
    return torch.Size(broadcast_shape(*shapes))
