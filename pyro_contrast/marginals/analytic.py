r"""Closed-form bridges: the A–B–C marginal when B's representation has a known law."""

import numbers

import torch
from pyro.distributions import MultivariateNormal

from pyro_contrast._validation import as_float_tensor, check_finite, check_rows
from pyro_contrast.critics import Critic
from pyro_contrast.marginals._gaussian_forms import critic_form, gaussian_log_ratio

MARGINALS = ("sphere", "gaussian")
_GAUSSIAN_SIMILARITIES = ("dot", "neg_sq_l2", "bilinear")


def analytic_log_ratio(critic_ab, critic_bc, a, c, marginal, *, target=None):
    r"""Closed-form :math:`\log p(c_k \mid a_n) - \log p(c_k)` of the tilted A–B–C model.

    Both critics tilt the law :math:`p(z)` of B's shared representation :math:`z`, and
    with :math:`A \perp C \mid B` (Che & Eysenbach, Lemma 1)

    .. math::

        \frac{p(c \mid a)}{p(c)} = \mathbb E_{z \sim p(z)}\left[
        \frac{e^{f_{AB}(a, z)}}{Z_A(a)} \frac{e^{f_{BC}(z, c)}}{Z_C(z)}\right], \quad
        Z_A(a) = \mathbb E_z e^{f_{AB}(a, z)}, \; Z_C(z) = \mathbb E_c e^{f_{BC}(z, c)}.

    Biases cancel against the normalizers. Two marginals make it closed form:

    - uniform sphere (or von Mises–Fisher :math:`\kappa_0 \mu`) with cosine critics of
      concentrations :math:`k_1 = 1/T_{AB}`, :math:`k_2 = 1/T_{BC}` and uniform C
      representations, :math:`L_d(r) = \log {}_0F_1(; d/2; r^2/4)`:

      .. math::

          \mathrm{PMI}(a, c) = L_d(\lVert \kappa_0\mu + k_1 u + k_2 v\rVert)
          - L_d(\lVert \kappa_0\mu + k_1 u\rVert) - L_d(k_2),

      a monotone function of :math:`u \cdot v` for the uniform sphere;
    - Gaussian :math:`z \sim \mathcal N(m, S)` with ``"dot"``, ``"neg_sq_l2"`` or
      ``"bilinear"`` critics: every factor is log-quadratic in :math:`z`. For dot critics
      without a target, :math:`\alpha = u/T_{AB}`, :math:`\beta = v/T_{BC}`:

      .. math::

          \mathrm{PMI}(a, c) + \log Z_C = \alpha^\top S \beta + m^\top\beta
          + \tfrac12 \beta^\top S \beta.

    Without ``target`` the Gaussian case takes :math:`Z_C(z)` constant and leaves it out:
    the result is PMI up to that constant (rankings and ``softmax`` over candidates are
    unaffected); it is the :math:`M \to \infty` limit of the LogSumExp estimator minus
    :math:`\log Z_A(a)` and the biases. With ``target`` :math:`= \mathcal N(m_c, S_c)` for C's
    representation, :math:`Z_C(z)` is log-quadratic and the whole expectation is one exact
    Gaussian integral: with

    .. math::

        \Phi(\eta, \Lambda) = \log \mathbb E_z e^{\eta^\top z - \frac12 z^\top \Lambda z}
        = \eta^\top m - \tfrac12 m^\top \Lambda m - \tfrac12 \log\det(I + S\Lambda)
        + \tfrac12 (\eta - \Lambda m)^\top (S^{-1} + \Lambda)^{-1} (\eta - \Lambda m),

    dot critics give :math:`\mathrm{PMI}(a, c) = \Phi(\alpha + \beta - m_c / T_{BC},\,
    S_c / T_{BC}^2) - \Phi(\alpha, 0)`; ``"neg_sq_l2"`` and ``"bilinear"`` critics add their
    quadratic and linear terms the same way. :math:`\Phi` is evaluated with Cholesky factors
    of :math:`S` and of :math:`I + L^\top \Lambda L` only (never inverting :math:`S`). This is
    the :math:`M \to \infty` limit of the ``"exact"`` bank marginal with the C normalizer
    drawn from that Gaussian, and :math:`\mathbb E_{c}[e^{\mathrm{PMI}(a, c)}] = 1`.

    References:

    1. Che & Eysenbach (2025), *The "Law" of the Unconscious Contrastive Learner:
       Probabilistic Alignment of Unpaired Modalities*.
    2. Baptista, Stuart & Tran (2025), *A Mathematical Perspective on Contrastive Learning*.

    :param Critic critic_ab: critic between A (``x``) and B (``y``).
    :param Critic critic_bc: critic between B (``x``) and C (``y``).
    :param Tensor a: raw A inputs, encoded by ``critic_ab.encode_x`` to (N, d).
    :param Tensor c: raw C inputs, encoded by ``critic_bc.encode_y`` to (K, d).
    :param marginal: law of B's representation (from :func:`resolve_marginal`):
        ``UniformSphere``/``VonMisesFisher`` for cosine critics, ``MultivariateNormal``
        otherwise.
    :param target: optional law of C's representation for :math:`Z_C`: a
        ``MultivariateNormal`` (Gaussian case) or ``UniformSphere`` (the sphere default).
    :returns: (N, K) tensor, float64 for float64 embeddings, else float32.

    >>> from pyro.distributions import MultivariateNormal
    >>> critic = Critic.from_embeddings("dot")
    >>> z = MultivariateNormal(torch.zeros(2), torch.eye(2))
    >>> analytic_log_ratio(critic, critic, torch.ones(1, 2), torch.ones(3, 2), z).shape
    torch.Size([1, 3])
    """
    for name, critic in (("critic_ab", critic_ab), ("critic_bc", critic_bc)):
        if not isinstance(critic, Critic):
            raise TypeError(f"{name} must be a pyro_contrast.Critic, got {type(critic).__name__}")
    kind = _marginal_kind(marginal, "marginal")
    _check_similarities((critic_ab, critic_bc), kind)
    u = check_rows(critic_ab.encode_x(a), "a (encoded by critic_ab.encode_x)")
    v = check_rows(critic_bc.encode_y(c), "c (encoded by critic_bc.encode_y)")
    out_dtype = torch.promote_types(torch.promote_types(u.dtype, v.dtype), torch.float32)
    u, v = u.to(torch.float64), v.to(torch.float64)
    if kind == "sphere":
        result = _sphere_log_ratio(critic_ab, critic_bc, u, v, marginal, target)
    else:
        result = _gaussian_log_ratio(critic_ab, critic_bc, u, v, marginal, target)
    return result.to(out_dtype)


