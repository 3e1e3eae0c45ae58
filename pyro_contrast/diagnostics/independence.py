r"""Is A independent of C given B? (partial canonical correlations, Bartlett's test)"""

import torch
from scipy import stats

from pyro_contrast.diagnostics._result import DiagnosticResult, as_matrix

# A residual column whose norm is below this fraction of its raw norm is (numerically) a
# linear function of the conditioning set and the other columns.
_RANK_TOLERANCE = 1e-8


def conditional_independence(a, c, b):
    r"""Test :math:`A \perp C \mid B` from paired triplets under a linear-Gaussian model.

    Bridging (:ref:`math-bridge`) rests on :math:`A \perp C \mid B`. Given triplets
    :math:`(a_i, b_i, c_i)`, regress :math:`a` and :math:`c` on :math:`[1, b]` by least
    squares and test whether the residuals are uncorrelated: with :math:`\rho_j` the
    canonical correlations between the two residual blocks (the partial canonical
    correlations of A and C given B), Bartlett's statistic for Wilks'
    :math:`\Lambda = \prod_j (1 - \rho_j^2)` is

    .. math::

        -\left(n - r - 1 - \tfrac{p + q + 1}{2}\right) \sum_j \log(1 - \rho_j^2)
        \;\to\; \chi^2_{pq},

    with :math:`p, q, r` the dimensions of A, C, B. The test is exact-ish (Bartlett's
    correction) when :math:`(A, B, C)` is jointly Gaussian — as in the linear-Gaussian chain
    (:ref:`math-linear-gaussian`), where a hidden confounder shared by A and C is precisely what
    it detects.
    Otherwise it tests only that the *linear* dependence of A and C is explained by B
    (conditional means linear in B, finite fourth moments); nonlinear dependence on B, or a
    nonlinear A–C link, can go unseen. Apply it to embeddings of moderate dimension:
    :math:`n` must exceed :math:`p + q + r + 2`.

    References:

    1. Bartlett (1939), *A note on tests of significance in multivariate analysis*, Proc.
       Camb. Phil. Soc. 35.
    2. Anderson (2003), *An Introduction to Multivariate Statistical Analysis*, 3rd ed.,
       §12.4 (canonical correlations) and §9 (testing independence of sets of variates).

    :param Tensor a: ``(n, p)`` (or ``(n,)``) samples of A.
    :param Tensor c: ``(n, q)`` (or ``(n,)``) samples of C, paired with ``a``.
    :param Tensor b: ``(n, r)`` (or ``(n,)``) samples of B, paired with both.
    :returns: a :class:`DiagnosticResult`; ``details["canonical_correlations"]`` holds the
        :math:`\rho_j` (descending).

    >>> b = torch.randn(200, 2)
    >>> a, c = b + torch.randn(200, 2), b - torch.randn(200, 2)
    >>> conditional_independence(a, c, b).dof
    4
    """
    a = as_matrix(a, "a")
    c = as_matrix(c, "c")
    b = as_matrix(b, "b")
    n = a.shape[0]
    if c.shape[0] != n or b.shape[0] != n:
        raise ValueError(
            f"a, c and b must be paired (same number of rows), got {a.shape[0]}, {c.shape[0]} "
            f"and {b.shape[0]}"
        )
    p, q, r = a.shape[1], c.shape[1], b.shape[1]
    factor = n - r - 1 - (p + q + 1) / 2
    if n - r - 1 < p + q + 1 or factor <= 0:
        raise ValueError(
            f"conditional_independence needs n > p + q + r + 2 samples (n={n}, dims of a, c, "
            f"b = {p}, {q}, {r}); reduce the dimensions (e.g. PCA) or add samples"
        )
    design = torch.cat([torch.ones(n, 1, dtype=b.dtype), b], dim=1)
    basis_b = _orthonormal(design, "b")
    basis_a = _orthonormal(_residual(a, basis_b, "a"), "a (after regressing on b)")
    basis_c = _orthonormal(_residual(c, basis_b, "c"), "c (after regressing on b)")
    rho = torch.linalg.svdvals(basis_a.T @ basis_c).clamp(max=1.0)
    # log1p(-rho^2) keeps the weak correlations of a true null accurate
    log_lambda = float(torch.log1p(-rho.pow(2)).sum()) if float(rho.max()) < 1 else -float("inf")
    statistic = -factor * log_lambda
    dof = p * q
    return DiagnosticResult(
        name="conditional_independence",
        statistic=statistic,
        p_value=float(stats.chi2.sf(statistic, dof)),
        dof=dof,
        details={"canonical_correlations": rho},
    )


def _residual(x, basis, name):
    residual = x - basis @ (basis.T @ x)
    scale = x.norm(dim=0).clamp(min=torch.finfo(x.dtype).tiny)
    if bool((residual.norm(dim=0) <= _RANK_TOLERANCE * scale).any()):
        raise ValueError(
            f"{name} has a column that is constant or an exact linear function of b: its "
            "partial correlation with c is undefined (drop that dimension)"
        )
    return residual


def _orthonormal(x, name):
    q, r = torch.linalg.qr(x)
    diag = torch.diagonal(r).abs()
    scale = x.norm(dim=0).clamp(min=torch.finfo(x.dtype).tiny)
    if bool((diag <= _RANK_TOLERANCE * scale).any()):
        raise ValueError(
            f"{name} has linearly dependent or constant columns: the test needs full-rank "
            "blocks (drop redundant dimensions)"
        )
    return q
