r"""Chunked kernels behind :func:`pyro_contrast.ops.logmatmul` (private).

Notation: ``x`` is (..., N, M), ``y`` is (..., M, K), both already in the compute dtype and
free of ``+inf``/NaN (see :func:`split_special`); ``out`` is the broadcast (..., N, K).

**Fast path.** For a chunk ``c`` of the inner index with row maxima ``a_c`` of ``x`` and
column maxima ``b_c`` of ``y``, ``S_c = exp(x_c - a_c) @ exp(y_c - b_c)`` is a plain GEMM
whose entries lie in ``[0, C]``. With the per-cell reference ``r = max_c (a_c + b_c)``
(kept as a running maximum, so each input is read once) the cell total is ``exp(r) A`` with
``A = sum_c S_c exp(a_c + b_c - r)``.

**Error bound.** Every ``exp`` is ``exp2`` of the (already shifted) argument times
``log2(e)``: torch's CPU ``exp2`` is several times faster than its ``exp``. In units of
``exp(r)`` every term of ``A`` that underflows (a factor, a product, a flushed partial sum,
a chunk weight or a rescaling) loses less than ``tiny`` (the smallest normal number); the
gathered path clamps its arguments at ``log(tiny) + 1/2`` instead (far-negative arguments
are the norm there and slow), moving a term by less than ``2 tiny``. At most ``8 M tiny``
is lost in all; the rest is the usual relative rounding of a sum of positive terms. Hence
``A >= exp(-T)`` with ``T = log(eps / (8 M tiny))`` bounds the relative error from
underflow by ``eps``: the cell is exact to rounding. Cells with ``A < exp(-T)``
(misaligned maxima: the best term sits far below ``a_c + b_c``) are first retried on the
submatrix of their rows and columns with chunks 8x and 64x smaller (tighter shifts certify
most structured, low-rank scores at GEMM cost); what remains is recomputed in log space,
gathered and chunked, at O(M) each.
Shifts of all ``-inf`` rows/columns are clamped to a finite floor so no ``-inf - -inf``
appears; a cell whose row or column is entirely ``-inf`` is ``-inf`` exactly.
"""

import math
import threading

import torch

# Elements of one gathered (cells x chunk) block in the exact path: ~4 MB in float32.
_BLOCK_ELEMENTS = 2**20
# Elements of the (N + K) x chunk exp buffers of the fast path: 128 MB in float32.
_BUFFER_ELEMENTS = 2**25
# Scratch buffers kept between calls, per thread and slot, up to this many elements (32 MB
# in float32): a fresh multi-megabyte buffer page-faults on every call, which cost about a
# third of the fast path's time at N = K = 256, M = 16384.
_SCRATCH_ELEMENTS = 2**23
_SCRATCH = threading.local()
_LOG2E = 1.0 / math.log(2.0)
# Flagged cells are retried with chunks this many times smaller, down to this size.
_REFINE_FACTOR = 8
_MIN_REFINE_CHUNK = 32


