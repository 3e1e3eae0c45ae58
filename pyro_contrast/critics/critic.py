r"""Contrastive critics: learned log density ratios between two modalities."""

import math
import numbers

import torch
from torch import nn

from pyro_contrast._validation import as_float_tensor, check_finite

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
    - ``"cosine"``: :math:`u \cdot v / (\lVert u \rVert \lVert v \rVert)`;
    - ``"neg_sq_l2"``: :math:`-\tfrac12 \lVert u - v \rVert^2`;
    - ``"neg_l2"``: :math:`-\lVert u - v \rVert` (the non-squared distance of Che &
      Eysenbach's L2 critic);
    - ``"bilinear"``: :math:`u^\top W v` with a learned ``weight`` :math:`W`.

    The temperature is stored as its logarithm (learnable when ``learn_temperature=True``),
    so it stays positive under gradient descent.

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
        temperature = _check_temperature(temperature)
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
        """Scores of aligned embeddings ``u[..., :]`` and ``v[..., :]`` (broadcast)."""
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
        return self._finish(sim)

    def pairwise_embeddings(self, u, v, chunk_size=None):
        """Scores of every pair: ``u`` (N, d) against ``v`` (M, d) gives (N, M)."""
        u, v = self._check_embeddings(u, v, pairwise=True)
        chunk = _check_chunk(chunk_size)
        # The temperature is folded into the (small) query side, so each block of scores is
        # one GEMM and at most one elementwise pass: banks make these matrices large.
        inverse_t = self.temperature.to(u.dtype).reciprocal()
        if self.similarity == "cosine":
            u, v = _normalize(u), _normalize(v)
        elif self.similarity == "bilinear":
            u = u @ self.weight.to(u.dtype)
        if self.similarity in ("neg_sq_l2", "neg_l2"):
            # [u, -|u|^2/2, 1] . [v, 1, -|v|^2/2] = -|u - v|^2 / 2 in a single GEMM.
            ones_u, ones_v = u.new_ones(u.shape[0], 1), v.new_ones(v.shape[0], 1)
            u = torch.cat([u, -0.5 * u.pow(2).sum(-1, keepdim=True), ones_u], -1)
            v = torch.cat([v, ones_v, -0.5 * v.pow(2).sum(-1, keepdim=True)], -1)
        if self.similarity != "neg_l2":
            u = u * inverse_t
        blocks = []
        for start in range(0, max(u.shape[0], 1), chunk):
            scores = u[start : start + chunk] @ v.T
            if self.similarity == "neg_sq_l2":
                # Rounding can make a distance negative; the score is never positive.
                scores = scores.clamp_(max=0) if not scores.requires_grad else scores.clamp(max=0)
            elif self.similarity == "neg_l2":
                scores = -_distance(-2.0 * scores) * inverse_t
            if self.bias is not None:
                bias = self.bias.to(scores.dtype)
                scores = (
                    scores + bias
                    if scores.requires_grad or bias.requires_grad
                    else scores.add_(bias)
                )
            blocks.append(scores)
        if not blocks:
            return u.new_zeros(0, v.shape[0])
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, 0)

    def forward(self, x, y):
        """Scores :math:`f(x_i, y_i)` of aligned pairs, shape ``x.shape[:-1]``."""
        return self.score_embeddings(self.encode_x(x), self.encode_y(y))

    def pairwise(self, x, y, chunk_size=None):
        """Scores :math:`f(x_n, y_m)` of all pairs, shape (N, M)."""
        return self.pairwise_embeddings(self.encode_x(x), self.encode_y(y), chunk_size)

    def _finish(self, sim):
        scores = sim / self.temperature.to(sim.dtype)
        if self.bias is not None:
            scores = scores + self.bias.to(sim.dtype)
        return scores

    def _check_embeddings(self, u, v, pairwise=False):
        for name, t in (("x embedding", u), ("y embedding", v)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
            if t.dim() < 1 or (pairwise and t.dim() != 2):
                want = "(N, d)" if pairwise else "(..., d)"
                raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
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


def _encode(encoder, inputs, name):
    inputs = as_float_tensor(inputs, name)
    check_finite(inputs, name)
    out = encoder(inputs)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"encoder for {name} must return a tensor, got {type(out).__name__}")
    if out.dtype in (torch.float16, torch.bfloat16):
        out = out.float()
    return out


def _distance(squared):
    # sqrt has an infinite derivative at 0 (a query equal to a bank item); the floor keeps
    # gradients finite and moves the score by at most sqrt(tiny).
    return squared.clamp(min=torch.finfo(squared.dtype).tiny).sqrt()


def _normalize(u):
    # eps guards the zero vector; its cosine with anything is then 0 instead of NaN.
    return u / u.norm(dim=-1, keepdim=True).clamp(min=torch.finfo(u.dtype).tiny ** 0.5)


def _check_temperature(temperature):
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1:
            raise ValueError(f"temperature must be a scalar, got shape {tuple(temperature.shape)}")
        temperature = temperature.item()
    if not isinstance(temperature, numbers.Real) or isinstance(temperature, bool):
        raise TypeError(f"temperature must be a positive number, got {temperature!r}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be positive and finite, got {temperature!r}")
    return float(temperature)


def _check_chunk(chunk_size):
    if chunk_size is None:
        return _DEFAULT_CHUNK
    if not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)
