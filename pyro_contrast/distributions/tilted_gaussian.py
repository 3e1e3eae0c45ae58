r"""Exact Gaussian conditionals of a tilted Gaussian marginal (Baptista, Stuart & Tran)."""

import numbers

import torch
from pyro.distributions import MultivariateNormal, constraints

from pyro_contrast._validation import as_float_tensor, check_finite


class TiltedGaussian(MultivariateNormal):
    r"""The conditional :math:`p(y \mid x) \propto p(y)\, e^{t(x, y)}` of a tilted Gaussian.

    A critic :math:`t(x, y)` tilts the product of marginals (Baptista, Stuart & Tran), so
    with a Gaussian marginal :math:`p(y) = \mathcal N(m, S)` and a tilt that is at most
    quadratic in :math:`y` the conditional is again Gaussian, with a closed-form
    normalizer :math:`Z(x) = \mathbb E_{p(y)} e^{t(x, y)}`:

    .. math::

        p(y \mid x) = \frac{\mathcal N(y; m, S)\, e^{t(x, y)}}{Z(x)}.

    Build it with :meth:`bilinear` (:math:`t = x^\top W y / T`) or :meth:`l2`
    (:math:`t = -\lVert G x - H y\rVert^2 / (2\tau)`); the constructor itself takes the
    resulting Gaussian parameters and ``log_normalizer`` :math:`\log Z(x)` of batch shape.
    It is a :class:`~pyro.distributions.MultivariateNormal` (``rsample``, ``entropy``, ...)
    with the extra attribute ``log_normalizer``.

    References:

    1. Baptista, Stuart & Tran (2025), *A Mathematical Perspective on Contrastive Learning*.

    :param Tensor loc: mean of :math:`p(y \mid x)`, shape ``batch_shape + (d,)``.
    :param Tensor covariance_matrix: its covariance (or give ``precision_matrix`` or
        ``scale_tril``, as for :class:`~pyro.distributions.MultivariateNormal`).
    :param Tensor log_normalizer: :math:`\log Z(x)`, broadcastable to the batch shape.

    >>> d = TiltedGaussian.bilinear(torch.ones(3, 2), torch.eye(2), torch.zeros(2), torch.eye(2))
    >>> d.mean, d.log_normalizer
    (tensor([[1., 1.],
            [1., 1.],
            [1., 1.]]), tensor([1., 1., 1.]))
    """

    arg_constraints = {**MultivariateNormal.arg_constraints, "log_normalizer": constraints.real}

    def __init__(
        self,
        loc,
        covariance_matrix=None,
        precision_matrix=None,
        scale_tril=None,
        *,
        log_normalizer,
        validate_args=None,
    ):
        if not isinstance(log_normalizer, torch.Tensor):
            log_normalizer = torch.as_tensor(log_normalizer, dtype=loc.dtype)
        self.log_normalizer = log_normalizer
        super().__init__(
            loc, covariance_matrix, precision_matrix, scale_tril, validate_args=validate_args
        )
        try:
            fits = torch.broadcast_shapes(log_normalizer.shape, self.batch_shape)
        except RuntimeError:
            fits = None
        if fits != self.batch_shape:
            raise ValueError(
                f"log_normalizer of shape {tuple(log_normalizer.shape)} does not broadcast to "
                f"the batch shape {tuple(self.batch_shape)}"
            )
        self.log_normalizer = log_normalizer.expand(self.batch_shape)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(TiltedGaussian, _instance)
        batch_shape = torch.Size(batch_shape)
        new.log_normalizer = self.log_normalizer.expand(batch_shape)
        return super().expand(batch_shape, _instance=new)

    @classmethod
    def bilinear(cls, x, weight, loc, covariance_matrix, temperature=1.0, *, validate_args=None):
        r"""The conditional for the bilinear tilt :math:`t(x, y) = x^\top W y / T`.

        .. math::

            p(y \mid x) = \mathcal N\!\left(m + S W^\top x / T,\; S\right), \qquad
            \log Z(x) = \frac{x^\top W m}{T} + \frac{x^\top W S W^\top x}{2 T^2}.

        The covariance never depends on :math:`x`: a bilinear critic can match
        :math:`\mathbb E[y \mid x]` (see :func:`optimal_bilinear_weight`) but not the
        conditional covariance.

        :param Tensor x: conditioning embeddings, shape ``(..., dim_x)``.
        :param Tensor weight: :math:`W`, shape ``(..., dim_x, dim_y)``.
        :param Tensor loc: marginal mean :math:`m`, shape ``(..., dim_y)``.
        :param Tensor covariance_matrix: marginal covariance :math:`S` (positive definite).
        :param temperature: positive :math:`T` (number or tensor broadcastable to the batch).
        :returns: a :class:`TiltedGaussian` with batch shape broadcast from the inputs.

        >>> TiltedGaussian.bilinear(torch.ones(2), torch.eye(2), torch.zeros(2), torch.eye(2)).mean
        tensor([1., 1.])
        """
        dtype, x, weight, loc, cov, temp = _prepare(
            x=x,
            weight=weight,
            loc=loc,
            covariance_matrix=covariance_matrix,
            temperature=temperature,
        )
        _check_dims(x, weight, loc, "weight", (-2, -1))
        scale_tril = _cholesky(cov)
        eta = (x.unsqueeze(-2) @ weight).squeeze(-2) / temp.unsqueeze(-1)
        shift = (cov @ eta.unsqueeze(-1)).squeeze(-1)
        log_z = (eta * loc).sum(-1) + 0.5 * (eta * shift).sum(-1)
        scale_tril = scale_tril.expand(shift.shape[:-1] + scale_tril.shape[-2:])
        return cls(
            (loc + shift).to(dtype),
            scale_tril=scale_tril.to(dtype),
            log_normalizer=log_z.to(dtype),
            validate_args=validate_args,
        )

    @classmethod
    def l2(cls, x, G, H, loc, covariance_matrix, temperature=1.0, *, validate_args=None):
        r"""The conditional for the L2 tilt :math:`t(x, y) = -\lVert Gx - Hy\rVert^2/(2\tau)`.

        The tilt is a Gaussian likelihood of the pseudo-observation :math:`Gx = Hy +
        \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, \tau I)`, so (a Kalman update)

        .. math::

            \Sigma = (S^{-1} + H^\top H/\tau)^{-1}, \quad
            p(y \mid x) = \mathcal N\!\left(m + S H^\top (H S H^\top + \tau I)^{-1}
            (Gx - Hm),\; \Sigma\right),

            \log Z(x) = -\tfrac12 \log\det(I + H S H^\top/\tau)
            - \tfrac12 (Gx - Hm)^\top (H S H^\top + \tau I)^{-1} (Gx - Hm).

        Computed with Cholesky factors only (no inverse of :math:`S`).

        :param Tensor x: conditioning embeddings, shape ``(..., dim_x)``.
        :param Tensor G: map of :math:`x`, shape ``(..., k, dim_x)``.
        :param Tensor H: map of :math:`y`, shape ``(..., k, dim_y)``.
        :param Tensor loc: marginal mean :math:`m`, shape ``(..., dim_y)``.
        :param Tensor covariance_matrix: marginal covariance :math:`S` (positive definite).
        :param temperature: positive :math:`\tau` (number or tensor broadcastable to the batch).
        :returns: a :class:`TiltedGaussian` with batch shape broadcast from the inputs.

        >>> d = TiltedGaussian.l2(torch.ones(2), torch.eye(2), torch.eye(2), torch.zeros(2),
        ...                       torch.eye(2))
        >>> d.mean, d.covariance_matrix.diagonal()
        (tensor([0.5000, 0.5000]), tensor([0.5000, 0.5000]))
        """
        dtype, x, G, H, loc, cov, temp = _prepare(
            x=x, G=G, H=H, loc=loc, covariance_matrix=covariance_matrix, temperature=temperature
        )
        _check_dims(x, G, None, "G", (-1, None))
        _check_dims(None, H, loc, "H", (None, -1))
        if G.shape[-2] != H.shape[-2]:
            raise ValueError(
                f"G and H must have the same number of rows, got {G.shape[-2]} and {H.shape[-2]}"
            )
        tau = temp[..., None, None]
        scale_tril = _cholesky(cov)
        eye_k = torch.eye(H.shape[-2], dtype=H.dtype)
        residual = G @ x.unsqueeze(-1) - H @ loc.unsqueeze(-1)
        # Innovation covariance H S H^T + tau I has eigenvalues >= tau: safe to factor.
        innovation = _cholesky(H @ cov @ H.mT + tau * eye_k, "H S H^T + tau I")
        white = torch.linalg.solve_triangular(innovation, residual, upper=False)
        gain_solve = torch.cholesky_solve(residual, innovation)
        mean = loc + (cov @ H.mT @ gain_solve).squeeze(-1)
        log_z = (
            -0.5 * white.pow(2).sum((-2, -1))
            - innovation.diagonal(dim1=-2, dim2=-1).log().sum(-1)
            + 0.5 * H.shape[-2] * temp.log()
        )
        # Sigma = L (I + L^T H^T H L / tau)^{-1} L^T; its factor from a QR stays PD.
        hl = H @ scale_tril
        inner = _cholesky(torch.eye(loc.shape[-1], dtype=H.dtype) + hl.mT @ hl / tau)
        half = torch.linalg.solve_triangular(inner, scale_tril.mT, upper=False)
        upper = torch.linalg.qr(half)[1]
        sign = torch.where(upper.diagonal(dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(upper.dtype)
        post_tril = upper.mT * sign.unsqueeze(-2)
        post_tril = post_tril.expand(mean.shape[:-1] + post_tril.shape[-2:])
        return cls(
            mean.to(dtype),
            scale_tril=post_tril.to(dtype),
            log_normalizer=log_z.to(dtype),
            validate_args=validate_args,
        )


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
    dtype, cov_xx, cov_xy, cov_yy, temp = _prepare(
        cov_xx=cov_xx, cov_xy=cov_xy, cov_yy=cov_yy, temperature=temperature
    )
    _check_cross(cov_xx, cov_xy, cov_yy)
    left = torch.cholesky_solve(cov_xy, _cholesky(cov_xx, "cov_xx"))
    weight = torch.cholesky_solve(left.mT, _cholesky(cov_yy, "cov_yy")).mT
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
    dtype, cov_xx, cov_xy, cov_yy, temp = _prepare(
        cov_xx=cov_xx, cov_xy=cov_xy, cov_yy=cov_yy, temperature=temperature
    )
    _check_cross(cov_xx, cov_xy, cov_yy)
    chol_xx = _cholesky(cov_xx, "cov_xx")
    explained = cov_xy.mT @ torch.cholesky_solve(cov_xy, chol_xx)
    chol_cond = _cholesky(
        cov_yy - explained, "the conditional covariance Sigma_yy - Sigma_yx Sigma_xx^-1 Sigma_xy"
    )
    precision_gain = torch.cholesky_inverse(chol_cond) - torch.cholesky_inverse(
        _cholesky(cov_yy, "cov_yy")
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


def _prepare(**named):
    """Validate named tensors and a temperature; return the output dtype and float64 copies."""
    temperature = named.pop("temperature")
    tensors = {}
    for name, value in named.items():
        tensor = as_float_tensor(value, name)
        check_finite(tensor, name)
        if tensor.dim() < (1 if name in ("x", "loc") else 2):
            raise ValueError(
                f"{name} must have at least {1 if name in ('x', 'loc') else 2} "
                f"dimensions, got shape {tuple(tensor.shape)}"
            )
        tensors[name] = tensor
    dtype = torch.float32
    for tensor in tensors.values():
        dtype = torch.promote_types(dtype, tensor.dtype)
    if isinstance(temperature, torch.Tensor):
        temp = as_float_tensor(temperature, "temperature")
        dtype = torch.promote_types(dtype, temp.dtype)
    elif isinstance(temperature, numbers.Real) and not isinstance(temperature, bool):
        temp = torch.tensor(float(temperature), dtype=torch.float64)
    else:
        raise TypeError(f"temperature must be a positive number or tensor, got {temperature!r}")
    if not (torch.isfinite(temp).all() and (temp > 0).all()):
        raise ValueError(f"temperature must be positive and finite, got {temperature!r}")
    out = [t.to(torch.float64) for t in tensors.values()]
    return (dtype, *out, temp.to(torch.float64))


def _check_dims(x, matrix, loc, name, axes):
    x_axis, y_axis = axes
    if x is not None and matrix.shape[x_axis] != x.shape[-1]:
        raise ValueError(
            f"{name} has shape {tuple(matrix.shape)}, incompatible with x of "
            f"dimension {x.shape[-1]}"
        )
    if loc is not None and matrix.shape[y_axis] != loc.shape[-1]:
        raise ValueError(
            f"{name} has shape {tuple(matrix.shape)}, incompatible with loc of "
            f"dimension {loc.shape[-1]}"
        )


def _check_cross(cov_xx, cov_xy, cov_yy):
    want = (cov_xx.shape[-1], cov_yy.shape[-1])
    if cov_xy.shape[-2:] != want or cov_xx.shape[-2] != want[0] or cov_yy.shape[-2] != want[1]:
        raise ValueError(
            f"covariance shapes disagree: cov_xx {tuple(cov_xx.shape)}, cov_xy "
            f"{tuple(cov_xy.shape)}, cov_yy {tuple(cov_yy.shape)}"
        )


def _cholesky(matrix, name="covariance_matrix"):
    if matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"{name} must be square, got shape {tuple(matrix.shape)}")
    # Relative tolerance: float32 products such as A @ A.T are symmetric only to rounding.
    asymmetry = (matrix - matrix.mT).abs().amax()
    if asymmetry > 1e-5 * matrix.abs().amax():
        raise ValueError(f"{name} must be symmetric")
    chol, info = torch.linalg.cholesky_ex(matrix)
    if (info != 0).any():
        raise ValueError(f"{name} must be positive definite")
    return chol
