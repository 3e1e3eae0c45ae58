r"""Chunked kernels behind :func:`pyro_contrast.ops.logmatmul` (private).

Notation: ``x`` is (..., N, M), ``y`` is (..., M, K), both already in the compute dtype and
free of ``+inf``/NaN (see :func:`split_special`); ``out`` is the broadcast (..., N, K).

**Fast path.** For a chunk ``c`` of the inner index with row maxima ``a_c`` of ``x`` and
column maxima ``b_c`` of ``y``, ``S_c = exp(x_c - a_c) @ exp(y_c - b_c)`` is a plain GEMM
whose entries lie in ``[0, C]``. With the per-cell reference ``r = max_c (a_c + b_c)`` the
cell total is ``exp(r) * A`` with ``A = sum_c S_c exp(a_c + b_c - r)``.

**Error bound.** In units of ``exp(r)`` every term of ``A`` that underflows (a factor, a
product, a flushed partial sum or the chunk weight) loses less than ``tiny`` (the smallest
normal number), so at most ``4 M tiny`` is lost in all; the rest carries the usual relative
rounding of a sum of positive terms. Hence ``A >= exp(-T)`` with
``T = log(eps / (4 M tiny))`` guarantees a relative error of ``eps`` from underflow: the cell
is exact to rounding. Cells with ``A < exp(-T)`` (misaligned maxima: the best term sits far
below ``a_c + b_c``) are recomputed in log space, gathered and chunked, at O(M) each.
"""

import math

import torch

# Elements of one gathered (cells x chunk) block in the exact path: ~4 MB in float32.
_BLOCK_ELEMENTS = 2**20
# Elements of the (N + K) x chunk exp buffers of the fast path: 128 MB in float32.
_BUFFER_ELEMENTS = 2**25


