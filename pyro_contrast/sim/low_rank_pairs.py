r"""Paired modalities sharing a low-rank signal (the data model of Nakada et al.)."""

import math
import numbers

import torch

from pyro_contrast._validation import check_int, check_positive


class LowRankPairs:
    r"""Two modalities that share an r-dimensional latent through orthonormal loadings.

    .. math::

        z \sim \mathcal N(0, I_r), \qquad
        x = U_1 z + \xi, \qquad y = U_2 z + \zeta,

    with :math:`U_1 \in \mathbb R^{d_1 \times r}`, :math:`U_2 \in \mathbb R^{d_2 \times r}`
    orthonormal columns, :math:`\zeta \sim \mathcal N(0, \sigma^2 I)` and
    :math:`\xi \sim \mathcal N(0, \sigma^2 I + s^2 V V^\top)`: besides the isotropic noise,
    x may carry ``num_spikes`` strong noise directions :math:`V` (orthonormal, unrelated to
    the signal) of variance ``spike_scale**2``. With spikes stronger than the signal, x's own
    principal components are noise while the cross-covariance
    :math:`\mathbb E[x y^\top] = U_1 U_2^\top` still holds only the signal, which is why
    multimodal contrastive learning can beat unimodal learning.

    The defaults are the authors' simulation (:math:`d_1 = 40`, :math:`d_2 = 39`, r = 10,
    :math:`\sigma = 0.3`, no spikes). Population moments are exact (:attr:`cov_x`,
    :attr:`cov_y`, :attr:`cross_covariance`), and the top-r singular subspaces of the
    cross-covariance are :math:`\mathrm{col}(U_1)` and :math:`\mathrm{col}(U_2)`.

    :meth:`sample_unpaired` draws data with a *hidden* correspondence: every mini-batch of
    ``batch_size`` rows holds the partners of its own x rows, in a shuffled order that is
    returned only as ground truth (the setting of the paper's pseudo-pairing algorithm).

    **References**

    1. Nakada, Gulluk, Deng, Ji, Zou & Zhang (2023), *Understanding Multimodal Contrastive
       Learning and Incorporating Unpaired Data*, AISTATS.

    :param int dim_x: :math:`d_1` (≥ rank).
    :param int dim_y: :math:`d_2` (≥ rank).
    :param int rank: r, the dimension of the shared latent (≥ 1).
    :param float noise_scale: :math:`\sigma > 0`.
    :param int num_spikes: number of strong noise directions of x (≥ 0, ≤ dim_x - rank).
    :param float spike_scale: standard deviation :math:`s \ge 0` along each spike.
    :param int seed: seed of the loadings and of :meth:`sample`.

    >>> model = LowRankPairs(dim_x=6, dim_y=5, rank=2, seed=0)
    >>> x, y = model.sample(4)
    >>> x.shape, y.shape, model.cross_covariance.shape
    (torch.Size([4, 6]), torch.Size([4, 5]), torch.Size([6, 5]))
    """

    def __init__(
        self, dim_x=40, dim_y=39, rank=10, noise_scale=0.3, num_spikes=0, spike_scale=3.0, seed=0
    ):
        check_int(rank, "rank", 1)
        check_int(dim_x, "dim_x", rank)
        check_int(dim_y, "dim_y", rank)
        check_int(num_spikes, "num_spikes", 0)
        if num_spikes > dim_x - rank:
            raise ValueError(
                f"num_spikes must be at most dim_x - rank = {dim_x - rank}, got {num_spikes}"
            )
        check_positive(noise_scale, "noise_scale")
        if not (
            isinstance(spike_scale, numbers.Real)
            and math.isfinite(spike_scale)
            and spike_scale >= 0
        ):
            raise ValueError(f"spike_scale must be a non-negative number, got {spike_scale!r}")
        self.dim_x, self.dim_y, self.rank = int(dim_x), int(dim_y), int(rank)
        self.noise_scale, self.num_spikes = float(noise_scale), int(num_spikes)
        self.spike_scale, self.seed = float(spike_scale), seed
        g = torch.Generator().manual_seed(seed)
        self.loading_x = _orthonormal(self.dim_x, self.rank, g)
        self.loading_y = _orthonormal(self.dim_y, self.rank, g)
        self.spikes = _orthonormal(self.dim_x, self.num_spikes, g)
        eye_x = torch.eye(self.dim_x, dtype=torch.float64)
        self.noise_cov_x = (
            self.noise_scale**2 * eye_x + self.spike_scale**2 * self.spikes @ self.spikes.T
        )
        self._noise_tril_x = torch.linalg.cholesky(self.noise_cov_x)
        self._generator = torch.Generator().manual_seed(seed + 1)

    @property
    def cross_covariance(self):
        r""":math:`\mathbb E[x y^\top] = U_1 U_2^\top`, shape ``(dim_x, dim_y)`` (float64)."""
        return self.loading_x @ self.loading_y.T

    @property
    def cov_x(self):
        r"""Marginal covariance of x, :math:`U_1 U_1^\top + \Sigma_\xi` (float64)."""
        return self.loading_x @ self.loading_x.T + self.noise_cov_x

    @property
    def cov_y(self):
        r"""Marginal covariance of y, :math:`U_2 U_2^\top + \sigma^2 I` (float64)."""
        eye = torch.eye(self.dim_y, dtype=torch.float64)
        return self.loading_y @ self.loading_y.T + self.noise_scale**2 * eye

    def sample(self, num_samples, *, generator=None, dtype=torch.float32):
        """Draw ``num_samples`` pairs ``(x, y)``; without ``generator`` successive calls
        continue one reproducible sequence from ``seed``."""
        check_int(num_samples, "num_samples", 1)
        g = self._generator if generator is None else generator
        f64 = torch.float64
        z = torch.randn(num_samples, self.rank, generator=g, dtype=f64)
        noise_x = torch.randn(num_samples, self.dim_x, generator=g, dtype=f64)
        noise_y = torch.randn(num_samples, self.dim_y, generator=g, dtype=f64)
        x = z @ self.loading_x.T + noise_x @ self._noise_tril_x.T
        y = z @ self.loading_y.T + self.noise_scale * noise_y
        return x.to(dtype), y.to(dtype)

    def sample_unpaired(self, num_samples, batch_size, *, generator=None, dtype=torch.float32):
        """Draw data whose pairing is hidden inside consecutive mini-batches.

        Returns ``(x, y, partner)``: rows ``[k*batch_size, (k+1)*batch_size)`` of ``y`` are a
        random permutation of the partners of the same rows of ``x``, and
        ``y[partner[i]]`` is the partner of ``x[i]`` (ground truth, not for training).
        ``num_samples`` must be a multiple of ``batch_size``.
        """
        check_int(batch_size, "batch_size", 1)
        check_int(num_samples, "num_samples", 1)
        if num_samples % batch_size:
            raise ValueError(
                f"num_samples ({num_samples}) must be a multiple of batch_size ({batch_size})"
            )
        g = self._generator if generator is None else generator
        x, y = self.sample(num_samples, generator=g, dtype=dtype)
        blocks = num_samples // batch_size
        shuffle = torch.argsort(torch.rand(blocks, batch_size, generator=g), dim=1)
        order = (shuffle + batch_size * torch.arange(blocks)[:, None]).reshape(-1)
        partner = torch.argsort(order)
        return x, y[order], partner

    def __repr__(self):
        return (
            f"LowRankPairs(dim_x={self.dim_x}, dim_y={self.dim_y}, rank={self.rank}, "
            f"noise_scale={self.noise_scale}, num_spikes={self.num_spikes}, "
            f"spike_scale={self.spike_scale}, seed={self.seed})"
        )


def _orthonormal(dim, columns, g):
    # QR of a Gaussian matrix, signs fixed by R's diagonal: Haar-distributed columns.
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    q = q * torch.where(r.diagonal() < 0, -1.0, 1.0).to(q.dtype)
    return q[:, :columns].contiguous()
