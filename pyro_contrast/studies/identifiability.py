r"""How much of each latent block a learned representation encodes: held-out R² tables."""

import numbers

import numpy as np
import pandas as pd

from pyro_contrast._validation import as_float_tensor, check_finite

BACKENDS = ("auto", "sklearn", "numpy")
_RIDGE_ALPHAS = (1e-4, 1e-2, 1.0, 1e2)
_KERNEL_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0)
_SELECT_FRACTION = 0.2  # share of the training rows that picks the regularization


def identifiability_r2(
    representation,
    latents,
    *,
    test_fraction=0.25,
    kernel=True,
    seed=0,
    backend="auto",
    max_kernel_samples=2000,
):
    r"""Held-out R² of linear and kernel ridge regressions from a representation to latents.

    For each latent block (e.g. content, style, private) the representation is regressed on
    the block with ridge regression and with RBF kernel ridge regression
    (:math:`\gamma = 1/d` on standardized inputs); the regularization strength is chosen on a
    held-out fifth of the training rows, the model refit on all of them, and
    :math:`R^2 = 1 - \mathrm{SSE}/\mathrm{SST}` reported on the test rows, averaged over the
    block's dimensions. A block is *identified* when its R² is near 1 (kernel ridge allows an
    invertible nonlinear relation) and *discarded* when near 0.

    **References**

    1. Daunhawer, Bizeul, Palumbo, Marx & Vogt (2023), *Identifiability Results for Multimodal
       Contrastive Learning*.

    :param Tensor representation: (N, d) learned representation.
    :param dict latents: block name -> (N,) or (N, k) ground-truth latents.
    :param float test_fraction: share of rows held out for testing, in (0, 1).
    :param bool kernel: also fit kernel ridge (cost O(n³) in ``max_kernel_samples``).
    :param int seed: seed of the train/test split and of the kernel subsample.
    :param str backend: ``"sklearn"``, ``"numpy"`` or ``"auto"`` (sklearn if installed); both
        solve the same problems and agree to rounding.
    :param int max_kernel_samples: training rows used by kernel ridge at most.
    :returns: ``pandas.DataFrame`` indexed by block with ``dim``, ``linear_r2`` (and
        ``kernel_r2``).

    >>> z = np.random.default_rng(0).normal(size=(200, 2))
    >>> table = identifiability_r2(z[:, :1] * 3, {"a": z[:, 0], "b": z[:, 1]}, kernel=False)
    >>> table["linear_r2"].round(2).tolist()
    [1.0, 0.0]
    """
    rep = _as_matrix(representation, "representation")
    n = rep.shape[0]
    if not isinstance(latents, dict) or not latents:
        raise TypeError("latents must be a non-empty dict of name -> array")
    blocks = {name: _as_matrix(value, f"latents[{name!r}]") for name, value in latents.items()}
    for name, block in blocks.items():
        if block.shape[0] != n:
            raise ValueError(f"latents[{name!r}] has {block.shape[0]} rows, representation {n}")
    if not (isinstance(test_fraction, numbers.Real) and 0 < test_fraction < 1):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    n_test = int(round(test_fraction * n))
    if n_test < 2 or n - n_test < 10:
        raise ValueError(f"{n} rows are too few for test_fraction={test_fraction}")
    solver = _solver(backend)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    test, train = perm[:n_test], perm[n_test:]
    mean, std = rep[train].mean(0), rep[train].std(0)
    rep = (rep - mean) / np.where(std > 0, std, 1.0)
    kernel_train = train[: int(max_kernel_samples)] if kernel else None
    rows = []
    for name, block in blocks.items():
        target = block - block[train].mean(0)
        row = {
            "block": name,
            "dim": block.shape[1],
            "linear_r2": _fit_score(solver, "linear", rep, target, train, test),
        }
        if kernel:
            row["kernel_r2"] = _fit_score(solver, "kernel", rep, target, kernel_train, test)
        rows.append(row)
    return pd.DataFrame(rows).set_index("block")


def _fit_score(solver, kind, rep, target, train, test):
    cut = int(len(train) * (1 - _SELECT_FRACTION))
    fit, select = train[:cut], train[cut:]
    alphas = _RIDGE_ALPHAS if kind == "linear" else _KERNEL_ALPHAS
    scores = [
        _r2(target[select], solver(kind, rep[fit], target[fit], rep[select], a)) for a in alphas
    ]
    best = alphas[int(np.argmax(scores))]
    return _r2(target[test], solver(kind, rep[train], target[train], rep[test], best))


def _r2(truth, prediction):
    sst = ((truth - truth.mean(0)) ** 2).sum(0)
    sse = ((truth - prediction) ** 2).sum(0)
    return float(np.mean(1 - sse / np.where(sst > 0, sst, np.finfo(float).tiny)))


def _numpy_solver(kind, x, y, x_new, alpha):
    if kind == "linear":
        gram = x.T @ x + alpha * np.eye(x.shape[1])
        return x_new @ np.linalg.solve(gram, x.T @ y)
    gamma = 1.0 / x.shape[1]
    gram = _rbf(x, x, gamma) + alpha * np.eye(x.shape[0])
    return _rbf(x_new, x, gamma) @ np.linalg.solve(gram, y)


def _sklearn_solver(kind, x, y, x_new, alpha):
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.linear_model import Ridge

    if kind == "linear":
        model = Ridge(alpha=alpha, fit_intercept=False, solver="cholesky")
    else:
        model = KernelRidge(alpha=alpha, kernel="rbf", gamma=1.0 / x.shape[1])
    # Ridge flattens single-column targets; keep (n, k) so R² never broadcasts to (n, n).
    return model.fit(x, y).predict(x_new).reshape(len(x_new), y.shape[1])


def _rbf(a, b, gamma):
    sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return np.exp(-gamma * np.maximum(sq, 0))


def _solver(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "numpy":
        return _numpy_solver
    try:
        import sklearn  # noqa: F401
    except ImportError:
        if backend == "sklearn":
            raise
        return _numpy_solver
    return _sklearn_solver


def _as_matrix(value, name):
    tensor = check_finite(as_float_tensor(value, name), name)
    if tensor.dim() == 1:
        tensor = tensor[:, None]
    if tensor.dim() != 2:
        raise ValueError(f"{name} must have shape (N,) or (N, d), got {tuple(tensor.shape)}")
    return tensor.detach().cpu().double().numpy()
