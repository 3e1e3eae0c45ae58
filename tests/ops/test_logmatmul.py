import math

import pytest
import torch

from pyro_contrast.ops import _logmatmul_backward, _logmatmul_kernels, logmatmul
from tests.common import assert_close

SHAPES = [
    ((1, 1), (1, 1)),
    ((3, 1), (1, 4)),
    ((1, 7), (7, 1)),
    ((5, 37), (37, 3)),
    ((4, 5, 37), (37, 3)),
    ((5, 37), (2, 37, 3)),
    ((2, 1, 5, 37), (3, 37, 6)),
]
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def reference(x, y):
    """float64 logsumexp of the broadcast N x M x K sum: the definition."""
    return torch.logsumexp(x.double().unsqueeze(-1) + y.double().unsqueeze(-3), dim=-2)


def shift_trick(x, y):
    """One row-max and one column-max shift for all of m: what the engine must improve on."""
    a = x.amax(-1, keepdim=True)
    b = y.amax(-2, keepdim=True)
    return torch.matmul((x - a).exp(), (y - b).exp()).log() + a + b


def assert_within_contract(actual, expected):
    """The contract: |error| <= max(1e-4, 5e-7 |exact|), and the same inf/NaN pattern."""
    expected = expected.to(torch.float64)
    actual = actual.to(torch.float64)
    assert actual.shape == expected.shape
    assert torch.equal(torch.isnan(actual), torch.isnan(expected))
    finite = torch.isfinite(expected)
    assert torch.equal(
        actual[~finite & ~torch.isnan(expected)], expected[~finite & ~torch.isnan(expected)]
    )
    assert torch.isfinite(actual[finite]).all(), "a finite cell came out -inf/inf/NaN"
    error = (actual - expected)[finite].abs()
    tolerance = (5e-7 * expected[finite].abs()).clamp(min=1e-4)
    assert (error <= tolerance).all(), f"max error {error.max().item():.3g}"


@pytest.mark.parametrize("chunk_size", [None, 1, 8])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("x_shape,y_shape", SHAPES, ids=str)
def test_matches_reference(x_shape, y_shape, dtype, chunk_size):
    x = (10 * torch.randn(x_shape)).to(dtype)
    y = (10 * torch.randn(y_shape)).to(dtype)
    actual = logmatmul(x, y, chunk_size=chunk_size)
    expected_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert actual.dtype == expected_dtype
    assert actual.shape == torch.broadcast_shapes(x_shape[:-2], y_shape[:-2]) + (
        x_shape[-2],
        y_shape[-1],
    )
    if dtype == torch.float64:
        assert_close(actual, reference(x, y), atol=1e-9, rtol=1e-12)
    else:
        assert_within_contract(actual, reference(x, y))


def _uniform_1e3(n, m, k):
    return torch.rand(n, m) * 2000 - 1000, torch.rand(m, k) * 2000 - 1000


def _misaligned_global(n, m, k):
    # Every row of x peaks at m = 0 and every column of y at m = 1: the best terms sit
    # ~1000 nats below a + b, so one shift pair underflows everywhere.
    x, y = 300 * torch.randn(n, m), 300 * torch.randn(m, k)
    x[:, 0], y[1, :] = 1000.0, 1000.0
    return x, y


def _misaligned_scattered(n, m, k):
    # Peaks at different random m per row and per column, inside and across chunks.
    x, y = torch.randn(n, m) - 500, torch.randn(m, k) - 500
    x[torch.arange(n), torch.randint(m, (n,))] = 900.0
    y[torch.randint(m, (k,)), torch.arange(k)] = 900.0
    return x, y


def _low_rank(n, m, k):
    # Dot-product critics with large norms: structured scores spanning thousands of nats.
    u, z, v = 6 * torch.randn(n, 8), 6 * torch.randn(m, 8), 6 * torch.randn(k, 8)
    return u @ z.T, z @ v.T


def _cold_cosine(n, m, k):
    # Cosine critics at temperature 0.005 (scores in +-200), low rank: what refinement is for.
    u, z, v = (torch.nn.functional.normalize(torch.randn(s, 64), dim=-1) for s in (n, m, k))
    return u @ z.T / 0.005, z @ v.T / 0.005


@pytest.mark.parametrize("chunk_size", [None, 64])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "make", [_uniform_1e3, _misaligned_global, _misaligned_scattered, _low_rank, _cold_cosine]
)
def test_adversarial(make, dtype, chunk_size):
    x, y = make(24, 300, 20)
    x, y = x.to(dtype), y.to(dtype)
    expected = reference(x, y)
    assert torch.isfinite(expected).all()
    actual = logmatmul(x, y, chunk_size=chunk_size)
    assert_within_contract(actual, expected)
    if make in (_misaligned_global, _misaligned_scattered, _low_rank):
        # The inputs are hard: a single float32 shift pair fails on them.
        naive = shift_trick(x.float(), y.float()).double()
        assert not (naive - expected).abs().le(1e-3).all()