def resolve_marginal(marginal, bank_embeddings=None, *, critics=None, ridge=1e-6):
    r"""Turn a bridge's ``marginal=`` keyword into a distribution of B's representation.

    - ``"sphere"``: ``UniformSphere(d)`` with ``d`` the bank embedding dimension (cosine
      critics);
    - ``"gaussian"``: :math:`\mathcal N(\hat m, \hat S + \epsilon I)` fitted to the bank
      embeddings (sample mean, unbiased covariance, and a ridge :math:`\epsilon` equal to
      ``ridge`` times the mean variance, so that the fit is positive definite even for
      M ≤ d);
    - a ``MultivariateNormal``, ``UniformSphere`` or ``VonMisesFisher`` is checked and
      passed through.

    :param marginal: ``"sphere"``, ``"gaussian"`` or a distribution with batch shape ``()``.
    :param Tensor bank_embeddings: (M, d) representations of the bridge bank (required for
        strings; checks the dimension of a distribution).
    :param critics: optional ``(critic_ab, critic_bc)`` checked against the marginal.
    :param float ridge: relative ridge of the Gaussian fit.
    :returns: a distribution object (float64 parameters when fitted here).

    >>> resolve_marginal("gaussian", torch.randn(100, 3)).event_shape
    torch.Size([3])
    """
    if not isinstance(ridge, numbers.Real) or isinstance(ridge, bool) or not ridge >= 0:
        raise ValueError(f"ridge must be a non-negative number, got {ridge!r}")
    if bank_embeddings is not None:
        bank_embeddings = as_float_tensor(bank_embeddings, "bank_embeddings")
        check_rows(check_finite(bank_embeddings, "bank_embeddings"), "bank_embeddings")
    if isinstance(marginal, str):
        if marginal not in MARGINALS:
            raise ValueError(
                f"marginal must be one of {MARGINALS} or a distribution, got {marginal!r}"
            )
        if bank_embeddings is None:
            raise ValueError(f"marginal={marginal!r} needs bank_embeddings to fit it")
        if marginal == "sphere":
            from pyro_contrast.distributions.uniform_sphere import UniformSphere

            marginal = UniformSphere(bank_embeddings.shape[-1])
        else:
            marginal = _fit_gaussian(bank_embeddings, ridge)
    kind = _marginal_kind(marginal, "marginal")
    dim = marginal.event_shape[-1]
    if bank_embeddings is not None and bank_embeddings.shape[-1] != dim:
        raise ValueError(
            f"marginal has dimension {dim} but bank_embeddings have "
            f"{bank_embeddings.shape[-1]} columns"
        )
    if critics is not None:
        _check_similarities(critics, kind)
    return marginal


