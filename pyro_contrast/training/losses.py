r"""Contrastive losses of the four papers, as functions of score matrices or embeddings.

Score losses take a matrix ``scores[i, j] = f(x_i, y_j)`` of shape (B, B) (or (B, M), M ≥ B,
for one-sided losses) with the positive pairs on the diagonal. :func:`get` turns a name, a
:class:`BatchLoss` or a plain callable of scores into the ``loss(critic, x, y)`` objective
that :func:`pyro_contrast.training.fit.fit` minimizes.
"""

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from pyro_contrast._validation import check_finite

_DIRECTIONS = ("y|x", "x|y", "symmetric")


def infonce(scores):
    r"""One-sided InfoNCE: cross-entropy of the positive among in-batch candidates.

    .. math::

        L = -\frac1B \sum_i \log \frac{e^{s_{ii}}}{\sum_j e^{s_{ij}}}.

    Population optimum (any batch size): :math:`f(x, y) = \mathrm{PMI}(x, y) + g(x)`; the
    row-wise softmax is the critic's conditional :math:`p(y \mid x)` over candidates.
    Extra columns beyond the first B act as additional negatives.

    **References**

    1. Oord, Li & Vinyals (2018), *Representation Learning with Contrastive Predictive Coding*.

    :param Tensor scores: (B, M) scores, M ≥ B, positives at ``scores[i, i]``.
    :returns: scalar loss.

    >>> infonce(torch.eye(3) * 10).item() < 1e-3
    True
    """
    scores = _check_scores(scores, square=False)
    return -scores.log_softmax(-1).diagonal().mean()


def symmetric_infonce(scores):
    r"""Symmetric InfoNCE (CLIP): the mean of both one-sided InfoNCE losses.

    .. math::

        L = \tfrac12\,\mathrm{InfoNCE}(S) + \tfrac12\,\mathrm{InfoNCE}(S^\top).

    Population optimum: rows force :math:`f = \mathrm{PMI} + g(x)`, columns
    :math:`f = \mathrm{PMI} + h(y)`, so :math:`f = \mathrm{PMI} + \text{const}`. The learnable
    logit scale of CLIP is the critic's (learnable) temperature.

    **References**

    1. Radford et al. (2021), *Learning Transferable Visual Models From Natural Language
       Supervision*.

    :param Tensor scores: square (B, B) scores.
    :returns: scalar loss.

    >>> round(symmetric_infonce(torch.zeros(4, 4)).item(), 4)
    1.3863
    """
    scores = _check_scores(scores)
    return 0.5 * (infonce(scores) + infonce(scores.T))


def siglip(scores):
    r"""Sigmoid pairwise loss (SigLIP): independent logistic regressions on every pair.

    .. math::

        L = -\frac1B \sum_{i,j} \log \sigma(z_{ij} s_{ij}), \qquad z_{ij} = 2[i = j] - 1.

    Use a critic with ``bias=True`` (and a learnable temperature): the bias absorbs the
    1 : (B - 1) class imbalance. Population optimum: the Bayes logit of positives against
    negatives, :math:`f = \mathrm{PMI}(x, y) - \log(B - 1)`.

    **References**

    1. Zhai, Mustafa, Kolesnikov & Beyer (2023), *Sigmoid Loss for Language Image
       Pre-Training*.

    :param Tensor scores: square (B, B) scores (including the bias).
    :returns: scalar loss.

    >>> round(siglip(torch.zeros(2, 2)).item(), 4) == round(2 * math.log(2), 4)
    True
    """
    scores = _check_scores(scores)
    signs = 2 * torch.eye(scores.shape[0], dtype=scores.dtype) - 1
    return -F.logsigmoid(signs * scores).sum() / scores.shape[0]


