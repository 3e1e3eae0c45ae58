"""The bridge's streamed pass (chain.fused_partials) against the two-pass path and truth."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pyro_contrast as pc
from pyro_contrast.marginals import chain
from tests.common import spy_fused

SIMILARITIES = ["dot", "cosine", "neg_sq_l2", "neg_l2", "bilinear"]


def _critic(similarity, dim, temperature=0.5, bias=False, dtype=torch.float32):
    critic = pc.Critic.from_embeddings(
        similarity, temperature=temperature, bias=bias, dim_x=dim, dim_y=dim
    )
    if similarity == "bilinear":
        with torch.no_grad():
            critic.weight.copy_(torch.randn(dim, dim) / dim**0.5)
    if bias:
        with torch.no_grad():
            critic.bias.fill_(0.3)
    critic.requires_grad_(False)  # a fixed critic (gradients take the two-pass path)
    return critic.to(dtype)


def _kwargs(left, right, a, c, targets, method):
    return dict(
        left=(left,),
        right=right,
        queries=[left.encode_x(a)],
        candidates=right.encode_y(c),
        targets=targets,
        method=method,
    )


def _partials(fn, bank, log_w, kwargs, log_z=None):
    bank_left, bank_right = chain.encode_chunk(kwargs["left"], kwargs["right"], [bank])
    return fn(bank_left, bank_right, log_w, log_z=log_z, **kwargs)


@given(
    similarity=st.sampled_from(SIMILARITIES),
    method=st.sampled_from(["exact", "lse"]),
    normalizer=st.sampled_from(["candidates", "targets", "cached"]),
    weighted=st.booleans(),
    bias=st.booleans(),
    sizes=st.tuples(st.integers(1, 9), st.integers(1, 300), st.integers(1, 9)),
    block=st.sampled_from([1, 7, 64, 2**20]),
    float64=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_equals_the_two_pass_path(
    similarity, method, normalizer, weighted, bias, sizes, block, float64, seed
):
    dtype = torch.float64 if float64 else torch.float32
    gen = torch.Generator().manual_seed(seed)
    n, m, k = sizes
    dim = 4
    torch.manual_seed(seed)
    left = _critic(similarity, dim, 0.7, bias, dtype)
    right = _critic(similarity, dim, 0.4, False, dtype)
    a, bank, c = (torch.randn(s, dim, generator=gen, dtype=dtype) for s in (n, m, k))
    targets = (
        torch.randn(20, dim, generator=gen, dtype=dtype) if normalizer != "candidates" else None
    )
    log_w = torch.randn(m, generator=gen, dtype=dtype) if weighted else None
    kwargs = _kwargs(left, right, a, c, targets, method)
    log_z = None
    if normalizer == "cached" and method == "exact":
        log_z = chain.log_normalizer(right, right.encode_x(bank), targets)
    old_elements, old_min = chain._FUSED_ELEMENTS, chain._MIN_FUSED_BLOCK
    chain._FUSED_ELEMENTS, chain._MIN_FUSED_BLOCK = block, 1
    try:
        fused = _partials(chain.fused_partials, bank, log_w, kwargs, log_z)
    finally:
        chain._FUSED_ELEMENTS, chain._MIN_FUSED_BLOCK = old_elements, old_min
    assert fused is not None
    two_pass = _partials(chain.encoded_partials, bank, log_w, kwargs, log_z)
    tol = 2e-5 if dtype == torch.float32 else 1e-10
    for got, want in zip(fused, two_pass, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)


@pytest.mark.parametrize("similarity", SIMILARITIES)
@pytest.mark.parametrize("method", ["exact", "lse"])
def test_bridge_takes_it_and_matches_float64(monkeypatch, similarity, method):
    torch.manual_seed(1)
    left, right = _critic(similarity, 8), _critic(similarity, 8, 0.3)
    a, b, c = torch.randn(40, 8), torch.randn(3000, 8), torch.randn(300, 8)
    calls = spy_fused(monkeypatch)
    got = pc.Bridge([left, right], [pc.Bank(b)], progress=False).log_ratio(a, c, method=method)
    assert calls == [True]
    want = pc.Bridge([left.double(), right.double()], [pc.Bank(b.double())], progress=False)
    want = want.log_ratio(a.double(), c.double(), method=method)
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=1e-6)


@pytest.mark.parametrize("normalizer", ["candidates", "targets"])
def test_repairs_cells_the_fast_path_cannot_certify(monkeypatch, normalizer):
    # spread-out squared-L2 scores (spans of ~1,000 nats): most cells fail the float32
    # certificate; with the early bail-out off, all of them go through the repair
    monkeypatch.setattr(chain, "_hopeless", lambda stream: False)
    torch.manual_seed(2)
    critics = [_critic("neg_sq_l2", 6, 1.0) for _ in range(2)]
    a, b, c = 10 * torch.randn(30, 6), 10 * torch.randn(2000, 6), 10 * torch.randn(300, 6)
    t = 10 * torch.randn(300, 6) if normalizer == "targets" else None
    calls = spy_fused(monkeypatch)
    bridge = pc.Bridge(critics, [pc.Bank(b)], target_bank=t, progress=False)
    got = bridge.log_ratio(a, c)
    assert calls == [True]
    crit64 = [x.double() for x in critics]
    t64 = None if t is None else t.double()
    want = pc.Bridge(crit64, [pc.Bank(b.double())], target_bank=t64, progress=False)
    want = want.log_ratio(a.double(), c.double())
    assert float(want.max() - want.min()) > 500
    torch.testing.assert_close(got.double(), want, atol=1e-3, rtol=1e-6)


def test_gives_way_when_most_cells_would_fail(monkeypatch):
    torch.manual_seed(3)
    critics = [_critic("neg_sq_l2", 6, 1.0) for _ in range(2)]
    a, b, c = 10 * torch.randn(30, 6), 10 * torch.randn(9000, 6), 10 * torch.randn(300, 6)
    calls = spy_fused(monkeypatch)
    got = pc.Bridge(critics, [pc.Bank(b)], progress=False).log_ratio(a, c)
    assert calls == [False]  # the first block predicted a repair of most of the matrix
    crit64 = [x.double() for x in critics]
    want = pc.Bridge(crit64, [pc.Bank(b.double())], progress=False)
    torch.testing.assert_close(
        got.double(), want.log_ratio(a.double(), c.double()), atol=1e-3, rtol=1e-6
    )


def test_not_taken_where_it_does_not_apply():
    torch.manual_seed(4)
    left, right = _critic("dot", 3), _critic("dot", 3)
    a, bank, c = torch.randn(4, 3), torch.randn(50, 3), torch.randn(5, 3)
    kwargs = _kwargs(left, right, a, c, None, "exact")
    assert _partials(chain.fused_partials, bank, None, kwargs) is not None
    # gradients wanted: the two-pass path keeps the graph
    learned = pc.Critic.from_embeddings("dot", learn_temperature=True)
    grad_kwargs = _kwargs(learned, right, a, c, None, "exact")
    assert _partials(chain.fused_partials, bank, None, grad_kwargs) is None
    with torch.no_grad():
        assert _partials(chain.fused_partials, bank, None, grad_kwargs) is not None

    # a critic class with its own scoring
    class Custom(pc.Critic):
        def pairwise_embeddings(self, u, v, chunk_size=None):
            return super().pairwise_embeddings(u, v, chunk_size) * 2

    custom = Custom(None, None, "dot")
    assert (
        _partials(chain.fused_partials, bank, None, _kwargs(custom, right, a, c, None, "exact"))
        is None
    )
    # several left critics (a hub)
    hub = dict(kwargs, left=(left, left), queries=[a, a])
    bank_left, bank_right = chain.encode_chunk(hub["left"], right, [bank])
    assert chain.fused_partials(bank_left, bank_right, None, **hub) is None
    # mixed precision across the two critics
    mixed = dict(kwargs, candidates=c.double())
    assert _partials(chain.fused_partials, bank, None, mixed) is None


def test_overflowing_scores_raise_the_usual_error():
    critics = [_critic("dot", 2, 1.0) for _ in range(2)]
    a, b, c = torch.full((3, 2), 1e20), torch.full((300, 2), 1e20), torch.ones(4, 2)
    bridge = pc.Bridge(critics, [pc.Bank(b)], progress=False)
    with pytest.raises(ValueError, match="scores"):
        bridge.log_ratio(a, c, method="lse")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["exact", "lse"])
def test_cuda_matches_cpu(monkeypatch, method):
    torch.manual_seed(5)
    critics = [_critic("cosine", 16, 0.07) for _ in range(2)]
    a, b, c = torch.randn(64, 16), torch.randn(20000, 16), torch.randn(300, 16)
    want = pc.Bridge(critics, [pc.Bank(b)], progress=False).log_ratio(a, c, method=method)
    calls = spy_fused(monkeypatch)
    bridge = pc.Bridge(critics, [pc.Bank(b)], progress=False).to("cuda")
    got = bridge.log_ratio(a.cuda(), c.cuda(), method=method)
    assert calls and all(calls)
    torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-5)