def default_chunk_size(batch_numel, num_rows, num_cols, num_inner):
    """Chunk of the inner index: large enough that per-chunk (N, K) work is amortized."""
    chunk = max(2048, 4 * num_rows * num_cols // max(num_rows + num_cols, 1))
    chunk = min(chunk, _BUFFER_ELEMENTS // max(batch_numel * (num_rows + num_cols), 1))
    return max(1, min(chunk, num_inner))


def safe_threshold(dtype, count):
    """``T = log(eps / (4 count tiny))``: smallest trusted fast-path mass is ``exp(-T)``."""
    info = torch.finfo(dtype)
    return math.log(info.eps) - math.log(4.0 * info.tiny * max(count, 1))


def _finite_or_zero(value):
    return torch.where(torch.isfinite(value), value, torch.zeros((), dtype=value.dtype))


def split_special(x, y):
    """Values of cells that see a ``+inf``/NaN input, and ``x``, ``y`` with those removed.

    Returns ``(special, values, x, y)``; ``special`` is None when every input is finite or
    ``-inf``. A row of ``x`` holding ``+inf`` or NaN makes every cell of its output row
    ``+inf`` or NaN, like ``torch.logsumexp`` of the broadcast sum: NaN where some term is
    NaN (a NaN input, or ``+inf`` meeting ``-inf``), else ``+inf``. Likewise columns of ``y``.
    """
    bad_x = torch.isnan(x) | (x == math.inf)
    bad_y = torch.isnan(y) | (y == math.inf)
    rows, cols = bad_x.any(-1), bad_y.any(-2)
    if not (rows.any() or cols.any()):
        return None, None, x, y
    special = rows.unsqueeze(-1) | cols.unsqueeze(-2)

    def hits(p, q):  # any_m p[n, m] & q[m, k], as a count GEMM (exact: counts are >= 0)
        return (p.to(x.dtype) @ q.to(y.dtype)) > 0

    nan = torch.isnan(x).any(-1).unsqueeze(-1) | torch.isnan(y).any(-2).unsqueeze(-2)
    nan = nan | hits(x == math.inf, y == -math.inf) | hits(x == -math.inf, y == math.inf)
    values = torch.where(nan, math.nan, math.inf).to(x.dtype)
    special, values = torch.broadcast_tensors(special, values)
    x = x.masked_fill(bad_x, -math.inf)
    y = y.masked_fill(bad_y, -math.inf)
    return special, values, x, y


def chunk_bounds(num_inner, chunk):
    return [(m, min(m + chunk, num_inner)) for m in range(0, num_inner, chunk)]


def chunk_maxima(x, y, bounds):
    """Row maxima of ``x`` and column maxima of ``y`` per chunk, and ``r = max_c(a_c + b_c)``."""
    maxima = []
    ref = None
    for lo, hi in bounds:
        a = x[..., lo:hi].amax(-1, keepdim=True)
        b = y[..., lo:hi, :].amax(-2, keepdim=True)
        maxima.append((a, b))
        shift = a + b
        ref = shift if ref is None else torch.maximum(ref, shift)
    return maxima, ref


def forward_fast(x, y, bounds, maxima, ref):
    """``(mass, out)``: ``A`` of the module notes and ``out = r + log A`` (no gradient)."""
    ref_safe = _finite_or_zero(ref)
    mass = torch.zeros_like(ref)
    for (lo, hi), (a, b) in zip(bounds, maxima, strict=True):
        ex = (x[..., lo:hi] - _finite_or_zero(a)).exp_()
        ey = (y[..., lo:hi, :] - _finite_or_zero(b)).exp_()
        weight = (a + b).sub_(ref_safe).exp_()
        mass.addcmul_(torch.matmul(ex, ey), weight)
    return mass, mass.log().add_(ref_safe)


def _cell_index(cells, batch_shape):
    """Flat batch index of each gathered cell (row-major over ``batch_shape``)."""
    flat = torch.zeros_like(cells[-1])
    for index, size in zip(cells[:-2], batch_shape, strict=True):
        flat = flat * size + index
    return flat


def exact_cells(x, y, cells, chunk):
    """``logsumexp_m(x[b, n, m] + y[b, m, k])`` for the gathered cells, streamed over m.

    A running maximum per cell keeps every ``exp`` argument non-positive, and the sum is
    kept relative to it (online softmax), so only O(cells x chunk) memory is used.
    """
    batch_shape = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    *bidx, n, k = cells
    num_cells, num_inner = n.numel(), x.shape[-1]
    x = x.expand(batch_shape + x.shape[-2:])
    ref = x.new_full((num_cells,), -math.inf)
    mass = x.new_zeros((num_cells,))
    step = max(1, _BLOCK_ELEMENTS // max(chunk, 1))
    for lo, hi in chunk_bounds(num_inner, chunk):
        xc = x[..., lo:hi]
        yc = y[..., lo:hi, :].transpose(-1, -2).contiguous().expand(batch_shape + (-1, hi - lo))
        for p in range(0, num_cells, step):
            sel = slice(p, p + step)
            rows = tuple(i[sel] for i in bidx)
            z = xc[rows + (n[sel],)].add_(yc[rows + (k[sel],)])
            new_ref = torch.maximum(ref[sel], z.amax(-1))
            safe = _finite_or_zero(new_ref)
            scale = (ref[sel] - safe).exp_()
            mass[sel] = mass[sel] * scale + z.sub_(safe.unsqueeze(-1)).exp_().sum(-1)
            ref[sel] = new_ref
    return mass.log_().add_(_finite_or_zero(ref))


def _has_special(maxima):
    """A chunk maximum that is NaN or ``+inf`` reveals a ``+inf``/NaN input (``amax`` keeps NaN)."""
    flat = torch.cat([t.reshape(-1) for pair in maxima for t in pair])
    return not bool((flat < math.inf).all())


def forward(x, y, chunk):
    """The exact log-space product (no gradient tracking)."""
    batch_shape = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    bounds = chunk_bounds(x.shape[-1], chunk)
    if not bounds:  # empty sum
        return x.new_full(batch_shape + (x.shape[-2], y.shape[-1]), -math.inf)
    maxima, ref = chunk_maxima(x, y, bounds)
    special = None
    if _has_special(maxima):
        special, values, x, y = split_special(x, y)
        if special is not None:
            maxima, ref = chunk_maxima(x, y, bounds)
    mass, out = forward_fast(x, y, bounds, maxima, ref)
    threshold = safe_threshold(x.dtype, x.shape[-1])
    redo = (mass < math.exp(-threshold)) & (ref > -math.inf)
    if special is not None:
        redo &= ~special
    if redo.any():
        cells = redo.nonzero(as_tuple=True)
        out[cells] = exact_cells(x, y, cells, chunk)
    if special is not None:
        out = torch.where(special, values, out)
    return out
