r"""Critic weights whose Gaussian tilt reproduces a jointly Gaussian conditional exactly."""

import torch

from pyro_contrast.distributions._gaussian_checks import check_cross, cholesky, prepare


def optimal_bilinear_weight(cov_xx, cov_xy, cov_yy, temperature=1.0):
    r"""The bilinear weight whose tilt reproduces :math:`\mathbb E[y \mid x]` exactly.

    For jointly Gaussian, centred :math:`(x, y)`, :meth:`TiltedGaussian.bilinear` with
    marginal :math:`\mathcal N(0, \Sigma_{yy})` and

    .. math::

        W^\star = T\, \Sigma_{xx}^{-1} \Sigma_{xy} \Sigma_{yy}^{-1}

    has mean :math:`\Sigma_{yx}\Sigma_{xx}^{-1} x = \mathbb E[y \mid x]` (it is also the
    population InfoNCE optimum). Its covariance stays :math:`\Sigma_{yy}`.

    References:

    1. Baptista, Stuart & Tran (2025), *A Mathematical Perspective on Contrastive Learning*.

    :param Tensor cov_xx: :math:`\Sigma_{xx}`, shape ``(..., dim_x, dim_x)``.
    :param Tensor cov_xy: :math:`\Sigma_{xy}`, shape ``(..., dim_x, dim_y)``.
    :param Tensor cov_yy: :math:`\Sigma_{yy}`, shape ``(..., dim_y, dim_y)``.
    :param temperature: positive :math:`T` of the tilt the weight is meant for.
    :returns: :math:`W^\star`, shape ``(..., dim_x, dim_y)``.

    >>> optimal_bilinear_weight(torch.eye(2), 0.5 * torch.eye(2), torch.eye(2))
    tensor([[0.5000, 0.0000],
            [0.0000, 0.5000]])
    """
    dtype, cov_xx, cov_xy, cov_yy, temp = prepare(
        True, cov_xx=cov_xx, cov_xy=cov_xy, cov_yy=cov_yy, temperature=temperature
    )
    check_cross(cov_xx, cov_xy, cov_yy)
    left = torch.cholesky_solve(cov_xy, cholesky(cov_xx, "cov_xx"))
    weight = torch.cholesky_solve(left.mT, cholesky(cov_yy, "cov_yy")).mT
    return (temp[..., None, None] * weight).to(dtype)


def optimal_l2_tilt(cov_xx, cov_xy, cov_yy, temperature=1.0):
    r"""Maps :math:`(G, H)` whose L2 tilt reproduces mean *and* covariance of :math:`y \mid x`.

    For jointly Gaussian, centred :math:`(x, y)`, :meth:`TiltedGaussian.l2` with marginal
    :math:`\mathcal N(0, \Sigma_{yy})` equals the true conditional when

    .. math::

        H^\top H / \tau = \Sigma_{y|x}^{-1} - \Sigma_{yy}^{-1}, \qquad
        H^\top G / \tau = \Sigma_{y|x}^{-1} \Sigma_{yx} \Sigma_{xx}^{-1},

    with :math:`\Sigma_{y|x} = \Sigma_{yy} - \Sigma_{yx}\Sigma_{xx}^{-1}\Sigma_{xy}`. From
    the eigendecomposition :math:`U \Lambda U^\top` of the left side, :math:`H =
    (\tau\Lambda)^{1/2} U^\top`; rows of directions where :math:`y` is independent of
    :math:`x` (:math:`\Lambda = 0`) are zero in both maps.

    References:

    1. Baptista, Stuart & Tran (2025), *A Mathematical Perspective on Contrastive Learning*.

    :param Tensor cov_xx: :math:`\Sigma_{xx}`, shape ``(..., dim_x, dim_x)``.
    :param Tensor cov_xy: :math:`\Sigma_{xy}`, shape ``(..., dim_x, dim_y)``.
    :param Tensor cov_yy: :math:`\Sigma_{yy}`, shape ``(..., dim_y, dim_y)``.
    :param temperature: positive :math:`\tau`.
    :returns: ``(G, H)`` of shapes ``(..., dim_y, dim_x)`` and ``(..., dim_y, dim_y)``.

    >>> G, H = optimal_l2_tilt(torch.eye(1), 0.6 * torch.eye(1), torch.eye(1))
    >>> round((H.T @ G).item(), 4)   # Sigma_{y|x}^{-1} Sigma_yx Sigma_xx^{-1} = 0.6 / 0.64
    0.9375
    """
    dtype, cov_xx, cov_xy, cov_yy, temp = prepare(
        True, cov_xx=cov_xx, cov_xy=cov_xy, cov_yy=cov_yy, temperature=temperature
    )
    check_cross(cov_xx, cov_xy, cov_yy)
    chol_xx = cholesky(cov_xx, "cov_xx")
    explained = cov_xy.mT @ torch.cholesky_solve(cov_xy, chol_xx)
    chol_cond = cholesky(
        cov_yy - explained, "the conditional covariance Sigma_yy - Sigma_yx Sigma_xx^-1 Sigma_xy"
    )
    precision_gain = torch.cholesky_inverse(chol_cond) - torch.cholesky_inverse(
        cholesky(cov_yy, "cov_yy")
    )
    precision_gain = 0.5 * (precision_gain + precision_gain.mT)
    target = torch.cholesky_solve(torch.cholesky_solve(cov_xy, chol_xx).mT, chol_cond)
    tau = temp[..., None, None]
    eigvals, eigvecs = torch.linalg.eigh(precision_gain)
    # Eigenvalues at rounding level are directions y shares nothing with x.
    cutoff = eigvals.abs().amax(-1, keepdim=True) * eigvals.shape[-1] * 1e3
    cutoff = cutoff * torch.finfo(eigvals.dtype).eps
    keep = eigvals > cutoff
    root = torch.where(keep, (temp.unsqueeze(-1) * eigvals.clamp(min=0)).sqrt(), 0.0)
    inv_root = torch.where(keep, 1.0 / torch.where(keep, root, 1.0), 0.0)
    H = root.unsqueeze(-1) * eigvecs.mT
    G = inv_root.unsqueeze(-1) * (eigvecs.mT @ (tau * target))
    return G.to(dtype), H.to(dtype)
