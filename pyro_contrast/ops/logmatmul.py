r"""Exact log-space matrix product at GEMM speed."""

import torch

from pyro_contrast.ops import _logmatmul_backward, _logmatmul_kernels

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class _LogMatMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, chunk):
        out = _logmatmul_kernels.forward(x, y, chunk)
        ctx.save_for_backward(x, y, out)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad):
        x, y, out = ctx.saved_tensors
        dx, dy = _logmatmul_backward.backward(x, y, out, grad, ctx.chunk)
        dx = dx.sum_to_size(x.shape) if ctx.needs_input_grad[0] else None
        dy = dy.sum_to_size(y.shape) if ctx.needs_input_grad[1] else None
        return dx, dy, None


def _check(value, name):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a float16, bfloat16, float32 or float64 tensor, got {value.dtype}"
        )
    if value.dim() < 2:
        raise ValueError(
            f"{name} must have at least 2 dims (..., rows, cols), got shape {tuple(value.shape)}"
        )


def logmatmul(x, y, *, chunk_size=None):
    r"""Log-space matrix product, exact for any inputs and as fast as a GEMM where it can be.

    Computes, with broadcasting over the leading (batch) dims,

    .. math::

        \mathrm{out}_{\ldots nk} = \log \sum_m \exp(x_{\ldots nm} + y_{\ldots mk}),

    without forming the :math:`N \times M \times K` tensor. The inner index is processed
    in chunks; each chunk is shifted by its own row maxima of ``x`` and column maxima of
    ``y``, exponentiated, multiplied by a real GEMM and accumulated relative to a per-cell
    reference. A rigorous bound on what underflow can lose flags the cells where one shift
    pair is not enough (the best terms of a cell far below its row plus column maxima:
    squared-L2 scores of spread-out embeddings, cold temperatures). Those cells are
    recomputed on the submatrix of their rows and columns in float64, whose range (used
    from the top as well as the bottom) holds terms ~1,000 nats apart instead of ~60; when
    a probe predicts that most of the matrix would need it, the first pass runs in float64
    outright, about 2x the float32 cost. What float64 cannot certify is retried with 8x and
    64x smaller chunks (tighter shifts, still GEMMs) and finally recomputed in log space,
    gathered and chunked. The result matches a float64 ``torch.logsumexp`` of the broadcast
    sum to :math:`\max(10^{-4}, 5 \cdot 10^{-7} |\mathrm{out}|)` in float32 for any finite
    inputs (sums beyond the float range give ``inf``). Ordinary scores (e.g. cosine over
    temperature 0.07) never leave the float32 path; scores spanning ~1,400 nats cost about
    twice as much; adversarial ones cost up to O(NMK) elementwise work, still chunked.

    Infinite and NaN inputs behave like ``torch.logsumexp`` of ``x[..., :, :, None] +
    y[..., None, :, :]`` over the inner dim: an all ``-inf`` sum is ``-inf``, a ``+inf``
    term gives ``+inf``, NaN (also ``+inf`` meeting ``-inf``) propagates.

    The gradient is the softmax-weighted product
    :math:`\partial L / \partial x_{nm} = \sum_k g_{nk} e^{x_{nm} + y_{mk} - \mathrm{out}_{nk}}`
    (likewise for ``y``), computed chunk by chunk with the same safeguards (float32 GEMMs,
    or float64 ones when many cells need the range, then gathered cells), so training
    memory stays :math:`O(NK + \text{chunk})` beyond the gradients. Cells whose output is
    ``-inf`` contribute zero gradient (``torch.logsumexp`` gives NaN there). Double
    backward works (it differentiates the chunked backward, keeping its chunks in memory).

    float16 and bfloat16 inputs are computed and returned in float32; otherwise the result
    has the promoted input dtype. Only tensor operations are used, so CUDA tensors work
    unchanged; with TF32 matmuls enabled (``torch.set_float32_matmul_precision("high")``)
    the GEMM rounds to about :math:`10^{-3}` relative and the accuracy above does not hold.

    **References**

    1. Che & Eysenbach (2025), *The "Law" of the Unconscious Contrastive Learner:
       Probabilistic Alignment of Unpaired Modalities* (the bridge marginal is a log-space
       matrix product over the bank).
    2. Milakov & Gimelshein (2018), *Online normalizer calculation for softmax* (the
       running-maximum accumulation of the exact path).

    :param Tensor x: left factor of shape ``(..., N, M)``.
    :param Tensor y: right factor of shape ``(..., M, K)``.
    :param int chunk_size: number of inner indices per chunk (default: chosen from the
        shapes, bounded so the exp buffers stay under ~128 MB).
    :returns: tensor of shape ``broadcast(...) + (N, K)``.
    :rtype: Tensor

    >>> x = torch.tensor([[0.0, -1000.0]])
    >>> y = torch.tensor([[-1000.0], [0.0]])
    >>> logmatmul(x, y)  # -1000 + log 2; one shift pair would give -inf
    tensor([[-999.3068]])
    """
    _check(x, "x")
    _check(y, "y")
    if x.shape[-1] != y.shape[-2]:
        raise ValueError(
            f"inner dims differ: x has shape {tuple(x.shape)} (M = {x.shape[-1]}) but y has "
            f"shape {tuple(y.shape)} (M = {y.shape[-2]})"
        )
    try:
        batch_shape = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    except RuntimeError as error:
        raise ValueError(
            f"batch dims of x {tuple(x.shape[:-2])} and y {tuple(y.shape[:-2])} do not broadcast"
        ) from error
    if x.device != y.device:
        raise ValueError(f"x is on {x.device} but y is on {y.device}")
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    x, y = x.to(dtype), y.to(dtype)
    if chunk_size is None:
        chunk_size = _logmatmul_kernels.default_chunk_size(
            batch_shape.numel(), x.shape[-2], y.shape[-1], x.shape[-1]
        )
    return _LogMatMul.apply(x, y, chunk_size)
