r"""Chunked gradient of :func:`pyro_contrast.ops.logmatmul` (private).

With softmax weights :math:`w_{nmk} = \exp(x_{nm} + y_{mk} - \mathrm{out}_{nk})`,

.. math::

    \frac{\partial L}{\partial x_{nm}} = \sum_k g_{nk} w_{nmk}, \qquad
    \frac{\partial L}{\partial y_{mk}} = \sum_n g_{nk} w_{nmk}.

Per chunk of the inner index both are GEMMs of the shifted factors ``exp(x_c - a_c)``,
``exp(y_c - b_c)`` (entries in [0, 1]) with ``H = (g / s) exp(a_c + b_c - out)``, where
``s = max|g|``. Where ``a_c + b_c - out <= T`` the entries of ``H`` stay below ``exp(T)``
(no overflow) and a term lost to underflow weighs less than ``tiny exp(T) s``, negligible
next to ``eps s``. The other (cell, chunk) pairs (misaligned maxima), and every chunk of a
cell whose output is ``+inf``/NaN, are gathered and their weights formed directly, as
``torch.logsumexp`` does. Cells whose output is ``-inf`` contribute nothing. Memory is
O(N K + chunk) beyond the gradients themselves.

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
    with torch.no_grad():
        finite = torch.isfinite(out)
        always_exact = torch.isnan(out) | (out == math.inf)
        special = bool(always_exact.any())
        threshold = safe_threshold(out.dtype, max(num_rows, num_cols))
    scale = _scale(grad)
    weighted = grad / scale
    x_fast, y_fast = x, y
    if special:  # +inf/NaN inputs only reach gathered cells; keep them out of the GEMMs
        x_fast = x.masked_fill(torch.isnan(x) | (x == math.inf), -math.inf)
        y_fast = y.masked_fill(torch.isnan(y) | (y == math.inf), -math.inf)
    floor = exp_floor(out.dtype)
    # First-order backward (no graph) fills preallocated gradients: no second copy via cat.
    record = torch.is_grad_enabled()
    dx_parts, dy_parts = [], []
    if not record:
        dx_full = x.new_empty(batch_shape + (num_rows, num_inner))
        dy_full = y.new_empty(batch_shape + (num_inner, num_cols))
    log_scale = scale.log()
    for lo, hi in bounds:
        xc, yc = x_fast[..., lo:hi], y_fast[..., lo:hi, :]
        with torch.no_grad():
            a = clamp_shift(xc.amax(-1, keepdim=True))
            b = clamp_shift(yc.amax(-2, keepdim=True))
            shift = a + b
            fast = finite & (shift - out <= threshold)
            exact = (finite & ~fast) | always_exact
            cells = exact.nonzero(as_tuple=True)
        # exp2 is the fast kernel (see _logmatmul_kernels); ex carries the scale s = max|g|,
        # so both products below come out scaled back with no extra pass.
        if record:
            ex = ((xc - (a - log_scale)) * _LOG2E).exp2()
            ey = ((yc - b) * _LOG2E).exp2()
        else:
            ex = torch.sub(xc, a - log_scale, out=scratch("x", xc.shape, xc))
            ey = torch.sub(yc, b, out=scratch("y", yc.shape, yc)).mul_(_LOG2E).exp2_()
            ex = ex.mul_(_LOG2E).exp2_()
        # Masked cells get a finite exponent: exp(huge) * 0 would be NaN in double backward.
        exponent = torch.where(fast, shift - out, torch.full_like(out, floor)).clamp(min=floor)
        h = torch.where(fast, weighted * exponent.exp(), torch.zeros_like(weighted))
        if not record and not cells[-1].numel():  # write straight into the gradients
            torch.mul(ex, torch.matmul(h, ey.transpose(-1, -2)), out=dx_full[..., lo:hi])
            torch.mul(ey, torch.matmul(ex.transpose(-1, -2), h), out=dy_full[..., lo:hi, :])
            continue
        dx = (ex * torch.matmul(h, ey.transpose(-1, -2))).expand(batch_shape + (num_rows, hi - lo))
        dy = (ey * torch.matmul(ex.transpose(-1, -2), h)).expand(batch_shape + (hi - lo, num_cols))
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
