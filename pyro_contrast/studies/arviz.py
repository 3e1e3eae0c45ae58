r"""ArviZ export: each method's candidate conditional as a predictive model of held-out matches.

A method's scores :math:`s_{nk}` define the candidate conditional
:math:`p(c_k \mid a_n) = \mathrm{softmax}_k s_{nk}`; the held-out true pairs
:math:`(a_n, c_{y_n})` are its observations, with pointwise log-likelihood

.. math:: \log p(y_n \mid a_n) = s_{n y_n} - \log \sum_k \exp s_{nk}.

:func:`to_inference_data` stores it in the ``log_likelihood`` group (variable ``"match"``,
dims ``chain × draw × query``) so ``az.compare``, ``az.loo`` and ``az.waic`` rank methods by
expected log predictive density (ELPD) with standard errors.

**Semantics of deterministic methods.** A method without posterior samples is a point mass: its
leave-one-out predictive equals its plug-in predictive (no query was used to build it), so
its ELPD is exactly :math:`\sum_n \log p(y_n \mid a_n)` with no effective parameters. ArviZ
needs at least two draws (``az.loo`` raises ``IndexError`` on one), so the single draw is
stored twice. Both information criteria then return the exact value with ``p = 0``, but PSIS
cannot fit a Pareto tail to constant importance weights: ``az.loo`` reports
:math:`\hat k = \infty` and flags a warning although its estimate is exact. For deterministic
methods use ``ic="waic"`` (exact and warning-free here, variance penalty zero), which is what
:func:`compare_elpd` picks. With posterior samples ``(S, N, K)`` (e.g. scores under a
Bayesian bootstrap of the bank) they are the draws and PSIS-LOO applies as usual; when those
draws did not condition on the evaluation queries, LOO and WAIC subtract a small optimism
correction that is not needed, so they are slightly conservative.

**References**

1. A. Vehtari, A. Gelman, J. Gabry, "Practical Bayesian model evaluation using leave-one-out
   cross-validation and WAIC", Statistics and Computing 27, 2017.
2. B. Che, B. Eysenbach, "The 'Law' of the Unconscious Contrastive Learner: Probabilistic
   Alignment of Unpaired Modalities", ICLR 2025.
"""

import warnings
from collections.abc import Mapping

import numpy as np
from scipy.special import log_softmax

from pyro_contrast.studies._arrays import as_numpy, check_positives, check_scores

_DETERMINISTIC_DRAWS = 2  # the fewest draws az.loo accepts

__all__ = ["compare_elpd", "to_inference_data"]


def _check_samples(value, name, shape):
    value = as_numpy(value, name)
    if value.ndim != 3:
        raise ValueError(f"{name} must have shape (S, N, K), got {value.shape}")
    if value.shape[0] == 0:
        raise ValueError(f"{name} has no draws")
    check_scores(value.reshape(-1, value.shape[-1]), name)
    if shape is not None and value.shape[1:] != shape:
        raise ValueError(f"{name} has shape {value.shape}, expected (S,) + {shape}")
    return value.astype(np.float64)


