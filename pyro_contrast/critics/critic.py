r"""Contrastive critics: learned log density ratios between two modalities."""

import math
import numbers

import torch
from torch import nn

from pyro_contrast._validation import as_float_tensor, check_finite, ignore_jit_warnings

SIMILARITIES = ("dot", "cosine", "neg_sq_l2", "neg_l2", "bilinear")

# Rows per block of ``pairwise``: bounds the N x M x d intermediate of neg_sq_l2 and keeps
# memory O(chunk x M) however many queries are scored.
_DEFAULT_CHUNK = 4096


class Critic(nn.Module):
    r"""A contrastive critic :math:`f(x, y)`, read as a conditional distribution.

    At the InfoNCE optimum a critic equals the pointwise mutual information up to a term in
    :math:`x` alone, so it tilts the product of marginals (Baptista, Stuart & Tran):

    .. math::

        p(y \mid x) = \frac{p(y) \exp f(x, y)}{Z(x)}, \qquad
        f(x, y) = \frac{s(\phi(x), \psi(y))}{T} + \beta,

    with encoders :math:`\phi, \psi`, a similarity :math:`s` and a temperature :math:`T`:

    - ``"dot"``: :math:`u \cdot v`;
    - ``"cosine"``: :math:`u \cdot v / (\lVert u \rVert \lVert v \rVert)`, computed after
      scaling each vector by its largest absolute entry, so it does not depend on the norm
      even where :math:`\lVert u \rVert^2` would under- or overflow; the cosine with a zero
      vector is defined as 0;
    - ``"neg_sq_l2"``: :math:`-\tfrac12 \lVert u - v \rVert^2`;
    - ``"neg_l2"``: :math:`-\lVert u - v \rVert` (the non-squared distance of Che &
      Eysenbach's L2 critic);
    - ``"bilinear"``: :math:`u^\top W v` with a learned ``weight`` :math:`W`.

    The temperature is stored as its logarithm (learnable when ``learn_temperature=True``),
    so it stays positive under gradient descent; it and its reciprocal must be normal
    numbers of the default dtype (for float32, :math:`1.2 \cdot 10^{-38} \le T \le 8.5
    \cdot 10^{37}`). Scores are computed in float32 or better whatever the dtype of the
    inputs or the critic (a float16 critic's ``Linear`` encoders run on float32 copies of
    their weights). While validation is enabled (Pyro's default; see
    ``pyro.enable_validation``) inputs must be finite and scores that overflow raise
    ``ValueError``; with it off no value is checked.

    References:

    1. Oord, Li & Vinyals (2018), *Representation Learning with Contrastive Predictive
       Coding*.
    2. Baptista, Stuart & Tran (2025), *A Mathematical Perspective on Contrastive Learning*.
    3. Che & Eysenbach (2025), *The "Law" of the Unconscious Contrastive Learner*.

    :param torch.nn.Module encoder_x: encoder of the first modality (identity if ``None``).
    :param torch.nn.Module encoder_y: encoder of the second modality (identity if ``None``).
    :param str similarity: one of ``"dot"``, ``"cosine"``, ``"neg_sq_l2"``, ``"neg_l2"``,
        ``"bilinear"``.
    :param float temperature: positive temperature :math:`T`.
    :param bool learn_temperature: whether :math:`\log T` is a trainable parameter.
    :param bool bias: whether to add a learnable scalar bias :math:`\beta`.
    :param int dim_x: embedding dimension of :math:`\phi(x)` (bilinear only).
    :param int dim_y: embedding dimension of :math:`\psi(y)` (bilinear only).

    >>> critic = Critic.from_embeddings(similarity="cosine", temperature=0.1)
    >>> critic.pairwise(torch.randn(3, 8), torch.randn(5, 8)).shape
    torch.Size([3, 5])
    """

    def __init__(
        self,
        encoder_x=None,
        encoder_y=None,
        similarity="cosine",
        temperature=1.0,
        learn_temperature=False,
        bias=False,
        *,
        dim_x=None,
        dim_y=None,
    ):
        super().__init__()
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        for name, enc in (("encoder_x", encoder_x), ("encoder_y", encoder_y)):
            if enc is not None and not callable(enc):
                raise TypeError(f"{name} must be a torch.nn.Module or callable, got {type(enc)}")
        temperature = _check_temperature(temperature, torch.get_default_dtype())
        self.similarity = similarity
        self.encoder_x = encoder_x if encoder_x is not None else nn.Identity()
        self.encoder_y = encoder_y if encoder_y is not None else nn.Identity()
        log_t = torch.tensor(math.log(temperature), dtype=torch.get_default_dtype())
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)
        self.bias = nn.Parameter(torch.zeros(())) if bias else None
        if similarity == "bilinear":
            if dim_x is None or dim_y is None:
                raise ValueError("similarity='bilinear' needs dim_x and dim_y (embedding sizes)")
            for name, dim in (("dim_x", dim_x), ("dim_y", dim_y)):
                if not isinstance(dim, numbers.Integral) or dim < 1:
                    raise ValueError(f"{name} must be a positive integer, got {dim!r}")
            weight = torch.zeros(dim_x, dim_y)
            weight[range(min(dim_x, dim_y)), range(min(dim_x, dim_y))] = 1.0
            self.weight = nn.Parameter(weight)
        else:
            self.weight = None

    @classmethod
    def from_embeddings(
        cls,
        similarity="cosine",
        temperature=1.0,
        learn_temperature=False,
        bias=False,
        *,
        dim_x=None,
        dim_y=None,
    ):
        """A critic with identity encoders, for precomputed embeddings.

        >>> Critic.from_embeddings("dot", temperature=2.0)(torch.ones(2, 3), torch.ones(2, 3))
        tensor([1.5000, 1.5000])
        """
        return cls(
            None,
            None,
            similarity,
            temperature,
            learn_temperature,
            bias,
            dim_x=dim_x,
            dim_y=dim_y,
        )

    @property
    def temperature(self):
        """The positive temperature :math:`T` as a tensor."""
        return self.log_temperature.exp()

    def extra_repr(self):
        return f"similarity={self.similarity!r}, temperature={self.temperature.item():.4g}"

    def encode_x(self, x):
        """Embed inputs of the first modality (float32 or better)."""
        return _encode(self.encoder_x, x, "x")

    def encode_y(self, y):
        """Embed inputs of the second modality (float32 or better)."""
        return _encode(self.encoder_y, y, "y")

    def score_embeddings(self, u, v):
        """Scores of aligned embeddings ``u[..., :]`` and ``v[..., :]`` (broadcast).

        :param Tensor u: ``(..., d_x)`` embeddings of the first modality.
        :param Tensor v: ``(..., d_y)`` embeddings of the second modality.
        """
        u, v = _check_inputs(u, "u"), _check_inputs(v, "v")
        return self._scores(u, v)

    def _scores(self, u, v):
        with ignore_jit_warnings():
            u, v = self._check_embeddings(u, v)
        if self.similarity == "bilinear":
            sim = ((u @ self.weight.to(u.dtype)) * v).sum(-1)
        elif self.similarity == "neg_sq_l2":
            sim = -0.5 * (u - v).pow(2).sum(-1)
        elif self.similarity == "neg_l2":
            sim = -_distance((u - v).pow(2).sum(-1))
        else:
            if self.similarity == "cosine":
                u, v = _normalize(u), _normalize(v)
            sim = (u * v).sum(-1)
        return _check_scores(self._finish(sim), self.similarity)

    def pairwise_embeddings(self, u, v, chunk_size=None):
        """Scores of every pair: ``u`` (N, d) against ``v`` (M, d) gives (N, M).

        :param Tensor u: ``(N, d_x)`` embeddings of the first modality.
        :param Tensor v: ``(M, d_y)`` embeddings of the second modality.
        :param int chunk_size: rows of ``u`` per block (bounds the memory of distances).
        """
        u, v = _check_inputs(u, "u"), _check_inputs(v, "v")
        return self._pairwise(u, v, chunk_size)

    def _pairwise(self, u, v, chunk_size):
        chunk = _check_chunk(chunk_size)
        u, v, inverse_t = self._gemm_factors(u, v)
        # A traced model is specialized to its example's shapes: one block, no Python loop.
        tracing = torch.jit.is_tracing()
        grad = torch.is_grad_enabled() and (
            u.requires_grad
            or v.requires_grad
            or (self.bias is not None and self.bias.requires_grad)
        )
        if tracing or grad:
            blocks = [
                self._finish_block((u if tracing else u[start : start + chunk]) @ v.T, inverse_t)
                for start in ([0] if tracing else range(0, max(u.shape[0], 1), chunk))
            ]
            if not blocks:
                return u.new_zeros(0, v.shape[0])
            scores = blocks[0] if len(blocks) == 1 else torch.cat(blocks, 0)
        else:
            # No graph to keep: each block's GEMM writes straight into the output and is
            # finished in place (a bank of scores is never copied by a concatenation).
            scores = u.new_empty(u.shape[0], v.shape[0])
            for start in range(0, u.shape[0], chunk):
                block = scores[start : start + chunk]
                torch.mm(u[start : start + chunk], v.T, out=block)
                finished = self._finish_block(block, inverse_t, in_place=True)
                if finished is not block:
                    block.copy_(finished)
        return _check_scores(scores, self.similarity)

    def _gemm_factors(self, u, v):
        """``(u', v', 1/T)`` with ``pairwise_embeddings(u, v) == finish(u' @ v'.T)``.

        The temperature is folded into the first (usually small, query) side, so each block
        of scores is one GEMM and at most one elementwise pass: banks make these large.
        """
        with ignore_jit_warnings():
            u, v = self._check_embeddings(u, v, pairwise=True)
        inverse_t = self._inverse_temperature(u.dtype)
        u, v = self._side(u, "x"), self._side(v, "y")
        if self.similarity != "neg_l2":
            # on the smaller side: one multiply fewer per bank item
            # (a traced graph keeps the query side: shapes are symbolic there)
            if torch.jit.is_tracing() or u.shape[0] <= v.shape[0]:
                u = u * inverse_t
            else:
                v = v * inverse_t
        return u, v, inverse_t

    def _side(self, t, side):
        """One side of the GEMM form, before the temperature (see :meth:`gemm_factor`)."""
        if self.similarity == "cosine":
            return _normalize(t)
        if self.similarity == "bilinear":
            return t @ self.weight.to(t.dtype) if side == "x" else t
        if self.similarity in ("neg_sq_l2", "neg_l2"):
            # [u, -|u|^2/2, 1] . [v, 1, -|v|^2/2] = -|u - v|^2 / 2 in a single GEMM.
            ones, half_sq = t.new_ones(t.shape[0], 1), -0.5 * t.pow(2).sum(-1, keepdim=True)
            return torch.cat([t, half_sq, ones] if side == "x" else [t, ones, half_sq], -1)
        return t

    def gemm_factor(self, t, side, *, temperature=False, dtype=None):
        r"""One side of the GEMM form of the pairwise scores.

        For embeddings ``u`` (``side="x"``) and ``v`` (``side="y"``), with ``temperature=True``
        on exactly one side, ``finish_scores_(gemm_factor(u, "x", temperature=True) @
        gemm_factor(v, "y").T)`` equals ``pairwise_embeddings(u, v)`` to rounding. The factor
        of a bank does not depend on the other side, so a caller may keep it (the bridge
        does, keyed on the critic's state and the bank). No finiteness check.

        :param Tensor t: ``(N, d)`` embeddings.
        :param str side: ``"x"`` (first modality) or ``"y"``.
        :param bool temperature: fold ``1/T`` in (not for ``neg_l2``, whose square root
            comes first: :meth:`finish_scores_` applies it).
        :param torch.dtype dtype: compute in this dtype (default: ``t``'s, at least float32).
        """
        if side not in ("x", "y"):
            raise ValueError(f"side must be 'x' or 'y', got {side!r}")
        t = as_float_tensor(t, "t")
        if t.dim() != 2:
            raise ValueError(f"t must have shape (N, d), got {tuple(t.shape)}")
        dtype = torch.promote_types(t.dtype if dtype is None else dtype, torch.float32)
        factor = self._side(t.to(dtype), side)
        if temperature and self.similarity != "neg_l2":
            factor = factor * self._inverse_temperature(dtype)
        return factor

    def finish_scores_(self, block):
        """The similarity's last elementwise step and the bias, in place where it can be."""
        inverse_t = self._inverse_temperature(block.dtype) if self.similarity == "neg_l2" else None
        return self._finish_block(block, inverse_t, in_place=True)

    def check_pairwise(self, u, v):
        """Raise the errors :meth:`pairwise_embeddings` raises for these embeddings' shapes
        (dims, bilinear weight); looks at shapes and dtypes only."""
        with ignore_jit_warnings():
            self._check_embeddings(u[:0], v[:0], pairwise=True)

    def pairwise_factors(self, u, v, *, check=True):
        r"""The GEMM form of :meth:`pairwise_embeddings`: ``(u', v', finish)``.

        ``finish(u'[i:j] @ v'[k:l].T)`` (in place, on a float block it may overwrite) equals
        ``pairwise_embeddings(u, v)[i:j, k:l]`` to rounding, for any blocks. Lets a caller
        score a bank block by block into its own buffers and fuse what follows (the
        bridge's exact marginal does). Checks the embeddings like
        :meth:`pairwise_embeddings` (``check=False`` skips the finiteness check, for a
        caller that has just made it, block by block), but not the scores.

        >>> critic = Critic.from_embeddings("cosine", temperature=0.5)
        >>> u, v = torch.randn(3, 4), torch.randn(5, 4)
        >>> fu, fv, finish = critic.pairwise_factors(u, v)
        >>> torch.allclose(finish(fu @ fv.T), critic.pairwise_embeddings(u, v))
        True
        """
        if check:
            u, v = _check_inputs(u, "u"), _check_inputs(v, "v")
        else:
            u, v = as_float_tensor(u, "u"), as_float_tensor(v, "v")
        u, v, inverse_t = self._gemm_factors(u, v)

        def finish(block):
            return self._finish_block(block, inverse_t, in_place=True)

        return u, v, finish

    def _finish_block(self, scores, inverse_t, in_place=False):
        """The similarity's last elementwise step and the bias, on one block of scores."""
        if self.similarity == "neg_sq_l2":
            # Rounding can make a distance negative; the score is never positive.
            scores = scores.clamp_(max=0) if in_place else scores.clamp(max=0)
        elif self.similarity == "neg_l2":
            scores = -_distance(-2.0 * scores) * inverse_t
        if self.bias is not None:
            bias = self.bias.to(scores.dtype)
            scores = scores.add_(bias) if in_place else scores + bias
        return scores

    def forward(self, x, y):
        """Scores :math:`f(x_i, y_i)` of aligned pairs, shape ``x.shape[:-1]``."""
        return self._scores(self.encode_x(x), self.encode_y(y))

    def pairwise(self, x, y, chunk_size=None):
        """Scores :math:`f(x_n, y_m)` of all pairs, shape (N, M)."""
        return self._pairwise(self.encode_x(x), self.encode_y(y), chunk_size)

    def _inverse_temperature(self, dtype):
        # T is rounded in the critic's own dtype (a representable T such as 0.5 stays exact);
        # the constructor keeps T and 1/T in range, and a learned T that drifts out of it
        # makes non-finite scores, refused while validation is on
        log_temperature = self.log_temperature
        if log_temperature.dtype in (torch.float16, torch.bfloat16):
            log_temperature = log_temperature.float()
        return log_temperature.exp().to(dtype).reciprocal()

    def _finish(self, sim):
        scores = sim * self._inverse_temperature(sim.dtype)
        if self.bias is not None:
            scores = scores + self.bias.to(sim.dtype)
        return scores

    def _check_embeddings(self, u, v, pairwise=False):
        for name, t in (("x embedding", u), ("y embedding", v)):
            if t.dim() < 1 or (pairwise and t.dim() != 2):
                want = "(N, d)" if pairwise else "(..., d)"
                raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
            if t.shape[-1] == 0:
                raise ValueError(f"{name} has dimension 0: shape {tuple(t.shape)}")
        dtype = torch.promote_types(torch.promote_types(u.dtype, v.dtype), torch.float32)
        u, v = u.to(dtype), v.to(dtype)
        if self.similarity == "bilinear":
            if u.shape[-1] != self.weight.shape[0] or v.shape[-1] != self.weight.shape[1]:
                raise ValueError(
                    f"bilinear critic expects embedding dims ({self.weight.shape[0]}, "
                    f"{self.weight.shape[1]}), got ({u.shape[-1]}, {v.shape[-1]})"
                )
        elif u.shape[-1] != v.shape[-1]:
            raise ValueError(
                f"embedding dims differ: x gives {u.shape[-1]}, y gives {v.shape[-1]} "
                f"(similarity={self.similarity!r} needs equal dims)"
            )
        return u, v


