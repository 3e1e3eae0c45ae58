"""Shared test utilities."""

import torch


def assert_close(actual, expected, atol=1e-6, rtol=1e-6, msg=""):
    """Assert two tensors (or numbers) agree elementwise, comparing in float64."""
    actual = torch.as_tensor(actual).detach().to(torch.float64)
    expected = torch.as_tensor(expected).detach().to(torch.float64)
    assert actual.shape == expected.shape, (
        f"shape {tuple(actual.shape)} != {tuple(expected.shape)} {msg}"
    )
    torch.testing.assert_close(
        actual, expected, atol=atol, rtol=rtol, equal_nan=True, msg=msg or None
    )
