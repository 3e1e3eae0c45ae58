"""Private argument checks and factorizations shared by the Gaussian tilts.

Shape and type checks always run. Data checks (finiteness, symmetry, positive definiteness,
positive temperature) run only under validation, as in Pyro, so that with validation off
there is no Python branch on tensor values (the code then traces under ``torch.jit``);
without them a failing Cholesky factorization is the only guard.
"""

import numbers

import torch

from pyro_contrast._validation import as_float_tensor, check_finite
from pyro_contrast.distributions._jit import ignore_jit_warnings


def prepare(validate, **named):
    """Check named tensors and a temperature; return the output dtype and float64 copies."""
    temperature = named.pop("temperature")
    tensors = {}
    for name, value in named.items():
        tensor = as_float_tensor(value, name)
        if validate:
            check_finite(tensor, name)
        if tensor.dim() < (1 if name in ("x", "loc") else 2):
            raise ValueError(
                f"{name} must have at least {1 if name in ('x', 'loc') else 2} "
                f"dimensions, got shape {tuple(tensor.shape)}"
            )
        tensors[name] = tensor
    dtype = torch.float32
    for tensor in tensors.values():
        dtype = torch.promote_types(dtype, tensor.dtype)
    if isinstance(temperature, torch.Tensor):
        temp = as_float_tensor(temperature, "temperature")
        dtype = torch.promote_types(dtype, temp.dtype)
    elif isinstance(temperature, numbers.Real) and not isinstance(temperature, bool):
        temp = torch.full((), float(temperature), dtype=torch.float64)
    else:
        raise TypeError(f"temperature must be a positive number or tensor, got {temperature!r}")
    if validate and not (torch.isfinite(temp).all() and (temp > 0).all()):
        raise ValueError(f"temperature must be positive and finite, got {temperature!r}")
    out = [t.to(torch.float64) for t in tensors.values()]
    return (dtype, *out, temp.to(torch.float64))


def check_dims(x, matrix, loc, name, axes):
    with ignore_jit_warnings():
        _check_dims(x, matrix, loc, name, axes)


def _check_dims(x, matrix, loc, name, axes):
    x_axis, y_axis = axes
    if x is not None and matrix.shape[x_axis] != x.shape[-1]:
        raise ValueError(
            f"{name} has shape {tuple(matrix.shape)}, incompatible with x of "
            f"dimension {x.shape[-1]}"
        )
    if loc is not None and matrix.shape[y_axis] != loc.shape[-1]:
        raise ValueError(
            f"{name} has shape {tuple(matrix.shape)}, incompatible with loc of "
            f"dimension {loc.shape[-1]}"
        )


def check_cross(cov_xx, cov_xy, cov_yy):
    want = (cov_xx.shape[-1], cov_yy.shape[-1])
    if cov_xy.shape[-2:] != want or cov_xx.shape[-2] != want[0] or cov_yy.shape[-2] != want[1]:
        raise ValueError(
            f"covariance shapes disagree: cov_xx {tuple(cov_xx.shape)}, cov_xy "
            f"{tuple(cov_xy.shape)}, cov_yy {tuple(cov_yy.shape)}"
        )


def cholesky(matrix, name="covariance_matrix", validate=True):
    with ignore_jit_warnings():
        if matrix.shape[-1] != matrix.shape[-2]:
            raise ValueError(f"{name} must be square, got shape {tuple(matrix.shape)}")
    if not validate:
        return torch.linalg.cholesky(matrix)
    # Relative tolerance: float32 products such as A @ A.T are symmetric only to rounding.
    asymmetry = (matrix - matrix.mT).abs().amax()
    if asymmetry > 1e-5 * matrix.abs().amax():
        raise ValueError(f"{name} must be symmetric")
    chol, info = torch.linalg.cholesky_ex(matrix)
    if (info != 0).any():
        raise ValueError(f"{name} must be positive definite")
    return chol