def _check_inputs(value, name):
    """A real floating tensor (float32 or better), finite while validation is enabled."""
    return check_finite(as_float_tensor(value, name), name)


def _check_scores(scores, similarity):
    return check_finite(
        scores,
        "scores",
        hint=f": the inputs are too large for similarity={similarity!r} in {scores.dtype}; "
        "rescale them or pass float64 inputs",
    )


def _encode(encoder, inputs, name):
    inputs = _check_inputs(inputs, name)
    dtype = _parameter_dtype(encoder)
    if dtype is None or dtype == inputs.dtype:
        out = encoder(inputs)
    else:
        # float32 or better, as promised: low-precision weights are upcast for the call
        # (gradients still reach them); float64 weights upcast the inputs instead
        dtype = torch.promote_types(torch.promote_types(dtype, inputs.dtype), torch.float32)
        state = {
            key: value.to(dtype) if value.is_floating_point() else value
            for key, value in _named_tensors(encoder)
        }
        out = torch.func.functional_call(encoder, state, (inputs.to(dtype),))
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"encoder for {name} must return a tensor, got {type(out).__name__}")
    if out.is_complex() or not out.is_floating_point():
        raise TypeError(f"encoder for {name} must return real floats, got {out.dtype}")
    if out.dtype not in (torch.float32, torch.float64):
        out = out.float()
    elif out is inputs:  # an identity encoder: the inputs were just checked
        return out
    return check_finite(out, f"the encoding of {name}")


