r"""Compare bridging methods against each other, a reference and the truth, with uncertainty.

Each method gives an ``(N, K)`` matrix of log-ratio scores ``log p(c_k|a_n) - log p(c_k)`` over
``K`` candidates for ``N`` queries. :func:`compare` turns them into a table of retrieval
metrics (against the known true candidates), agreement metrics (against a reference method
or the simulator's truth) and calibration of the log-ratios, each with a percentile
bootstrap interval over queries. The bootstrap is paired and vectorized: one set of
resampled query indices per replicate, shared by every method and metric, applied as a
``(replicates, N)`` count matrix, so the comparison of two methods sees the same queries.

**References**

1. B. Che, B. Eysenbach, "The 'Law' of the Unconscious Contrastive Learner: Probabilistic
   Alignment of Unpaired Modalities", ICLR 2025.
2. B. Efron, R. Tibshirani, "An Introduction to the Bootstrap", Chapman & Hall, 1993.
"""

from collections.abc import Mapping

import numpy as np

from pyro_contrast.studies import metrics as _metrics
from pyro_contrast.studies._arrays import check_positives, check_scores
from pyro_contrast.studies.result import ComparisonResult

AGREEMENT_METRICS = ("spearman", "kendall", "kl", "js", "top1_agreement")
CALIBRATION_METRICS = ("calibration_slope", "calibration_intercept", "calibration_r2")
_AGREEMENT_FUNCTIONS = {
    "spearman": _metrics.spearman,
    "kendall": _metrics.kendall,
    "kl": _metrics.kl_divergence,
    "js": _metrics.jensen_shannon,
    "top1_agreement": _metrics.top1_agreement,
}

__all__ = ["compare"]


def _check_options(ks, num_bootstrap, confidence, num_candidates):
    if isinstance(ks, int):
        ks = (ks,)
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) for k in ks):
        raise TypeError(f"ks must be positive integers, got {ks!r}")
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    if isinstance(num_bootstrap, bool) or not isinstance(num_bootstrap, (int, np.integer)):
        raise TypeError(f"num_bootstrap must be an integer, got {num_bootstrap!r}")
    if num_bootstrap < 0:
        raise ValueError(f"num_bootstrap must be >= 0, got {num_bootstrap}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return tuple(dict.fromkeys(int(k) for k in ks))


def _resample_counts(num_queries, num_bootstrap, seed):
    """``(B, N)`` counts: how often each query appears in each bootstrap replicate."""
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, num_queries, size=(num_bootstrap, num_queries))
    offsets = np.arange(num_bootstrap)[:, None] * num_queries
    counts = np.bincount((indices + offsets).ravel(), minlength=num_bootstrap * num_queries)
    return counts.reshape(num_bootstrap, num_queries).astype(np.float64)