def _wide_sq_l2(n, m, k, sigma=5.7):
    # Squared-L2 critics on spread-out 8-d embeddings: scores spanning ~1,400 nats, where
    # the best term of a cell sits up to ~700 nats below its row plus column maxima.
    u, z, v = (sigma * torch.randn(s, 8) for s in (n, m, k))
    return -0.5 * torch.cdist(u, z).pow(2), -0.5 * torch.cdist(z, v).pow(2)


def _misaligned_far(n, m, k):
    # As _misaligned_global, with peaks so high (gaps ~5,000 nats) that float64 fails too.
    x, y = _misaligned_global(n, m, k)
    x[:, 0], y[1, :] = 3000.0, 3000.0
    return x, y


@pytest.mark.parametrize(
    "make,shape,expected",
    [
        # Wide scores on a large block: the probe sends the first pass to float64.
        (_wide_sq_l2, (128, 2048, 128), dict(first_pass=torch.float64, flagged=0)),
        # The same on a block too small to probe: float32 first, then the float64 retry.
        (_wide_sq_l2, (48, 2048, 40), dict(first_pass=torch.float32, after_float64=0)),
        # Beyond float64's ~1,000 nats but low rank: smaller chunks certify some cells.
        (lambda n, m, k: _low_rank_scaled(n, m, k, 14.0), (64, 4096, 64), dict(refined=True)),
        # Beyond float64 and unstructured: the gathered log-space path takes every cell.
        (_misaligned_far, (40, 3000, 40), dict(log_space=1600)),
    ],
)
def test_exact_tiers_are_exercised(make, shape, expected):
    # White-box check that hard inputs reach each tier, and that each answers exactly.
    x, y = make(*shape)
    stats = {}
    out = _logmatmul_kernels.forward(x, y, 1024, stats=stats)
    assert_within_contract(out, reference(x, y))
    if expected.pop("refined", False):
        assert stats["flagged"] > stats["after_float64"] > stats["log_space"] > 0
    for key, value in expected.items():
        assert stats[key] == value, stats
    if stats["first_pass"] == torch.float32:
        assert stats["flagged"] > 0


def _low_rank_scaled(n, m, k, scale):
    u, z, v = scale * torch.randn(n, 8), scale * torch.randn(m, 8), scale * torch.randn(k, 8)
    return u @ z.T, z @ v.T


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("normalize", [False, True])
def test_wide_range_scores(dtype, normalize):
    # The issue-15 case: squared-L2 scores spanning ~1,400 nats (bridge-normalized or not).
    x, y = _wide_sq_l2(130, 1500, 140)
    if normalize:
        y = y - y.logsumexp(-1, keepdim=True)
    assert (x.max() - x.min()) > 1000 and (y.max() - y.min()) > 1000
    x, y = x.to(dtype), y.to(dtype)
    naive = shift_trick(x.float(), y.float())
    assert (~torch.isfinite(naive)).sum() > 100  # hard: one shift pair underflows
    actual = logmatmul(x, y)
    if dtype == torch.float64:
        assert_close(actual, reference(x, y), atol=1e-9, rtol=1e-12)
    else:
        assert_within_contract(actual, reference(x, y))


def test_adversarial_batched_float32():
    x, y = _misaligned_scattered(12, 257, 9)
    x = torch.stack([x, x.flip(0), 0.5 * x])
    actual = logmatmul(x, y.expand(2, 1, 257, 9), chunk_size=32)
    assert actual.shape == (2, 3, 12, 9)
    assert_within_contract(actual, reference(x, y.expand(2, 1, 257, 9)))


@pytest.mark.parametrize("chunk_size", [None, 1, 2])
def test_inf_nan_like_logsumexp(chunk_size):
    x, y = torch.randn(6, 5), torch.randn(5, 4)
    x[0, 1] = math.inf  # row 0: +inf, NaN where y is -inf at m = 1
    y[1, 3] = -math.inf
    x[1, :] = -math.inf  # row 1: empty sum except where NaN/+inf columns reach it
    y[2, 0] = math.nan  # column 0: NaN everywhere
    y[4, 2] = math.inf  # column 2: +inf, NaN where x is -inf at m = 4
    x[3, 4] = -math.inf
    x[4, :3] = -math.inf  # row 4: partly -inf, finite
    expected = torch.logsumexp(x.unsqueeze(-1) + y.unsqueeze(-3), dim=-2)
    actual = logmatmul(x, y, chunk_size=chunk_size)
    assert torch.isnan(expected).any() and (expected == math.inf).any()
    assert (expected == -math.inf).any()
    assert_within_contract(actual, expected)


