"""Checks shared by the studies: scores (N, K), true candidate indices (N,), as NumPy."""

import numpy as np
import torch


def as_numpy(value, name):
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.double()
        value = value.numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be an array or tensor ({error})") from None


def check_scores(value, name, shape=None):
    value = as_numpy(value, name)
    if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    value = value.astype(np.float64)
    if value.ndim != 2:
        raise ValueError(f"{name} must have shape (N, K), got {value.shape}")
    if shape is not None and value.shape != shape:
        raise ValueError(f"{name} has shape {value.shape}, expected {shape} like the others")
    if value.shape[0] == 0:
        raise ValueError(f"{name} has no queries (shape {value.shape})")
    if value.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 candidates per query, got {value.shape[1]}")
    if not np.isfinite(value).all():
        rows = np.flatnonzero(~np.isfinite(value).all(axis=1))
        kind = "NaN" if np.isnan(value).any() else "inf"
        raise ValueError(f"{name} has {kind} scores in {len(rows)} queries (first: {rows[0]})")
    return value


def check_positives(positives, shape):
    positives = as_numpy(positives, "positives")
    if not np.issubdtype(positives.dtype, np.integer):
        raise TypeError(f"positives must be integer candidate indices, got dtype {positives.dtype}")
    if positives.shape != shape[:1]:
        raise ValueError(f"positives must have shape ({shape[0]},), got {positives.shape}")
    bad = np.flatnonzero((positives < 0) | (positives >= shape[1]))
    if bad.size:
        raise ValueError(
            f"positives out of range [0, {shape[1]}): positives[{bad[0]}] = {positives[bad[0]]}"
        )
    return positives.astype(np.int64)
