"""Shared machinery of distributions over the indices 0..M-1 of a bank or candidate set."""

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import lazy_property


class IndexDistribution(TorchDistribution):
    r"""A categorical distribution over indices with ``logits`` of shape ``batch_shape + (M,)``.

    Subclasses compute the logits from a critic or a bridge and keep those modules as plain
    attributes; this base class supplies sampling, validated ``log_prob`` that broadcasts over
    a leading enumeration dimension, ``enumerate_support`` for Pyro's enumeration, moments of
    the index, and ``expand``.
    """

    arg_constraints = {"logits": constraints.real_vector}
    has_enumerate_support = True

    def __init__(self, logits, *, validate_args=None):
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"logits must be a tensor, got {type(logits).__name__}")
        if logits.dim() < 1 or logits.shape[-1] == 0:
            raise ValueError(f"need at least one index, got logits of shape {tuple(logits.shape)}")
        # Normalize once; all-(-inf) rows (no admissible item) surface as a validation error.
        self.logits = logits - logits.logsumexp(-1, keepdim=True)
        super().__init__(logits.shape[:-1], torch.Size(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self.num_items - 1)

    @property
    def num_items(self):
        return self.logits.shape[-1]

    @lazy_property
    def probs(self):
        return self.logits.exp()

    @property
    def mean(self):
        index = torch.arange(self.num_items, dtype=self.probs.dtype)
        return (self.probs * index).sum(-1)

    @property
    def variance(self):
        index = torch.arange(self.num_items, dtype=self.probs.dtype)
        return (self.probs * (index - self.mean.unsqueeze(-1)) ** 2).sum(-1)

    def entropy(self):
        p_log_p = torch.where(self.probs > 0, self.probs * self.logits, 0.0)
        return -p_log_p.sum(-1)

    def sample(self, sample_shape=()):
        probs_2d = self.probs.reshape(-1, self.num_items)
        draws = torch.multinomial(probs_2d, int(torch.Size(sample_shape).numel()), True)
        return draws.T.reshape(torch.Size(sample_shape) + self.batch_shape)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        value = value.long().unsqueeze(-1)
        value, logits = torch.broadcast_tensors(value, self.logits)
        return logits.gather(-1, value[..., :1]).squeeze(-1)

    def enumerate_support(self, expand=True):
        values = torch.arange(self.num_items, dtype=torch.long, device=self.logits.device)
        values = values.view((-1,) + (1,) * len(self.batch_shape))
        if expand:
            values = values.expand((-1,) + self.batch_shape)
        return values

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        new.__dict__.update(
            {k: v for k, v in self.__dict__.items() if k not in ("logits", "probs")}
        )
        new.logits = self.logits.expand(batch_shape + (self.num_items,))
        self._expand_extra(new, batch_shape)
        TorchDistribution.__init__(new, batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _expand_extra(self, new, batch_shape):
        """Hook for subclasses that keep batched attributes besides ``logits``."""
