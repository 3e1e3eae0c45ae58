import math

import arviz as az
import pyro
import pyro.poutine as poutine
import pytest
import torch
from torch import nn

from pyro_contrast.critics import Critic
from pyro_contrast.training.bayes import (
    _potential,
    _priors,
    _tilt_model,
    svi_fit,
    temperature_posterior,
)
from pyro_contrast.training.fit import fit
from tests.common import assert_close


def _tilted_data(num_queries, num_candidates, temperature, bias=None, seed=0, dim=3):
    """Unit vectors and observations drawn from the tilted model with cosine / T (+ bias)."""
    g = torch.Generator().manual_seed(seed)
    x = nn.functional.normalize(torch.randn(num_queries, dim, generator=g), dim=-1)
    y = nn.functional.normalize(torch.randn(num_candidates, dim, generator=g), dim=-1)
    logits = (x @ y.T).double() / temperature
    if bias is None:
        return x, y, torch.multinomial(logits.softmax(-1), 1, generator=g).squeeze(-1)
    return x, y, torch.bernoulli(torch.sigmoid(logits + bias), generator=g)


def test_svi_fit_is_maximum_likelihood_equal_to_infonce_training():
    # Full batch: the ELBO is N x InfoNCE and Pyro's Adam is torch's Adam per parameter, so the
    # two trajectories agree up to float rounding (Adam is invariant to the loss scale).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = x + 0.5 * torch.randn(64, 3, generator=g)
    svi_critic = Critic(nn.Linear(3, 3), nn.Linear(3, 3), "cosine", 0.5, True)
    twin = Critic(nn.Linear(3, 3), nn.Linear(3, 3), "cosine", 0.5, True)
    twin.load_state_dict(svi_critic.state_dict())
    history = svi_fit(svi_critic, x, y, steps=40, lr=1e-2, progress=False)
    fit(twin, (x, y), "infonce", steps=40, batch_size=64, lr=1e-2, validation=0, progress=False)
    for key, value in svi_critic.state_dict().items():
        assert_close(value, twin.state_dict()[key], atol=1e-5)
    assert svi_critic.temperature.item() != pytest.approx(0.5, abs=1e-3)
    assert history.train_loss[-1] < history.train_loss[0]
    assert "critic$$$encoder_x.weight" in pyro.get_param_store()


@pytest.mark.parametrize("likelihood", ["categorical", "sigmoid"])
def test_potential_is_the_pyro_models_negative_log_joint(likelihood):
    x, y, obs = _tilted_data(12, 7, 0.3, bias=None if likelihood == "categorical" else -1.0)
    sim = (x @ y.T).double()
    priors = _priors(
        {"log_temperature": pyro.distributions.Normal(torch.tensor(0.5, dtype=torch.float64), 1.5)}
    )
    params = {"log_temperature": torch.tensor(-0.7, dtype=torch.float64)}
    if likelihood == "sigmoid":
        params["bias"] = torch.tensor(0.4, dtype=torch.float64)
    model = poutine.condition(
        _tilt_model(sim, obs.double() if likelihood == "sigmoid" else obs, likelihood, priors),
        data=params,
    )
    log_joint = poutine.trace(model).get_trace().log_prob_sum()
    potential = _potential(
        sim, obs.double() if likelihood == "sigmoid" else obs, likelihood, priors
    )
    assert_close(potential(params), -log_joint, atol=1e-10)


def test_temperature_posterior_recovers_the_generating_temperature():
    # Data from the tilted categorical model itself, so the posterior is well specified.
    # R-hat: rank-normalized split-R-hat over 2 sequential chains from different random starts.
    true_temperature = 0.25
    x, y, labels = _tilted_data(200, 50, true_temperature)
    state = torch.get_rng_state()
    idata = temperature_posterior(
        Critic.from_embeddings("cosine"),
        x,
        y,
        labels=labels,
        num_samples=300,
        warmup_steps=200,
        num_chains=2,
        seed=0,
    )
    assert torch.equal(torch.get_rng_state(), state)
    assert idata.posterior["log_temperature"].shape == (2, 300)
    assert "bias" not in idata.posterior  # cancels in the softmax
    summary = az.summary(idata, var_names=["log_temperature"])
    assert summary["r_hat"].iloc[0] <= 1.01
    assert summary["ess_bulk"].iloc[0] > 100
    assert int(idata.sample_stats["diverging"].sum()) == 0
    draws = idata.posterior["log_temperature"].values
    # A well-specified posterior covers the truth within 2 sd about 95% of the time.
    assert abs(draws.mean() - math.log(true_temperature)) <= 2 * draws.std()
    assert_close(idata.posterior["temperature"].values, torch.tensor(draws).exp().numpy())


@pytest.mark.slow
def test_sigmoid_posterior_recovers_temperature_and_bias():
    x, y, targets = _tilted_data(100, 40, 0.25, bias=-2.0, seed=1)
    critic = Critic.from_embeddings("cosine", temperature=3.0, bias=True)
    with torch.no_grad():
        critic.bias.fill_(7.0)  # ignored: only the similarity is taken from the critic
    idata = temperature_posterior(
        critic,
        x,
        y,
        labels=targets,
        likelihood="sigmoid",
        num_samples=300,
        warmup_steps=200,
        num_chains=2,
        seed=3,
    )
    summary = az.summary(idata, var_names=["log_temperature", "bias"])
    assert (summary["r_hat"] <= 1.01).all()
    post = idata.posterior
    lt, bias = post["log_temperature"].values, post["bias"].values
    assert abs(lt.mean() - math.log(0.25)) <= 2 * lt.std()
    # Two parameters checked at once: 3 sd keeps the false-alarm rate per seed below 0.3%.
    assert abs(bias.mean() + 2.0) <= 3 * bias.std()


def test_bad_arguments():
    critic = Critic.from_embeddings("cosine")
    x, y = torch.randn(6, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="N == M"):
        temperature_posterior(critic, x, y)
    with pytest.raises(ValueError, match="likelihood"):
        temperature_posterior(critic, x, x, likelihood="poisson")
    with pytest.raises(ValueError, match="integer indices"):
        temperature_posterior(critic, x, y, labels=torch.tensor([0, 1, 2, 3, 4, 5]))
    with pytest.raises(ValueError, match="shape"):
        temperature_posterior(critic, x, y, labels=torch.zeros(6, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="0/1"):
        temperature_posterior(critic, x, y, labels=torch.full((6, 4), 2.0), likelihood="sigmoid")
    with pytest.raises(ValueError, match="prior"):
        temperature_posterior(critic, x, x, prior={"scale": None})
    with pytest.raises(TypeError, match="scalar Pyro distribution"):
        temperature_posterior(critic, x, x, prior={"bias": 1.0})
    with pytest.raises(ValueError, match="num_samples"):
        temperature_posterior(critic, x, x, num_samples=0)
    with pytest.raises(TypeError, match="Critic"):
        temperature_posterior(nn.Linear(3, 3), x, x)
    with pytest.raises(ValueError, match="aligned"):
        svi_fit(critic, x, y)
    with pytest.raises(ValueError, match="batch_size"):
        svi_fit(Critic(nn.Linear(3, 3)), x, x, batch_size=7)
    with pytest.raises(ValueError, match="NaN"):
        svi_fit(Critic(nn.Linear(3, 3)), x.clone().fill_(math.nan), x)
