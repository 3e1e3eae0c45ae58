r"""Chunked gradient of :func:`pyro_contrast.ops.logmatmul` (private).

With softmax weights :math:`w_{nmk} = \exp(x_{nm} + y_{mk} - \mathrm{out}_{nk})`,

.. math::

    \frac{\partial L}{\partial x_{nm}} = \sum_k g_{nk} w_{nmk}, \qquad
    \frac{\partial L}{\partial y_{mk}} = \sum_n g_{nk} w_{nmk}.

Per chunk of the inner index both are GEMMs of the shifted factors ``exp(x_c - a_c + p)``,
``exp(y_c - b_c + p)`` (entries in ``[0, e^p]``) with ``H = (g / s) exp(a_c + b_c - out -
2p)``, where ``s = max|g|``. Let ``T = log(eps / (8 max(N, K) tiny))``. In float32 ``p = 0``:
where ``a_c + b_c - out <= T`` the entries of ``H`` stay below ``e^T`` (no overflow) and a
term lost to underflow weighs less than ``tiny e^T s``, negligible next to ``eps s``. In
float64 the headroom ``p = T / 2`` stretches that to ``a_c + b_c - out <= 1.5 T`` (~1,000
nats): ``H <= e^{T/2}``; a factor lost to underflow drops at most ``tiny K e^T s`` from a
gradient entry, an ``H`` lost to underflow at most ``tiny K e^{2p} s``, both below
``eps s / 8``. A float32 input is differentiated in float64 when enough cells exceed the
float32 limit that gathering them would cost more. The other (cell, chunk) pairs
(misaligned maxima beyond either limit), and every chunk of a cell whose output is
``+inf``/NaN, are gathered and their weights formed directly, as ``torch.logsumexp`` does.
Cells whose output is ``-inf`` contribute nothing. Memory is O(N K + chunk) beyond the
gradients themselves.

Every operation here is an out-of-place differentiable torch op (shifts and masks are
detached constants), so double backward works by differentiating this code.
"""

import math

import torch

from pyro_contrast.ops._logmatmul_kernels import (
    _BLOCK_ELEMENTS,
    _LOG2E,
    _cell_index,
    chunk_bounds,
    clamp_shift,
    compute_chunk,
    exp_floor,
    safe_threshold,
    scratch,
)


def _exp_clamped(value, floor):
    """Out-of-place (differentiable) twin of ``exp_clamped_``: ``exp2`` is the fast kernel."""
    return (value * _LOG2E).clamp(min=floor * _LOG2E).exp2()


def _scale(grad):
    scale = grad.detach().abs().amax() if grad.numel() else grad.new_ones(())
    if not bool(torch.isfinite(scale)) or not bool(scale > 0):
        scale = grad.new_ones(())
    return scale


def fast_limit(dtype, count):
    """Largest ``a_c + b_c - out`` of a fast cell: ``T``, or ``1.5 T`` with float64's headroom."""
    threshold = safe_threshold(dtype, count)
    return 1.5 * threshold if dtype == torch.float64 else threshold


def _headroom(dtype, count):
    """``p``: ``T / 2`` in float64 (see the module notes), 0 in float32 (rounding)."""
    return safe_threshold(dtype, count) / 2 if dtype == torch.float64 else 0.0


def _compute_dtype(x, y, out, finite, count):
    """float64 when the float32 GEMMs would leave enough cells to the gathered path.

    A cell whose gap to the global row plus column maxima is within the float32 limit is
    fast in every chunk; the others most likely need float64 (or gathering, at ~100x a
    GEMM cell's cost per chunk, measured; float64 GEMMs cost ~2.5x float32 ones).
    """
    if x.dtype != torch.float32 or not out.numel():
        return x.dtype
    gap = clamp_shift(x.amax(-1, keepdim=True)) + clamp_shift(y.amax(-2, keepdim=True)) - out
    num_slow = int((finite & (gap > fast_limit(x.dtype, count))).sum())
    num_lines = x.shape[-2] + y.shape[-1]
    return torch.float64 if 100 * num_slow > 1.5 * out.numel() + 4 * num_lines else x.dtype


