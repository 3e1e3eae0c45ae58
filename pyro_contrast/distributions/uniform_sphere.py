r"""The uniform distribution on the unit sphere :math:`S^{d-1}`."""

import math
import numbers

import torch
from pyro.distributions import TorchDistribution, constraints


class UniformSphere(TorchDistribution):
    r"""Uniform distribution on the unit sphere :math:`S^{d-1} \subset \mathbb{R}^d`.

    .. math::

        \log p(x) = -\log|S^{d-1}| = -\log 2 - \tfrac{d}{2}\log\pi + \log\Gamma(d/2).

    The bridge marginal under which the direct cosine comparison ranks exactly like the true
    density ratio (:ref:`math-sphere-bridge`), and the :math:`\kappa = 0` limit of
    :class:`~pyro_contrast.distributions.vmf.VonMisesFisher`. Samples are normalized standard
    Gaussian vectors. Mean 0, variance :math:`1/d` per coordinate, entropy
    :math:`\log|S^{d-1}|`.

    **References**

    1. M. E. Muller (1959). A note on a method for generating points uniformly on
       n-dimensional spheres. *Communications of the ACM* 2(4), 19–20.

    :param int dim: ambient dimension :math:`d \ge 2`.
    :param tuple batch_shape: batch shape.
    :param torch.dtype dtype: floating dtype of samples and densities (default: torch's
        default dtype).

    >>> d = UniformSphere(3)
    >>> round(float(d.log_prob(torch.tensor([1.0, 0.0, 0.0]))), 4)  # -log(4 pi)
    -2.531
    """

    arg_constraints = {}
    support = constraints.sphere
    has_rsample = True

    def __init__(self, dim, batch_shape=(), *, dtype=None, validate_args=None):
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
            raise TypeError(f"dim must be an int, got {type(dim).__name__}")
        if dim < 2:
            raise ValueError(f"dim must be >= 2, got {dim}")
        batch_shape = torch.Size(batch_shape)
        if any(size < 0 for size in batch_shape):
            raise ValueError(f"batch_shape must be non-negative, got {tuple(batch_shape)}")
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype}")
        self.dim = int(dim)
        self.dtype = dtype
        super().__init__(batch_shape, torch.Size([self.dim]), validate_args=validate_args)

    @staticmethod
    def infer_shapes(dim, batch_shape=()):
        """Shapes from the *values* of ``dim`` and ``batch_shape`` (no tensor arguments)."""
        return torch.Size(batch_shape), torch.Size([int(dim)])

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(UniformSphere, _instance)
        batch_shape = torch.Size(batch_shape)
        # torch's rule: new dims on the left, existing dims of size != 1 unchanged
        if len(batch_shape) < len(self.batch_shape) or any(
            old != 1 and old != new_size
            for old, new_size in zip(
                reversed(self.batch_shape), reversed(batch_shape), strict=False
            )
        ):
            raise ValueError(f"cannot expand batch_shape {self.batch_shape} to {batch_shape}")
        new.dim, new.dtype = self.dim, self.dtype
        super(UniformSphere, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def log_area(self):
        """``log |S^{d-1}|``."""
        d = self.dim
        return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        x = torch.randn(shape, dtype=self.dtype)
        return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        return torch.full(shape, -self.log_area, dtype=self.dtype, device=value.device)

    @property
    def mode(self):
        """Every point is a mode: NaN, as torch does for flat densities."""
        return torch.full(self.batch_shape + self.event_shape, math.nan, dtype=self.dtype)

    @property
    def mean(self):
        return torch.zeros(self.batch_shape + self.event_shape, dtype=self.dtype)

    @property
    def variance(self):
        return torch.full(self.batch_shape + self.event_shape, 1.0 / self.dim, dtype=self.dtype)

    def entropy(self):
        return torch.full(self.batch_shape, self.log_area, dtype=self.dtype)
