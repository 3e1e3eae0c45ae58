r"""Compare bridging methods against each other, a reference and the truth, with uncertainty.

Each method gives an ``(N, K)`` matrix of log-ratio scores ``log p(c_k|a_n) - log p(c_k)`` over
``K`` candidates for ``N`` queries. :func:`compare` turns them into a table of retrieval
metrics (against the known true candidates), agreement metrics (against a reference method
or the simulator's truth) and calibration of the log-ratios, each with a percentile
bootstrap interval over queries. The bootstrap is paired and vectorized: one set of
resampled query indices per replicate, shared by every method and metric, applied block by
block as a ``(replicates, N)`` count matrix, so the comparison of two methods sees the same
queries.

**References**

1. B. Che, B. Eysenbach, "The 'Law' of the Unconscious Contrastive Learner: Probabilistic
   Alignment of Unpaired Modalities", ICLR 2025.
2. B. Efron, R. Tibshirani, "An Introduction to the Bootstrap", Chapman & Hall, 1993.
"""

import functools
import warnings
from collections.abc import Mapping

import numpy as np

from pyro_contrast.studies import metrics as _metrics
from pyro_contrast.studies._arrays import check_positives, check_scores
from pyro_contrast.studies.result import ComparisonResult

AGREEMENT_METRICS = ("spearman", "kendall", "kl", "js", "top1_agreement")
CALIBRATION_METRICS = ("calibration_slope", "calibration_intercept", "calibration_r2")
# Centred per query the intercept is 0 by construction: not reported.
_CENTERED_CALIBRATION = ("calibration_slope", "calibration_r2")
_AGREEMENT_FUNCTIONS = {
    "spearman": _metrics.spearman,
    "kendall": _metrics.kendall,
    "kl": _metrics.kl_divergence,
    "js": _metrics.jensen_shannon,
    "top1_agreement": _metrics.top1_agreement,
}

# The most bootstrap replicates compare() accepts: 1e5 already resolves a 95% interval's
# endpoints to far better than their own sampling error; more is a typo, not a wish.
MAX_BOOTSTRAP = 100_000
DEFAULT_KS = (1, 5)
# Replicates per block of the bootstrap: bounds the (block, N) count matrix at ~32 MB.
_BOOTSTRAP_ENTRIES = 2**22

__all__ = ["MAX_BOOTSTRAP", "compare"]


def _check_ks(ks, num_candidates):
    if ks is None:
        # recall@K is 1 for every method: keep only the informative default cut-offs
        return tuple(k for k in DEFAULT_KS if k < num_candidates) or (1,)
    if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool):
        ks = (ks,)
    try:
        ks = tuple(ks)
    except TypeError:
        raise TypeError(f"ks must be positive integers, got {ks!r}") from None
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) for k in ks):
        raise TypeError(f"ks must be positive integers, got {ks!r}")
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    if any(k > num_candidates for k in ks):
        raise ValueError(
            f"ks must be at most the number of candidates ({num_candidates}), got {ks!r}"
        )
    return tuple(dict.fromkeys(int(k) for k in ks))


