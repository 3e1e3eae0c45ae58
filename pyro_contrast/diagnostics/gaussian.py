r"""Is a cloud of representations Gaussian, and is it isotropic? (Mardia, Srivastava)"""

import math

import torch
from scipy import stats

from pyro_contrast.diagnostics._result import (
    DiagnosticResult,
    as_matrix,
    check_count,
    combine_tests,
    make_generator,
)

# Simulated null data sets per batch of the Monte Carlo calibration (bounds the
# batch x n x n Gram tensor).
_MAX_BATCH_ELEMENTS = 2**24


def gaussianity(z, *, combine="bonferroni", num_simulations=None, generator=None):
    r"""Test whether rows of ``z`` are draws from a multivariate normal (Mardia's tests).

    The Gaussian bridge (:ref:`math-gaussian-bridge`) is the assumption under which the dot and
    squared-L2
    shortcuts have a closed form. With :math:`S` the (biased) sample covariance and
    :math:`g_{ij} = (z_i - \bar z)^\top S^{-1} (z_j - \bar z)`:

    - **skewness** :math:`b_1 = n^{-2} \sum_{ij} g_{ij}^3`; with Mardia's small-sample
      factor :math:`k = \frac{(d+1)(n+1)(n+3)}{n((n+1)(d+1) - 6)}`,
      :math:`n k b_1 / 6 \to \chi^2_{d(d+1)(d+2)/6}` (it has the exact null mean);
    - **kurtosis** :math:`b_2 = n^{-1} \sum_i g_{ii}^2`, standardized with its exact null
      mean :math:`d(d+2)(n-1)/(n+1)` and variance
      :math:`8d(d+2)(n-3)(n-d-1)(n-d+1) / ((n+1)^2(n+3)(n+5))`, two-sided normal.

    Both statistics are affine invariant, so under normality their law depends only on
    :math:`(n, d)`: with ``num_simulations`` the p-values are exact Monte Carlo p-values
    from standard normal data sets instead of the asymptotic ones (the skewness
    :math:`\chi^2` is somewhat liberal, about 0.06 at level 0.05 for :math:`n = 200`).
    The components are combined by Bonferroni (default) or Fisher.

    References:

    1. Mardia (1970), *Measures of multivariate skewness and kurtosis with applications*,
       Biometrika 57.
    2. Mardia (1974), *Applications of some measures of multivariate skewness and kurtosis in
       testing normality and robustness studies*, Sankhyā B 36.

    :param Tensor z: ``(n, d)`` samples with ``n > d + 1`` and a non-singular covariance.
    :param str combine: ``"bonferroni"`` or ``"fisher"``.
    :param int num_simulations: if given, Monte Carlo p-values from this many null data sets.
    :param generator: ``torch.Generator`` or int seed for the simulations.
    :returns: a :class:`DiagnosticResult` whose ``tests`` hold ``"skewness"`` and
        ``"kurtosis"``.

    >>> gaussianity(torch.randn(100, 3)).tests["skewness"].dof
    10.0
    """
    z = as_matrix(z, "z", min_rows=3)
    n, d = z.shape
    if n <= d + 1:
        raise ValueError(
            f"gaussianity needs more samples than dimensions + 1 (z has n={n}, d={d}): the "
            "sample covariance is singular; subsample dimensions or add samples"
        )
    b1, b2 = _mardia(z.unsqueeze(0), "z")
    b1, b2 = float(b1), float(b2)
    factor = (d + 1) * (n + 1) * (n + 3) / (n * ((n + 1) * (d + 1) - 6))
    skew_stat = n * factor * b1 / 6
    dof = d * (d + 1) * (d + 2) / 6
    mean = d * (d + 2) * (n - 1) / (n + 1)
    var = 8 * d * (d + 2) * (n - 3) * (n - d - 1) * (n - d + 1) / ((n + 1) ** 2 * (n + 3) * (n + 5))
    kurt_stat = (b2 - mean) / math.sqrt(var)
    notes = []
    if num_simulations is None:
        skew_p = float(stats.chi2.sf(skew_stat, dof))
        kurt_p = float(2 * stats.norm.sf(abs(kurt_stat)))
    else:
        check_count(num_simulations, "num_simulations")
        sim_b1, sim_b2 = _simulate(n, d, num_simulations, make_generator(generator))
        sim_kurt = ((sim_b2 - mean) / math.sqrt(var)).abs()
        # (1 + #exceedances) / (1 + B) is an exact-level Monte Carlo p-value
        skew_p = (1 + int((sim_b1 >= b1).sum())) / (1 + num_simulations)
        kurt_p = (1 + int((sim_kurt >= abs(kurt_stat)).sum())) / (1 + num_simulations)
        notes.append(f"Monte Carlo p-values from {num_simulations} normal data sets")
    tests = {
        "skewness": DiagnosticResult(
            name="mardia_skewness", statistic=skew_stat, p_value=skew_p, dof=dof
        ),
        "kurtosis": DiagnosticResult(name="mardia_kurtosis", statistic=kurt_stat, p_value=kurt_p),
    }
    return combine_tests("gaussianity", tests, combine, notes)