def default_chunk_size(batch_numel, num_rows, num_cols, num_inner):
    """Chunk of the inner index: large enough that per-chunk (N, K) work is amortized."""
    chunk = max(8192, 4 * num_rows * num_cols // max(num_rows + num_cols, 1))
    chunk = min(chunk, _BUFFER_ELEMENTS // max(batch_numel * (num_rows + num_cols), 1))
    return max(1, min(chunk, num_inner))


def safe_threshold(dtype, count):
    """``T = log(eps / (8 count tiny))``: smallest trusted fast-path mass is ``exp(-T)``."""
    info = torch.finfo(dtype)
    return math.log(info.eps) - math.log(8.0 * info.tiny * max(count, 1))


def exp_floor(dtype):
    """Clamp for ``exp`` arguments: ``exp`` of it is a normal number just above ``tiny``."""
    return math.log(torch.finfo(dtype).tiny) + 0.5


def exp_clamped_(value, floor):
    """In place ``exp(max(value, floor))``, as ``exp2`` of ``value / log 2``.

    Shifts are subtracted first (exactly, for nearby numbers), so scaling by ``log2(e)``
    adds only a relative rounding of the small difference; ``exp2`` is several times
    faster than ``exp`` in torch's CPU kernels, and the clamp keeps both off their slow
    far-negative paths.
    """
    return value.mul_(_LOG2E).clamp_(min=floor * _LOG2E).exp2_()


def clamp_shift(value):
    """Replace ``-inf`` shifts by a finite floor; a quarter of the range keeps sums finite."""
    return value.clamp(min=torch.finfo(value.dtype).min / 4)


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


def scratch(slot, shape, like):
    """An uninitialized tensor of ``shape`` like ``like``, reused across calls (see above)."""
    numel = math.prod(shape)
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    key = (slot, like.device, like.dtype)
    buffer = buffers.get(key)
    if buffer is None or buffer.numel() < numel:
        buffer = like.new_empty(numel)
        if numel <= _SCRATCH_ELEMENTS:
            buffers[key] = buffer
    return buffer[:numel].view(shape)


def forward_fast(x, y, bounds):
    """``(mass, ref, row_max, col_max)``: ``A`` and ``r`` of the module notes, global maxima.

    No gradient tracking; each chunk of ``x`` and ``y`` is read once while in cache.
    """
    mass = ref = row_max = col_max = None
    for lo, hi in bounds:
        xc, yc = x[..., lo:hi], y[..., lo:hi, :]
        a, b = xc.amax(-1, keepdim=True), yc.amax(-2, keepdim=True)
        a_safe, b_safe = clamp_shift(a), clamp_shift(b)
        ex = torch.sub(xc, a_safe, out=scratch("x", xc.shape, xc)).mul_(_LOG2E).exp2_()
        ey = torch.sub(yc, b_safe, out=scratch("y", yc.shape, yc)).mul_(_LOG2E).exp2_()
        partial = torch.matmul(ex, ey)
        shift = a_safe + b_safe
        if mass is None:
            mass, ref, row_max, col_max = partial, shift, a, b
            continue
        new_ref = torch.maximum(ref, shift)
        rescale = (ref - new_ref).mul_(_LOG2E).exp2_()
        mass = mass.mul_(rescale).addcmul_(partial, shift.sub_(new_ref).mul_(_LOG2E).exp2_())
        ref, row_max, col_max = new_ref, torch.maximum(row_max, a), torch.maximum(col_max, b)
    return mass, ref, row_max, col_max


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
    floor = exp_floor(x.dtype)
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
            terms = exp_clamped_(z.sub_(safe.unsqueeze(-1)), floor)
            mass[sel] = mass[sel] * scale + terms.sum(-1)
            ref[sel] = new_ref
    out = mass.log_().add_(_finite_or_zero(ref))
    return out.masked_fill_(ref == -math.inf, -math.inf)  # the clamp made -inf terms tiny


def _refine(x, y, out, redo, chunk, threshold):
    """Retry flagged cells on the submatrix of their rows and columns with smaller chunks.

    Tighter per-chunk shifts rescue structured (low-rank) scores at GEMM cost; cells it
    certifies by the same criterion are written to ``out`` and cleared from ``redo``.
    Returns False (doing nothing) where the gathered log-space path is expected to be cheaper.
    """
    num_rows, num_cols = redo.shape[-2:]
    rows = redo.any(-1).reshape(-1, num_rows).any(0).nonzero().squeeze(-1)
    cols = redo.any(-2).reshape(-1, num_cols).any(0).nonzero().squeeze(-1)
    # Worth it only when the gathered path would cost more: per-chunk overheads (about
    # 4e4 element-ops per chunk) and (rows x cols) work per chunk against 8 ops per term.
    num_pending = int(redo.sum())
    block_cells = redo[..., :1, :1].numel() * rows.numel() * cols.numel()
    if num_pending * chunk < 40000 or 2 * block_cells > chunk * num_pending:
        return False
    x = x.index_select(-2, rows) if rows.numel() < num_rows else x
    y = y.index_select(-1, cols) if cols.numel() < num_cols else y
    mass, ref, _, _ = forward_fast(x, y, chunk_bounds(x.shape[-1], chunk))
    block = (rows.unsqueeze(-1), cols)
    pending = redo[(Ellipsis,) + block]
    take = pending & (mass >= threshold)
    out[(Ellipsis,) + block] = torch.where(take, mass.log_().add_(ref), out[(Ellipsis,) + block])
    redo[(Ellipsis,) + block] = pending & ~take
    return True


def forward(x, y, chunk, stats=None):
    """The exact log-space product (no gradient tracking).

    ``stats``, if a dict, receives the number of cells flagged by the fast pass and of
    cells left to the gathered log-space path after refinement.
    """
    batch_shape = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    bounds = chunk_bounds(x.shape[-1], chunk)
    if not bounds:  # empty sum
        return x.new_full(batch_shape + (x.shape[-2], y.shape[-1]), -math.inf)
    mass, ref, row_max, col_max = forward_fast(x, y, bounds)
    threshold = math.exp(-safe_threshold(x.dtype, x.shape[-1]))
    special = None
    if bool(torch.isfinite(row_max).all() & torch.isfinite(col_max).all()):  # common case
        out = mass.log().add_(ref)
        # Written as ~(mass >= .) so a NaN (sums beyond the float range) is recomputed too.
        redo = ~(mass >= threshold)
    else:
        # amax keeps NaN, so a NaN or +inf global maximum reveals a +inf/NaN input.
        if not bool((row_max < math.inf).all() & (col_max < math.inf).all()):
            special, values, x, y = split_special(x, y)
            mass, ref, row_max, col_max = forward_fast(x, y, bounds)
        empty = (row_max == -math.inf) | (col_max == -math.inf)
        out = mass.log().add_(ref).masked_fill_(empty, -math.inf)
        redo = ~(mass >= threshold) & ~empty
        if special is not None:
            redo &= ~special
    if stats is not None:
        stats["flagged"] = int(redo.sum())
    refine_chunk = min(chunk, x.shape[-1]) // _REFINE_FACTOR
    while refine_chunk >= _MIN_REFINE_CHUNK and redo.any():
        if not _refine(x, y, out, redo, refine_chunk, threshold):
            break  # smaller chunks would be even less worth it
        refine_chunk //= _REFINE_FACTOR
    if stats is not None:
        stats["log_space"] = int(redo.sum())
    if redo.any():
        cells = redo.nonzero(as_tuple=True)
        out[cells] = exact_cells(x, y, cells, chunk)
    if special is not None:
        out = torch.where(special, values, out)
    return out
