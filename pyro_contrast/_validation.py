"""Input checks shared by the package: clear errors that name the offending argument."""

import numpy as np
import torch


def as_float_tensor(value, name):
    """Convert a tensor or array to a floating tensor, computing low precision in float32.

    Raises ``TypeError`` for anything that is not array-like numbers.
    """
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.number):
            raise TypeError(f"{name} must hold numbers, got dtype {value.dtype}")
        value = np.ascontiguousarray(value)
        # Read-only arrays (memmaps opened with mode "r") are copied: torch needs writable memory.
        value = torch.from_numpy(value if value.flags.writeable else value.copy())
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")
    if not value.is_floating_point():
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be real-valued, got dtype {value.dtype}")
        value = value.to(torch.get_default_dtype())
    if value.dtype in (torch.float16, torch.bfloat16):
        value = value.float()
    return value


def check_finite(value, name):
    """Raise ``ValueError`` naming ``name`` and the first bad row if ``value`` has NaN/inf."""
    if value.numel() and not torch.isfinite(value).all():
        bad = (~torch.isfinite(value)).nonzero()[0].tolist()
        kind = "NaN" if torch.isnan(value).any() else "inf"
        raise ValueError(f"{name} contains {kind} values (first at index {tuple(bad)})")
    return value


def check_rows(value, name, dim=None):
    """Check a non-empty (N, d) matrix, optionally with ``d == dim``."""
    if value.dim() != 2:
        raise ValueError(f"{name} must have shape (N, d), got {tuple(value.shape)}")
    if value.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows)")
    if dim is not None and value.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns, got {value.shape[1]}")
    return value
