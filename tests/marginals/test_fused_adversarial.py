"""Adversarial review of the bridge's streamed pass (chain.fused_partials, LogMatMulStream).

Every answer is compared with an independent float64 brute force built from plain torch
(broadcast logsumexp over the N x M x K cube), never with library internals:

- ``"exact"``: ``log sum_m softmax_m(f_AB(a_n, b_m) + log w_m) exp(f_BC(b_m, c_k) - log Z_m)``
  with ``Z_m = mean_s exp f_BC(b_m, s)`` over the candidates (or ``target_bank``);
- ``"lse"``: ``log sum_m w_m exp(f_AB(a_n, b_m) + f_BC(b_m, c_k))`` with normalized weights
  (uniform: ``1 / M``).

Complements tests/marginals/test_fused.py (fused vs two-pass on random scores) and
tests/ops/test_streaming.py (the stream alone): here the running shifts grow block after
block, temperatures are extreme, weights are ``-inf``, sizes sit on the block boundaries,
inputs are half precision, and the bridge's caches see in-place edits.

Findings (each test failed before its fix): a target bank that wants a gradient ran the
fused pass (and left the thread's scratch buffer inside an autograd graph); a call under
``torch.inference_mode()`` left inference-tensor scratch buffers behind; the memo missed
parameter-free encoder swaps and ``critic.similarity`` changes; and (speed only) a probe
block of zero-weight items turned the fused pass down for the whole bank.
"""

import math
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pyro_contrast as pc
from pyro_contrast.marginals import chain
from pyro_contrast.ops import _logmatmul_kernels, logmatmul
from tests.common import spy_fused

pytestmark = pytest.mark.filterwarnings(
    "ignore::pyro_contrast.marginals.bridge.SmallNormalizerWarning"
)

F64 = torch.float64
EPS32 = torch.finfo(torch.float32).eps


# "lse" has no C normalizer: the pairs of method and normalizer source that exist
METHOD_NORMALIZERS = [("exact", "candidates"), ("exact", "targets"), ("lse", "candidates")]


@pytest.fixture(autouse=True)
def _fresh_scratch_buffers(monkeypatch):
    """Each test gets its own thread-local scratch buffers (a pure speed cache): two of the
    bugs fixed below left the thread's buffers unusable; a regression must not leak out."""
    monkeypatch.setattr(_logmatmul_kernels, "_SCRATCH", threading.local())


# -- an independent float64 truth -----------------------------------------------------------


def _similarity(critic, u, v):
    """``f(u_i, v_j)`` (I, J) in float64 from the definitions, not from the library's code."""
    u, v = u.to(F64), v.to(F64)
    kind = critic.similarity
    if kind == "dot":
        sim = u @ v.T
    elif kind == "cosine":
        # the cosine with a zero vector is 0 (the critic's definition)
        unit_u = u / u.norm(dim=-1, keepdim=True).clamp(min=1e-300)
        unit_v = v / v.norm(dim=-1, keepdim=True).clamp(min=1e-300)
        sim = unit_u @ unit_v.T
    elif kind == "neg_sq_l2":
        sim = -0.5 * (u.unsqueeze(1) - v.unsqueeze(0)).pow(2).sum(-1)
    elif kind == "neg_l2":
        sim = -(u.unsqueeze(1) - v.unsqueeze(0)).pow(2).sum(-1).sqrt()
    elif kind == "bilinear":
        sim = u @ critic.weight.detach().to(F64) @ v.T
    else:
        raise AssertionError(kind)
    # T is rounded in the critic's own dtype (float32 or better), as the critic documents
    log_t = critic.log_temperature.detach()
    log_t = log_t.float() if log_t.dtype in (torch.float16, torch.bfloat16) else log_t
    scores = sim / log_t.exp().item()
    if critic.bias is not None:
        scores = scores + critic.bias.item()
    return scores


def _truth(ab, bc, a, b, c, *, log_w=None, targets=None, method="exact"):
    """The float64 brute force of the module docstring, (N, K)."""
    scores_ab = _similarity(ab, a, b)  # (N, M)
    scores_bc = _similarity(bc, b, c)  # (M, K)
    if log_w is None:
        log_w = torch.full((b.shape[0],), -math.log(b.shape[0]), dtype=F64)
    else:
        log_w = log_w.to(F64) - torch.logsumexp(log_w.to(F64), 0)
    if method == "lse":
        cube = (scores_ab + log_w).unsqueeze(-1) + scores_bc.unsqueeze(0)
        return torch.logsumexp(cube, 1)
    norm = c if targets is None else targets
    log_z = torch.logsumexp(_similarity(bc, b, norm), -1) - math.log(norm.shape[0])
    posterior = (scores_ab + log_w).log_softmax(-1)  # p(b_m | a_n)
    cube = posterior.unsqueeze(-1) + (scores_bc - log_z.unsqueeze(-1)).unsqueeze(0)
    return torch.logsumexp(cube, 1)


def _score_scale(ab, bc, a, b, c, targets=None):
    """The largest |score| the chain forms: float32 scores carry ~eps of it as error."""
    scales = [_similarity(ab, a, b).abs().max(), _similarity(bc, b, c).abs().max()]
    if targets is not None:
        scales.append(_similarity(bc, b, targets).abs().max())
    return float(max(scales))


def _assert_matches(got, want, *, atol, rtol, exact_inf=True):
    assert got.shape == want.shape
    assert not bool(torch.isnan(got).any()), "NaN in the answer"
    got = got.detach().to(F64)
    if exact_inf:
        same_inf = torch.isinf(want) & (got == want)
        assert bool((torch.isinf(got) <= same_inf).all()), "an infinity the truth lacks"
    err = (got - want).abs()
    err = torch.where(torch.isinf(want) & (got == want), torch.zeros_like(err), err)
    tol = atol + rtol * want.abs()
    worst = int((err - tol).argmax())
    assert bool((err <= tol).all()), (
        f"max error {float(err.max()):.3g} (at flat index {worst}: got "
        f"{float(got.flatten()[worst])!r}, want {float(want.flatten()[worst])!r})"
    )


def _tolerance(dtype, scale=0.0):
    """(atol, rtol): the float32 contract plus the rounding of scores of size ``scale``."""
    if dtype == F64:
        return 1e-9 + 16 * torch.finfo(F64).eps * scale, 1e-12
    return 2e-4 + 8 * EPS32 * scale, 1e-6