def _check_bootstrap(num_bootstrap, confidence):
    if isinstance(num_bootstrap, bool) or not isinstance(num_bootstrap, (int, np.integer)):
        raise TypeError(f"num_bootstrap must be an integer, got {num_bootstrap!r}")
    if not 0 <= num_bootstrap <= MAX_BOOTSTRAP:
        raise ValueError(f"num_bootstrap must be in [0, {MAX_BOOTSTRAP}], got {num_bootstrap}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return int(num_bootstrap)


def _resample_blocks(num_queries, num_bootstrap, seed):
    """Yield ``(b, N)`` counts, blocks of replicates: how often each query appears in each."""
    rng = np.random.default_rng(seed)
    block = max(1, _BOOTSTRAP_ENTRIES // num_queries)
    for start in range(0, num_bootstrap, block):
        size = min(block, num_bootstrap - start)
        indices = rng.integers(0, num_queries, size=(size, num_queries))
        offsets = np.arange(size)[:, None] * num_queries
        counts = np.bincount((indices + offsets).ravel(), minlength=size * num_queries)
        yield counts.reshape(size, num_queries).astype(np.float64)


def _legacy_positionals(function):
    """Accept the 0.1 call ``compare(scores, truth, positives)`` for one more release."""

    @functools.wraps(function)
    def wrapper(scores_by_method, *args, **kwargs):
        if args:
            if len(args) > 2:
                raise TypeError(
                    f"compare() takes 1 positional argument (scores_by_method); got {1 + len(args)}"
                )
            warnings.warn(
                "compare(scores, truth, positives) with positional truth/positives is "
                "deprecated; pass them by keyword: compare(scores, truth=..., positives=...)",
                DeprecationWarning,
                stacklevel=2,
            )
            for name, value in zip(("truth", "positives"), args, strict=False):
                if name in kwargs:
                    raise TypeError(f"compare() got multiple values for argument {name!r}")
                kwargs[name] = value
        return function(scores_by_method, **kwargs)

    return wrapper


@_legacy_positionals
def compare(
    scores_by_method,
    *,
    truth=None,
    positives=None,
    reference=None,
    ks=None,
    num_bootstrap=1000,
    confidence=0.95,
    seed=0,
    center_calibration=True,
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
    - ``calibration_slope``, ``calibration_r2``: least-squares fit
      ``reference ≈ intercept + slope * scores``. A critic is defined only up to a term in
      the query (its softmax over candidates ignores it), so by default each query's mean
      score is subtracted from both sides first and only within-query contrasts are fitted;
      with ``center_calibration=False`` the raw entries are fitted and
      ``calibration_intercept`` is reported too.

    Ties are broken at random in expectation; rank correlations skip queries where a row is
    constant. Each estimate comes with a percentile bootstrap interval over queries, paired
    across methods (every method sees the same resampled queries).

    ``truth`` and ``positives`` are keyword-only (the positional form of version 0.1,
    ``compare(scores, truth, positives)``, still works with a ``DeprecationWarning``).

    :param dict scores_by_method: method name → ``(N, K)`` log-ratio scores.
    :param truth: optional ``(N, K)`` true log ratios; becomes the ``"truth"`` column and the
        default reference.
    :param positives: optional ``(N,)`` index of each query's true candidate.
    :param str reference: method compared against (default ``"truth"`` when given, else
        ``"exact"`` when present, else agreement metrics are left out).
    :param ks: cut-offs for ``recall@k``, each at most ``K`` (default: 1 and 5, those below
        ``K``).
    :param int num_bootstrap: bootstrap replicates, at most :data:`MAX_BOOTSTRAP`
        (0: no intervals).
    :param float confidence: coverage of the intervals.
    :param int seed: seed of the bootstrap resampling.
    :param bool center_calibration: fit within-query contrasts only (default); ``False``
        fits the raw scores.
    :param metrics: optional subset of metric names to compute.
    :returns: :class:`~pyro_contrast.studies.result.ComparisonResult`.

    **References**

    1. B. Che, B. Eysenbach, "The 'Law' of the Unconscious Contrastive Learner", ICLR 2025.
    2. B. Efron, R. Tibshirani, "An Introduction to the Bootstrap", Chapman & Hall, 1993.

    >>> scores = {"exact": np.array([[2.0, 0.0], [0.0, 1.0]]), "direct": np.zeros((2, 2))}
    >>> result = compare(scores, positives=np.array([0, 1]), num_bootstrap=0)
    >>> float(result.estimate("direct", "recall@1"))
    0.5
    """
    if not isinstance(scores_by_method, Mapping) or not scores_by_method:
        raise TypeError("scores_by_method must be a non-empty dict of method name -> scores")
    num_bootstrap = _check_bootstrap(num_bootstrap, confidence)
    scores, shape = {}, None
    if truth is not None:
        scores["truth"] = check_scores(truth, "truth")
        shape = scores["truth"].shape
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
    ks = _check_ks(ks, shape[1])
    calibration = CALIBRATION_METRICS if not center_calibration else _CENTERED_CALIBRATION
    names = [f"recall@{k}" for k in ks] + ["mrr"] if positives is not None else []
    if reference is not None:
        names += list(AGREEMENT_METRICS + calibration)
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
            moment = _metrics.calibration_moments(
                scores[reference] - ref_shift, value - shift, center=center_calibration
            )
            # centered fits have no offset to undo
            moments[method] = (moment, (0.0, 0.0) if center_calibration else (shift, ref_shift))
    keys = list(per_query)
    values = np.stack([per_query[key] for key in keys]) if keys else np.zeros((0, shape[0]))
    mask = np.isfinite(values)
    filled = np.where(mask, values, 0.0)
    mean_blocks, calibration_blocks = [], {method: [] for method in moments}
    for counts in _resample_blocks(shape[0], num_bootstrap, seed):
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_blocks.append((filled @ counts.T) / (mask.astype(np.float64) @ counts.T))
        for method, (moment, _) in moments.items():
            calibration_blocks[method].append(counts @ moment)
    replicates = np.concatenate(mean_blocks, axis=1) if mean_blocks else None
    rows = _mean_rows(keys, filled, mask, replicates, confidence)
    for method, (moment, shifts) in moments.items():
        boot = calibration_blocks[method]
        boot = np.concatenate(boot) if boot else np.zeros((0, moment.shape[1]))
        rows += _calibration_rows(method, moment, boot, shifts, shape[1], confidence, names)
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
    if replicates is None or replicates.shape[-1] == 0:
        nan = np.full(replicates.shape[:-1] if replicates is not None else (), np.nan)
        return nan, nan
    alpha = (1 - confidence) / 2
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(replicates).any(axis=-1)
        safe = np.where(valid[..., None], replicates, 0.0)
        lower, upper = np.nanquantile(safe, [alpha, 1 - alpha], axis=-1)
    return np.where(valid, lower, np.nan), np.where(valid, upper, np.nan)


def _mean_rows(keys, filled, mask, replicates, confidence):
    if not keys:
        return []
    with np.errstate(invalid="ignore", divide="ignore"):
        estimates = filled.sum(1) / mask.sum(1)
    if replicates is None:
        replicates = np.zeros((len(keys), 0))
    lower, upper = _interval(replicates, confidence)
    return [(*key, estimates[i], lower[i], upper[i]) for i, key in enumerate(keys)]


def _calibration_rows(method, moment, boot_moments, shifts, num_candidates, confidence, names):
    shift, ref_shift = shifts
    # every replicate draws N queries, so it sums N * K entries
    count = moment.shape[0] * num_candidates
    full = _metrics.calibration_from_moments(moment.sum(0), count)
    boot = _metrics.calibration_from_moments(boot_moments, count)
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
