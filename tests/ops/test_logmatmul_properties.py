"""Property tests: ``logmatmul`` is a float64 logsumexp of the broadcast sum, whatever the input.

Shapes (0- and 1-size dims, broadcast batch dims), dtypes, scales, misaligned maxima and
special values (+-inf, NaN, huge finite values, sums beyond the float range) are drawn by
hypothesis; the values themselves come from a drawn seed. Every tier of the engine is forced
in turn (float64 first pass or not, retries always or by the cost model, float32 or float64
backward), so each is held to the same reference, not only the one the heuristics pick for
these small shapes. Example counts come from the profile in ``tests/conftest.py``.
"""

import contextlib
import math
from unittest import mock

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_contrast.ops import _logmatmul_backward, _logmatmul_kernels, logmatmul

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
SPECIALS = ["-inf", "inf", "nan", "huge", "-huge", "overflow", "-overflow", "-inf row", "-inf col"]


def reference(x, y):
    """The definition, in float64 on the (already rounded) inputs."""
    return torch.logsumexp(x.double().unsqueeze(-1) + y.double().unsqueeze(-3), dim=-2)


def _special_value(kind, dtype):
    big = torch.finfo(dtype).max
    # huge: sums of two stay in range; overflow: a sum of two leaves it (an inf answer).
    values = {"huge": big / 4, "-huge": -big / 4, "overflow": 0.9 * big, "-overflow": -0.9 * big}
    return values[kind] if kind in values else float(kind.split()[0])