def l2_infonce(u, v, *, temperature=1.0, norm_penalty=1e-2, symmetric=True):
    r"""InfoNCE with the negative squared L2 critic and a norm penalty (Che & Eysenbach).

    .. math::

        s_{ij} = -\frac{\lVert u_i - v_j \rVert^2}{2T}, \qquad
        L = \mathrm{InfoNCE}(s) + \frac{\lambda}{2B} \sum_i (\lVert u_i\rVert^2 +
        \lVert v_i\rVert^2).

    Population optimum as :math:`\lambda \to 0`: :math:`s = \mathrm{PMI} + \text{const}`
    (symmetric) with the embeddings centred; the penalty removes the translation freedom
    :math:`u, v \to u + c, v + c` and keeps norms bounded, the didactic setting in which
    directly comparing representations of unpaired modalities is analysed.

    **References**

    1. Che & Eysenbach (2025), *The "Law" of the Unconscious Contrastive Learner:
       Probabilistic Alignment of Unpaired Modalities*.

    :param Tensor u: (B, d) embeddings of the first modality.
    :param Tensor v: (B, d) embeddings of the second modality.
    :param float temperature: positive temperature (tensor allowed, for learning it).
    :param float norm_penalty: penalty weight :math:`\lambda \ge 0`.
    :param bool symmetric: symmetric (default) or one-sided InfoNCE.
    :returns: scalar loss.

    >>> round(l2_infonce(torch.zeros(3, 2), torch.zeros(3, 2)).item(), 4)
    1.0986
    """
    u, v = _check_pair(u, v)
    if not norm_penalty >= 0:
        raise ValueError(f"norm_penalty must be non-negative, got {norm_penalty!r}")
    sq = (u.pow(2).sum(-1, keepdim=True) + v.pow(2).sum(-1) - 2 * u @ v.T).clamp(min=0)
    scores = -0.5 * sq / torch.as_tensor(temperature, dtype=u.dtype)
    nce = symmetric_infonce(scores) if symmetric else infonce(scores)
    return nce + 0.5 * norm_penalty * (u.pow(2).sum(-1) + v.pow(2).sum(-1)).mean()


def tilted_kl(scores, *, direction="y|x"):
    r"""Baptista–Stuart–Tran conditional loss: KL from the true to the tilted conditional.

    With the tilt :math:`q_f(y \mid x) = p(y) e^{f(x, y)} / Z(x)`,

    .. math::

        \mathbb E_x \mathrm{KL}(p(y \mid x) \,\|\, q_f(y \mid x)) - I(X; Y)
        = -\mathbb E_{p(x, y)} f + \mathbb E_x \log \mathbb E_{p(y)} e^{f(x, y)}.

    Estimator: :math:`-\frac1B\sum_i s_{ii} + \frac1B\sum_i \log\frac1B\sum_j e^{s_{ij}}`,
    i.e. InfoNCE :math:`-\log B`. The positive stays among its candidates on purpose: it
    bounds the estimate below by :math:`-\log B` (without it the in-batch loss is unbounded
    below at finite B) and keeps the exact optimum :math:`f = \mathrm{PMI} + g(x)` at every
    batch size. The value estimates :math:`\mathrm{KL} - I`, so it is :math:`\approx -I` at
    the optimum when :math:`I \ll \log B`. ``"x|y"`` uses columns; ``"symmetric"`` averages
    both directions (optimum :math:`\mathrm{PMI} + \text{const}`).

    **References**

    1. Baptista, Stuart & Tran (2025), *A Mathematical Perspective on Contrastive Learning*.

    :param Tensor scores: square (B, B) scores.
    :param str direction: ``"y|x"``, ``"x|y"`` or ``"symmetric"``.
    :returns: scalar loss.

    >>> tilted_kl(torch.zeros(3, 3)).item()
    0.0
    """
    scores = _check_scores(scores)
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    if direction == "symmetric":
        return 0.5 * (tilted_kl(scores) + tilted_kl(scores.T))
    if direction == "x|y":
        scores = scores.T
    log_z = scores.logsumexp(-1) - math.log(scores.shape[0])
    return (log_z - scores.diagonal()).mean()


