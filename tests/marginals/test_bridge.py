import math

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate, infer_discrete

import pyro_contrast as pc
from tests.common import assert_close

# These tests normalize C over a handful of candidates on purpose (small, exact cases);
# elsewhere the SmallNormalizerWarning stays an error, so an unintended small normalizer shows.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pyro_contrast.marginals.bridge.SmallNormalizerWarning"
)


SIMILARITIES = ["dot", "cosine", "neg_sq_l2"]


def _critics(similarity, num, dim=4, seed=0):
    torch.manual_seed(seed)
    critics = []
    for i in range(num):
        encoder_x, encoder_y = (
            torch.nn.Linear(dim, dim).double(),
            torch.nn.Linear(dim, dim).double(),
        )
        critics.append(pc.Critic(encoder_x, encoder_y, similarity, temperature=0.3 + 0.2 * i))
    return critics


def _brute_force(critics, banks, a, c):
    """p(c_k | a) by explicit products of normalized transition matrices (small sizes)."""
    probs = critics[0].pairwise(a, banks[0]).softmax(-1)
    for critic, left, right in zip(critics[1:-1], banks[:-1], banks[1:], strict=True):
        probs = probs @ critic.pairwise(left, right).softmax(-1)
    probs = probs @ critics[-1].pairwise(banks[-1], c).softmax(-1)
    return probs.log() + math.log(c.shape[0])


def _chain_model(critics, banks, candidates):
    @config_enumerate
    def model(a, c_index):
        with pyro.plate("queries", a.shape[0]):
            x = a
            for i, (critic, bank) in enumerate(zip(critics[:-1], banks, strict=True)):
                m = pyro.sample(f"b{i}", pc.ContrastiveConditional(critic, x, bank))
                x = bank[m]
            pyro.sample("c", pc.ContrastiveConditional(critics[-1], x, candidates), obs=c_index)

    return model


def _pyro_log_prob(model, a, c_index):
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    return -elbo.differentiable_loss(model, lambda a, c_index: None, a, c_index)