def test_empty_dims():
    assert_close(logmatmul(torch.zeros(3, 0), torch.zeros(0, 2)), torch.full((3, 2), -math.inf))
    assert logmatmul(torch.zeros(0, 4), torch.zeros(4, 2)).shape == (0, 2)
    assert logmatmul(torch.zeros(3, 4), torch.zeros(4, 0)).shape == (3, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_chunk_size_invariance(dtype):
    x, y = _misaligned_scattered(10, 200, 7)
    x, y = x.to(dtype), y.to(dtype)
    results = [logmatmul(x, y, chunk_size=c) for c in (1, 7, 64, 200, 1000, None)]
    for result in results[1:]:
        if dtype == torch.float64:
            assert_close(result, results[0], atol=1e-9, rtol=1e-12)
        else:
            assert_within_contract(result, results[0])


def _reference_grads(x, y, grad):
    xd = x.detach().double().requires_grad_()
    yd = y.detach().double().requires_grad_()
    return torch.autograd.grad(reference(xd, yd), (xd, yd), grad.double())


@pytest.mark.parametrize("chunk_size", [None, 16])
@pytest.mark.parametrize(
    "make",
    [
        lambda n, m, k: (3 * torch.randn(n, m), 3 * torch.randn(m, k)),
        _misaligned_scattered,
        _wide_sq_l2,
    ],
)
@pytest.mark.parametrize("x_batch,y_batch", [((), ()), ((3,), ()), ((2, 1), (3,))], ids=str)
def test_gradients_match_reference(x_batch, y_batch, make, chunk_size):
    x, y = make(6, 50, 5)
    x = (x + torch.randn(x_batch + (6, 50))).requires_grad_()
    y = (y + torch.randn(y_batch + (50, 5))).requires_grad_()
    out = logmatmul(x, y, chunk_size=chunk_size)
    grad = torch.randn(out.shape)
    dx, dy = torch.autograd.grad(out, (x, y), grad)
    ex, ey = _reference_grads(x, y, grad)
    # Weights exp(x + y - out) are formed from float32 scores up to ~1e3 in size, so each
    # carries a relative rounding of ~1e3 * eps = 1.2e-4.
    scale = grad.abs().max().item()
    assert_close(dx, ex, atol=3e-4 * scale, rtol=3e-4)
    assert_close(dy, ey, atol=3e-4 * scale, rtol=3e-4)


@pytest.mark.parametrize("compute", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("make", [_wide_sq_l2, _misaligned_scattered, _misaligned_far])
def test_backward_tiers_match_reference(make, compute, monkeypatch):
    # Either backward tier, forced, on float32 inputs: float32 GEMMs plus gathered cells, or
    # float64 GEMMs with headroom (plus gathered cells beyond ~1,000 nats).
    monkeypatch.setattr(_logmatmul_backward, "_compute_dtype", lambda *args: compute)
    x, y = make(20, 300, 24)
    x, y = x.requires_grad_(), y.requires_grad_()
    out = logmatmul(x, y, chunk_size=64)
    grad = torch.randn(out.shape)
    dx, dy = torch.autograd.grad(out, (x, y), grad)
    assert dx.dtype == dy.dtype == torch.float32
    ex, ey = _reference_grads(x, y, grad)
    scale = grad.abs().max().item()
    assert_close(dx, ex, atol=3e-4 * scale, rtol=3e-4)
    assert_close(dy, ey, atol=3e-4 * scale, rtol=3e-4)


def test_backward_of_wide_scores_uses_float64():
    x, y = _wide_sq_l2(40, 500, 40)
    out = logmatmul(x, y)
    finite = torch.isfinite(out)
    assert _logmatmul_backward._compute_dtype(x, y, out, finite, 40) == torch.float64
    x, y = torch.randn(40, 500), torch.randn(500, 40)
    out = logmatmul(x, y)
    assert _logmatmul_backward._compute_dtype(x, y, out, finite, 40) == torch.float32


@pytest.mark.parametrize("chunk_size", [3, 16])
@pytest.mark.parametrize("peak", [None, 800.0, 1000.0])
def test_gradcheck_and_double_backward(peak, chunk_size):
    x = torch.randn(2, 4, 9, dtype=torch.float64)
    y = torch.randn(9, 3, dtype=torch.float64)
    if peak is not None:
        # Misaligned peaks: gaps of ~800 nats need float64's headroom in both passes;
        # ~1,000 nats are beyond it, so the exact (gathered) paths take those cells.
        x[..., 0], y[1, :] = peak, peak
    x.requires_grad_()
    y.requires_grad_()

    def fn(a, b):
        return logmatmul(a, b, chunk_size=chunk_size)

    assert torch.autograd.gradcheck(fn, (x, y))
    assert torch.autograd.gradgradcheck(fn, (x, y))


def test_gradient_of_empty_sum_is_zero():
    x = torch.randn(3, 4)
    x[1] = -math.inf
    x.requires_grad_()
    y = torch.randn(4, 2, requires_grad=True)
    out = logmatmul(x, y)
    assert (out[1] == -math.inf).all()
    dx, dy = torch.autograd.grad(out[0].sum() + out[2].sum(), (x, y))
    assert torch.isfinite(dx).all() and torch.isfinite(dy).all()
    assert (dx[1] == 0).all()
    ex, ey = _reference_grads(x[[0, 2]], y, torch.ones(2, 2))
    assert_close(dx[[0, 2]], ex, atol=1e-6)
    assert_close(dy, ey, atol=1e-6)


def test_gradient_with_inf_input_like_torch():
    x = torch.randn(3, 4, dtype=torch.float64)
    x[0, 2] = math.inf
    x.requires_grad_()
    y = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, 2, dtype=torch.float64)
    actual = torch.autograd.grad(logmatmul(x, y), (x, y), grad)
    expected = torch.autograd.grad(reference(x, y), (x, y), grad)
    for a, e in zip(actual, expected, strict=True):
        assert torch.isnan(e).any()
        assert_close(a, e, atol=1e-9)


def test_low_precision_gradients_flow_to_inputs():
    x = torch.randn(4, 6).to(torch.bfloat16).requires_grad_()
    y = torch.randn(6, 3).to(torch.bfloat16).requires_grad_()
    logmatmul(x, y).sum().backward()
    assert x.grad.dtype == torch.bfloat16 and y.grad.dtype == torch.bfloat16
    ex, ey = _reference_grads(x, y, torch.ones(4, 3))
    assert_close(x.grad, ex, atol=1e-2, rtol=1e-2)  # bfloat16 keeps 8 bits
    assert_close(y.grad, ey, atol=1e-2, rtol=1e-2)


def test_mixed_dtypes_promote():
    x = torch.randn(2, 3, dtype=torch.float64)
    y = torch.randn(3, 2, dtype=torch.float16)
    assert logmatmul(x, y).dtype == torch.float64


@pytest.mark.parametrize(
    "x,y,error,match",
    [
        ([[1.0]], torch.zeros(1, 1), TypeError, "x must be a torch.Tensor"),
        (torch.zeros(1, 1), None, TypeError, "y must be a torch.Tensor"),
        (torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2), TypeError, "x must be a float"),
        (torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.bool), TypeError, "y must be a float"),
        (torch.zeros(3), torch.zeros(3, 2), ValueError, "x must have at least 2 dims"),
        (torch.zeros(2, 3), torch.zeros(3), ValueError, "y must have at least 2 dims"),
        (torch.zeros(2, 3), torch.zeros(4, 2), ValueError, "inner dims differ"),
        (torch.zeros(2, 2, 3), torch.zeros(3, 3, 2), ValueError, "do not broadcast"),
    ],
)
def test_bad_inputs(x, y, error, match):
    with pytest.raises(error, match=match):
        logmatmul(x, y)


@pytest.mark.parametrize("chunk_size", [0, -3, 2.5, True, "8"])
def test_bad_chunk_size(chunk_size):
    with pytest.raises(ValueError, match="chunk_size"):
        logmatmul(torch.zeros(2, 3), torch.zeros(3, 2), chunk_size=chunk_size)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("make", [_misaligned_scattered, _wide_sq_l2])
def test_cuda_matches_cpu(make):
    x, y = make(40, 700, 30)
    x, y = x.cuda().requires_grad_(), y.cuda().requires_grad_()
    out = logmatmul(x, y, chunk_size=128)
    assert out.device == x.device
    assert_within_contract(out.cpu(), reference(x.cpu(), y.cpu()))
    grad = torch.randn_like(out)
    dx, dy = torch.autograd.grad(out, (x, y), grad)
    ex, ey = _reference_grads(x.cpu(), y.cpu(), grad.cpu())
    assert_close(dx.cpu(), ex, atol=3e-4 * grad.abs().max().item(), rtol=3e-4)
    assert_close(dy.cpu(), ey, atol=3e-4 * grad.abs().max().item(), rtol=3e-4)
