r"""Closed-form linear critics: contrastive SVD and the Gaussian-optimal tilts."""

import numbers
from typing import NamedTuple

import torch
from torch import nn

from pyro_contrast._validation import as_float_tensor, check_finite, check_rows
from pyro_contrast.critics import Critic
from pyro_contrast.distributions.tilted_gaussian import optimal_bilinear_weight, optimal_l2_tilt


class LinearFactors(NamedTuple):
    """Factors of :func:`contrastive_svd`: ``g1.T @ g2 == left @ diag(s) @ right.T / rho``
    (in whitened coordinates when whitening; ``g1``, ``g2`` include the whitening)."""

    g1: torch.Tensor
    g2: torch.Tensor
    singular_values: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    mean_x: torch.Tensor
    mean_y: torch.Tensor
    min_loss: torch.Tensor


def contrastive_svd(
    x, y, rank, *, unpaired_x=None, unpaired_y=None, whiten=False, ridge=1e-6, rho=1.0
):
    r"""Linear contrastive encoders in closed form: the top-r SVD of the cross-covariance.

    With :math:`S` the unbiased contrastive cross-covariance of the pairs (equal to the sample
    cross-covariance :math:`\frac{1}{n-1}\sum_i (x_i-\bar x)(y_i-\bar y)^\top`), the minimizers
    of Nakada et al.'s loss :math:`-\mathrm{tr}(G_1 S G_2^\top) + \frac\rho2
    \lVert G_1^\top G_2\rVert_F^2` satisfy :math:`G_1^\top G_2 = U_r D_r V_r^\top/\rho`
    (Eckart–Young), with minimum :math:`-\sum_{i\le r}\sigma_i^2/(2\rho)`. We return the
    balanced factors :math:`G_1 = (D_r/\rho)^{1/2} U_r^\top`, :math:`G_2 = (D_r/\rho)^{1/2}
    V_r^\top`.

    With ``whiten=True`` the SVD is of :math:`\hat\Sigma_x^{-1/2} S \hat\Sigma_y^{-1/2}` and
    the factors are multiplied by :math:`\hat\Sigma^{-1/2}` (a CCA-like solution); the marginal
    covariances pool paired and unpaired samples, which is how unpaired data help
    (:ref:`math-linear-cl`);
    this minimizes :func:`pyro_contrast.training.losses.linear_contrastive_unpaired` when
    ``ridge=0``.
    ``ridge`` adds ``ridge * trace(Σ)/d`` to each covariance before inverting it. The
    encoders subtract the (pooled) means, so scores are centred bilinear forms.

    **References**

    1. Nakada, Gulluk, Deng, Ji, Zou & Zhang (2023), *Understanding Multimodal Contrastive
       Learning and Incorporating Unpaired Data*.

    :param Tensor x: (n, d_x) paired inputs of the first modality.
    :param Tensor y: (n, d_y) paired inputs of the second modality.
    :param int rank: embedding dimension r ≤ min(d_x, d_y).
    :param Tensor unpaired_x: optional (n_x, d_x) extra samples (needs ``whiten=True``).
    :param Tensor unpaired_y: optional (n_y, d_y) extra samples (needs ``whiten=True``).
    :param bool whiten: whiten by the marginal covariances before the SVD.
    :param float ridge: relative ridge added to the covariances when whitening.
    :param float rho: positive penalty weight of the loss.
    :returns: ``(critic, factors)``: a dot-similarity :class:`~pyro_contrast.critics.Critic`
        with linear encoders, and :class:`LinearFactors`.

    >>> x = torch.randn(100, 3)
    >>> critic, factors = contrastive_svd(x, x + 0.1 * torch.randn(100, 3), rank=2)
    >>> critic.pairwise(x[:4], x[:4]).shape
    torch.Size([4, 4])
    """
    x, y = _check_pairs(x, y)
    if not isinstance(rank, numbers.Integral) or not 1 <= rank <= min(x.shape[1], y.shape[1]):
        raise ValueError(
            f"rank must be an integer in [1, {min(x.shape[1], y.shape[1])}], got {rank!r}"
        )
    if not (isinstance(rho, numbers.Real) and rho > 0):
        raise ValueError(f"rho must be positive, got {rho!r}")
    if not whiten and (unpaired_x is not None or unpaired_y is not None):
        raise ValueError("unpaired_x/unpaired_y only enter through whitening; pass whiten=True")
    dtype = x.dtype
    x64, y64 = x.double(), y.double()
    pooled_x = _pool(x64, unpaired_x, "unpaired_x")
    pooled_y = _pool(y64, unpaired_y, "unpaired_y")
    mean_x, mean_y = pooled_x.mean(0), pooled_y.mean(0)
    cross = _cross_covariance(x64, y64)
    if whiten:
        wx = _inverse_sqrt(_covariance(pooled_x), ridge, "x")
        wy = _inverse_sqrt(_covariance(pooled_y), ridge, "y")
        cross = wx @ cross @ wy
    else:
        wx, wy = torch.eye(x.shape[1], dtype=x64.dtype), torch.eye(y.shape[1], dtype=y64.dtype)
    left, values, right_t = torch.linalg.svd(cross)
    left, values, right = left[:, :rank], values[:rank], right_t[:rank].T
    scale = (values / rho).sqrt().unsqueeze(-1)
    g1, g2 = scale * left.T @ wx, scale * right.T @ wy
    critic = Critic(
        _affine(g1, -g1 @ mean_x, dtype), _affine(g2, -g2 @ mean_y, dtype), similarity="dot"
    ).to(dtype)
    factors = LinearFactors(
        *(t.to(dtype) for t in (g1, g2, values, left, right, mean_x, mean_y)),
        min_loss=(-values.pow(2).sum() / (2 * rho)).to(dtype),
    )
    return critic, factors