def joint_tilted_kl(scores):
    r"""Baptista–Stuart–Tran joint loss: KL from :math:`p(x, y)` to the jointly tilted model.

    With :math:`q_f(x, y) = p(x) p(y) e^{f(x, y)} / \mathbb E_{p(x)p(y)} e^f` (one global
    normalizer, the Donsker–Varadhan form),

    .. math::

        \mathrm{KL}(p \,\|\, q_f) - I(X; Y) = -\mathbb E_p f + \log \mathbb E_{p(x)p(y)} e^f,

    estimated as :math:`-\frac1B\sum_i s_{ii} + \log \frac{1}{B^2}\sum_{i,j} e^{s_{ij}}`.
    The B diagonal terms (a fraction 1/B of the B² pairs) bias the normalizer by
    :math:`O(1/B)` but bound the estimate below by :math:`-2\log B`; it is consistent as
    :math:`B \to \infty`, with population optimum :math:`f = \mathrm{PMI} + \text{const}`
    (value :math:`-I`). Unlike the conditional losses, its finite-B optimum is only
    approximately PMI.

    **References**

    1. Baptista, Stuart & Tran (2025), *A Mathematical Perspective on Contrastive Learning*.

    :param Tensor scores: square (B, B) scores.
    :returns: scalar loss.

    >>> joint_tilted_kl(torch.ones(3, 3)).item()
    0.0
    """
    scores = _check_scores(scores)
    b = scores.shape[0]
    return scores.flatten().logsumexp(0) - 2 * math.log(b) - scores.diagonal().mean()


def linear_contrastive(u, v, g1, g2, *, rho=1.0):
    r"""Nakada et al.'s linear contrastive loss of linear encoders :math:`u = G_1 x, v = G_2 y`.

    .. math::

        L = -\mathrm{tr}(G_1 S G_2^\top) + \frac\rho2 \lVert G_1^\top G_2 \rVert_F^2,

    where :math:`S` is the unbiased contrastive cross-covariance of the batch, so
    :math:`\mathrm{tr}(G_1 S G_2^\top) = \frac1B\sum_i u_i\cdot v_i -
    \frac{1}{B(B-1)}\sum_{i\ne j} u_i\cdot v_j` (encoder offsets cancel). It is the first-order
    term of symmetric CLIP at high temperature. Minimizers:
    :math:`G_1^\top G_2 = U_r D_r V_r^\top / \rho` (top-r SVD of S), minimum
    :math:`-\sum_{i\le r}\sigma_i^2 / (2\rho)` — see
    :func:`pyro_contrast.training.linear.contrastive_svd`.

    **References**

    1. Nakada, Gulluk, Deng, Ji, Zou & Zhang (2023), *Understanding Multimodal Contrastive
       Learning and Incorporating Unpaired Data*.

    :param Tensor u: (B, r) embeddings :math:`G_1 x_i` (plus any offset).
    :param Tensor v: (B, r) embeddings :math:`G_2 y_i`.
    :param Tensor g1: (r, d_x) weight :math:`G_1`.
    :param Tensor g2: (r, d_y) weight :math:`G_2`.
    :param float rho: positive penalty weight.
    :returns: scalar loss.

    >>> g = torch.eye(2)
    >>> x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    >>> linear_contrastive(x, x, g, g).item()
    -1.0
    """
    _check_rho(rho)
    return -_contrastive_trace(u, v) + 0.5 * rho * (g1.T @ g2).pow(2).sum()


