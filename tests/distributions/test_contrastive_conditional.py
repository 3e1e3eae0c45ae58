import math

import pyro
import pytest
import torch
from pyro.infer import SVI, TraceEnum_ELBO, config_enumerate
from pyro.optim import Adam

from pyro_contrast import Bank, ContrastiveConditional, Critic
from tests.common import assert_close
from tests.distributions.harness import DistributionHarness, Example

NUM_ITEMS = 5
_CRITICS = {s: Critic.from_embeddings(s, temperature=0.7) for s in ("dot", "cosine", "neg_sq_l2")}


def _params(similarity):
    def params(batch_shape, dtype):
        return {
            "x": torch.randn(batch_shape + (3,), dtype=dtype),
            "bank": torch.randn(NUM_ITEMS, 3, dtype=dtype),
            "log_weights": torch.randn(NUM_ITEMS, dtype=dtype),
        }

    return params


def _factory(similarity):
    def factory(x, bank, log_weights):
        return ContrastiveConditional(_CRITICS[similarity], x, bank, log_weights)

    return factory


def _invalid():
    critic = _CRITICS["cosine"]
    x, bank = torch.randn(2, 3), torch.randn(NUM_ITEMS, 3)
    return [
        lambda: ContrastiveConditional(critic, x, bank[:0]),
        lambda: ContrastiveConditional(critic, x.fill_(float("nan")), bank),
        lambda: ContrastiveConditional(critic, torch.randn(2, 4), bank),
        lambda: ContrastiveConditional(critic, x, bank, torch.zeros(NUM_ITEMS + 1)),
        lambda: ContrastiveConditional(critic, torch.randn(2, 3), bank, torch.full((5,), math.nan)),
    ]


class TestContrastiveConditionalHarness(DistributionHarness):
    examples = [
        Example(
            f"contrastive-{s}",
            factory=_factory(s),
            params=_params(s),
            invalid=_invalid(),
            grad_params=["x", "log_weights"],
        )
        for s in ("dot", "cosine", "neg_sq_l2")
    ]