# -- building blocks ------------------------------------------------------------------------


def _critic(
    similarity, temperature, dim, *, dtype=torch.float32, weight=None, learn=False, bias=None
):
    extra = dict(dim_x=dim, dim_y=dim) if similarity == "bilinear" else {}
    critic = pc.Critic.from_embeddings(
        similarity,
        temperature=temperature,
        learn_temperature=learn,
        bias=bias is not None,
        **extra,
    )
    if bias is not None:
        with torch.no_grad():
            critic.bias.fill_(bias)
    if weight is not None and similarity == "bilinear":
        with torch.no_grad():
            critic.weight.copy_(weight)
    if not learn:
        critic.requires_grad_(False)
    return critic.to(dtype)


def _bridge(ab, bc, bank, *, log_w=None, targets=None, chunk_size=None):
    return pc.Bridge(
        [ab, bc],
        [pc.Bank(bank, log_weights=log_w)],
        target_bank=targets,
        chunk_size=chunk_size,
        progress=False,
    )


def _ramp_bank(similarity, m, d, order, gen, dtype, queries):
    """A bank whose scores grow (or fall) by tens of nats from its first items to its last."""
    direction = queries.mean(0)
    direction = direction / direction.norm()
    noise = torch.randn(m, d, generator=gen, dtype=dtype)
    t = torch.linspace(0, 1, m, dtype=dtype).unsqueeze(-1)
    if similarity in ("dot", "bilinear"):
        # norms from 0.05 to 5: the first items' scores are ~100x below the last ones'
        bank = noise / noise.norm(dim=-1, keepdim=True) * (0.05 + 5 * t)
    elif similarity == "cosine":
        # from anti-aligned with the queries to aligned: cosines from ~-1 to ~1
        bank = (2 * t - 1) * 3 * direction + 0.3 * noise
    else:
        # neg_sq_l2, neg_l2: from far (distance ~8) to on top of the queries
        bank = direction * 8 * (1 - t) + 0.3 * noise
    if order == "decreasing":
        bank = bank.flip(0)
    elif order == "shuffled":
        bank = bank[torch.randperm(m, generator=gen)]
    return bank


# -- 1. growing scores: the running shifts rescale what was accumulated ---------------------


@settings(max_examples=30, deadline=None)
@given(
    similarity=st.sampled_from(["dot", "bilinear", "cosine", "neg_sq_l2", "neg_l2"]),
    bias=st.sampled_from([None, None, 0.7]),
    order=st.sampled_from(["increasing", "increasing", "decreasing", "shuffled"]),
    method=st.sampled_from(["exact", "lse"]),
    normalizer=st.sampled_from(["candidates", "targets"]),
    weighted=st.booleans(),
    float64=st.booleans(),
    sizes=st.tuples(st.integers(1, 12), st.integers(40, 600), st.integers(1, 12)),
    elements=st.sampled_from([64, 200, 1000]),
    seed=st.integers(0, 2**16),
)
def test_growing_scores_rescale_the_running_shifts(
    similarity, bias, order, method, normalizer, weighted, float64, sizes, elements, seed
):
    # Small blocks (and a small probe) so the shifts grow at many block boundaries; the
    # early bail-out is off so the streamed pass runs to the end on every example.
    dtype = F64 if float64 else torch.float32
    gen = torch.Generator().manual_seed(seed)
    n, m, k = sizes
    d = 5
    a = torch.randn(n, d, generator=gen, dtype=dtype) + 1.0
    c = torch.randn(k, d, generator=gen, dtype=dtype)
    bank = _ramp_bank(similarity, m, d, order, gen, dtype, a)
    weight = torch.randn(d, d, generator=gen, dtype=dtype) / d**0.5 + torch.eye(d, dtype=dtype)
    # a bias takes the scores out of bits (natural-log exponentials) in the streamed pass
    ab = _critic(similarity, 0.3, d, dtype=dtype, weight=weight, bias=bias)
    bc = _critic(similarity, 0.5, d, dtype=dtype, weight=weight.T, bias=bias)
    targets = torch.randn(50, d, generator=gen, dtype=dtype) if normalizer == "targets" else None
    log_w = 2 * torch.randn(m, generator=gen, dtype=dtype) if weighted else None
    want = _truth(ab, bc, a, bank, c, log_w=log_w, targets=targets, method=method)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chain, "_FUSED_ELEMENTS", elements)
        patch.setattr(chain, "_MIN_FUSED_BLOCK", 8)
        patch.setattr(chain, "_hopeless", lambda stream: False)
        calls = spy_fused(patch)
        got = _bridge(ab, bc, bank, log_w=log_w, targets=targets).log_ratio(a, c, method)
    assert calls == [True]
    assert got.dtype == dtype
    atol, rtol = _tolerance(dtype, _score_scale(ab, bc, a, bank, c, targets))
    _assert_matches(got, want, atol=atol, rtol=rtol)


@pytest.mark.parametrize(("method", "normalizer"), METHOD_NORMALIZERS)
def test_growing_dot_scores_with_the_real_block_sizes(monkeypatch, method, normalizer):
    # K = 2048 candidates: blocks of 2**20 // 2048 = 512 items after a probe of 256; the bank
    # is sorted by increasing norm, so the probe's maxima lie ~100 nats below the last block's
    # (the probe's mass is rescaled to nothing, past the float32 range)
    gen = torch.Generator().manual_seed(11)
    d, m = 8, 2300
    a, c = torch.randn(6, d, generator=gen), torch.randn(2048, d, generator=gen)
    bank = torch.randn(m, d, generator=gen)
    bank = bank / bank.norm(dim=-1, keepdim=True) * torch.linspace(0.05, 30, m).unsqueeze(-1)
    targets = torch.randn(400, d, generator=gen) if normalizer == "targets" else None
    ab, bc = _critic("dot", 0.7, d), _critic("dot", 0.9, d)
    calls = spy_fused(monkeypatch)
    got = _bridge(ab, bc, bank, targets=targets).log_ratio(a, c, method)
    assert calls == [True]
    scores = _similarity(ab, a, bank)
    assert float((scores[:, -512:].amax(-1) - scores[:, :256].amax(-1)).min()) > 60
    want = _truth(ab, bc, a, bank, c, targets=targets, method=method)
    _assert_matches(got, want, atol=2e-4, rtol=1e-6)