def optimal_bilinear_critic(x, y, *, ridge=0.0):
    r"""The population InfoNCE optimum among centred bilinear critics, from sample moments.

    The weight is :func:`~pyro_contrast.distributions.tilted_gaussian.optimal_bilinear_weight`
    of the sample moments (one implementation of the formula in the package).

    .. math::

        f(x, y) = (x - \bar x)^\top W^* (y - \bar y), \qquad
        W^* = \Sigma_{xx}^{-1}\Sigma_{xy}\Sigma_{yy}^{-1}.

    Its tilt :math:`p(y \mid x) = N(\bar y + \Sigma_{yy} W^{*\top}(x - \bar x), \Sigma_{yy})`
    has the right mean :math:`E[y \mid x]` but never the conditional covariance
    (:ref:`math-tilted-gaussian`).

    **References**

    1. Baptista, Stuart & Tran (2025), *A Mathematical Perspective on Contrastive Learning*.

    :param Tensor x: (n, d_x) samples.
    :param Tensor y: (n, d_y) paired samples.
    :param float ridge: relative ridge added to the marginal covariances.
    :returns: a ``"bilinear"`` :class:`~pyro_contrast.critics.Critic` with centring encoders.

    >>> x = torch.randn(200, 2)
    >>> optimal_bilinear_critic(x, x + torch.randn(200, 2)).weight.shape
    torch.Size([2, 2])
    """
    x, y, mean_x, mean_y, sxx, sxy, syy = _moments(x, y, ridge)
    weight = optimal_bilinear_weight(sxx, sxy, syy)
    critic = Critic(
        _centring(mean_x, x.dtype),
        _centring(mean_y, x.dtype),
        similarity="bilinear",
        dim_x=x.shape[1],
        dim_y=y.shape[1],
    ).to(x.dtype)
    with torch.no_grad():
        critic.weight.copy_(weight)
    return critic


