r"""Chunked kernels behind :func:`pyro_contrast.ops.logmatmul` (private).

Notation: ``x`` is (..., N, M), ``y`` is (..., M, K), both already in the compute dtype and
free of ``+inf``/NaN (see :func:`split_special`); ``out`` is the broadcast (..., N, K).

**Fast path.** For a chunk ``c`` of the inner index with row maxima ``a_c`` of ``x`` and
column maxima ``b_c`` of ``y``, ``S_c = exp(x_c - a_c + h) @ exp(y_c - b_c + h)`` is a plain
GEMM whose entries lie in ``[0, C e^{2h}]``. In float64 the headroom ``h`` (``headroom``,
~349 nats; 0 in float32) puts the largest products near the top of the float range, so
terms down to ``e^{-2h}`` below them stay normal numbers. With the per-cell reference
``r = max_c (a_c + b_c)`` (a running maximum, so each input is read once) the cell total is
``exp(r - 2h) A`` with ``A = sum_c S_c exp(a_c + b_c - r)``; the chunk weights are applied
in two half steps so that a large ``S_c`` never meets a subnormal weight.

**Error bound.** Every ``exp`` is ``exp2`` of the (already shifted) argument times
``log2(e)``: torch's CPU ``exp2`` is several times faster than its ``exp``. A factor that
underflows loses less than ``tiny`` (the smallest normal number) times the other factor
(at most ``e^h``); a product, a flushed partial sum or a rescaled mass below ``tiny`` loses
less than ``tiny``; the gathered path clamps its arguments at ``log(tiny) + 1/2`` instead
(far-negative arguments are the norm there and slow), moving a term by less than
``2 tiny``. At most ``8 M tiny e^h`` is lost in all; the rest is the usual relative
rounding of a sum of positive terms. Hence ``A >= e^{h - T}`` with
``T = log(eps / (8 M tiny))`` bounds the relative error from underflow by ``eps``: the
cell is exact to rounding. A cell passes when its best terms lie less than ``h + T`` below
``a_c + b_c`` (~60 nats in float32, ~1,010 in float64 at M = 16,384).

**Tiers.** Cells that fail (misaligned maxima: squared-L2 scores of spread-out
embeddings, cold temperatures) are recomputed on the submatrix of their rows and columns:
first in float64 (a float32 input's fast pass goes to float64 outright when a probe on a
32 x 32 block predicts that most rows and columns would need it), then with chunks 8x and
64x smaller (tighter shifts certify structured, low-rank scores), each at GEMM cost and
only where a cost model says it beats the last tier: the gathered log-space path, chunked,
at O(M) per cell. Shifts of all ``-inf`` rows/columns are clamped to a finite floor so no
``-inf - -inf`` appears; a cell whose row or column is entirely ``-inf`` is ``-inf``
exactly.
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


def compute_chunk(chunk, compute, dtype, batch_numel, num_lines):
    """``chunk``, narrowed so exp buffers in a wider ``compute`` dtype keep the same bytes."""
    if compute.itemsize <= dtype.itemsize:
        return chunk
    limit = _BUFFER_ELEMENTS * dtype.itemsize // compute.itemsize
    return max(1, min(chunk, limit // max(batch_numel * num_lines, 1)))


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


def scratch(slot, shape, like, dtype=None):
    """An uninitialized tensor of ``shape`` like ``like``, reused across calls (see above)."""
    numel = math.prod(shape)
    dtype = like.dtype if dtype is None else dtype
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    # Buffers made under inference mode are inference tensors, which ordinary mode may not
    # write: one set per mode. One drawn into a graph (requires_grad) is never handed out.
    key = (slot, like.device, dtype, torch.is_inference_mode_enabled())
    buffer = buffers.get(key)
    if buffer is None or buffer.numel() < numel or buffer.requires_grad:
        buffer = like.new_empty(numel, dtype=dtype)
        if numel <= _SCRATCH_ELEMENTS:
            buffers[key] = buffer
    return buffer[:numel].view(shape)


def headroom(dtype, count):
    """``h``: float64 exps carry up to ``e^h``, so a sum of ``count`` products stays finite.

    Using the top of the float range as well as the bottom widens the spread of terms a
    cell can hold by ``h`` (~349 nats). Not in float32: there ``t + h`` would round the
    exponent ``t`` of every term to the spacing of floats near ``h`` (~4e-6).
    """
    if dtype != torch.float64:
        return 0.0
    info = torch.finfo(dtype)
    return (math.log(info.max) - math.log(max(count, 1)) - 2.0) / 2


def mass_threshold(dtype, count):
    """Smallest certified ``A e^{2h}``: what underflow can lose, ``8 count tiny e^h``, / eps."""
    return math.exp(headroom(dtype, count) - safe_threshold(dtype, count))


def rescale_(value, delta, scale=_LOG2E):
    """In place ``value * exp2(scale delta)`` for ``delta <= 0``, as two half steps.

    A large ``value`` (up to ``count e^{2h}``) times a weight below ``tiny`` would lose far
    more than the error bound allows; with half steps only a result below ``tiny`` is lost.
    """
    half = delta.mul_(scale / 2).exp2_()
    return value.mul_(half).mul_(half)


def _shifted_exp(value, shift, slot, compute, head):
    """``exp(value - shift + h)`` in ``compute``; the difference is formed in ``compute``."""
    if compute == value.dtype:
        buffer = torch.sub(value, shift, out=scratch(slot, value.shape, value))
    else:
        buffer = scratch(slot + "64", value.shape, value, compute).copy_(value).sub_(shift)
    return torch.add(head, buffer, alpha=_LOG2E, out=buffer).exp2_()


def forward_fast(x, y, bounds, compute=None, count=None):
    """``(mass, ref, row_max, col_max)``: ``A e^{2h}`` and ``r`` of the notes, global maxima.

    Exps and GEMMs run in ``compute`` (default: the input dtype; float64 widens the range a
    cell's terms may span from ~100 to ~1,000 nats). ``mass`` and ``ref`` are in ``compute``;
    ``count`` (default: the inner size) sets the headroom ``h``. No gradient tracking; each
    chunk of ``x`` and ``y`` is read once while in cache.
    """
    compute = x.dtype if compute is None else compute
    count = x.shape[-1] if count is None else count
    head = torch.tensor(headroom(compute, count) * _LOG2E, dtype=compute, device=x.device)
    mass = ref = row_max = col_max = None
    for lo, hi in bounds:
        xc, yc = x[..., lo:hi], y[..., lo:hi, :]
        a, b = xc.amax(-1, keepdim=True), yc.amax(-2, keepdim=True)
        a_safe, b_safe = clamp_shift(a).to(compute), clamp_shift(b).to(compute)
        ex = _shifted_exp(xc, a_safe, "x", compute, head)
        ey = _shifted_exp(yc, b_safe, "y", compute, head)
        partial = torch.matmul(ex, ey)
        shift = a_safe + b_safe
        if mass is None:
            mass, ref, row_max, col_max = partial, shift, a, b
            continue
        new_ref = torch.maximum(ref, shift)
        mass = rescale_(mass, ref - new_ref).add_(rescale_(partial, shift.sub_(new_ref)))
        ref, row_max, col_max = new_ref, torch.maximum(row_max, a), torch.maximum(col_max, b)
    return mass, ref, row_max, col_max


def log_of_mass(mass, ref, compute, count):
    """``log A + r`` in float64, the cell values of a fast pass (before the certificate).

    The sum is in float64, and the caller rounds it once. With float64 exponentials the log
    is too: ``log(A e^{2h})`` is near ``2h``, where float32 would lose ~4e-6. Float32 ones
    carry no headroom (``h = 0``), so ``log A`` is taken in float32, whose rounding is
    ``2^-24 |log A|`` (below 4e-6 for a certified cell, 6e-7 for ``A`` in ``[1, count]``):
    torch's float64 ``log`` is not vectorized on CPU and costs ~5x as much.
    """
    head = headroom(compute, count)
    if mass.dtype == torch.float32 and head == 0.0:
        return torch.log(mass).double().add_(ref)
    return torch.log(mass.double()).sub_(2 * head).add_(ref)


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


def _worth_retrying(num_pending, block_cells, num_lines, chunk, compute):
    """Whether a GEMM pass over a (rows x cols) block beats gathering its pending cells.

    Costs per inner index in units of one gathered log-space term, measured on a 2-core x86
    CPU: a GEMM cell ~1/200 (float32) or ~1/80 (float64), an exponentiated factor element
    ~1 or ~2, and per chunk ~2.4e4 plus ~0.9 per cell (the rescaling).
    """
    gemm, line = (1 / 80, 2.0) if compute == torch.float64 else (1 / 200, 1.0)
    cost = block_cells * (gemm + 0.9 / chunk) + num_lines * line + 24000 / chunk
    return num_pending > cost


def _retry(x, y, out, redo, chunk, compute):
    """Recompute flagged cells on the submatrix of their rows and columns.

    Either in float64 (a range of ~1,000 nats per cell instead of ~100) or with smaller
    chunks (tighter per-chunk shifts rescue structured, low-rank scores): GEMM cost either
    way. Cells it certifies are written to ``out`` and cleared from ``redo``. Returns False
    (doing nothing) where the gathered log-space path is expected to be cheaper.
    """
    num_rows, num_cols = redo.shape[-2:]
    num_inner = x.shape[-1]
    rows = redo.any(-1).reshape(-1, num_rows).any(0).nonzero().squeeze(-1)
    cols = redo.any(-2).reshape(-1, num_cols).any(0).nonzero().squeeze(-1)
    num_pending = int(redo.sum())
    block_cells = redo[..., :1, :1].numel() * rows.numel() * cols.numel()
    if not _worth_retrying(num_pending, block_cells, rows.numel() + cols.numel(), chunk, compute):
        return False
    x = x.index_select(-2, rows) if rows.numel() < num_rows else x
    y = y.index_select(-1, cols) if cols.numel() < num_cols else y
    mass, ref, _, _ = forward_fast(x, y, chunk_bounds(num_inner, chunk), compute, num_inner)
    block = (Ellipsis, rows.unsqueeze(-1), cols)
    pending = redo[block]
    take = pending & (mass >= mass_threshold(compute, num_inner))
    values = log_of_mass(mass, ref, compute, num_inner).to(out.dtype)
    out[block] = torch.where(take, values, out[block])
    redo[block] = pending & ~take
    return True


# Rows and columns of the probe that predicts whether float32 will certify most cells; its
# columns come in groups of 8 adjacent ones, so it reads a quarter of y's cache lines, not all.
_PROBE = 32
_PROBE_GROUP = 8


def _prefer_float64(x, y, bounds):
    """Whether most cells of a float32 fast pass would fail the certificate.

    Decided on an evenly spaced ``_PROBE x _PROBE`` block (a cell's certificate depends only
    on its row, its column and the chunking, so the block samples the full pass), at ~1/8
    of the exponentials and ~1/64 of the GEMM for N = K = 256, and skipped when the block's
    rows or columns span less than the float32 limit (a cell's gap is at most the spread of
    its row, and of its column): ordinary scores pay two small reductions. A wrong guess
    costs time, never accuracy.
    """
    num_rows, num_cols, num_inner = x.shape[-2], y.shape[-1], x.shape[-1]
    if x.dtype != torch.float32 or min(num_rows, num_cols) < 4 * _PROBE:
        return False
    limit = safe_threshold(x.dtype, num_inner)
    rows = torch.linspace(0, num_rows - 1, _PROBE, device=x.device).long()
    x = x.index_select(-2, rows)
    if bool((x.amax(-1) - x.amin(-1) <= limit).all()):
        return False
    starts = torch.linspace(0, num_cols - _PROBE_GROUP, _PROBE // _PROBE_GROUP, device=x.device)
    cols = (starts.long().unsqueeze(-1) + torch.arange(_PROBE_GROUP, device=x.device)).flatten()
    y = y.index_select(-1, cols)
    if bool((y.amax(-2) - y.amin(-2) <= limit).all()):
        return False
    mass, _, row_max, col_max = forward_fast(x, y, bounds)
    empty = (row_max == -math.inf) | (col_max == -math.inf)
    failed = (~(mass >= mass_threshold(x.dtype, num_inner)) & ~empty).reshape(-1, _PROBE, _PROBE)
    # The float64 retry runs on the rows and columns holding a failed cell: once that block
    # is most of the matrix, the float32 pass before it is wasted.
    rows_share = failed.any(-1).float().mean()
    cols_share = failed.any(-2).float().mean()
    return bool(rows_share * cols_share > 0.5)


def forward(x, y, chunk, stats=None):
    """The exact log-space product (no gradient tracking).

    Tiers, each on what the previous one could not certify: the fast pass (in float64
    outright when a probe predicts float32 would fail most cells), a float64 pass over the
    flagged rows and columns, passes with 8x and 64x smaller chunks, the gathered log-space
    path. ``stats``, if a dict, receives the compute dtype of the first pass and the number
    of cells left after the first pass, after the float64 retry and for the log-space path.
    """
    batch_shape = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    num_inner = x.shape[-1]
    bounds = chunk_bounds(num_inner, chunk)
    if not bounds:  # empty sum
        return x.new_full(batch_shape + (x.shape[-2], y.shape[-1]), -math.inf)
    num_lines = x.shape[-2] + y.shape[-1]
    chunk64 = compute_chunk(chunk, torch.float64, x.dtype, batch_shape.numel(), num_lines)
    compute = x.dtype
    if _prefer_float64(x, y, bounds):
        compute, bounds = torch.float64, chunk_bounds(num_inner, chunk64)
    mass, ref, row_max, col_max = forward_fast(x, y, bounds, compute)
    special = None
    if not bool(torch.isfinite(row_max).all() & torch.isfinite(col_max).all()):
        # amax keeps NaN, so a NaN or +inf global maximum reveals a +inf/NaN input.
        if not bool((row_max < math.inf).all() & (col_max < math.inf).all()):
            special, values, x, y = split_special(x, y)
            mass, ref, row_max, col_max = forward_fast(x, y, bounds, compute)
        empty = (row_max == -math.inf) | (col_max == -math.inf)
    else:
        empty = None
    out = log_of_mass(mass, ref, compute, num_inner).to(x.dtype)
    # Written as ~(mass >= .) so a NaN (sums beyond the float range) is recomputed too.
    redo = ~(mass >= mass_threshold(compute, num_inner))
    if empty is not None:
        out.masked_fill_(empty, -math.inf)
        redo &= ~empty
        if special is not None:
            redo &= ~special
    if stats is not None:
        stats["first_pass"] = compute
        stats["flagged"] = int(redo.sum())
    if compute != torch.float64 and redo.any():
        if _retry(x, y, out, redo, chunk64, torch.float64):
            compute, chunk = torch.float64, chunk64
    if stats is not None:
        stats["after_float64"] = int(redo.sum())
    refine_chunk = min(chunk, num_inner) // _REFINE_FACTOR
    while refine_chunk >= _MIN_REFINE_CHUNK and redo.any():
        if not _retry(x, y, out, redo, refine_chunk, compute):
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
