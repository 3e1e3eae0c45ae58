import math

import pytest
import torch

from pyro_contrast.sim.data_assimilation import LinearGaussianObservations, Lorenz96
from tests.common import assert_close


@pytest.mark.parametrize("dim, every", [(8, 4), (12, 3), (5, 1)])
def test_kalman_posterior_equals_gaussian_conditioning_of_the_joint(dim, every):
    model = LinearGaussianObservations(dim=dim, obs_every=every, obs_noise=0.4)
    c, h = model.prior_cov, model.obs_operator
    m = model.obs_dim
    # Joint covariance of (x, y), conditioned on y by the Schur complement: the truth.
    joint = torch.cat(
        [
            torch.cat([c, c @ h.T], 1),
            torch.cat([h @ c, h @ c @ h.T + 0.16 * torch.eye(m, dtype=c.dtype)], 1),
        ]
    )
    y = torch.randn(3, m, dtype=torch.float64)
    cross, obs_cov = joint[:dim, dim:], joint[dim:, dim:]
    mean_truth = y @ torch.linalg.solve(obs_cov, cross.T)
    cov_truth = c - cross @ torch.linalg.solve(obs_cov, cross.T)
    mean, cov = model.posterior(y)
    assert_close(mean, mean_truth, atol=1e-10)
    assert_close(cov, cov_truth, atol=1e-10)
    assert torch.linalg.eigvalsh(cov).min() > 0


def test_samples_have_the_model_moments():
    model = LinearGaussianObservations(dim=6, obs_every=2, obs_noise=0.5, seed=1)
    x, y = model.sample(40_000, dtype=torch.float64)
    # Standard errors of (co)variances of unit-scale Gaussians from 40,000 draws: < 0.008.
    assert_close(x.T @ x / len(x), model.prior_cov, atol=0.04, rtol=0)
    residual = y - x @ model.obs_operator.T
    assert_close(residual.std(0), torch.full((3,), 0.5, dtype=torch.float64), atol=0.02, rtol=0)
    # The posterior mean is the regression of x on y: residuals are uncorrelated with y.
    mean, cov = model.posterior(y)
    err = x - mean
    assert (err.T @ y / len(x)).abs().max() < 0.03
    assert_close(err.T @ err / len(x), cov, atol=0.03, rtol=0)


def test_observing_everything_with_little_noise_pins_the_state():
    model = LinearGaussianObservations(dim=6, obs_every=1, obs_noise=1e-4)
    x, y = model.sample(4, dtype=torch.float64)
    mean, cov = model.posterior(y)
    assert_close(mean, x, atol=1e-3)
    assert cov.diagonal().max() < 1e-7


def test_lorenz96_advection_conserves_energy_and_rest_state_is_fixed():
    model = Lorenz96(dim=10, forcing=8.0)
    x = torch.randn(5, 10, dtype=torch.float64)
    # Without damping and forcing the quadratic term conserves sum(x**2): x·adv(x) = 0.
    advection = model.tendency(x) + x - 8.0
    assert_close((x * advection).sum(-1), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    rest = torch.full((2, 10), 8.0, dtype=torch.float64)
    assert_close(model.integrate(rest, 1.0), rest, atol=1e-12)


def test_lorenz96_rk4_is_fourth_order():
    x0 = torch.randn(3, 8, dtype=torch.float64) + 8.0
    reference = Lorenz96(dim=8, dt=1e-4).integrate(x0, 0.2)
    errors = [
        (Lorenz96(dim=8, dt=dt).integrate(x0, 0.2) - reference).abs().max().item()
        for dt in (0.02, 0.01)
    ]
    # Halving the step divides the error by about 2**4 = 16.
    assert 10 < errors[0] / errors[1] < 24


def test_lorenz96_observation_and_exact_likelihood():
    model = Lorenz96(dim=8, obs_every=4, obs_noise=0.5, lead_time=0.05, seed=2)
    x, y = model.sample(6, spin_up=2.0, dtype=torch.float64)
    assert x.shape == (6, 8) and y.shape == (6, 2)
    pred = model.integrate(x, 0.05)[:, ::4]
    assert_close(model.observe(x), pred, atol=1e-12)
    loglik = model.log_likelihood(y, x)
    by_hand = -0.5 * ((y[:, None] - pred[None]) / 0.5).pow(2).sum(-1) - 2 * math.log(
        0.5 * math.sqrt(2 * math.pi)
    )
    assert_close(loglik, by_hand, atol=1e-9)
    # The noise is the only spread of y around the forecast: its scale is obs_noise.
    x_big, y_big = model.sample(4000, spin_up=2.0, dtype=torch.float64)
    assert abs((y_big - model.observe(x_big)).std().item() - 0.5) < 0.02


def test_lorenz96_states_are_on_the_attractor():
    model = Lorenz96(dim=20, seed=0)
    x = model.sample_states(500, spin_up=5.0, dtype=torch.float64)
    # Climatology at F = 8: mean about 2.3, standard deviation about 3.6 per site.
    assert 1.8 < x.mean().item() < 2.8 and 3.2 < x.std().item() < 4.0


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (LinearGaussianObservations, {"dim": 1}, "dim"),
        (LinearGaussianObservations, {"obs_every": 50}, "obs_every"),
        (LinearGaussianObservations, {"obs_noise": 0.0}, "obs_noise"),
        (LinearGaussianObservations, {"length_scale": -1.0}, "length_scale"),
        (Lorenz96, {"dim": 3}, "dim"),
        (Lorenz96, {"obs_every": 0}, "obs_every"),
        (Lorenz96, {"lead_time": -0.1}, "lead_time"),
        (Lorenz96, {"dt": 0.0}, "dt"),
        (Lorenz96, {"forcing": float("nan")}, "forcing"),
    ],
)
def test_bad_arguments_raise(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_bad_observation_shape_raises():
    with pytest.raises(ValueError, match="observation dimension"):
        LinearGaussianObservations(dim=8, obs_every=4).posterior(torch.zeros(3, 3))
