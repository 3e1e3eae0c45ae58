"""Figures for bridging studies (matplotlib, no global pyplot state).

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot`` (so it
works under any backend and leaks no open figures); with ``path=`` it is also saved, atomically,
as PNG, SVG or PDF according to the extension.

**References**

1. B. Che, B. Eysenbach, "The 'Law' of the Unconscious Contrastive Learner: Probabilistic
   Alignment of Unpaired Modalities", ICLR 2025.
2. A. Vehtari, A. Gelman, J. Gabry, "Practical Bayesian model evaluation using leave-one-out
   cross-validation and WAIC", Statistics and Computing 27, 2017.
"""

import math
import os
import warnings
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from pyro_contrast._files import atomic_write
from pyro_contrast.studies._arrays import as_numpy, check_scores

_FORMATS = (".png", ".svg", ".pdf")

__all__ = [
    "plot_calibration",
    "plot_compare",
    "plot_explanation",
    "plot_recall_vs_bank_size",
    "plot_scores_vs_reference",
]


def _finish(figure, path, overwrite):
    if path is not None:
        extension = os.path.splitext(os.fspath(path))[1].lower()
        if extension not in _FORMATS:
            raise ValueError(f"path must end in one of {_FORMATS}, got {os.fspath(path)!r}")
        atomic_write(
            path,
            lambda handle: figure.savefig(handle, format=extension[1:], bbox_inches="tight"),
            overwrite=overwrite,
        )
    return figure


def _scores_and_reference(scores_by_method, reference):
    if not isinstance(scores_by_method, Mapping) or not scores_by_method:
        raise TypeError("scores_by_method must be a non-empty dict of method name -> scores")
    if isinstance(reference, str):
        if reference not in scores_by_method:
            raise ValueError(f"unknown reference {reference!r}; methods: {list(scores_by_method)}")
        name, reference = reference, scores_by_method[reference]
    else:
        name = "reference"
    reference = check_scores(reference, "reference")
    scores = {
        method: check_scores(value, f"scores of method {method!r}", reference.shape)
        for method, value in scores_by_method.items()
        if method != name
    }
    if not scores:
        raise ValueError("no method to plot besides the reference")
    return scores, reference, name