def linear_contrastive_unpaired(u, v, u_unpaired=None, v_unpaired=None, *, rho=1.0):
    r"""Linear contrastive loss whose penalty uses marginal covariances from unpaired data.

    .. math::

        L = -\mathrm{tr}(G_1 S G_2^\top) + \frac\rho2\,
        \mathrm{tr}\big(G_1 \hat\Sigma_x G_1^\top\, G_2 \hat\Sigma_y G_2^\top\big),

    with :math:`\hat\Sigma_x` the covariance of all x (paired and unpaired), so the penalty is
    :math:`\mathrm{tr}(C_u C_v)` of the embedding covariances. Substituting
    :math:`H_1 = G_1\hat\Sigma_x^{1/2}` reduces it to the plain loss on the whitened
    cross-covariance: minimizers satisfy :math:`G_1^\top G_2 = \hat\Sigma_x^{-1/2} U_r D_r
    V_r^\top \hat\Sigma_y^{-1/2}/\rho` (:ref:`math-linear-cl`: unpaired data improve the marginal
    covariances used to whiten), i.e. ``contrastive_svd(..., whiten=True, ridge=0)``.

    **References**

    1. Nakada, Gulluk, Deng, Ji, Zou & Zhang (2023), *Understanding Multimodal Contrastive
       Learning and Incorporating Unpaired Data*.

    :param Tensor u: (B, r) embeddings of paired x.
    :param Tensor v: (B, r) embeddings of paired y.
    :param Tensor u_unpaired: optional (N_x, r) embeddings of unpaired x.
    :param Tensor v_unpaired: optional (N_y, r) embeddings of unpaired y.
    :param float rho: positive penalty weight.
    :returns: scalar loss.

    >>> x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    >>> linear_contrastive_unpaired(x, x).item()
    0.0
    """
    _check_rho(rho)
    trace = _contrastive_trace(u, v)
    cu = _covariance(u if u_unpaired is None else torch.cat([u, u_unpaired.to(u.dtype)]))
    cv = _covariance(v if v_unpaired is None else torch.cat([v, v_unpaired.to(v.dtype)]))
    return -trace + 0.5 * rho * (cu * cv.T).sum()


class BatchLoss:
    r"""A training objective ``loss(critic, x, y) -> scalar`` with a name for configs.

    ``fn(critic, x, y, **kwargs)`` receives the critic and one aligned mini-batch; the
    keyword arguments are fixed at construction (and recorded in checkpoint configs).

    :param callable fn: the objective.
    :param str name: a name for configs and reprs.

    >>> loss = BatchLoss(lambda critic, x, y: symmetric_infonce(critic.pairwise(x, y)))
    >>> from pyro_contrast.critics import Critic
    >>> loss(Critic.from_embeddings("dot"), torch.eye(3), torch.eye(3)).item() < 1
    True
    """

    def __init__(self, fn, name=None, **kwargs):
        if not callable(fn):
            raise TypeError(f"loss must be callable, got {type(fn).__name__}")
        try:
            inspect.signature(fn).bind(None, None, None, **kwargs)
        except (TypeError, ValueError) as err:
            message = f"loss {name or fn!r} does not accept {sorted(kwargs)}: {err}"
            raise TypeError(message) from None
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", type(fn).__name__)
        self.kwargs = kwargs

    def __call__(self, critic, x, y):
        return self.fn(critic, x, y, **self.kwargs)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"BatchLoss({self.name!r}{', ' + args if args else ''})"

    def config(self):
        """A JSON-friendly description: the name and the keyword arguments."""
        return {"name": self.name, "kwargs": {k: _jsonable(v) for k, v in self.kwargs.items()}}


def _on_scores(score_fn):
    def objective(critic, x, y, **kwargs):
        return score_fn(critic.pairwise(x, y), **kwargs)

    objective.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in "cxy"]
        + list(inspect.signature(score_fn).parameters.values())[1:]
    )
    return objective


def _l2_objective(critic, x, y, *, norm_penalty=1e-2, symmetric=True):
    if critic.similarity != "neg_sq_l2":
        raise ValueError(
            f"loss 'l2_infonce' needs a critic with similarity='neg_sq_l2', got "
            f"{critic.similarity!r}"
        )
    u, v = critic.encode_x(x), critic.encode_y(y)
    return l2_infonce(
        u, v, temperature=critic.temperature, norm_penalty=norm_penalty, symmetric=symmetric
    )


