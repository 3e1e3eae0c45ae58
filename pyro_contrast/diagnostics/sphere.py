r"""Is a set of unit vectors uniform on the sphere? (Rayleigh and Bingham tests)"""

from scipy import stats

from pyro_contrast.diagnostics._result import DiagnosticResult, as_matrix, combine_tests

# Rows whose norm is this far from one are "not unit": float32 embeddings that were
# normalized carry errors near 1e-7, far below it.
_UNIT_TOLERANCE = 1e-4


def sphere_uniformity(z, *, normalize=True, combine="bonferroni"):
    r"""Test whether unit vectors :math:`z_1, \dots, z_n \in S^{d-1}` are uniformly distributed.

    The uniform-sphere bridge (:ref:`math-sphere-bridge`) is the assumption under which the direct
    cosine
    shortcut ranks candidates exactly like the bridged answer. Two complementary tests, both
    valid in high dimension, look at the first two moments, which uniformity fixes at
    :math:`\mathbb E z = 0` and :math:`\mathbb E z z^\top = I/d`:

    - **Rayleigh** (mean direction; catches a preferred direction such as a von Mises–Fisher
      cloud): :math:`S = n d \lVert \bar z \rVert^2 \to \chi^2_d`. The modified statistic
      :math:`S^* = (1 - \tfrac{1}{2n}) S + S^2 / (2n(d+2))` is :math:`\chi^2_d` up to
      :math:`O(n^{-2})` (Mardia & Jupp, 2000, §10.4.1), good from :math:`n \approx 5`.
    - **Bingham** (second moment; catches axial or clustered structure that a zero mean
      hides): with :math:`T = \tfrac1n \sum_i z_i z_i^\top`,
      :math:`B = \tfrac{n d (d+2)}{2} (\operatorname{tr} T^2 - \tfrac1d) \to
      \chi^2_{(d-1)(d+2)/2}`. Its exact null mean is the degrees of freedom and its exact
      variance is :math:`\tfrac{n-1}{n}` times theirs (a degenerate U-statistic), so
      the deviation is rescaled by :math:`\sqrt{n/(n-1)}` before the :math:`\chi^2` tail is
      read.

    The two are combined by Bonferroni (default) or Fisher's method (they are asymptotically
    independent under uniformity: odd and even moments). Rows that are not unit-norm are
    normalized (a cosine critic does the same) and the result says so in ``notes``; pass
    ``normalize=False`` to get an error instead.

    References:

    1. Mardia & Jupp (2000), *Directional Statistics*, §10.4 (Rayleigh, Bingham tests).
    2. Bingham (1974), *An antipodally symmetric distribution on the sphere*, Ann. Statist.

    :param Tensor z: ``(n, d)`` vectors, ``n >= 2``, ``d >= 2``.
    :param bool normalize: normalize rows that are not unit-norm (else raise ``ValueError``).
    :param str combine: ``"bonferroni"`` or ``"fisher"``.
    :returns: a :class:`DiagnosticResult` whose ``tests`` hold ``"rayleigh"`` and
        ``"bingham"``.

    >>> import torch
    >>> z = torch.nn.functional.normalize(torch.randn(200, 16), dim=-1)
    >>> sphere_uniformity(z).tests["rayleigh"].dof
    16
    """
    z = as_matrix(z, "z", min_rows=2, min_cols=2)
    notes = []
    norms = z.norm(dim=-1)
    if (norms == 0).any():
        row = int((norms == 0).nonzero()[0])
        raise ValueError(f"z has a zero row (row {row}): it has no direction on the sphere")
    deviation = float((norms - 1).abs().max())
    if deviation > _UNIT_TOLERANCE:
        if not normalize:
            raise ValueError(
                f"z rows must be unit-norm (max |norm - 1| = {deviation:.3g}); pass "
                "normalize=True to project them onto the sphere"
            )
        notes.append(f"rows were normalized (max |norm - 1| was {deviation:.3g})")
    z = z / norms.unsqueeze(-1)
    tests = {"rayleigh": _rayleigh(z), "bingham": _bingham(z)}
    return combine_tests("sphere_uniformity", tests, combine, notes)


def _rayleigh(z):
    n, d = z.shape
    s = n * d * float(z.mean(0).pow(2).sum())
    modified = (1 - 1 / (2 * n)) * s + s * s / (2 * n * (d + 2))
    return DiagnosticResult(
        name="rayleigh",
        statistic=modified,
        p_value=float(stats.chi2.sf(modified, d)),
        dof=d,
    )


def _bingham(z):
    n, d = z.shape
    # tr(T^2) = ||Z^T Z||_F^2 / n^2 = ||Z Z^T||_F^2 / n^2: use the smaller Gram matrix
    gram = z @ z.T if n <= d else z.T @ z
    trace_t2 = float(gram.pow(2).sum()) / n**2
    dof = (d - 1) * (d + 2) / 2
    raw = n * d * (d + 2) / 2 * (trace_t2 - 1 / d)
    statistic = dof + (raw - dof) * (n / (n - 1)) ** 0.5
    return DiagnosticResult(
        name="bingham",
        statistic=statistic,
        p_value=float(stats.chi2.sf(statistic, dof)),
        dof=dof,
    )