def to_inference_data(scores_by_method, positives, *, posterior_samples=None):
    r"""Build one ``arviz.InferenceData`` per method for ``az.compare``/``az.loo``.

    Groups (built with ``az.from_dict`` only):

    - ``log_likelihood["match"]``: :math:`\log \mathrm{softmax}_k(s)_{y_n}`, dims
      ``(chain=1, draw=S, query=N)``;
    - ``posterior["log_ratio"]``: the scores, dims ``(chain=1, draw=S, query, candidate)``;
    - ``observed_data["match"]``: the true candidate indices.

    A deterministic method (no posterior samples) is stored as two identical draws; see the
    module notes for what ``az.loo`` and ``az.waic`` make of it.

    :param dict scores_by_method: method name → ``(N, K)`` log-ratio scores.
    :param positives: ``(N,)`` index of each query's true candidate.
    :param dict posterior_samples: optional method name → ``(S, N, K)`` score draws; a name
        absent from ``scores_by_method`` adds a method.
    :returns: dict method name → ``arviz.InferenceData`` (``attrs["deterministic"]`` is 1
        for point-mass methods).

    >>> import arviz as az
    >>> idata = to_inference_data({"a": np.array([[1.0, 0.0]])}, np.array([0]))
    >>> idata["a"].log_likelihood["match"].shape
    (1, 2, 1)
    """
    import arviz as az

    posterior_samples = dict(posterior_samples or {})
    if not isinstance(scores_by_method, Mapping):
        raise TypeError("scores_by_method must be a dict of method name -> (N, K) scores")
    if not scores_by_method and not posterior_samples:
        raise ValueError("scores_by_method and posterior_samples are both empty")
    draws, shape = {}, None
    for name, value in scores_by_method.items():
        if name in posterior_samples:
            continue
        value = check_scores(value, f"scores of method {name!r}", shape)
        shape = value.shape
        draws[name] = np.broadcast_to(value, (_DETERMINISTIC_DRAWS,) + shape)
    for name, value in posterior_samples.items():
        value = _check_samples(value, f"posterior_samples[{name!r}]", shape)
        shape = value.shape[1:]
        if value.shape[0] == 1:
            value = np.broadcast_to(value, (_DETERMINISTIC_DRAWS,) + shape)
        draws[name] = value
    for name in draws:
        if not isinstance(name, str) or not name:
            raise TypeError(f"method names must be non-empty strings, got {name!r}")
    positives = check_positives(positives, shape)
    order = list(scores_by_method) + [n for n in posterior_samples if n not in scores_by_method]
    coords = {"query": np.arange(shape[0]), "candidate": np.arange(shape[1])}
    dims = {"match": ["query"], "log_ratio": ["query", "candidate"]}
    result = {}
    for name in order:
        value = draws[name]
        index = np.broadcast_to(positives[None, :, None], value.shape[:2] + (1,))
        log_likelihood = np.take_along_axis(log_softmax(value, axis=-1), index, axis=-1)[..., 0]
        deterministic = bool((value == value[:1]).all())
        result[name] = az.from_dict(
            posterior={"log_ratio": np.ascontiguousarray(value)[None]},
            log_likelihood={"match": log_likelihood[None]},
            observed_data={"match": positives},
            coords=coords,
            dims=dims,
            attrs={"method": name, "deterministic": int(deterministic)},
        )
    return result


def _exact_loo(data, scale):
    """LOO of a point-mass method: exact, with no Pareto tail to diagnose."""
    import arviz as az

    with warnings.catch_warnings():
        # constant importance weights leave PSIS no tail to fit (k-hat = inf); the estimate
        # itself is exact, so this warning says nothing about a deterministic method
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        elpd = az.loo(data, pointwise=True, scale=scale)
    elpd["warning"] = False
    # bounded (here constant) ratios are the k -> -inf end of the generalized Pareto family
    elpd["pareto_k"] = elpd["pareto_k"] * 0 - np.inf
    return elpd


def compare_elpd(inference_data, *, ic="loo", scale=None, **kwargs):
    """``az.compare`` that treats deterministic methods exactly.

    With ``ic="loo"`` a deterministic method's ELPD is computed by ``az.loo`` (exact for a
    point mass, ``p_loo = 0``) and its spurious PSIS warning is cleared (see the module
    notes); methods with posterior samples go through ``az.loo`` unchanged. ``ic="waic"`` is
    passed to ``az.compare`` as is.

    :param dict inference_data: output of :func:`to_inference_data`.
    :param str ic: ``"loo"`` or ``"waic"``.
    :param str scale: ArviZ scale (``"log"`` by default).
    :returns: the ``pandas.DataFrame`` of ``az.compare`` (rank, elpd, p, elpd_diff, weight,
        se, dse, warning, scale).

    >>> idata = to_inference_data({"a": np.array([[2.0, 0.0], [0.0, 1.0]]),
    ...                            "b": np.zeros((2, 2))}, np.array([0, 1]))
    >>> list(compare_elpd(idata).index)
    ['a', 'b']
    """
    import arviz as az

    if ic not in ("loo", "waic"):
        raise ValueError(f"ic must be 'loo' or 'waic', got {ic!r}")
    scale = scale or az.rcParams["stats.ic_scale"]
    models = dict(inference_data)
    if ic == "loo":
        for name, data in models.items():
            if int(getattr(data, "attrs", {}).get("deterministic", 0)):
                models[name] = _exact_loo(data, scale)
    with warnings.catch_warnings():
        # ArviZ 0.x sorts with inplace=True, which pandas 3 deprecates; harmless here
        warnings.filterwarnings(
            "ignore",
            message=".*inplace keyword in DataFrame.sort_values.*",
            category=DeprecationWarning,
        )
        return az.compare(models, ic=ic, scale=scale, **kwargs)