def _linear_objective(critic, x, y, *, rho=1.0):
    weights = []
    for side in ("encoder_x", "encoder_y"):
        encoder = getattr(critic, side)
        if not isinstance(encoder, nn.Linear):
            raise ValueError(
                f"loss 'linear_contrastive' needs nn.Linear encoders, critic.{side} "
                f"is {type(encoder).__name__}"
            )
        weights.append(encoder.weight)
    return linear_contrastive(critic.encode_x(x), critic.encode_y(y), *weights, rho=rho)


#: Named objectives accepted by :func:`get` and ``fit(loss=...)``.
LOSSES = {
    "infonce": _on_scores(infonce),
    "symmetric_infonce": _on_scores(symmetric_infonce),
    "siglip": _on_scores(siglip),
    "l2_infonce": _l2_objective,
    "tilted_kl": _on_scores(tilted_kl),
    "joint_tilted_kl": _on_scores(joint_tilted_kl),
    "linear_contrastive": _linear_objective,
}


def get(loss, **kwargs):
    r"""Resolve a loss name, :class:`BatchLoss` or callable of scores to a :class:`BatchLoss`.

    A plain callable is applied to the critic's (B, B) score matrix ``critic.pairwise(x, y)``;
    wrap a function of ``(critic, x, y)`` in :class:`BatchLoss` to see the batch itself.

    :param loss: a name in :data:`LOSSES`, a :class:`BatchLoss`, or ``callable(scores)``.
    :param kwargs: keyword arguments of the named loss (e.g. ``rho=2.0``).
    :returns: :class:`BatchLoss`.

    >>> get("tilted_kl", direction="symmetric")
    BatchLoss('tilted_kl', direction='symmetric')
    """
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
        return BatchLoss(LOSSES[loss], loss, **kwargs)
    if isinstance(loss, BatchLoss):
        if kwargs:
            raise TypeError("keyword arguments are fixed when a BatchLoss is built")
        return loss
    if callable(loss):
        return BatchLoss(_on_scores(loss), getattr(loss, "__qualname__", None), **kwargs)
    raise TypeError(f"loss must be a name, a BatchLoss or a callable, got {type(loss).__name__}")


def _jsonable(value):
    return value if isinstance(value, (bool, int, float, str, type(None))) else repr(value)


def _contrastive_trace(u, v):
    u, v = _check_pair(u, v)
    b = u.shape[0]
    total = (u.sum(0) * v.sum(0)).sum()
    diag = (u * v).sum()
    return diag / b - (total - diag) / (b * (b - 1))


def _covariance(u):
    centred = u - u.mean(0)
    return centred.T @ centred / (u.shape[0] - 1)


def _check_rho(rho):
    if not (isinstance(rho, (int, float)) and math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho must be a positive number, got {rho!r}")


def _check_scores(scores, square=True):
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    if scores.dim() != 2 or scores.shape[0] < 2:
        raise ValueError(f"scores must have shape (B, M) with B >= 2, got {tuple(scores.shape)}")
    if square and scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be square (B, B), got {tuple(scores.shape)}")
    if scores.shape[1] < scores.shape[0]:
        raise ValueError(f"scores needs at least B columns, got {tuple(scores.shape)}")
    if not scores.is_floating_point() or scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    return check_finite(scores, "scores")


def _check_pair(u, v):
    for name, t in (("u", u), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name} must have shape (B, d), got {tuple(t.shape)}")
    if u.shape[0] != v.shape[0] or u.shape[0] < 2:
        raise ValueError(
            f"u and v need the same number B >= 2 of rows, got {u.shape[0]}, {v.shape[0]}"
        )
    dtype = torch.promote_types(torch.promote_types(u.dtype, v.dtype), torch.float32)
    u, v = u.to(dtype), v.to(dtype)
    check_finite(u, "u")
    check_finite(v, "v")
    return u, v


__all__ = [
    "BatchLoss",
    "LOSSES",
    "get",
    "infonce",
    "joint_tilted_kl",
    "l2_infonce",
    "linear_contrastive",
    "linear_contrastive_unpaired",
    "siglip",
    "symmetric_infonce",
    "tilted_kl",
]