def backward(x, y, out, grad, chunk):
    """``(dx, dy)`` over the broadcast batch shape of ``out``."""
    batch_shape = out.shape[:-2]
    num_rows, num_inner, num_cols = x.shape[-2], x.shape[-1], y.shape[-1]
    bounds = chunk_bounds(num_inner, chunk)
    if not bounds:
        return (
            x.new_zeros(batch_shape + (num_rows, 0)),
            y.new_zeros(batch_shape + (0, num_cols)),
        )
    x_fast, y_fast = x, y
    with torch.no_grad():
        finite = torch.isfinite(out)
        always_exact = torch.isnan(out) | (out == math.inf)
        if bool(always_exact.any()):  # +inf/NaN inputs only reach gathered cells
            x_fast = x.masked_fill(torch.isnan(x) | (x == math.inf), -math.inf)
            y_fast = y.masked_fill(torch.isnan(y) | (y == math.inf), -math.inf)
        else:
            always_exact = None
        count = max(num_rows, num_cols)
        compute = _compute_dtype(x_fast, y_fast, out, finite, count)
        if compute != x.dtype:
            chunk = compute_chunk(chunk, compute, x.dtype, batch_shape.numel(), num_rows + num_cols)
            bounds = chunk_bounds(num_inner, chunk)
        limit = fast_limit(compute, count)
        head = _headroom(compute, count)
        out_c = out.to(compute)
    scale = _scale(grad)
    weighted = (grad / scale).to(compute)
    # ex carries the scale s = max|g|, so both products below come out scaled back.
    head_x = (scale.to(compute).log() + head) * _LOG2E  # in compute: head is ~300 nats
    head_y = torch.tensor(head * _LOG2E, dtype=compute, device=x.device)
    floor = exp_floor(compute)
    # First-order backward (no graph) fills preallocated gradients: no second copy via cat.
    record = torch.is_grad_enabled()
    dx_parts, dy_parts = [], []
    if not record:
        dx_full = x.new_empty(batch_shape + (num_rows, num_inner))
        dy_full = y.new_empty(batch_shape + (num_inner, num_cols))
    for lo, hi in bounds:
        xc, yc = x_fast[..., lo:hi], y_fast[..., lo:hi, :]
        with torch.no_grad():
            a = clamp_shift(xc.amax(-1, keepdim=True)).to(compute)
            b = clamp_shift(yc.amax(-2, keepdim=True)).to(compute)
            gap = a + b - out_c
            fast = finite & (gap <= limit)
            exact = finite & ~fast
            if always_exact is not None:
                exact |= always_exact
            cells = exact.nonzero(as_tuple=True)
        # Out of no_grad: double backward differentiates through ``out``. Masked cells get
        # a finite exponent: exp(huge) * 0 would be NaN there.
        exponent = torch.where(fast, (a + b - 2 * head) - out.to(compute), floor).clamp(min=floor)
        ex, ey = _factors(xc, yc, a, b, head_x, head_y, compute, record)
        h = torch.where(fast, weighted * exponent.exp(), torch.zeros_like(weighted))
        if not record and not cells[-1].numel():
            _write_chunk(ex, ey, h, dx_full[..., lo:hi], dy_full[..., lo:hi, :])
            continue
        dx = ex * torch.matmul(h, ey.transpose(-1, -2))
        dy = ey * torch.matmul(ex.transpose(-1, -2), h)
        dx = dx.to(x.dtype).expand(batch_shape + (num_rows, hi - lo))
        dy = dy.to(y.dtype).expand(batch_shape + (hi - lo, num_cols))
        if cells[-1].numel():
            dx, dy = _add_exact((x, y), cells, grad, out, lo, hi, dx, dy)
        if record:
            dx_parts.append(dx)
            dy_parts.append(dy)
        else:
            dx_full[..., lo:hi] = dx
            dy_full[..., lo:hi, :] = dy
    if not record:
        return dx_full, dy_full
    return torch.cat(dx_parts, -1), torch.cat(dy_parts, -2)