def compare(
    scores_by_method,
    truth=None,
    positives=None,
    *,
    reference=None,
    ks=(1, 5),
    num_bootstrap=1000,
    confidence=0.95,
    seed=0,
    center_calibration=False,
    metrics=None,
):
    r"""Tabulate how well each method retrieves and how closely it follows a reference.

    Metrics (one row per method, each averaged over queries):

    - ``recall@k``: the true candidate is in the top ``k`` (needs ``positives``).
    - ``mrr``: mean reciprocal rank of the true candidate (needs ``positives``).
    - ``spearman``, ``kendall``: rank correlation with the reference over candidates.
    - ``kl``: :math:`\mathrm{KL}(p_\text{ref} \| p_\text{method})` and ``js``: Jensen–Shannon
      divergence between candidate conditionals :math:`p(c_k|a) = \mathrm{softmax}_k s_k`.
    - ``top1_agreement``: same best candidate as the reference.
    - ``calibration_slope``, ``calibration_intercept``, ``calibration_r2``: least-squares fit
      ``reference ≈ intercept + slope * scores`` over all (query, candidate) entries.

    Ties are broken at random in expectation; rank correlations skip queries where a row is
    constant. Each estimate comes with a percentile bootstrap interval over queries.

    :param dict scores_by_method: method name → ``(N, K)`` log-ratio scores.
    :param truth: optional ``(N, K)`` true log ratios; becomes the ``"truth"`` row and the
        default reference.
    :param positives: optional ``(N,)`` index of each query's true candidate.
    :param str reference: method compared against (default ``"truth"`` when given, else
        ``"exact"`` when present, else agreement metrics are left out).
    :param ks: cut-offs for ``recall@k``.
    :param int num_bootstrap: bootstrap replicates (0: no intervals).
    :param float confidence: coverage of the intervals.
    :param int seed: seed of the bootstrap resampling.
    :param bool center_calibration: fit within-query contrasts only (subtract each query's
        mean score), since a critic is defined up to a term in the query alone.
    :param metrics: optional subset of metric names to compute.
    :returns: :class:`ComparisonResult`.

    **References**

    1. B. Che, B. Eysenbach, "The 'Law' of the Unconscious Contrastive Learner", ICLR 2025.

    >>> scores = {"exact": np.array([[2.0, 0.0], [0.0, 1.0]]), "direct": np.zeros((2, 2))}
    >>> result = compare(scores, positives=np.array([0, 1]), ks=(1,), num_bootstrap=0)
    >>> float(result.estimate("direct", "recall@1"))
    0.5
    """
    if not isinstance(scores_by_method, Mapping) or not scores_by_method:
        raise TypeError("scores_by_method must be a non-empty dict of method name -> scores")
    scores, shape = {}, None
    if truth is not None:
        scores["truth"] = shape = check_scores(truth, "truth")
        shape = shape.shape
    for name, value in scores_by_method.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"method names must be non-empty strings, got {name!r}")
        if name in scores:
            raise ValueError(f"method name {name!r} is reserved for truth=")
        scores[name] = check_scores(value, f"scores of method {name!r}", shape)
        shape = scores[name].shape
    if positives is not None:
        positives = check_positives(positives, shape)
    if reference is None:
        reference = "truth" if truth is not None else ("exact" if "exact" in scores else None)
    elif reference not in scores:
        raise ValueError(f"unknown reference {reference!r}; methods are {sorted(scores)}")
    if reference is None and positives is None:
        raise ValueError("nothing to compare: give positives= or a reference method")
    ks = _check_options(ks, num_bootstrap, confidence, shape[1])
    names = [f"recall@{k}" for k in ks] + ["mrr"] if positives is not None else []
    if reference is not None:
        names += list(AGREEMENT_METRICS + CALIBRATION_METRICS)
    if metrics is not None:
        unknown = sorted(set(metrics) - set(names))
        if unknown:
            raise ValueError(f"unknown or unavailable metrics {unknown}; available: {names}")
        names = [n for n in names if n in set(metrics)]

    per_query, moments = {}, {}
    calibrate = any(name in CALIBRATION_METRICS for name in names)
    if calibrate:
        # shift by global means so the summed second moments do not cancel catastrophically
        ref_shift = scores[reference].mean()
    for method, value in scores.items():
        for name in names:
            if name.startswith("recall@"):
                per_query[method, name] = _metrics.recall_at_k(value, positives, int(name[7:]))
            elif name == "mrr":
                per_query[method, name] = _metrics.reciprocal_rank(value, positives)
            elif name in _AGREEMENT_FUNCTIONS:
                per_query[method, name] = _AGREEMENT_FUNCTIONS[name](scores[reference], value)
        if calibrate:
            shift = value.mean()
            moments[method] = (
                _metrics.calibration_moments(
                    scores[reference] - ref_shift, value - shift, center=center_calibration
                ),
                shift,
            )
    counts = _resample_counts(shape[0], num_bootstrap, seed)
    rows = _mean_rows(per_query, counts, confidence)
    for method, (moment, shift) in moments.items():
        # centered fits have no offset to undo
        shifts = (0.0, 0.0) if center_calibration else (shift, ref_shift)
        rows += _calibration_rows(method, moment, shifts, shape[1], counts, confidence, names)
    order = {name: i for i, name in enumerate(names)}
    method_order = {method: i for i, method in enumerate(scores)}
    rows.sort(key=lambda row: (method_order[row[0]], order[row[1]]))
    attrs = {
        "reference": reference,
        "num_queries": shape[0],
        "num_candidates": shape[1],
        "num_bootstrap": num_bootstrap,
        "confidence": confidence,
        "seed": seed,
        "ks": list(ks),
        "center_calibration": bool(center_calibration),
    }
    return ComparisonResult.from_rows(rows, attrs=attrs)


def _interval(replicates, confidence):
    if replicates.shape[-1] == 0:
        nan = np.full(replicates.shape[:-1], np.nan)
        return nan, nan
    alpha = (1 - confidence) / 2
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(replicates).any(axis=-1)
        safe = np.where(valid[..., None], replicates, 0.0)
        lower, upper = np.nanquantile(safe, [alpha, 1 - alpha], axis=-1)
    return np.where(valid, lower, np.nan), np.where(valid, upper, np.nan)


def _mean_rows(per_query, counts, confidence):
    if not per_query:
        return []
    keys = list(per_query)
    values = np.stack([per_query[key] for key in keys])  # (P, N)
    mask = np.isfinite(values)
    filled = np.where(mask, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimates = filled.sum(1) / mask.sum(1)
        replicates = (filled @ counts.T) / (mask.astype(np.float64) @ counts.T)  # (P, B)
    lower, upper = _interval(replicates, confidence)
    return [(*key, estimates[i], lower[i], upper[i]) for i, key in enumerate(keys)]


def _calibration_rows(method, moment, shifts, num_candidates, counts, confidence, names):
    shift, ref_shift = shifts
    full = _metrics.calibration_from_moments(moment.sum(0), moment.shape[0] * num_candidates)
    boot = _metrics.calibration_from_moments(counts @ moment, counts.sum(1) * num_candidates)
    rows = []
    for name, estimate, replicates in zip(CALIBRATION_METRICS, full, boot, strict=True):
        if name == "calibration_intercept":
            # undo the shifts: y = ref_shift + a + b (x - shift)
            slope, slopes = full[0], boot[0]
            estimate = estimate + ref_shift - slope * shift
            replicates = replicates + ref_shift - slopes * shift
        if name in names:
            lower, upper = _interval(np.asarray(replicates)[None], confidence)
            rows.append((method, name, float(estimate), lower[0], upper[0]))
    return rows