def isotropy(z):
    r"""Test whether the covariance of ``z`` is a multiple of the identity (sphericity).

    :ref:`math-gaussian-bridge`: for a Gaussian bridge the direct dot or squared-L2 shortcut needs
    :math:`\Sigma = \sigma^2 I`. Srivastava's test compares the unbiased estimates
    :math:`\hat a_1 = \operatorname{tr} S / d` and
    :math:`\hat a_2 = \frac{m^2}{(m-1)(m+2)} \frac1d (\operatorname{tr} S^2 -
    (\operatorname{tr} S)^2 / m)` (with :math:`m = n - 1`) of :math:`\operatorname{tr}
    \Sigma^i / d`; :math:`\hat a_2 / \hat a_1^2 = 1` exactly when :math:`\Sigma \propto I`, and
    :math:`\frac m2 (\hat a_2 / \hat a_1^2 - 1) \to \mathcal N(0, 1)` under normality as
    :math:`n, d \to \infty` in any proportion, so it also works for :math:`d > n` (where
    John's :math:`\chi^2` test over-rejects). One-sided: anisotropy increases the ratio.

    References:

    1. Srivastava (2005), *Some tests concerning the covariance matrix in high dimensional
       data*, J. Japan Statist. Soc. 35.
    2. Ledoit & Wolf (2002), *Some hypothesis tests for the covariance matrix when the
       dimension is large compared to the sample size*, Ann. Statist. 30.

    :param Tensor z: ``(n, d)`` samples, ``n >= 3``, ``d >= 2``.
    :returns: a :class:`DiagnosticResult` with the standard-normal statistic, and the
        ratio :math:`\hat a_2 / \hat a_1^2` in ``details["sphericity_ratio"]``.

    >>> isotropy(torch.randn(100, 4)).name
    'isotropy'
    """
    z = as_matrix(z, "z", min_rows=3, min_cols=2)
    n, d = z.shape
    m = n - 1
    centered = z - z.mean(0)
    gram = centered @ centered.T if n <= d else centered.T @ centered
    trace_s = float(centered.pow(2).sum()) / m
    if trace_s <= 0:
        raise ValueError("z has zero variance: isotropy is undefined for a constant sample")
    trace_s2 = float(gram.pow(2).sum()) / m**2
    a1 = trace_s / d
    a2 = m**2 / ((m - 1) * (m + 2)) * (trace_s2 - trace_s**2 / m) / d
    ratio = a2 / a1**2
    statistic = m / 2 * (ratio - 1)
    return DiagnosticResult(
        name="isotropy",
        statistic=statistic,
        p_value=float(stats.norm.sf(statistic)),
        details={"sphericity_ratio": ratio},
    )


def _mardia(z, name):
    """Mardia's :math:`b_1, b_2` of a batch ``(B, n, d)``, each of shape (B,)."""
    n = z.shape[-2]
    centered = z - z.mean(-2, keepdim=True)
    cov = centered.transpose(-1, -2) @ centered / n
    chol, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        raise ValueError(f"{name} has a singular sample covariance (collinear or constant columns)")
    white = torch.linalg.solve_triangular(chol, centered.transpose(-1, -2), upper=False)
    gram = white.transpose(-1, -2) @ white
    b1 = gram.pow(3).sum((-1, -2)) / n**2
    b2 = torch.diagonal(gram, dim1=-2, dim2=-1).pow(2).mean(-1)
    return b1, b2


def _simulate(n, d, num_simulations, generator):
    batch = max(1, min(num_simulations, _MAX_BATCH_ELEMENTS // (n * max(n, d))))
    b1, b2 = [], []
    for start in range(0, num_simulations, batch):
        size = min(batch, num_simulations - start)
        sample = torch.randn(size, n, d, generator=generator, dtype=torch.float64)
        s1, s2 = _mardia(sample, "simulated normal data")
        b1.append(s1)
        b2.append(s2)
    return torch.cat(b1), torch.cat(b2)
