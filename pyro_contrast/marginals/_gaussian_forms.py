r"""Gaussian integrals behind the analytic bridge with a Gaussian representation marginal.

Every critic with similarity ``"dot"``, ``"neg_sq_l2"`` or ``"bilinear"`` is written as

.. math::

    f(x, y) = \frac{x^\top B y}{T} - \frac{q}{2}\left(\lVert x\rVert^2 + \lVert y\rVert^2\right)
    + \beta,

with :math:`B = I, q = 0` (dot), :math:`B = I, q = 1/T` (neg_sq_l2) or :math:`B = W, q = 0`
(bilinear). As a function of the bridge representation :math:`z` every term is then
log-quadratic, and the bridge integral is one Gaussian integral

.. math::

    \Phi(\eta, \Lambda) = \log \mathbb E_{z \sim \mathcal N(m, S)}
    e^{\eta^\top z - \frac12 z^\top \Lambda z}
    = \eta^\top m - \tfrac12 m^\top \Lambda m - \tfrac12 \log\det(I + L^\top \Lambda L)
    + \tfrac12 \lVert R^{-1} L^\top (\eta - \Lambda m)\rVert^2,

with :math:`S = L L^\top` and :math:`I + L^\top \Lambda L = R R^\top` (eigenvalues
:math:`\ge 1`, so the factorization is always well conditioned; :math:`S` is never inverted).
"""

import torch


def critic_form(critic, dtype):
    """``(B, T, q)`` of a critic: bilinear map (dim_x, dim_y), temperature, quadratic weight."""
    temperature = critic.temperature.to(dtype)
    if critic.similarity == "bilinear":
        return critic.weight.to(dtype), temperature, None
    quad = 1.0 / temperature if critic.similarity == "neg_sq_l2" else None
    return None, temperature, quad


def log_mgf_pairwise(p, q, loc, scale_tril, precision):
    r"""``out[n, k] = Phi(p[n] + q[k], precision)`` under :math:`\mathcal N(loc, L L^\top)`.

    The sum splits into a row term, a column term and one (N, d) x (d, K) product, so the
    cost is :math:`O(d^3 + (N + K) d^2 + N K d)`.
    """
    dim = loc.shape[-1]
    eye = torch.eye(dim, dtype=loc.dtype)
    inner = eye + scale_tril.mT @ precision @ scale_tril
    inner_tril = torch.linalg.cholesky(0.5 * (inner + inner.mT))
    # whiten = R^{-1} L^T, so that ||whiten g||^2 = g^T (S^{-1} + Lambda)^{-1} g
    whiten = torch.linalg.solve_triangular(inner_tril, scale_tril.mT, upper=False)
    shift = precision @ loc
    p_white = (p - shift) @ whiten.mT
    q_white = q @ whiten.mT
    row = p @ loc + 0.5 * p_white.pow(2).sum(-1)
    col = q @ loc + 0.5 * q_white.pow(2).sum(-1)
    constant = -0.5 * (loc @ shift) - inner_tril.diagonal().log().sum()
    return row.unsqueeze(-1) + col + p_white @ q_white.mT + constant


def gaussian_log_ratio(u, v, form_ab, form_bc, loc, scale_tril, target=None):
    r"""PMI of the tilted A–B–C model with :math:`z \sim \mathcal N(m, S)`, shape (N, K).

    ``u`` (N, d_a) and ``v`` (K, d_c) are the A and C embeddings, ``form_*`` from
    :func:`critic_form`. With ``target = (m_c, L_c)`` (C's representation ~
    :math:`\mathcal N(m_c, L_c L_c^\top)`) the C normalizer :math:`Z_C(z)` is exact;
    otherwise it is taken as constant and left out (the result is PMI + log Z_C).
    """
    dtype = loc.dtype
    weight_ab, temp_ab, quad_ab = form_ab
    weight_bc, temp_bc, quad_bc = form_bc
    dim = loc.shape[-1]
    eye = torch.eye(dim, dtype=dtype)
    lin_a = (u if weight_ab is None else u @ weight_ab) / temp_ab
    lin_c = (v if weight_bc is None else v @ weight_bc.mT) / temp_bc
    q_a = 0.0 if quad_ab is None else quad_ab
    v_const = 0.0 if quad_bc is None else -0.5 * quad_bc * v.pow(2).sum(-1)
    if target is None:
        q_c = 0.0 if quad_bc is None else quad_bc
        precision = (q_a + q_c) * eye
        shift = torch.zeros(dim, dtype=dtype)
        gamma = torch.zeros((), dtype=dtype)
    else:
        precision, shift, gamma = _target_terms(target, weight_bc, temp_bc, quad_bc, dim)
        precision = precision + q_a * eye
    joint = log_mgf_pairwise(lin_a, lin_c - shift, loc, scale_tril, precision)
    query = log_mgf_pairwise(lin_a, lin_a.new_zeros(1, dim), loc, scale_tril, q_a * eye)
    return joint - query + (v_const - gamma)


def _target_terms(target, weight_bc, temp_bc, quad_bc, dim):
    r"""Quadratic, linear and constant parts of :math:`\log Z_C(z)` minus the f_BC z-term.

    With :math:`\tilde\Sigma = S_c (I + q S_c)^{-1}` and :math:`\tilde m = (I + q S_c)^{-1}
    m_c`: :math:`\log Z_C(z) = -\frac q2 \lVert z\rVert^2 + \frac{1}{2T^2} z^\top B
    \tilde\Sigma B^\top z + z^\top B \tilde m / T - \frac q2 m_c^\top \tilde m -
    \frac12 \log\det(I + q S_c)`.
    """
    loc_c, tril_c = target
    q = 0.0 if quad_bc is None else quad_bc
    eye_c = torch.eye(loc_c.shape[-1], dtype=loc_c.dtype)
    inner = eye_c + q * (tril_c.mT @ tril_c)
    inner_tril = torch.linalg.cholesky(0.5 * (inner + inner.mT))
    half = torch.linalg.solve_triangular(inner_tril, tril_c.mT, upper=False)  # Σ̃ = halfᵀ half
    shrunk_loc = loc_c - q * (half.mT @ (half @ loc_c))
    mapped = half if weight_bc is None else half @ weight_bc.mT  # (d_c, d_z)
    precision = mapped.mT @ mapped / temp_bc.pow(2)
    shift = (shrunk_loc if weight_bc is None else weight_bc @ shrunk_loc) / temp_bc
    gamma = -0.5 * q * (loc_c @ shrunk_loc) - inner_tril.diagonal().log().sum()
    if precision.shape != (dim, dim):
        raise ValueError(
            f"target has dimension {loc_c.shape[-1]}, incompatible with the B–C critic"
        )
    return precision, shift, gamma
