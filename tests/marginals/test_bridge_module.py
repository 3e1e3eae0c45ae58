"""Bridge as a torch.nn.Module: state, derived values that cannot go stale, invariances.

The property tests drive a bridge through random sequences of in-place edits and
replacements of every input and check after each step that every method equals a freshly
built bridge's answer (the caches may only ever save time, never change an answer).
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

import pyro_contrast as pc
from pyro_contrast.marginals.bridge import MIN_NORMALIZER_ITEMS, SmallNormalizerWarning
from tests.common import assert_close, fresh_bridge

# These tests normalize C over a handful of candidates on purpose (small, exact cases);
# elsewhere the SmallNormalizerWarning stays an error, so an unintended small normalizer shows.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pyro_contrast.marginals.bridge.SmallNormalizerWarning"
)


F64 = torch.float64
DIM = 3


def _critic(similarity, seed, temperature=0.7, learn_temperature=False):
    generator = torch.Generator().manual_seed(seed)
    encoders = []
    for _ in range(2):
        layer = torch.nn.Linear(DIM, DIM).double()
        with torch.no_grad():
            layer.weight.copy_(torch.randn(DIM, DIM, generator=generator, dtype=F64))
            layer.bias.copy_(torch.randn(DIM, generator=generator, dtype=F64))
        encoders.append(layer)
    return pc.Critic(*encoders, similarity, temperature, learn_temperature=learn_temperature)


def _randn(generator, *shape):
    return torch.randn(*shape, generator=generator, dtype=F64)


def _answers(bridge, a, c):
    with torch.no_grad():
        out = {m: bridge.log_ratio(a, c, m) for m in ("exact", "lse", "direct")}
        if bridge.marginal is not None:
            out["analytic"] = bridge.log_ratio(a, c, "analytic")
    return out


MUTATIONS = [
    "bank_in_place",
    "bank_replaced",
    "weights_in_place",
    "encoder_in_place",
    "encoder_swapped",
    "temperature_in_place",
    "target_in_place",
    "target_replaced",
    "chunk_size",
    "marginal",
    "to_float32_and_back",
]


def _mutate(bridge, name, generator):
    bank = bridge.banks[0]
    critic_ab, critic_bc = bridge.critics
    with torch.no_grad():
        if name == "bank_in_place":
            bank.view0.add_(_randn(generator, *bank.view0.shape))
        elif name == "bank_replaced":
            bridge.banks[0] = pc.Bank(
                _randn(generator, len(bank), DIM), log_weights=_randn(generator, len(bank))
            )
        elif name == "weights_in_place":
            bank.log_weights.add_(_randn(generator, len(bank)))
        elif name == "encoder_in_place":
            critic_bc.encoder_x.weight.add_(_randn(generator, DIM, DIM))
        elif name == "encoder_swapped":  # another function, the same tensors and module count
            squash = critic_bc.encoder_y[1]
            critic_bc.encoder_y[1] = (
                torch.nn.Softsign() if isinstance(squash, torch.nn.Tanh) else torch.nn.Tanh()
            )
        elif name == "temperature_in_place":
            critic_bc.log_temperature.add_(0.3)
        elif name == "target_in_place":
            bridge.target_bank.mul_(1.5)
        elif name == "target_replaced":
            bridge.target_bank = _randn(generator, 40, DIM)
        elif name == "chunk_size":
            bridge.chunk_size = int(torch.randint(1, 12, (), generator=generator))
        elif name == "marginal":
            bridge.marginal = "gaussian" if bridge.marginal is None else None
        elif name == "to_float32_and_back":
            bridge.float()
            bridge.double()


@pytest.mark.slow
@given(
    seed=st.integers(0, 2**16),
    similarity=st.sampled_from(["dot", "neg_sq_l2", "cosine"]),
    mutations=st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=4),
)
def test_bridge_equals_a_fresh_bridge_after_any_mutation(seed, similarity, mutations):
    generator = torch.Generator().manual_seed(seed)
    ab, bc = _critic(similarity, seed), _critic(similarity, seed + 1)
    bank = pc.Bank(_randn(generator, 20, DIM), log_weights=_randn(generator, 20))
    bridge = pc.Bridge(
        [ab, bc], [bank], target_bank=_randn(generator, 30, DIM), chunk_size=7, marginal=None
    )
    # the analytic method needs a shared B representation: one encoder for both critics
    bc.encoder_x = ab.encoder_y
    bc.encoder_y = torch.nn.Sequential(bc.encoder_y, torch.nn.Tanh())  # see "encoder_swapped"
    a, c = _randn(generator, 4, DIM), _randn(generator, 5, DIM)
    _answers(bridge, a, c)  # fill every cache
    if similarity == "cosine":  # its closed form is the sphere's, not the Gaussian's
        mutations = [name for name in mutations if name != "marginal"]
    for name in mutations:
        _mutate(bridge, name, generator)
        cached, fresh = _answers(bridge, a, c), _answers(fresh_bridge(bridge), a, c)
        for method, value in fresh.items():
            assert_close(cached[method], value, atol=1e-10, rtol=1e-10)


def _shifted(critic, shift_x, shift_y):
    """The critic f(x, y) + g(x) + h(y) for a dot critic: append g and h as coordinates."""

    class Append(torch.nn.Module):
        def __init__(self, encoder, fn, last):
            super().__init__()
            self.encoder, self.fn, self.last = encoder, fn, last

        def forward(self, x):
            u = self.encoder(x)
            extra = [self.fn(x).unsqueeze(-1), torch.ones_like(u[..., :1])]
            return torch.cat([u, *(extra[::-1] if self.last else extra)], -1)

    temperature = critic.temperature.item()
    scale = lambda fn: lambda x: fn(x) * temperature  # noqa: E731  (dot scores are / T)
    return pc.Critic(
        Append(critic.encoder_x, scale(shift_x), last=False),
        Append(critic.encoder_y, scale(shift_y), last=True),
        "dot",
        temperature,
    )


@given(seed=st.integers(0, 2**16), scale=st.floats(0.1, 30.0))
def test_exact_is_invariant_to_terms_in_one_argument(seed, scale):
    generator = torch.Generator().manual_seed(seed)
    ab, bc = _critic("dot", seed), _critic("dot", seed + 1)
    coefficients = _randn(generator, 4, DIM) * scale

    def term(row):
        return lambda x: torch.sin(x @ coefficients[row]) * scale + (x @ coefficients[row + 1])

    zero = lambda x: torch.zeros(x.shape[:-1], dtype=x.dtype)  # noqa: E731
    bank, target = _randn(generator, 15, DIM), _randn(generator, 25, DIM)
    a, c = _randn(generator, 4, DIM), _randn(generator, 6, DIM)
    base = pc.Bridge([ab, bc], [bank], target_bank=target).log_ratio(a, c)
    # f_AB -> f_AB + g(a), and f_BC -> f_BC + h(b): the normalized conditionals do not change
    shifted = pc.Bridge(
        [_shifted(ab, term(0), zero), _shifted(bc, term(2), zero)], [bank], target_bank=target
    )
    assert_close(shifted.log_ratio(a, c), base, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("shift", [-1e5, 1e5, -700.0])
def test_exact_is_invariant_to_a_constant_shift_of_log_weights(dtype, shift):
    generator = torch.Generator().manual_seed(0)
    ab, bc = _critic("cosine", 0).to(dtype), _critic("cosine", 1).to(dtype)
    items = _randn(generator, 30, DIM).to(dtype)
    # weights on a 2^-7 grid: shifting them by 1e5 is then exact even in float32 (a shift that
    # rounded the weights themselves would be a different input, not a constant shift)
    weights = (_randn(generator, 30) * 128).round().div(128).to(dtype)
    a, c = _randn(generator, 3, DIM).to(dtype), _randn(generator, 4, DIM).to(dtype)
    base = pc.Bridge([ab, bc], [pc.Bank(items, log_weights=weights)]).log_ratio(a, c)
    moved = pc.Bank(items, log_weights=weights + shift)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert_close(pc.Bridge([ab, bc], [moved]).log_ratio(a, c), base, atol=tol, rtol=tol)


def test_bridge_is_a_module_that_moves_and_saves():
    ab, bc = _critic("cosine", 0, learn_temperature=True), _critic("cosine", 1)
    bank = pc.Bank(torch.randn(12, DIM, dtype=F64), log_weights=torch.randn(12, dtype=F64))
    bridge = pc.Bridge([ab, bc], [bank], target_bank=torch.randn(9, DIM, dtype=F64))
    assert isinstance(bridge, torch.nn.Module)
    state = bridge.state_dict()
    assert {"banks.0.view0", "banks.0.log_weights", "target_bank"} <= set(state)
    assert "hops.0.0.log_temperature" in state
    a, c = torch.randn(2, DIM, dtype=F64), torch.randn(3, DIM, dtype=F64)
    expected = bridge(a, c)
    bridge.float()
    assert bridge.banks[0].view(0).dtype == torch.float32
    assert bridge.target_bank.dtype == torch.float32
    assert_close(bridge(a.float(), c.float()), expected.float(), atol=1e-4, rtol=1e-4)
    # a bridge of the same architecture loads the state and gives the same answer
    other = pc.Bridge(
        [_critic("cosine", 5, learn_temperature=True), _critic("cosine", 6)],
        [pc.Bank(torch.zeros(12, DIM, dtype=F64), log_weights=torch.zeros(12, dtype=F64))],
        target_bank=torch.zeros(9, DIM, dtype=F64),
    )
    other.load_state_dict(state)
    assert_close(other(a, c), expected, atol=1e-12, rtol=1e-12)
    # pyro.module registers the critics' parameters
    pyro.clear_param_store()
    pyro.module("bridge", bridge)
    assert any("log_temperature" in name for name in pyro.get_param_store().keys())


def test_bank_rows_as_pyro_params_train_under_svi():
    # Learning bank rows used to crash on the second step (a cached graph, backward twice).
    ab, bc = _critic("dot", 0), _critic("dot", 1)
    a, c = torch.randn(6, DIM, dtype=F64), torch.randn(5, DIM, dtype=F64)
    target = torch.randn(20, DIM, dtype=F64)
    observed = torch.arange(5).repeat(2)[:6]

    def model():
        rows = pyro.param("rows", torch.randn(8, DIM, dtype=F64))
        bridge = pc.Bridge([ab, bc], [rows], target_bank=target)
        with pyro.plate("queries", 6):
            pyro.sample("c", bridge.conditional(a, c), obs=observed)

    svi = SVI(model, lambda: None, Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step() for _ in range(5)]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]


def test_analytic_follows_an_encoder_change():
    torch.manual_seed(0)
    encoder = torch.nn.Linear(DIM, DIM).double()
    ab = pc.Critic(torch.nn.Linear(DIM, DIM).double(), encoder, "dot", 1.0)
    bc = pc.Critic(encoder, torch.nn.Linear(DIM, DIM).double(), "dot", 1.0)
    bridge = pc.Bridge([ab, bc], [torch.randn(200, DIM, dtype=F64)], marginal="gaussian")
    a, c = torch.randn(2, DIM, dtype=F64), torch.randn(3, DIM, dtype=F64)
    with torch.no_grad():
        bridge.log_ratio(a, c, "analytic")
        encoder.weight.mul_(2.0)
        assert_close(
            bridge.log_ratio(a, c, "analytic"),
            fresh_bridge(bridge).log_ratio(a, c, "analytic"),
            atol=1e-10,
            rtol=1e-10,
        )


def test_warns_when_the_c_normalizer_has_few_items():
    dot = pc.Critic.from_embeddings("dot")
    bank = torch.randn(10, DIM)
    a, c = torch.randn(2, DIM), torch.randn(8, DIM)
    with pytest.warns(SmallNormalizerWarning, match="only 8 items"):
        pc.Bridge([dot, dot], [bank]).log_ratio(a, c)
    with pytest.warns(SmallNormalizerWarning, match="target_bank"):
        pc.Bridge([dot, dot], [bank], target_bank=torch.randn(5, DIM)).log_ratio(a, c)
    big = torch.randn(MIN_NORMALIZER_ITEMS, DIM)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallNormalizerWarning)
        pc.Bridge([dot, dot], [bank], target_bank=big).log_ratio(a, c)
        pc.Bridge([dot, dot], [bank]).log_ratio(a, c, "lse")


@pytest.mark.parametrize(
    "build, call, error, match",
    [
        (dict(chunk_size=-1), None, ValueError, "chunk_size"),
        (dict(chunk_size=2.5), None, ValueError, "chunk_size"),
        (dict(chunk_size=True), None, ValueError, "chunk_size"),
        (dict(target_bank=torch.randn(5)), "log_ratio", ValueError, "target_bank"),
        (dict(target_bank=torch.randn(5, 2)), "log_ratio", ValueError, "target_bank"),
        (dict(target_bank=torch.randn(0, DIM)), None, ValueError, "target_bank"),
        (dict(direct_temperature=float("inf")), None, ValueError, "direct_temperature"),
        ({}, "embed_bank_3", ValueError, "index must be in"),
        ({}, "embed_bank_str", TypeError, "index must be an integer"),
        ({}, "empty_queries", ValueError, "non-empty batch of queries"),
        ({}, "empty_candidates", ValueError, "non-empty batch of candidates"),
        ({}, "set_chunk_size", ValueError, "chunk_size"),
    ],
)
def test_bad_inputs_raise_clear_errors(build, call, error, match):
    dot = pc.Critic.from_embeddings("dot")
    bank = torch.randn(10, DIM)
    a, c = torch.randn(2, DIM), torch.randn(3, DIM)
    with pytest.raises(error, match=match):
        bridge = pc.Bridge([dot, dot], [bank], **build)
        if call == "log_ratio":
            bridge.log_ratio(a, c)
        elif call == "embed_bank_3":
            bridge.embed_bank(3)
        elif call == "embed_bank_str":
            bridge.embed_bank("0")
        elif call == "empty_queries":
            bridge.log_ratio(a[:0], c)
        elif call == "empty_candidates":
            bridge.log_ratio(a, c[:0])
        elif call == "set_chunk_size":
            bridge.chunk_size = 0


def test_conditional_of_nested_batches_is_a_categorical_over_candidates():
    dot = pc.Critic.from_embeddings("dot")
    bridge = pc.Bridge([dot, dot], [torch.randn(10, DIM)])
    a, c = torch.randn(2, 3, DIM), torch.randn(4, DIM)
    conditional = bridge.conditional(a, c)
    assert conditional.batch_shape == (2, 3)
    expected = bridge.log_ratio(a.reshape(6, DIM), c).log_softmax(-1).reshape(2, 3, 4)
    assert_close(conditional.log_prob(torch.arange(4).view(4, 1, 1)).permute(1, 2, 0), expected)
    assert isinstance(conditional, dist.Categorical)


def _counting_critic(seed, *layers):
    """A cosine critic with learned encoders that count the rows they encode."""
    torch.manual_seed(seed)
    critic = pc.Critic(
        torch.nn.Sequential(torch.nn.Linear(DIM, DIM), *layers),
        torch.nn.Sequential(torch.nn.Linear(DIM, DIM), *layers),
        "cosine",
        0.5,
    )
    critic.rows = 0

    def count(module, inputs, output):
        critic.rows += inputs[0].shape[0]

    critic.encoder_x.register_forward_hook(count)
    critic.encoder_y.register_forward_hook(count)
    return critic


@pytest.mark.parametrize("method", ["exact", "lse"])
@pytest.mark.parametrize("grad", [False, True])
def test_a_second_call_encodes_only_the_queries_and_candidates(method, grad):
    generator = torch.Generator().manual_seed(5)
    ab, bc = _counting_critic(0), _counting_critic(1)
    for p in (*ab.parameters(), *bc.parameters()):
        p.requires_grad_(False)
    bank = torch.randn(300, DIM, generator=generator)
    bridge = pc.Bridge([ab, bc], [pc.Bank(bank)], chunk_size=128, progress=False)
    a = torch.randn(4, DIM, generator=generator, requires_grad=grad)
    c = torch.randn(5, DIM, generator=generator)
    first = bridge.log_ratio(a, c, method)
    ab.rows = bc.rows = 0
    second = bridge.log_ratio(a, c, method)
    assert (ab.rows, bc.rows) == (4, 5)  # no bank row encoded again
    assert_close(second, first, atol=0, rtol=0)
    with torch.no_grad():
        ab.encoder_y[0].weight.mul_(0.5)  # an in-place edit: the encodings are redone
    ab.rows = 0
    assert_close(bridge.log_ratio(a, c, method), fresh_bridge(bridge).log_ratio(a, c, method))
    assert ab.rows >= 300
    if grad:  # the queries' gradient flows through the cached bank encodings
        bridge.log_ratio(a, c, method).sum().backward()
        assert a.grad is not None and torch.isfinite(a.grad).all()


@pytest.mark.parametrize("layer", [torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(DIM)])
def test_training_mode_dropout_and_batch_norm_are_never_reused(layer):
    generator = torch.Generator().manual_seed(6)
    ab, bc = _counting_critic(0, layer), _counting_critic(1)
    bank = torch.randn(200, DIM, generator=generator)
    bridge = pc.Bridge([ab, bc], [pc.Bank(bank)], progress=False)
    a, c = torch.randn(3, DIM, generator=generator), torch.randn(4, DIM, generator=generator)
    with torch.no_grad():
        bridge.log_ratio(a, c)
        ab.rows = 0
        bridge.log_ratio(a, c)
        assert ab.rows == 3 + 200  # encoded anew: a new draw, or this batch's statistics
        ab.eval()
        first = bridge.log_ratio(a, c)
        ab.rows = 0
        assert_close(bridge.log_ratio(a, c), first, atol=0, rtol=0)
        assert ab.rows == 3  # repeatable in eval mode: the bank's encoding is reused


@pytest.mark.parametrize("edit", ["in_place", "swapped"])
def test_a_hubs_second_critic_is_part_of_the_cache_key(edit):
    # the bank's cached encodings hold one per left critic: an edit of the second one's
    # encoder (not the first's) must be seen
    generator = torch.Generator().manual_seed(8)
    f1, f2, bc = _critic("dot", 1), _critic("dot", 2), _critic("dot", 3)
    bank = pc.Bank(_randn(generator, 40, DIM))
    bridge = pc.Bridge([(f1, f2), bc], [bank], target_bank=_randn(generator, 30, DIM))
    a = (_randn(generator, 3, DIM), _randn(generator, 3, DIM))
    c = _randn(generator, 5, DIM)
    before = _answers(bridge, a, c)
    with torch.no_grad():
        if edit == "in_place":
            f2.encoder_y.weight.mul_(-1.0)
        else:
            f2.encoder_y = torch.nn.Sequential(f2.encoder_y, torch.nn.Tanh())
    after, fresh = _answers(bridge, a, c), _answers(fresh_bridge(bridge), a, c)
    for method, value in fresh.items():
        assert_close(after[method], value, atol=1e-10, rtol=1e-10)
    for method in ("exact", "lse"):  # the shortcut does not see the bank's encoder
        assert not torch.allclose(before[method], fresh[method])
