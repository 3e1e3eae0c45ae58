import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS, Trace_ELBO, TraceEnum_ELBO, config_enumerate

import pyro_contrast as pc
from tests.common import assert_close
from tests.distributions.harness import DistributionHarness, Example

# These tests normalize C over a handful of candidates on purpose (small, exact cases);
# elsewhere the SmallNormalizerWarning stays an error, so an unintended small normalizer shows.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pyro_contrast.marginals.bridge.SmallNormalizerWarning"
)


NUM_CANDIDATES = 5


def _bridge(similarity, dtype=torch.float64):
    torch.manual_seed(1)
    ab = pc.Critic.from_embeddings(similarity, temperature=0.5)
    bc = pc.Critic.from_embeddings(similarity, temperature=0.8)
    return pc.Bridge([ab, bc], [pc.Bank(torch.randn(16, 3, dtype=dtype))])


_BRIDGES = {s: _bridge(s) for s in ("cosine", "neg_sq_l2")}
# The bank's dtype joins the computation's type promotion, so each dtype gets its own bank.
_BRIDGES32 = {s: _bridge(s, torch.float32) for s in ("cosine", "neg_sq_l2")}


def _bridged(bridge, a, candidates, method="exact"):
    """What ``Bridge.conditional`` does: the bridge scores, the distribution takes logits."""
    flat = bridge.log_ratio(a.reshape(-1, a.shape[-1]), candidates, method=method)
    return pc.BridgedConditional(logits=flat.reshape(a.shape[:-1] + flat.shape[-1:]))


def _factory(similarity, method):
    def factory(a, candidates):
        bridges = _BRIDGES32 if a.dtype == torch.float32 else _BRIDGES
        return _bridged(bridges[similarity], a, candidates, method)

    return factory


def _params(batch_shape, dtype):
    return {
        "a": torch.randn(batch_shape + (3,), dtype=dtype),
        "candidates": torch.randn(NUM_CANDIDATES, 3, dtype=dtype),
    }


def _invalid():
    return [
        lambda: pc.BridgedConditional(logits=torch.zeros(2, 0)),
        lambda: pc.BridgedConditional(logits=torch.tensor([0.0, float("nan")])),
        lambda: pc.BridgedConditional(logits=torch.tensor(1.0)),
    ]


class TestBridgedConditionalHarness(DistributionHarness):
    examples = [
        Example(f"bridged-{s}-{m}", factory=_factory(s, m), params=_params, invalid=_invalid())
        for s, m in (("cosine", "exact"), ("neg_sq_l2", "exact"), ("cosine", "lse"))
    ]


def _models(bridge, candidates):
    bank = bridge.banks[0].view(0)
    ab, bc = bridge.critics

    @config_enumerate
    def enumerated(c_index):
        with pyro.plate("queries", c_index.shape[0]):
            a = pyro.sample("a", dist.Normal(torch.zeros(3, dtype=bank.dtype), 1.0).to_event(1))
            m = pyro.sample("b", pc.ContrastiveConditional(ab, a, bank))
            pyro.sample("c", pc.ContrastiveConditional(bc, bank[m], candidates), obs=c_index)

    def collapsed(c_index):
        with pyro.plate("queries", c_index.shape[0]):
            a = pyro.sample("a", dist.Normal(torch.zeros(3, dtype=bank.dtype), 1.0).to_event(1))
            pyro.sample("c", _bridged(bridge, a, candidates), obs=c_index)

    return enumerated, collapsed


@pytest.mark.parametrize("similarity", ["cosine", "neg_sq_l2"])
def test_collapsed_equals_enumerated_model_and_gradients(similarity):
    bridge = _BRIDGES[similarity]
    candidates = torch.randn(NUM_CANDIDATES, 3, dtype=torch.float64)
    enumerated, collapsed = _models(bridge, candidates)
    c_index = torch.tensor([0, 3, 1, 4])
    a_value = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    cond = {"a": a_value}
    loss_enum = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(
        pyro.condition(enumerated, cond), lambda c: None, c_index
    )
    loss_coll = Trace_ELBO().differentiable_loss(
        pyro.condition(collapsed, cond), lambda c: None, c_index
    )
    assert_close(loss_enum, loss_coll, atol=1e-10, rtol=1e-10)
    grad_enum = torch.autograd.grad(loss_enum, a_value)[0]
    grad_coll = torch.autograd.grad(loss_coll, a_value)[0]
    assert_close(grad_enum, grad_coll, atol=1e-9, rtol=1e-8)


@pytest.mark.slow
def test_nuts_over_queries_runs_on_collapsed_model():
    bridge = _BRIDGES["neg_sq_l2"]
    candidates = torch.randn(NUM_CANDIDATES, 3, dtype=torch.float64)
    _, collapsed = _models(bridge, candidates)
    mcmc = MCMC(NUTS(collapsed), num_samples=60, warmup_steps=40, disable_progbar=True)
    mcmc.run(torch.tensor([2, 2]))
    a = mcmc.get_samples()["a"]
    assert a.shape == (60, 2, 3) and torch.isfinite(a).all()
    # Posterior queries must favour the observed candidate more than prior queries do.
    post = _bridged(bridge, a.reshape(-1, 3), candidates).probs[:, 2].mean()
    prior = _bridged(bridge, torch.randn(2000, 3, dtype=torch.float64), candidates).probs[:, 2]
    prior = prior.mean()
    assert post > prior


def test_batch_shapes_flatten_queries():
    bridge = _BRIDGES["cosine"]
    a, c = torch.randn(3, 2, 3), torch.randn(NUM_CANDIDATES, 3)
    d = _bridged(bridge, a, c)
    assert d.batch_shape == (3, 2)
    assert_close(d.logits.reshape(6, -1), bridge.log_ratio(a.reshape(6, 3), c).log_softmax(-1))


def test_logits_keyword_tensor_or_callable():
    logits = torch.randn(4, 6)
    for given in (logits, lambda: logits):
        d = pc.BridgedConditional(logits=given)
        assert isinstance(d, dist.Categorical)
        assert_close(d.logits, logits.log_softmax(-1))
        assert d.mode.shape == (4,)
    assert pc.BridgedConditional.from_logits(logits).batch_shape == (4,)
    with pytest.raises(TypeError, match="logits"):
        pc.BridgedConditional(logits=[0.0, 1.0])