def plot_scores_vs_reference(
    scores_by_method, reference, *, max_points=4000, seed=0, path=None, overwrite=False
):
    """Scatter each method's log ratios against the reference's, one panel per method.

    :param dict scores_by_method: method name → ``(N, K)`` scores.
    :param reference: ``(N, K)`` reference scores, or the name of a method.
    :param int max_points: (query, candidate) entries drawn at random per panel.
    :param int seed: seed of that subsample.
    :param str path: optional ``.png``/``.svg``/``.pdf`` destination.
    :param bool overwrite: replace an existing ``path``.
    :returns: :class:`~matplotlib.figure.Figure` with one axes per method.

    >>> fig = plot_scores_vs_reference({"exact": np.eye(3), "direct": np.ones((3, 3))}, "exact")
    >>> len(fig.axes)
    1
    """
    scores, reference, name = _scores_and_reference(scores_by_method, reference)
    columns = min(3, len(scores))
    rows = math.ceil(len(scores) / columns)
    figure = Figure(figsize=(3.6 * columns, 3.4 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    x = reference.ravel()
    rng = np.random.default_rng(seed)
    keep = rng.permutation(x.size)[:max_points] if x.size > max_points else slice(None)
    low, high = float(x[keep].min()), float(x[keep].max())
    for ax, (method, value) in zip(axes, scores.items(), strict=False):
        ax.scatter(x[keep], value.ravel()[keep], s=4, alpha=0.4, linewidths=0)
        ax.plot([low, high], [low, high], color="black", linewidth=0.8, linestyle="--")
        ax.set_title(method)
        ax.set_xlabel(f"{name} log ratio")
        ax.set_ylabel(f"{method} log ratio")
    for ax in axes[len(scores) :]:
        figure.delaxes(ax)
    return _finish(figure, path, overwrite)


def plot_calibration(
    scores_by_method, reference, *, num_bins=10, center=True, path=None, overwrite=False
):
    """Binned calibration of log ratios: mean reference score per bin of method score.

    Bins are quantiles of each method's scores; points are bin means with ±1.96 standard
    errors of the reference mean, and the dashed line is perfect calibration.

    :param dict scores_by_method: method name → ``(N, K)`` scores.
    :param reference: ``(N, K)`` reference scores, or the name of a method.
    :param int num_bins: number of quantile bins.
    :param bool center: subtract each query's mean score first (within-query contrasts; the
        default, since a critic is defined only up to a term in the query); ``False`` plots
        the raw scores.
    :param str path: optional destination.
    :param bool overwrite: replace an existing ``path``.
    :returns: :class:`~matplotlib.figure.Figure` with one axes, one error bar series per
        method.

    >>> rng = np.random.default_rng(0)
    >>> fig = plot_calibration({"a": rng.normal(size=(20, 5))}, rng.normal(size=(20, 5)))
    >>> len(fig.axes[0].containers)
    1
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
    scores, reference, name = _scores_and_reference(scores_by_method, reference)
    if center:
        reference = reference - reference.mean(axis=1, keepdims=True)
    figure = Figure(figsize=(5.0, 4.5), layout="constrained")
    ax = figure.subplots()
    y = reference.ravel()
    extremes = []
    for method, value in scores.items():
        if center:
            value = value - value.mean(axis=1, keepdims=True)
        x = value.ravel()
        edges = np.unique(np.quantile(x, np.linspace(0, 1, num_bins + 1)))
        bins = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, max(len(edges) - 2, 0))
        counts = np.bincount(bins)
        used = counts > 0
        mean_x = np.bincount(bins, x)[used] / counts[used]
        mean_y = np.bincount(bins, y)[used] / counts[used]
        second = np.bincount(bins, y * y)[used] / counts[used]
        error = 1.96 * np.sqrt(np.maximum(second - mean_y**2, 0.0) / counts[used])
        ax.errorbar(mean_x, mean_y, yerr=error, marker="o", markersize=3, capsize=2, label=method)
        extremes += [mean_x.min(), mean_x.max(), mean_y.min(), mean_y.max()]
    low, high = float(min(extremes)), float(max(extremes))
    ax.plot([low, high], [low, high], color="black", linewidth=0.8, linestyle="--")
    centred = ", centred per query" if center else ""
    ax.set_xlabel(f"method log ratio (bin mean{centred})")
    ax.set_ylabel(f"{name} log ratio (bin mean{centred})")
    ax.legend(fontsize="small")
    return _finish(figure, path, overwrite)


def plot_recall_vs_bank_size(
    results, *, metric="recall@1", methods=None, path=None, overwrite=False
):
    """A metric (recall by default) against bank size, with bootstrap intervals.

    :param dict results: bank size → :class:`~pyro_contrast.studies.compare.ComparisonResult`.
    :param str metric: which metric to plot.
    :param methods: methods to show (default: all in the first result).
    :param str path: optional destination.
    :param bool overwrite: replace an existing ``path``.
    :returns: :class:`~matplotlib.figure.Figure`, one line and one band per method.

    >>> from pyro_contrast.studies.compare import compare
    >>> scores = {"exact": np.array([[1.0, 0.0], [0.0, 1.0]])}
    >>> results = {m: compare(scores, positives=np.array([0, 1]), num_bootstrap=10)
    ...            for m in (10, 100)}
    >>> len(plot_recall_vs_bank_size(results).axes[0].lines)
    1
    """
    if not isinstance(results, Mapping) or not results:
        raise TypeError("results must be a non-empty dict of bank size -> ComparisonResult")
    sizes = sorted(results)
    if any(isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1 for m in sizes):
        raise ValueError(f"bank sizes must be positive integers, got {sizes}")
    methods = list(methods or results[sizes[0]].methods)
    figure = Figure(figsize=(5.0, 4.0), layout="constrained")
    ax = figure.subplots()
    for method in methods:
        frames = []
        for size in sizes:
            table = results[size].table
            row = table[(table["method"] == method) & (table["metric"] == metric)]
            if row.empty:
                raise ValueError(f"result for bank size {size} has no {metric!r} for {method!r}")
            frames.append(row.iloc[0][["estimate", "lower", "upper"]].to_numpy(np.float64))
        estimate, lower, upper = np.array(frames).T
        (line,) = ax.plot(sizes, estimate, marker="o", label=method)
        ax.fill_between(sizes, lower, upper, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    ax.set_xlabel("bank size")
    ax.set_ylabel(metric)
    ax.legend(fontsize="small")
    return _finish(figure, path, overwrite)


def plot_explanation(posterior, labels, *, top=10, query=0, title=None, path=None, overwrite=False):
    """The bank items that best explain a match: the top of ``p(b_m | a, c)``.

    :param posterior: ``(M,)`` posterior over bank items, or ``(N, M)`` from
        :meth:`pyro_contrast.Bridge.explain` (row ``query`` is shown).
    :param labels: ``M`` names of the bank items.
    :param int top: how many items to show.
    :param int query: which row of an ``(N, M)`` posterior.
    :param str title: axes title.
    :param str path: optional destination.
    :param bool overwrite: replace an existing ``path``.
    :returns: :class:`~matplotlib.figure.Figure` with one horizontal bar per shown item.

    >>> fig = plot_explanation(np.array([0.1, 0.7, 0.2]), ["x", "y", "z"], top=2)
    >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
    ['z', 'y']
    """
    posterior = as_numpy(posterior, "posterior").astype(np.float64)
    if posterior.ndim == 2:
        if not 0 <= query < posterior.shape[0]:
            raise ValueError(f"query must be in [0, {posterior.shape[0]}), got {query}")
        posterior = posterior[query]
    if posterior.ndim != 1 or posterior.size == 0:
        raise ValueError(f"posterior must have shape (M,) or (N, M), got {posterior.shape}")
    if not np.isfinite(posterior).all() or (posterior < 0).any():
        raise ValueError("posterior must be finite and non-negative")
    labels = [str(label) for label in labels]
    if len(labels) != posterior.size:
        raise ValueError(f"labels has {len(labels)} entries, posterior has {posterior.size}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    order = np.argsort(-posterior, kind="stable")[:top][::-1]  # largest bar on top
    figure = Figure(figsize=(5.0, 0.5 + 0.3 * len(order)), layout="constrained")
    ax = figure.subplots()
    ax.barh(np.arange(len(order)), posterior[order])
    ax.set_yticks(np.arange(len(order)), [labels[i] for i in order])
    ax.set_xlabel("posterior p(b | a, c)")
    if title:
        ax.set_title(title)
    return _finish(figure, path, overwrite)


def plot_compare(az_compare_df, *, path=None, overwrite=False, **kwargs):
    """ELPD comparison of methods: ``az.plot_compare`` on a fresh figure.

    :param pandas.DataFrame az_compare_df: output of ``az.compare`` (or
        :func:`pyro_contrast.studies.arviz.compare_elpd`).
    :param str path: optional destination.
    :param bool overwrite: replace an existing ``path``.
    :param kwargs: passed to ``az.plot_compare``.
    :returns: :class:`~matplotlib.figure.Figure`.

    >>> from pyro_contrast.studies.arviz import compare_elpd, to_inference_data
    >>> idata = to_inference_data({"a": np.eye(2), "b": np.zeros((2, 2))}, np.array([0, 1]))
    >>> len(plot_compare(compare_elpd(idata)).axes)
    1
    """
    import arviz as az

    figure = Figure(figsize=(6.0, 1.0 + 0.5 * len(az_compare_df)), layout="constrained")
    ax = figure.subplots()
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*inplace keyword.*", category=DeprecationWarning
        )
        az.plot_compare(az_compare_df, ax=ax, backend="matplotlib", show=False, **kwargs)
    return _finish(figure, path, overwrite)