def bank_marginals(critics, z_left, z_right, marginal, target_bank=None):
    """``(marginal, target)`` for a bridge's ``method="analytic"``: the B marginal resolved
    from the bank as both critics embed it, and the C normalizer's Gaussian.

    A Gaussian fitted to ``target_bank`` (as the right critic embeds it) makes the analytic
    method the large-bank limit of the exact one; without it, or on the sphere, the C
    normalizer is taken as constant and ``target`` is None.
    """
    if z_left.shape != z_right.shape or not torch.allclose(z_left, z_right):
        raise ValueError(
            "method='analytic' needs both critics to embed the bank identically (a shared B "
            "representation)"
        )
    resolved = resolve_marginal(marginal, z_left, critics=critics)
    target = None
    # torch's class: a user's torch.distributions.MultivariateNormal counts too
    if target_bank is not None and isinstance(resolved, torch.distributions.MultivariateNormal):
        target = resolve_marginal("gaussian", critics[1].encode_y(target_bank))
    return resolved, target


def _fit_gaussian(embeddings, ridge):
    embeddings = embeddings.to(torch.float64)
    num, dim = embeddings.shape
    if num < 2:
        raise ValueError(f"marginal='gaussian' needs at least 2 bank embeddings, got {num}")
    loc = embeddings.mean(0)
    centred = embeddings - loc
    cov = centred.mT @ centred / (num - 1)
    scale = cov.diagonal().mean()
    if not scale > 0:
        raise ValueError("bank_embeddings have zero variance: cannot fit marginal='gaussian'")
    cov = 0.5 * (cov + cov.mT) + ridge * scale * torch.eye(dim, dtype=torch.float64)
    chol, info = torch.linalg.cholesky_ex(cov)
    if info != 0:
        raise ValueError("the fitted covariance is not positive definite: increase ridge")
    return MultivariateNormal(loc, scale_tril=chol)


def _marginal_kind(marginal, name):
    if isinstance(marginal, torch.distributions.MultivariateNormal):
        kind = "gaussian"
    elif isinstance(marginal, _sphere_classes()):
        kind = "sphere"
    else:
        raise TypeError(
            f"{name} must be a MultivariateNormal, UniformSphere or VonMisesFisher "
            f"(or 'sphere' / 'gaussian' via resolve_marginal), got "
            f"{type(marginal).__name__}"
        )
    if marginal.batch_shape != ():
        raise ValueError(f"{name} must have batch shape (), got {tuple(marginal.batch_shape)}")
    return kind


def _sphere_classes():
    # Imported lazily: the sphere distributions live in modules this one must not require.
    classes = []
    try:
        from pyro_contrast.distributions.uniform_sphere import UniformSphere

        classes.append(UniformSphere)
    except ImportError:
        pass
    try:
        from pyro_contrast.distributions.vmf import VonMisesFisher

        classes.append(VonMisesFisher)
    except ImportError:
        pass
    return tuple(classes)


