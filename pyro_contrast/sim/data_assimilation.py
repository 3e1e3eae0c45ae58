r"""Data-assimilation simulators: a linear-Gaussian field with its exact Kalman posterior, and
the Lorenz-96 model observed after a short forecast."""

import math
import numbers

import torch

from pyro_contrast._validation import check_int, check_positive


class LinearGaussianObservations:
    r"""A Gaussian random field on a periodic grid, observed at a few points with noise.

    .. math::

        x \sim \mathcal N(0, C), \qquad y = H x + \eta, \quad \eta \sim \mathcal N(0, \gamma^2 I),

    with :math:`C_{ij} = \sigma^2 \exp(-2 \sin^2(\pi (i - j)/d) / \ell^2)` (a smooth periodic
    covariance, :math:`\ell` in units of the circle's radius) and :math:`H` selecting every
    ``obs_every``-th grid point. Everything is linear-Gaussian, so the posterior is the
    Kalman update, exactly:

    .. math::

        K = C H^\top (H C H^\top + \gamma^2 I)^{-1}, \quad
        x \mid y \sim \mathcal N(K y,\; C - K H C).

    **References**

    1. Baptista, Stuart & Tran (2025), *A Mathematical Perspective on Contrastive Learning*
       (data assimilation as a bimodal problem: state and observations).
    2. Kalman (1960), *A New Approach to Linear Filtering and Prediction Problems*.

    :param int dim: number of grid points d (≥ 2).
    :param int obs_every: observe grid points 0, k, 2k, ... (1 ≤ k ≤ d).
    :param float obs_noise: :math:`\gamma > 0`.
    :param float length_scale: :math:`\ell > 0`.
    :param float prior_scale: :math:`\sigma > 0`.
    :param int seed: seed of :meth:`sample`.

    >>> model = LinearGaussianObservations(dim=8, obs_every=4)
    >>> x, y = model.sample(3)
    >>> mean, cov = model.posterior(y)
    >>> x.shape, y.shape, mean.shape, cov.shape
    (torch.Size([3, 8]), torch.Size([3, 2]), torch.Size([3, 8]), torch.Size([8, 8]))
    """

    def __init__(
        self, dim=40, obs_every=4, obs_noise=0.3, length_scale=0.5, prior_scale=1.0, seed=0
    ):
        check_int(dim, "dim", 2)
        check_int(obs_every, "obs_every", 1)
        if obs_every > dim:
            raise ValueError(f"obs_every must be at most dim={dim}, got {obs_every}")
        for name, value in (
            ("obs_noise", obs_noise),
            ("length_scale", length_scale),
            ("prior_scale", prior_scale),
        ):
            check_positive(value, name)
        self.dim, self.obs_every, self.seed = int(dim), int(obs_every), seed
        self.obs_noise, self.length_scale = float(obs_noise), float(length_scale)
        self.prior_scale = float(prior_scale)
        f64 = torch.float64
        grid = torch.arange(self.dim, dtype=f64)
        angle = math.pi * (grid[:, None] - grid[None, :]) / self.dim
        cov = self.prior_scale**2 * torch.exp(-2 * torch.sin(angle) ** 2 / self.length_scale**2)
        # A smooth kernel is numerically rank-deficient: a tiny nugget keeps C positive
        # definite (it is part of the model, so the posterior stays exact).
        #: prior covariance C, (d, d) float64.
        self.prior_cov = cov + 1e-6 * self.prior_scale**2 * torch.eye(self.dim, dtype=f64)
        #: observation operator H, (m, d) float64.
        self.obs_operator = torch.eye(self.dim, dtype=f64)[:: self.obs_every]
        self._prior_tril = torch.linalg.cholesky(self.prior_cov)
        innovation = (
            self.obs_operator @ self.prior_cov @ self.obs_operator.T
            + self.obs_noise** 2 * torch.eye(self.obs_dim, dtype=f64)
        )
        #: Kalman gain K, (d, m) float64.
        self.gain = torch.linalg.solve(innovation, self.obs_operator @ self.prior_cov).T
        #: exact posterior covariance C - K H C (the same for every y), (d, d) float64.
        self.posterior_cov = self.prior_cov - self.gain @ self.obs_operator @ self.prior_cov
        self.posterior_cov = 0.5 * (self.posterior_cov + self.posterior_cov.T)
        self._generator = torch.Generator().manual_seed(seed)

    @property
    def obs_dim(self):
        """Number m of observed grid points."""
        return self.obs_operator.shape[0]

    def sample(self, num_samples, *, generator=None, dtype=torch.float32):
        """Draw ``num_samples`` pairs ``(x, y)`` (state, observation)."""
        check_int(num_samples, "num_samples", 1)
        g = self._generator if generator is None else generator
        f64 = torch.float64
        x = torch.randn(num_samples, self.dim, generator=g, dtype=f64) @ self._prior_tril.T
        noise = torch.randn(num_samples, self.obs_dim, generator=g, dtype=f64)
        y = x @ self.obs_operator.T + self.obs_noise * noise
        return x.to(dtype), y.to(dtype)

    def posterior(self, y):
        """Exact posterior ``(mean, covariance)`` of x given observations ``y`` (..., m):
        means of shape (..., d) and the (d, d) covariance, in float64."""
        y = torch.as_tensor(y)
        if y.shape[-1] != self.obs_dim:
            raise ValueError(
                f"y must end in the observation dimension {self.obs_dim}, got "
                f"shape {tuple(y.shape)}"
            )
        return y.to(torch.float64) @ self.gain.T, self.posterior_cov