@st.composite
def problems(draw, specials=True, max_dim=6, max_scale=300.0):
    dtype = draw(st.sampled_from(DTYPES))
    n, m, k = (draw(st.integers(0, max_dim)) for _ in range(3))
    x_batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    # y's batch dims: a suffix of x's, each kept or set to 1 (broadcast), or none at all.
    y_batch = tuple(draw(st.sampled_from([size, 1])) for size in x_batch)
    y_batch = y_batch[draw(st.integers(0, len(y_batch))) :]
    if draw(st.booleans()):
        x_batch, y_batch = y_batch, x_batch
    scale = draw(st.sampled_from([0.0, 1.0, 30.0, max_scale]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = scale * torch.randn(x_batch + (n, m), generator=generator, dtype=torch.float64)
    y = scale * torch.randn(y_batch + (m, k), generator=generator, dtype=torch.float64)
    peak = draw(st.none() | st.floats(50.0, 3000.0))
    if peak is not None and m >= 2:
        # Misaligned maxima: every row of x peaks at m = 0, every column of y at m = 1.
        x[..., 0], y[..., 1, :] = peak, peak
    x, y = x.to(dtype), y.to(dtype)
    kinds = draw(st.lists(st.sampled_from(SPECIALS), max_size=4)) if specials else []
    for kind in kinds:
        target = x if draw(st.booleans()) else y
        if not target.numel():
            continue
        value = _special_value(kind, dtype)
        index = [int(torch.randint(size, (), generator=generator)) for size in target.shape]
        if kind == "-inf row" and target is x:
            index[-1] = slice(None)
        elif kind == "-inf col" and target is y:
            index[-2] = slice(None)
        target[tuple(index)] = value
    return x, y


@contextlib.contextmanager
def _forced_tiers(first_pass_float64, always_retry):
    """Force the forward's heuristics: the probe's verdict, and retries whatever they cost."""
    with contextlib.ExitStack() as stack:
        verdict = lambda *args: first_pass_float64  # noqa: E731
        stack.enter_context(mock.patch.object(_logmatmul_kernels, "_prefer_float64", verdict))
        if always_retry:
            always = lambda *args: True  # noqa: E731
            stack.enter_context(mock.patch.object(_logmatmul_kernels, "_worth_retrying", always))
        yield


def assert_matches(actual, exact):
    """Contract: max(1e-4, 5e-7 |exact|) in float32 (1e-9 + 1e-12 |exact| in float64), the
    same NaN cells, and the same infinities once the exact value is rounded to the output
    dtype (sums beyond its range are +-inf)."""
    expected = exact.to(actual.dtype)
    assert actual.shape == exact.shape
    nan = torch.isnan(expected)
    assert torch.equal(torch.isnan(actual), nan)
    infinite = torch.isinf(expected)
    assert torch.equal(actual[infinite], expected[infinite])
    finite = torch.isfinite(expected)
    assert torch.isfinite(actual[finite]).all(), "a finite cell came out inf or NaN"
    error = (actual.double() - exact)[finite].abs()
    magnitude = exact[finite].abs()
    if actual.dtype == torch.float64:
        tolerance = 1e-9 + 1e-12 * magnitude
    else:
        tolerance = (5e-7 * magnitude).clamp(min=1e-4)
    assert (error <= tolerance).all(), f"max error {error.max().item():.3g}"


@settings(deadline=None)
@given(
    problem=problems(),
    chunk_size=st.none() | st.integers(1, 8),
    first_pass_float64=st.booleans(),
    always_retry=st.booleans(),
)
def test_forward_matches_float64_logsumexp(problem, chunk_size, first_pass_float64, always_retry):
    x, y = problem
    with _forced_tiers(first_pass_float64, always_retry):
        actual = logmatmul(x, y, chunk_size=chunk_size)
    expected_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    assert actual.dtype == expected_dtype
    batch_shape = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    assert actual.shape == batch_shape + (x.shape[-2], y.shape[-1])
    assert_matches(actual, reference(x, y))


@settings(deadline=None)
@given(
    problem=problems(specials=False, max_scale=30.0),
    chunk_size=st.none() | st.integers(1, 8),
    compute=st.sampled_from([None, torch.float32, torch.float64]),
    neg_inf=st.integers(0, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_gradients_match_autograd_of_reference(problem, chunk_size, compute, neg_inf, seed):
    x, y = problem
    generator = torch.Generator().manual_seed(seed)
    for _ in range(neg_inf):  # -inf entries: zero weight, finite gradients
        target = x if bool(torch.randint(2, (), generator=generator)) else y
        if target.numel():
            target.view(-1)[int(torch.randint(target.numel(), (), generator=generator))] = -math.inf
    x, y = x.clone().requires_grad_(), y.clone().requires_grad_()
    exact = reference(x.detach(), y.detach())
    grad = torch.randn(exact.shape, generator=generator, dtype=torch.float64)
    grad = grad.masked_fill(~torch.isfinite(exact), 0.0)  # the reference is NaN there
    decide = _logmatmul_backward._compute_dtype
    if compute is not None and x.dtype != torch.float64:
        decide = lambda *args: compute  # noqa: E731
    with mock.patch.object(_logmatmul_backward, "_compute_dtype", decide):
        out = logmatmul(x, y, chunk_size=chunk_size)
        dx, dy = torch.autograd.grad(out, (x, y), grad.to(out.dtype), allow_unused=True)
    assert dx.dtype == x.dtype and dy.dtype == y.dtype
    assert torch.isfinite(dx).all() and torch.isfinite(dy).all()
    xd, yd = x.detach().double().requires_grad_(), y.detach().double().requires_grad_()
    ex, ey = torch.autograd.grad(reference(xd, yd), (xd, yd), grad)
    # Weights exp(x + y - out) inherit the rounding of out and of the inputs' magnitudes
    # (and, in float64, of the ~1,400-nat headroom arithmetic).
    finite = [t[torch.isfinite(t)] for t in (x.detach(), y.detach())]
    magnitude = 1 + sum(t.abs().max().item() if t.numel() else 0.0 for t in finite)
    eps = torch.finfo(out.dtype).eps
    delta = 16 * (eps * magnitude + torch.finfo(torch.float64).eps * 2048)
    if x.dtype in (torch.float16, torch.bfloat16):
        delta = 16 * torch.finfo(x.dtype).eps  # the gradient is rounded to the input dtype
    width = max(1, x.shape[-2], y.shape[-1])
    g_max = grad.abs().max().item() if grad.numel() else 0.0
    for actual, expected in ((dx, ex), (dy, ey)):
        actual, expected = actual.double(), expected
        mask = torch.isfinite(expected)
        error = (actual - expected)[mask].abs()
        assert (error <= delta * (width * g_max + expected[mask].abs())).all(), (
            f"max gradient error {error.max().item():.3g}"
        )
