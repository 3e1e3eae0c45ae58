r"""The fast pass of :func:`~pyro_contrast.ops.logmatmul`, fed one block at a time.

A caller that produces the factors of a log-space product block by block (scores of a bank
chunk, computed into its own buffers) can exponentiate each block in place and hand it
over, instead of materializing the whole ``(N, M)`` and ``(M, K)`` factors for
:func:`~pyro_contrast.ops.logmatmul`. The result comes with the same underflow certificate
as ``logmatmul``'s fast path: a cell that is not certified must be recomputed (for example
by ``logmatmul`` itself, which has the slower exact tiers); a certified cell is exact to
rounding.
"""

import math

import torch

from pyro_contrast.ops import _logmatmul_kernels as _kernels

__all__ = ["LogMatMulStream", "scratch"]

_LOG2E = 1.0 / math.log(2.0)


def scratch(slot, shape, dtype, device=None):
    """An uninitialized buffer of ``shape``, reused across calls on this thread when small
    (the buffers ``logmatmul`` keeps: a fresh multi-megabyte tensor page-faults on every
    call). ``slot`` names the caller's buffer; two live buffers need two slots."""
    like = torch.empty(0, dtype=dtype, device=device)
    return _kernels.scratch(f"caller:{slot}", shape, like)


class LogMatMulStream:
    r"""Accumulates :math:`\log \sum_m \exp(x_{nm} + y_{mk})` over blocks of :math:`m`.

    Keeps one row shift :math:`A_n` and one column shift :math:`B_k` for the whole sum: for
    each block, :meth:`shift_rows` and :meth:`shift_cols` raise them to at least the block's
    row maxima of ``x`` and column maxima of ``y`` (rescaling what was accumulated) and return
    them; :meth:`exp_` turns the block into :math:`e^{x - A + h}` in place (``h`` is 0 in
    float32 and the float64 headroom otherwise); :meth:`add` accumulates the product of the
    two exponentiated blocks with one in-place GEMM. :meth:`result` returns the log values
    and the cells the underflow bound certifies (relative to :math:`A_n + B_k`).

    :param int count: the total size of the inner index over all blocks (it sets the
        headroom and the certificate's threshold).
    :param torch.dtype dtype: ``torch.float32`` or ``torch.float64``: the dtype of the
        blocks and of the accumulation.
    :param bool bits: the blocks and shifts are in bits (base-2 logarithms) rather than
        nats; :meth:`exp_` is then ``2^{block - shift + h}`` and saves a multiplication per
        element. :meth:`result` is in nats either way.

    >>> x, y = torch.randn(3, 10), torch.randn(10, 4)
    >>> stream = LogMatMulStream(10)
    >>> for lo in (0, 5):
    ...     xb, yb = x[:, lo : lo + 5].clone(), y[lo : lo + 5].clone()
    ...     a = stream.shift_rows(xb.amax(-1, keepdim=True))
    ...     b = stream.shift_cols(yb.amax(0, keepdim=True))
    ...     stream.add(stream.exp_(xb, a), stream.exp_(yb, b))
    >>> values, certified = stream.result()
    >>> bool(certified.all()), torch.allclose(values.float(), (x[:, :, None] + y).logsumexp(1))
    (True, True)
    """

    def __init__(self, count, *, dtype=torch.float32, device=None, bits=False):
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive integer, got {count!r}")
        self.dtype, self.bits, self.count = dtype, bool(bits), count
        #: ``exp2`` argument per unit of the blocks: 1 in bits, ``log2 e`` in nats.
        self._scale = 1.0 if self.bits else _LOG2E
        head = _kernels.headroom(dtype, count)  # in nats
        self._head = torch.tensor(head * _LOG2E, dtype=dtype, device=device)
        #: ``h`` in the blocks' units: every exponentiated block carries a factor ``e^h``.
        self.headroom = head * _LOG2E if self.bits else head
        self._mass = self._rows = self._cols = None

    def shift_rows(self, a):
        """Row shifts for the next block: at least ``a`` (N, 1), the block's row maxima."""
        self._rows = self._raise(self._rows, a)
        return self._rows

    def shift_cols(self, b):
        """Column shifts for the next block: at least ``b`` (1, K), its column maxima."""
        self._cols = self._raise(self._cols, b)
        return self._cols

    def _raise(self, current, new):
        # The running maxima; what was accumulated is rescaled by the factors below 1, each
        # in two half steps, so the error bound holds with the reference A_n + B_k.
        new = _kernels.clamp_shift(new.to(self.dtype))
        if current is None:
            return new
        if not bool((new > current).any()):
            return current  # nothing grew: no pass over the mass
        grown = torch.maximum(current, new)
        if self._mass is not None:
            _kernels.rescale_(self._mass, current - grown, self._scale)
        return grown

    def live(self):
        """``(rows, cols)``: bool masks (N, 1) and (1, K) of the rows and columns that have
        seen a finite value so far (the others hold only ``-inf`` terms)."""
        if self._rows is None or self._cols is None:
            raise ValueError("shift_rows and shift_cols come before live")
        floor = torch.finfo(self.dtype).min / 4  # where clamp_shift puts -inf maxima
        return self._rows > floor, self._cols > floor

    def exp_(self, block, shift):
        """``exp(block - shift + h)`` (``2^{...}`` in bits), in place; ``shift`` broadcasts."""
        block = block.sub_(shift)
        if self._scale != 1.0:
            return torch.add(self._head, block, alpha=self._scale, out=block).exp2_()
        if self.dtype == torch.float64:
            block = block.add_(self._head)
        return block.exp2_()

    def add(self, ex, ey):
        """Add ``ex @ ey`` (N, c) @ (c, K), exponentiated against the current shifts."""
        if self._rows is None or self._cols is None:
            raise ValueError("shift_rows and shift_cols come before add")
        if self._mass is None:
            self._mass = torch.matmul(ex, ey)
        else:
            self._mass.addmm_(ex, ey)

    def certified(self):
        """The cells certified so far (a bool mask); cheaper than :meth:`result`."""
        if self._mass is None:
            raise ValueError("no block was added")
        return self._mass >= _kernels.mass_threshold(self.dtype, self.count)

    def result(self):
        """``(values, certified)``: the log-space product in float64 and a bool mask."""
        certified = self.certified()
        ref = self._rows + self._cols
        ref = ref if self._scale == _LOG2E else ref * (self._scale / _LOG2E)
        return _kernels.log_of_mass(self._mass, ref, self.dtype, self.count), certified