@pytest.mark.parametrize("similarity", SIMILARITIES)
@pytest.mark.parametrize("num_banks", [1, 2])
def test_exact_equals_pyro_enumeration(similarity, num_banks):
    critics = _critics(similarity, num_banks + 1)
    banks = [torch.randn(7 + i, 4, dtype=torch.float64) for i in range(num_banks)]
    a, c = torch.randn(3, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    exact = pc.Bridge(critics, banks).log_ratio(a, c, method="exact")
    model = _chain_model(critics, banks, c)
    for n in range(a.shape[0]):
        for k in range(c.shape[0]):
            expected = _pyro_log_prob(model, a[n : n + 1], torch.tensor([k]))
            assert_close(exact[n, k] - math.log(c.shape[0]), expected, atol=1e-10, rtol=1e-10)
    assert_close(exact, _brute_force(critics, banks, a, c), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("num_banks", [1, 2])
def test_explain_equals_enumerated_posterior(num_banks):
    critics = _critics("cosine", num_banks + 1)
    banks = [torch.randn(6 + i, 4, dtype=torch.float64) for i in range(num_banks)]
    a, c = torch.randn(4, 4, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    bridge = pc.Bridge(critics, banks)
    # The aligned explanation normalizes p(c | b) over the rows of c, so condition the Pyro
    # model on c_n as candidate n of that same set.
    model = _chain_model(critics, banks, c)
    c_index = torch.arange(4)
    marginals = TraceEnum_ELBO(max_plate_nesting=1).compute_marginals(
        model, lambda a, c_index: None, a, c_index
    )
    for i in range(num_banks):
        support = torch.arange(banks[i].shape[0]).unsqueeze(-1)
        expected = marginals[f"b{i}"].log_prob(support).exp().T
        assert_close(bridge.explain(a, c, bank_index=i), expected, atol=1e-10, rtol=1e-8)
    # infer_discrete at temperature 0 picks the joint MAP; for one bank it is the argmax.
    if num_banks == 1:
        trace = pyro.poutine.trace(infer_discrete(model, first_available_dim=-2, temperature=0))
        tr = trace.get_trace(a, c_index)
        assert torch.equal(tr.nodes["b0"]["value"], bridge.explain(a, c).argmax(-1))


def test_lse_matches_paper_estimator_and_counterexample():
    # the mathematics page, §2: f_AB = [0, 5], f_BC = [[10, 0], [0, 0.5]] -> exact [0.382, 0.618]
    # but
    # softmax(LSE) = [0.989, 0.011]. Realized with dot critics on one-hot embeddings.
    ab = pc.Critic.from_embeddings("dot", temperature=1.0)
    bc = pc.Critic.from_embeddings("dot", temperature=1.0)
    a = torch.tensor([[0.0, 5.0]], dtype=torch.float64)
    bank = torch.eye(2, dtype=torch.float64)
    c = torch.tensor([[10.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    bridge = pc.Bridge([ab, bc], [bank])
    exact = bridge.log_ratio(a, c).softmax(-1)
    lse = bridge.log_ratio(a, c, method="lse").softmax(-1)
    # The docs quote three decimals: tolerance is half a unit of the last digit.
    assert_close(exact, torch.tensor([[0.382, 0.618]], dtype=torch.float64), atol=5e-4)
    assert_close(lse, torch.tensor([[0.989, 0.011]], dtype=torch.float64), atol=5e-4)


@pytest.mark.parametrize("chunk_size", [1, 5, 64])
@pytest.mark.parametrize("kind", ["tensor", "numpy", "memmap", "list", "callable"])
def test_streamed_banks_give_the_in_memory_answer(kind, chunk_size, tmp_path):
    critics = _critics("neg_sq_l2", 2)
    for c in critics:
        c.float()
    bank = torch.randn(23, 4)
    a, c = torch.randn(3, 4), torch.randn(6, 4)
    expected = {m: pc.Bridge(critics, [bank]).log_ratio(a, c, m) for m in ("exact", "lse")}
    if kind == "numpy":
        source = bank.numpy()
    elif kind == "memmap":
        path = tmp_path / "bank.npy"
        np.save(path, bank.numpy())
        source = np.load(path, mmap_mode="r")
    elif kind == "list":
        source = [bank[i : i + 10] for i in range(0, 23, 10)]
    elif kind == "callable":
        source = lambda: iter(bank.split(4))  # noqa: E731
    else:
        source = bank
    bridge = pc.Bridge(critics, [pc.Bank(source)], chunk_size=chunk_size, progress=False)
    for method, value in expected.items():
        assert_close(bridge.log_ratio(a, c, method), value, atol=1e-5, rtol=1e-5)


def test_views_and_weights():
    ab, bc = pc.Critic.from_embeddings("cosine", 0.5), pc.Critic.from_embeddings("dot", 2.0)
    emb_ab, emb_bc = torch.randn(9, 3), torch.randn(9, 5)
    log_w = torch.randn(9)
    a, c = torch.randn(2, 3), torch.randn(4, 5)
    bridge = pc.Bridge([ab, bc], [pc.Bank(views=(emb_ab, emb_bc), log_weights=log_w)])
    p_b = (ab.pairwise(a, emb_ab) + log_w).softmax(-1)
    p_c = bc.pairwise(emb_bc, c).softmax(-1)
    assert_close(bridge.log_ratio(a, c), (p_b @ p_c).log() + math.log(4), atol=1e-5)
    # Importance weights: LSE is log sum_m w_m/sum(w) exp(f_ab + f_bc).
    scores = ab.pairwise(a, emb_ab).unsqueeze(-1) + bc.pairwise(emb_bc, c) + log_w.view(-1, 1)
    lse = scores.logsumexp(1) - log_w.logsumexp(0)
    assert_close(bridge.log_ratio(a, c, "lse"), lse, atol=1e-5)


def test_fusion_hub():
    f1, f2 = pc.Critic.from_embeddings("dot", 1.0), pc.Critic.from_embeddings("dot", 0.5)
    bc = pc.Critic.from_embeddings("dot", 1.0)
    bank = torch.randn(11, 3, dtype=torch.float64)
    a1, a2 = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    c = torch.randn(5, 3, dtype=torch.float64)
    bridge = pc.Bridge([(f1, f2), bc], [bank])
    p_b = (f1.pairwise(a1, bank) + f2.pairwise(a2, bank)).softmax(-1)
    expected = (p_b @ bc.pairwise(bank, c).softmax(-1)).log() + math.log(5)
    assert_close(bridge.log_ratio((a1, a2), c), expected, atol=1e-10)
    with pytest.raises(ValueError, match="fuses 2 modalities"):
        bridge.log_ratio(a1, c)
    with pytest.raises(ValueError, match="fused query tensors have different numbers of rows"):
        bridge.log_ratio((a1, a2[:1]), c)


def test_target_bank_normalizer_and_direct():
    ab, bc = pc.Critic.from_embeddings("cosine", 0.2), pc.Critic.from_embeddings("cosine", 0.4)
    bank, target = torch.randn(8, 3), torch.randn(30, 3)
    a, c = torch.randn(2, 3), torch.randn(5, 3)
    bridge = pc.Bridge([ab, bc], [bank], target_bank=target, direct_temperature=0.1)
    g = bc.pairwise(bank, c)
    log_z = bc.pairwise(bank, target).logsumexp(-1) - math.log(30)
    expected = torch.logsumexp(
        ab.pairwise(a, bank).log_softmax(-1).unsqueeze(-1) + (g - log_z.unsqueeze(-1)), 1
    )
    assert_close(bridge.log_ratio(a, c), expected, atol=1e-5)
    direct = pc.Critic.from_embeddings("cosine", 0.1).pairwise(a, c)
    assert_close(bridge.log_ratio(a, c, "direct"), direct)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_extreme_scores_stay_finite(dtype):
    # Scores of order 1e4 nats with maxima of different rows at different bank items.
    ab = pc.Critic.from_embeddings("dot", temperature=1e-4)
    bc = pc.Critic.from_embeddings("dot", temperature=1e-4)
    bank = torch.eye(3)
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).to(dtype)
    c = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]).to(dtype)
    bridge = pc.Bridge([ab, bc], [bank.to(dtype)])
    for method in ("exact", "lse", "direct"):
        out = bridge.log_ratio(a, c, method)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all(), method
    # a_0 picks b_0 surely, and b_0 only matches c_1: p(c_1 | a_0) = 1 -> log ratio log 2.
    # Cancelling 1e4-nat scores costs a few float32 ulps of 1e4 (ulp ~ 1e-3).
    assert_close(bridge.log_ratio(a, c)[0, 1], math.log(2), atol=4 * 1e4 * 2**-23 * 8)
    # The same chain in float64 is exact to float64 precision at that scale.
    bridge64 = pc.Bridge([ab.double(), bc.double()], [bank.double()])
    assert_close(bridge64.log_ratio(a.double(), c.double())[0, 1], math.log(2), atol=1e-9)


def test_bad_inputs():
    ab, bc = pc.Critic.from_embeddings("cosine"), pc.Critic.from_embeddings("cosine")
    bank = torch.randn(5, 3)
    bridge = pc.Bridge([ab, bc], [bank])
    a, c = torch.randn(2, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="method must be one of"):
        bridge.log_ratio(a, c, method="magic")
    with pytest.raises(ValueError, match="len\\(critics\\) == len\\(banks\\) \\+ 1"):
        pc.Bridge([ab], [bank])
    with pytest.raises(ValueError, match="bank is empty"):
        pc.Bridge([ab, bc], [torch.zeros(0, 3)])
    with pytest.raises(ValueError, match="contains NaN"):
        bridge.log_ratio(torch.tensor([[float("nan"), 0.0, 0.0]]), c)
    with pytest.raises(ValueError, match="embedding dims differ"):
        bridge.log_ratio(torch.randn(2, 4), c)
    with pytest.raises(ValueError, match="non-empty batch of candidates"):
        bridge.log_ratio(a, torch.zeros(0, 3))
    with pytest.raises(TypeError, match="one-shot iterator"):
        pc.Bank(iter([bank]))
    with pytest.raises(ValueError, match="aligned pairs"):
        bridge.explain(a, c)
    with pytest.raises(ValueError, match="bank_index"):
        bridge.explain(a, c[:2], bank_index=3)
    with pytest.raises(ValueError, match="needs Bridge\\(..., marginal="):
        bridge.log_ratio(a, c, method="analytic")
    with pytest.raises(ValueError, match="direct_temperature must be positive"):
        pc.Bridge([ab, bc], [bank], direct_temperature=0.0)


@pytest.mark.parametrize(
    "similarity, marginal", [("cosine", "sphere"), ("dot", "gaussian"), ("neg_sq_l2", "gaussian")]
)
def test_analytic_is_the_large_bank_limit_of_exact(similarity, marginal):
    # Banks drawn from the declared marginal; the C normalizer from a Gaussian/uniform target.
    torch.manual_seed(0)
    ab = pc.Critic.from_embeddings(similarity, 0.7).double()
    bc = pc.Critic.from_embeddings(similarity, 0.7).double()
    bank = 0.5 * torch.randn(20_000, 3, dtype=torch.float64) + 0.2
    target = torch.randn(2000, 3, dtype=torch.float64)
    if marginal == "sphere":
        bank = bank - 0.2
        bank = bank / bank.norm(dim=-1, keepdim=True)
        target = target / target.norm(dim=-1, keepdim=True)
    bridge = pc.Bridge([ab, bc], [bank], marginal=marginal, target_bank=target)
    a, c = torch.randn(3, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    # Monte Carlo error of a 20k bank with a 2k normalizer sample is a few hundredths of a nat.
    assert_close(bridge.log_ratio(a, c, "exact"), bridge.log_ratio(a, c, "analytic"), atol=0.08)


def test_analytic_rejects_mismatched_marginal_and_views():
    dot = pc.Critic.from_embeddings("dot")
    bank = torch.randn(50, 3)
    with pytest.raises(ValueError, match="no closed form with a sphere marginal"):
        pc.Bridge([dot, dot], [bank], marginal="sphere").log_ratio(bank[:2], bank[:3], "analytic")
    views = pc.Bank(views=(bank, torch.randn(50, 3)))
    with pytest.raises(ValueError, match="shared B representation"):
        pc.Bridge([dot, dot], [views], marginal="gaussian").log_ratio(
            bank[:2], bank[:3], "analytic"
        )


def test_target_normalizer_cache_is_reused_and_invalidated():
    ab = pc.Critic.from_embeddings("dot", 1.0)
    bc = pc.Critic.from_embeddings("dot", 1.0, learn_temperature=True)
    bank, target = torch.randn(30, 3), torch.randn(40, 3)
    a, c = torch.randn(2, 3), torch.randn(5, 3)
    bridge = pc.Bridge([ab, bc], [bank], target_bank=target, chunk_size=7)
    with torch.no_grad():
        first = bridge.log_ratio(a, c)
        assert (
            len(bridge._memo._entries[("normalizers", False)][-1]) == 5
        )  # one entry per bank chunk
        assert_close(bridge.log_ratio(a, c), first)
    # An optimizer step changes the B-C critic in place: the cache must not be reused.
    optimizer = torch.optim.SGD(bc.parameters(), lr=0.5)
    loss = bridge.log_ratio(a, c).logsumexp(-1).sum()
    loss.backward()
    optimizer.step()
    fresh = pc.Bridge([ab, bc], [bank], target_bank=target, chunk_size=7)
    with torch.no_grad():
        assert_close(bridge.log_ratio(a, c), fresh.log_ratio(a, c))
        assert not torch.allclose(bridge.log_ratio(a, c), first)