@pytest.mark.parametrize("batch_shape", [(), (4,), (3, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logits_are_softmax_of_weighted_scores(batch_shape, dtype):
    critic = Critic.from_embeddings("neg_sq_l2", temperature=0.3, bias=True)
    x, bank = torch.randn(batch_shape + (3,), dtype=dtype), torch.randn(6, 3, dtype=dtype)
    log_w = torch.randn(6, dtype=dtype)
    d = ContrastiveConditional(critic, x, bank, log_w)
    scores = critic.score_embeddings(x.unsqueeze(-2), bank) + log_w
    assert d.batch_shape == batch_shape
    assert_close(d.logits, scores.log_softmax(-1), atol=1e-5)
    # Under the tilted model the bias and any x-only term cancel.
    assert_close(d.probs.sum(-1), torch.ones(batch_shape), atol=1e-6)


def test_logits_constructor_is_what_pyro_marginals_use():
    logits = torch.randn(3, 4)
    d = ContrastiveConditional(logits=logits)
    assert_close(d.logits, logits.log_softmax(-1))
    with pytest.raises(ValueError, match="either logits"):
        ContrastiveConditional(_CRITICS["dot"], torch.randn(3), torch.randn(4, 3), logits=logits)


def test_extreme_temperature_is_finite():
    critic = Critic.from_embeddings("cosine", temperature=1e-6)
    d = ContrastiveConditional(critic, torch.randn(5, 8), torch.randn(100, 8))
    assert torch.isfinite(d.logits).all()
    assert_close(d.probs.max(-1).values, torch.ones(5), atol=1e-6)


def test_svi_learns_temperature_through_enumerated_bank():
    # A mixture model over the bank: y ~ N(bank[m], 0.1) with m ~ ContrastiveConditional.
    # SVI with the bank index enumerated must fit the critic's temperature to the truth.
    true_critic = Critic.from_embeddings("dot", temperature=0.5)
    bank = torch.randn(8, 2)
    x = torch.randn(200, 2)
    m = ContrastiveConditional(true_critic, x, bank).sample()
    y = bank[m] + 0.1 * torch.randn(200, 2)
    critic = Critic.from_embeddings("dot", temperature=2.0, learn_temperature=True)

    @config_enumerate
    def model(x, y):
        pyro.module("critic", critic)
        with pyro.plate("data", x.shape[0]):
            idx = pyro.sample("m", ContrastiveConditional(critic, x, bank))
            pyro.sample("y", pyro.distributions.Normal(bank[idx], 0.1).to_event(1), obs=y)

    svi = SVI(model, lambda x, y: None, Adam({"lr": 0.1}), TraceEnum_ELBO(max_plate_nesting=1))
    for _ in range(120):
        svi.step(x, y)
    assert abs(critic.temperature.item() - 0.5) < 0.1


# ----- Pyro citizenship -------------------------------------------------------------------


def test_is_a_pyro_categorical_with_mode_and_kl():
    critic = _CRITICS["dot"]
    x, bank = torch.randn(4, 3, dtype=torch.float64), torch.randn(NUM_ITEMS, 3, dtype=torch.float64)
    p = ContrastiveConditional(critic, x, bank)
    q = ContrastiveConditional(critic, x.flip(0), bank)
    assert isinstance(p, pyro.distributions.Categorical)
    assert torch.equal(p.mode, p.probs.argmax(-1))
    expected = (p.probs * (p.logits - q.logits)).sum(-1)
    assert_close(torch.distributions.kl_divergence(p, q), expected, atol=1e-12)


def test_from_logits_and_bank_object():
    logits = torch.randn(2, 5)
    d = ContrastiveConditional.from_logits(logits)
    assert d.critic is None and d.batch_shape == (2,)
    assert_close(d.logits, logits.log_softmax(-1))
    critic = _CRITICS["cosine"]
    x, items, log_w = torch.randn(2, 3), torch.randn(NUM_ITEMS, 3), torch.randn(NUM_ITEMS)
    from_bank = ContrastiveConditional(critic, x, Bank(items, log_weights=log_w))
    assert_close(from_bank.logits, ContrastiveConditional(critic, x, items, log_w).logits)
    with pytest.raises(ValueError, match="log_weights"):
        ContrastiveConditional(critic, x, Bank(items, log_weights=log_w), log_w)
    with pytest.raises(ValueError, match="views"):
        ContrastiveConditional(critic, x, Bank(views=(items, items)))


def test_index_moments_follow_the_logits_device():
    # meta tensors carry a device but no data: an arange built on the CPU would not broadcast
    d = ContrastiveConditional.from_logits(torch.empty(3, 4, device="meta"), validate_args=False)
    assert d.mean.device.type == "meta" and d.variance.shape == (3,)


def test_infer_shapes():
    critic = _CRITICS["dot"]
    for batch_shape in [(), (4,), (3, 2)]:
        x = torch.randn(batch_shape + (3,))
        d = ContrastiveConditional(critic, x, torch.randn(NUM_ITEMS, 3))
        shapes = ContrastiveConditional.infer_shapes(critic=(), x=x.shape, bank=(NUM_ITEMS, 3))
        assert shapes == (d.batch_shape, d.event_shape)
        logits = torch.randn(batch_shape + (NUM_ITEMS,))
        assert ContrastiveConditional.infer_shapes(logits=logits.shape) == (batch_shape, ())


def _mixture_model(critic, bank):
    @config_enumerate
    def model(x, y):
        with pyro.plate("data", x.shape[0]):
            m = pyro.sample("m", ContrastiveConditional(critic, x, bank))
            pyro.sample("y", pyro.distributions.Normal(bank[m], 0.3).to_event(1), obs=y)

    return model


def test_compute_marginals_and_infer_discrete_match_bayes_rule():
    critic = Critic.from_embeddings("dot", temperature=0.5)
    bank = torch.randn(NUM_ITEMS, 2, dtype=torch.float64)
    x, y = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    model = _mixture_model(critic, bank)
    prior = ContrastiveConditional(critic, x, bank).logits
    likelihood = pyro.distributions.Normal(bank, 0.3).to_event(1).log_prob(y.unsqueeze(-2))
    posterior = (prior + likelihood).log_softmax(-1)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    marginal = elbo.compute_marginals(model, lambda x, y: None, x, y)["m"]
    assert type(marginal) is ContrastiveConditional
    assert_close(marginal.logits, posterior, atol=1e-10)
    # infer_discrete draws from the same posterior: one call on 2000 copies of the 3 points,
    # then a chi-square test with 3 (M - 1) = 12 degrees of freedom (P(stat > 32.9) = 1e-3)
    copies = 2000
    sampled = pyro.infer.infer_discrete(pyro.poutine.trace(model).get_trace, first_available_dim=-2)
    m = sampled(x.repeat(copies, 1), y.repeat(copies, 1)).nodes["m"]["value"].reshape(copies, 3)
    counts = torch.nn.functional.one_hot(m, NUM_ITEMS).sum(0).double()
    expected = copies * posterior.exp()
    assert ((counts - expected).square() / expected).sum() < 32.9
