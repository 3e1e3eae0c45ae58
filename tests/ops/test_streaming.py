"""pyro_contrast.ops.LogMatMulStream: the block-fed fast pass of logmatmul."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pyro_contrast.ops import LogMatMulStream, logmatmul


def _stream(x, y, splits, bits=False):
    """Feed x (N, M) and y (M, K) to a stream in the given blocks of the inner index."""
    stream = LogMatMulStream(x.shape[-1], dtype=x.dtype, bits=bits)
    unit = 1 / math.log(2.0) if bits else 1.0
    bounds = [0, *sorted(set(splits)), x.shape[-1]]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if hi <= lo:
            continue
        xb, yb = x[:, lo:hi].clone() * unit, y[lo:hi].clone() * unit
        a = stream.shift_rows(xb.amax(-1, keepdim=True))
        b = stream.shift_cols(yb.amax(0, keepdim=True))
        stream.add(stream.exp_(xb, a), stream.exp_(yb, b))
    return stream.result()


def _reference(x, y):
    return (x.double().unsqueeze(-1) + y.double()).logsumexp(-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 17, 4), (16, 300, 9)])
def test_matches_float64_logsumexp(dtype, bits, shape):
    n, m, k = shape
    x, y = 10 * torch.randn(n, m, dtype=dtype), 10 * torch.randn(m, k, dtype=dtype)
    values, certified = _stream(x, y, [m // 3, m // 2], bits)
    assert values.dtype == torch.float64 and certified.dtype == torch.bool
    assert values.shape == certified.shape == (n, k)
    assert bool(certified.all())
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(values, _reference(x, y), atol=tol, rtol=tol)


@given(
    n=st.integers(1, 6),
    m=st.integers(1, 40),
    k=st.integers(1, 6),
    scale=st.floats(0.0, 30.0),
    splits=st.lists(st.integers(0, 40), max_size=4),
    bits=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_blocking_gives_logmatmul(n, m, k, scale, splits, bits, seed):
    gen = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(n, m, generator=gen)
    y = scale * torch.randn(m, k, generator=gen)
    values, certified = _stream(x, y, [s for s in splits if s < m], bits)
    exact = logmatmul(x.double(), y.double())
    # certified cells are exact to the float32 contract; a cell may only be flagged, never wrong
    err = (values - exact).abs()
    assert bool((err[certified] <= 1e-4 + 5e-7 * exact.abs()[certified]).all())


def test_flags_cells_float32_cannot_hold():
    # one cell's terms lie ~200 nats below its row and column maxima
    x = torch.tensor([[0.0, -200.0]])
    y = torch.tensor([[-200.0, 0.0], [0.0, -400.0]])
    values, certified = _stream(x, y, [])
    exact = _reference(x, y)
    assert not bool(certified.all())
    assert bool(((values - exact).abs() < 1e-5)[certified].all())


def test_float64_holds_a_wider_range():
    x = torch.tensor([[0.0, -200.0]], dtype=torch.float64)
    y = torch.tensor([[-200.0, 0.0], [0.0, -400.0]], dtype=torch.float64)
    values, certified = _stream(x, y, [])
    assert bool(certified.all())
    torch.testing.assert_close(values, _reference(x, y))


def test_bad_arguments():
    with pytest.raises(TypeError, match="dtype"):
        LogMatMulStream(4, dtype=torch.float16)
    with pytest.raises(ValueError, match="count"):
        LogMatMulStream(0)
    with pytest.raises(ValueError, match="count"):
        LogMatMulStream(2.5)
    with pytest.raises(ValueError, match="no block"):
        LogMatMulStream(4).result()
    with pytest.raises(ValueError, match="no block"):
        LogMatMulStream(4).certified()
    with pytest.raises(ValueError, match="shift_rows"):
        LogMatMulStream(4).add(torch.ones(2, 3), torch.ones(3, 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("jump", [5.0, 80.0, 500.0])
def test_shifts_that_grow_between_blocks_rescale_what_was_added(dtype, jump):
    # the second block's maxima lie `jump` nats above the first's: the first block's mass is
    # rescaled (to nothing, past the float range) and the answer stays exact
    x = torch.cat([torch.randn(4, 6) - jump, torch.randn(4, 6)], 1).to(dtype)
    y = torch.cat([torch.randn(6, 3) - jump, torch.randn(6, 3)], 0).to(dtype)
    values, certified = _stream(x, y, [6])
    assert bool(certified.all())
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(values, _reference(x, y), atol=tol, rtol=tol)
    # and the other way round: the first block holds the maxima
    values, certified = _stream(x.flip(-1), y.flip(0), [6])
    assert bool(certified.all())
    torch.testing.assert_close(values, _reference(x, y), atol=tol, rtol=tol)