class Lorenz96:
    r"""The Lorenz-96 model, observed at a few sites after a short forecast.

    .. math::

        \frac{dx_i}{dt} = (x_{i+1} - x_{i-2})\, x_{i-1} - x_i + F, \qquad i \in \mathbb Z_d,

    integrated with fourth-order Runge–Kutta (step ``dt``). States are drawn from the
    attractor (a spun-up ensemble), and an observation of state :math:`x` is
    :math:`y = H\, M_\Delta(x) + \eta`, :math:`\eta \sim \mathcal N(0, \gamma^2 I)`: the
    sites ``0, k, 2k, ...`` of the state a lead time :math:`\Delta` later. The map
    :math:`x \mapsto y` is nonlinear and the prior non-Gaussian, so the posterior has no
    closed form; :meth:`log_likelihood` is exact and serves importance-sampling references.

    **References**

    1. Lorenz (1996), *Predictability — a problem partly solved*.
    2. Baptista, Stuart & Tran (2025), *A Mathematical Perspective on Contrastive Learning*.

    :param int dim: number of sites d (≥ 4).
    :param float forcing: :math:`F`.
    :param int obs_every: observe sites 0, k, 2k, ... (1 ≤ k ≤ d).
    :param float obs_noise: :math:`\gamma > 0`.
    :param float lead_time: :math:`\Delta \ge 0`.
    :param float dt: Runge–Kutta step (> 0).
    :param int seed: seed of the attractor samples and observation noise.

    >>> model = Lorenz96(dim=8, obs_every=4)
    >>> x, y = model.sample(5)
    >>> x.shape, y.shape, model.log_likelihood(y, x).shape
    (torch.Size([5, 8]), torch.Size([5, 2]), torch.Size([5, 5]))
    """

    def __init__(
        self, dim=20, forcing=8.0, obs_every=4, obs_noise=1.0, lead_time=0.1, dt=0.01, seed=0
    ):
        check_int(dim, "dim", 4)
        check_int(obs_every, "obs_every", 1)
        if obs_every > dim:
            raise ValueError(f"obs_every must be at most dim={dim}, got {obs_every}")
        if not (isinstance(forcing, numbers.Real) and math.isfinite(forcing)):
            raise ValueError(f"forcing must be a finite number, got {forcing!r}")
        check_positive(obs_noise, "obs_noise")
        check_positive(dt, "dt")
        if not (
            isinstance(lead_time, numbers.Real) and math.isfinite(lead_time) and lead_time >= 0
        ):
            raise ValueError(f"lead_time must be a non-negative number, got {lead_time!r}")
        self.dim, self.forcing, self.obs_every = int(dim), float(forcing), int(obs_every)
        self.obs_noise, self.lead_time, self.dt = float(obs_noise), float(lead_time), float(dt)
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)

    @property
    def obs_dim(self):
        """Number m of observed sites."""
        return len(range(0, self.dim, self.obs_every))

    def tendency(self, x):
        """The right-hand side :math:`dx/dt` at states ``x`` of shape (..., d)."""
        return (
            (torch.roll(x, -1, -1) - torch.roll(x, 2, -1)) * torch.roll(x, 1, -1) - x + self.forcing
        )

    def integrate(self, x, duration):
        """Advance states ``x`` (..., d) by ``duration`` with RK4 steps of at most ``dt``."""
        steps = math.ceil(round(duration / self.dt, 9))
        if steps == 0:
            return x
        h = duration / steps
        for _ in range(steps):
            k1 = self.tendency(x)
            k2 = self.tendency(x + 0.5 * h * k1)
            k3 = self.tendency(x + 0.5 * h * k2)
            k4 = self.tendency(x + h * k3)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return x

    def observe(self, x):
        """Noise-free observation :math:`H M_\\Delta(x)` of states (..., d)."""
        return self.integrate(x, self.lead_time)[..., :: self.obs_every]

    def sample_states(self, num_samples, *, spin_up=10.0, generator=None, dtype=torch.float32):
        """Independent states on the attractor: perturbed rest states run for ``spin_up``
        time units (10 is many Lyapunov times at F = 8)."""
        check_int(num_samples, "num_samples", 1)
        g = self._generator if generator is None else generator
        f64 = torch.float64
        x = self.forcing + torch.randn(num_samples, self.dim, generator=g, dtype=f64)
        return self.integrate(x, spin_up).to(dtype)

    def sample(self, num_samples, *, spin_up=10.0, generator=None, dtype=torch.float32):
        """Draw ``(x, y)``: attractor states and their noisy observations."""
        g = self._generator if generator is None else generator
        x = self.sample_states(num_samples, spin_up=spin_up, generator=g, dtype=torch.float64)
        noise = torch.randn(num_samples, self.obs_dim, generator=g, dtype=torch.float64)
        y = self.observe(x) + self.obs_noise * noise
        return x.to(dtype), y.to(dtype)

    def log_likelihood(self, y, x):
        r"""Exact :math:`\log p(y_n \mid x_m)` for all pairs: shape (N, M), float64."""
        pred = self.observe(torch.as_tensor(x, dtype=torch.float64))
        y = torch.as_tensor(y, dtype=torch.float64)
        sq = torch.cdist(y, pred, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
        return -0.5 * sq / self.obs_noise**2 - self.obs_dim * math.log(
            self.obs_noise * math.sqrt(2 * math.pi)
        )
