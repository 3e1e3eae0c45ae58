r"""The linear-Gaussian chain A – B – C: a simulator whose bridged answer is known exactly."""

import math
import numbers

import pyro
import pyro.distributions as dist
import torch

from pyro_contrast._validation import as_float_tensor, check_finite


class LinearGaussianChain:
    r"""Three modalities linked through a Gaussian bridge, with a closed-form truth.

    .. math::

        B \sim \mathcal N(\mu, \Sigma_B), \quad
        A = M_A B + \rho N_A U + \varepsilon_A, \quad
        C = M_C B + \rho N_C U + \varepsilon_C,

    with :math:`\varepsilon \sim \mathcal N(0, s^2 I)` and an optional hidden confounder
    :math:`U \sim \mathcal N(0, I)` shared by A and C (weight ``rho``), which breaks
    :math:`A \perp C \mid B`. Everything is jointly Gaussian, so the pointwise mutual
    information of any pair is a difference of Gaussian log densities (:ref:`math-linear-gaussian`):

    .. math::

        \mathrm{PMI}(a, c) = \log \mathcal N(c; m_{c|a}, \Sigma_{c|a})
        - \log \mathcal N(c; M_C \mu, \Sigma_{CC}).

    The default :math:`\Sigma_B` is anisotropic and :math:`\mu \ne 0`, so the bridge's
    representations are not uniform and the direct shortcut is not exact. All parameters
    are drawn from ``seed``; computations are in float64.

    References:

    1. Che & Eysenbach (2025), *The "Law" of the Unconscious Contrastive Learner*.

    :param int dim_a: dimension of A.
    :param int dim_b: dimension of B.
    :param int dim_c: dimension of C.
    :param float noise_a: noise scale :math:`s_A`.
    :param float noise_c: noise scale :math:`s_C`.
    :param float rho: weight of the hidden confounder (0 keeps :math:`A \perp C \mid B`).
    :param int dim_u: dimension of the confounder.
    :param int seed: seed of the parameters and of :meth:`sample`.

    >>> chain = LinearGaussianChain(dim_a=3, dim_b=2, dim_c=3, seed=0)
    >>> a, b, c = chain.sample(5)
    >>> chain.log_ratio(a, c).shape
    torch.Size([5, 5])
    """

    def __init__(
        self, dim_a=8, dim_b=4, dim_c=8, noise_a=0.5, noise_c=0.5, rho=0.0, dim_u=None, seed=0
    ):
        for name, value in (("dim_a", dim_a), ("dim_b", dim_b), ("dim_c", dim_c)):
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("noise_a", noise_a), ("noise_c", noise_c)):
            if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not (isinstance(rho, numbers.Real) and math.isfinite(rho) and rho >= 0):
            raise ValueError(f"rho must be a non-negative number, got {rho!r}")
        self.dim_a, self.dim_b, self.dim_c = int(dim_a), int(dim_b), int(dim_c)
        self.dim_u = int(dim_u) if dim_u is not None else min(self.dim_a, self.dim_c)
        self.noise_a, self.noise_c, self.rho, self.seed = (
            float(noise_a),
            float(noise_c),
            float(rho),
            seed,
        )
        g = torch.Generator().manual_seed(seed)
        f64 = torch.float64
        q, _ = torch.linalg.qr(torch.randn(self.dim_b, self.dim_b, generator=g, dtype=f64))
        spectrum = torch.linspace(0.25, 2.0, self.dim_b, dtype=f64)
        self.loc_b = 0.5 * torch.randn(self.dim_b, generator=g, dtype=f64)
        self.cov_b = q @ torch.diag(spectrum) @ q.T
        self.mix_a = torch.randn(self.dim_a, self.dim_b, generator=g, dtype=f64) / self.dim_b**0.5
        self.mix_c = torch.randn(self.dim_c, self.dim_b, generator=g, dtype=f64) / self.dim_b**0.5
        self.conf_a = torch.randn(self.dim_a, self.dim_u, generator=g, dtype=f64) / self.dim_u**0.5
        self.conf_c = torch.randn(self.dim_c, self.dim_u, generator=g, dtype=f64) / self.dim_u**0.5
        self._generator = torch.Generator().manual_seed(seed + 1)
        self._precompute()

    def _precompute(self):
        eye_a, eye_c = (
            torch.eye(self.dim_a, dtype=torch.float64),
            torch.eye(self.dim_c, dtype=torch.float64),
        )
        r2 = self.rho**2
        self.noise_cov_a = r2 * self.conf_a @ self.conf_a.T + self.noise_a**2 * eye_a
        self.noise_cov_c = r2 * self.conf_c @ self.conf_c.T + self.noise_c**2 * eye_c
        self.cov_aa = self.mix_a @ self.cov_b @ self.mix_a.T + self.noise_cov_a
        self.cov_cc = self.mix_c @ self.cov_b @ self.mix_c.T + self.noise_cov_c
        self.cov_ca = self.mix_c @ self.cov_b @ self.mix_a.T + r2 * self.conf_c @ self.conf_a.T
        self.loc_a, self.loc_c = self.mix_a @ self.loc_b, self.mix_c @ self.loc_b
        self.gain_ca = torch.linalg.solve(self.cov_aa, self.cov_ca.T).T
        self.cov_c_given_a = self.cov_cc - self.gain_ca @ self.cov_ca.T

    def model(self, num_samples):
        """The generative process as a Pyro model; returns ``(a, b, c)``."""
        f64 = torch.float64
        with pyro.plate("samples", num_samples):
            b = pyro.sample("b", dist.MultivariateNormal(self.loc_b, self.cov_b))
            u = pyro.sample("u", dist.Normal(torch.zeros(self.dim_u, dtype=f64), 1.0).to_event(1))
            a = pyro.sample(
                "a",
                dist.Normal(b @ self.mix_a.T + self.rho * u @ self.conf_a.T, self.noise_a).to_event(
                    1
                ),
            )
            c = pyro.sample(
                "c",
                dist.Normal(b @ self.mix_c.T + self.rho * u @ self.conf_c.T, self.noise_c).to_event(
                    1
                ),
            )
        return a, b, c

    def sample(self, num_samples, dtype=torch.float32):
        """Draw ``num_samples`` triplets ``(a, b, c)`` (reproducible sequence from ``seed``)."""
        if not isinstance(num_samples, numbers.Integral) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        g, n, f64 = self._generator, int(num_samples), torch.float64
        chol = torch.linalg.cholesky(self.cov_b)
        b = self.loc_b + torch.randn(n, self.dim_b, generator=g, dtype=f64) @ chol.T
        u = torch.randn(n, self.dim_u, generator=g, dtype=f64)
        a = (
            b @ self.mix_a.T
            + self.rho * u @ self.conf_a.T
            + self.noise_a * torch.randn(n, self.dim_a, generator=g, dtype=f64)
        )
        c = (
            b @ self.mix_c.T
            + self.rho * u @ self.conf_c.T
            + self.noise_c * torch.randn(n, self.dim_c, generator=g, dtype=f64)
        )
        return a.to(dtype), b.to(dtype), c.to(dtype)

    def log_ratio(self, a, c):
        r"""Exact :math:`\mathrm{PMI}(a_n, c_k) = \log p(c_k|a_n) - \log p(c_k)`, (N, K)."""
        a = self._check(a, "a", self.dim_a)
        c = self._check(c, "c", self.dim_c)
        cond_loc = self.loc_c + (a - self.loc_a) @ self.gain_ca.T
        return _pairwise_gaussian(c, cond_loc, self.cov_c_given_a) - _pairwise_gaussian(
            c, self.loc_c.unsqueeze(0), self.cov_cc
        )

    def log_ratio_ab(self, a, b):
        r"""Exact :math:`\mathrm{PMI}(a_n, b_m) = \log p(a_n|b_m) - \log p(a_n)`, (N, M)."""
        a = self._check(a, "a", self.dim_a)
        b = self._check(b, "b", self.dim_b)
        return (
            _pairwise_gaussian(a, b @ self.mix_a.T, self.noise_cov_a).T
            - _pairwise_gaussian(a, self.loc_a.unsqueeze(0), self.cov_aa).T
        )

    def log_ratio_bc(self, b, c):
        r"""Exact :math:`\mathrm{PMI}(b_m, c_k) = \log p(c_k|b_m) - \log p(c_k)`, (M, K)."""
        b = self._check(b, "b", self.dim_b)
        c = self._check(c, "c", self.dim_c)
        return _pairwise_gaussian(c, b @ self.mix_c.T, self.noise_cov_c) - _pairwise_gaussian(
            c, self.loc_c.unsqueeze(0), self.cov_cc
        )

    def _check(self, x, name, dim):
        x = check_finite(as_float_tensor(x, name), name)
        if x.dim() != 2 or x.shape[1] != dim:
            raise ValueError(f"{name} must have shape (N, {dim}), got {tuple(x.shape)}")
        return x.to(torch.float64)


def _pairwise_gaussian(values, locs, cov):
    r"""``log N(values[k]; locs[n], cov)`` for all (n, k) as an (N, K) matrix, by expanding the
    quadratic form into GEMMs instead of forming N x K x d residuals."""
    chol = torch.linalg.cholesky(cov)
    wv = torch.linalg.solve_triangular(chol, values.T, upper=False).T
    wl = torch.linalg.solve_triangular(chol, locs.T, upper=False).T
    sq = (wl.pow(2).sum(-1, keepdim=True) + wv.pow(2).sum(-1) - 2 * wl @ wv.T).clamp(min=0)
    log_det = 2 * chol.diagonal().log().sum()
    return -0.5 * (sq + log_det + values.shape[-1] * math.log(2 * math.pi))