def _check_similarities(critics, kind):
    allowed = ("cosine",) if kind == "sphere" else _GAUSSIAN_SIMILARITIES
    for name, critic in zip(("critic_ab", "critic_bc"), critics, strict=True):
        if critic.similarity not in allowed:
            hint = (
                "use marginal='gaussian' (dot, neg_sq_l2 or bilinear critics)"
                if kind == "sphere"
                else "use marginal='sphere' for cosine critics"
            )
            raise ValueError(
                f"{name} has similarity {critic.similarity!r}, which has no "
                f"closed form with a {kind} marginal; {hint}"
            )


def _gaussian_params(dist):
    return dist.loc.to(torch.float64), dist.scale_tril.to(torch.float64)


def _gaussian_log_ratio(critic_ab, critic_bc, u, v, marginal, target):
    loc, tril = _gaussian_params(marginal)
    dim = loc.shape[-1]
    form_ab = critic_form(critic_ab, torch.float64)
    form_bc = critic_form(critic_bc, torch.float64)
    dim_a = dim if form_ab[0] is None else form_ab[0].shape[0]
    dim_c = dim if form_bc[0] is None else form_bc[0].shape[1]
    if form_ab[0] is not None and form_ab[0].shape[1] != dim:
        raise ValueError(
            f"critic_ab.weight has shape {tuple(form_ab[0].shape)}, but the "
            f"marginal has dimension {dim}"
        )
    if form_bc[0] is not None and form_bc[0].shape[0] != dim:
        raise ValueError(
            f"critic_bc.weight has shape {tuple(form_bc[0].shape)}, but the "
            f"marginal has dimension {dim}"
        )
    _check_dim(u, dim_a, "a (encoded)")
    _check_dim(v, dim_c, "c (encoded)")
    if target is not None:
        if _marginal_kind(target, "target") != "gaussian":
            raise ValueError("target must be a MultivariateNormal for a Gaussian marginal")
        target = _gaussian_params(target)
        if target[0].shape[-1] != dim_c:
            raise ValueError(
                f"target has dimension {target[0].shape[-1]}, but C embeddings have {dim_c}"
            )
    return gaussian_log_ratio(u, v, form_ab, form_bc, loc, tril, target)


def _sphere_log_ratio(critic_ab, critic_bc, u, v, marginal, target):
    from pyro_contrast.distributions.uniform_sphere import UniformSphere
    from pyro_contrast.ops.bessel import log_hyp0f1_sphere

    dim = marginal.event_shape[-1]
    _check_dim(u, dim, "a (encoded)")
    _check_dim(v, dim, "c (encoded)")
    if target is not None and not (
        isinstance(target, UniformSphere) and target.event_shape == marginal.event_shape
    ):
        raise ValueError(
            "with a sphere marginal, target must be None or UniformSphere of the "
            "same dimension (other C laws have no closed-form normalizer)"
        )
    k1 = 1.0 / critic_ab.temperature.to(torch.float64)
    k2 = 1.0 / critic_bc.temperature.to(torch.float64)
    u, v = _normalize(u), _normalize(v)
    query = k1 * u
    if not isinstance(marginal, UniformSphere):
        query = query + marginal.concentration.to(torch.float64) * marginal.loc.to(torch.float64)
    query_sq = query.pow(2).sum(-1)
    joint_sq = query_sq.unsqueeze(-1) + k2.pow(2) + 2 * k2 * (query @ v.mT)
    # Rounding can push ||w||^2 a hair below zero when k1 u + k2 v nearly cancel; the tiny
    # floor also keeps the gradient finite there (L_d is flat at 0, sqrt is not).
    joint = joint_sq.clamp(min=torch.finfo(joint_sq.dtype).tiny).sqrt()
    return (
        log_hyp0f1_sphere(dim, joint)
        - log_hyp0f1_sphere(dim, query_sq.sqrt()).unsqueeze(-1)
        - log_hyp0f1_sphere(dim, k2)
    )


def _normalize(u):
    return u / u.norm(dim=-1, keepdim=True).clamp(min=torch.finfo(u.dtype).tiny ** 0.5)


def _check_dim(embeddings, dim, name):
    if embeddings.shape[-1] != dim:
        raise ValueError(
            f"{name} has dimension {embeddings.shape[-1]}, but the bridge "
            f"representation needs {dim}"
        )
