r"""Che & Eysenbach's didactic Gaussian data A ← B → C, with their two ways of breaking
:math:`A \perp C \mid B`, and its exact log density ratios."""

import math
import numbers

import torch
from torch.distributions import MultivariateNormal

from pyro_contrast._validation import as_float_tensor, check_finite
from pyro_contrast.sim.linear_gaussian import _pairwise_gaussian

CORR_NOISE_SHAPES = ("vector", "scalar")


class DidacticChain:
    r"""The synthetic three-modality data of Che & Eysenbach's didactic experiments.

    .. math::

        B \sim \mathcal N(\mu, R^\top R), \qquad U \sim \mathcal N(\mu_U, R_U^\top R_U),

        A = \sqrt{1-\rho}\, M_A B + \sqrt{\rho}\, N_A U + \varepsilon_A + \eta, \qquad
        C = \sqrt{1-\rho}\, M_C B + \sqrt{\rho}\, N_C U + \varepsilon_C + \eta,

    with every entry of :math:`\mu, R, M_A, M_C, \mu_U, R_U, N_A, N_C` drawn from
    :math:`\mathcal U(-1, 1)`, :math:`\varepsilon \sim \mathcal N(0, s^2 I)` and a *correlated
    noise* :math:`\eta` shared by A and C. Two things break :math:`A \perp C \mid B`:

    - ``corr_noise`` (their :math:`\kappa`): :math:`\eta \sim \mathcal N(0, \kappa^2 I)`, one
      vector added to both A and C (``corr_noise_shape="vector"``, as in the authors' code),
      or :math:`\eta = \kappa z \mathbf 1` with a scalar :math:`z \sim \mathcal N(0, 1)`
      (``"scalar"``, as the paper describes it);
    - ``bypass`` (:math:`\rho \in [0, 1]`): the fraction of the A–C signal routed through a
      hidden :math:`U` instead of B; at :math:`\rho = 1` B is independent of A and C, so any
      estimator that bridges through B is at chance.

    Everything is jointly Gaussian, so every pointwise mutual information is a difference of
    Gaussian log densities: :meth:`log_ratio` (the Bayes-optimal score), :meth:`log_ratio_ab`
    and :meth:`log_ratio_bc` (perfect critics), and :meth:`log_ratio_bridged`, the large-bank
    limit of Lemma 1 with perfect critics,

    .. math::

        \log \frac{\int p(b \mid a)\, p(c \mid b)\, db}{p(c)}
        = \log \mathbb E_{p(b)}\!\left[\frac{p(b \mid a)}{p(b)} \frac{p(c \mid b)}{p(c)}
        \right],

    which equals :meth:`log_ratio` exactly when :math:`A \perp C \mid B`. Computations are in
    float64; parameters come from ``seed`` and :meth:`sample` continues one reproducible
    stream.

    References:

    1. Che & Eysenbach (2025), *The "Law" of the Unconscious Contrastive Learner:
       Probabilistic Alignment of Unpaired Modalities*, Sec. 6.1 and App. C.

    :param int dim_a: dimension of A (the paper: 32).
    :param int dim_b: dimension of B and U (the paper: 16).
    :param int dim_c: dimension of C (the paper: 32; must equal ``dim_a`` when
        ``corr_noise > 0`` with the vector shape).
    :param float noise_a: noise scale :math:`s_A` (the paper: 2).
    :param float noise_c: noise scale :math:`s_C` (the paper: 2).
    :param float corr_noise: scale :math:`\kappa \ge 0` of the noise shared by A and C.
    :param str corr_noise_shape: ``"vector"`` or ``"scalar"`` (see above).
    :param float bypass: :math:`\rho \in [0, 1]`.
    :param int seed: seed of the parameters and of :meth:`sample`.

    >>> chain = DidacticChain(dim_a=4, dim_b=2, dim_c=4, seed=0)
    >>> a, b, c = chain.sample(5)
    >>> chain.log_ratio(a, c).shape
    torch.Size([5, 5])
    """

    def __init__(
        self,
        dim_a=32,
        dim_b=16,
        dim_c=32,
        noise_a=2.0,
        noise_c=2.0,
        corr_noise=0.0,
        corr_noise_shape="vector",
        bypass=0.0,
        seed=0,
    ):
        for name, value in (("dim_a", dim_a), ("dim_b", dim_b), ("dim_c", dim_c)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("noise_a", noise_a), ("noise_c", noise_c)):
            if not _is_real(value) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not _is_real(corr_noise) or corr_noise < 0:
            raise ValueError(f"corr_noise must be a non-negative number, got {corr_noise!r}")
        if corr_noise_shape not in CORR_NOISE_SHAPES:
            raise ValueError(
                f"corr_noise_shape must be one of {CORR_NOISE_SHAPES}, got {corr_noise_shape!r}"
            )
        if corr_noise_shape == "vector" and corr_noise > 0 and dim_a != dim_c:
            raise ValueError("corr_noise_shape='vector' adds one vector to A and C: dim_a == dim_c")
        if not _is_real(bypass) or not 0 <= bypass <= 1:
            raise ValueError(f"bypass must be a number in [0, 1], got {bypass!r}")
        self.dim_a, self.dim_b, self.dim_c = int(dim_a), int(dim_b), int(dim_c)
        self.noise_a, self.noise_c = float(noise_a), float(noise_c)
        self.corr_noise, self.corr_noise_shape = float(corr_noise), corr_noise_shape
        self.bypass, self.seed = float(bypass), seed
        g = torch.Generator().manual_seed(seed)

        def uniform(*shape):
            return 2 * torch.rand(*shape, generator=g, dtype=torch.float64) - 1

        # The same draws in the same order for every corr_noise / bypass: one seed is one
        # problem, and the variants only change how A and C are formed from it.
        self.loc_b = uniform(self.dim_b)
        self.root_b = uniform(self.dim_b, self.dim_b)
        self.mix_a = uniform(self.dim_a, self.dim_b)
        self.mix_c = uniform(self.dim_c, self.dim_b)
        self.loc_u = uniform(self.dim_b)
        self.root_u = uniform(self.dim_b, self.dim_b)
        self.mix_ua = uniform(self.dim_a, self.dim_b)
        self.mix_uc = uniform(self.dim_c, self.dim_b)
        self.cov_b = self.root_b.T @ self.root_b
        self.cov_u = self.root_u.T @ self.root_u
        self._generator = torch.Generator().manual_seed(seed + 1)
        self._precompute()

    def __repr__(self):
        return (
            f"DidacticChain(dims=({self.dim_a}, {self.dim_b}, {self.dim_c}), noise="
            f"({self.noise_a:g}, {self.noise_c:g}), corr_noise={self.corr_noise:g} "
            f"[{self.corr_noise_shape}], bypass={self.bypass:g}, seed={self.seed})"
        )

    def _shared_cov(self, rows, cols):
        k2 = self.corr_noise**2
        if self.corr_noise_shape == "vector":
            return k2 * torch.eye(rows, cols, dtype=torch.float64)
        return k2 * torch.ones(rows, cols, dtype=torch.float64)

    def _precompute(self):
        sb, su = math.sqrt(1 - self.bypass), math.sqrt(self.bypass)
        ma, mc, ua, uc = self.mix_a, self.mix_c, self.mix_ua, self.mix_uc
        self.loc_a = sb * ma @ self.loc_b + su * ua @ self.loc_u
        self.loc_c = sb * mc @ self.loc_b + su * uc @ self.loc_u
        eye_a = torch.eye(self.dim_a, dtype=torch.float64)
        eye_c = torch.eye(self.dim_c, dtype=torch.float64)
        self.cov_aa = (
            sb**2 * ma @ self.cov_b @ ma.T
            + su**2 * ua @ self.cov_u @ ua.T
            + self.noise_a**2 * eye_a
            + self._shared_cov(self.dim_a, self.dim_a)
        )
        self.cov_cc = (
            sb**2 * mc @ self.cov_b @ mc.T
            + su**2 * uc @ self.cov_u @ uc.T
            + self.noise_c**2 * eye_c
            + self._shared_cov(self.dim_c, self.dim_c)
        )
        self.cov_ca = (
            sb**2 * mc @ self.cov_b @ ma.T
            + su**2 * uc @ self.cov_u @ ua.T
            + self._shared_cov(self.dim_c, self.dim_a)
        )
        self.cov_ab = sb * ma @ self.cov_b
        self.cov_cb = sb * mc @ self.cov_b
        # Conditionals x | y = N(loc_x + gain (y - loc_y), cov_x|y), one per ratio.
        self._c_given_a = _conditional(self.cov_cc, self.cov_ca, self.cov_aa)
        self._a_given_b = _conditional(self.cov_aa, self.cov_ab, self.cov_b)
        self._c_given_b = _conditional(self.cov_cc, self.cov_cb, self.cov_b)
        b_given_a = _conditional(self.cov_b, self.cov_ab.T, self.cov_aa)
        # Lemma 1's marginal: b | a, then c | b, both true conditionals.
        gain_cb, cov_c_b = self._c_given_b
        gain_ba, cov_b_a = b_given_a
        self._c_given_a_bridged = (gain_cb @ gain_ba, gain_cb @ cov_b_a @ gain_cb.T + cov_c_b)

    def joint(self):
        """The joint distribution of the concatenation ``(a, b, c)`` (a float64 Gaussian)."""
        loc = torch.cat([self.loc_a, self.loc_b, self.loc_c])
        cov = torch.cat(
            [
                torch.cat([self.cov_aa, self.cov_ab, self.cov_ca.T], 1),
                torch.cat([self.cov_ab.T, self.cov_b, self.cov_cb.T], 1),
                torch.cat([self.cov_ca, self.cov_cb, self.cov_cc], 1),
            ]
        )
        return MultivariateNormal(loc, covariance_matrix=cov)

    def sample(self, num_samples, dtype=torch.float32):
        """Draw ``num_samples`` triplets ``(a, b, c)`` (a reproducible stream from ``seed``)."""
        if (
            not isinstance(num_samples, numbers.Integral)
            or isinstance(num_samples, bool)
            or num_samples < 1
        ):
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        g, n, f64 = self._generator, int(num_samples), torch.float64
        sb, su = math.sqrt(1 - self.bypass), math.sqrt(self.bypass)
        b = self.loc_b + torch.randn(n, self.dim_b, generator=g, dtype=f64) @ self.root_b
        u = self.loc_u + torch.randn(n, self.dim_b, generator=g, dtype=f64) @ self.root_u
        eps_a = self.noise_a * torch.randn(n, self.dim_a, generator=g, dtype=f64)
        eps_c = self.noise_c * torch.randn(n, self.dim_c, generator=g, dtype=f64)
        width = self.dim_a if self.corr_noise_shape == "vector" else 1
        shared = self.corr_noise * torch.randn(n, width, generator=g, dtype=f64)
        a = sb * b @ self.mix_a.T + su * u @ self.mix_ua.T + eps_a + shared
        c = sb * b @ self.mix_c.T + su * u @ self.mix_uc.T + eps_c + shared
        return a.to(dtype), b.to(dtype), c.to(dtype)

    def log_ratio(self, a, c):
        r"""Exact :math:`\log p(c_k \mid a_n) - \log p(c_k)`, shape (N, K)."""
        a, c = self._check(a, "a", self.dim_a), self._check(c, "c", self.dim_c)
        return _ratio(c, a, self.loc_c, self.loc_a, self._c_given_a, self.cov_cc)

    def log_ratio_ab(self, a, b):
        r"""Exact :math:`\log p(a_n \mid b_m) - \log p(a_n)`, shape (N, M)."""
        a, b = self._check(a, "a", self.dim_a), self._check(b, "b", self.dim_b)
        return _ratio(a, b, self.loc_a, self.loc_b, self._a_given_b, self.cov_aa).T

    def log_ratio_bc(self, b, c):
        r"""Exact :math:`\log p(c_k \mid b_m) - \log p(c_k)`, shape (M, K)."""
        b, c = self._check(b, "b", self.dim_b), self._check(c, "c", self.dim_c)
        return _ratio(c, b, self.loc_c, self.loc_b, self._c_given_b, self.cov_cc)

    def log_ratio_bridged(self, a, c):
        r"""Lemma 1's :math:`\log \int p(b \mid a) p(c_k \mid b)\, db - \log p(c_k)` with the
        true conditionals, shape (N, K): the best any estimator bridging through B can do."""
        a, c = self._check(a, "a", self.dim_a), self._check(c, "c", self.dim_c)
        return _ratio(c, a, self.loc_c, self.loc_a, self._c_given_a_bridged, self.cov_cc)

    def _check(self, x, name, dim):
        x = check_finite(as_float_tensor(x, name), name)
        if x.dim() != 2 or x.shape[1] != dim:
            raise ValueError(f"{name} must have shape (N, {dim}), got {tuple(x.shape)}")
        return x.to(torch.float64)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _conditional(cov_xx, cov_xy, cov_yy):
    """``(gain, cov)`` of x | y for a jointly Gaussian (x, y)."""
    gain = torch.linalg.solve(cov_yy, cov_xy.T).T
    cov = cov_xx - gain @ cov_xy.T
    return gain, 0.5 * (cov + cov.T)


def _ratio(x, y, loc_x, loc_y, conditional, cov_xx):
    """``log N(x_k; loc_x + gain (y_n - loc_y), cov) - log N(x_k; loc_x, cov_xx)``, (N, K)."""
    gain, cov = conditional
    locs = loc_x + (y - loc_y) @ gain.T
    return _pairwise_gaussian(x, locs, cov) - _pairwise_gaussian(x, loc_x.unsqueeze(0), cov_xx)