@pytest.mark.parametrize("similarity", ["dot", "neg_sq_l2"])
@pytest.mark.parametrize("method", ["exact", "lse"])
def test_hundreds_of_rescales_stay_within_the_contract(monkeypatch, similarity, method):
    # blocks of 8 items over a bank whose items move steadily towards the queries and the
    # candidates: every one of the 250 blocks raises the row and the column shifts, and each
    # raise rescales the accumulated mass (rounding accumulates per block)
    monkeypatch.setattr(chain, "_FUSED_ELEMENTS", 64)
    monkeypatch.setattr(chain, "_MIN_FUSED_BLOCK", 8)
    monkeypatch.setattr(chain, "_hopeless", lambda stream: False)
    gen = torch.Generator().manual_seed(24)
    d, m = 4, 2000
    a, c = torch.randn(8, d, generator=gen) + 1, torch.randn(8, d, generator=gen) + 1
    toward = torch.full((d,), 0.5)
    t = torch.linspace(0, 1, m).unsqueeze(-1)
    if similarity == "dot":
        bank = toward * (0.05 + 6 * t)
    else:
        bank = (a.mean(0) + c.mean(0)) / 2 + 8 * (1 - t) * toward
    bank = bank + 0.01 * torch.randn(m, d, generator=gen)
    ab, bc = _critic(similarity, 0.5, d), _critic(similarity, 0.5, d)
    calls = spy_fused(monkeypatch)
    got = _bridge(ab, bc, bank).log_ratio(a, c, method)
    assert calls == [True]
    _assert_matches(got, _truth(ab, bc, a, bank, c, method=method), atol=2e-4, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("mode", ["exact", "targets", "lse"])
def test_falling_scores_underflow_the_row_normalizer(monkeypatch, dtype, mode):
    # norms fall from 50 to 0.05: the later items' C scores lie ~300 nats below the column
    # shifts the first blocks set, so their in-pass normalizer sums underflow (float32) and
    # are recomputed row by row, and their cells need the repair
    monkeypatch.setattr(chain, "_hopeless", lambda stream: False)
    gen = torch.Generator().manual_seed(17)
    d = 4
    a, c = (
        torch.randn(5, d, generator=gen, dtype=dtype),
        torch.randn(300, d, generator=gen, dtype=dtype),
    )
    bank = torch.randn(1500, d, generator=gen, dtype=dtype)
    norms = torch.linspace(50, 0.05, 1500, dtype=dtype).unsqueeze(-1)
    bank = bank / bank.norm(dim=-1, keepdim=True) * norms
    targets = torch.randn(100, d, generator=gen, dtype=dtype) if mode == "targets" else None
    method = "lse" if mode == "lse" else "exact"
    ab, bc = _critic("dot", 0.5, d, dtype=dtype), _critic("dot", 0.5, d, dtype=dtype)
    calls = spy_fused(monkeypatch)
    got = _bridge(ab, bc, bank, targets=targets).log_ratio(a, c, method)
    assert calls == [True]
    want = _truth(ab, bc, a, bank, c, targets=targets, method=method)
    atol, rtol = _tolerance(dtype, _score_scale(ab, bc, a, bank, c, targets))
    _assert_matches(got, want, atol=atol, rtol=rtol)


# -- 2. extreme temperatures, scores spanning hundreds of nats ------------------------------


@pytest.mark.parametrize("similarity", ["cosine", "dot", "neg_sq_l2"])
@pytest.mark.parametrize("temperature", [1e-3, 1e-2, 1e3])
@pytest.mark.parametrize("method", ["exact", "lse"])
@pytest.mark.parametrize("force", [False, True])
def test_extreme_temperatures(monkeypatch, similarity, temperature, method, force):
    # force: the early bail-out off, so the streamed pass and its repair carry cold scores
    if force:
        monkeypatch.setattr(chain, "_hopeless", lambda stream: False)
    gen = torch.Generator().manual_seed(3)
    d = 6
    a, bank, c = (torch.randn(s, d, generator=gen) for s in (7, 700, 9))
    ab, bc = _critic(similarity, temperature, d), _critic(similarity, temperature, d)
    calls = spy_fused(monkeypatch)
    got = _bridge(ab, bc, bank).log_ratio(a, c, method)
    assert calls == [True] or (calls == [False] and not force)
    assert bool(torch.isfinite(got).all())
    want = _truth(ab, bc, a, bank, c, method=method)
    atol, rtol = _tolerance(torch.float32, _score_scale(ab, bc, a, bank, c))
    _assert_matches(got, want, atol=atol, rtol=rtol)


@pytest.mark.parametrize(("method", "normalizer"), METHOD_NORMALIZERS)
def test_float64_scores_spanning_thousands_of_nats(monkeypatch, normalizer, method):
    # spread-out squared-L2 scores (spans of several thousand nats, beyond even float64's
    # ~1,000-nat fast path): certified cells exact, the rest repaired, all to 1e-9
    monkeypatch.setattr(chain, "_hopeless", lambda stream: False)
    gen = torch.Generator().manual_seed(4)
    d = 4
    a, bank, c = (12 * torch.randn(s, d, generator=gen, dtype=F64) for s in (9, 900, 11))
    targets = 12 * torch.randn(60, d, generator=gen, dtype=F64) if normalizer == "targets" else None
    ab, bc = _critic("neg_sq_l2", 1.0, d, dtype=F64), _critic("neg_sq_l2", 0.5, d, dtype=F64)
    calls = spy_fused(monkeypatch)
    got = _bridge(ab, bc, bank, targets=targets).log_ratio(a, c, method)
    assert calls == [True]
    want = _truth(ab, bc, a, bank, c, targets=targets, method=method)
    assert float(want.max() - want.min()) > 1000
    atol, rtol = _tolerance(F64, _score_scale(ab, bc, a, bank, c, targets))
    _assert_matches(got, want, atol=atol, rtol=rtol)


def test_scores_that_overflow_raise_a_clear_error():
    # scores beyond float32's range, on the query side and on the candidate side
    ab, bc = _critic("dot", 1e-3, 2), _critic("dot", 1e-3, 2)
    bank = torch.randn(600, 2)
    for a, c in [
        (torch.full((3, 2), 1e36), torch.ones(4, 2)),
        (torch.ones(3, 2), torch.full((4, 2), 1e36)),
    ]:
        for method in ("exact", "lse"):
            with pytest.raises(ValueError, match="scores"):
                _bridge(ab, bc, bank).log_ratio(a, c, method)


# -- 3. -inf and very unequal log weights ----------------------------------------------------


def _weights(pattern, m, probe, gen):
    log_w = 3 * torch.randn(m, generator=gen)
    if pattern == "probe_block":
        log_w[:probe] = -math.inf  # the whole first (probe) block has zero weight
    elif pattern == "second_half":
        log_w[m // 2 :] = -math.inf
    elif pattern == "alternate":
        log_w[::2] = -math.inf
    elif pattern == "all_but_last":
        log_w[:] = -math.inf
        log_w[-1] = 0.0
    elif pattern == "unequal":
        log_w = torch.linspace(-600.0, 0.0, m)[torch.randperm(m, generator=gen)]
    elif pattern == "huge_finite_probe":
        log_w[:probe] = -1e30  # finite, but far below float32's reach of the others
    return log_w


@pytest.mark.parametrize(
    "pattern",
    ["probe_block", "huge_finite_probe", "second_half", "alternate", "all_but_last", "unequal"],
)
@pytest.mark.parametrize(
    "method,normalizer", [("exact", "candidates"), ("exact", "targets"), ("lse", None)]
)
@pytest.mark.parametrize("chunk_size", [None, 128])
def test_minus_inf_and_very_unequal_log_weights(
    monkeypatch, pattern, method, normalizer, chunk_size
):
    gen = torch.Generator().manual_seed(5)
    d, (n, m, k) = 5, (4, 700, 6)
    a, bank, c = (torch.randn(s, d, generator=gen) for s in (n, m, k))
    targets = torch.randn(30, d, generator=gen) if normalizer == "targets" else None
    log_w = _weights(pattern, m, 256, gen)
    ab, bc = _critic("dot", 0.5, d), _critic("cosine", 0.2, d)
    calls = spy_fused(monkeypatch)
    got = _bridge(ab, bc, bank, log_w=log_w, targets=targets, chunk_size=chunk_size).log_ratio(
        a, c, method
    )
    assert calls  # the streamed pass was offered every chunk, whether it took it or not
    want = _truth(ab, bc, a, bank, c, log_w=log_w, targets=targets, method=method)
    assert bool(torch.isfinite(want).all())
    _assert_matches(got, want, atol=2e-4, rtol=1e-6)


@pytest.mark.parametrize("method", ["exact", "lse"])
def test_a_chunk_of_only_zero_weights_contributes_nothing(monkeypatch, method):
    # chunk_size 100: the second chunk's weights are all -inf (its partials are -inf)
    gen = torch.Generator().manual_seed(6)
    d = 3
    a, bank, c = (torch.randn(s, d, generator=gen) for s in (3, 300, 5))
    log_w = torch.randn(300, generator=gen)
    log_w[100:200] = -math.inf
    ab, bc = _critic("dot", 0.5, d), _critic("dot", 0.5, d)
    calls = spy_fused(monkeypatch)
    got = _bridge(ab, bc, bank, log_w=log_w, chunk_size=100).log_ratio(a, c, method)
    assert calls == [True, True, True]
    want = _truth(ab, bc, a, bank, c, log_w=log_w, method=method)
    _assert_matches(got, want, atol=2e-4, rtol=1e-6)
    kept = torch.cat([bank[:100], bank[200:]])
    fresh = _bridge(ab, bc, kept, log_w=torch.cat([log_w[:100], log_w[200:]]), chunk_size=100)
    torch.testing.assert_close(got, fresh.log_ratio(a, c, method), atol=2e-5, rtol=1e-6)


def test_a_zero_weight_probe_block_keeps_the_streamed_pass(monkeypatch):
    gen = torch.Generator().manual_seed(7)
    d = 4
    a, bank, c = (torch.randn(s, d, generator=gen) for s in (8, 3000, 300))
    log_w = torch.zeros(3000)
    log_w[:400] = -math.inf  # e.g. masked items sorted first: the whole probe (375 items)
    ab, bc = _critic("cosine", 0.1, d), _critic("cosine", 0.1, d)
    calls = spy_fused(monkeypatch)
    got = _bridge(ab, bc, bank, log_w=log_w).log_ratio(a, c)
    want = _truth(ab, bc, a, bank, c, log_w=log_w)
    _assert_matches(got, want, atol=2e-4, rtol=1e-6)  # the answer is right either way
    assert calls == [True]


# -- 4. sizes around the block boundaries, several chunks ------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    shape=st.sampled_from([(1, 4096), (4096, 1), (1, 1), (5, 2048), (2, 1500), (3, 7)]),
    m=st.sampled_from([1, 2, 255, 256, 257, 288, 511, 512, 513, 767, 768, 769, 1025]),
    chunk_size=st.sampled_from([None, 100, 256, 257, 511]),
    mode=st.sampled_from(["exact", "targets", "lse"]),
    seed=st.integers(0, 2**16),
)
def test_sizes_around_block_boundaries(shape, m, chunk_size, mode, seed):
    # with max(N, K) = 4096, 2048, 1500 the blocks hold 256, 512, 699 items after a probe of
    # 256; M = 1 and N or K = 1 too
    n, k = shape
    gen = torch.Generator().manual_seed(seed)
    d = 4
    a, bank, c = (torch.randn(s, d, generator=gen) for s in (n, m, k))
    targets = torch.randn(40, d, generator=gen) if mode == "targets" else None
    method = "lse" if mode == "lse" else "exact"
    ab, bc = _critic("cosine", 0.25, d), _critic("dot", 0.8, d)
    with pytest.MonkeyPatch.context() as patch:
        calls = spy_fused(patch)
        got = _bridge(ab, bc, bank, targets=targets, chunk_size=chunk_size).log_ratio(a, c, method)
    size = chunk_size or m
    assert calls == [True] * math.ceil(m / size)
    want = _truth(ab, bc, a, bank, c, targets=targets, method=method)
    _assert_matches(got, want, atol=2e-4, rtol=1e-6)


def test_chunks_of_one_item(monkeypatch):
    gen = torch.Generator().manual_seed(8)
    a, bank, c = (torch.randn(s, 3, generator=gen) for s in (2, 5, 3))
    ab, bc = _critic("neg_sq_l2", 0.5, 3), _critic("bilinear", 0.5, 3, weight=torch.randn(3, 3))
    for method in ("exact", "lse"):
        calls = spy_fused(monkeypatch)
        got = _bridge(ab, bc, bank, chunk_size=1).log_ratio(a, c, method)
        assert calls == [True] * 5
        want = _truth(ab, bc, a, bank, c, method=method)
        _assert_matches(got, want, atol=2e-5, rtol=1e-6)


@pytest.mark.parametrize("kind", ["array", "iterable"])
@pytest.mark.parametrize("mode", ["exact", "targets", "lse"])
def test_streamed_banks_outside_memory(monkeypatch, kind, mode):
    # numpy and iterable banks: no cached factors or normalizers, float64 accumulation;
    # chunks of 300 with a growing-norm dot bank and a weighted tail
    gen = torch.Generator().manual_seed(29)
    d = 4
    a, c = torch.randn(4, d, generator=gen), torch.randn(6, d, generator=gen)
    items = torch.randn(1000, d, generator=gen)
    items = items / items.norm(dim=-1, keepdim=True) * torch.linspace(0.1, 12, 1000).unsqueeze(-1)
    log_w = torch.randn(1000, generator=gen)
    log_w[350:450] = -math.inf
    targets = torch.randn(50, d, generator=gen) if mode == "targets" else None
    method = "lse" if mode == "lse" else "exact"
    source = items.numpy()
    if kind == "iterable":
        source = [items[i : i + 300].numpy() for i in range(0, 1000, 300)]
    ab, bc = _critic("dot", 0.5, d), _critic("dot", 0.5, d)
    calls = spy_fused(monkeypatch)
    bridge = pc.Bridge(
        [ab, bc],
        [pc.Bank(source, log_weights=log_w)],
        target_bank=targets,
        chunk_size=300,
        progress=False,
    )
    got = bridge.log_ratio(a, c, method)
    assert calls == [True] * 4
    want = _truth(ab, bc, a, items, c, log_w=log_w, targets=targets, method=method)
    atol, rtol = _tolerance(torch.float32, _score_scale(ab, bc, a, items, c, targets))
    _assert_matches(got, want, atol=atol, rtol=rtol)


# -- 5. dtypes --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", ["exact", "lse"])
def test_half_precision_inputs_are_upcast(monkeypatch, dtype, method):
    gen = torch.Generator().manual_seed(9)
    d = 6
    a, bank, c, targets = (torch.randn(s, d, generator=gen).to(dtype) for s in (5, 800, 7, 300))
    ab, bc = _critic("cosine", 0.1, d), _critic("dot", 0.5, d)
    calls = spy_fused(monkeypatch)
    got = _bridge(ab, bc, bank, targets=targets).log_ratio(a, c, method)
    assert calls == [True]
    assert got.dtype == torch.float32
    want = _truth(ab, bc, a, bank, c, targets=targets, method=method)  # of the rounded inputs
    _assert_matches(got, want, atol=2e-4, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("similarity", ["bilinear", "dot"])
def test_half_precision_critics_score_in_float32(monkeypatch, dtype, similarity):
    # a float16/bfloat16 critic (temperature and bilinear weight rounded to it) on float32
    # inputs: the streamed pass scores in float32, with the critic's rounded values
    gen = torch.Generator().manual_seed(21)
    d = 6
    weight = torch.randn(d, d, generator=gen) / d**0.5
    ab = _critic(similarity, 0.3, d, weight=weight).to(dtype)
    bc = _critic(similarity, 0.7, d, weight=weight.T).to(dtype)
    a, bank, c = (torch.randn(s, d, generator=gen) for s in (5, 900, 300))
    for method in ("exact", "lse"):
        calls = spy_fused(monkeypatch)
        got = _bridge(ab, bc, bank).log_ratio(a, c, method)
        assert calls == [True] and got.dtype == torch.float32
        _assert_matches(got, _truth(ab, bc, a, bank, c, method=method), atol=2e-4, rtol=1e-6)


@pytest.mark.parametrize("wide", ["queries", "bank", "candidates"])
def test_mixed_float32_and_float64_inputs(monkeypatch, wide):
    gen = torch.Generator().manual_seed(10)
    d = 4
    inputs = {
        name: torch.randn(s, d, generator=gen)
        for name, s in (("queries", 6), ("bank", 600), ("candidates", 8))
    }
    inputs[wide] = inputs[wide].double()
    ab, bc = _critic("dot", 0.5, d), _critic("cosine", 0.3, d)
    for method in ("exact", "lse"):
        got = _bridge(ab, bc, inputs["bank"]).log_ratio(
            inputs["queries"], inputs["candidates"], method
        )
        want = _truth(
            ab, bc, inputs["queries"], inputs["bank"], inputs["candidates"], method=method
        )
        _assert_matches(got, want, atol=2e-4, rtol=1e-6)


def test_zero_vectors_under_cosine(monkeypatch):
    # the cosine with a zero vector is 0: zero queries, bank items and candidates
    gen = torch.Generator().manual_seed(18)
    d = 4
    a, bank, c = (torch.randn(s, d, generator=gen) for s in (4, 600, 7))
    a[1] = 0.0
    bank[::7] = 0.0
    c[2] = 0.0
    ab, bc = _critic("cosine", 0.05, d), _critic("cosine", 0.1, d)
    for method in ("exact", "lse"):
        calls = spy_fused(monkeypatch)
        got = _bridge(ab, bc, bank).log_ratio(a, c, method)
        assert calls == [True]
        _assert_matches(got, _truth(ab, bc, a, bank, c, method=method), atol=2e-4, rtol=1e-6)


def test_non_contiguous_and_expanded_inputs(monkeypatch):
    gen = torch.Generator().manual_seed(19)
    d = 4
    wide = torch.randn(800, 2 * d, generator=gen)
    bank = wide[:, ::2]  # strided rows
    a = torch.randn(d, 6, generator=gen).T  # transposed
    c = torch.randn(1, d, generator=gen).expand(5, d)  # stride-0 rows, identical candidates
    same = torch.randn(1, d, generator=gen).expand(300, d)  # a stride-0 bank
    ab, bc = _critic("dot", 0.5, d), _critic("neg_sq_l2", 0.5, d)
    for items in (bank, same):
        for method in ("exact", "lse"):
            calls = spy_fused(monkeypatch)
            got = _bridge(ab, bc, items, chunk_size=350).log_ratio(a, c, method)
            assert all(calls)
            want = _truth(ab, bc, a, items, c, method=method)
            _assert_matches(got, want, atol=2e-4, rtol=1e-6)


# -- 6. the caches never give stale answers -------------------------------------------------


MUTATIONS = [
    "bank_in_place",
    "bank_rows_in_place",
    "left_temperature",
    "right_temperature",
    "left_weight",
    "right_weight",
    "log_weights_in_place",
    "target_in_place",
    "target_replaced",
    "chunk_size",
    "to_float64",
]


def _mutate(bridge, name, gen):
    ab, bc = bridge.critics
    bank = bridge.banks[0]
    with torch.no_grad():
        if name == "bank_in_place":
            bank.view0.mul_(1.7).add_(0.2)
        elif name == "bank_rows_in_place":
            bank.view0[100:150] = 3 * torch.randn(50, bank.view0.shape[1], generator=gen)
        elif name == "left_temperature":
            ab.log_temperature.sub_(0.5)
        elif name == "right_temperature":
            bc.log_temperature.add_(0.4)
        elif name == "left_weight":
            ab.weight.add_(torch.randn(ab.weight.shape, generator=gen))
        elif name == "right_weight":
            bc.weight.mul_(-1.5)
        elif name == "log_weights_in_place":
            bank.log_weights.add_(torch.randn(len(bank), generator=gen, dtype=F64))
        elif name == "target_in_place":
            bridge.target_bank.mul_(0.5)
        elif name == "target_replaced":
            bridge.target_bank = torch.randn(
                77, bridge.target_bank.shape[1], generator=gen, dtype=bridge.target_bank.dtype
            )
        elif name == "chunk_size":
            bridge.chunk_size = 257
        elif name == "to_float64":
            bridge.double()


def _answers(bridge, a, c):
    return {method: bridge.log_ratio(a, c, method) for method in ("exact", "lse")}


@settings(max_examples=20, deadline=None)
@given(
    mutations=st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_cached_factors_and_normalizers_follow_every_edit(mutations, seed):
    gen = torch.Generator().manual_seed(seed)
    d = 4
    a, c = torch.randn(5, d, generator=gen), torch.randn(9, d, generator=gen)
    bank = torch.randn(700, d, generator=gen)
    ab = _critic("bilinear", 0.4, d, weight=torch.randn(d, d, generator=gen))
    bc = _critic("bilinear", 0.6, d, weight=torch.randn(d, d, generator=gen))
    bridge = pc.Bridge(
        [ab, bc],
        [pc.Bank(bank, log_weights=torch.randn(700, generator=gen))],
        target_bank=torch.randn(40, d, generator=gen),
        chunk_size=300,
        progress=False,
    )
    _answers(bridge, a, c)  # fill the caches
    for name in mutations:
        _mutate(bridge, name, gen)
        dtype = bridge.banks[0].view0.dtype
        a, c = a.to(dtype), c.to(dtype)
        cached = _answers(bridge, a, c)
        bank = bridge.banks[0]
        for method, value in cached.items():
            targets = bridge.target_bank if method == "exact" else None
            want = _truth(
                ab, bc, a, bank.view0, c, log_w=bank.log_weights, targets=targets, method=method
            )
            atol, rtol = _tolerance(dtype)
            _assert_matches(value, want, atol=atol, rtol=rtol)


def test_bank_tensor_edited_in_place_by_its_owner():
    # the caller keeps the tensor it passed in and edits it between calls
    gen = torch.Generator().manual_seed(12)
    d = 5
    items = torch.randn(900, d, generator=gen)
    a, c, t = (torch.randn(s, d, generator=gen) for s in (4, 6, 50))
    ab, bc = _critic("cosine", 0.2, d), _critic("neg_sq_l2", 0.7, d)
    bridge = _bridge(ab, bc, items, targets=t, chunk_size=400)
    before = bridge.log_ratio(a, c)
    items[::3] *= -2.0
    t.add_(1.0)
    after = bridge.log_ratio(a, c)
    fresh = _bridge(ab, bc, items.clone(), targets=t.clone(), chunk_size=400).log_ratio(a, c)
    assert float((after - before).abs().max()) > 1e-2
    torch.testing.assert_close(after, fresh, atol=1e-6, rtol=1e-6)
    _assert_matches(after, _truth(ab, bc, a, items, c, targets=t), atol=2e-4, rtol=1e-6)


def test_one_bridge_across_candidate_sets_and_dtypes(monkeypatch):
    # the cached bank factors are keyed on the scoring dtype: float32 and float64 calls (and
    # candidate sets of any size) alternate on one bridge, each equal to the truth
    gen = torch.Generator().manual_seed(22)
    d = 4
    bank = torch.randn(900, d, generator=gen)
    ab = _critic("bilinear", 0.4, d, weight=torch.randn(d, d, generator=gen) / 2)
    bc = _critic("neg_sq_l2", 0.8, d)
    bridge = _bridge(ab, bc, bank, log_w=torch.randn(900, generator=gen), chunk_size=400)
    calls = spy_fused(monkeypatch)
    for k, dtype in [(300, torch.float32), (5, torch.float32), (40, F64), (1, F64), (300, None)]:
        a = torch.randn(3, d, generator=gen, dtype=dtype or torch.float32)
        c = torch.randn(k, d, generator=gen, dtype=dtype or F64)  # None: mixed dtypes
        for method in ("exact", "lse"):
            got = bridge.log_ratio(a, c, method)
            want = _truth(ab, bc, a, bank, c, log_w=bridge.banks[0].log_weights, method=method)
            atol, rtol = _tolerance(dtype or torch.float32)
            _assert_matches(got, want, atol=atol, rtol=rtol)
    assert any(calls)


def test_optimizer_steps_invalidate_the_cached_factors():
    # learnable critics, answers under no_grad (cached) between optimizer steps
    gen = torch.Generator().manual_seed(23)
    d = 4
    bank, t = torch.randn(700, d, generator=gen), torch.randn(80, d, generator=gen)
    a, c = torch.randn(6, d, generator=gen), torch.randn(9, d, generator=gen)
    ab = _critic("bilinear", 0.5, d, weight=torch.randn(d, d, generator=gen) / 2, learn=True)
    bc = _critic("bilinear", 0.5, d, weight=torch.randn(d, d, generator=gen) / 2, learn=True)
    bridge = _bridge(ab, bc, bank, targets=t, chunk_size=300)
    optimizer = torch.optim.Adam(list(ab.parameters()) + list(bc.parameters()), lr=0.2)
    for _ in range(3):
        with torch.no_grad():
            for method in ("exact", "lse"):
                want = _truth(
                    ab, bc, a, bank, c, targets=t if method == "exact" else None, method=method
                )
                _assert_matches(bridge.log_ratio(a, c, method), want, atol=2e-4, rtol=1e-6)
        optimizer.zero_grad()
        (-bridge.log_ratio(a, c).diagonal().sum()).backward()
        optimizer.step()


def test_two_view_bank_edited_in_place(monkeypatch):
    # one view per critic: the factors are cached per view, the normalizers on the right one
    gen = torch.Generator().manual_seed(20)
    d = 4
    left_view, right_view = torch.randn(700, d, generator=gen), torch.randn(700, d, generator=gen)
    a, c, t = (torch.randn(s, d, generator=gen) for s in (5, 9, 60))
    ab, bc = _critic("cosine", 0.2, d), _critic("dot", 0.6, d)
    bank = pc.Bank(views=(left_view, right_view))
    bridge = pc.Bridge([ab, bc], [bank], target_bank=t, chunk_size=300, progress=False)
    calls = spy_fused(monkeypatch)
    for edit in (None, "right", "left"):
        if edit == "right":
            right_view.mul_(-1.3)
        elif edit == "left":
            left_view[:350] = torch.randn(350, d, generator=gen)
        for method in ("exact", "lse"):
            got = bridge.log_ratio(a, c, method)
            targets = t if method == "exact" else None
            scores_ab = _similarity(ab, a, left_view)
            scores_bc = _similarity(bc, right_view, c)
            if method == "lse":
                want = torch.logsumexp(
                    scores_ab.unsqueeze(-1) + scores_bc.unsqueeze(0), 1
                ) - math.log(700)
            else:
                log_z = torch.logsumexp(_similarity(bc, right_view, targets), -1) - math.log(60)
                cube = scores_ab.log_softmax(-1).unsqueeze(-1) + (
                    scores_bc - log_z.unsqueeze(-1)
                ).unsqueeze(0)
                want = torch.logsumexp(cube, 1)
            _assert_matches(got, want, atol=2e-4, rtol=1e-6)
    assert all(calls)


@pytest.mark.parametrize("normalizer", ["candidates", "targets"])
def test_changing_a_critics_similarity_is_not_stale(normalizer):
    gen = torch.Generator().manual_seed(13)
    d = 4
    bank = 3 * torch.randn(500, d, generator=gen)
    a, c, t = (torch.randn(s, d, generator=gen) for s in (3, 300, 300))
    targets = t if normalizer == "targets" else None
    ab, bc = _critic("cosine", 0.5, d), _critic("cosine", 0.5, d)
    bridge = _bridge(ab, bc, bank, targets=targets)
    bridge.log_ratio(a, c)
    ab.similarity = bc.similarity = "dot"
    fresh = _bridge(ab, bc, bank, targets=targets).log_ratio(a, c)
    torch.testing.assert_close(bridge.log_ratio(a, c), fresh)


@pytest.mark.parametrize("which", ["left_y", "right_x", "right_y"])
def test_swapping_a_parameter_free_encoder_is_not_stale(which):
    gen = torch.Generator().manual_seed(14)
    d = 4
    bank = 3 * torch.randn(500, d, generator=gen)
    a, c, t = (torch.randn(s, d, generator=gen) for s in (3, 30, 300))
    ab, bc = _critic("dot", 0.5, d), _critic("dot", 0.5, d)
    bridge = _bridge(ab, bc, bank, targets=t)
    bridge.log_ratio(a, c)
    critic = ab if which == "left_y" else bc
    setattr(critic, "encoder_" + which[-1], torch.nn.Tanh())
    fresh = _bridge(ab, bc, bank, targets=t).log_ratio(a, c)
    torch.testing.assert_close(bridge.log_ratio(a, c), fresh)


def _call(what, gen):
    """A bridge call (fused pass) or a bare logmatmul, with a fixed answer."""
    if what == "logmatmul":
        x, y = torch.randn(64, 5000, generator=gen), torch.randn(5000, 64, generator=gen)
        return lambda: logmatmul(x, y)
    a, bank, c = (torch.randn(s, 4, generator=gen) for s in (5, 900, 300))
    bridge = _bridge(_critic("cosine", 0.2, 4), _critic("dot", 0.5, 4), bank)
    return lambda: bridge.log_ratio(a, c)


@pytest.mark.parametrize("what", ["bridge", "logmatmul"])
def test_inference_mode_after_ordinary_calls(what):
    call = _call(what, torch.Generator().manual_seed(25))
    first = call()
    with torch.inference_mode():
        inside = call()
    torch.testing.assert_close(inside, first)
    torch.testing.assert_close(call(), first)


@pytest.mark.parametrize("what", ["bridge", "logmatmul"])
def test_a_call_under_inference_mode_does_not_break_later_calls(what):
    # (the autouse fixture gives this test fresh buffers, so the bug cannot leak out of it)
    call = _call(what, torch.Generator().manual_seed(25))
    with torch.inference_mode():
        first = call()
    torch.testing.assert_close(call(), first.clone())


# -- 7. duplicated, identical and single items ----------------------------------------------


@pytest.mark.parametrize(("method", "normalizer"), METHOD_NORMALIZERS)
def test_duplicated_identical_and_single_item_banks(monkeypatch, method, normalizer):
    gen = torch.Generator().manual_seed(15)
    d = 4
    a, c = torch.randn(6, d, generator=gen), torch.randn(300, d, generator=gen)
    targets = torch.randn(60, d, generator=gen) if normalizer == "targets" else None
    ab, bc = _critic("dot", 0.3, d), _critic("cosine", 0.1, d)
    base = torch.randn(400, d, generator=gen)
    banks = {
        "duplicated": base.repeat(3, 1),
        "identical": base[:1].expand(900, d).clone(),
        "single": base[:1],
    }
    calls = spy_fused(monkeypatch)
    answers = {}
    for name, bank in banks.items():
        answers[name] = _bridge(ab, bc, bank, targets=targets).log_ratio(a, c, method)
        want = _truth(ab, bc, a, bank, c, targets=targets, method=method)
        _assert_matches(answers[name], want, atol=2e-4, rtol=1e-6)
    assert all(calls)
    base_answer = _bridge(ab, bc, base, targets=targets).log_ratio(a, c, method)
    # three copies of every item: the same mixture; one item repeated: the single item
    torch.testing.assert_close(answers["duplicated"], base_answer, atol=2e-5, rtol=1e-6)
    torch.testing.assert_close(answers["identical"], answers["single"], atol=2e-5, rtol=1e-6)
    if method == "exact":
        # one bridge item: log p(c_k | b) - log Z(b), the same for every query
        single = _truth(ab, bc, a[:1], base[:1], c, targets=targets)
        _assert_matches(answers["single"], single.expand(6, -1), atol=2e-5, rtol=1e-6)


# -- 8. with gradients the streamed pass steps aside; the values agree ----------------------


@pytest.mark.parametrize("similarity", ["cosine", "dot", "neg_sq_l2", "bilinear"])
@pytest.mark.parametrize("mode", ["exact", "targets", "lse"])
def test_gradients_step_aside_with_the_same_values(monkeypatch, similarity, mode):
    gen = torch.Generator().manual_seed(16)
    d = 5
    a, bank, c = (torch.randn(s, d, generator=gen) for s in (6, 1300, 8))
    targets = torch.randn(50, d, generator=gen) if mode == "targets" else None
    method = "lse" if mode == "lse" else "exact"
    log_w = torch.randn(1300, generator=gen)
    weight = torch.randn(d, d, generator=gen) / d**0.5
    ab = _critic(similarity, 0.2, d, weight=weight, learn=True)
    bc = _critic(similarity, 0.3, d, weight=weight.T)
    bridge = _bridge(ab, bc, bank, log_w=log_w, targets=targets, chunk_size=500)
    calls = spy_fused(monkeypatch)
    with torch.no_grad():
        fused = bridge.log_ratio(a, c, method)
    assert calls == [True] * 3
    calls.clear()
    queries = a.clone().requires_grad_(True)
    graph = bridge.log_ratio(queries, c, method)  # learnable temperature and queries
    assert calls == [] and graph.requires_grad  # the bridge does not offer it under grad
    torch.testing.assert_close(graph.detach(), fused, atol=2e-5, rtol=1e-6)
    # and the gradient is the float64 truth's
    graph.sum().backward()
    a64 = a.double().requires_grad_(True)
    _truth(ab, bc, a64, bank, c, log_w=log_w, targets=targets, method=method).sum().backward()
    torch.testing.assert_close(queries.grad.double(), a64.grad, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("wants", ["bank", "candidates"])
def test_gradients_of_other_inputs_step_aside_too(monkeypatch, wants):
    # only the bank, the candidates or the target bank wants a gradient (fixed critics)
    gen = torch.Generator().manual_seed(26)
    d = 4
    a, bank, c, t = (torch.randn(s, d, generator=gen) for s in (5, 800, 7, 60))
    ab, bc = _critic("cosine", 0.3, d), _critic("dot", 0.6, d)
    with torch.no_grad():
        calls = spy_fused(monkeypatch)
        fused = _bridge(ab, bc, bank, targets=t, chunk_size=300).log_ratio(a, c)
        assert calls == [True] * 3
    leaf = {"bank": bank, "candidates": c, "targets": t}[wants].clone().requires_grad_(True)
    inputs = {"bank": bank, "candidates": c, "targets": t} | {wants: leaf}
    calls = spy_fused(monkeypatch)
    bridge = _bridge(ab, bc, inputs["bank"], targets=inputs["targets"], chunk_size=300)
    graph = bridge.log_ratio(a, inputs["candidates"])
    assert calls == [] and graph.requires_grad  # not offered when a gradient is needed
    torch.testing.assert_close(graph.detach(), fused, atol=2e-5, rtol=1e-6)
    _assert_gradient_is_the_truths(graph, leaf, ab, bc, a, inputs, wants)


def _assert_gradient_is_the_truths(graph, leaf, ab, bc, a, inputs, wants):
    """d sum(log ratio) / d leaf against the float64 brute force's gradient."""
    (grad,) = torch.autograd.grad(graph.sum(), leaf)
    leaf64 = leaf.detach().double().requires_grad_(True)
    inputs64 = {k: v.detach().double() for k, v in inputs.items()} | {wants: leaf64}
    want = _truth(ab, bc, a, inputs64["bank"], inputs64["candidates"], targets=inputs64["targets"])
    (grad64,) = torch.autograd.grad(want.sum(), leaf64)
    torch.testing.assert_close(grad.double(), grad64, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("m", [200, 800])  # one block, several blocks
def test_a_target_bank_that_wants_a_gradient(m):
    gen = torch.Generator().manual_seed(27)
    d = 4
    a, bank, c, t = (torch.randn(s, d, generator=gen) for s in (5, m, 7, 60))
    ab, bc = _critic("cosine", 0.3, d), _critic("dot", 0.6, d)
    leaf = t.clone().requires_grad_(True)
    graph = _bridge(ab, bc, bank, targets=leaf).log_ratio(a, c)
    inputs = {"bank": bank, "candidates": c, "targets": leaf}
    _assert_matches(graph, _truth(ab, bc, a, bank, c, targets=t), atol=2e-4, rtol=1e-6)
    _assert_gradient_is_the_truths(graph, leaf, ab, bc, a, inputs, "targets")


def test_a_target_bank_that_wants_a_gradient_leaves_later_calls_intact():
    gen = torch.Generator().manual_seed(28)
    d = 4
    a, bank, c, t = (torch.randn(s, d, generator=gen) for s in (5, 800, 7, 60))
    ab, bc = _critic("cosine", 0.3, d), _critic("dot", 0.6, d)
    try:
        _bridge(ab, bc, bank, targets=t.clone().requires_grad_(True)).log_ratio(a, c)
    except RuntimeError:
        pass  # test_a_target_bank_that_wants_a_gradient
    got = _bridge(ab, bc, bank.clone(), targets=t).log_ratio(a, c)
    _assert_matches(got, _truth(ab, bc, a, bank, c, targets=t), atol=2e-4, rtol=1e-6)
