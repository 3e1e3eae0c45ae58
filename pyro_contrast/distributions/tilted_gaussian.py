r"""Exact Gaussian conditionals of a tilted Gaussian marginal (Baptista, Stuart & Tran)."""

import torch
from pyro.distributions import MultivariateNormal, constraints
from pyro.distributions.util import broadcast_shape

from pyro_contrast.distributions._bank import validating
from pyro_contrast.distributions._gaussian_checks import check_dims, cholesky, prepare
from pyro_contrast.distributions._jit import static_shape

# re-exported: the optimal tilts used to live here
from pyro_contrast.distributions.tilted_gaussian_optima import (  # noqa: F401
    optimal_bilinear_weight,
    optimal_l2_tilt,
)


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
            log_normalizer = torch.full((), float(log_normalizer), dtype=loc.dtype)
        self.log_normalizer = log_normalizer
        super().__init__(
            loc, covariance_matrix, precision_matrix, scale_tril, validate_args=validate_args
        )
        try:
            fits = static_shape(torch.broadcast_shapes(log_normalizer.shape, self.batch_shape))
        except RuntimeError:
            fits = None
        if fits != static_shape(self.batch_shape):
            raise ValueError(
                f"log_normalizer of shape {tuple(log_normalizer.shape)} does not broadcast to "
                f"the batch shape {tuple(self.batch_shape)}"
            )
        self.log_normalizer = log_normalizer.expand(self.batch_shape)

    @staticmethod
    def infer_shapes(
        loc, covariance_matrix=None, precision_matrix=None, scale_tril=None, log_normalizer=()
    ):
        batch_shape = broadcast_shape(loc[:-1], log_normalizer)
        for matrix in (covariance_matrix, precision_matrix, scale_tril):
            if matrix is not None:
                batch_shape = broadcast_shape(batch_shape, matrix[:-2])
        return torch.Size(batch_shape), torch.Size(loc[-1:])

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
        validate = validating(validate_args)
        dtype, x, weight, loc, cov, temp = prepare(
            validate,
            x=x,
            weight=weight,
            loc=loc,
            covariance_matrix=covariance_matrix,
            temperature=temperature,
        )
        check_dims(x, weight, loc, "weight", (-2, -1))
        scale_tril = cholesky(cov, validate=validate)
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
        validate = validating(validate_args)
        dtype, x, G, H, loc, cov, temp = prepare(
            validate,
            x=x,
            G=G,
            H=H,
            loc=loc,
            covariance_matrix=covariance_matrix,
            temperature=temperature,
        )
        check_dims(x, G, None, "G", (-1, None))
        check_dims(None, H, loc, "H", (None, -1))
        if static_shape(G.shape[-2:-1]) != static_shape(H.shape[-2:-1]):
            raise ValueError(
                f"G and H must have the same number of rows, got {G.shape[-2]} and {H.shape[-2]}"
            )
        tau = temp[..., None, None]
        scale_tril = cholesky(cov, validate=validate)
        eye_k = torch.eye(H.shape[-2], dtype=H.dtype)
        residual = G @ x.unsqueeze(-1) - H @ loc.unsqueeze(-1)
        # Innovation covariance H S H^T + tau I has eigenvalues >= tau: safe to factor.
        innovation = cholesky(H @ cov @ H.mT + tau * eye_k, "H S H^T + tau I", validate)
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
        inner = cholesky(
            torch.eye(loc.shape[-1], dtype=H.dtype) + hl.mT @ hl / tau, validate=validate
        )
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