def _parameter_dtype(encoder):
    if not isinstance(encoder, nn.Module):
        return None
    for _, value in _named_tensors(encoder):
        if value.is_floating_point():
            return value.dtype
    return None


def _named_tensors(module):
    yield from module.named_parameters()
    yield from module.named_buffers()


def _distance(squared):
    # sqrt has an infinite derivative at 0 (a query equal to a bank item); the floor keeps
    # gradients finite and moves the score by at most sqrt(tiny).
    return squared.clamp(min=torch.finfo(squared.dtype).tiny).sqrt()


def _normalize(u):
    # Divide by the largest absolute entry first: the squared norm of 1e-20-sized (or
    # 1e20-sized) float32 vectors under- (over-)flows. A zero vector stays zero, so its
    # cosine with anything is 0. No branch on values: torch.where keeps it one graph.
    # Without a graph to keep, vectors whose norm is safely in range (all, in practice)
    # take one division: scaling them first changes nothing but the rounding.
    if not (
        (torch.is_grad_enabled() and u.requires_grad)
        or torch.jit.is_tracing()
        or torch.compiler.is_compiling()
    ):
        norm = torch.linalg.vector_norm(u, dim=-1, keepdim=True)
        low, high = norm.aminmax()
        info = torch.finfo(u.dtype)
        if bool((low >= info.tiny**0.5 * 16) & (high <= info.max**0.5 / 16)):
            return u / norm
    scale = u.abs().amax(dim=-1, keepdim=True)
    u = u / torch.where(scale > 0, scale, torch.ones_like(scale))
    norm = u.norm(dim=-1, keepdim=True)
    return u / torch.where(norm > 0, norm, torch.ones_like(norm))


def _check_temperature(temperature, dtype):
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1:
            raise ValueError(f"temperature must be a scalar, got shape {tuple(temperature.shape)}")
        if temperature.is_complex():
            raise TypeError(f"temperature must be a positive number, got {temperature!r}")
        temperature = temperature.item()
    if not isinstance(temperature, numbers.Real) or isinstance(temperature, bool):
        raise TypeError(f"temperature must be a positive number, got {temperature!r}")
    temperature = float(temperature)
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be positive and finite, got {temperature!r}")
    # T and 1/T both normal numbers of the dtype: scores are s * exp(-log T)
    info = torch.finfo(dtype)
    low, high = max(info.tiny, 1 / info.max), min(info.max, 1 / info.tiny)
    if not low <= temperature <= high:
        raise ValueError(
            f"temperature={temperature!r} is outside [{low:.3g}, {high:.3g}], where it and its "
            f"reciprocal are normal {str(dtype).removeprefix('torch.')} numbers"
        )
    return temperature


def _check_chunk(chunk_size):
    if chunk_size is None:
        return _DEFAULT_CHUNK
    if not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)
