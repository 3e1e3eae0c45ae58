import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import Adam

import pyro_contrast as pc
from tests.common import assert_close


def test_factor_adds_critic_score_inside_plates():
    critic = pc.Critic.from_embeddings("neg_sq_l2", temperature=0.5)
    y = torch.randn(6, 2)

    def model():
        with pyro.plate("data", 6):
            x = pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pc.contrastive_factor("match", critic, x, y)

    trace = pyro.poutine.trace(model).get_trace()
    trace.compute_log_prob()
    x = trace.nodes["x"]["value"]
    assert_close(trace.nodes["match"]["log_prob"], critic(x, y))


def test_svi_with_factor_recovers_tilted_posterior():
    # Prior N(0, 1) on x tilted by -||x - y||^2 / (2 T) is Gaussian with precision 1 + 1/T.
    critic = pc.Critic.from_embeddings("neg_sq_l2", temperature=0.25)
    y = torch.tensor([[2.0]])

    def model():
        x = pyro.sample("x", dist.Normal(torch.zeros(1, 1), 1.0).to_event(2))
        pc.contrastive_factor("match", critic, x, y)

    guide = AutoNormal(model)
    svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(600):
        svi.step()
    loc = guide.median()["x"]
    scale = pyro.param("AutoNormal.scales.x")
    precision = 1 + 1 / 0.25
    # SVI noise at lr 0.05 is well under 0.1 here; the targets differ by far more than that.
    assert abs(loc.item() - (1 / 0.25) * 2.0 / precision) < 0.1
    assert abs(scale.item() - precision**-0.5) < 0.1


def test_bad_factor_inputs():
    critic = pc.Critic.from_embeddings("dot")
    with pytest.raises(TypeError, match="name must be a non-empty string"):
        pc.contrastive_factor("", critic, torch.ones(2), torch.ones(2))
    with pytest.raises(TypeError, match="critic must be"):
        pc.contrastive_factor("f", lambda x, y: x, torch.ones(2), torch.ones(2))