def _write_chunk(ex, ey, h, dx, dy):
    """``dx = ex * (h @ ey^T)``, ``dy = ey * (ex^T @ h)`` written into the gradients' chunk.

    The products go to reused scratch buffers (fresh multi-megabyte tensors page-fault on
    every chunk); a float64 tier multiplies in place into its factors and rounds once, on
    the copy into the (float32) gradients.
    """
    into_x = scratch("gx", h.shape[:-1] + (ey.shape[-2],), h)
    into_y = scratch("gy", h.shape[:-2] + (ex.shape[-1], h.shape[-1]), h)
    torch.matmul(h, ey.transpose(-1, -2), out=into_x)
    torch.matmul(ex.transpose(-1, -2), h, out=into_y)
    if ex.dtype == dx.dtype:
        torch.mul(ex, into_x, out=dx)
        torch.mul(ey, into_y, out=dy)
    else:
        dx.copy_(into_x.mul_(ex))
        dy.copy_(into_y.mul_(ey))


def _factors(xc, yc, a, b, head_x, head_y, compute, record):
    """``s exp(x_c - a + p)`` and ``exp(y_c - b + p)`` in ``compute``, as ``exp2``.

    The shift is subtracted first, in ``compute``, so its rounding stays relative to the
    small difference; with ``record`` (double backward) only differentiable ops are used.
    """
    if record:
        ex = torch.add(head_x, (xc.to(compute) - a), alpha=_LOG2E).exp2()
        ey = torch.add(head_y, (yc.to(compute) - b), alpha=_LOG2E).exp2()
        return ex, ey
    factors = []
    for value, shift, head, slot in ((xc, a, head_x, "x"), (yc, b, head_y, "y")):
        if compute == value.dtype:
            buffer = torch.sub(value, shift, out=scratch(slot, value.shape, value))
        else:
            buffer = scratch(slot + "64", value.shape, value, compute).copy_(value).sub_(shift)
        factors.append(torch.add(head, buffer, alpha=_LOG2E, out=buffer).exp2_())
    return factors


def _add_exact(inputs, cells, grad, out, lo, hi, dx, dy):
    """Scatter ``g w`` of the gathered cells into the chunk gradients ``dx``, ``dy``."""
    x, y = inputs
    batch_shape = dx.shape[:-2]
    *bidx, n, k = cells
    flat = _cell_index(cells, batch_shape)
    grad_cells, out_cells = grad[cells], out[cells]
    num_rows, num_cols, width = dx.shape[-2], dy.shape[-1], hi - lo
    floor = exp_floor(x.dtype)
    xc = x[..., lo:hi].expand(batch_shape + (num_rows, width))
    yc = y[..., lo:hi, :].transpose(-1, -2).expand(batch_shape + (num_cols, width))
    dx = dx.reshape(-1, width)
    dy = dy.transpose(-1, -2).reshape(-1, width)
    step = max(1, _BLOCK_ELEMENTS // width)
    for p in range(0, n.numel(), step):
        sel = slice(p, p + step)
        rows = tuple(i[sel] for i in bidx)
        z = xc[rows + (n[sel],)] + yc[rows + (k[sel],)] - out_cells[sel].unsqueeze(-1)
        contribution = grad_cells[sel].unsqueeze(-1) * _exp_clamped(z, floor)
        dx = dx.index_add(0, flat[sel] * num_rows + n[sel], contribution)
        dy = dy.index_add(0, flat[sel] * num_cols + k[sel], contribution)
    dx = dx.reshape(batch_shape + (num_rows, width))
    dy = dy.reshape(batch_shape + (num_cols, width)).transpose(-1, -2)
    return dx, dy