def optimal_l2_critic(x, y, *, ridge=0.0):
    r"""The L2 tilt whose conditional :math:`p(y \mid x)` matches the Gaussian one exactly.

    The maps are :func:`~pyro_contrast.distributions.tilted_gaussian.optimal_l2_tilt` of the
    sample moments (one implementation of the formula in the package).

    With :math:`f(x, y) = -\tfrac12 \lVert G(x - \bar x) - H(y - \bar y)\rVert^2` (temperature
    1) the tilted conditional is :math:`N(\Sigma H^\top G (x-\bar x), \Sigma)`,
    :math:`\Sigma = (\Sigma_{yy}^{-1} + H^\top H)^{-1}`; choosing
    :math:`H^\top H = \Sigma_{y|x}^{-1} - \Sigma_{yy}^{-1}` and
    :math:`H^\top G = \Sigma_{y|x}^{-1}\Sigma_{yx}\Sigma_{xx}^{-1}` matches both mean and
    covariance, so :math:`f = \log p(y\mid x) - \log p(y) + g(x)` under the sample Gaussian.

    **References**

    1. Baptista, Stuart & Tran (2025), *A Mathematical Perspective on Contrastive Learning*.

    :param Tensor x: (n, d_x) samples.
    :param Tensor y: (n, d_y) paired samples.
    :param float ridge: relative ridge added to the marginal covariances.
    :returns: a ``"neg_sq_l2"`` :class:`~pyro_contrast.critics.Critic` with linear encoders.

    >>> x = torch.randn(200, 2)
    >>> optimal_l2_critic(x, x + torch.randn(200, 2)).similarity
    'neg_sq_l2'
    """
    x, y, mean_x, mean_y, sxx, sxy, syy = _moments(x, y, ridge)
    g, h = optimal_l2_tilt(sxx, sxy, syy)
    dtype = x.dtype
    return Critic(
        _affine(g, -g @ mean_x, dtype), _affine(h, -h @ mean_y, dtype), similarity="neg_sq_l2"
    ).to(dtype)


def _moments(x, y, ridge):
    x, y = _check_pairs(x, y)
    x64, y64 = x.double(), y.double()
    sxx = _ridged(_covariance(x64), ridge, "x")
    syy = _ridged(_covariance(y64), ridge, "y")
    for name, cov in (("x", sxx), ("y", syy)):
        _check_definite(cov, name)
    return x, y, x64.mean(0), y64.mean(0), sxx, _cross_covariance(x64, y64), syy


def _check_pairs(x, y):
    x = check_rows(check_finite(as_float_tensor(x, "x"), "x"), "x")
    y = check_rows(check_finite(as_float_tensor(y, "y"), "y"), "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must have the same number of rows, got {x.shape[0]} and {y.shape[0]}"
        )
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 pairs, got {x.shape[0]}")
    dtype = torch.promote_types(x.dtype, y.dtype)
    return x.to(dtype), y.to(dtype)


def _pool(paired, unpaired, name):
    if unpaired is None:
        return paired
    extra = check_rows(
        check_finite(as_float_tensor(unpaired, name), name), name, dim=paired.shape[1]
    )
    return torch.cat([paired, extra.double()])


def _covariance(x):
    centred = x - x.mean(0)
    return centred.T @ centred / (x.shape[0] - 1)


def _cross_covariance(x, y):
    # Equals (1/n) Σ x_i y_iᵀ - 1/(n(n-1)) Σ_{i≠j} x_i y_jᵀ, Nakada et al.'s unbiased form.
    return (x - x.mean(0)).T @ (y - y.mean(0)) / (x.shape[0] - 1)


def _ridged(cov, ridge, name):
    if not (isinstance(ridge, numbers.Real) and ridge >= 0):
        raise ValueError(f"ridge must be a non-negative number, got {ridge!r}")
    return cov + ridge * cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=cov.dtype)


def _check_definite(cov, name):
    evals = torch.linalg.eigvalsh(cov)
    if not evals[0] > 1e-12 * evals[-1].clamp(min=1e-300):
        raise ValueError(
            f"the covariance of {name} is singular (fewer samples than "
            f"dimensions, or collinear columns); pass a positive ridge"
        )
    return evals


def _inverse_sqrt(cov, ridge, name):
    cov = _ridged(cov, ridge, name)
    _check_definite(cov, name)
    evals, evecs = torch.linalg.eigh(cov)
    return evecs @ torch.diag(evals.rsqrt()) @ evecs.T


def _affine(weight, bias, dtype):
    layer = nn.Linear(weight.shape[1], weight.shape[0], dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def _centring(mean, dtype):
    return _affine(torch.eye(mean.shape[0], dtype=mean.dtype), -mean, dtype)
