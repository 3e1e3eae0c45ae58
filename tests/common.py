"""Shared test utilities."""

import torch


def assert_close(actual, expected, atol=1e-6, rtol=1e-6, msg=""):
    """Assert two tensors (or numbers) agree elementwise, comparing in float64."""
    # Python numbers become float64 directly: as_tensor would round them to float32 first.
    actual = _as_float64(actual)
    expected = _as_float64(expected)
    assert actual.shape == expected.shape, (
        f"shape {tuple(actual.shape)} != {tuple(expected.shape)} {msg}"
    )
    torch.testing.assert_close(
        actual, expected, atol=atol, rtol=rtol, equal_nan=True, msg=msg or None
    )


def _as_float64(value):
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64)
    return torch.as_tensor(value, dtype=torch.float64)
